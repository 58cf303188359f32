//! Gateway settings: flags with `LIENTHONG_GATEWAY_*` env vars, checked together at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use lienthong_core::DocumentKind;
use lienthong_grpc::ServingArgs;
use lienthong_kafka::topics::DocumentTopics;

/// Everything the gateway needs besides Kafka, registry and telemetry settings.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Listener, TLS, caller authentication and hubs.
    #[command(flatten)]
    pub serving: ServingArgs,
    /// The facility directory (CSV: code,name,province,level,valid_from,valid_to): issuing,
    /// receiving and host facilities must be listed and operating. Read again when it changes.
    /// Without it, facility codes are checked for their shape only.
    #[arg(long, env = "LIENTHONG_FACILITY_DIRECTORY")]
    pub facility_directory: Option<std::path::PathBuf>,
    /// How often the facility directory file is checked for changes, in seconds.
    #[arg(
        long,
        env = "LIENTHONG_FACILITY_DIRECTORY_RELOAD_SECS",
        default_value_t = 10
    )]
    pub facility_directory_reload_secs: u64,
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
    /// The topic of each document kind.
    #[command(flatten)]
    pub topics: DocumentTopics,
}

impl GatewayConfig {
    /// Defaults for a gateway on `listen` (tests and embedding).
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            serving: ServingArgs::new(listen),
            facility_directory: None,
            facility_directory_reload_secs: 10,
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
            topics: DocumentTopics::default(),
        }
    }

    /// Where the gateway listens unless `--listen` says otherwise.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);

    /// The listener address.
    pub fn listen(&self) -> SocketAddr {
        self.serving.listen_or(Self::DEFAULT_LISTEN)
    }

    /// Cross-field checks; the message says which flags to set.
    pub fn check(&self) -> Result<(), String> {
        self.serving.check().map_err(|e| e.to_string())?;
        if self.max_batch_events == 0 || self.max_in_flight_events < self.max_batch_events {
            return Err(format!(
                "--max-in-flight-events ({}) must be at least --max-batch-events ({}), which must be > 0",
                self.max_in_flight_events, self.max_batch_events
            ));
        }
        if self.max_in_flight_bytes < self.max_message_bytes {
            return Err("--max-in-flight-bytes must be at least --max-message-bytes, or a maximal request could never run".into());
        }
        Ok(())
    }

    /// Topic of each document kind.
    pub fn topics(&self) -> BTreeMap<DocumentKind, String> {
        self.topics.all()
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
    fn in_flight_limits_must_hold_a_maximal_request() {
        let mut c = GatewayConfig::new("127.0.0.1:0".parse().expect("addr"));
        c.serving.insecure_dev = true;
        assert!(c.check().is_ok());
        c.max_in_flight_bytes = c.max_message_bytes - 1;
        assert!(c.check().unwrap_err().contains("--max-in-flight-bytes"));
        c.max_in_flight_bytes = c.max_message_bytes;
        c.max_batch_events = 0;
        assert!(c.check().unwrap_err().contains("--max-batch-events"));
    }
}
