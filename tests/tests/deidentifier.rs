//! The de-identification service on the real stack: exactly once through Kafka transactions
//! while it is killed with SIGKILL again and again; no identifier of the documents anywhere in
//! the analytics topics; only the analytics principal reads them; and age bands the risk
//! widened stay wide across a restart.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use lienthong_core::{ClinicalEvent, DocumentKind, PatientKeyer};
use lienthong_deidentifier::AnalyticsKind;
use lienthong_proto::v1 as pb;
use lienthong_tests::privacy::scannable;
use lienthong_tests::warehouse::{publish_to, topics_with_schemas};
use lienthong_tests::{create_topic, kafka, require_kafka, require_registry, workspace_bin};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

const EVENTS: usize = 100_000;

struct Run {
    args: Vec<String>,
    group: String,
    inputs: Vec<String>,
}

impl Run {
    fn spawn(&self) -> anyhow::Result<tokio::process::Child> {
        Ok(
            tokio::process::Command::new(workspace_bin("lienthong-deidentifier"))
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?,
        )
    }

    /// Input messages whose offsets the service committed (in its transactions), or `None`
    /// while the broker cannot say (a killed instance's transaction still open).
    fn committed_now(&self) -> Option<i64> {
        lienthong_tests::deidentifier::committed(&self.group, &self.inputs, 3).ok()
    }

    /// Input messages whose offsets the service committed, waiting out an open transaction
    /// (aborted by the broker after the 10 s transaction timeout).
    async fn committed(&self) -> anyhow::Result<i64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lienthong_tests::deidentifier::committed(&self.group, &self.inputs, 3) {
                Ok(n) => return Ok(n),
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("committed offsets unreadable for 60 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Every (key, value, timestamp in ms) of `topics` (partitions 0..`partitions`) a
/// read_committed reader sees, until `expected` or a quiet spell.
async fn read_committed(
    topics: &[&str],
    partitions: i32,
    expected: usize,
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>, Option<i64>)>> {
    let mut cfg = kafka().client_config()?;
    cfg.set(
        "group.id",
        format!("analytics-verify-{}", uuid::Uuid::new_v4().simple()),
    )
    .set("enable.auto.commit", "false")
    .set("auto.offset.reset", "earliest")
    .set("isolation.level", "read_committed");
    let consumer: StreamConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(t, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_secs(if out.len() >= expected { 3 } else { 20 }),
            consumer.recv(),
        )
        .await
        {
            Err(_) => break,
            Ok(m) => {
                let m = m?;
                out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    m.timestamp().to_millis(),
                ));
            }
        }
    }
    Ok(out)
}

/// The identifying strings of a document event, each long enough to be unambiguous.
fn identifiers(e: &ClinicalEvent) -> Vec<String> {
    let mut out = Vec::new();
    let h = e.header().cloned().unwrap_or_default();
    out.extend([h.document_id, h.event_id, h.patient_key]);
    if let Some(p) = e.patient() {
        out.extend([
            p.citizen_id.clone(),
            p.full_name.clone(),
            p.address.clone(),
            p.facility_patient_number.clone(),
        ]);
        out.extend(p.insurance_cards.iter().map(|c| c.number.clone()));
    }
    match e {
        ClinicalEvent::Referral(r) => {
            let s = r.slip.clone().unwrap_or_default();
            out.extend([
                s.slip_number,
                s.episode_id,
                s.record_number,
                s.clinical_signs,
                s.course_of_illness,
            ]);
            out.extend(s.physician.map(|p| p.licence_number));
        }
        ClinicalEvent::Appointment(a) => {
            let a = a.appointment.clone().unwrap_or_default();
            out.extend([a.slip_number, a.episode_id]);
        }
        ClinicalEvent::LabResult(l) => {
            let r = l.report.clone().unwrap_or_default();
            out.push(r.episode_id);
            out.extend(
                r.lines
                    .iter()
                    .flat_map(|l| l.readers.iter().map(|p| p.licence_number.clone())),
            );
        }
    }
    out.retain(|s| s.chars().count() >= 8);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_deidentifier_repeatedly_publishes_every_event_exactly_once()
-> anyhow::Result<()> {
    let kafka_args = require_kafka();
    let registry = require_registry().await;
    let documents = topics_with_schemas(&registry).await?;
    let receipts = lienthong_tests::unique_topic("deid.receipt");
    create_topic(&kafka_args, &receipts, 3).await?;
    let analytics = lienthong_tests::deidentifier::analytics_topics_with_schemas(&registry).await?;
    let age_bands = lienthong_tests::deidentifier::age_bands_topic_with_schema(&registry).await?;
    let key_file = std::env::var("LIENTHONG_ANALYTICS_KEY_FILE")
        .expect("LIENTHONG_ANALYTICS_KEY_FILE (set by .state/env)");
    let keyer = PatientKeyer::parse(&std::fs::read_to_string(&key_file)?)?;

    // 100,000 events: 90,909 documents, every tenth of them also in a second version.
    let events = lienthong_tests::events_with_second_versions(777, 90_909, pb::Action::Updated);
    assert_eq!(events.len(), EVENTS);
    publish_to(&registry, &documents, &events).await?;
    let published_by_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    // One analytics record per published message (the fixtures repeat some events, as a
    // retrying publisher would: each copy is its own message and gets its own record).
    let expected_keys: Vec<String> = events
        .iter()
        .map(|e| keyer.keyed_hash("event", &e.header().expect("header").event_id))
        .collect();
    let expected: BTreeSet<String> = expected_keys.iter().cloned().collect();

    let group = format!(
        "lienthong-deidentifier-test-{}",
        uuid::Uuid::new_v4().simple()
    );
    let mut args: Vec<String> = vec![
        "--group".into(),
        group.clone(),
        "--transactional-id".into(),
        format!(
            "lienthong-deidentifier-test-{}",
            uuid::Uuid::new_v4().simple()
        ),
        "--receipt-topic".into(),
        receipts.clone(),
        "--topic-referral".into(),
        documents[&DocumentKind::Referral].clone(),
        "--topic-appointment".into(),
        documents[&DocumentKind::Appointment].clone(),
        "--topic-lab-result".into(),
        documents[&DocumentKind::LabResult].clone(),
        "--kafka-bootstrap".into(),
        kafka_args.bootstrap.clone(),
        "--registry-url".into(),
        registry.registry_url.clone(),
        "--log".into(),
        "warn".into(),
        "--batch-events".into(),
        "2000".into(),
        "--session-timeout-ms".into(),
        "6000".into(),
        "--transaction-timeout-ms".into(),
        "10000".into(),
        "--age-bands-topic".into(),
        age_bands,
    ];
    for kind in AnalyticsKind::ALL {
        let flag = match kind {
            AnalyticsKind::Referral => "--analytics-topic-referral",
            AnalyticsKind::Appointment => "--analytics-topic-appointment",
            AnalyticsKind::LabResult => "--analytics-topic-lab-result",
            AnalyticsKind::Receipt => "--analytics-topic-receipt",
        };
        args.extend([flag.to_owned(), analytics.of(kind).to_owned()]);
    }
    let mut inputs: Vec<String> = documents.values().cloned().collect();
    inputs.push(receipts);
    let run = Run {
        args,
        group,
        inputs,
    };

    // Kill while it works, each time after a pseudo-random amount of progress (seeded by the
    // clock, so every run kills at other moments).
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as u64;
    let mut kills = 0;
    let started = Instant::now();
    while kills < 4 {
        let before = run.committed().await?;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let progress = 4_000 + ((seed >> 33) % 16_000) as i64;
        let mut child = run.spawn()?;
        let until = Instant::now() + Duration::from_secs(90);
        while run.committed_now().unwrap_or(before) < before + progress && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().await?; // SIGKILL: no shutdown path runs, a transaction may be open
        kills += 1;
        let done = run.committed().await?;
        eprintln!(
            "kill {kills}: {done} input messages committed (+{})",
            done - before
        );
        anyhow::ensure!(done > before, "no progress between kills");
        if done as usize >= EVENTS {
            break;
        }
    }
    let mut child = run.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while (run.committed().await? as usize) < EVENTS {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {EVENTS} committed",
            run.committed().await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "all {EVENTS} committed {:.1} s after the first start, {kills} kills",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().await?;

    // Exactly once, as a read_committed analytics consumer sees it: count, set and checksum.
    let topics: Vec<&str> = AnalyticsKind::ALL
        .iter()
        .map(|k| analytics.of(*k))
        .collect();
    let records = read_committed(&topics, 3, EVENTS).await?;
    let mut seen = BTreeSet::new();
    let mut checksum = 0u64;
    // Each record keeps its source's acceptance time (all published before the service
    // started), so the warehouse measures freshness from acceptance, not from re-production.
    let restamped = records
        .iter()
        .filter(|(_, _, ts)| ts.is_none_or(|t| t > published_by_ms))
        .count();
    assert_eq!(restamped, 0, "records not stamped with their source's time");
    for (_, value, _) in &records {
        let header = analytics_header(value)?;
        checksum = checksum.wrapping_add(u64::from_str_radix(&header.event_key[..16], 16)?);
        seen.insert(header.event_key);
    }
    let expected_checksum = expected_keys.iter().fold(0u64, |a, k| {
        a.wrapping_add(u64::from_str_radix(&k[..16], 16).unwrap())
    });
    eprintln!(
        "read_committed: {} records, {} distinct, checksum {checksum:016x}",
        records.len(),
        seen.len()
    );
    assert_eq!(records.len(), EVENTS, "every event exactly once (count)");
    assert_eq!(checksum, expected_checksum, "checksum of the event keys");
    assert!(
        seen == expected,
        "the analytics event keys are those of the published events"
    );

    // Privacy scan: no identifier of any published document in any analytics key or value.
    // Keyed hashes are compared whole, not searched: the hex of about one in twenty holds some
    // 12-digit citizen ID by chance.
    let needles: BTreeSet<String> = events.iter().flat_map(identifiers).collect();
    let scanner = AhoCorasick::new(&needles)?;
    let mut hits = Vec::new();
    for (key, value, _) in &records {
        let payload = lienthong_registry::frame::parse(value)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .payload;
        // The framing before the payload is a schema id and message indexes: no text.
        for scan in [scannable(key), scannable(payload)] {
            hits.extend(scan.hashes.into_iter().filter(|h| needles.contains(h)));
            if let Some(m) = scanner.find(&scan.masked) {
                hits.push(
                    needles
                        .iter()
                        .nth(m.pattern().as_usize())
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
    }
    eprintln!(
        "privacy scan: {} identifiers searched in {} records: {} hits",
        needles.len(),
        records.len(),
        hits.len()
    );
    assert!(
        hits.is_empty(),
        "identifiers in the analytics topics: {:?}",
        &hits[..hits.len().min(5)]
    );

    // An analytics team's own client reads them; no other principal does.
    let referral_topic = std::path::PathBuf::from(analytics.of(AnalyticsKind::Referral));
    lienthong_tests::run_pytest(
        "analytics_reads.py",
        &[("LIENTHONG_ANALYTICS_TEST_TOPIC", &referral_topic)],
        2,
    );
    Ok(())
}

/// Field 1 of every analytics message, and nothing else of it.
#[derive(Clone, PartialEq, prost::Message)]
struct HeaderOnly {
    #[prost(message, optional, tag = "1")]
    header: Option<pb::AnalyticsHeader>,
}

/// The header of any analytics event (field 1 of every analytics message).
fn analytics_header(framed: &[u8]) -> anyhow::Result<pb::AnalyticsHeader> {
    let frame = lienthong_registry::frame::parse(framed).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // Every analytics message starts with `AnalyticsHeader header = 1`; its other fields differ
    // by kind, so only the header is decoded.
    let event = HeaderOnly::decode(frame.payload)?;
    event
        .header
        .ok_or_else(|| anyhow::anyhow!("an analytics event without a header"))
}

#[derive(Clone, PartialEq, prost::Message)]
struct PatientOnly {
    #[prost(message, optional, tag = "2")]
    patient: Option<pb::AnalyticsPatient>,
}

/// The age band of a document's analytics event (field 2 of every document's analytics message
/// is its patient).
fn age_band(framed: &[u8]) -> anyhow::Result<String> {
    let frame = lienthong_registry::frame::parse(framed).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(PatientOnly::decode(frame.payload)?
        .patient
        .map(|p| p.age_band)
        .unwrap_or_default())
}

/// Runs the service in-process under `policy` until `group` has committed `until` input
/// messages, then stops it gracefully.
async fn run_until_committed(
    config: lienthong_deidentifier::DeidentifierConfig,
    registry: &lienthong_registry::RegistryArgs,
    until: i64,
) -> anyhow::Result<()> {
    let (group, inputs) = (config.group.clone(), config.input_topics());
    let mut service = lienthong_tests::deidentifier::RunningDeidentifier::spawn(config, registry);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        service.ensure_running().await?;
        let done = lienthong_tests::deidentifier::committed(&group, &inputs, 3).unwrap_or(0);
        if done >= until {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{done} of {until} input messages committed after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    service.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn age_bands_the_risk_widened_stay_wide_after_a_restart() -> anyhow::Result<()> {
    let _ = require_kafka();
    let registry = require_registry().await;
    let documents = topics_with_schemas(&registry).await?;
    let receipts = lienthong_tests::unique_topic("deid.receipt");
    create_topic(&kafka(), &receipts, 3).await?;
    let analytics = lienthong_tests::deidentifier::analytics_topics_with_schemas(&registry).await?;
    let age_bands = lienthong_tests::deidentifier::age_bands_topic_with_schema(&registry).await?;
    let shipped = std::fs::read_to_string(
        lienthong_tests::repo_root().join("services/deidentifier/policy.toml"),
    )?;
    anyhow::ensure!(shipped.contains("window_events = 20000\n"));
    let dir = tempfile::tempdir()?;
    // The same policy version twice: a window the fixtures fill (their facility-day groups are
    // small, so every full window is below the floor), then one they never fill, so the
    // second run cannot widen by itself.
    let policy = |window: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.path().join(format!("policy-{window}.toml"));
        std::fs::write(
            &path,
            shipped.replace(
                "window_events = 20000\n",
                &format!("window_events = {window}\n"),
            ),
        )?;
        Ok(path)
    };
    let group = format!("deid-bands-{}", uuid::Uuid::new_v4().simple());
    let config = |policy: std::path::PathBuf| {
        let mut c = lienthong_deidentifier::DeidentifierConfig::new(
            lienthong_tests::deidentifier::analytics_key_file().into(),
            &group,
            lienthong_kafka::topics::DocumentTopics::from_map(&documents),
            &receipts,
            analytics.clone(),
        );
        c.transactional_id = Some(format!("{group}-0"));
        c.age_bands_topic = age_bands.clone();
        c.batch_events = 100;
        c.policy = Some(policy);
        c
    };

    // First run: 2,000 events through a window of 300 widen the bands 5 → 10 → 20 years.
    let first = lienthong_tests::keyed_events(4242, 2_000);
    publish_to(&registry, &documents, &first).await?;
    run_until_committed(config(policy("300")?), &registry, 2_000).await?;
    let records = read_committed(&[age_bands.as_str()], 1, 2).await?;
    let widenings: Vec<pb::AgeBandWidening> = records
        .iter()
        .map(|(_, value, _)| {
            let frame =
                lienthong_registry::frame::parse(value).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(pb::AgeBandWidening::decode(frame.payload)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let widths: Vec<u32> = widenings.iter().map(|w| w.age_band_years).collect();
    assert_eq!(widths, [10, 20], "one record per widening, in order");
    let shipped_version = lienthong_deidentifier::Policy::shipped()?
        .version()
        .to_owned();
    for (w, (key, _, _)) in widenings.iter().zip(&records) {
        assert_eq!(w.policy_version, shipped_version);
        assert_eq!(w.k_floor, 5);
        assert!(w.min_group < 5, "{w:?}");
        assert_eq!(
            std::str::from_utf8(key)?,
            format!("{shipped_version}/{}", w.age_band_years)
        );
    }

    // Second run, after a restart, under a window it cannot fill: what it publishes is in
    // 20-year bands from its first event on, and it records nothing new.
    let second = lienthong_tests::keyed_events(4243, 500);
    publish_to(&registry, &documents, &second).await?;
    run_until_committed(config(policy("1000000")?), &registry, 2_500).await?;
    let keyer = lienthong_tests::deidentifier::analytics_keyer();
    let second_keys: BTreeSet<String> = second
        .iter()
        .map(|e| keyer.keyed_hash("event", &e.header().expect("header").event_id))
        .collect();
    let topics: Vec<&str> = [
        AnalyticsKind::Referral,
        AnalyticsKind::Appointment,
        AnalyticsKind::LabResult,
    ]
    .iter()
    .map(|&k| analytics.of(k))
    .collect();
    let published = read_committed(&topics, 3, 2_500).await?;
    let mut bands = Vec::new();
    for (_, value, _) in &published {
        if second_keys.contains(&analytics_header(value)?.event_key) {
            bands.push(age_band(value)?);
        }
    }
    assert_eq!(bands.len(), 500, "every event of the second run published");
    let mut twenty_wide = 0;
    for band in bands.iter().filter(|b| !b.is_empty() && !b.ends_with('+')) {
        let (low, high) = band
            .split_once('-')
            .and_then(|(l, h)| Some((l.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("age band {band:?} is not low-high"))?;
        assert_eq!(low % 20, 0, "band {band} is not a 20-year band");
        // The last band below the open top one may be cut short by it.
        if high - low + 1 == 20 {
            twenty_wide += 1;
        }
    }
    assert!(
        twenty_wide > 100,
        "{twenty_wide} of 500 events in full 20-year bands: {:?}",
        &bands[..10]
    );
    let after = read_committed(&[age_bands.as_str()], 1, 2).await?;
    assert_eq!(after.len(), 2, "the second run widened nothing itself");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analytics_wait_for_their_contract_and_flow_once_it_is_registered() -> anyhow::Result<()> {
    use lienthong_tests::deidentifier as deid;
    let _ = require_kafka();
    let registry = require_registry().await;
    let documents = topics_with_schemas(&registry).await?;
    let receipts = lienthong_tests::unique_topic("deid.receipt");
    create_topic(&kafka(), &receipts, 3).await?;
    let analytics = deid::analytics_topics().await?;
    let group = format!("deid-unregistered-{}", uuid::Uuid::new_v4().simple());
    let mut config = lienthong_deidentifier::DeidentifierConfig::new(
        deid::analytics_key_file().into(),
        &group,
        lienthong_kafka::topics::DocumentTopics::from_map(&documents),
        &receipts,
        analytics.clone(),
    );
    config.transactional_id = Some(format!("{group}-0"));
    config.age_bands_topic = deid::age_bands_topic_with_schema(&registry).await?;
    let inputs = config.input_topics();
    let events = lienthong_tests::keyed_events(5151, 30);
    publish_to(&registry, &documents, &events).await?;

    // The registry holds no analytics contract: nothing is framed under an id whose schema is
    // not the payload's, nothing is committed, and the service waits rather than stopping.
    let mut service = deid::RunningDeidentifier::spawn(config, &registry);
    tokio::time::sleep(Duration::from_secs(8)).await;
    service.ensure_running().await?;
    assert_eq!(deid::committed(&group, &inputs, 3)?, 0);

    // Registered, every event flows, framed with the registered schema.
    deid::register_analytics_schemas(&registry, &analytics).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while deid::committed(&group, &inputs, 3).unwrap_or(0) < events.len() as i64 {
        service.ensure_running().await?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every event was committed within 120 s of the registration"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    service.stop().await?;
    let topic = analytics.of(AnalyticsKind::Referral);
    let held = lienthong_registry::SchemaSet::built_in()
        .writer_id(
            &lienthong_registry::RegistryClient::new(&registry)?,
            topic,
            AnalyticsKind::Referral.message_name(),
        )
        .await?;
    let referrals = events
        .iter()
        .filter(|e| e.kind() == DocumentKind::Referral)
        .count();
    assert!(referrals > 0, "the fixtures hold referrals");
    let framed = read_committed(&[topic], 3, referrals).await?;
    assert_eq!(framed.len(), referrals);
    for (_, value, _) in framed {
        assert_eq!(lienthong_registry::frame::parse(&value)?.schema_id, held);
    }
    Ok(())
}
