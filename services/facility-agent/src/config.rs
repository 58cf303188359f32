//! Agent settings (`--*` flags with `LIENTHONG_AGENT_*` env vars).

use std::path::PathBuf;
use std::time::Duration;

use lienthong_grpc::GatewayConnection;

/// Everything the agent needs besides telemetry.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    /// Folder of the outbox and the status file (personal data: owner-only permissions).
    #[arg(
        long,
        env = "LIENTHONG_AGENT_DATA_DIR",
        default_value = "lienthong-agent"
    )]
    pub data_dir: PathBuf,
    /// Folder the HIS exports XML files into; processed files move to its done/ and rejected/.
    #[arg(long, env = "LIENTHONG_AGENT_INBOX")]
    pub inbox: PathBuf,
    /// How often the inbox is looked at, in ms (a file is taken once its size stopped changing).
    #[arg(long, env = "LIENTHONG_AGENT_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// Events per request to the gateway.
    #[arg(long, env = "LIENTHONG_AGENT_BATCH", default_value_t = 200)]
    pub batch: usize,
    /// Bytes of events per request to the gateway; keep it below the gateway's
    /// `--max-message-bytes` (4 MiB by default). An event larger than this alone is set aside
    /// as rejected (`event.too_large`): no request could carry it.
    #[arg(long, env = "LIENTHONG_AGENT_MAX_REQUEST_BYTES", default_value_t = 3 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(65_536..=67_108_864))]
    pub max_request_bytes: u32,
    /// Most events the outbox holds; intake pauses (files wait in the inbox) at this bound.
    #[arg(long, env = "LIENTHONG_AGENT_MAX_PENDING", default_value_t = 2_000_000)]
    pub max_pending: u64,
    /// Address of the local HTTP intake (`POST /v1/xml`, `POST /v1/events`, `GET /v1/status`);
    /// keep it on loopback. Empty: no HTTP intake.
    #[arg(
        long,
        env = "LIENTHONG_AGENT_HTTP_LISTEN",
        default_value = "127.0.0.1:8470"
    )]
    pub http_listen: String,
    /// Address of the local gRPC intake (the gateway's `IngestService.Publish`); keep it on
    /// loopback. Empty: no gRPC intake.
    #[arg(
        long,
        env = "LIENTHONG_AGENT_GRPC_LISTEN",
        default_value = "127.0.0.1:8471"
    )]
    pub grpc_listen: String,
    /// Lets the intakes listen beyond loopback. They take events without authentication or
    /// encryption: only for a container whose ports are published on the host's loopback alone.
    #[arg(long, env = "LIENTHONG_AGENT_INTAKE_BEYOND_LOOPBACK")]
    pub intake_beyond_loopback: bool,
    /// Host names the HTTP intake answers besides 127.0.0.1, ::1 and localhost (a program that
    /// reaches the agent's container by its name), comma-separated. Requests addressed to any
    /// other name are refused, so a web page cannot reach the intake by DNS rebinding.
    #[arg(long, env = "LIENTHONG_AGENT_INTAKE_HOST_NAMES", value_delimiter = ',')]
    pub intake_host_names: Vec<String>,
    /// Exports and event batches converted at once, across the inbox and the intakes. Each
    /// holds several times its size in memory while converted (about seven times measured: a
    /// 64 MiB export, about 450 MiB).
    #[arg(long, env = "LIENTHONG_AGENT_CONVERSIONS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub conversions: u16,
    /// How long an HTTP or gRPC intake request waits for a conversion turn, in seconds, before
    /// it is answered "busy, retry" (HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED).
    #[arg(long, env = "LIENTHONG_AGENT_INTAKE_WAIT_SECS", default_value_t = 30)]
    pub intake_wait_secs: u64,
    /// The gateway and this facility's credentials.
    #[command(flatten)]
    pub gateway: GatewayConnection,
}

impl AgentConfig {
    /// The conversion turns every intake shares.
    pub fn conversions(&self) -> crate::conversions::Conversions {
        crate::conversions::Conversions::new(
            usize::from(self.conversions),
            Duration::from_secs(self.intake_wait_secs),
        )
    }

    /// Inbox polling interval.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms.max(50))
    }

    /// The outbox folder.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// The status file `lienthong agent status` reads.
    pub fn status_file(&self) -> PathBuf {
        self.data_dir.join("status.json")
    }

    /// The file by which `lienthong agent retry-rejected` asks for a retry.
    pub fn retry_request_file(&self) -> PathBuf {
        self.data_dir.join("retry-rejected.request")
    }
}
