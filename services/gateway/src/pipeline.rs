//! The per-event pipeline: decode → validate → authorize → pseudonymize → frame → produce →
//! answer after the delivery report. Nothing is ACCEPTED before Kafka has it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_core::validation::{Severity, ValidationContext, has_errors};
use lienthong_core::{ClinicalEvent, DocumentKind, PatientKeyer, PersonId};
use lienthong_kafka::EventProducer;
use lienthong_proto::v1 as pb;
use lienthong_registry::WireCodec;
use prost::Message;
use tonic::Status;
use tracing::Instrument;

use crate::config::GatewayConfig;
use crate::dedupe::{DuplicateCache, Location, Seen};
use crate::directory::DirectoryFile;
use crate::limits::InFlight;
use lienthong_grpc::FacilityRateLimit;
use lienthong_grpc::{Authenticator, Identity};

/// Why a whole request was refused (per-event problems are answered per event).
#[derive(Debug)]
pub enum RequestError {
    /// Too many events in one request.
    TooLarge(String),
    /// At capacity or over the facility's rate: retry after the delay.
    Exhausted(String, Duration),
}

impl RequestError {
    /// The gRPC status, with a `retry-after-ms` trailer when there is a delay.
    pub fn into_status(self) -> Status {
        match self {
            Self::TooLarge(m) => Status::invalid_argument(m),
            Self::Exhausted(m, after) => {
                let mut s = Status::resource_exhausted(format!(
                    "{m}; retry after {} ms",
                    after.as_millis()
                ));
                if let Ok(v) = after.as_millis().to_string().parse() {
                    s.metadata_mut().insert("retry-after-ms", v);
                }
                s
            }
        }
    }
}

/// The gateway's shared state.
pub struct Gateway {
    producer: EventProducer,
    codec: WireCodec,
    keyer: PatientKeyer,
    auth: Authenticator,
    dupes: DuplicateCache,
    in_flight: InFlight,
    rate: FacilityRateLimit,
    topics: BTreeMap<DocumentKind, Arc<str>>,
    /// Largest record each topic takes (its `max.message.bytes`, read from the broker).
    topic_limits: BTreeMap<String, usize>,
    /// The facility directory, when the operator supplies one.
    directory: Option<Arc<DirectoryFile>>,
    max_batch: usize,
    produce_timeout: Duration,
    future_skew: Duration,
}

fn result(event_id: &str, outcome: pb::Outcome, message: impl Into<String>) -> pb::EventResult {
    pb::EventResult {
        event_id: event_id.to_owned(),
        outcome: outcome as i32,
        message: message.into(),
        ..Default::default()
    }
}

/// What a Kafka record adds to its value, key and headers (batch and record framing), with
/// room to spare: an event this close to the limit is refused here rather than by the broker.
const RECORD_OVERHEAD: usize = 256;

/// The answer to an event accepted before with the same content: where it was stored.
fn duplicate(
    event_id: &str,
    kind: DocumentKind,
    loc: &Location,
    errors: Vec<pb::ValidationError>,
) -> pb::EventResult {
    record(kind.as_str(), "duplicate");
    pb::EventResult {
        event_id: event_id.to_owned(),
        outcome: pb::Outcome::Duplicate as i32,
        topic: loc.topic.to_string(),
        partition: loc.partition,
        offset: loc.offset,
        errors,
        ..Default::default()
    }
}

/// The refusal of an event_id stored, or being published, with other content: a corrected
/// document under the id of a stored version would otherwise be answered DUPLICATE and lost.
fn conflict(event_id: &str, kind: DocumentKind, publishing: bool) -> pb::EventResult {
    let (state, state_vi) = if publishing {
        ("is being published", "đang được gửi")
    } else {
        ("was stored", "đã được lưu")
    };
    record(kind.as_str(), "rejected");
    metrics::counter!(crate::metrics::REJECTS.name, "code" => "header.event_id_conflict")
        .increment(1);
    let why = format!(
        "event_id {event_id} {state} with other content; a changed document is a new version: \
         raise document_version and derive its event_id"
    );
    let mut r = result(event_id, pb::Outcome::Rejected, why.clone());
    r.errors.push(pb::ValidationError {
        code: "header.event_id_conflict".into(),
        severity: pb::ErrorSeverity::Error as i32,
        path: "header.event_id".into(),
        value: event_id.to_owned(),
        message: why,
        message_vi: format!(
            "event_id {state_vi} với nội dung khác; chứng từ sửa đổi phải gửi phiên bản mới \
             (tăng document_version)"
        ),
    });
    r
}

/// The refusal of an event whose source facility the caller does not speak for: it is
/// neither that facility nor the hub of it.
fn not_the_callers(header: &pb::EventHeader, caller: Option<&Identity>) -> pb::EventResult {
    let code = "header.source_facility_forbidden";
    metrics::counter!(crate::metrics::REJECTS.name, "code" => code).increment(1);
    let source = &header.source_facility_code;
    let who = caller.map_or("an anonymous caller".to_owned(), |c| {
        format!("facility {}", c.facility)
    });
    let why = format!(
        "source facility {source:?} is not {who} nor one of its hub's members: publish each \
         facility's events with its own certificate or token, or ask the operator to add it to \
         the hub"
    );
    let mut r = result(&header.event_id, pb::Outcome::Rejected, why.clone());
    r.errors.push(pb::ValidationError {
        code: code.into(),
        severity: pb::ErrorSeverity::Error as i32,
        path: "header.source_facility_code".into(),
        value: source.clone(),
        message: why,
        message_vi: format!(
            "Cơ sở gửi {source:?} không phải là cơ sở của chứng thư hoặc token đang dùng, cũng \
             không thuộc nhóm (hub) của cơ sở đó"
        ),
    });
    r
}

/// The permanent answer to an event larger than its topic takes: REJECTED `event.too_large`
/// with the size and the limit (None: the broker refused it before its limit was known).
fn too_large(event_id: &str, topic: &str, size: usize, limit: Option<usize>) -> pb::EventResult {
    metrics::counter!(crate::metrics::REJECTS.name, "code" => "event.too_large").increment(1);
    let limit_text = limit.map_or_else(
        || "more than it accepts".to_owned(),
        |l| format!("more than the {l} bytes it accepts"),
    );
    let mut r = result(
        event_id,
        pb::Outcome::Rejected,
        format!(
            "the event makes a {size}-byte record on topic {topic}, {limit_text}; shorten its \
             free text and publish a new version (retrying will not help)"
        ),
    );
    r.errors.push(pb::ValidationError {
        code: "event.too_large".into(),
        value: limit.map(|l| l.to_string()).unwrap_or_default(),
        message: r.message.clone(),
        message_vi: format!(
            "Sự kiện tạo bản ghi {size} byte, lớn hơn giới hạn của chủ đề Kafka {topic}; hãy rút \
             gọn nội dung văn bản và gửi phiên bản mới"
        ),
        severity: pb::ErrorSeverity::Error as i32,
        ..Default::default()
    });
    r
}

fn now_timestamp() -> prost_types::Timestamp {
    let now = time::OffsetDateTime::now_utc();
    prost_types::Timestamp {
        seconds: now.unix_timestamp(),
        nanos: now.nanosecond() as i32,
    }
}

impl Gateway {
    /// Builds the gateway from its parts.
    pub fn new(
        config: &GatewayConfig,
        producer: EventProducer,
        codec: WireCodec,
        keyer: PatientKeyer,
        auth: Authenticator,
        topic_limits: BTreeMap<String, usize>,
        directory: Option<Arc<DirectoryFile>>,
    ) -> Self {
        Self {
            topic_limits,
            directory,
            producer,
            codec,
            keyer,
            auth,
            dupes: DuplicateCache::new(
                Duration::from_secs(config.duplicate_window_secs),
                config.duplicate_cache_entries,
            ),
            in_flight: InFlight::new(config.max_in_flight_events, config.max_in_flight_bytes),
            rate: FacilityRateLimit::new(config.facility_rate, config.facility_burst),
            topics: config
                .topics()
                .into_iter()
                .map(|(kind, topic)| (kind, Arc::from(topic)))
                .collect(),
            max_batch: config.max_batch_events,
            produce_timeout: config.produce_timeout(),
            future_skew: Duration::from_secs(config.future_skew_secs),
        }
    }

    /// The authenticator.
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The producer (flushed at shutdown).
    pub fn producer(&self) -> &EventProducer {
        &self.producer
    }

    /// Publishes one request's events; one result per event in request order.
    pub async fn publish(
        &self,
        caller: Option<&Identity>,
        req: pb::PublishRequest,
    ) -> Result<pb::PublishResponse, RequestError> {
        let n = req.events.len();
        if n > self.max_batch {
            return Err(RequestError::TooLarge(format!(
                "{n} events in one request; the limit is {}: split the batch",
                self.max_batch
            )));
        }
        let rate_key = caller.map_or("insecure-dev", |c| c.facility.as_str());
        if let Err(after) = self.rate.try_take(rate_key, n) {
            metrics::counter!(crate::metrics::THROTTLED.name, "reason" => "rate")
                .increment(n as u64);
            return Err(RequestError::Exhausted(
                format!("facility {rate_key} is over its rate limit"),
                after,
            ));
        }
        let bytes = req.encoded_len();
        let Some(_permit) = self.in_flight.try_acquire(n, bytes) else {
            metrics::counter!(crate::metrics::THROTTLED.name, "reason" => "capacity")
                .increment(n as u64);
            return Err(RequestError::Exhausted(
                "the gateway is at capacity".into(),
                Duration::from_millis(200),
            ));
        };
        metrics::gauge!(crate::metrics::IN_FLIGHT.name).set(self.in_flight.in_flight() as f64);
        let ctx = ValidationContext {
            now: time::OffsetDateTime::now_utc(),
            future_skew: self.future_skew,
        };
        // The events are polled in request order and each claims its event_id before its
        // first await, so of two copies in one request the first publishes and the later
        // waits for it (see `dedupe`): a repeat is produced once, other content is a conflict.
        let results = futures::future::join_all(
            req.events
                .into_iter()
                .map(|env| self.publish_event(caller, env, &ctx)),
        )
        .await;
        metrics::gauge!(crate::metrics::IN_FLIGHT.name)
            .set(self.in_flight.in_flight().saturating_sub(n) as f64);
        Ok(pb::PublishResponse {
            request_id: req.request_id,
            results,
        })
    }

    async fn publish_event(
        &self,
        caller: Option<&Identity>,
        env: pb::EventEnvelope,
        ctx: &ValidationContext,
    ) -> pb::EventResult {
        let Some(mut event) = ClinicalEvent::from_envelope(env) else {
            record("unknown", "rejected");
            metrics::counter!(crate::metrics::REJECTS.name, "code" => "event.unknown_kind")
                .increment(1);
            let mut r = result(
                "",
                pb::Outcome::Rejected,
                "the envelope holds no event this gateway knows (referral, appointment, lab_result)",
            );
            r.errors.push(pb::ValidationError {
                code: "event.unknown_kind".into(),
                severity: pb::ErrorSeverity::Error as i32,
                path: "event".into(),
                message: "unknown or missing document kind; upgrade the publisher or the gateway"
                    .into(),
                message_vi: "Loại chứng từ không được hỗ trợ".into(),
                ..Default::default()
            });
            return r;
        };
        let kind = event.kind();
        let header = event.header().cloned().unwrap_or_default();
        let span = tracing::info_span!("event", event_id = %header.event_id, facility = %header.source_facility_code, kind = kind.as_str());
        async move {
            // Refused per event, not per request: a facility's agent then sets the one event
            // aside for its staff and goes on delivering the others.
            if event.header().is_some()
                && !self.auth.may_act_for(caller, &header.source_facility_code)
            {
                record(kind.as_str(), "rejected");
                return not_the_callers(&header, caller);
            }
            let mut violations = event.validate(ctx);
            if let Some(directory) = &self.directory {
                // Validity is judged on the day the document was made, not the day it arrives.
                let day = header
                    .occurred_at
                    .as_ref()
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
                    .unwrap_or(ctx.now)
                    .date();
                violations.extend(directory.current().violations(&event, day));
            }
            let mut errors: Vec<pb::ValidationError> =
                violations.iter().map(pb::ValidationError::from).collect();
            if has_errors(&violations) {
                for v in violations.iter().filter(|v| v.severity == Severity::Error) {
                    metrics::counter!(crate::metrics::REJECTS.name, "code" => v.code.clone())
                        .increment(1);
                }
                record(kind.as_str(), "rejected");
                tracing::info!(errors = errors.len(), "event rejected");
                let mut r = result(
                    &header.event_id,
                    pb::Outcome::Rejected,
                    "the document is invalid; see errors",
                );
                r.errors = errors;
                return r;
            }
            let content = event.content_digest();
            // A copy that waited for another publication which stored nothing claims once more
            // and publishes itself, so its answer is its own (a size refusal stays permanent).
            let mut waited = false;
            let claim = loop {
                match self.dupes.claim(&header.event_id, content) {
                    Seen::New(claim) => break claim,
                    Seen::Stored(loc) if loc.content == content => {
                        return duplicate(&header.event_id, kind, &loc, errors);
                    }
                    Seen::Stored(_) => return conflict(&header.event_id, kind, false),
                    Seen::Publishing {
                        content: theirs, ..
                    } if theirs != content => {
                        return conflict(&header.event_id, kind, true);
                    }
                    Seen::Publishing { outcome, .. } => match outcome.await {
                        Some(loc) => return duplicate(&header.event_id, kind, &loc, errors),
                        None if !waited => waited = true,
                        None => {
                            record(kind.as_str(), "unavailable");
                            let mut r = result(
                                &header.event_id,
                                pb::Outcome::Unavailable,
                                "another copy of this event was being published and was not \
                                 stored: retry it",
                            );
                            r.retry_after_ms = 1000;
                            return r;
                        }
                    },
                }
            };
            // Validation guarantees a parseable identity number.
            let citizen_id = event
                .patient()
                .map(|p| p.citizen_id.clone())
                .unwrap_or_default();
            let Ok(person) = PersonId::parse(&citizen_id) else {
                record(kind.as_str(), "rejected");
                return result(
                    &header.event_id,
                    pb::Outcome::Rejected,
                    "patient identity number is invalid",
                );
            };
            let key = self.keyer.key_for(&person);
            {
                let h = event.header_mut();
                h.patient_key = key.value.clone();
                h.patient_key_id = key.key_id;
                h.recorded_at = Some(now_timestamp());
            }
            let topic = self
                .topics
                .get(&kind)
                .cloned()
                .unwrap_or_else(|| Arc::from(kind.topic()));
            let framed = match self
                .codec
                .encode_for(kind, &topic, &event.encode_to_vec())
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    record(kind.as_str(), "unavailable");
                    tracing::warn!(error = %e, "cannot frame event");
                    let mut r = result(
                        &header.event_id,
                        pb::Outcome::Unavailable,
                        format!("{e}; nothing was stored: retry"),
                    );
                    r.retry_after_ms = 1000;
                    return r;
                }
            };
            // The consumers continue the publishing request's trace from this header.
            let traceparent = lienthong_telemetry::trace::traceparent_of(&tracing::Span::current());
            let mut headers: Vec<(&str, &[u8])> = vec![
                ("lienthong-event-id", header.event_id.as_bytes()),
                ("lienthong-message-type", kind.message_name().as_bytes()),
                (
                    "lienthong-source-facility",
                    header.source_facility_code.as_bytes(),
                ),
            ];
            if let Some(t) = &traceparent {
                headers.push((lienthong_telemetry::trace::TRACEPARENT, t.as_bytes()));
            }
            let limit = self.topic_limits.get(&*topic).copied();
            let record_size = framed.len()
                + key.value.len()
                + headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
                + RECORD_OVERHEAD;
            if limit.is_some_and(|limit| record_size > limit) {
                record(kind.as_str(), "rejected");
                return too_large(&header.event_id, &topic, record_size, limit);
            }
            let started = Instant::now();
            let sent = tokio::time::timeout(
                self.produce_timeout,
                self.producer
                    .send(&topic, key.value.as_bytes(), &framed, &headers),
            )
            .await;
            metrics::histogram!(crate::metrics::ACK_SECONDS.name, "kind" => kind.as_str())
                .record(started.elapsed().as_secs_f64());
            match sent {
                Ok(Ok(d)) => {
                    claim.stored(Location {
                        topic: Arc::clone(&topic),
                        partition: d.partition,
                        offset: d.offset,
                        content,
                    });
                    record(kind.as_str(), "accepted");
                    errors.retain(|e| e.severity == pb::ErrorSeverity::Warning as i32);
                    pb::EventResult {
                        event_id: header.event_id.clone(),
                        outcome: pb::Outcome::Accepted as i32,
                        topic: topic.to_string(),
                        partition: d.partition,
                        offset: d.offset,
                        errors,
                        ..Default::default()
                    }
                }
                Ok(Err(e)) if e.is_too_large() => {
                    // Permanent: the same bytes will never fit; a retry would loop forever.
                    record(kind.as_str(), "rejected");
                    too_large(&header.event_id, &topic, record_size, limit)
                }
                Ok(Err(e)) => {
                    record(kind.as_str(), "unavailable");
                    tracing::warn!(error = %e, "Kafka did not take the event");
                    let mut r = result(
                        &header.event_id,
                        pb::Outcome::Unavailable,
                        format!("Kafka did not acknowledge the event: {e}; retry it"),
                    );
                    r.retry_after_ms = 1000;
                    r
                }
                Err(_) => {
                    record(kind.as_str(), "unavailable");
                    tracing::warn!("Kafka acknowledgement timed out");
                    let mut r = result(
                        &header.event_id,
                        pb::Outcome::Unavailable,
                        format!(
                            "Kafka did not acknowledge within {:?}; retry it",
                            self.produce_timeout
                        ),
                    );
                    r.retry_after_ms = 1000;
                    r
                }
            }
        }
        .instrument(span)
        .await
    }
}

fn record(kind: &'static str, outcome: &'static str) {
    metrics::counter!(crate::metrics::EVENTS.name, "kind" => kind, "outcome" => outcome)
        .increment(1);
}

fn envelope_header(env: &pb::EventEnvelope) -> Option<&pb::EventHeader> {
    use pb::event_envelope::Event;
    match env.event.as_ref()? {
        Event::Referral(e) => e.header.as_ref(),
        Event::Appointment(e) => e.header.as_ref(),
        Event::LabResult(e) => e.header.as_ref(),
    }
}

/// The event_id of an envelope's event, if any.
pub fn event_id_of(env: &pb::EventEnvelope) -> Option<String> {
    envelope_header(env).map(|h| h.event_id.clone())
}
