//! The access audit: one `AccessAuditEvent` per decision of the query API (allowed, refused,
//! break-the-glass), framed with its registered schema and written to the audit topic before
//! the answer leaves. An answer whose audit record Kafka did not acknowledge is withheld; an
//! acknowledgement is audited before its receipt is published, so no unaudited access changes
//! anything.

use std::sync::Arc;

use lienthong_grpc::Identity;
use lienthong_kafka::EventProducer;
use lienthong_proto::v1 as pb;
use lienthong_registry::WireCodec;
use prost::Message as _;
use tonic::{Request, Status};

/// The protobuf message of the audit topic.
pub const MESSAGE: &str = "lienthong.v1.AccessAuditEvent";

/// What one request asked and what was decided, filled in as the request is answered.
#[derive(Debug, Default)]
pub struct AccessRecord {
    /// The caller, once identified.
    pub caller: Option<Identity>,
    /// True once identification was tried (a None caller then means insecure development).
    pub identified: bool,
    /// Method name.
    pub method: &'static str,
    /// Stated purpose (PurposeOfUse name).
    pub purpose: String,
    /// Decision; UNSPECIFIED until decided (an answer without one is ALLOWED, an error REFUSED).
    pub decision: pb::AccessDecision,
    /// Why.
    pub reason: String,
    /// Patients the request was about or the answer held.
    pub patient_keys: Vec<String>,
    /// Documents answered.
    pub results: u32,
    /// The caller's request id.
    pub request_id: String,
    /// The client's address.
    pub client_address: String,
    /// The facility whose list or referral it was.
    pub subject_facility: String,
    /// The referral acknowledged.
    pub document_id: String,
    /// The decision is in the audit already: written before an effect (a receipt) that must
    /// not happen unaudited.
    pub settled: bool,
}

/// A request id as a client may send it: printable ASCII, at most 128 characters.
fn request_id_of<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

impl AccessRecord {
    /// A record for `method`, with what the transport says about the request.
    pub fn of<T>(method: &'static str, request: &Request<T>) -> Self {
        Self {
            method,
            request_id: request_id_of(request),
            client_address: lienthong_grpc::tls::PeerInfo::of(request)
                .and_then(|p| p.remote)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            ..Self::default()
        }
    }

    /// Adds a patient key once.
    pub fn patient(&mut self, key: &str) {
        if !key.is_empty() && !self.patient_keys.iter().any(|k| k == key) {
            self.patient_keys.push(key.to_owned());
        }
    }

    fn event(&self, answered: Result<(), &Status>) -> pb::AccessAuditEvent {
        let now = time::OffsetDateTime::now_utc();
        let (decision, reason) = match (answered, self.decision) {
            (Err(status), _) => (
                pb::AccessDecision::Refused,
                if self.reason.is_empty() {
                    status.message().to_owned()
                } else {
                    self.reason.clone()
                },
            ),
            (Ok(()), pb::AccessDecision::Unspecified) => {
                (pb::AccessDecision::Allowed, self.reason.clone())
            }
            (Ok(()), d) => (d, self.reason.clone()),
        };
        let auth_method = match (&self.caller, self.identified) {
            (Some(c), _) => c.method,
            (None, true) => "insecure-dev",
            (None, false) => "none",
        };
        pb::AccessAuditEvent {
            audit_id: uuid::Uuid::new_v4().to_string(),
            at: Some(prost_types::Timestamp {
                seconds: now.unix_timestamp(),
                nanos: i32::try_from(now.nanosecond()).unwrap_or(0),
            }),
            caller_facility: self
                .caller
                .as_ref()
                .map(|c| c.facility.clone())
                .unwrap_or_default(),
            caller_individual: self
                .caller
                .as_ref()
                .and_then(|c| c.individual.clone())
                .unwrap_or_default(),
            auth_method: auth_method.to_owned(),
            method: self.method.to_owned(),
            purpose: self.purpose.clone(),
            decision: decision as i32,
            reason,
            patient_keys: self.patient_keys.clone(),
            results: self.results,
            request_id: self.request_id.clone(),
            client_address: self.client_address.clone(),
            subject_facility: self.subject_facility.clone(),
            document_id: self.document_id.clone(),
        }
    }
}

/// Writes audit records.
pub struct AuditLog {
    /// Producer (idempotent, acks=all).
    pub producer: EventProducer,
    /// Registry framing.
    pub codec: Arc<WireCodec>,
    /// Audit topic.
    pub topic: String,
    /// Whether Kafka answers: while it is known not to, a record is not tried, so that a
    /// caller hears at once (and turns to another replica) instead of after the producer's
    /// timeout.
    pub health: crate::health::RegionHealth,
}

impl AuditLog {
    /// Writes the record of an answered (`Ok`) or refused (`Err`) request and returns the
    /// answer: an answer is withheld (UNAVAILABLE) when its record was not stored; a refusal
    /// stays the refusal.
    pub async fn settle<T>(
        &self,
        record: &AccessRecord,
        answer: Result<T, Status>,
    ) -> Result<T, Status> {
        if record.settled {
            // Allowed and audited before its effect; an effect that failed is retried by the
            // caller, and the retry is audited in turn.
            return answer;
        }
        let event = record.event(answer.as_ref().map(|_| ()));
        if event.decision == pb::AccessDecision::BreakGlass as i32 {
            metrics::counter!(crate::metrics::BREAK_GLASS.name, "facility" => event.caller_facility.clone())
                .increment(1);
            tracing::warn!(facility = %event.caller_facility, individual = %event.caller_individual, method = record.method, request_id = %event.request_id, "break-the-glass access to a patient record without a care relationship (EMERGENCY): review it");
        }
        let stored = self.write(&event).await;
        match (answer, stored) {
            (Ok(a), Ok(())) => Ok(a),
            (Ok(_), Err(e)) => Err(Status::unavailable(format!(
                "the access could not be audited, so it is refused: {e}"
            ))),
            (Err(refusal), Ok(())) => Err(refusal),
            (Err(refusal), Err(e)) => {
                tracing::warn!(error = %e, method = record.method, "a refused access could not be audited");
                Err(refusal)
            }
        }
    }

    /// Writes the record of an allowed request before its effect, so that nothing is
    /// changed by an access the audit does not hold; `settle` then writes nothing more.
    pub async fn settle_before_effect(&self, record: &mut AccessRecord) -> Result<(), Status> {
        self.write(&record.event(Ok(()))).await.map_err(|e| {
            Status::unavailable(format!(
                "the access could not be audited, so nothing was changed: {e}; retry"
            ))
        })?;
        record.settled = true;
        Ok(())
    }

    async fn write(&self, event: &pb::AccessAuditEvent) -> Result<(), String> {
        if let Some(seconds) = self.health.kafka_unreachable() {
            metrics::counter!(crate::metrics::AUDIT_FAILURES.name, "reason" => "kafka_unreachable")
                .increment(1);
            return Err(format!(
                "Kafka, which holds the access audit, has not answered this replica for {seconds} s"
            ));
        }
        let stored = self.send(event).await;
        if stored.is_err() {
            metrics::counter!(crate::metrics::AUDIT_FAILURES.name, "reason" => "not_acknowledged")
                .increment(1);
        }
        stored
    }

    async fn send(&self, event: &pb::AccessAuditEvent) -> Result<(), String> {
        let framed = self
            .codec
            .encode_message(&self.topic, MESSAGE, &event.encode_to_vec())
            .await
            .map_err(|e| e.to_string())?;
        let key = if event.caller_facility.is_empty() {
            "unidentified"
        } else {
            event.caller_facility.as_str()
        };
        self.producer
            .send(
                &self.topic,
                key.as_bytes(),
                &framed,
                &[("lienthong-audit-id", event.audit_id.as_bytes())],
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_break_glass_are_recorded_as_such() {
        let mut r = AccessRecord::of("GetPatientRecord", &Request::new(()));
        assert!(
            !r.request_id.is_empty(),
            "a request id is made when none is sent"
        );
        r.patient("pk1");
        r.patient("pk1");
        assert_eq!(r.patient_keys, ["pk1"]);
        let refused = r.event(Err(&Status::permission_denied("no care relationship")));
        assert_eq!(refused.decision, pb::AccessDecision::Refused as i32);
        assert_eq!(refused.reason, "no care relationship");
        assert_eq!(refused.auth_method, "none");
        r.decision = pb::AccessDecision::BreakGlass;
        assert_eq!(
            r.event(Ok(())).decision,
            pb::AccessDecision::BreakGlass as i32
        );
        r.decision = pb::AccessDecision::Unspecified;
        assert_eq!(r.event(Ok(())).decision, pb::AccessDecision::Allowed as i32);
    }

    #[test]
    fn a_hostile_request_id_is_replaced() {
        let mut req = Request::new(());
        req.metadata_mut().insert(
            "x-request-id",
            "ok\u{7f}"
                .parse()
                .unwrap_or_else(|_| "x y".parse().expect("ascii")),
        );
        let id = request_id_of(&req);
        assert!(id.chars().all(|c| c.is_ascii_graphic()), "{id:?}");
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("x-request-id", "abc-123".parse().expect("ascii"));
        assert_eq!(request_id_of(&req), "abc-123");
    }
}
