//! `lienthong tail`: read a topic, decode each message through the registry by its schema id
//! and print it as JSON with partition, offset, key and headers — what an analyst looks at.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use lienthong_kafka::KafkaArgs;
use lienthong_registry::{RegistryArgs, WireCodec};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// Indented JSON.
    Pretty,
}

/// How long `--max N` waits for more messages when the topic holds fewer than N.
const DEFAULT_IDLE_SECS_WITH_MAX: u64 = 10;

/// Tail flags.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Start at the oldest message instead of new ones only.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many messages, or when no message arrives for --idle-exit-secs (10 s
    /// unless given) if the topic holds fewer.
    #[arg(long)]
    max: Option<usize>,
    /// Stop when no message arrives for this many seconds.
    #[arg(long)]
    idle_exit_secs: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Consumer group named to the broker (nothing joins it, nothing is committed); a
    /// principal may name only the groups its ACLs allow (analytics: `analytics-…`).
    #[arg(long, env = "LIENTHONG_TAIL_GROUP", default_value = "lienthong-tail")]
    group: String,
}

pub async fn run(
    args: TailArgs,
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
) -> anyhow::Result<ExitCode> {
    kafka.probe().await?;
    let codec = WireCodec::new(registry)?;
    let mut cfg = kafka.client_config()?;
    // Reading only: no group membership, no commits (tail must never move anyone's offsets).
    // read_committed: what transactions aborted (analytics topics) is never shown.
    cfg.set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.auto.offset.store", "false");
    let consumer: StreamConsumer = cfg.create().context("cannot create the tail consumer")?;
    let metadata = consumer.fetch_metadata(Some(&args.topic), kafka.timeout())?;
    let found = metadata.topics().iter().find(|t| t.name() == args.topic);
    let topic = match found.map(|t| (t, t.error())) {
        Some((t, None)) if !t.partitions().is_empty() => t,
        Some((
            _,
            Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED),
        )) => {
            anyhow::bail!(crate::exit::Refused(format!(
                "Kafka user {} may not read topic {} (topic authorization failed): each \
                 principal reads what the cluster's ACLs grant it (an analytics principal the \
                 lienthong.analytics.* topics); ask the operators for a grant",
                kafka.sasl_username.as_deref().unwrap_or("(certificate)"),
                args.topic
            )));
        }
        _ => {
            anyhow::bail!(crate::exit::Refused(format!(
                "topic {} does not exist; `lienthong topics list` shows the topics",
                args.topic
            )));
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition_offset(
            &args.topic,
            p.id(),
            if args.from_beginning {
                Offset::Beginning
            } else {
                Offset::End
            },
        )?;
    }
    consumer.assign(&tpl)?;

    let (mut shown, mut failed) = (0usize, 0usize);
    let mut stdout = std::io::stdout().lock();
    let mut last = Instant::now();
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    while args.max.is_none_or(|m| shown + failed < m) {
        // A count asks for an end: without an idle limit it would wait forever for messages
        // that may never come.
        let idle = args
            .idle_exit_secs
            .or(args.max.map(|_| DEFAULT_IDLE_SECS_WITH_MAX))
            .map(Duration::from_secs);
        let wait = idle.map_or(Duration::from_secs(3600), |i| {
            i.saturating_sub(last.elapsed())
        });
        let msg = tokio::select! {
            _ = &mut shutdown => break,
            r = tokio::time::timeout(wait, consumer.recv()) => match r {
                Err(_) => break,
                Ok(m) => m?,
            },
        };
        last = Instant::now();
        match codec
            .decode(msg.payload(), msg.topic(), msg.partition(), msg.offset())
            .await
        {
            Ok(decoded) => {
                let value = lienthong_proto::json::to_json(&decoded.full_name, &decoded.payload)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}[{}]@{}: {e}",
                            msg.topic(),
                            msg.partition(),
                            msg.offset()
                        )
                    })?;
                let out = json!({
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp_ms": msg.timestamp().to_millis(),
                    "key": msg.key().map(text_or_hex),
                    "headers": headers(&msg),
                    "schema_id": decoded.schema_id,
                    "message_type": decoded.full_name,
                    "value": value,
                });
                let line = match args.format {
                    Format::Json => serde_json::to_string(&out)?,
                    Format::Pretty => serde_json::to_string_pretty(&out)?,
                };
                writeln!(stdout, "{line}")?;
                shown += 1;
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    stdout.flush()?;
    eprintln!("{shown} message(s) shown, {failed} could not be decoded");
    Ok(if failed > 0 {
        crate::exit::code(crate::exit::REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

fn text_or_hex(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => Value::String(format!("0x{}", hex::encode(bytes))),
    }
}

fn headers<M: Message>(msg: &M) -> Value {
    let mut map = serde_json::Map::new();
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            map.insert(
                header.key.to_owned(),
                header.value.map_or(Value::Null, text_or_hex),
            );
        }
    }
    Value::Object(map)
}
