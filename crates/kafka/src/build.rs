//! What this build's Kafka client can do, so an operator can check a binary or an image before
//! pointing it at a secured cluster.

use rdkafka::ClientConfig;

/// The linked librdkafka and its compiled-in features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFeatures {
    /// librdkafka version, e.g. `2.12.1`.
    pub librdkafka: String,
    /// `builtin.features`, e.g. `ssl`, `sasl_scram`.
    pub builtin: Vec<String>,
}

impl ClientFeatures {
    /// Reads them from the linked library.
    pub fn of_this_build() -> Self {
        let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
        let builtin = ClientConfig::new()
            .create_native_config()
            .and_then(|c| c.get("builtin.features"))
            .map(|f| f.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        Self {
            librdkafka,
            builtin,
        }
    }

    /// True when the client can use TLS (`ssl`, `sasl_ssl`, mutual TLS).
    pub fn tls(&self) -> bool {
        self.builtin.iter().any(|f| f == "ssl")
    }

    /// True when the client can authenticate with SASL SCRAM-SHA-256/512.
    pub fn scram(&self) -> bool {
        self.builtin.iter().any(|f| f == "sasl_scram")
    }

    /// One line for `--version` output.
    pub fn summary(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        format!(
            "kafka: librdkafka {}, TLS {}, SASL SCRAM {} (features: {})",
            self.librdkafka,
            yes(self.tls()),
            yes(self.scram()),
            self.builtin.join(",")
        )
    }
}

/// The long `--version` text of a lienthong binary: its version and its Kafka client.
pub fn long_version(version: &str) -> String {
    format!("{version}\n{}", ClientFeatures::of_this_build().summary())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_speaks_tls_and_scram() {
        let f = ClientFeatures::of_this_build();
        assert!(f.tls(), "{f:?}");
        assert!(f.scram(), "{f:?}");
        assert!(
            f.summary().contains("TLS yes, SASL SCRAM yes"),
            "{}",
            f.summary()
        );
    }
}
