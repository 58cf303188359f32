//! The agent's status, written every few seconds to `<data-dir>/status.json` (what
//! `lienthong agent status` prints) and exported as metrics; and the retry request
//! `lienthong agent retry-rejected` leaves for it.

use lienthong_core::printable::printable;
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
    /// When the token expires (unix seconds), if it says.
    #[serde(default)]
    pub token_expires_at: Option<u64>,
    /// Outbox entries that could not be read back, set aside (kept) so delivery goes on.
    #[serde(default)]
    pub set_aside: u64,
    /// When this report was written (unix seconds).
    pub written_at: u64,
}

/// How long before its token expires the agent starts to warn.
pub const TOKEN_WARNING_SECS: i64 = 7 * 24 * 3600;

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
    let (last_error, delivered, token_expires_at) = state
        .lock()
        .map(|s| (s.last_error.clone(), s.delivered, s.token_expires_at))
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
        token_expires_at,
        set_aside: outbox.set_aside_entries(),
        written_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    metrics::gauge!(crate::metrics::PENDING.name).set(status.pending as f64);
    metrics::gauge!(crate::metrics::OLDEST_PENDING_SECONDS.name)
        .set(status.oldest_pending_secs as f64);
    metrics::gauge!(crate::metrics::REJECTED.name).set(status.rejected as f64);
    metrics::gauge!(crate::metrics::SET_ASIDE_ENTRIES.name).set(status.set_aside as f64);
    let fill = status.pending as f64 / status.max_pending.max(1) as f64;
    metrics::gauge!(crate::metrics::OUTBOX_FILL_RATIO.name).set(fill);
    if let Some(at) = status.token_expires_at {
        metrics::gauge!(crate::metrics::TOKEN_EXPIRY.name).set(at as f64);
    }
    if let Some(left) = status.token_expires_in()
        && left < TOKEN_WARNING_SECS
    {
        warn_token_expiry(left, status.written_at);
    }
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

/// Warns that the token expires soon (or has), at most once an hour: the status is written
/// every few seconds.
fn warn_token_expiry(left: i64, now: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let last = LAST.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < 3600 {
        return;
    }
    LAST.store(now, Ordering::Relaxed);
    tracing::warn!(
        expires_in = %token_left(left),
        "the bearer token expires soon or has expired: replace the token file with a renewed \
         token (the agent reads it within seconds, no restart)"
    );
}

/// `3 d 4 h`, `5 h 10 min`, `expired 2 h ago`.
fn token_left(secs: i64) -> String {
    let words = |s: i64| {
        let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
        if d > 0 {
            format!("{d} d {h} h")
        } else if h > 0 {
            format!("{h} h {m} min")
        } else {
            format!("{m} min")
        }
    };
    if secs < 0 {
        format!("EXPIRED {} ago", words(-secs))
    } else {
        words(secs)
    }
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
    /// Seconds left before the token expires, as of when the report was written.
    pub fn token_expires_in(&self) -> Option<i64> {
        self.token_expires_at.map(|at| {
            i64::try_from(at).unwrap_or(i64::MAX) - i64::try_from(self.written_at).unwrap_or(0)
        })
    }

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
            printable(self.last_error.as_deref().unwrap_or("none")),
            self.rejected
        );
        if let Some(left) = self.token_expires_in() {
            let advice = if left < TOKEN_WARNING_SECS {
                " (replace the token file with a renewed token)"
            } else {
                ""
            };
            out.push_str(&format!(
                "token expires in:     {}{advice}\n",
                token_left(left)
            ));
        }
        if self.set_aside > 0 {
            out.push_str(&format!(
                "unreadable entries:   {} (set aside in the outbox, not sent: keep the data \
                 folder and contact support)\n",
                self.set_aside
            ));
        }
        // File names, episode keys and the gateway's reasons come from outside: none may
        // steer the terminal of whoever reads the status.
        for r in &self.recent_rejected {
            out.push_str(&format!("  {}\n", printable(&r.to_string())));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_s_expiry_is_shown_with_advice_when_near() {
        let status = |left: i64| Status {
            written_at: 1_000_000,
            token_expires_at: Some((1_000_000 + left) as u64),
            ..Status::default()
        };
        let far = status(30 * 86_400).render();
        assert!(far.contains("token expires in:     30 d 0 h\n"), "{far}");
        let near = status(2 * 86_400 + 3600).render();
        assert!(
            near.contains("2 d 1 h (replace the token file with a renewed token)"),
            "{near}"
        );
        let gone = status(-7200).render();
        assert!(gone.contains("EXPIRED 2 h 0 min ago (replace"), "{gone}");
        assert!(!Status::default().render().contains("token expires"));
    }

    #[test]
    fn nothing_from_outside_can_steer_the_terminal() {
        let hostile = RejectedEvent {
            event_id: "e1".into(),
            document_id: "referral/79025/S1".into(),
            episode: "LK\u{202e}1".into(),
            file: "\u{1b}]0;owned\u{7}\u{1b}[2J.xml".into(),
            reason: "name: bad\nREJECTED forged line".into(),
        };
        let status = Status {
            rejected: 1,
            last_error: Some(hostile.to_string()),
            recent_rejected: vec![hostile],
            ..Status::default()
        };
        let text = status.render();
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{text:?}"
        );
        assert_eq!(
            text.lines().filter(|l| l.contains("REJECTED")).count(),
            2,
            "one line for the last error, one for the rejected event: {text}"
        );
    }
}
