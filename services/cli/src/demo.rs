//! `lienthong demo`: publish synthetic events with the idempotent producer and read every one
//! back from Kafka, checking content and per-key order. The first end-to-end check of a stack.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use lienthong_core::fixtures::Generator;
use lienthong_core::validation::{ValidationContext, has_errors};
use lienthong_core::{DocumentKind, PersonId};
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_registry::{RegistryArgs, WireCodec};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::keys::PseudonymKeyArgs;

/// Demo flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many events to publish (rotating referral, appointment, lab result).
    #[arg(long, default_value_t = 30)]
    count: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 2025)]
    seed: u64,
    /// How long to wait for the events to come back, in seconds.
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
    #[command(flatten)]
    key: PseudonymKeyArgs,
}

struct Sent {
    event_id: String,
    kind: DocumentKind,
}

pub async fn run(
    args: DemoArgs,
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
) -> anyhow::Result<ExitCode> {
    let keyer = args.key.load()?;
    kafka.probe().await?;
    let codec = WireCodec::new(registry)?;
    let producer = EventProducer::new(kafka, Duration::from_secs(30))?;
    let ctx = ValidationContext::now();
    let mut generator = Generator::new(args.seed ^ rand::random::<u64>(), ctx.now);

    let mut events = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let mut event = generator.any(i);
        let violations = event.validate(&ctx);
        if has_errors(&violations) {
            bail!(
                "generated event {i} is invalid: {}",
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let person = PersonId::parse(event.patient().map(|p| p.citizen_id.as_str()).unwrap_or(""))?;
        let key = keyer.key_for(&person);
        let header = event.header_mut();
        header.patient_key = key.value;
        header.patient_key_id = key.key_id;
        header.recorded_at = Some(prost_types_now());
        events.push(event);
    }

    let started = Instant::now();
    // Bounded concurrency: at most 64 sends waiting for their delivery report at once.
    let deliveries: Vec<_> = futures::stream::iter(events.iter().map(|event| {
        let producer = producer.clone();
        let codec = &codec;
        async move {
            let header = event.header().cloned().unwrap_or_default();
            let kind = event.kind();
            // Confluent framing: any registry-aware client in any language can decode it.
            let framed = codec.encode(kind, &event.encode_to_vec()).await?;
            let delivery = producer
                .send(
                    kind.topic(),
                    header.patient_key.as_bytes(),
                    &framed,
                    &[
                        ("lienthong-event-id", header.event_id.as_bytes()),
                        ("lienthong-message-type", kind.message_name().as_bytes()),
                    ],
                )
                .await?;
            anyhow::Ok((kind, delivery, header.event_id))
        }
    }))
    .buffered(64)
    .collect()
    .await;
    let mut sent: BTreeMap<(DocumentKind, i32, i64), Sent> = BTreeMap::new();
    for d in deliveries {
        let (kind, delivery, event_id) = d?;
        sent.insert(
            (kind, delivery.partition, delivery.offset),
            Sent { event_id, kind },
        );
    }
    let produce_ms = started.elapsed().as_millis();
    let per_kind = |k: DocumentKind| sent.values().filter(|s| s.kind == k).count();
    println!(
        "published {} events ({} referral, {} appointment, {} lab-result) with acks=all in {produce_ms} ms",
        sent.len(),
        per_kind(DocumentKind::Referral),
        per_kind(DocumentKind::Appointment),
        per_kind(DocumentKind::LabResult)
    );

    let consumed = read_back(kafka, &codec, &sent, Duration::from_secs(args.wait_secs)).await?;
    println!(
        "read back {consumed}/{} events from Kafka, decoded through the schema registry and matched by event id",
        sent.len()
    );
    if let Some(((kind, partition, offset), s)) = sent.iter().next() {
        println!(
            "sample: topic={} partition={partition} offset={offset} event_id={}",
            kind.topic(),
            s.event_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prost_types_now() -> prost_types::Timestamp {
    let now = time::OffsetDateTime::now_utc();
    prost_types::Timestamp {
        seconds: now.unix_timestamp(),
        nanos: now.nanosecond() as i32,
    }
}

/// Reads exactly the produced offsets back with a consumer assigned to them.
async fn read_back(
    kafka: &KafkaArgs,
    codec: &WireCodec,
    sent: &BTreeMap<(DocumentKind, i32, i64), Sent>,
    wait: Duration,
) -> anyhow::Result<usize> {
    let mut cfg = kafka.client_config()?;
    cfg.set(
        "group.id",
        format!("lienthong-demo-{}", uuid::Uuid::new_v4()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.partition.eof", "false");
    let consumer: StreamConsumer = cfg.create().context("cannot create the demo consumer")?;
    let mut starts: HashMap<(DocumentKind, i32), i64> = HashMap::new();
    for (kind, partition, offset) in sent.keys() {
        let e = starts.entry((*kind, *partition)).or_insert(*offset);
        *e = (*e).min(*offset);
    }
    let mut tpl = TopicPartitionList::new();
    for ((kind, partition), offset) in &starts {
        tpl.add_partition_offset(kind.topic(), *partition, Offset::Offset(*offset))?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + wait;
    let mut seen = 0usize;
    while seen < sent.len() {
        if Instant::now() > deadline {
            bail!(
                "only {seen} of {} events came back within {wait:?}; check the broker log",
                sent.len()
            );
        }
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        else {
            continue;
        };
        let msg = msg.context("consuming demo events")?;
        let Some(kind) = DocumentKind::from_topic(msg.topic()) else {
            continue;
        };
        let Some(expected) = sent.get(&(kind, msg.partition(), msg.offset())) else {
            continue;
        };
        let origin = format!("{}[{}]@{}", msg.topic(), msg.partition(), msg.offset());
        let event = codec
            .decode(msg.payload(), msg.topic(), msg.partition(), msg.offset())
            .await?
            .event(&origin)?;
        let got = event.header().map(|h| h.event_id.as_str()).unwrap_or("");
        if got != expected.event_id {
            bail!(
                "{}[{}]@{} holds event {got}, expected {}",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                expected.event_id
            );
        }
        seen += 1;
    }
    Ok(seen)
}
