//! The clinician query API. Callers authenticate as a facility; every read of patient data
//! states a purpose of use and is written to the audit topic before the answer leaves — a
//! failed audit write fails the read.

use std::sync::Arc;
use std::time::Instant;

use lienthong_core::{ClinicalEvent, DocumentKind, PatientKeyer, PersonId};
use lienthong_grpc::{Authenticator, Identity};
use lienthong_kafka::EventProducer;
use lienthong_proto::v1 as pb;
use lienthong_registry::WireCodec;
use pb::regional_query_service_server::RegionalQueryService;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::live::LiveStores;
use crate::store::{
    LabQuery, ListPage, RegionStore, Status as DocStatus, StoreError, StoredDoc, WorklistQuery,
};

/// Shared state of the query API.
pub struct QueryApi {
    /// Stores of the regions this instance serves.
    pub stores: LiveStores,
    /// Caller authentication and the facilities each caller acts for (same rules as the
    /// gateway).
    pub auth: Authenticator,
    /// Pseudonym key: citizen ID → patient key.
    pub keyer: PatientKeyer,
    /// Producer of audit records and receipts.
    pub producer: EventProducer,
    /// Registry framing of receipts.
    pub codec: Arc<WireCodec>,
    /// Audit topic.
    pub audit_topic: String,
    /// Receipt topic.
    pub receipt_topic: String,
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

fn page_size(p: Option<&pb::PageRequest>) -> usize {
    match p.map(|p| p.page_size as usize) {
        None | Some(0) => DEFAULT_PAGE,
        Some(n) => n.min(MAX_PAGE),
    }
}

fn token_of(p: Option<&pb::PageRequest>) -> Result<Option<Vec<u8>>, Status> {
    match p.map(|p| p.page_token.as_str()).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => hex::decode(t)
            .ok()
            .map(Some)
            .ok_or_else(|| Status::invalid_argument("page_token is not one this service issued")),
    }
}

fn require_purpose(p: i32) -> Result<pb::PurposeOfUse, Status> {
    match pb::PurposeOfUse::try_from(p).unwrap_or_default() {
        pb::PurposeOfUse::Unspecified => Err(Status::invalid_argument(
            "purpose of use is required for patient data (treatment, emergency or continuity of care)",
        )),
        other => Ok(other),
    }
}

fn status_proto(s: DocStatus) -> pb::ReferralStatus {
    match s {
        DocStatus::Pending => pb::ReferralStatus::Pending,
        DocStatus::Received => pb::ReferralStatus::Received,
        DocStatus::Cancelled => pb::ReferralStatus::Cancelled,
    }
}

/// Awaits an answer and records its latency and outcome: `ok`, or the gRPC code of the
/// failure, so refused and failed calls are counted as well as answered ones.
async fn observed<T>(
    method: &'static str,
    answer: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let answered = answer.await;
    record_outcome(method, started, answered.as_ref().err().map(Status::code));
    answered
}

fn record_outcome(method: &'static str, started: Instant, failed: Option<tonic::Code>) {
    metrics::histogram!(crate::metrics::QUERY_SECONDS.name, "method" => method)
        .record(started.elapsed().as_secs_f64());
    let outcome = failed.map_or("ok", crate::metrics::code_label);
    metrics::counter!(crate::metrics::QUERIES.name, "method" => method, "outcome" => outcome)
        .increment(1);
}

impl QueryApi {
    fn caller<T>(&self, req: &Request<T>) -> Result<Option<Identity>, Status> {
        self.auth.identify(req)
    }

    fn check_facility(&self, caller: Option<&Identity>, facility: &str) -> Result<(), Status> {
        if self.auth.may_act_for(caller, facility) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the caller does not act for facility {facility:?}: it is neither that facility nor a hub with it among its members"
            )))
        }
    }

    /// The patient's pseudonyms under every configured key, current first: documents
    /// published before a key rotation carry the previous key.
    fn patient_keys(&self, citizen_id: &str) -> Result<Vec<String>, Status> {
        let person = PersonId::parse(citizen_id)
            .map_err(|e| Status::invalid_argument(format!("citizen_id: {e}")))?;
        Ok(self
            .keyer
            .all_keys_for(&person)
            .into_iter()
            .map(|k| k.value)
            .collect())
    }

    /// Writes the access record before the answer is returned.
    async fn audit(
        &self,
        caller: Option<&Identity>,
        method: &str,
        patient_key: &str,
        purpose: pb::PurposeOfUse,
        results: usize,
    ) -> Result<(), Status> {
        let facility = caller.map_or("insecure-dev", |c| c.facility.as_str());
        let now = time::OffsetDateTime::now_utc();
        let record = format!(
            "{{\"at\":\"{}\",\"caller_facility\":\"{facility}\",\"method\":\"{method}\",\"patient_key\":\"{patient_key}\",\"purpose\":\"{}\",\"results\":{results}}}",
            now.unix_timestamp(),
            purpose.as_str_name()
        );
        self.producer
            .send(
                &self.audit_topic,
                facility.as_bytes(),
                record.as_bytes(),
                &[("content-type", b"application/json")],
            )
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "the access could not be audited, so it is refused: {e}"
                ))
            })?;
        Ok(())
    }

    fn doc(&self, document_id: &str) -> Result<Option<StoredDoc>, Status> {
        self.first_in_stores(|s| s.get(document_id))
    }

    /// What `read` finds in the first store that has it.
    fn first_in_stores(
        &self,
        read: impl Fn(&RegionStore) -> Result<Option<StoredDoc>, StoreError>,
    ) -> Result<Option<StoredDoc>, Status> {
        for (_, s) in &self
            .stores
            .snapshot()
            .map_err(|e| Status::unavailable(e.to_string()))?
        {
            if let Some(d) = read(s).map_err(|e| Status::internal(e.to_string()))? {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// One page of a list read from every store with `read` (given where to resume and how
    /// many), merged by position (newest first when `newest_first`).
    fn page(
        &self,
        page: Option<&pb::PageRequest>,
        newest_first: bool,
        read: impl Fn(&RegionStore, Option<&[u8]>, usize) -> Result<ListPage, StoreError>,
    ) -> Result<(Vec<StoredDoc>, String), Status> {
        let after = token_of(page)?;
        let size = page_size(page);
        let mut found: ListPage = Vec::new();
        for (_, s) in &self
            .stores
            .snapshot()
            .map_err(|e| Status::unavailable(e.to_string()))?
        {
            found.extend(
                read(s, after.as_deref(), size + 1).map_err(|e| Status::internal(e.to_string()))?,
            );
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        if newest_first {
            found.reverse();
        }
        let more = found.len() > size;
        found.truncate(size);
        let next = match (more, found.last()) {
            (true, Some((position, _))) => hex::encode(position),
            _ => String::new(),
        };
        Ok((found.into_iter().map(|(_, d)| d).collect(), next))
    }
}

fn referral_view(d: StoredDoc) -> Option<pb::ReferralView> {
    match d.event {
        ClinicalEvent::Referral(e) => Some(pb::ReferralView {
            referral: Some(e),
            status: status_proto(d.status) as i32,
        }),
        _ => None,
    }
}

impl QueryApi {
    async fn answer_get_patient_record(
        &self,
        request: Request<pb::GetPatientRecordRequest>,
    ) -> Result<Response<pb::GetPatientRecordResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let purpose = require_purpose(req.purpose)?;
        let keys = self.patient_keys(&req.citizen_id)?;
        let mut record = pb::GetPatientRecordResponse::default();
        let mut seen = std::collections::HashSet::new();
        for (_, s) in &self
            .stores
            .snapshot()
            .map_err(|e| Status::unavailable(e.to_string()))?
        {
            for d in keys
                .iter()
                .map(|pk| s.patient_documents(pk))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::internal(e.to_string()))?
                .into_iter()
                .flatten()
            {
                let id = d
                    .event
                    .header()
                    .map(|h| h.document_id.clone())
                    .unwrap_or_default();
                if !seen.insert(id) {
                    continue;
                }
                match d.event {
                    ClinicalEvent::Referral(_) => record.referrals.extend(referral_view(d)),
                    ClinicalEvent::Appointment(e) => record.appointments.push(e),
                    ClinicalEvent::LabResult(e) => record.lab_results.push(e),
                }
            }
        }
        let n = record.referrals.len() + record.appointments.len() + record.lab_results.len();
        self.audit(caller.as_ref(), "GetPatientRecord", &keys[0], purpose, n)
            .await?;
        Ok(Response::new(record))
    }

    async fn answer_list_incoming_referrals(
        &self,
        request: Request<pb::ListIncomingReferralsRequest>,
    ) -> Result<Response<pb::ListIncomingReferralsResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let purpose = require_purpose(req.purpose)?;
        self.check_facility(caller.as_ref(), &req.facility_code)?;
        let status = match pb::ReferralStatus::try_from(req.status).unwrap_or_default() {
            pb::ReferralStatus::Unspecified => None,
            pb::ReferralStatus::Pending => Some(DocStatus::Pending),
            pb::ReferralStatus::Received => Some(DocStatus::Received),
            pb::ReferralStatus::Cancelled => Some(DocStatus::Cancelled),
        };
        let query = WorklistQuery {
            status,
            issued_since: &req.since,
        };
        let (docs, next) = self.page(req.page.as_ref(), true, |s, after, limit| {
            s.worklist(&req.facility_code, &query, after, limit)
        })?;
        let referrals: Vec<_> = docs.into_iter().filter_map(referral_view).collect();
        self.audit(
            caller.as_ref(),
            "ListIncomingReferrals",
            "*",
            purpose,
            referrals.len(),
        )
        .await?;
        Ok(Response::new(pb::ListIncomingReferralsResponse {
            referrals,
            next_page_token: next,
        }))
    }

    async fn answer_list_appointments(
        &self,
        request: Request<pb::ListAppointmentsRequest>,
    ) -> Result<Response<pb::ListAppointmentsResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let purpose = require_purpose(req.purpose)?;
        self.check_facility(caller.as_ref(), &req.facility_code)?;
        let (docs, next) = self.page(req.page.as_ref(), false, |s, after, limit| {
            s.appointments(&req.facility_code, (&req.from, &req.to), after, limit)
        })?;
        let appointments: Vec<_> = docs
            .into_iter()
            .filter_map(|d| {
                if let ClinicalEvent::Appointment(e) = d.event {
                    Some(e)
                } else {
                    None
                }
            })
            .collect();
        self.audit(
            caller.as_ref(),
            "ListAppointments",
            "*",
            purpose,
            appointments.len(),
        )
        .await?;
        Ok(Response::new(pb::ListAppointmentsResponse {
            appointments,
            next_page_token: next,
        }))
    }

    async fn answer_find_reusable_lab_results(
        &self,
        request: Request<pb::FindReusableLabResultsRequest>,
    ) -> Result<Response<pb::FindReusableLabResultsResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let purpose = require_purpose(req.purpose)?;
        let keys = self.patient_keys(&req.citizen_id)?;
        let days = if req.max_age_days == 0 {
            30
        } else {
            req.max_age_days
        };
        let cutoff = time::OffsetDateTime::now_utc().to_offset(lienthong_core::datetime::VIETNAM)
            - time::Duration::days(i64::from(days));
        let cutoff = format!(
            "{:04}{:02}{:02}",
            cutoff.year(),
            u8::from(cutoff.month()),
            cutoff.day()
        );
        let query = LabQuery {
            services: &req.service_codes,
            since: &cutoff,
        };
        let (docs, next) = self.page(req.page.as_ref(), true, |s, after, limit| {
            let mut found = Vec::new();
            for pk in &keys {
                found.extend(s.lab_reports(pk, &query, after, limit)?);
            }
            Ok(found)
        })?;
        let lab_results: Vec<_> = docs
            .into_iter()
            .filter(|d| d.status != DocStatus::Cancelled)
            .filter_map(|d| {
                if let ClinicalEvent::LabResult(e) = d.event {
                    Some(e)
                } else {
                    None
                }
            })
            .collect();
        self.audit(
            caller.as_ref(),
            "FindReusableLabResults",
            &keys[0],
            purpose,
            lab_results.len(),
        )
        .await?;
        Ok(Response::new(pb::FindReusableLabResultsResponse {
            lab_results,
            next_page_token: next,
        }))
    }

    async fn answer_acknowledge_referral(
        &self,
        request: Request<pb::AcknowledgeReferralRequest>,
    ) -> Result<Response<pb::AcknowledgeReferralResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
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
        self.check_facility(caller.as_ref(), &receiving)?;
        if doc.status == DocStatus::Cancelled {
            return Err(Status::failed_precondition(
                "the referral was cancelled by its issuer",
            ));
        }
        let h = doc.event.header().cloned().unwrap_or_default();
        let now = time::OffsetDateTime::now_utc();
        let receipt = pb::ReferralReceiptEvent {
            header: Some(pb::EventHeader {
                event_id: lienthong_core::document_id::event_id(
                    DocumentKind::Referral,
                    &format!("receipt/{}", h.document_id),
                    1,
                ),
                document_id: format!("receipt/{}", h.document_id),
                document_version: 1,
                action: pb::Action::Created as i32,
                occurred_at: Some(prost_types::Timestamp {
                    seconds: now.unix_timestamp(),
                    nanos: 0,
                }),
                recorded_at: Some(prost_types::Timestamp {
                    seconds: now.unix_timestamp(),
                    nanos: 0,
                }),
                source_facility_code: receiving.clone(),
                source_system: "lienthong-regional-store".into(),
                source_system_version: env!("CARGO_PKG_VERSION").into(),
                trace: None,
                patient_key: h.patient_key.clone(),
                patient_key_id: h.patient_key_id.clone(),
            }),
            referral_document_id: h.document_id.clone(),
            received_by: Some(pb::FacilityRef {
                code: receiving,
                name: String::new(),
            }),
            received_at: Some(prost_types::Timestamp {
                seconds: now.unix_timestamp(),
                nanos: 0,
            }),
        };
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
        Ok(Response::new(pb::AcknowledgeReferralResponse {
            topic: self.receipt_topic.clone(),
            partition: d.partition,
            offset: d.offset,
        }))
    }
}

#[tonic::async_trait]
impl RegionalQueryService for QueryApi {
    async fn get_patient_record(
        &self,
        request: Request<pb::GetPatientRecordRequest>,
    ) -> Result<Response<pb::GetPatientRecordResponse>, Status> {
        observed("GetPatientRecord", self.answer_get_patient_record(request)).await
    }

    async fn list_incoming_referrals(
        &self,
        request: Request<pb::ListIncomingReferralsRequest>,
    ) -> Result<Response<pb::ListIncomingReferralsResponse>, Status> {
        observed(
            "ListIncomingReferrals",
            self.answer_list_incoming_referrals(request),
        )
        .await
    }

    async fn list_appointments(
        &self,
        request: Request<pb::ListAppointmentsRequest>,
    ) -> Result<Response<pb::ListAppointmentsResponse>, Status> {
        observed("ListAppointments", self.answer_list_appointments(request)).await
    }

    async fn find_reusable_lab_results(
        &self,
        request: Request<pb::FindReusableLabResultsRequest>,
    ) -> Result<Response<pb::FindReusableLabResultsResponse>, Status> {
        observed(
            "FindReusableLabResults",
            self.answer_find_reusable_lab_results(request),
        )
        .await
    }

    async fn acknowledge_referral(
        &self,
        request: Request<pb::AcknowledgeReferralRequest>,
    ) -> Result<Response<pb::AcknowledgeReferralResponse>, Status> {
        observed(
            "AcknowledgeReferral",
            self.answer_acknowledge_referral(request),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(answer: Result<(), Status>) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let answered =
                futures::executor::block_on(observed("ListAppointments", async { answer }));
            drop(answered);
        });
        handle.render()
    }

    #[test]
    fn failed_calls_are_counted_by_code_and_timed_like_answered_ones() {
        let text = rendered(Err(Status::permission_denied("not a member")));
        assert!(
            text.contains(
                "lienthong_regional_queries_total{method=\"ListAppointments\",outcome=\"permission_denied\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("lienthong_regional_query_seconds_count{method=\"ListAppointments\"} 1"),
            "{text}"
        );
        let text = rendered(Ok(()));
        assert!(
            text.contains(
                "lienthong_regional_queries_total{method=\"ListAppointments\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
    }
}
