//! `lienthong dlq list|show|replay`: inspect dead letters and re-publish them after a fix.

use crate::table::{Align, Table};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use lienthong_kafka::{EventProducer, KafkaArgs, dlq};
use lienthong_proto::json;
use lienthong_registry::{RegistryArgs, WireCodec};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: where it is, where it came from, who gave up and why.
    List(Selection),
    /// One dead letter in full, decoded through the registry when possible.
    Show(Selection),
    /// Re-publish dead letters to their origin topic (after the cause is fixed).
    Replay(Selection),
}

/// Which dead letters.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Dead-letter topic.
    #[arg(long, env = "LIENTHONG_DLQ_TOPIC", default_value = "lienthong.dlq.v1")]
    topic: String,
    /// Only this partition of the dead-letter topic.
    #[arg(long)]
    partition: Option<i32>,
    /// Only this offset (with --partition).
    #[arg(long, requires = "partition")]
    offset: Option<i64>,
    /// Only dead letters of this consumer group.
    #[arg(long)]
    group: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    max: usize,
}

fn header(m: &OwnedMessage, name: &str) -> String {
    m.headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .unwrap_or_default()
}

/// Reads the selected dead letters (up to the topic's end at the time of the call).
async fn read(kafka: &KafkaArgs, sel: &Selection) -> anyhow::Result<Vec<OwnedMessage>> {
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", "lienthong-dlq-tool")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(&sel.topic), kafka.timeout())?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == sel.topic && !t.partitions().is_empty())
        .ok_or_else(|| anyhow::anyhow!("topic {} does not exist", sel.topic))?;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in topic
        .partitions()
        .iter()
        .filter(|p| sel.partition.is_none_or(|x| x == p.id()))
    {
        let (low, high) = consumer.fetch_watermarks(&sel.topic, p.id(), kafka.timeout())?;
        let start = sel.offset.unwrap_or(low).max(low);
        if start < high {
            ends.insert(
                p.id(),
                if sel.offset.is_some() {
                    start + 1
                } else {
                    high
                },
            );
            tpl.add_partition_offset(&sel.topic, p.id(), Offset::Offset(start))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut remaining = ends.clone();
    while !remaining.is_empty() && out.len() < sel.max {
        let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .context("dead-letter topic did not answer in 10 s")??;
        let (p, o) = (m.partition(), m.offset());
        if let Some(end) = remaining.get(&p).copied() {
            if o + 1 >= end {
                remaining.remove(&p);
            }
            if o < end
                && sel
                    .group
                    .as_deref()
                    .is_none_or(|g| header(&m.detach(), dlq::CONSUMER_GROUP) == g)
            {
                out.push(m.detach());
            }
        }
    }
    Ok(out)
}

/// When one dead letter was asked for by its offset and is not there: says so, and the exit
/// code (a script must not take silence for success).
fn missing(sel: &Selection, letters: &[OwnedMessage]) -> Option<ExitCode> {
    let (Some(partition), Some(offset)) = (sel.partition, sel.offset) else {
        return None;
    };
    if !letters.is_empty() {
        return None;
    }
    let group = sel
        .group
        .as_deref()
        .map(|g| format!(" of group {g}"))
        .unwrap_or_default();
    eprintln!(
        "error: no dead letter{group} at {}[{partition}]@{offset}; `lienthong dlq list --topic {}` shows the ones there are",
        sel.topic, sel.topic
    );
    Some(crate::exit::code(crate::exit::REFUSED))
}

pub async fn run(
    cmd: DlqCommand,
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
) -> anyhow::Result<ExitCode> {
    kafka.probe().await?;
    match cmd {
        DlqCommand::List(sel) => {
            let letters = read(kafka, &sel).await?;
            let mut table = Table::new(&[
                ("DLQ P@OFFSET", Align::Left),
                ("ORIGIN", Align::Left),
                ("GROUP", Align::Left),
                ("REASON", Align::Left),
                ("ERROR", Align::Left),
            ]);
            for m in &letters {
                let origin = format!(
                    "{}[{}]@{}",
                    header(m, dlq::ORIGIN_TOPIC),
                    header(m, dlq::ORIGIN_PARTITION),
                    header(m, dlq::ORIGIN_OFFSET)
                );
                let error: String = header(m, dlq::ERROR).chars().take(120).collect();
                table.row([
                    format!("{}@{}", m.partition(), m.offset()),
                    origin,
                    header(m, dlq::CONSUMER_GROUP),
                    header(m, dlq::REASON),
                    error,
                ]);
            }
            table.print();
            eprintln!("{} dead letter(s)", letters.len());
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show(sel) => {
            let codec = WireCodec::new(registry)?;
            let letters = read(kafka, &sel).await?;
            if let Some(code) = missing(&sel, &letters) {
                return Ok(code);
            }
            for m in letters {
                let origin_topic = header(&m, dlq::ORIGIN_TOPIC);
                let value = match codec.decode(m.payload(), &origin_topic, 0, 0).await {
                    Ok(d) => json::to_json(&d.full_name, &d.payload)
                        .unwrap_or_else(serde_json::Value::String),
                    Err(e) => {
                        serde_json::json!({ "undecodable": e.to_string(), "hex": m.payload().map(hex::encode) })
                    }
                };
                let out = serde_json::json!({
                    "dlq": { "partition": m.partition(), "offset": m.offset() },
                    "origin": { "topic": origin_topic, "partition": header(&m, dlq::ORIGIN_PARTITION), "offset": header(&m, dlq::ORIGIN_OFFSET) },
                    "group": header(&m, dlq::CONSUMER_GROUP),
                    "reason": header(&m, dlq::REASON),
                    "error": header(&m, dlq::ERROR),
                    "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    "value": value,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay(sel) => {
            let producer = EventProducer::new(kafka, Duration::from_secs(30))?;
            let letters = read(kafka, &sel).await?;
            if let Some(code) = missing(&sel, &letters) {
                return Ok(code);
            }
            for m in &letters {
                let origin = header(m, dlq::ORIGIN_TOPIC);
                anyhow::ensure!(
                    !origin.is_empty(),
                    "dead letter {}@{} has no origin topic header",
                    m.partition(),
                    m.offset()
                );
                let from = format!("{}@{}", m.partition(), m.offset());
                let d = producer
                    .send(
                        &origin,
                        m.key().unwrap_or_default(),
                        m.payload().unwrap_or_default(),
                        &[("lienthong-replayed-from", from.as_bytes())],
                    )
                    .await?;
                println!(
                    "replayed dlq {from} to {origin}[{}]@{}",
                    d.partition, d.offset
                );
            }
            eprintln!("{} dead letter(s) replayed", letters.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
