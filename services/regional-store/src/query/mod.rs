//! The clinician query API. Callers authenticate as a facility; every read of patient data
//! states a purpose of use and needs a care relationship with the patient (crate::care);
//! every decision, allowed or refused, is written to the audit topic before the answer leaves
//! (crate::audit) — a failed audit write withholds the answer.

mod acknowledge;

use std::sync::Arc;
use std::time::Instant;

use lienthong_core::{ClinicalEvent, PatientKeyer, PersonId};
use lienthong_grpc::{Authenticator, Identity, Scope};
use lienthong_kafka::EventProducer;
use lienthong_proto::v1 as pb;
use lienthong_registry::WireCodec;
use pb::regional_query_service_server::RegionalQueryService;
use tonic::{Request, Response, Status};

use crate::audit::{AccessRecord, AuditLog};
use crate::care::{Access, Attestations, CareRule, Claim};
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
    /// Producer of receipts.
    pub producer: EventProducer,
    /// Registry framing of receipts.
    pub codec: Arc<WireCodec>,
    /// Where every access decision is written.
    pub audit: AuditLog,
    /// Receipt topic.
    pub receipt_topic: String,
    /// Who may read a patient's data.
    pub care: CareRule,
    /// Presence attested with the patient's card, for the care window.
    pub attestations: Attestations,
    /// Patient reads per facility.
    pub read_limit: lienthong_grpc::FacilityRateLimit,
    /// Referrals acknowledged by this instance and where their receipt went: a second
    /// acknowledgement, even before the receipt is consumed back, publishes nothing.
    pub acknowledged: std::sync::Mutex<std::collections::HashMap<String, (i32, i64)>>,
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
    /// Identifies the caller, notes it in the access record, and checks its credential grants
    /// `scope`.
    fn caller<T>(
        &self,
        req: &Request<T>,
        scope: Scope,
        record: &mut AccessRecord,
    ) -> Result<Option<Identity>, Status> {
        record.identified = false;
        let caller = self.auth.identify(req)?;
        record.identified = true;
        record.caller.clone_from(&caller);
        if let Some(id) = &caller {
            id.require(scope)?;
        }
        Ok(caller)
    }

    /// Patient data is read by a named individual: accountability needs a person, not only a
    /// facility (the token's `act`, or `x-lienthong-individual` with a certificate).
    fn require_individual(caller: Option<&Identity>) -> Result<(), Status> {
        match caller {
            Some(id) if id.individual.is_none() => Err(Status::permission_denied(
                "patient data is read by a named individual: use a token naming the individual (act), or send x-lienthong-individual with a client certificate",
            )),
            _ => Ok(()),
        }
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
    /// Every document of the patient in every region this instance serves (each once).
    fn patient_documents(&self, keys: &[String]) -> Result<Vec<StoredDoc>, Status> {
        let mut docs = Vec::new();
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
                if seen.insert(id) {
                    docs.push(d);
                }
            }
        }
        Ok(docs)
    }

    /// The care-relationship decision for a read of one patient's data, noted in the record;
    /// Err when refused. Within the facility's read limit first: no bulk harvesting.
    fn admit(
        &self,
        caller: Option<&Identity>,
        docs: &[StoredDoc],
        purpose: pb::PurposeOfUse,
        insurance_card: &str,
        patient_key: &str,
        record: &mut AccessRecord,
    ) -> Result<(), Status> {
        let Some(id) = caller else {
            // Insecure development mode: no identities, no relationships.
            record.reason = "insecure development mode".into();
            return Ok(());
        };
        if let Err(wait) = self.read_limit.try_take(&id.facility, 1) {
            metrics::counter!(crate::metrics::ACCESS_REFUSED.name, "reason" => "read_limit")
                .increment(1);
            return Err(Status::resource_exhausted(format!(
                "facility {} is over its limit of patient records read per minute; retry in {} ms",
                id.facility,
                wait.as_millis()
            )));
        }
        let now = time::OffsetDateTime::now_utc();
        let card = Some(insurance_card.trim()).filter(|c| !c.is_empty());
        let claim = Claim {
            emergency: purpose == pb::PurposeOfUse::Emergency,
            insurance_card: card,
            attested_before: self.attestations.holds(&id.facility, patient_key, now),
        };
        let access = self
            .care
            .decide(docs, |f| self.auth.may_act_for(caller, f), claim, now);
        match access {
            Access::Allowed(why) => {
                if card.is_some() && why.contains("attested") {
                    self.attestations.record(&id.facility, patient_key, now);
                }
                record.decision = pb::AccessDecision::Allowed;
                record.reason = why;
                Ok(())
            }
            Access::BreakGlass => {
                record.decision = pb::AccessDecision::BreakGlass;
                record.reason =
                    "no care relationship; answered because the purpose is EMERGENCY (break-the-glass)".into();
                Ok(())
            }
            Access::Refused(why) => {
                let label = if why.contains("does not match") {
                    "card_mismatch"
                } else {
                    "no_relationship"
                };
                metrics::counter!(crate::metrics::ACCESS_REFUSED.name, "reason" => label)
                    .increment(1);
                record.reason.clone_from(&why);
                Err(Status::permission_denied(why))
            }
        }
    }

    /// What every read of one patient's data does first: identify a caller granted `read`
    /// and naming its individual, check the purpose, find the patient's documents and decide
    /// the care relationship. `asked` is (citizen ID, purpose, insurance card number). Returns
    /// the patient's keys and documents.
    fn admit_patient_read<T>(
        &self,
        request: &Request<T>,
        asked: (&str, i32, &str),
        record: &mut AccessRecord,
    ) -> Result<(Vec<String>, Vec<StoredDoc>), Status> {
        let (citizen_id, purpose, insurance_card) = asked;
        let caller = self.caller(request, Scope::Read, record)?;
        Self::require_individual(caller.as_ref())?;
        let purpose = require_purpose(purpose)?;
        record.purpose = purpose.as_str_name().to_owned();
        let keys = self.patient_keys(citizen_id)?;
        record.patient(&keys[0]);
        let docs = self.patient_documents(&keys)?;
        self.admit(
            caller.as_ref(),
            &docs,
            purpose,
            insurance_card,
            &keys[0],
            record,
        )?;
        Ok((keys, docs))
    }

    async fn answer_get_patient_record(
        &self,
        request: Request<pb::GetPatientRecordRequest>,
        record: &mut AccessRecord,
    ) -> Result<Response<pb::GetPatientRecordResponse>, Status> {
        let r = request.get_ref();
        let (_, docs) = self.admit_patient_read(
            &request,
            (&r.citizen_id, r.purpose, &r.insurance_card_number),
            record,
        )?;
        let mut answer = pb::GetPatientRecordResponse::default();
        for d in docs {
            if let Some(h) = d.event.header() {
                record.patient(&h.patient_key);
            }
            match d.event {
                ClinicalEvent::Referral(_) => answer.referrals.extend(referral_view(d)),
                ClinicalEvent::Appointment(e) => answer.appointments.push(e),
                ClinicalEvent::LabResult(e) => answer.lab_results.push(e),
            }
        }
        record.results =
            (answer.referrals.len() + answer.appointments.len() + answer.lab_results.len()) as u32;
        Ok(Response::new(answer))
    }

    async fn answer_list_incoming_referrals(
        &self,
        request: Request<pb::ListIncomingReferralsRequest>,
        record: &mut AccessRecord,
    ) -> Result<Response<pb::ListIncomingReferralsResponse>, Status> {
        let caller = self.caller(&request, Scope::Read, record)?;
        let req = request.into_inner();
        record.subject_facility.clone_from(&req.facility_code);
        let purpose = require_purpose(req.purpose)?;
        record.purpose = purpose.as_str_name().to_owned();
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
        let referrals: Vec<_> = docs
            .into_iter()
            .inspect(|d| note_patient(record, d))
            .filter_map(referral_view)
            .collect();
        record.reason = "the caller's own list".into();
        record.results = referrals.len() as u32;
        Ok(Response::new(pb::ListIncomingReferralsResponse {
            referrals,
            next_page_token: next,
        }))
    }

    async fn answer_list_appointments(
        &self,
        request: Request<pb::ListAppointmentsRequest>,
        record: &mut AccessRecord,
    ) -> Result<Response<pb::ListAppointmentsResponse>, Status> {
        let caller = self.caller(&request, Scope::Read, record)?;
        let req = request.into_inner();
        record.subject_facility.clone_from(&req.facility_code);
        let purpose = require_purpose(req.purpose)?;
        record.purpose = purpose.as_str_name().to_owned();
        self.check_facility(caller.as_ref(), &req.facility_code)?;
        let (docs, next) = self.page(req.page.as_ref(), false, |s, after, limit| {
            s.appointments(&req.facility_code, (&req.from, &req.to), after, limit)
        })?;
        let appointments: Vec<_> = docs
            .into_iter()
            .inspect(|d| note_patient(record, d))
            .filter_map(|d| {
                if let ClinicalEvent::Appointment(e) = d.event {
                    Some(e)
                } else {
                    None
                }
            })
            .collect();
        record.reason = "the caller's own list".into();
        record.results = appointments.len() as u32;
        Ok(Response::new(pb::ListAppointmentsResponse {
            appointments,
            next_page_token: next,
        }))
    }

    async fn answer_find_reusable_lab_results(
        &self,
        request: Request<pb::FindReusableLabResultsRequest>,
        record: &mut AccessRecord,
    ) -> Result<Response<pb::FindReusableLabResultsResponse>, Status> {
        let r = request.get_ref();
        let (keys, _) = self.admit_patient_read(
            &request,
            (&r.citizen_id, r.purpose, &r.insurance_card_number),
            record,
        )?;
        let req = request.into_inner();
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
            .inspect(|d| note_patient(record, d))
            .filter_map(|d| {
                if let ClinicalEvent::LabResult(e) = d.event {
                    Some(e)
                } else {
                    None
                }
            })
            .collect();
        record.results = lab_results.len() as u32;
        Ok(Response::new(pb::FindReusableLabResultsResponse {
            lab_results,
            next_page_token: next,
        }))
    }
}

fn note_patient(record: &mut AccessRecord, d: &StoredDoc) {
    if let Some(h) = d.event.header() {
        record.patient(&h.patient_key);
    }
}

/// Answers one call: the answer and its access record, settled in the audit before it leaves.
macro_rules! audited {
    ($self:ident, $method:literal, $request:ident, $answer:ident) => {{
        let mut record = AccessRecord::of($method, &$request);
        observed($method, async {
            let answer = $self.$answer($request, &mut record).await;
            $self.audit.settle(&record, answer).await
        })
        .await
    }};
}

#[tonic::async_trait]
impl RegionalQueryService for QueryApi {
    async fn get_patient_record(
        &self,
        request: Request<pb::GetPatientRecordRequest>,
    ) -> Result<Response<pb::GetPatientRecordResponse>, Status> {
        audited!(self, "GetPatientRecord", request, answer_get_patient_record)
    }

    async fn list_incoming_referrals(
        &self,
        request: Request<pb::ListIncomingReferralsRequest>,
    ) -> Result<Response<pb::ListIncomingReferralsResponse>, Status> {
        audited!(
            self,
            "ListIncomingReferrals",
            request,
            answer_list_incoming_referrals
        )
    }

    async fn list_appointments(
        &self,
        request: Request<pb::ListAppointmentsRequest>,
    ) -> Result<Response<pb::ListAppointmentsResponse>, Status> {
        audited!(self, "ListAppointments", request, answer_list_appointments)
    }

    async fn find_reusable_lab_results(
        &self,
        request: Request<pb::FindReusableLabResultsRequest>,
    ) -> Result<Response<pb::FindReusableLabResultsResponse>, Status> {
        audited!(
            self,
            "FindReusableLabResults",
            request,
            answer_find_reusable_lab_results
        )
    }

    async fn acknowledge_referral(
        &self,
        request: Request<pb::AcknowledgeReferralRequest>,
    ) -> Result<Response<pb::AcknowledgeReferralResponse>, Status> {
        audited!(
            self,
            "AcknowledgeReferral",
            request,
            answer_acknowledge_referral
        )
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
