//! The agent's status, written every few seconds to `<data-dir>/status.json` (what
//! `lienthong agent status` prints) and exported as metrics; and the retry request
//! `lienthong agent retry-rejected` leaves for it.

use serde::Serialize;

use crate::config::AgentConfig;
use crate::outbox::{Outbox, OutboxError};
use crate::sender::SharedState;

/// A rejected event as the facility's IT staff see it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RejectedEvent {
    /// Event id.
    pub event_id: String,
    /// Its document.
    #[serde(default)]
    pub document_id: String,
    /// Its episode key (MA_LK), to find it in the HIS.
    #[serde(default)]
    pub episode: String,
    /// The export file it came from (empty for pushed events).
    #[serde(default)]
    pub file: String,
    /// The gateway's reason.
    pub reason: String,
}

/// The status report.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Default)]
pub struct Status {
    /// Events waiting for the gateway.
    pub pending: u64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_secs: u64,
    /// The outbox bound.
    pub max_pending: u64,
    /// Events the gateway refused (in the local dead-letter store).
    pub rejected: u64,
    /// The most recent of them (up to 20).
    pub recent_rejected: Vec<RejectedEvent>,
    /// Events delivered since the agent started.
    pub delivered_since_start: u64,
    /// The last delivery error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When this report was written (unix seconds).
    pub written_at: u64,
}

impl RejectedEvent {
    /// The rejected event of `envelope`, named by its ids and episode.
    pub fn of(entry: &crate::outbox::Entry, reason: &str) -> Self {
        let envelope = &entry.envelope;
        use lienthong_proto::v1::event_envelope::Event;
        let (header, episode) = match &envelope.event {
            Some(Event::Referral(e)) => (
                e.header.as_ref(),
                e.slip.as_ref().map(|s| s.episode_id.as_str()),
            ),
            Some(Event::Appointment(e)) => (
                e.header.as_ref(),
                e.appointment.as_ref().map(|a| a.episode_id.as_str()),
            ),
            Some(Event::LabResult(e)) => (
                e.header.as_ref(),
                e.report.as_ref().map(|r| r.episode_id.as_str()),
            ),
            None => (None, None),
        };
        Self {
            event_id: header.map(|h| h.event_id.clone()).unwrap_or_default(),
            document_id: header.map(|h| h.document_id.clone()).unwrap_or_default(),
            episode: episode.unwrap_or_default().to_owned(),
            file: entry.origin.clone(),
            reason: reason.to_owned(),
        }
    }
}

impl std::fmt::Display for RejectedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "REJECTED {} (", self.document_id)?;
        if !self.file.is_empty() {
            write!(f, "file {}, ", self.file)?;
        }
        write!(
            f,
            "MA_LK {}, event {}): {}",
            self.episode, self.event_id, self.reason
        )
    }
}

/// Builds the status, sets the metrics, warns as the bound nears.
pub fn current(outbox: &Outbox, state: &SharedState) -> Result<Status, OutboxError> {
    let (last_error, delivered) = state
        .lock()
        .map(|s| (s.last_error.clone(), s.delivered))
        .unwrap_or_default();
    let dead = outbox.dead_entries()?;
    let status = Status {
        pending: outbox.pending(),
        oldest_pending_secs: outbox.oldest_pending_secs()?,
        max_pending: outbox.max_pending(),
        rejected: outbox.dead(),
        recent_rejected: dead
            .iter()
            .rev()
            .take(20)
            .map(|e| RejectedEvent::of(e, &e.reason))
            .collect(),
        delivered_since_start: delivered,
        last_error,
        written_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    metrics::gauge!(crate::metrics::PENDING.name).set(status.pending as f64);
    metrics::gauge!(crate::metrics::OLDEST_PENDING_SECONDS.name)
        .set(status.oldest_pending_secs as f64);
    metrics::gauge!(crate::metrics::REJECTED.name).set(status.rejected as f64);
    let fill = status.pending as f64 / status.max_pending.max(1) as f64;
    metrics::gauge!(crate::metrics::OUTBOX_FILL_RATIO.name).set(fill);
    if fill >= 0.8 {
        tracing::warn!(
            pending = status.pending,
            max = status.max_pending,
            "the outbox is {:.0} % full: intake pauses at 100 %; check the link to the gateway",
            fill * 100.0
        );
    }
    Ok(status)
}

/// Writes the status file atomically (a reader never sees half of it).
pub fn write(config: &AgentConfig, status: &Status) -> std::io::Result<()> {
    let path = config.status_file();
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// Reads the status file of an agent.
pub fn read(config_data_dir: &std::path::Path) -> std::io::Result<Status> {
    let text = std::fs::read_to_string(config_data_dir.join("status.json"))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

impl Status {
    /// The report as the facility's IT staff read it (`status` commands).
    pub fn render(&self) -> String {
        let mut out = format!(
            "pending events:       {} (limit {})\n\
             oldest pending:       {} s\n\
             delivered (this run): {}\n\
             last error:           {}\n\
             rejected events:      {}\n",
            self.pending,
            self.max_pending,
            self.oldest_pending_secs,
            self.delivered_since_start,
            self.last_error.as_deref().unwrap_or("none"),
            self.rejected
        );
        for r in &self.recent_rejected {
            out.push_str(&format!("  {r}\n"));
        }
        out
    }
}

/// Asks the agent (running or not) to send its rejected events again: it does within seconds,
/// or at its next start. Returns the request file it left.
pub fn request_retry(data_dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let request = data_dir.join("retry-rejected.request");
    std::fs::write(&request, b"retry\n")?;
    Ok(request)
}
