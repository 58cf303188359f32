//! `lienthong publish`: send events to the gateway the way a facility does, with retries of
//! what may be retried, a progress bar and a summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lienthong_core::fixtures::{Generator, reassign};
use lienthong_grpc::client::Unreached;
use lienthong_proto::v1 as pb;
use prost::Message;

/// Publish flags.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// JSON Lines file of events, one `lienthong.v1.EventEnvelope` in protobuf JSON per line
    /// (e.g. `{"referral": {"header": {...}, "slip": {...}}}`).
    #[arg(long, conflicts_with = "sample", required_unless_present = "sample")]
    file: Option<PathBuf>,
    /// Publish this many synthetic events instead of a file.
    #[arg(long)]
    sample: Option<usize>,
    /// Facility the synthetic events come from: the caller's own or a member of its hub. The
    /// facility of the bearer token when omitted.
    #[arg(long)]
    facility: Option<String>,
    /// The gateway and this facility's credentials.
    #[command(flatten)]
    connection: lienthong_grpc::GatewayConnection,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// How many times an UNAVAILABLE or RESOURCE_EXHAUSTED answer is retried.
    #[arg(long, default_value_t = 10)]
    max_retries: u32,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Write the events to stdout in protobuf JSON instead of publishing them: `jsonl` one
    /// `EventEnvelope` per line (for `--file`, after editing), `request` one `PublishRequest`
    /// (for grpcurl's `-d @`).
    #[arg(long, value_enum)]
    print: Option<Printed>,
}

/// How `--print` writes the events.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Printed {
    /// JSON Lines of `lienthong.v1.EventEnvelope`.
    Jsonl,
    /// One `lienthong.v1.PublishRequest`.
    Request,
}

/// The events in protobuf JSON, as `--print` asks.
fn printed(events: Vec<pb::EventEnvelope>, how: Printed) -> anyhow::Result<String> {
    let json = |full_name: &str, bytes: Vec<u8>| {
        lienthong_proto::json::to_json(full_name, &bytes).map_err(anyhow::Error::msg)
    };
    Ok(match how {
        Printed::Jsonl => events
            .into_iter()
            .map(|e| {
                json("lienthong.v1.EventEnvelope", e.encode_to_vec()).map(|v| format!("{v}\n"))
            })
            .collect::<anyhow::Result<String>>()?,
        Printed::Request => {
            let request = pb::PublishRequest {
                events,
                ..Default::default()
            };
            format!(
                "{:#}\n",
                json("lienthong.v1.PublishRequest", request.encode_to_vec())?
            )
        }
    })
}

#[derive(Default)]
struct Summary {
    outcomes: BTreeMap<&'static str, usize>,
    reasons: Vec<String>,
}

/// The facility a bearer token was issued to (its `sub` claim), read without verifying: the
/// gateway verifies it; this only picks the facility the events should come from.
fn token_facility(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}

fn load(args: &PublishArgs) -> anyhow::Result<Vec<pb::EventEnvelope>> {
    if let Some(n) = args.sample {
        let facility = match &args.facility {
            Some(f) => f.clone(),
            None => args
                .connection
                .token()?
                .as_deref()
                .and_then(token_facility)
                .context("give --facility: synthetic events must come from the caller's facility (or a member of its hub), and no bearer token names one")?,
        };
        let mut g = Generator::new(rand::random(), time::OffsetDateTime::now_utc());
        return Ok((0..n)
            .map(|i| reassign(g.any(i), &facility).into())
            .collect());
    }
    let path = args.file.as_ref().context("give --file or --sample")?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let bytes = lienthong_proto::json::from_json("lienthong.v1.EventEnvelope", line)
                .map_err(|e| crate::exit::Refused(format!("{}:{}: {e}", path.display(), i + 1)))?;
            Ok(pb::EventEnvelope::decode(bytes.as_slice())?)
        })
        .collect()
}

pub async fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let events = load(&args)?;
    if events.is_empty() {
        bail!("no events to publish");
    }
    if let Some(how) = args.print {
        print!("{}", printed(events, how)?);
        return Ok(ExitCode::SUCCESS);
    }
    let token = args.connection.token()?;
    let mut client = args.connection.channel()?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(events.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut summary = Summary::default();
    for chunk in events.chunks(args.batch.max(1)) {
        let mut pending: Vec<pb::EventEnvelope> = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            let req = args.connection.request(token.as_deref(), pending.clone())?;
            let resp = match client.publish(req).await {
                Ok(r) => r.into_inner(),
                Err(s)
                    if s.code() == tonic::Code::ResourceExhausted && attempt < args.max_retries =>
                {
                    let wait = s
                        .metadata()
                        .get("retry-after-ms")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(500);
                    bar.set_message(format!("gateway busy, retrying in {wait} ms"));
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    attempt += 1;
                    continue;
                }
                // The status stays in the error's causes: its code decides the exit code.
                Err(s) => {
                    return Err(match Unreached::of(&args.connection.endpoint(), s) {
                        Ok(unreached) => anyhow::Error::new(unreached),
                        Err(s) => {
                            let what = format!("gateway refused the request ({:?})", s.code());
                            anyhow::Error::new(s).context(what)
                        }
                    });
                }
            };
            let mut retry = Vec::new();
            let mut wait_ms = 0;
            for (env, r) in pending.iter().zip(resp.results) {
                let outcome = pb::Outcome::try_from(r.outcome).unwrap_or_default();
                let retryable = matches!(
                    outcome,
                    pb::Outcome::Unavailable | pb::Outcome::ResourceExhausted
                );
                if retryable && attempt < args.max_retries {
                    wait_ms = wait_ms.max(r.retry_after_ms);
                    retry.push(env.clone());
                    continue;
                }
                let name = match outcome {
                    pb::Outcome::Accepted => "accepted",
                    pb::Outcome::Duplicate => "duplicate",
                    pb::Outcome::Rejected => "rejected",
                    pb::Outcome::Unavailable => "unavailable",
                    pb::Outcome::ResourceExhausted => "resource exhausted",
                    pb::Outcome::Unspecified => "unknown",
                };
                *summary.outcomes.entry(name).or_default() += 1;
                if outcome == pb::Outcome::Rejected && summary.reasons.len() < 10 {
                    let detail: Vec<String> = r
                        .errors
                        .iter()
                        .filter(|e| e.severity == pb::ErrorSeverity::Error as i32)
                        .map(|e| format!("{} at {}", e.code, e.path))
                        .collect();
                    summary.reasons.push(format!(
                        "{}: {}",
                        r.event_id,
                        if detail.is_empty() {
                            r.message.clone()
                        } else {
                            detail.join(", ")
                        }
                    ));
                }
                bar.inc(1);
            }
            if !retry.is_empty() {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(wait_ms.max(200)))).await;
            }
            pending = retry;
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let parts: Vec<String> = summary
        .outcomes
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    println!(
        "published {} events in {secs:.1} s ({:.0}/s): {}",
        events.len(),
        events.len() as f64 / secs.max(1e-9),
        parts.join(", ")
    );
    // The gateway's reasons can quote the events' own values.
    for r in &summary.reasons {
        println!("  rejected {}", lienthong_core::printable::printable(r));
    }
    let count =
        |names: &[&str]| -> usize { names.iter().filter_map(|n| summary.outcomes.get(n)).sum() };
    // Rejected events fail again as they are; the rest may pass later.
    Ok(if count(&["rejected", "unknown"]) > 0 {
        crate::exit::code(crate::exit::REFUSED)
    } else if count(&["unavailable", "resource exhausted"]) > 0 {
        crate::exit::code(crate::exit::UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facility_comes_from_the_token_subject() {
        let (pem, _) = lienthong_grpc::generate_signing_key("k1").expect("key");
        let token = lienthong_grpc::TokenSigner::from_pem(pem.as_bytes(), "k1")
            .expect("signer")
            .issue(&lienthong_grpc::TokenRequest {
                facility: "79025".into(),
                audiences: vec![lienthong_grpc::GATEWAY_AUDIENCE.into()],
                scopes: vec![lienthong_grpc::Scope::Publish],
                individual: None,
                ttl_secs: 60,
            })
            .expect("token");
        assert_eq!(token_facility(&token).as_deref(), Some("79025"));
        assert_eq!(token_facility("not-a-token"), None);
    }

    fn sample() -> Vec<pb::EventEnvelope> {
        let mut g = Generator::new(7, time::OffsetDateTime::now_utc());
        (0..3).map(|i| reassign(g.any(i), "79025").into()).collect()
    }

    #[test]
    fn printed_lines_read_back_as_the_same_events() -> anyhow::Result<()> {
        let events = sample();
        let text = printed(events.clone(), Printed::Jsonl)?;
        let back = text
            .lines()
            .map(|line| {
                let bytes = lienthong_proto::json::from_json("lienthong.v1.EventEnvelope", line)
                    .map_err(anyhow::Error::msg)?;
                Ok(pb::EventEnvelope::decode(bytes.as_slice())?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        assert_eq!(back, events);
        Ok(())
    }

    #[test]
    fn a_printed_request_holds_every_event() -> anyhow::Result<()> {
        let events = sample();
        let text = printed(events.clone(), Printed::Request)?;
        let bytes = lienthong_proto::json::from_json("lienthong.v1.PublishRequest", &text)
            .map_err(anyhow::Error::msg)?;
        assert_eq!(pb::PublishRequest::decode(bytes.as_slice())?.events, events);
        Ok(())
    }
}
