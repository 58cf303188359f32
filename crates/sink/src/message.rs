//! Reading one consumed message, and a batch of them with their dead letters sent.

use lienthong_core::ClinicalEvent;
use lienthong_core::validation::{Severity, ValidationContext};
use lienthong_kafka::EventProducer;
use lienthong_kafka::dlq::Reason;
use lienthong_proto::v1 as pb;
use lienthong_registry::{DecodeError, WireCodec};
use rdkafka::message::{Message, OwnedMessage};

/// What a good message holds.
// Short-lived, one per message and moved on at once: boxing the event would cost an
// allocation per message for nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Consumed {
    /// A valid clinical event, with its protobuf payload as it came.
    Event {
        /// The decoded event.
        event: ClinicalEvent,
        /// Its protobuf bytes (what a store keeps).
        payload: Vec<u8>,
    },
    /// A referral receipt.
    Receipt(pb::ReferralReceiptEvent),
    /// An access audit record of a regional store's query API.
    Audit(pb::AccessAuditEvent),
    /// A de-identified event of an analytics topic.
    Analytics(crate::AnalyticsMessage),
}

/// A failure that says nothing about the message (registry or dead-letter topic unreachable):
/// the batch is retried, never dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    /// The schema registry could not be asked.
    #[error("{0}")]
    Registry(DecodeError),
    /// The dead letter could not be produced.
    #[error("the dead letter could not be sent: {0}")]
    DeadLetter(lienthong_kafka::Error),
}

// The cause is in the message, not a source: a chain of causes names it once.
impl From<lienthong_kafka::Error> for Transient {
    fn from(e: lienthong_kafka::Error) -> Self {
        Self::DeadLetter(e)
    }
}

/// Where a message was read from, `topic[partition]@offset`; formatted only when an error
/// names it (this exists for every consumed message).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a>(pub &'a OwnedMessage);

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}]@{}",
            self.0.topic(),
            self.0.partition(),
            self.0.offset()
        )
    }
}

/// How a sink reads its messages: the registry, its receipt topic, and where poison goes.
#[derive(Clone, Copy)]
pub struct MessageReader<'a> {
    /// Registry framing.
    pub codec: &'a WireCodec,
    /// Messages of this topic are referral receipts (None: the sink reads none); every other
    /// topic holds clinical events (or access audit records, on `audit_topic`, or analytics
    /// events, recognised by their registered type).
    pub receipt_topic: Option<&'a str>,
    /// Messages of this topic are access audit records (None: the sink reads no audit).
    pub audit_topic: Option<&'a str>,
    /// Producer of dead letters (None: poison is only skipped, as a rebuild does: the live
    /// consumer dead-lettered it when it met it).
    pub dlq: Option<&'a EventProducer>,
    /// The dead-letter topic.
    pub dlq_topic: &'a str,
    /// Consumer group, named in each dead letter.
    pub group: &'a str,
}

/// The message of a topic that holds one message type, `full_name`; poison otherwise.
fn decoded_as<M: prost::Message + Default>(
    decoded: &lienthong_registry::Decoded,
    full_name: &str,
    what: &str,
    origin: Origin<'_>,
) -> Result<M, (Reason, String)> {
    if decoded.full_name != full_name {
        return Err((
            Reason::Undecodable,
            format!(
                "{origin}: {} is not a {what} ({full_name})",
                decoded.full_name
            ),
        ));
    }
    M::decode(decoded.payload.as_slice()).map_err(|e| {
        (
            Reason::Undecodable,
            format!("{origin}: {what} does not decode: {e}"),
        )
    })
}

impl MessageReader<'_> {
    /// Ok(Ok(consumed)), Ok(Err(why it is poison)), or Err(transient: retry the batch).
    pub async fn read(
        &self,
        m: &OwnedMessage,
        ctx: &ValidationContext,
    ) -> Result<Result<Consumed, (Reason, String)>, Transient> {
        let origin = Origin(m);
        let decoded = match self
            .codec
            .decode(m.payload(), m.topic(), m.partition(), m.offset())
            .await
        {
            Ok(d) => d,
            Err(e @ DecodeError::Registry { .. }) => return Err(Transient::Registry(e)),
            Err(e) => return Ok(Err((Reason::Undecodable, e.to_string()))),
        };
        if let Some(analytics) =
            crate::AnalyticsMessage::decode(&decoded.full_name, &decoded.payload)
        {
            return Ok(analytics.map(Consumed::Analytics).map_err(|e| {
                (
                    Reason::Undecodable,
                    format!("{origin}: {} does not decode: {e}", decoded.full_name),
                )
            }));
        }
        if self.receipt_topic == Some(m.topic()) {
            return Ok(decoded_as(
                &decoded,
                "lienthong.v1.ReferralReceiptEvent",
                "referral receipt",
                origin,
            )
            .map(Consumed::Receipt));
        }
        if self.audit_topic == Some(m.topic()) {
            return Ok(decoded_as(
                &decoded,
                "lienthong.v1.AccessAuditEvent",
                "access audit record",
                origin,
            )
            .map(Consumed::Audit));
        }
        let event = match decoded.event(&origin) {
            Ok(e) => e,
            Err(e) => return Ok(Err((Reason::Undecodable, e.to_string()))),
        };
        let errors: Vec<String> = event
            .validate(ctx)
            .into_iter()
            .filter(|v| v.severity == Severity::Error)
            .map(|v| v.to_string())
            .collect();
        if !errors.is_empty() {
            return Ok(Err((
                Reason::Invalid,
                format!("{origin}: invalid document: {}", errors.join("; ")),
            )));
        }
        Ok(Ok(Consumed::Event {
            event,
            payload: decoded.payload,
        }))
    }

    /// Reads every message of `batch` and maps what is good with `map` (which may still find a
    /// message poison for this sink: Err names why). Poison is dead-lettered before this
    /// returns; its place in the result is None. Err only for what is transient.
    pub async fn read_batch<T>(
        &self,
        batch: &[OwnedMessage],
        mut map: impl FnMut(Consumed, Origin<'_>) -> Result<T, String>,
    ) -> Result<Vec<Option<T>>, Transient> {
        let ctx = ValidationContext::now();
        let mut out = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for m in batch {
            let mapped = self
                .read(m, &ctx)
                .await?
                .and_then(|consumed| map(consumed, Origin(m)).map_err(|why| (Reason::Unfit, why)));
            match mapped {
                Ok(t) => out.push(Some(t)),
                Err((reason, why)) => {
                    poison.push((m, reason, why));
                    out.push(None);
                }
            }
        }
        if let Some(dlq) = self.dlq {
            // Durable before the offsets move past them (the caller stores after this
            // returns). All of a batch's dead letters are in flight at once, so a batch of
            // poison waits for one acknowledgement, not one per message; each is queued when
            // first polled, and try_join_all first polls them in order, so the dead-letter
            // topic keeps the batch's order.
            futures::future::try_join_all(poison.iter().map(|(m, reason, why)| {
                lienthong_kafka::dlq::send(dlq, self.dlq_topic, self.group, m, *reason, why)
            }))
            .await?;
        }
        Ok(out)
    }
}
