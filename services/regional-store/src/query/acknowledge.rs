//! AcknowledgeReferral: the receiving facility marks a referred patient as arrived, which
//! publishes one receipt (a second acknowledgement publishes nothing) that the stores and the
//! warehouse consume back.

use lienthong_core::{ClinicalEvent, DocumentKind};
use lienthong_grpc::Scope;
use lienthong_proto::v1 as pb;
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{QueryApi, note_patient};
use crate::audit::AccessRecord;
use crate::store::Status as DocStatus;

impl QueryApi {
    pub(super) async fn answer_acknowledge_referral(
        &self,
        request: Request<pb::AcknowledgeReferralRequest>,
        record: &mut AccessRecord,
    ) -> Result<Response<pb::AcknowledgeReferralResponse>, Status> {
        let caller = self.caller(&request, Scope::Acknowledge, record)?;
        let req = request.into_inner();
        record.document_id.clone_from(&req.referral_document_id);
        let doc = self.doc(&req.referral_document_id)?.ok_or_else(|| {
            Status::not_found(format!(
                "no referral {:?} in this region",
                req.referral_document_id
            ))
        })?;
        let ClinicalEvent::Referral(referral) = &doc.event else {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a referral",
                req.referral_document_id
            )));
        };
        let receiving = referral
            .slip
            .as_ref()
            .and_then(|s| s.receiving.as_ref())
            .map(|f| f.code.clone())
            .unwrap_or_default();
        record.subject_facility.clone_from(&receiving);
        note_patient(record, &doc);
        self.check_facility(caller.as_ref(), &receiving)?;
        if doc.status == DocStatus::Cancelled {
            return Err(Status::failed_precondition(
                "the referral was cancelled by its issuer",
            ));
        }
        let h = doc.event.header().cloned().unwrap_or_default();
        let earlier = self
            .acknowledged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h.document_id)
            .copied();
        if doc.status == DocStatus::Received || earlier.is_some() {
            record.reason = "already received: no second receipt".into();
            let (partition, offset) = earlier.unwrap_or((-1, -1));
            return Ok(Response::new(pb::AcknowledgeReferralResponse {
                topic: if earlier.is_some() {
                    self.receipt_topic.clone()
                } else {
                    String::new()
                },
                partition,
                offset,
                already_received: true,
            }));
        }
        record.reason = "the receiving facility".into();
        self.audit.settle_before_effect(record).await?;
        let receipt = receipt_of(&h, &receiving);
        let framed = self
            .codec
            .encode_message(
                &self.receipt_topic,
                "lienthong.v1.ReferralReceiptEvent",
                &receipt.encode_to_vec(),
            )
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let d = self
            .producer
            .send(
                &self.receipt_topic,
                h.patient_key.as_bytes(),
                &framed,
                &[(
                    "lienthong-event-id",
                    receipt
                        .header
                        .as_ref()
                        .map(|h| h.event_id.as_bytes())
                        .unwrap_or_default(),
                )],
            )
            .await
            .map_err(|e| Status::unavailable(format!("receipt not stored, retry: {e}")))?;
        {
            let mut acked = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
            // The store soon shows RECEIVED itself; this only covers the receipt's way back.
            if acked.len() >= 100_000 {
                acked.clear();
            }
            acked.insert(h.document_id.clone(), (d.partition, d.offset));
        }
        Ok(Response::new(pb::AcknowledgeReferralResponse {
            topic: self.receipt_topic.clone(),
            partition: d.partition,
            offset: d.offset,
            already_received: false,
        }))
    }
}

/// The receipt the receiving facility publishes for the referral with header `h`.
fn receipt_of(h: &pb::EventHeader, receiving: &str) -> pb::ReferralReceiptEvent {
    let now = time::OffsetDateTime::now_utc();
    let stamp = Some(prost_types::Timestamp {
        seconds: now.unix_timestamp(),
        nanos: 0,
    });
    pb::ReferralReceiptEvent {
        header: Some(pb::EventHeader {
            event_id: lienthong_core::document_id::event_id(
                DocumentKind::Referral,
                &format!("receipt/{}", h.document_id),
                1,
            ),
            document_id: format!("receipt/{}", h.document_id),
            document_version: 1,
            action: pb::Action::Created as i32,
            occurred_at: stamp,
            recorded_at: stamp,
            source_facility_code: receiving.to_owned(),
            source_system: "lienthong-regional-store".into(),
            source_system_version: env!("CARGO_PKG_VERSION").into(),
            trace: None,
            patient_key: h.patient_key.clone(),
            patient_key_id: h.patient_key_id.clone(),
        }),
        referral_document_id: h.document_id.clone(),
        received_by: Some(pb::FacilityRef {
            code: receiving.to_owned(),
            name: String::new(),
        }),
        received_at: stamp,
    }
}
