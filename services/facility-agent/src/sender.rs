//! Delivery: the oldest queued events go to the gateway in batches, in intake order; an entry
//! leaves the outbox only when the gateway answered ACCEPTED or DUPLICATE. REJECTED entries go
//! to the dead store with the gateway's reason; anything else (gateway down, busy, a timeout)
//! is retried with exponential backoff and jitter, for as long as it takes.
//!
//! A request carries at most a count and a size of events, so no request is larger than the
//! gateway takes: a refused request would be retried for ever and hold back every event queued
//! after it. An event too large for any request is set aside at once, as the gateway would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lienthong_grpc::GatewayConnection;
use lienthong_grpc::client::Unreached;
use lienthong_proto::v1 as pb;
use prost::Message as _;
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use tracing::Instrument as _;

use crate::outbox::{Entry, Outbox};

/// What the sender last saw, for the status report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SenderState {
    /// The last delivery error, cleared by the next success.
    pub last_error: Option<String>,
    /// Events delivered since start.
    pub delivered: u64,
    /// When the token being sent expires (unix seconds), if it says.
    pub token_expires_at: Option<u64>,
}

/// Shared sender state.
pub type SharedState = Arc<Mutex<SenderState>>;

/// The most one request to the gateway carries.
#[derive(Debug, Clone, Copy)]
pub struct RequestSize {
    /// Events.
    pub events: usize,
    /// Encoded bytes of those events.
    pub bytes: usize,
}

/// What an event adds to a request: its envelope, and the tag and length that frame it.
fn request_bytes(entry: &Entry) -> usize {
    let len = entry.envelope.encoded_len();
    len + prost::encoding::encoded_len_varint(len as u64) + 1
}

/// The longest run of `entries`, from the oldest, that fits `budget` bytes; never empty when
/// `entries` is not (a first entry larger than the budget is returned alone).
fn within_bytes(mut entries: Vec<Entry>, budget: usize) -> Vec<Entry> {
    let mut total = 0;
    let fit = entries
        .iter()
        .take_while(|e| {
            total += request_bytes(e);
            total <= budget
        })
        .count()
        .max(1);
    entries.truncate(fit);
    entries
}

/// The rejection of an event no request can carry, in the gateway's words for one.
fn too_large(entry: &Entry, budget: usize) -> pb::EventResult {
    let size = request_bytes(entry);
    let why = format!(
        "the event is {size} bytes, more than a request to the gateway carries ({budget} bytes, \
         --max-request-bytes); shorten its free text and export it again as a new version \
         (retrying will not help)"
    );
    pb::EventResult {
        outcome: pb::Outcome::Rejected as i32,
        message: why.clone(),
        errors: vec![pb::ValidationError {
            code: "event.too_large".into(),
            path: "event".into(),
            value: budget.to_string(),
            message: why,
            message_vi: format!(
                "Sự kiện {size} byte, lớn hơn giới hạn một yêu cầu gửi cổng tiếp nhận ({budget} \
                 byte); hãy rút gọn nội dung văn bản và xuất lại"
            ),
            severity: pb::ErrorSeverity::Error as i32,
        }],
        ..Default::default()
    }
}

fn jittered(d: Duration) -> Duration {
    // Up to 50 % more, so that thousands of agents coming back after an outage spread out.
    let extra = rand::rng().random_range(0..=d.as_millis() as u64 / 2);
    d + Duration::from_millis(extra)
}

fn reason(r: &pb::EventResult) -> String {
    let errors: Vec<String> = r
        .errors
        .iter()
        .filter(|e| e.severity == pb::ErrorSeverity::Error as i32)
        .map(|e| format!("{} at {}: {}", e.code, e.path, e.message))
        .collect();
    if errors.is_empty() {
        r.message.clone()
    } else {
        errors.join("; ")
    }
}

/// Runs until `shutdown`; a batch in flight is settled before returning.
pub async fn run(
    outbox: Outbox,
    gateway: GatewayConnection,
    size: RequestSize,
    state: SharedState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = gateway.channel()?;
    // Re-read when replaced: a renewed token is sent within seconds, without a restart.
    let token = gateway
        .token_file
        .as_deref()
        .map(lienthong_grpc::TokenFile::open)
        .transpose()?;
    let mut backoff = Duration::from_millis(250);
    let set_error = |e: Option<String>| {
        if let Ok(mut s) = state.lock() {
            s.last_error = e;
        }
    };
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let bearer = token.as_ref().map(|t| t.current());
        if let Ok(mut s) = state.lock() {
            s.token_expires_at = bearer.as_ref().and_then(|b| b.expires_at);
        }
        let entries = within_bytes(of_one_trace(outbox.peek(size.events.max(1))?), size.bytes);
        if entries.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {},
                _ = shutdown.cancelled() => return Ok(()),
            }
            continue;
        }
        if let [only] = entries.as_slice()
            && request_bytes(only) > size.bytes
        {
            settle(&outbox, &entries, &[too_large(only, size.bytes)], &state).await?;
            continue;
        }
        let mut request = gateway.request(
            bearer.as_ref().map(|b| b.text.as_str()),
            entries.iter().map(|e| e.envelope.clone()).collect(),
        )?;
        let span = tracing::info_span!("send", events = entries.len());
        lienthong_telemetry::trace::continue_trace(&span, Some(entries[0].trace.as_str()));
        if let Some(traceparent) = lienthong_telemetry::trace::traceparent_of(&span)
            && let Ok(value) = traceparent.parse()
        {
            request
                .metadata_mut()
                .insert(lienthong_telemetry::trace::TRACEPARENT, value);
        }
        let wait = match client.clone().publish(request).instrument(span).await {
            Ok(resp) => {
                let results = resp.into_inner().results;
                if results.len() != entries.len() {
                    set_error(Some(format!(
                        "the gateway answered {} results for {} events; retrying",
                        results.len(),
                        entries.len()
                    )));
                    Some(backoff)
                } else {
                    settle(&outbox, &entries, &results, &state).await?
                }
            }
            Err(status) => {
                metrics::counter!(crate::metrics::SEND_FAILURES.name, "code" => format!("{:?}", status.code()))
                    .increment(1);
                // Why the gateway was not reached says what to fix (a CA, a URL); the
                // gateway's own answer is shown as it came.
                let why = match Unreached::of(&gateway.endpoint(), status) {
                    Ok(unreached) => unreached.to_string(),
                    Err(status) => format!("{:?}: {}", status.code(), status.message()),
                };
                tracing::warn!(error = %why, pending = outbox.pending(), "events not delivered; they stay in the outbox");
                set_error(Some(why));
                Some(backoff)
            }
        };
        match wait {
            Some(w) => {
                tokio::select! {
                    _ = tokio::time::sleep(jittered(w)) => {},
                    _ = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            None => backoff = Duration::from_millis(250),
        }
    }
}

/// The longest run of `entries`, from the oldest, taken in under one trace: a request to the
/// gateway continues one trace, so events of another traced intake wait for the next request.
/// Untraced entries travel together.
fn of_one_trace(mut entries: Vec<Entry>) -> Vec<Entry> {
    let run = entries
        .iter()
        .take_while(|e| entries.first().is_some_and(|first| first.trace == e.trace))
        .count();
    entries.truncate(run);
    entries
}

/// Applies a batch's answers; Some(wait) when some must be retried.
async fn settle(
    outbox: &Outbox,
    entries: &[Entry],
    results: &[pb::EventResult],
    state: &SharedState,
) -> anyhow::Result<Option<Duration>> {
    let mut delivered = Vec::new();
    let mut refused = Vec::new();
    let mut retry_after: Option<u32> = None;
    for (entry, r) in entries.iter().zip(results) {
        let outcome = pb::Outcome::try_from(r.outcome).unwrap_or_default();
        let label = match outcome {
            pb::Outcome::Accepted => {
                delivered.push(entry.seq);
                "accepted"
            }
            pb::Outcome::Duplicate => {
                delivered.push(entry.seq);
                "duplicate"
            }
            pb::Outcome::Rejected => {
                let why = reason(r);
                tracing::warn!(event_id = %r.event_id, reason = %why, "the gateway rejected an event; kept in the agent's dead-letter store");
                refused.push((entry.clone(), why));
                "rejected"
            }
            _ => {
                retry_after = Some(retry_after.unwrap_or(0).max(r.retry_after_ms));
                "retry"
            }
        };
        metrics::counter!(crate::metrics::EVENTS.name, "outcome" => label).increment(1);
    }
    outbox.settle(&delivered, &refused).await?;
    if let Ok(mut s) = state.lock() {
        s.delivered += delivered.len() as u64;
        // A rejection is permanent: it stays the last error until another error replaces it
        // (deliveries that follow do not clear it), so the status never says "none" while
        // refused events wait for someone to fix them.
        if let Some((entry, why)) = refused.last() {
            s.last_error = Some(crate::status::RejectedEvent::of(entry, why).to_string());
        } else if retry_after.is_none()
            && !s
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("REJECTED"))
        {
            s.last_error = None;
        }
    }
    Ok(retry_after.map(|ms| Duration::from_millis(u64::from(ms.max(250)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str) -> pb::EventEnvelope {
        pb::EventEnvelope {
            event: Some(pb::event_envelope::Event::Appointment(
                pb::AppointmentEvent {
                    header: Some(pb::EventHeader {
                        event_id: id.into(),
                        ..Default::default()
                    }),
                    appointment: None,
                },
            )),
        }
    }

    fn answer(outcome: pb::Outcome) -> pb::EventResult {
        pb::EventResult {
            outcome: outcome as i32,
            message: "the gateway's message".into(),
            errors: vec![pb::ValidationError {
                code: "citizen_id.length".into(),
                path: "appointment.patient.citizen_id".into(),
                message: "must be 12 digits".into(),
                severity: pb::ErrorSeverity::Error as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_request_carries_the_events_of_one_traced_intake_or_untraced_ones() {
        let entry = |seq: u64, trace: &str| Entry {
            seq,
            enqueued_ms: 0,
            reason: String::new(),
            origin: String::new(),
            trace: trace.into(),
            envelope: env(&seq.to_string()),
        };
        let seqs = |v: Vec<Entry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        let t1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mixed = vec![entry(1, t1), entry(2, t1), entry(3, t2), entry(4, t1)];
        assert_eq!(seqs(of_one_trace(mixed)), [1, 2]);
        let untraced = vec![entry(1, ""), entry(2, ""), entry(3, t1)];
        assert_eq!(seqs(of_one_trace(untraced)), [1, 2]);
        assert!(of_one_trace(Vec::new()).is_empty());
    }

    #[test]
    fn a_request_holds_what_fits_its_bytes_and_at_least_one_event() {
        let entry = |seq: u64, text_bytes: usize| {
            let mut envelope = env(&seq.to_string());
            if let Some(pb::event_envelope::Event::Appointment(a)) = &mut envelope.event {
                a.header.get_or_insert_with(Default::default).source_system =
                    "x".repeat(text_bytes);
            }
            Entry {
                seq,
                enqueued_ms: 0,
                reason: String::new(),
                origin: String::new(),
                trace: String::new(),
                envelope,
            }
        };
        let seqs = |v: Vec<Entry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        let sizes: Vec<usize> = [1, 2, 3].map(|s| request_bytes(&entry(s, 1000))).to_vec();
        let three = || vec![entry(1, 1000), entry(2, 1000), entry(3, 1000)];
        assert_eq!(seqs(within_bytes(three(), sizes[0] + sizes[1])), [1, 2]);
        assert_eq!(seqs(within_bytes(three(), sizes.iter().sum())), [1, 2, 3]);
        assert_eq!(seqs(within_bytes(three(), sizes[0] + sizes[1] - 1)), [1]);
        assert_eq!(seqs(within_bytes(three(), 10)), [1], "never empty");
        assert!(within_bytes(Vec::new(), 10).is_empty());
        // The size counted is the size sent.
        let request = pb::PublishRequest {
            events: three().into_iter().map(|e| e.envelope).collect(),
            request_id: String::new(),
        };
        assert_eq!(request.encoded_len(), sizes.iter().sum::<usize>());
    }

    #[tokio::test]
    async fn an_event_no_request_can_carry_is_set_aside_with_the_reason() {
        let dir = tempfile::tempdir().expect("tmp");
        let outbox = Outbox::open(dir.path(), 100).expect("open");
        outbox.enqueue(vec![env("big")]).await.expect("enqueue");
        let entries = outbox.peek(10).expect("peek");
        let state = SharedState::default();
        let wait = settle(&outbox, &entries, &[too_large(&entries[0], 16)], &state)
            .await
            .expect("settle");
        assert!(wait.is_none(), "nothing to retry");
        assert_eq!(outbox.pending(), 0);
        let dead = outbox.dead_entries().expect("dead");
        assert!(
            dead[0]
                .reason
                .starts_with("event.too_large at event: the event is ")
                && dead[0].reason.contains("(16 bytes, --max-request-bytes)"),
            "{}",
            dead[0].reason
        );
        let last = state.lock().expect("lock").last_error.clone();
        assert!(last.is_some_and(|e| e.starts_with("REJECTED")));
    }

    #[tokio::test]
    async fn answers_settle_the_outbox_rejections_keep_the_gateways_reason() {
        let dir = tempfile::tempdir().expect("tmp");
        let outbox = Outbox::open(dir.path(), 100).expect("open");
        outbox
            .enqueue(vec![env("a"), env("b"), env("c"), env("d")])
            .await
            .expect("enqueue");
        let entries = outbox.peek(10).expect("peek");
        let state = SharedState::default();
        let wait = settle(
            &outbox,
            &entries,
            &[
                answer(pb::Outcome::Accepted),
                answer(pb::Outcome::Rejected),
                answer(pb::Outcome::Unavailable),
                answer(pb::Outcome::Duplicate),
            ],
            &state,
        )
        .await
        .expect("settle");
        assert!(wait.is_some(), "an unavailable answer is retried");
        let left = outbox.peek(10).expect("peek");
        assert_eq!(left.len(), 1, "only the unavailable one stays queued");
        assert_eq!(left[0].envelope, env("c"));
        let dead = outbox.dead_entries().expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].envelope, env("b"));
        assert_eq!(
            dead[0].reason,
            "citizen_id.length at appointment.patient.citizen_id: must be 12 digits"
        );
        assert_eq!(state.lock().expect("lock").delivered, 2);
    }
}
