//! Gateway settings: flags with `LIENTHONG_GATEWAY_*` env vars, checked together at start-up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lienthong_core::DocumentKind;

/// Everything the gateway needs besides Kafka, registry and telemetry settings.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Address of the gRPC listener.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Development only: plain-text gRPC, no caller authentication, any facility may publish.
    #[arg(long, env = "LIENTHONG_GATEWAY_INSECURE_DEV")]
    pub insecure_dev: bool,
    /// Server certificate chain (PEM).
    #[arg(long, env = "LIENTHONG_GATEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "LIENTHONG_GATEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs facility client certificates; enables mutual TLS. The certificate's
    /// common name is the facility code.
    #[arg(long, env = "LIENTHONG_GATEWAY_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// File holding the HMAC secret that signs bearer tokens (HS256); enables token auth.
    #[arg(long, env = "LIENTHONG_GATEWAY_TOKEN_KEY_FILE")]
    pub token_key_file: Option<PathBuf>,
    /// Audience bearer tokens must name.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_TOKEN_AUDIENCE",
        default_value = "lienthong-gateway"
    )]
    pub token_audience: String,
    /// Regional hubs that may publish for other facilities: `HUB=F1,F2;HUB2=F3`.
    #[arg(long = "hub", env = "LIENTHONG_GATEWAY_HUBS", value_delimiter = ';')]
    pub hubs: Vec<String>,
    /// Most events in one PublishRequest.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_MAX_BATCH_EVENTS",
        default_value_t = 500
    )]
    pub max_batch_events: usize,
    /// Largest accepted gRPC message, in bytes.
    #[arg(long, env = "LIENTHONG_GATEWAY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Events being produced at once, across all callers; beyond it callers get RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_MAX_IN_FLIGHT_EVENTS",
        default_value_t = 20_000
    )]
    pub max_in_flight_events: usize,
    /// Encoded bytes being produced at once.
    #[arg(long, env = "LIENTHONG_GATEWAY_MAX_IN_FLIGHT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,
    /// Sustained events per second per facility (0: unlimited).
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_FACILITY_RATE",
        default_value_t = 5_000.0
    )]
    pub facility_rate: f64,
    /// Burst of events a facility may send above its rate.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_FACILITY_BURST",
        default_value_t = 10_000.0
    )]
    pub facility_burst: f64,
    /// How long an accepted event_id is remembered to answer retries DUPLICATE, in seconds.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_DUPLICATE_WINDOW_SECS",
        default_value_t = 3600
    )]
    pub duplicate_window_secs: u64,
    /// Most event_ids remembered.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_DUPLICATE_CACHE_ENTRIES",
        default_value_t = 500_000
    )]
    pub duplicate_cache_entries: usize,
    /// How long to wait for Kafka's acknowledgement before answering UNAVAILABLE, in ms.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_PRODUCE_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub produce_timeout_ms: u64,
    /// How far in the future a document date may lie (clock skew), in seconds.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_FUTURE_SKEW_SECS",
        default_value_t = 600
    )]
    pub future_skew_secs: u64,
    /// On SIGTERM, how long to drain in-flight events and flush the producer, in seconds.
    #[arg(
        long,
        env = "LIENTHONG_GATEWAY_SHUTDOWN_GRACE_SECS",
        default_value_t = 20
    )]
    pub shutdown_grace_secs: u64,
    /// Topic for referral events (default lienthong.referral.v1).
    #[arg(long, env = "LIENTHONG_GATEWAY_TOPIC_REFERRAL")]
    pub topic_referral: Option<String>,
    /// Topic for appointment events (default lienthong.appointment.v1).
    #[arg(long, env = "LIENTHONG_GATEWAY_TOPIC_APPOINTMENT")]
    pub topic_appointment: Option<String>,
    /// Topic for lab-result events (default lienthong.lab-result.v1).
    #[arg(long, env = "LIENTHONG_GATEWAY_TOPIC_LAB_RESULT")]
    pub topic_lab_result: Option<String>,
}

impl GatewayConfig {
    /// Defaults for a gateway on `listen` (tests and embedding).
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            insecure_dev: false,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            token_key_file: None,
            token_audience: "lienthong-gateway".into(),
            hubs: Vec::new(),
            max_batch_events: 500,
            max_message_bytes: 4 * 1024 * 1024,
            max_in_flight_events: 20_000,
            max_in_flight_bytes: 64 * 1024 * 1024,
            facility_rate: 5_000.0,
            facility_burst: 10_000.0,
            duplicate_window_secs: 3600,
            duplicate_cache_entries: 500_000,
            produce_timeout_ms: 15_000,
            future_skew_secs: 600,
            shutdown_grace_secs: 20,
            topic_referral: None,
            topic_appointment: None,
            topic_lab_result: None,
        }
    }

    /// Cross-field checks; the message says which flags to set.
    pub fn check(&self) -> Result<(), String> {
        if !self.insecure_dev {
            if self.tls_cert.is_none() || self.tls_key.is_none() {
                return Err("the gateway needs --tls-cert and --tls-key (or --insecure-dev for local development only)".into());
            }
            if self.client_ca.is_none() && self.token_key_file.is_none() {
                return Err("callers must be authenticated: set --client-ca (mutual TLS) and/or --token-key-file (bearer tokens)".into());
            }
        }
        if self.max_batch_events == 0 || self.max_in_flight_events < self.max_batch_events {
            return Err(format!(
                "--max-in-flight-events ({}) must be at least --max-batch-events ({}), which must be > 0",
                self.max_in_flight_events, self.max_batch_events
            ));
        }
        if self.max_in_flight_bytes < self.max_message_bytes {
            return Err("--max-in-flight-bytes must be at least --max-message-bytes, or a maximal request could never run".into());
        }
        self.hub_map().map(|_| ())
    }

    /// Hubs and the facilities each may publish for.
    pub fn hub_map(&self) -> Result<HashMap<String, HashSet<String>>, String> {
        let mut map = HashMap::new();
        for entry in self.hubs.iter().filter(|h| !h.trim().is_empty()) {
            let (hub, list) = entry
                .split_once('=')
                .ok_or_else(|| format!("--hub {entry:?} must look like HUB=F1,F2"))?;
            let facilities: HashSet<String> = list
                .split(',')
                .map(|f| f.trim().to_owned())
                .filter(|f| !f.is_empty())
                .collect();
            map.insert(hub.trim().to_owned(), facilities);
        }
        Ok(map)
    }

    /// Topic of each document kind.
    pub fn topics(&self) -> BTreeMap<DocumentKind, String> {
        DocumentKind::ALL
            .into_iter()
            .map(|k| {
                let custom = match k {
                    DocumentKind::Referral => &self.topic_referral,
                    DocumentKind::Appointment => &self.topic_appointment,
                    DocumentKind::LabResult => &self.topic_lab_result,
                };
                (k, custom.clone().unwrap_or_else(|| k.topic().to_owned()))
            })
            .collect()
    }

    /// Produce timeout.
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms.max(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_mode_needs_tls_and_an_authentication_method() {
        let mut c = GatewayConfig::new("127.0.0.1:0".parse().expect("addr"));
        assert!(c.check().unwrap_err().contains("--tls-cert"));
        c.tls_cert = Some("c".into());
        c.tls_key = Some("k".into());
        assert!(c.check().unwrap_err().contains("--client-ca"));
        c.token_key_file = Some("t".into());
        assert!(c.check().is_ok());
    }

    #[test]
    fn hubs_parse_and_bad_ones_are_named() {
        let mut c = GatewayConfig::new("127.0.0.1:0".parse().expect("addr"));
        c.insecure_dev = true;
        c.hubs = vec!["79000=79001, 79002".into()];
        assert_eq!(c.hub_map().expect("valid")["79000"].len(), 2);
        c.hubs = vec!["79000".into()];
        assert!(c.check().unwrap_err().contains("HUB=F1,F2"));
    }
}
