//! The regional store end to end: real broker, registry and TLS; stores in temporary folders.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use lienthong_core::fixtures::{Generator, reassign};
use lienthong_core::{ClinicalEvent, DocumentKind, PatientKeyer, PersonId, document_id};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::regional_query_service_client::RegionalQueryServiceClient;
use lienthong_tests::gateway::TestPki;
use lienthong_tests::warehouse::publish_to;
use lienthong_tests::{create_topic, read_at, require_kafka, require_registry, unique_topic};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn keyer() -> PatientKeyer {
    PatientKeyer::new("test", &[7u8; 32]).expect("key")
}

struct Topics {
    docs: BTreeMap<DocumentKind, String>,
    receipt: String,
    audit: String,
    dlq: String,
}

async fn topics() -> anyhow::Result<Topics> {
    let kafka = require_kafka();
    let mut docs = BTreeMap::new();
    for k in DocumentKind::ALL {
        let t = unique_topic(&format!("rs.{}", k.as_str()));
        create_topic(&kafka, &t, 3).await?;
        docs.insert(k, t);
    }
    let mk = |p: &str| unique_topic(p);
    let (receipt, audit, dlq) = (mk("rs.receipt"), mk("rs.audit"), mk("rs.dlq"));
    for t in [&receipt, &audit, &dlq] {
        create_topic(&kafka, t, 1).await?;
    }
    // Schemas first: tests publish before (or while) the store registers them itself.
    let mut set = lienthong_registry::SchemaSet::built_in().with_receipt_topic(&receipt);
    for (k, topic) in &docs {
        set = set.with_topic(*k, topic);
    }
    set.register(&lienthong_registry::RegistryClient::new(
        &require_registry().await,
    )?)
    .await?;
    Ok(Topics {
        docs,
        receipt,
        audit,
        dlq,
    })
}

struct Running {
    addr: std::net::SocketAddr,
    pki: TestPki,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(regions: &[&str], t: &Topics) -> anyhow::Result<Running> {
    start_with(regions, t, keyer(), |_| {}).await
}

async fn start_keyed(regions: &[&str], t: &Topics, keyer: PatientKeyer) -> anyhow::Result<Running> {
    start_with(regions, t, keyer, |_| {}).await
}

async fn start_with(
    regions: &[&str],
    t: &Topics,
    keyer: PatientKeyer,
    tweak: impl FnOnce(&mut lienthong_regional_store::config::RegionalConfig),
) -> anyhow::Result<Running> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let (cert, key) = pki.leaf("localhost", false)?;
    std::fs::write(dir.path().join("s.pem"), cert)?;
    std::fs::write(dir.path().join("s.key"), key)?;
    let mut config =
        lienthong_tests::regional::config(regions, &dir.path().join("data"), &t.docs, &t.receipt);
    config.serving.insecure_dev = false;
    config.serving.tls_cert = Some(dir.path().join("s.pem"));
    config.serving.tls_key = Some(dir.path().join("s.key"));
    config.serving.token_keys = Some(lienthong_tests::tokens::issuer().write_key_set(dir.path()));
    config.dlq_topic = t.dlq.clone();
    config.audit_topic = t.audit.clone();
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(lienthong_regional_store::server::run(
        config,
        kafka,
        registry,
        keyer,
        listener,
        shutdown.clone(),
    ));
    let running = Running {
        addr,
        pki,
        shutdown,
        handle,
        _dir: dir,
    };
    // Health says SERVING once every region's store is open and caught up; queries before
    // that are refused (UNAVAILABLE), as a replica that could answer only part of a region.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if running.handle.is_finished() {
            let mut running = running;
            return Err(anyhow::anyhow!(
                "the store stopped during start-up: {:?}",
                (&mut running.handle).await?
            ));
        }
        if running.serving().await {
            return Ok(running);
        }
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "the store did not say SERVING within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Running {
    async fn client(&self) -> anyhow::Result<RegionalQueryServiceClient<Channel>> {
        Ok(RegionalQueryServiceClient::new(self.channel().await?))
    }

    /// Whether gRPC health says the query service is SERVING.
    async fn serving(&self) -> bool {
        use tonic_health::pb::health_check_response::ServingStatus;
        let Ok(channel) = self.channel().await else {
            return false;
        };
        let answer = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "lienthong.v1.RegionalQueryService".into(),
            })
            .await;
        answer.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pki.ca_pem()))
            .domain_name("localhost");
        Ok(
            Channel::from_shared(format!("https://localhost:{}", self.addr.port()))?
                .tls_config(tls)?
                .connect()
                .await?,
        )
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        (&mut self.handle).await?
    }
}

impl Drop for Running {
    /// A test that fails before `stop` still stops its store (and the store's threads).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn authed<T>(msg: T, facility: &str) -> tonic::Request<T> {
    authed_for(msg, facility, lienthong_grpc::REGIONAL_AUDIENCE)
}

fn authed_for<T>(msg: T, facility: &str, audience: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let token = lienthong_tests::tokens::issuer().token(
        facility,
        audience,
        &[
            lienthong_grpc::Scope::Read,
            lienthong_grpc::Scope::Acknowledge,
        ],
        600,
    );
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    r
}

/// A read while the store catches up: refused for want of a care relationship means the
/// documents that make it are not applied yet.
fn not_yet<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<Option<T>> {
    match answer {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == Code::PermissionDenied => Ok(None),
        Err(s) => Err(s.into()),
    }
}

/// GetPatientRecord of `citizen` by `facility`, with a purpose and a card number (empty: none).
async fn patient_record(
    c: &RegionalQueryServiceClient<Channel>,
    citizen: &str,
    facility: &str,
    purpose: pb::PurposeOfUse,
    card: &str,
) -> Result<pb::GetPatientRecordResponse, tonic::Status> {
    let request = pb::GetPatientRecordRequest {
        citizen_id: citizen.to_owned(),
        purpose: purpose as i32,
        insurance_card_number: card.to_owned(),
    };
    c.clone()
        .get_patient_record(authed(request, facility))
        .await
        .map(tonic::Response::into_inner)
}

/// AcknowledgeReferral of `referral` by `facility`.
async fn acknowledge(
    c: &RegionalQueryServiceClient<Channel>,
    referral: &ClinicalEvent,
    facility: &str,
) -> Result<pb::AcknowledgeReferralResponse, tonic::Status> {
    let request = pb::AcknowledgeReferralRequest {
        referral_document_id: referral
            .header()
            .map(|h| h.document_id.clone())
            .unwrap_or_default(),
    };
    c.clone()
        .acknowledge_referral(authed(request, facility))
        .await
        .map(tonic::Response::into_inner)
}

/// Every access record of an audit topic, decoded from its registered protobuf frame.
fn audit_records(topic: &str) -> anyhow::Result<Vec<pb::AccessAuditEvent>> {
    use prost::Message as _;
    lienthong_tests::gateway::read_records(topic)?
        .into_iter()
        .map(|(_, _, _, payload)| {
            let frame = lienthong_registry::frame::parse(&payload)?;
            Ok(pb::AccessAuditEvent::decode(frame.payload)?)
        })
        .collect()
}

/// A referral from `from` to `to` for a patient living in `residence`, keyed with the test key.
fn referral(g: &mut Generator, from: &str, to: &str, residence: &str) -> ClinicalEvent {
    let mut e = reassign(ClinicalEvent::Referral(g.referral()), from);
    if let ClinicalEvent::Referral(r) = &mut e {
        let s = r.slip.get_or_insert_with(Default::default);
        s.receiving = Some(pb::FacilityRef {
            code: to.into(),
            name: String::new(),
        });
        s.patient
            .get_or_insert_with(Default::default)
            .residence_province_code = residence.into();
    }
    key(e)
}

fn key(mut e: ClinicalEvent) -> ClinicalEvent {
    let person =
        PersonId::parse(e.patient().map(|p| p.citizen_id.as_str()).unwrap_or("")).expect("id");
    let k = keyer().key_for(&person);
    e.header_mut().patient_key = k.value;
    e.header_mut().patient_key_id = k.key_id;
    e
}

fn version(e: &ClinicalEvent, v: u64, action: pb::Action) -> ClinicalEvent {
    let mut n = e.clone();
    let kind = n.kind();
    let h = n.header_mut();
    h.document_version = v;
    h.action = action as i32;
    h.event_id = document_id::event_id(kind, &h.document_id, v);
    n
}

async fn eventually<T, F, Fut>(what: &str, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    eventually_within(what, Duration::from_secs(30), f).await
}

/// What `f` gives once it gives something, asked every 250 ms for up to `within`.
async fn eventually_within<T, F, Fut>(what: &str, within: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("{what} did not happen within {within:?}")
}

/// Waits until facility 79001 reads `count` referrals in the record of `citizen`.
async fn referrals_of(a: &Running, what: &str, citizen: &str, count: usize) -> anyhow::Result<()> {
    record_when(a, what, citizen, "79001", |r| r.referrals.len() == count)
        .await
        .map(drop)
}

/// The patient's record as `facility` reads it (purpose: treatment), once `done` holds;
/// refusals while the documents that make the care relationship are not applied yet count as
/// not yet.
async fn record_when(
    a: &Running,
    what: &str,
    citizen: &str,
    facility: &str,
    done: impl Fn(&pb::GetPatientRecordResponse) -> bool,
) -> anyhow::Result<pb::GetPatientRecordResponse> {
    record_within(a, what, citizen, facility, Duration::from_secs(30), done).await
}

/// [`record_when`], waiting up to `within`.
async fn record_within(
    a: &Running,
    what: &str,
    citizen: &str,
    facility: &str,
    within: Duration,
    done: impl Fn(&pb::GetPatientRecordResponse) -> bool,
) -> anyhow::Result<pb::GetPatientRecordResponse> {
    let c = a.client().await?;
    eventually_within(what, within, || {
        let mut c = c.clone();
        let request = pb::GetPatientRecordRequest {
            insurance_card_number: String::new(),
            citizen_id: citizen.to_owned(),
            purpose: pb::PurposeOfUse::Treatment as i32,
        };
        let ready = &done;
        async move {
            let answer = not_yet(c.get_patient_record(authed(request, facility)).await)?;
            Ok(answer.filter(|r| ready(r)))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_land_in_their_regions_and_queries_answer_with_audit() -> anyhow::Result<()> {
    let registry = require_registry().await;
    let t = topics().await?;
    // Instance A serves Hồ Chí Minh (79) and Hà Nội (01); instance B serves Huế (46).
    let a = start(&["79", "01"], &t).await?;
    let b = start(&["46"], &t).await?;
    let mut g = Generator::new(555, time::OffsetDateTime::now_utc());

    // From Bình Dương (old 74 → 79) to Hà Nội, patient living in Thanh Hóa (38).
    let r1 = referral(&mut g, "74001", "01001", "38");
    let citizen = r1
        .patient()
        .map(|p| p.citizen_id.clone())
        .unwrap_or_default();
    let r1_v3 = version(&r1, 3, pb::Action::Cancelled);
    let r1_v2 = version(&r1, 2, pb::Action::Updated);
    // Five more referrals to 01001 for the worklist, and one lab report of the same patient.
    let more: Vec<ClinicalEvent> = (0..5)
        .map(|_| referral(&mut g, "79025", "01001", "79"))
        .collect();
    let mut lab = reassign(ClinicalEvent::LabResult(g.lab_result()), "79025");
    if let ClinicalEvent::LabResult(l) = &mut lab {
        let report = l.report.get_or_insert_with(Default::default);
        let p = report.patient.get_or_insert_with(Default::default);
        *p = r1.patient().cloned().unwrap_or_default();
    }
    let lab = key(lab);
    let service = if let ClinicalEvent::LabResult(l) = &lab {
        l.report.clone().unwrap_or_default().service_code
    } else {
        String::new()
    };

    let mut events = vec![r1.clone(), r1_v3, r1_v2.clone(), r1.clone(), lab.clone()];
    events.extend(more.clone());
    publish_to(&registry, &t.docs, &events).await?;

    let mut ca = a.client().await?;
    let rec = record_when(
        &a,
        "the patient record in region 79/01",
        &citizen,
        "74001",
        |r| {
            r.referrals.len() == 1
                && r.lab_results.len() == 1
                && r.referrals[0]
                    .referral
                    .as_ref()
                    .and_then(|e| e.header.as_ref())
                    .is_some_and(|h| h.document_version == 3)
        },
    )
    .await?;
    assert_eq!(
        rec.referrals[0].status,
        pb::ReferralStatus::Cancelled as i32,
        "latest version (cancelled) wins over duplicates and older versions"
    );

    // Region 46 (Huế) is not concerned: nothing there. A facility there has no care
    // relationship (refused, as when the region holds the patient), and even an emergency read
    // finds nothing.
    let mut cb = b.client().await?;
    let refused = cb
        .get_patient_record(authed(
            pb::GetPatientRecordRequest {
                insurance_card_number: String::new(),
                citizen_id: citizen.clone(),
                purpose: pb::PurposeOfUse::Treatment as i32,
            },
            "46001",
        ))
        .await
        .expect_err("no care relationship");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let none = cb
        .get_patient_record(authed(
            pb::GetPatientRecordRequest {
                insurance_card_number: String::new(),
                citizen_id: citizen.clone(),
                purpose: pb::PurposeOfUse::Emergency as i32,
            },
            "46001",
        ))
        .await?
        .into_inner();
    assert!(none.referrals.is_empty() && none.lab_results.is_empty());

    // Worklist of Hà Nội 01001, pending only, two per page.
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListIncomingReferralsRequest {
            facility_code: "01001".into(),
            status: pb::ReferralStatus::Pending as i32,
            since: String::new(),
            page: Some(pb::PageRequest {
                page_size: 2,
                page_token: token.clone(),
            }),
            purpose: pb::PurposeOfUse::ContinuityOfCare as i32,
        };
        let page = ca
            .list_incoming_referrals(authed(req, "01001"))
            .await?
            .into_inner();
        ids.extend(page.referrals.iter().filter_map(|r| {
            r.referral
                .as_ref()
                .and_then(|e| e.header.as_ref())
                .map(|h| h.document_id.clone())
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids.len(), 5, "{ids:?}");

    // Reusable lab results of the patient.
    let labs = ca
        .find_reusable_lab_results(authed(
            pb::FindReusableLabResultsRequest {
                insurance_card_number: String::new(),
                citizen_id: citizen.clone(),
                service_codes: vec![service],
                max_age_days: 30,
                page: None,
                purpose: pb::PurposeOfUse::Treatment as i32,
            },
            "79025",
        ))
        .await?
        .into_inner();
    assert_eq!(labs.lab_results.len(), 1);

    // The receiving facility acknowledges one referral: it becomes RECEIVED.
    let target = more[0]
        .header()
        .map(|h| h.document_id.clone())
        .unwrap_or_default();
    ca.acknowledge_referral(authed(
        pb::AcknowledgeReferralRequest {
            referral_document_id: target.clone(),
        },
        "01001",
    ))
    .await?;
    eventually("the referral to be received", || {
        let mut c = ca.clone();
        async move {
            let req = pb::ListIncomingReferralsRequest {
                facility_code: "01001".into(),
                status: pb::ReferralStatus::Received as i32,
                since: String::new(),
                page: None,
                purpose: pb::PurposeOfUse::ContinuityOfCare as i32,
            };
            let page = c
                .list_incoming_referrals(authed(req, "01001"))
                .await?
                .into_inner();
            Ok((page.referrals.len() == 1).then_some(()))
        }
    })
    .await?;

    // Refusals: no identity, another facility's worklist, no purpose, another facility acknowledging.
    let anon = ca
        .get_patient_record(pb::GetPatientRecordRequest {
            insurance_card_number: String::new(),
            citizen_id: citizen.clone(),
            purpose: 1,
        })
        .await
        .expect_err("anonymous");
    assert_eq!(anon.code(), Code::Unauthenticated);
    let other = ca
        .list_incoming_referrals(authed(
            pb::ListIncomingReferralsRequest {
                facility_code: "01001".into(),
                purpose: 1,
                ..Default::default()
            },
            "79025",
        ))
        .await
        .expect_err("not its worklist");
    assert_eq!(other.code(), Code::PermissionDenied);
    let no_purpose = ca
        .get_patient_record(authed(
            pb::GetPatientRecordRequest {
                insurance_card_number: String::new(),
                citizen_id: citizen.clone(),
                purpose: 0,
            },
            "01001",
        ))
        .await
        .expect_err("no purpose");
    assert_eq!(no_purpose.code(), Code::InvalidArgument);
    let ack = ca
        .acknowledge_referral(authed(
            pb::AcknowledgeReferralRequest {
                referral_document_id: target,
            },
            "79025",
        ))
        .await
        .expect_err("not the receiver");
    assert_eq!(ack.code(), Code::PermissionDenied);

    // Every decision was audited before it was answered, as the registered protobuf message.
    let records = audit_records(&t.audit)?;
    let first = records
        .iter()
        .find(|r| {
            r.method == "GetPatientRecord" && r.decision == pb::AccessDecision::Allowed as i32
        })
        .expect("an allowed read");
    assert_eq!(first.caller_facility, "74001");
    assert_eq!(first.purpose, "PURPOSE_OF_USE_TREATMENT");
    assert_eq!(first.method, "GetPatientRecord");
    assert_eq!(first.decision, pb::AccessDecision::Allowed as i32);
    assert!(
        first.reason.contains("74001 issued a referral"),
        "{}",
        first.reason
    );
    let patient_key = r1
        .header()
        .map(|h| h.patient_key.clone())
        .unwrap_or_default();
    assert!(first.patient_keys.contains(&patient_key), "{first:?}");
    assert!(!first.request_id.is_empty() && first.client_address.starts_with("127.0.0.1:"));
    assert!(
        !format!("{records:?}").contains(&citizen),
        "the audit holds the pseudonym, not the citizen ID"
    );
    // Refusals are audited too: the other facility's worklist and the wrong acknowledger.
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.decision == pb::AccessDecision::Refused as i32)
        .collect();
    assert!(
        refused.iter().any(|r| r.method == "ListIncomingReferrals"
            && r.caller_facility == "79025"
            && r.subject_facility == "01001"),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r.method == "AcknowledgeReferral" && r.caller_facility == "79025")
    );
    assert!(
        refused
            .iter()
            .any(|r| r.method == "GetPatientRecord" && r.auth_method == "none")
    );
    // The list answers name every patient they held.
    assert!(records.iter().any(|r| r.method == "ListIncomingReferrals"
        && r.decision == pb::AccessDecision::Allowed as i32
        && r.patient_keys.len() >= 2));

    a.stop().await?;
    b.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_consumption_continues_and_the_cli_lists_and_replays_it()
-> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let t = topics().await?;
    let referral_topic = t.docs[&DocumentKind::Referral].clone();
    let producer = lienthong_kafka::EventProducer::new(&kafka, Duration::from_secs(10))?;
    let bad = producer
        .send(&referral_topic, b"poison-key", b"\x0a\x02not framed", &[])
        .await?;
    let mut g = Generator::new(556, time::OffsetDateTime::now_utc());
    let good = referral(&mut g, "79025", "79001", "79");
    let citizen = good
        .patient()
        .map(|p| p.citizen_id.clone())
        .unwrap_or_default();
    publish_to(&registry, &t.docs, std::slice::from_ref(&good)).await?;
    let a = start(&["79"], &t).await?;
    referrals_of(&a, "the good referral after the poison", &citizen, 1).await?;

    let bin = lienthong_tests::workspace_bin("lienthong");
    let args = [
        "dlq",
        "--kafka-bootstrap",
        &kafka.bootstrap,
        "--registry-url",
        &registry.registry_url,
    ];
    let list = tokio::process::Command::new(&bin)
        .args(args)
        .args(["list", "--topic", &t.dlq])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let origin = format!("{referral_topic}[{}]@{}", bad.partition, bad.offset);
    assert!(
        stdout.contains(&origin)
            && stdout.contains("lienthong-regional-79")
            && stdout.contains("undecodable")
            && stdout.contains("not Confluent-framed"),
        "{stdout}"
    );

    let show = tokio::process::Command::new(&bin)
        .args(args)
        .args([
            "show",
            "--topic",
            &t.dlq,
            "--partition",
            "0",
            "--offset",
            "0",
        ])
        .output()
        .await?;
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("\"undecodable\"") && shown.contains("poison-key"),
        "{shown}"
    );

    let replay = tokio::process::Command::new(&bin)
        .args(args)
        .args([
            "replay",
            "--topic",
            &t.dlq,
            "--partition",
            "0",
            "--offset",
            "0",
        ])
        .output()
        .await?;
    let replayed = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success() && replayed.contains(&format!("to {referral_topic}")),
        "{replayed}"
    );
    // The replayed copy is on the origin topic, same key and bytes.
    let (p, o) = {
        let tail = replayed
            .trim()
            .rsplit_once('[')
            .map(|(_, r)| r.to_owned())
            .unwrap_or_default();
        let (p, o) = tail.split_once("]@").unwrap_or(("0", "0"));
        (p.parse::<i32>()?, o.parse::<i64>()?)
    };
    let copy = read_at(&referral_topic, p, o).await?;
    assert_eq!(
        rdkafka::Message::payload(&copy),
        Some(&b"\x0a\x02not framed"[..])
    );
    assert_eq!(rdkafka::Message::key(&copy), Some(&b"poison-key"[..]));
    a.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_key_rotation_a_patient_is_found_under_old_and_new_keys() -> anyhow::Result<()> {
    let registry = require_registry().await;
    let t = topics().await?;
    // The key file after a rotation: the new key k2 first, the old one ("test") after it.
    let rotated = PatientKeyer::parse(&format!(
        "k2:{}\ntest:{}",
        hex::encode([9u8; 32]),
        hex::encode([7u8; 32])
    ))?;
    let store = start_keyed(&["79"], &t, rotated.clone()).await?;
    let mut g = Generator::new(777, time::OffsetDateTime::now_utc());
    // Before the rotation: a referral and a lab report under the old key.
    let before = referral(&mut g, "79025", "79001", "79");
    let citizen = before
        .patient()
        .map(|p| p.citizen_id.clone())
        .unwrap_or_default();
    let mut lab = reassign(ClinicalEvent::LabResult(g.lab_result()), "79025");
    if let ClinicalEvent::LabResult(l) = &mut lab {
        let report = l.report.get_or_insert_with(Default::default);
        *report.patient.get_or_insert_with(Default::default) =
            before.patient().cloned().unwrap_or_default();
    }
    let lab = key(lab);
    let service = match &lab {
        ClinicalEvent::LabResult(l) => l.report.clone().unwrap_or_default().service_code,
        _ => String::new(),
    };
    // After it: a referral of the same patient under the new key.
    let mut after = referral(&mut g, "79025", "79001", "79");
    if let ClinicalEvent::Referral(r) = &mut after {
        let slip = r.slip.get_or_insert_with(Default::default);
        *slip.patient.get_or_insert_with(Default::default) =
            before.patient().cloned().unwrap_or_default();
    }
    let new_key = rotated.key_for(&PersonId::parse(&citizen)?);
    after.header_mut().patient_key = new_key.value.clone();
    after.header_mut().patient_key_id = new_key.key_id;
    assert_ne!(
        before.header().map(|h| h.patient_key.clone()),
        Some(new_key.value),
        "old and new pseudonyms differ"
    );
    publish_to(&registry, &t.docs, &[before.clone(), lab, after.clone()]).await?;

    let mut c = store.client().await?;
    let record = record_when(
        &store,
        "both referrals and the lab report",
        &citizen,
        "79001",
        |r| r.referrals.len() == 2 && r.lab_results.len() == 1,
    )
    .await?;
    let ids: std::collections::BTreeSet<String> = record
        .referrals
        .iter()
        .filter_map(|v| {
            v.referral
                .as_ref()?
                .header
                .as_ref()
                .map(|h| h.document_id.clone())
        })
        .collect();
    assert!(
        ids.contains(
            &before
                .header()
                .map(|h| h.document_id.clone())
                .unwrap_or_default()
        )
    );
    assert!(
        ids.contains(
            &after
                .header()
                .map(|h| h.document_id.clone())
                .unwrap_or_default()
        )
    );
    let labs = c
        .find_reusable_lab_results(authed(
            pb::FindReusableLabResultsRequest {
                insurance_card_number: String::new(),
                citizen_id: citizen.clone(),
                service_codes: vec![service],
                max_age_days: 30,
                page: None,
                purpose: pb::PurposeOfUse::Treatment as i32,
            },
            "79001",
        ))
        .await?
        .into_inner();
    assert_eq!(labs.lab_results.len(), 1, "the old-key lab report is found");
    store.stop().await
}

/// A hub reads its members' lists and no one else's, and tokens must name the audience the
/// store is configured with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_read_their_members_lists_with_tokens_of_the_configured_audience() -> anyhow::Result<()>
{
    let registry = require_registry().await;
    let t = topics().await?;
    let audience = "lienthong-query-79";
    let store = start_with(&["79"], &t, keyer(), |c| {
        c.serving.hubs = vec!["79000=79025,79026".into()];
        c.serving.token_audience = Some(audience.into());
    })
    .await?;
    let mut g = Generator::new(909, time::OffsetDateTime::now_utc());
    let to_member = referral(&mut g, "79001", "79025", "79");
    let to_other = referral(&mut g, "79001", "79030", "79");
    publish_to(&registry, &t.docs, &[to_member.clone(), to_other]).await?;
    let worklist = |facility: &str| pb::ListIncomingReferralsRequest {
        facility_code: facility.into(),
        purpose: pb::PurposeOfUse::ContinuityOfCare as i32,
        ..Default::default()
    };
    let client = store.client().await?;
    let listed = eventually("the member's referral in the hub's view", || {
        let mut c = client.clone();
        let req = authed_for(worklist("79025"), "79000", audience);
        async move {
            let page = c.list_incoming_referrals(req).await?.into_inner();
            Ok((!page.referrals.is_empty()).then_some(page))
        }
    })
    .await?;
    let id = |e: &pb::ReferralView| {
        e.referral
            .as_ref()
            .and_then(|r| r.header.as_ref())
            .map(|h| h.document_id.clone())
    };
    assert_eq!(
        listed.referrals.iter().filter_map(id).collect::<Vec<_>>(),
        [to_member.header().expect("header").document_id.clone()]
    );

    let mut c = client.clone();
    let refused = c
        .list_incoming_referrals(authed_for(worklist("79030"), "79000", audience))
        .await
        .expect_err("79030 is not a member of the hub");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("79030"), "{refused:?}");
    let refused = c
        .list_incoming_referrals(authed_for(worklist("79025"), "79026", audience))
        .await
        .expect_err("a member does not read another member's list");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let wrong = c
        .list_incoming_referrals(authed(worklist("79025"), "79025"))
        .await
        .expect_err("a token of the default audience is for another deployment");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(wrong.message().contains("audience"), "{wrong:?}");
    assert!(!wrong.message().contains("gateway"), "{wrong:?}");
    store.stop().await
}

/// An event that is the stored version of its document with other content (published straight
/// to Kafka, past the gateway's check) is dead-lettered as a conflict; the first content stays
/// and consumption goes on. Many such events in a row are all dead-lettered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_version_with_other_content_is_dead_lettered_as_a_conflict() -> anyhow::Result<()>
{
    let registry = require_registry().await;
    let t = topics().await?;
    let mut g = Generator::new(557, time::OffsetDateTime::now_utc());
    let first = referral(&mut g, "79025", "79001", "79");
    let with_signs = |signs: &str| {
        let mut other = first.clone();
        if let ClinicalEvent::Referral(r) = &mut other
            && let Some(s) = r.slip.as_mut()
        {
            s.clinical_signs = signs.into();
        }
        other
    };
    // Forty in one consumer batch: every one dead-lettered, together, in order.
    let others: Vec<_> = (0..40)
        .map(|i| with_signs(&format!("Nội dung khác số {i:02}.")))
        .collect();
    // Same patient, so the three keep their order on one partition.
    let mut later = referral(&mut g, "79025", "79002", "79");
    if let (ClinicalEvent::Referral(l), Some(p)) = (&mut later, first.patient().cloned()) {
        l.slip.get_or_insert_with(Default::default).patient = Some(p);
    }
    let later = key(later);
    let mut events = vec![first.clone()];
    events.extend(others.iter().cloned());
    events.push(later.clone());
    publish_to(&registry, &t.docs, &events).await?;
    let a = start(&["79"], &t).await?;
    let wanted = others.len();
    let letters = eventually("the conflicts' dead letters", || {
        let dlq = t.dlq.clone();
        async move { Ok(lienthong_tests::read_from(&dlq, 0, 0, wanted).await.ok()) }
    })
    .await?;
    let doc = first.header().unwrap().document_id.clone();
    let mut origins = Vec::new();
    for (letter, other) in letters.iter().zip(&others) {
        let headers = lienthong_tests::header_map(letter);
        assert_eq!(
            headers.get("lienthong-error-code").map(String::as_str),
            Some("conflict")
        );
        let error = headers.get("lienthong-error").cloned().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "conflict: version 1 of {doc} is stored with other content"
            )),
            "{headers:?}"
        );
        use rdkafka::Message;
        let signs = match other {
            ClinicalEvent::Referral(r) => r.slip.as_ref().unwrap().clinical_signs.clone(),
            _ => unreachable!("the conflicts are referrals"),
        };
        assert!(
            letter
                .payload()
                .unwrap_or_default()
                .windows(signs.len())
                .any(|w| w == signs.as_bytes()),
            "dead letters keep the order they were consumed in"
        );
        origins.push(
            headers
                .get("lienthong-origin-offset")
                .and_then(|o| o.parse::<i64>().ok()),
        );
    }
    assert_eq!(origins.len(), others.len());
    assert!(origins.windows(2).all(|o| o[0] < o[1]), "{origins:?}");
    let citizen = first.patient().unwrap().citizen_id.clone();
    referrals_of(&a, "the event after the conflict", &citizen, 2).await?;
    a.stop().await
}

/// `lienthong regional …` answers every query method from a shell, as a table and as JSON,
/// with the credentials of `source .state/env`'s variables; refusals and an unreachable store
/// end in the exit codes a script acts on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_queries_every_method_as_tables_and_json() -> anyhow::Result<()> {
    let registry = require_registry().await;
    let t = topics().await?;
    let a = start(&["79"], &t).await?;
    let mut g = Generator::new(8080, time::OffsetDateTime::now_utc());
    let r = referral(&mut g, "79025", "79001", "79");
    let patient = r.patient().cloned().unwrap_or_default();
    let citizen = patient.citizen_id.clone();
    let mut appointment = reassign(ClinicalEvent::Appointment(g.appointment()), "79001");
    if let ClinicalEvent::Appointment(e) = &mut appointment {
        e.appointment.get_or_insert_with(Default::default).patient = Some(patient.clone());
    }
    let mut lab = reassign(ClinicalEvent::LabResult(g.lab_result()), "79025");
    if let ClinicalEvent::LabResult(l) = &mut lab {
        l.report.get_or_insert_with(Default::default).patient = Some(patient.clone());
    }
    let (appointment, lab) = (key(appointment), key(lab));
    publish_to(
        &registry,
        &t.docs,
        &[r.clone(), appointment.clone(), lab.clone()],
    )
    .await?;
    record_when(&a, "the whole record", &citizen, "79001", |r| {
        r.referrals.len() == 1 && r.appointments.len() == 1 && r.lab_results.len() == 1
    })
    .await?;

    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    let token = dir.path().join("79001.token");
    std::fs::write(&ca, a.pki.ca_pem())?;
    std::fs::write(
        &token,
        lienthong_tests::tokens::issuer().token(
            "79001",
            lienthong_grpc::REGIONAL_AUDIENCE,
            &[
                lienthong_grpc::Scope::Read,
                lienthong_grpc::Scope::Acknowledge,
            ],
            600,
        ),
    )?;
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let url = format!("https://localhost:{}", a.addr.port());
    let cli = |args: &[&str]| {
        let bin = lienthong_tests::workspace_bin("lienthong");
        let (url, ca, token) = (url.clone(), ca.clone(), token.clone());
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        async move {
            let out = tokio::process::Command::new(bin)
                .arg("regional")
                .args(&args)
                .env("LIENTHONG_REGIONAL_URL", url)
                .env("LIENTHONG_REGIONAL_CA", ca)
                .env("LIENTHONG_REGIONAL_TOKEN_FILE", token)
                .output()
                .await
                .expect("lienthong runs");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let doc = |e: &ClinicalEvent| {
        e.header()
            .map(|h| h.document_id.clone())
            .unwrap_or_default()
    };

    // record: a table with one row per document, the patient's name aligned in its column.
    let (code, table, err) =
        cli(&["record", "--citizen-id", &citizen, "--purpose", "treatment"]).await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "heading and three documents:\n{table}");
    assert!(
        lines[0].starts_with("KIND") && lines[0].contains("PATIENT"),
        "{table}"
    );
    for e in [&r, &appointment, &lab] {
        assert!(table.contains(&doc(e)), "{} missing:\n{table}", doc(e));
    }
    let column = |line: &str| {
        use unicode_width::UnicodeWidthStr;
        line[..line.find(&patient.full_name).expect("name in every row")].width()
    };
    assert!(
        lines[1..].iter().all(|l| column(l) == column(lines[1])),
        "{table}"
    );
    assert!(
        !table.contains(&citizen),
        "the table does not print the citizen ID"
    );
    // Dates as a reader writes them, not as the MoH digits.
    let issued = match &r {
        ClinicalEvent::Referral(e) => e.slip.as_ref().and_then(|s| s.issued_at.clone()),
        _ => None,
    }
    .expect("the referral has an issue date");
    let shown = lienthong_core::XmlDateTime::from_proto(&issued)?.to_string();
    assert!(
        table.contains(&shown) && !table.contains(&issued.value),
        "issued {} shown as {shown}:\n{table}",
        issued.value
    );

    // record as JSON: the answer message in canonical protobuf JSON.
    let (code, json, err) = cli(&[
        "record",
        "--citizen-id",
        &citizen,
        "--purpose",
        "treatment",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(
        v["referrals"][0]["referral"]["header"]["documentId"],
        doc(&r)
    );
    assert_eq!(v["referrals"][0]["status"], "REFERRAL_STATUS_PENDING");
    assert_eq!(
        v["appointments"][0]["header"]["documentId"],
        doc(&appointment)
    );
    assert_eq!(v["labResults"][0]["header"]["documentId"], doc(&lab));

    // referrals, appointments, lab reports.
    let (code, out, err) = cli(&[
        "referrals",
        "--facility",
        "79001",
        "--purpose",
        "continuity-of-care",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&doc(&r)) && out.contains("pending") && out.contains("79025 → 79001"),
        "{out}"
    );
    let today = time::OffsetDateTime::now_utc();
    let day = |d: time::OffsetDateTime| {
        format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
    };
    let (from, to) = (
        day(today - time::Duration::days(30)),
        day(today + time::Duration::days(90)),
    );
    let (code, out, err) = cli(&[
        "appointments",
        "--facility",
        "79001",
        "--from",
        &from,
        "--to",
        &to,
        "--purpose",
        "treatment",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        v["appointments"][0]["header"]["documentId"],
        doc(&appointment),
        "{out}"
    );
    let (code, out, err) = cli(&[
        "lab-reports",
        "--citizen-id",
        &citizen,
        "--purpose",
        "treatment",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&doc(&lab)) && out.contains("lab-result"),
        "{out}"
    );

    // acknowledge: the receipt's coordinates; then the referral reads as received.
    let (code, out, err) = cli(&["acknowledge", "--referral", &doc(&r)]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&t.receipt), "{out}");
    eventually("the referral to read as received", || {
        let (cli, wanted) = (&cli, doc(&r));
        async move {
            let (_, out, _) = cli(&[
                "referrals",
                "--facility",
                "79001",
                "--status",
                "received",
                "--purpose",
                "treatment",
            ])
            .await;
            Ok(out.contains(&wanted).then_some(()))
        }
    })
    .await?;

    // Refused as asked (3): a malformed citizen ID, another facility's list, acknowledging a
    // referral addressed elsewhere. Usage (2): no purpose. Unreachable store (4).
    let (code, _, err) = cli(&["record", "--citizen-id", "12ab", "--purpose", "treatment"]).await;
    assert_eq!(code, Some(3), "{err}");
    let (code, _, err) = cli(&["referrals", "--facility", "01001", "--purpose", "treatment"]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("PermissionDenied") || err.to_lowercase().contains("permission"),
        "{err}"
    );
    let (code, _, err) = cli(&["record", "--citizen-id", &citizen]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = cli(&[
        "record",
        "--citizen-id",
        &citizen,
        "--purpose",
        "treatment",
        "--regional",
        "https://localhost:1",
    ])
    .await;
    assert_eq!(code, Some(4), "{err}");
    a.stop().await
}

/// A patient's record answers only a facility with a care relationship (issuer or receiver of
/// a referral, holder of an appointment, producer of a lab report), one that attests presence
/// with the patient's own insurance card, or an EMERGENCY (break-the-glass); each decision is
/// audited with its reason; per-facility read limits stop harvesting; acknowledging twice
/// publishes one receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_care_relationship_and_every_decision_is_audited() -> anyhow::Result<()> {
    let registry = require_registry().await;
    let t = topics().await?;
    let a = start_with(&["79"], &t, keyer(), |c| {
        c.patient_reads_per_minute = 1;
        c.patient_read_burst = 40;
    })
    .await?;
    let mut g = Generator::new(4242, time::OffsetDateTime::now_utc());
    let r = referral(&mut g, "79025", "79001", "79");
    let patient = r.patient().cloned().unwrap_or_default();
    let citizen = patient.citizen_id.clone();
    let card = patient.insurance_cards[0].number.clone();
    let mut lab = reassign(ClinicalEvent::LabResult(g.lab_result()), "79030");
    if let ClinicalEvent::LabResult(l) = &mut lab {
        l.report.get_or_insert_with(Default::default).patient = Some(patient.clone());
    }
    publish_to(&registry, &t.docs, &[r.clone(), key(lab)]).await?;
    referrals_of(&a, "the referral", &citizen, 1).await?;
    let c = a.client().await?;
    let read = |facility: &'static str, purpose: pb::PurposeOfUse, card: &str| {
        let (c, citizen, card) = (c.clone(), citizen.clone(), card.to_owned());
        async move { patient_record(&c, &citizen, facility, purpose, &card).await }
    };
    use pb::PurposeOfUse::{Emergency, Treatment};

    // The token must be for this service, grant read, and name the individual.
    let with_token = |token: String| {
        let mut c = c.clone();
        let mut request = tonic::Request::new(pb::GetPatientRecordRequest {
            citizen_id: citizen.clone(),
            purpose: Treatment as i32,
            insurance_card_number: String::new(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        async move { c.get_patient_record(request).await }
    };
    let issuer = lienthong_tests::tokens::issuer();
    use lienthong_grpc::Scope;
    let publish_only = issuer.token(
        "79001",
        lienthong_grpc::REGIONAL_AUDIENCE,
        &[Scope::Publish],
        60,
    );
    let e = with_token(publish_only).await.expect_err("no read scope");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("read scope"), "{}", e.message());
    let for_gateway = issuer.token(
        "79001",
        lienthong_grpc::GATEWAY_AUDIENCE,
        &[Scope::Read],
        60,
    );
    let e = with_token(for_gateway).await.expect_err("another audience");
    assert_eq!(e.code(), Code::Unauthenticated);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "sub": "79001", "aud": [lienthong_grpc::REGIONAL_AUDIENCE], "iat": now,
        "exp": now + 600, "jti": "no-act", "scope": "read",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(lienthong_tests::tokens::KEY_ID.into());
    let no_act = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(issuer.pem.as_bytes())?,
    )?;
    let e = with_token(no_act).await.expect_err("no individual");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("individual"), "{}", e.message());

    // Each kind of relationship allows: the receiver of a pending referral, its issuer, the
    // facility that produced a lab report.
    for facility in ["79001", "79025", "79030"] {
        let answer = read(facility, Treatment, "").await?;
        assert_eq!(answer.referrals.len(), 1, "{facility}");
        assert_eq!(answer.lab_results.len(), 1, "{facility}");
    }
    // No relationship: refused with the reason and what would allow it.
    let refused = read("79777", Treatment, "")
        .await
        .expect_err("no relationship");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("no care relationship"),
        "{}",
        refused.message()
    );
    // Another patient's card attests nothing.
    let wrong = read("79777", Treatment, "DN4790000000000")
        .await
        .expect_err("wrong card");
    assert!(
        wrong.message().contains("does not match"),
        "{}",
        wrong.message()
    );
    // The patient's own card attests presence; the relationship then holds without it.
    assert_eq!(read("79777", Treatment, &card).await?.referrals.len(), 1);
    assert_eq!(read("79777", Treatment, "").await?.referrals.len(), 1);
    // Lab results follow the same rule.
    let labs = |facility: &'static str| {
        let mut c = c.clone();
        let request = pb::FindReusableLabResultsRequest {
            citizen_id: citizen.clone(),
            purpose: Treatment as i32,
            ..Default::default()
        };
        async move { c.find_reusable_lab_results(authed(request, facility)).await }
    };
    assert_eq!(labs("79001").await?.into_inner().lab_results.len(), 1);
    assert_eq!(
        labs("79888").await.expect_err("no relationship").code(),
        Code::PermissionDenied
    );
    // Break-the-glass: an emergency answers without a relationship, and is marked.
    assert_eq!(read("79888", Emergency, "").await?.referrals.len(), 1);

    // Acknowledging twice publishes one receipt.
    let first = acknowledge(&c, &r, "79001").await?;
    assert!(!first.already_received);
    let second = acknowledge(&c, &r, "79001").await?;
    assert!(second.already_received, "{second:?}");
    assert_eq!(
        (second.partition, second.offset),
        (first.partition, first.offset)
    );
    let receipts = lienthong_tests::gateway::read_all(&t.receipt)?;
    assert_eq!(receipts.len(), 1, "one receipt: {receipts:?}");

    // The read limit: a facility reading patient after patient is stopped at its burst.
    let mut exhausted = None;
    for attempt in 0..50 {
        if let Err(e) = read("79555", Emergency, "").await {
            exhausted = Some((attempt, e));
            break;
        }
    }
    let (attempt, e) = exhausted.expect("the read limit stops a harvesting facility");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(attempt, 40, "the burst is 40 reads");

    // Every decision is in the audit, with its reason.
    let records = audit_records(&t.audit)?;
    let of = |facility: &str, decision: pb::AccessDecision| {
        records
            .iter()
            .filter(|r| r.caller_facility == facility && r.decision == decision as i32)
            .collect::<Vec<_>>()
    };
    let refusals = of("79777", pb::AccessDecision::Refused);
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .any(|r| r.reason.contains("no care relationship"))
    );
    assert!(refusals.iter().any(|r| r.reason.contains("does not match")));
    let attested = of("79777", pb::AccessDecision::Allowed);
    assert_eq!(attested.len(), 2);
    assert!(
        attested.iter().all(|r| r.reason.contains("attested")),
        "{attested:?}"
    );
    let glass = of("79888", pb::AccessDecision::BreakGlass);
    assert_eq!(glass.len(), 1);
    assert_eq!(glass[0].purpose, "PURPOSE_OF_USE_EMERGENCY");
    let patient_key = r
        .header()
        .map(|h| h.patient_key.clone())
        .unwrap_or_default();
    assert!(glass[0].patient_keys.contains(&patient_key));
    assert_eq!(
        of("79888", pb::AccessDecision::Refused).len(),
        1,
        "the refused lab read"
    );
    let acks: Vec<_> = records
        .iter()
        .filter(|r| r.method == "AcknowledgeReferral")
        .collect();
    assert_eq!(acks.len(), 2);
    assert!(acks.iter().any(|r| r.reason.contains("already received")));
    assert!(
        of("79555", pb::AccessDecision::Refused)
            .iter()
            .any(|r| r.reason.contains("limit"))
    );
    // The audit is a registered schema like the events: `lienthong tail` decodes it.
    let kafka = require_kafka();
    let tail = tokio::process::Command::new(lienthong_tests::workspace_bin("lienthong"))
        .args([
            "tail",
            "--topic",
            &t.audit,
            "--from-beginning",
            "--max",
            "2",
            "--format",
            "json",
        ])
        .args([
            "--kafka-bootstrap",
            &kafka.bootstrap,
            "--registry-url",
            &registry.registry_url,
        ])
        .output()
        .await?;
    let out = String::from_utf8_lossy(&tail.stdout);
    assert!(
        tail.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    assert!(
        out.contains("lienthong.v1.AccessAuditEvent") && out.contains("ACCESS_DECISION_"),
        "{out}"
    );
    a.stop().await
}

/// `request` with a request id of its own, and that id.
fn with_id<T>(mut request: tonic::Request<T>) -> (String, tonic::Request<T>) {
    let id = uuid::Uuid::new_v4().to_string();
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("ascii"));
    (id, request)
}

/// The outcome of one access as the audit must record it.
fn decided<T>(
    answer: &Result<T, tonic::Status>,
    emergency_without_relationship: bool,
) -> &'static str {
    match answer {
        Err(_) => "refused",
        Ok(_) if emergency_without_relationship => "break-glass",
        Ok(_) => "allowed",
    }
}

/// A patient's right to know: every access made to their record (allowed, refused,
/// break-the-glass, acknowledgement) reaches the warehouse's access table through the audit
/// topic, and `lienthong audit accesses --citizen-id` lists exactly those, no other patient's;
/// the privacy officer's role reads it, the analyst's cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_is_told_exactly_the_accesses_made_to_their_record() -> anyhow::Result<()> {
    use pb::PurposeOfUse::{Emergency, Treatment};
    let kafka = require_kafka();
    let registry = require_registry().await;
    let t = topics().await?;
    let a = start(&["79"], &t).await?;
    let mut g = Generator::new(9191, time::OffsetDateTime::now_utc());
    let mine = referral(&mut g, "79025", "79001", "79");
    let other = referral(&mut g, "79025", "79001", "79");
    let citizen = |e: &ClinicalEvent| {
        e.patient()
            .map(|p| p.citizen_id.clone())
            .unwrap_or_default()
    };
    let (me, them) = (citizen(&mine), citizen(&other));
    assert_ne!(me, them);
    publish_to(&registry, &t.docs, &[mine.clone(), other.clone()]).await?;
    let c = a.client().await?;

    // Every request carries a request id of its own; what was made is (request id, facility,
    // decision) for this patient.
    let mut made: Vec<(String, String, String)> = Vec::new();
    let read = |facility: &'static str, purpose: pb::PurposeOfUse, citizen: &str| {
        let mut c = c.clone();
        let (id, request) = with_id(authed(
            pb::GetPatientRecordRequest {
                citizen_id: citizen.to_owned(),
                purpose: purpose as i32,
                insurance_card_number: String::new(),
            },
            facility,
        ));
        async move { (id, c.get_patient_record(request).await) }
    };
    // Until the referrals are applied, the receiver is refused: those reads are accesses too.
    for patient in [&me, &them] {
        let mut ready = false;
        for _ in 0..120 {
            let (id, answer) = read("79001", Treatment, patient).await;
            if patient == &me {
                made.push((id, "79001".into(), decided(&answer, false).into()));
            }
            match answer {
                Ok(r) if r.get_ref().referrals.len() == 1 => {
                    ready = true;
                    break;
                }
                Ok(_) => {}
                Err(s) if s.code() == Code::PermissionDenied => {}
                Err(s) => return Err(s.into()),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(ready, "the referral was not applied within 30 s");
    }
    let (id, answer) = read("79777", Treatment, &me).await;
    assert_eq!(decided(&answer, false), "refused");
    made.push((id, "79777".into(), "refused".into()));
    let (id, answer) = read("79888", Emergency, &me).await;
    assert_eq!(decided(&answer, true), "break-glass");
    made.push((id, "79888".into(), "break-glass".into()));
    let (id, answer) = read("79025", Treatment, &them).await;
    assert!(answer.is_ok(), "{answer:?}");
    drop(id); // the other patient's: never listed for this one
    let (id, request) = with_id(authed(
        pb::FindReusableLabResultsRequest {
            citizen_id: me.clone(),
            purpose: Treatment as i32,
            ..Default::default()
        },
        "79025",
    ));
    let answer = c.clone().find_reusable_lab_results(request).await;
    made.push((id, "79025".into(), decided(&answer, false).into()));
    let referral_id = mine
        .header()
        .map(|h| h.document_id.clone())
        .unwrap_or_default();
    let (id, request) = with_id(authed(
        pb::AcknowledgeReferralRequest {
            referral_document_id: referral_id,
        },
        "79001",
    ));
    let answer = c.clone().acknowledge_referral(request).await;
    assert!(answer.is_ok(), "{answer:?}");
    made.push((id, "79001".into(), "allowed".into()));
    a.stop().await?;

    // The warehouse loads the whole audit topic into its access table.
    let audited = audit_records(&t.audit)?.len() as i64;
    let dsn = lienthong_tests::warehouse::fresh_database().await?;
    let mut config = lienthong_warehouse_loader::LoaderConfig::new(
        &dsn,
        &format!("wh-test-{}", uuid::Uuid::new_v4().simple()),
        vec![t.audit.clone()],
    );
    config.audit_topic = t.audit.clone();
    config.dlq_topic = t.dlq.clone();
    let loader =
        lienthong_tests::warehouse::start_loader(config, kafka.clone(), registry.clone(), 0)
            .await?;
    lienthong_tests::warehouse::wait_for_count(
        &loader.db,
        "SELECT count(*) FROM restricted.accesses",
        audited,
        Duration::from_secs(60),
    )
    .await?;
    loader.stop().await?;

    // The privacy officer asks for this patient's accesses by citizen ID.
    let accesses = |role: &str| {
        let settings = lienthong_tests::warehouse::as_role(&dsn, role);
        let mut command = std::process::Command::new(lienthong_tests::workspace_bin("lienthong"));
        command
            .args(["audit", "accesses", "--citizen-id", &me, "--format", "json"])
            .arg("--pg-dsn")
            .arg(&settings.dsn)
            .arg("--pg-password-file")
            .arg(settings.password_file.as_ref().expect("password file"))
            .env_remove("LIENTHONG_PSEUDONYM_KEY_FILE")
            .env(
                "LIENTHONG_PSEUDONYM_KEY",
                format!("test:{}", "07".repeat(32)),
            );
        command.output()
    };
    let out = accesses("privacy_officer")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let mut listed: Vec<(String, String, String)> = listed
        .iter()
        .map(|a| {
            let field = |name: &str| a[name].as_str().unwrap_or_default().to_owned();
            (
                field("request_id"),
                field("caller_facility"),
                field("decision"),
            )
        })
        .collect();
    listed.sort();
    made.sort();
    assert_eq!(listed, made, "the accesses listed are exactly those made");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(lienthong_tests::tokens::INDIVIDUAL),
        "each access names the individual"
    );

    // An analyst cannot ask: the access table is not theirs.
    let out = accesses("analyst")?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not read restricted.accesses"), "{err}");
    Ok(())
}

/// A partition added to a region's topic while the store serves is assigned within the store's
/// 30 s look for new partitions and read from its beginning, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_added_while_serving_is_read_without_a_restart() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let t = topics().await?;
    let a = start(&["79"], &t).await?;
    let topic = t.docs[&DocumentKind::Referral].clone();
    lienthong_tests::add_partitions(&kafka, &topic, 4).await?;

    let mut g = Generator::new(558, time::OffsetDateTime::now_utc());
    let e = referral(&mut g, "79025", "79001", "79");
    let citizen = e
        .patient()
        .map(|p| p.citizen_id.clone())
        .unwrap_or_default();
    let framed = lienthong_registry::WireCodec::new(&registry)?
        .encode_for(e.kind(), &topic, &e.encode_to_vec())
        .await?;
    let producer = lienthong_tests::producer_seeing_new_partitions(&kafka)?;
    lienthong_tests::write_to_partition(&producer, &topic, 3, &framed).await?;
    let written = std::time::Instant::now();

    record_within(
        &a,
        "the referral on the added partition",
        &citizen,
        "79001",
        Duration::from_secs(75),
        |r| r.referrals.len() == 1,
    )
    .await?;
    println!("read {:?} after it was written", written.elapsed());
    a.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_access_cannot_be_audited_is_withheld() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let t = topics().await?;
    let a = start(&["79"], &t).await?;
    let mut g = Generator::new(5151, time::OffsetDateTime::now_utc());
    let r = referral(&mut g, "79025", "79001", "79");
    let citizen = r
        .patient()
        .map(|p| p.citizen_id.clone())
        .unwrap_or_default();
    publish_to(&registry, &t.docs, std::slice::from_ref(&r)).await?;
    referrals_of(&a, "the referral", &citizen, 1).await?;
    let c = a.client().await?;
    let read = |facility: &'static str| {
        patient_record(&c, &citizen, facility, pb::PurposeOfUse::Treatment, "")
    };
    let audited_before = audit_records(&t.audit)?.len();

    // The broker now refuses every audit record (as a full or misconfigured audit topic would).
    lienthong_tests::set_topic_configs(&kafka, &t.audit, &[("max.message.bytes", "64")]).await?;
    let withheld = read("79001").await.expect_err("an unaudited answer");
    assert_eq!(withheld.code(), Code::Unavailable, "{withheld:?}");
    assert!(
        withheld.message().contains("could not be audited"),
        "{}",
        withheld.message()
    );
    // A refusal stays the refusal it was.
    let refused = read("79777").await.expect_err("no relationship");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // An acknowledgement changes nothing when its access cannot be audited.
    let unaudited = acknowledge(&c, &r, "79001")
        .await
        .expect_err("an unaudited acknowledgement");
    assert_eq!(unaudited.code(), Code::Unavailable, "{unaudited:?}");
    assert!(
        unaudited.message().contains("nothing was changed"),
        "{}",
        unaudited.message()
    );
    assert!(
        lienthong_tests::gateway::read_all(&t.receipt)?.is_empty(),
        "a receipt was published for an unaudited acknowledgement"
    );
    assert_eq!(
        audit_records(&t.audit)?.len(),
        audited_before,
        "nothing reached the audit topic"
    );

    // Once the audit topic takes records again, answers flow, each with its record.
    lienthong_tests::set_topic_configs(&kafka, &t.audit, &[]).await?;
    let answer = eventually("an audited answer again", || async {
        match read("79001").await {
            Ok(a) => Ok(Some(a)),
            Err(s) if s.code() == Code::Unavailable => Ok(None),
            Err(s) => Err(s.into()),
        }
    })
    .await?;
    assert_eq!(answer.referrals.len(), 1);
    let acknowledged = acknowledge(&c, &r, "79001").await?;
    assert!(!acknowledged.already_received);
    assert_eq!(lienthong_tests::gateway::read_all(&t.receipt)?.len(), 1);
    let records = audit_records(&t.audit)?;
    let allowed = |method: &str| {
        records.iter().skip(audited_before).any(|r| {
            r.caller_facility == "79001"
                && r.method == method
                && r.decision == pb::AccessDecision::Allowed as i32
        })
    };
    assert!(
        allowed("GetPatientRecord") && allowed("AcknowledgeReferral"),
        "the answered read and the acknowledgement are audited: {records:?}"
    );
    a.stop().await
}
