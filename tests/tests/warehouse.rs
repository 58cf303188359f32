//! The warehouse loader end to end: real broker, registry and PostgreSQL.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use lienthong_core::fixtures::Generator;
use lienthong_core::{ClinicalEvent, document_id};
use lienthong_proto::v1 as pb;
use lienthong_tests::warehouse::{
    fresh_database, loader_config, publish_to, start_loader, topics_with_schemas, wait_for_count,
};
use lienthong_tests::{keyed_events, require_kafka, require_registry};
use lienthong_warehouse_loader::LoaderConfig;
use rdkafka::Message;

/// The next version of an event's document with `action`, with the deterministic event id.
fn next_version(e: &ClinicalEvent, action: pb::Action) -> ClinicalEvent {
    let mut next = e.clone();
    let kind = next.kind();
    let h = next.header_mut();
    h.document_version += 1;
    h.action = action as i32;
    h.event_id = document_id::event_id(kind, &h.document_id, h.document_version);
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_pseudonymized_with_versions_cancellations_and_views() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;
    let mut events = keyed_events(900, 30);
    let first_referral = events
        .iter()
        .find(|e| matches!(e, ClinicalEvent::Referral(_)))
        .cloned()
        .expect("a referral");
    let v2 = next_version(&first_referral, pb::Action::Updated);
    let v3 = next_version(&v2, pb::Action::Cancelled);
    // Out of order and duplicated: v3 before v2, the original twice.
    events.extend([v3.clone(), v2.clone(), first_referral.clone()]);
    publish_to(&registry, &topics, &events).await?;

    let config = loader_config(&dsn, &topics);
    let loader = start_loader(config, kafka, registry, 32).await?;
    let db = &loader.db;

    let doc = first_referral
        .header()
        .map(|h| h.document_id.clone())
        .unwrap_or_default();
    let row = db
        .query_one(
            "SELECT document_version, cancelled FROM referrals WHERE document_id = $1",
            &[&doc],
        )
        .await?;
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, bool>(1)),
        (3, true),
        "latest version wins, cancelled kept as cancelled"
    );
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM event_history WHERE document_id = $1",
            &[&doc],
        )
        .await?
        .get(0);
    assert_eq!(n, 3, "history keeps every version once");
    let current: i64 = db
        .query_one("SELECT (SELECT count(*) FROM referrals) + (SELECT count(*) FROM appointments) + (SELECT count(*) FROM lab_reports)", &[])
        .await?
        .get(0);
    assert_eq!(current, 30);
    let lines: i64 = db
        .query_one("SELECT count(*) FROM lab_result_lines", &[])
        .await?
        .get(0);
    assert!(lines >= 10, "lab lines loaded: {lines}");

    // Views on this known data set.
    let active_referrals: i64 = db
        .query_one("SELECT count(*) FROM referrals WHERE NOT cancelled", &[])
        .await?
        .get(0);
    let in_view: i64 = db
        .query_one(
            "SELECT coalesce(sum(referrals), 0)::bigint FROM v_referrals_by_province_month_reason",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(in_view, active_referrals);
    let reports: i64 = db
        .query_one(
            "SELECT coalesce(sum(reports), 0)::bigint FROM v_lab_tests_per_service_month",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(reports, 10);
    let provinces: i64 = db
        .query_one("SELECT count(*) FROM provinces", &[])
        .await?
        .get(0);
    assert_eq!(provinces, 34);

    // History is partitioned by month; every row sits in the partition of its month.
    let partitions: Vec<String> = db
        .query("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'event_history'::regclass", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !partitions.is_empty() && partitions.iter().all(|p| p.starts_with("event_history_")),
        "{partitions:?}"
    );
    let misplaced: i64 = db
        .query_one("SELECT count(*) FROM event_history WHERE event_month <> date_trunc('month', (coalesce(occurred_at, 'epoch') AT TIME ZONE 'UTC') + interval '7 hours')::date", &[])
        .await?
        .get(0);
    assert_eq!(misplaced, 0);
    // Free text stays out unless the loader is told otherwise.
    let notes: i64 = db
        .query_one("SELECT count(*) FROM restricted.referral_notes", &[])
        .await?
        .get(0);
    assert_eq!(notes, 0, "free text is excluded by default");

    // Privacy scan: no citizen ID, name or card number anywhere in any table.
    let mut secrets: HashSet<String> = HashSet::new();
    for e in &events {
        if let Some(p) = e.patient() {
            secrets.insert(p.citizen_id.clone());
            secrets.insert(p.full_name.clone());
            secrets.extend(p.insurance_cards.iter().map(|c| c.number.clone()));
        }
    }
    let tables: Vec<String> = db
        .query("SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg_temp%' AND table_type = 'BASE TABLE'", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 8, "{tables:?}");
    for table in &tables {
        for row in db
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await?
        {
            let text: String = row.get(0);
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{table} holds personal data {s:?}"
                );
            }
        }
    }
    loader.stop().await?;
    Ok(())
}

/// What the dead-letter tests start from: a fresh database, the document topics, a
/// dead-letter topic of the test's own and a loader configuration writing to it.
struct DeadLetterSetup {
    kafka: lienthong_kafka::KafkaArgs,
    registry: lienthong_registry::RegistryArgs,
    topics: std::collections::BTreeMap<lienthong_core::DocumentKind, String>,
    dlq: String,
    config: LoaderConfig,
}

/// What a loader made of events of which the first is poison.
struct DeadLettered {
    loader: lienthong_tests::warehouse::RunningLoader,
    /// Headers of the first dead letter.
    headers: std::collections::HashMap<String, String>,
    topics: std::collections::BTreeMap<lienthong_core::DocumentKind, String>,
}

impl DeadLettered {
    /// Rows of `event` in the history.
    async fn history_rows(&self, event: &ClinicalEvent) -> anyhow::Result<i64> {
        let id = event
            .header()
            .map(|h| h.event_id.clone())
            .unwrap_or_default();
        Ok(self
            .loader
            .db
            .query_one(
                "SELECT count(*) FROM event_history WHERE event_id = $1",
                &[&id],
            )
            .await?
            .get(0))
    }
}

impl DeadLetterSetup {
    /// Publishes `events` for one patient key made of `key_char`, starts the loader, waits
    /// for the history rows of all but the first, and reads the first dead letter.
    async fn load(
        self,
        events: &mut [ClinicalEvent],
        key_char: &str,
    ) -> anyhow::Result<DeadLettered> {
        for e in events.iter_mut() {
            e.header_mut().patient_key = key_char.repeat(64);
            e.header_mut().patient_key_id = "k".into();
        }
        publish_to(&self.registry, &self.topics, events).await?;
        let loaded = i64::try_from(events.len())? - 1;
        let loader = start_loader(self.config, self.kafka.clone(), self.registry, loaded).await?;
        let headers =
            lienthong_tests::header_map(&lienthong_tests::read_at(&self.dlq, 0, 0).await?);
        Ok(DeadLettered {
            loader,
            headers,
            topics: self.topics,
        })
    }

    async fn new() -> anyhow::Result<Self> {
        let kafka = require_kafka();
        let registry = require_registry().await;
        let dsn = fresh_database().await?;
        let topics = topics_with_schemas(&registry).await?;
        let dlq = lienthong_tests::unique_topic("wh.dlq");
        lienthong_tests::create_topic(&kafka, &dlq, 1).await?;
        let mut config = loader_config(&dsn, &topics);
        config.dlq_topic = dlq.clone();
        Ok(Self {
            kafka,
            registry,
            topics,
            dlq,
            config,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_goes_to_the_dlq_and_loading_continues() -> anyhow::Result<()> {
    let DeadLetterSetup {
        kafka,
        registry,
        topics,
        dlq,
        config,
    } = DeadLetterSetup::new().await?;
    let referral_topic = topics[&lienthong_core::DocumentKind::Referral].clone();
    let producer = lienthong_kafka::EventProducer::new(&kafka, Duration::from_secs(10))?;
    let bad = producer
        .send(&referral_topic, b"k", b"\x0a\x02not framed", &[])
        .await?;
    let mut g = Generator::new(901, time::OffsetDateTime::now_utc());
    let mut good = ClinicalEvent::Referral(g.referral());
    good.header_mut().patient_key = "a".repeat(64);
    good.header_mut().patient_key_id = "k".into();
    publish_to(&registry, &topics, std::slice::from_ref(&good)).await?;

    let group = config.group.clone();
    let loader = start_loader(config, kafka.clone(), registry, 1).await?;

    let msg = lienthong_tests::read_at(&dlq, 0, 0).await?;
    let headers = lienthong_tests::header_map(&msg);
    assert_eq!(headers.get("lienthong-origin-topic"), Some(&referral_topic));
    assert_eq!(
        headers.get("lienthong-origin-partition"),
        Some(&bad.partition.to_string())
    );
    assert_eq!(
        headers.get("lienthong-origin-offset"),
        Some(&bad.offset.to_string())
    );
    assert_eq!(headers.get("lienthong-consumer-group"), Some(&group));
    assert!(
        headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains("not Confluent-framed")),
        "{headers:?}"
    );
    assert_eq!(msg.payload(), Some(&b"\x0a\x02not framed"[..]));
    loader.stop().await?;
    Ok(())
}

/// PostgreSQL text cannot hold a NUL character: an event carrying one (published before
/// validation refused it) failed its whole batch on every retry, so nothing after it was ever
/// loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_the_database_cannot_hold_goes_to_the_dlq_and_loading_continues()
-> anyhow::Result<()> {
    let setup = DeadLetterSetup::new().await?;
    let mut g = Generator::new(902, time::OffsetDateTime::now_utc());
    let mut lab = g.lab_result();
    if let Some(r) = lab.report.as_mut() {
        r.lines[0].value_text = "5.4\0".into();
    }
    let mut events = vec![
        ClinicalEvent::LabResult(lab),
        ClinicalEvent::Referral(g.referral()),
        ClinicalEvent::Appointment(g.appointment()),
    ];
    // The two good events are loaded: the one with the NUL held nothing up.
    let done = setup.load(&mut events, "b").await?;
    assert_eq!(
        done.headers.get("lienthong-origin-topic"),
        Some(&done.topics[&lienthong_core::DocumentKind::LabResult])
    );
    assert!(
        done.headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains("value_text") && e.contains("NUL character"))
            && done.headers.get("lienthong-error-code").map(String::as_str) == Some("invalid"),
        "{:?}",
        done.headers
    );
    assert_eq!(
        done.history_rows(&events[0]).await?,
        0,
        "the refused event changed nothing"
    );
    done.loader.stop().await?;
    Ok(())
}

/// An event at the edge of the calendar (the last second of year 9999, valid for protobuf but
/// without a Vietnam date) published straight to Kafka is dead-lettered by validation; it
/// neither stops the loader nor lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_at_the_end_of_the_calendar_goes_to_the_dlq_and_loading_continues()
-> anyhow::Result<()> {
    let setup = DeadLetterSetup::new().await?;
    let mut g = Generator::new(903, time::OffsetDateTime::now_utc());
    let mut events = vec![
        ClinicalEvent::Referral(g.referral()),
        ClinicalEvent::Referral(g.referral()),
        ClinicalEvent::Appointment(g.appointment()),
    ];
    events[0].header_mut().occurred_at = Some(prost_types::Timestamp {
        seconds: 253_402_300_799,
        nanos: 0,
    });
    let done = setup.load(&mut events, "c").await?;
    assert!(
        done.headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains("header.occurred_at") && e.contains("future")),
        "{:?}",
        done.headers
    );
    assert_eq!(
        done.history_rows(&events[0]).await?,
        0,
        "the refused event changed nothing"
    );
    assert_eq!(
        done.history_rows(&events[1]).await?,
        1,
        "the next event was loaded"
    );
    done.loader.stop().await?;
    Ok(())
}

/// A message whose rows PostgreSQL itself refuses (here a constraint the operator added; in
/// life a value no validation rule foresaw) fails its whole batch on every try. The loader
/// writes the batch in halves down to that one message, dead-letters it with the database's
/// reason and loads everything else, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_database_refuses_is_isolated_from_its_batch_and_dead_lettered()
-> anyhow::Result<()> {
    let setup = DeadLetterSetup::new().await?;
    let mut g = Generator::new(904, time::OffsetDateTime::now_utc());
    let mut events: Vec<ClinicalEvent> = (0..7)
        .map(|_| ClinicalEvent::Referral(g.referral()))
        .collect();
    // The poison goes first (the setup reads the first dead letter); the batch holds all seven.
    let poison = events[0].header().unwrap().document_id.clone();
    let mut db = lienthong_tests::warehouse::connect(&setup.config.pg.dsn).await?;
    lienthong_warehouse_loader::migrations::migrate(&mut db).await?;
    db.batch_execute(&format!(
        "ALTER TABLE referrals ADD CONSTRAINT not_this_one CHECK (document_id <> '{poison}')"
    ))
    .await?;
    let done = setup.load(&mut events, "d").await?;
    assert_eq!(
        done.headers.get("lienthong-error-code").map(String::as_str),
        Some("refused")
    );
    assert!(
        done.headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains("warehouse refuses") && e.contains("not_this_one")),
        "{:?}",
        done.headers
    );
    assert_eq!(
        done.history_rows(&events[0]).await?,
        0,
        "the refused event changed nothing"
    );
    for e in &events[1..] {
        assert_eq!(
            done.history_rows(e).await?,
            1,
            "every other event was loaded"
        );
    }
    done.loader.stop().await?;
    Ok(())
}

/// The same event (so the same document version) with other content is a conflict, whether it
/// meets the stored event in one batch or a later one: dead-lettered, the first content kept.
/// A copy stamped at another time by the gateway is the same content: skipped, no dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_version_with_other_content_is_dead_lettered_as_a_conflict() -> anyhow::Result<()>
{
    let setup = DeadLetterSetup::new().await?;
    let dlq = setup.dlq.clone();
    let (registry, topics) = (setup.registry.clone(), setup.topics.clone());
    let mut g = Generator::new(905, time::OffsetDateTime::now_utc());
    let first = ClinicalEvent::Referral(g.referral());
    let with_signs = |signs: &str| {
        let mut e = first.clone();
        if let ClinicalEvent::Referral(r) = &mut e
            && let Some(s) = r.slip.as_mut()
        {
            s.clinical_signs = signs.into();
        }
        e
    };
    // In one batch: the second is the conflict (the setup reads the first dead letter).
    let mut events = vec![
        with_signs("Sốt cao"),
        with_signs("Khác nội dung"),
        ClinicalEvent::Appointment(g.appointment()),
    ];
    let done = setup.load(&mut events, "e").await?;
    let doc = events[0].header().unwrap().document_id.clone();
    let id = events[0].header().unwrap().event_id.clone();
    assert!(
        done.headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains(&format!("conflict: event {id}")))
            && done.headers.get("lienthong-error-code").map(String::as_str) == Some("conflict"),
        "{:?}",
        done.headers
    );
    // In a later batch: a copy (another recorded_at) is skipped, other content dead-lettered.
    let mut copy = events[0].clone();
    copy.header_mut().recorded_at = Some(prost_types::Timestamp {
        seconds: 1_790_000_000,
        nanos: 0,
    });
    let mut later = events[1].clone();
    if let ClinicalEvent::Referral(r) = &mut later
        && let Some(s) = r.slip.as_mut()
    {
        s.clinical_signs = "Nội dung thứ ba".into();
    }
    publish_to(&registry, &topics, &[copy, later]).await?;
    let second = lienthong_tests::header_map(&lienthong_tests::read_at(&dlq, 0, 1).await?);
    assert!(
        second
            .get("lienthong-error")
            .is_some_and(|e| e.contains("conflict") && e.contains("stored with other content")),
        "{second:?}"
    );
    // Other content whose occurrence lies in another month (so another history partition).
    let mut moved = events[0].clone();
    if let Some(at) = moved.header_mut().occurred_at.as_mut() {
        at.seconds -= 40 * 86_400;
    }
    publish_to(&registry, &topics, &[moved]).await?;
    let third = lienthong_tests::header_map(&lienthong_tests::read_at(&dlq, 0, 2).await?);
    assert!(
        third
            .get("lienthong-error")
            .is_some_and(|e| e.contains(&format!("conflict: event {id}"))),
        "{third:?}"
    );
    let signs: String = done
        .loader
        .db
        .query_one(
            "SELECT count(*)::text FROM event_history WHERE document_id = $1",
            &[&doc],
        )
        .await?
        .get(0);
    assert_eq!(signs, "1", "one history row: the first content");
    done.loader.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_complete_referrals_in_the_completion_view() -> anyhow::Result<()> {
    use prost::Message as _;
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;
    let receipt_topic = lienthong_tests::unique_topic("wh.receipt");
    lienthong_tests::create_topic(&kafka, &receipt_topic, 1).await?;
    lienthong_registry::SchemaSet::built_in()
        .with_receipt_topic(&receipt_topic)
        .register(&lienthong_registry::RegistryClient::new(&registry)?)
        .await?;
    let referrals: Vec<ClinicalEvent> = keyed_events(950, 9)
        .into_iter()
        .filter(|e| matches!(e, ClinicalEvent::Referral(_)))
        .collect();
    assert_eq!(referrals.len(), 3);
    publish_to(&registry, &topics, &referrals).await?;
    let h = referrals[0].header().cloned().unwrap_or_default();
    let receiving = if let ClinicalEvent::Referral(r) = &referrals[0] {
        r.slip
            .clone()
            .unwrap_or_default()
            .receiving
            .unwrap_or_default()
            .code
    } else {
        String::new()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let receipt = pb::ReferralReceiptEvent {
        header: Some(pb::EventHeader {
            event_id: document_id::event_id(
                lienthong_core::DocumentKind::Referral,
                &format!("receipt/{}", h.document_id),
                1,
            ),
            document_id: format!("receipt/{}", h.document_id),
            document_version: 1,
            action: pb::Action::Created as i32,
            source_facility_code: receiving.clone(),
            patient_key: h.patient_key.clone(),
            patient_key_id: h.patient_key_id.clone(),
            ..Default::default()
        }),
        referral_document_id: h.document_id.clone(),
        received_by: Some(pb::FacilityRef {
            code: receiving,
            name: String::new(),
        }),
        received_at: Some(prost_types::Timestamp {
            seconds: now,
            nanos: 0,
        }),
    };
    let codec = lienthong_registry::WireCodec::new(&registry)?;
    let framed = codec
        .encode_message(
            &receipt_topic,
            "lienthong.v1.ReferralReceiptEvent",
            &receipt.encode_to_vec(),
        )
        .await?;
    lienthong_kafka::EventProducer::new(&kafka, Duration::from_secs(10))?
        .send(&receipt_topic, h.patient_key.as_bytes(), &framed, &[])
        .await?;

    let mut all_topics: Vec<String> = topics.values().cloned().collect();
    all_topics.push(receipt_topic.clone());
    let mut config = LoaderConfig::new(
        &dsn,
        &format!("wh-test-{}", uuid::Uuid::new_v4().simple()),
        all_topics,
    );
    config.receipt_topic = receipt_topic;
    let loader = start_loader(config, kafka, registry, 4).await?;
    let db = &loader.db;
    let row = db
        .query_one(
            "SELECT sum(referrals)::bigint, sum(received)::bigint FROM v_referral_completion",
            &[],
        )
        .await?;
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 1));
    loader.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_text_goes_to_the_restricted_schema_only_when_switched_on() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;
    let events = keyed_events(910, 12);
    publish_to(&registry, &topics, &events).await?;
    let mut config = loader_config(&dsn, &topics);
    config.free_text = true;
    let loader = start_loader(config, kafka, registry, 12).await?;
    let db = &loader.db;
    let mut referrals = 0;
    for e in &events {
        let ClinicalEvent::Referral(r) = e else {
            continue;
        };
        referrals += 1;
        let slip = r.slip.as_ref().expect("slip");
        let doc = e
            .header()
            .map(|h| h.document_id.clone())
            .unwrap_or_default();
        let row = db
            .query_one(
                "SELECT course_of_illness, clinical_signs FROM restricted.referral_notes WHERE document_id = $1",
                &[&doc],
            )
            .await?;
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        assert_eq!(
            row.get::<_, Option<String>>(0),
            non_empty(&slip.course_of_illness)
        );
        assert_eq!(
            row.get::<_, Option<String>>(1),
            non_empty(&slip.clinical_signs)
        );
    }
    assert!(referrals > 0);
    // The analytic tables still hold no narrative.
    let leaked: i64 = db
        .query_one(
            "SELECT count(*) FROM referrals r JOIN restricted.referral_notes n USING (document_id) \
             WHERE n.course_of_illness IS NOT NULL AND r::text LIKE '%' || n.course_of_illness || '%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(leaked, 0);
    loader.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_is_loaded_from_the_beginning_whatever_kafka_remembers() -> anyhow::Result<()>
{
    // PostgreSQL is the truth: the same consumer group, pointed at an empty (new or restored)
    // warehouse, must load everything again, though Kafka holds its advisory commits.
    let kafka = require_kafka();
    let registry = require_registry().await;
    let topics = topics_with_schemas(&registry).await?;
    publish_to(&registry, &topics, &keyed_events(920, 40)).await?;
    let group = format!("wh-test-{}", uuid::Uuid::new_v4().simple());
    for round in 0..2 {
        let dsn = fresh_database().await?;
        let loader = start_loader(
            LoaderConfig::new(&dsn, &group, topics.values().cloned().collect()),
            kafka.clone(),
            registry.clone(),
            40,
        )
        .await
        .map_err(|e| anyhow::anyhow!("round {round}: {e}"))?;
        // Let the advisory commit reach Kafka before stopping.
        tokio::time::sleep(Duration::from_secs(1)).await;
        loader.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_batches_update_stored_documents_and_republished_events_are_not_doubled()
-> anyhow::Result<()> {
    // The first batch copies new documents straight into the tables; later batches meet
    // them stored: re-published events must not double the history, newer versions must
    // replace the current state, and a replaced lab report must carry only its new lines.
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;
    let first = keyed_events(930, 30);
    publish_to(&registry, &topics, &first).await?;
    let loader = start_loader(loader_config(&dsn, &topics), kafka, registry.clone(), 30).await?;
    let db = &loader.db;

    let referral = first
        .iter()
        .find(|e| matches!(e, ClinicalEvent::Referral(_)))
        .expect("a referral");
    let lab = first
        .iter()
        .find(|e| matches!(e, ClinicalEvent::LabResult(r) if r.report.as_ref().is_some_and(|r| r.lines.len() > 1)))
        .expect("a lab report with several lines");
    let referral_v2 = next_version(referral, pb::Action::Updated);
    let mut lab_v2 = next_version(lab, pb::Action::Updated);
    if let ClinicalEvent::LabResult(r) = &mut lab_v2 {
        r.report.as_mut().expect("report").lines.truncate(1);
    }
    let mut second = first.clone();
    second.extend([referral_v2.clone(), lab_v2.clone()]);
    publish_to(&registry, &topics, &second).await?;
    // Every message of both rounds consumed (fresh topics: offsets count messages).
    wait_for_count(
        db,
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM loader_offsets",
        (first.len() + second.len()) as i64,
        Duration::from_secs(60),
    )
    .await?;
    let history: i64 = db
        .query_one("SELECT count(*) FROM event_history", &[])
        .await?
        .get(0);
    assert_eq!(
        history, 32,
        "30 events once each, plus the two new versions"
    );
    let distinct: i64 = db
        .query_one("SELECT count(DISTINCT event_id) FROM event_history", &[])
        .await?
        .get(0);
    assert_eq!(distinct, 32);
    let id = |e: &ClinicalEvent| e.header().expect("header").document_id.clone();
    let version: i64 = db
        .query_one(
            "SELECT document_version FROM referrals WHERE document_id = $1",
            &[&id(referral)],
        )
        .await?
        .get(0);
    assert_eq!(version, 2);
    let (lab_version, line_count): (i64, i32) = db
        .query_one(
            "SELECT document_version, line_count FROM lab_reports WHERE document_id = $1",
            &[&id(lab)],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))?;
    assert_eq!((lab_version, line_count), (2, 1));
    let lines: i64 = db
        .query_one(
            "SELECT count(*) FROM lab_result_lines WHERE document_id = $1",
            &[&id(lab)],
        )
        .await?
        .get(0);
    assert_eq!(lines, 1, "the replaced report's old lines are gone");
    loader.stop().await?;
    Ok(())
}
