//! The warehouse loader end to end: real broker, registry and PostgreSQL. It loads the
//! analytics topics; the events here are de-identified by the service's own transformation
//! (`lienthong_tests::warehouse::test_deidentifier`) before they are published.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use lienthong_core::fixtures::Generator;
use lienthong_core::{ClinicalEvent, document_id};
use lienthong_deidentifier::{AnalyticsEvent, AnalyticsKind, AnalyticsTopics};
use lienthong_proto::v1 as pb;
use lienthong_sink::AnalyticsMessage;
use lienthong_tests::deidentifier::analytics_topics_with_schemas as topics_with_schemas;
use lienthong_tests::warehouse::{
    analytics_keys, event_key, fresh_database, loader_config, publish_analytics as publish_to,
    publish_analytics_events, rewritten, start_loader, test_deidentifier, wait_for_count,
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

    let (_, doc) = analytics_keys(&first_referral);
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
    // Privacy scan: no identifier of the fixtures anywhere in any table: citizen IDs, names,
    // card numbers, addresses, document ids (slip numbers, HIS episode keys), event ids and
    // the operational patient keys.
    let mut secrets: HashSet<String> = HashSet::new();
    for e in &events {
        if let Some(p) = e.patient() {
            secrets.insert(p.citizen_id.clone());
            secrets.insert(p.full_name.clone());
            secrets.insert(p.address.clone());
            secrets.extend(p.insurance_cards.iter().map(|c| c.number.clone()));
        }
        if let Some(h) = e.header() {
            secrets.insert(h.document_id.clone());
            secrets.insert(h.event_id.clone());
            secrets.insert(h.patient_key.clone());
        }
    }
    secrets.retain(|s| s.len() >= 6);
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

/// What the dead-letter tests start from: a fresh database, the analytics topics, a
/// dead-letter topic of the test's own and a loader configuration writing to it.
struct DeadLetterSetup {
    kafka: lienthong_kafka::KafkaArgs,
    registry: lienthong_registry::RegistryArgs,
    topics: AnalyticsTopics,
    dlq: String,
    config: LoaderConfig,
}

/// What a loader made of events of which the first is poison.
struct DeadLettered {
    loader: lienthong_tests::warehouse::RunningLoader,
    /// Headers of the first dead letter.
    headers: std::collections::HashMap<String, String>,
    topics: AnalyticsTopics,
}

impl DeadLettered {
    /// Rows of `event` in the history.
    async fn history_rows(&self, event: &AnalyticsEvent) -> anyhow::Result<i64> {
        let id = event_key(event);
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
    /// Publishes the analytics `events`, starts the loader, waits for the history rows of all
    /// but the first, and reads the first dead letter.
    async fn load(self, events: &[AnalyticsEvent]) -> anyhow::Result<DeadLettered> {
        self.load_refusing(events, 1).await
    }

    /// As `load`, with `refused` of the events dead-lettered.
    async fn load_refusing(
        self,
        events: &[AnalyticsEvent],
        refused: usize,
    ) -> anyhow::Result<DeadLettered> {
        publish_analytics_events(&self.registry, &self.topics, events).await?;
        let loaded = i64::try_from(events.len() - refused)?;
        let loader = start_loader(self.config, self.kafka.clone(), self.registry, loaded).await?;
        let headers =
            lienthong_tests::header_map(&lienthong_tests::read_at(&self.dlq, 0, 0).await?);
        Ok(DeadLettered {
            loader,
            headers,
            topics: self.topics,
        })
    }

    /// Sends `payloads` as they are, unframed, to the referral topic under one key (so they
    /// keep their order); what Kafka acknowledged for each.
    async fn send_raw(
        &self,
        payloads: &[Vec<u8>],
    ) -> anyhow::Result<Vec<lienthong_kafka::Delivery>> {
        let topic = self.topics.of(AnalyticsKind::Referral);
        let producer = lienthong_kafka::EventProducer::new(&self.kafka, Duration::from_secs(10))?;
        let mut sent = Vec::with_capacity(payloads.len());
        for payload in payloads {
            sent.push(producer.send(topic, b"one key", payload, &[]).await?);
        }
        Ok(sent)
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
    let setup = DeadLetterSetup::new().await?;
    let referral_topic = setup.topics.of(AnalyticsKind::Referral).to_owned();
    let bad = setup.send_raw(&[b"\x0a\x02not framed".to_vec()]).await?[0];
    let mut g = Generator::new(901, time::OffsetDateTime::now_utc());
    let good = ClinicalEvent::Referral(g.referral());
    publish_to(&setup.registry, &setup.topics, std::slice::from_ref(&good)).await?;

    let group = setup.config.group.clone();
    let loader = start_loader(setup.config, setup.kafka, setup.registry, 1).await?;

    let msg = lienthong_tests::read_at(&setup.dlq, 0, 0).await?;
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

/// A flood of poison (here sixty undecodable messages before one good event) is dead-lettered
/// whole, in the order it was consumed, and the good event behind it is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_poison_is_dead_lettered_in_order_and_loading_continues() -> anyhow::Result<()> {
    let setup = DeadLetterSetup::new().await?;
    let payloads: Vec<Vec<u8>> = (0..60)
        .map(|i| format!("poison {i}").into_bytes())
        .collect();
    let poison = setup.send_raw(&payloads).await?;
    let mut g = Generator::new(902, time::OffsetDateTime::now_utc());
    let good = ClinicalEvent::Referral(g.referral());
    publish_to(&setup.registry, &setup.topics, std::slice::from_ref(&good)).await?;

    let loader = start_loader(setup.config, setup.kafka, setup.registry, 1).await?;
    let letters = lienthong_tests::read_from(&setup.dlq, 0, 0, poison.len()).await?;
    for (i, (letter, sent)) in letters.iter().zip(&poison).enumerate() {
        let headers = lienthong_tests::header_map(letter);
        assert_eq!(
            headers.get("lienthong-origin-offset"),
            Some(&sent.offset.to_string()),
            "dead letter {i}"
        );
        assert_eq!(
            headers.get("lienthong-origin-partition"),
            Some(&sent.partition.to_string())
        );
        assert_eq!(letter.payload(), Some(format!("poison {i}").as_bytes()));
    }
    loader.stop().await?;
    Ok(())
}

/// The analytics events of `events`, as the de-identification service makes them.
fn deidentified(events: &[ClinicalEvent]) -> Vec<AnalyticsEvent> {
    events
        .iter()
        .map(|e| test_deidentifier().event(e))
        .collect()
}

/// The document key of an analytics event (its `document_id` in the warehouse).
fn document_key(event: &AnalyticsEvent) -> String {
    AnalyticsMessage::decode(event.kind.message_name(), &event.payload)
        .and_then(Result::ok)
        .and_then(|m| m.header().map(|h| h.document_key.clone()))
        .unwrap_or_default()
}

/// PostgreSQL text cannot hold a NUL character: an analytics event carrying one would fail its
/// whole batch on every retry, so nothing after it would ever be loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_the_database_cannot_hold_goes_to_the_dlq_and_loading_continues()
-> anyhow::Result<()> {
    let setup = DeadLetterSetup::new().await?;
    let mut g = Generator::new(902, time::OffsetDateTime::now_utc());
    let mut events = deidentified(&[
        ClinicalEvent::LabResult(g.lab_result()),
        ClinicalEvent::Referral(g.referral()),
        ClinicalEvent::Appointment(g.appointment()),
    ]);
    events[0] = rewritten(&events[0], |m| {
        if let AnalyticsMessage::LabResult(l) = m {
            l.lines[0].indicator_code = "HGB\0".into();
        }
    });
    // The two good events are loaded: the one with the NUL held nothing up.
    let done = setup.load(&events).await?;
    assert_eq!(
        done.headers
            .get("lienthong-origin-topic")
            .map(String::as_str),
        Some(done.topics.of(AnalyticsKind::LabResult))
    );
    assert!(
        done.headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains("indicator_code") && e.contains("NUL character"))
            && done.headers.get("lienthong-error-code").map(String::as_str) == Some("unfit"),
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

/// A day that is no day (what only a producer other than the de-identification service could
/// write) is dead-lettered with the field named; it neither stops the loader nor lands. An
/// event at the edge of the calendar, which the service turns into an unknown day, is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_that_is_no_day_goes_to_the_dlq_and_loading_continues() -> anyhow::Result<()> {
    let setup = DeadLetterSetup::new().await?;
    let mut g = Generator::new(903, time::OffsetDateTime::now_utc());
    let mut edge = ClinicalEvent::Referral(g.referral());
    edge.header_mut().occurred_at = Some(prost_types::Timestamp {
        seconds: 253_402_300_799,
        nanos: 0,
    });
    let mut events = deidentified(&[
        ClinicalEvent::Referral(g.referral()),
        edge,
        ClinicalEvent::Appointment(g.appointment()),
    ]);
    events[0] = rewritten(&events[0], |m| {
        m.header_mut().occurred_on = "99999-12-31".into();
    });
    let done = setup.load(&events).await?;
    assert!(
        done.headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains("occurred_on \"99999-12-31\" is not a day")),
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
        "the event at the calendar's edge was loaded"
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
    let events = deidentified(
        &(0..7)
            .map(|_| ClinicalEvent::Referral(g.referral()))
            .collect::<Vec<_>>(),
    );
    // The poison goes first (the setup reads the first dead letter); the batch holds all seven.
    let poison = document_key(&events[0]);
    let mut db = lienthong_tests::warehouse::connect(&setup.config.pg.dsn).await?;
    lienthong_warehouse_loader::migrations::migrate(&mut db).await?;
    db.batch_execute(&format!(
        "ALTER TABLE referrals ADD CONSTRAINT not_this_one CHECK (document_id <> '{poison}')"
    ))
    .await?;
    let done = setup.load(&events).await?;
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
    let first = test_deidentifier().event(&ClinicalEvent::Referral(g.referral()));
    let with_icd10 = |code: &str| {
        rewritten(&first, |m| {
            if let AnalyticsMessage::Referral(r) = m {
                r.main_icd10 = code.into();
            }
        })
    };
    // In one batch: the second and the third are conflicts, both dead-lettered (the setup
    // reads the first dead letter).
    let events = vec![
        with_icd10("J18.9"),
        with_icd10("J15.0"),
        test_deidentifier().event(&ClinicalEvent::Appointment(g.appointment())),
        with_icd10("J20.0"),
    ];
    let done = setup.load_refusing(&events, 2).await?;
    let doc = document_key(&events[0]);
    let id = event_key(&events[0]);
    assert!(
        done.headers
            .get("lienthong-error")
            .is_some_and(|e| e.contains(&format!("conflict: event {id}")))
            && done.headers.get("lienthong-error-code").map(String::as_str) == Some("conflict"),
        "{:?}",
        done.headers
    );
    let also = lienthong_tests::header_map(&lienthong_tests::read_at(&dlq, 0, 1).await?);
    assert!(
        also.get("lienthong-error")
            .is_some_and(|e| e.contains(&format!("conflict: event {id}"))),
        "{also:?}"
    );
    // In a later batch: a copy (recorded another day, under a wider age band) is skipped,
    // other content dead-lettered.
    let copy = rewritten(&events[0], |m| {
        m.header_mut().recorded_on = "2030-01-01".into();
        if let AnalyticsMessage::Referral(r) = m
            && let Some(p) = r.patient.as_mut()
        {
            p.age_band = "20-39".into();
        }
    });
    let later = with_icd10("A09");
    publish_analytics_events(&registry, &topics, &[copy, later]).await?;
    let second = lienthong_tests::header_map(&lienthong_tests::read_at(&dlq, 0, 2).await?);
    assert!(
        second
            .get("lienthong-error")
            .is_some_and(|e| e.contains("conflict") && e.contains("stored with other content")),
        "{second:?}"
    );
    // Other content whose occurrence lies in another month (so another history partition).
    let moved = rewritten(&events[0], |m| {
        m.header_mut().occurred_on = "2020-01-15".into();
    });
    publish_analytics_events(&registry, &topics, &[moved]).await?;
    let third = lienthong_tests::header_map(&lienthong_tests::read_at(&dlq, 0, 3).await?);
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
    let kafka = require_kafka();
    let registry = require_registry().await;
    let dsn = fresh_database().await?;
    let topics = topics_with_schemas(&registry).await?;
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
    publish_analytics_events(&registry, &topics, &[test_deidentifier().receipt(&receipt)]).await?;
    let config = loader_config(&dsn, &topics);
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
            LoaderConfig {
                group: group.clone(),
                ..loader_config(&dsn, &topics)
            },
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
    let id = |e: &ClinicalEvent| analytics_keys(e).1;
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

/// Replicas starting together against a new database: every one migrates and grants without
/// error (the migrations' lock covers the grants too, which PostgreSQL refuses to run at once
/// on one object), and the migrations are applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_preparing_a_new_database_together_all_succeed() -> anyhow::Result<()> {
    for _ in 0..3 {
        let dsn = fresh_database().await?;
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(lienthong_tests::warehouse::connect(&dsn).await?);
        }
        let prepared = futures::future::join_all(clients.iter_mut().map(|c| {
            lienthong_warehouse_loader::migrations::prepare(
                c,
                "lienthong_analyst",
                "lienthong_privacy",
            )
        }))
        .await;
        let mut applied = Vec::new();
        for p in prepared {
            applied.extend(p.map_err(|e| {
                anyhow::anyhow!("{}", lienthong_warehouse_loader::postgres::reason(&e))
            })?);
        }
        applied.sort_unstable();
        let once: Vec<i32> = (1..=applied.len() as i32).collect();
        assert_eq!(
            applied, once,
            "each migration applied by exactly one replica"
        );
    }
    Ok(())
}
