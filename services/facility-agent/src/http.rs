//! The local HTTP intake, for HIS integrations that push instead of exporting files:
//! `POST /v1/xml` takes an export (envelope or bare tables), `POST /v1/events` takes events as
//! JSON Lines of `lienthong.v1.EventEnvelope` (canonical protobuf JSON), `GET /v1/status` the
//! status. A 200 answer means the events are flushed to the outbox; 503 with Retry-After means
//! no conversion turn came free in time and nothing was queued. Listen on loopback: the HIS
//! runs beside the agent, and the requests carry personal data.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lienthong_core::ClinicalEvent;
use lienthong_core::validation::{Severity, ValidationContext};
use lienthong_proto::v1 as pb;
use prost::Message as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::conversions::{Busy, Conversions, Turn};
use crate::local_callers::{LocalCallers, Refusal};
use crate::outbox::{Outbox, OutboxError};
use crate::revisions::Revision;
use crate::sender::SharedState;
use crate::xml::{Limits, convert};
use tracing::Instrument as _;

struct Intake {
    outbox: Outbox,
    state: SharedState,
    conversions: Conversions,
    body_wait: std::time::Duration,
}

/// Refuses, before reading its body, a request not from a program on this host (see
/// `local_callers`).
async fn local_only(
    State(callers): State<Arc<LocalCallers>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match callers.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            metrics::counter!(crate::metrics::INTAKE_REFUSED.name, "reason" => refusal.reason())
                .increment(1);
            tracing::warn!(reason = %refusal, "HTTP intake request refused");
            let code = match refusal {
                Refusal::Host(_) => StatusCode::MISDIRECTED_REQUEST,
                Refusal::WebPage(_) => StatusCode::FORBIDDEN,
            };
            answer(code, json!({"error": refusal.to_string()}))
        }
    }
}

fn answer(code: StatusCode, body: serde_json::Value) -> Response {
    (code, axum::Json(body)).into_response()
}

fn outbox_error(e: OutboxError) -> Response {
    match e {
        OutboxError::Full { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "60")],
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        other => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": other.to_string()}),
        ),
    }
}

fn busy(e: &Busy) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("retry-after", "5")],
        axum::Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

/// Waits for a conversion turn, then reads the body: a request waiting for its turn holds
/// only its connection, not its body. The body must then arrive within [`BODY_WAIT`]: a slow
/// upload would hold a turn the inbox and the other requests wait for.
async fn admitted(intake: &Intake, body: Body) -> Result<(Turn, Bytes), Response> {
    let turn = intake.conversions.admit().await.map_err(|e| busy(&e))?;
    let limit = Limits::default().max_file_bytes;
    let wait = intake.body_wait;
    match tokio::time::timeout(wait, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok((turn, bytes)),
        Ok(Err(_)) => Err(answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("the body is larger than {limit} bytes (or was cut off); split the export into several requests")}),
        )),
        Err(_) => Err(answer(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": format!("the body did not arrive within {wait:?} of the conversion turn it was given; nothing was queued: send the whole export at once")}),
        )),
    }
}

/// How long a request given a conversion turn may take to send its body (on loopback, the
/// largest export takes well under a second).
const BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn internal(e: &std::io::Error) -> Response {
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": format!("the conversion failed inside the agent ({e}); nothing was queued: send the request again, and report it if it repeats")}),
    )
}

async fn xml(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Body) -> Response {
    let name = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("request")
        .to_owned();
    let (turn, body) = match admitted(&intake, body).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let file = name.clone();
    let converted = turn
        .run(move || convert(&file, &body, &Limits::default(), &ValidationContext::now()))
        .await;
    let c = match converted {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string()}),
            );
        }
        Err(e) => return internal(&e),
    };
    let problems: Vec<String> = c.problems.iter().map(ToString::to_string).collect();
    // As from the inbox: corrections become the next version, unchanged documents are not sent.
    let revisions = if c.events.is_empty() {
        Vec::new()
    } else {
        let span = tracing::info_span!("intake", via = "http-xml", events = c.events.len());
        match intake
            .outbox
            .enqueue_revised(c.events, &name)
            .instrument(span)
            .await
        {
            Ok(r) => r,
            Err(e) => return outbox_error(e),
        }
    };
    let unchanged = revisions
        .iter()
        .filter(|(_, r)| matches!(r, Revision::Unchanged { .. }))
        .count();
    let events = revisions.len() - unchanged;
    let code = if c.episodes == 0 && !problems.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    answer(
        code,
        json!({"episodes": c.episodes, "events": events, "unchanged": unchanged, "problems": problems}),
    )
}

async fn events(State(intake): State<Arc<Intake>>, body: Body) -> Response {
    let (turn, body) = match admitted(&intake, body).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let parsed = match turn.run(move || parse_lines(&body)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(None)) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "the body is not UTF-8 JSON Lines"}),
            );
        }
        Ok(Err(Some(errors))) => {
            return answer(StatusCode::UNPROCESSABLE_ENTITY, json!({"errors": errors}));
        }
        Err(e) => return internal(&e),
    };
    let n = parsed.len();
    let span = tracing::info_span!("intake", via = "http-events", events = n);
    if let Err(e) = intake.outbox.enqueue(parsed).instrument(span).await {
        return outbox_error(e);
    }
    answer(StatusCode::OK, json!({"queued": n}))
}

/// Decodes and validates JSON Lines of envelopes, all or nothing: a request with a bad line
/// changes nothing, so the HIS can fix and resend it. The error is what is wrong with each bad
/// line, or none when the body is not text at all.
fn parse_lines(body: &[u8]) -> Result<Vec<pb::EventEnvelope>, Option<Vec<String>>> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(None);
    };
    let ctx = ValidationContext::now();
    let mut accepted = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed = lienthong_proto::json::from_json("lienthong.v1.EventEnvelope", line)
            .and_then(|b| pb::EventEnvelope::decode(b.as_slice()).map_err(|e| e.to_string()))
            .and_then(|env| {
                ClinicalEvent::from_envelope(env)
                    .ok_or_else(|| "no event in the envelope".to_owned())
            });
        match parsed {
            Err(e) => errors.push(format!("line {}: {e}", i + 1)),
            Ok(event) => {
                let bad: Vec<String> = event
                    .validate(&ctx)
                    .into_iter()
                    .filter(|v| v.severity == Severity::Error)
                    .map(|v| v.to_string())
                    .collect();
                if bad.is_empty() {
                    accepted.push(pb::EventEnvelope::from(event));
                } else {
                    errors.push(format!("line {}: {}", i + 1, bad.join("; ")));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(Some(errors));
    }
    Ok(accepted)
}

async fn status(State(intake): State<Arc<Intake>>) -> Response {
    match crate::status::current(&intake.outbox, &intake.state) {
        Ok(s) => answer(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
        Err(e) => outbox_error(e),
    }
}

/// Serves the intake on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    outbox: Outbox,
    state: SharedState,
    conversions: Conversions,
    callers: LocalCallers,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let intake = Intake {
        outbox,
        state,
        conversions,
        body_wait: BODY_WAIT,
    };
    axum::serve(listener, routes(intake, callers))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

fn routes(intake: Intake, callers: LocalCallers) -> Router {
    Router::new()
        .route("/v1/xml", post(xml))
        .route("/v1/events", post(events))
        .route("/v1/status", get(status))
        .with_state(Arc::new(intake))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(callers),
            local_only,
        ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::xml::fixtures::{envelope, full_episode};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_without_a_conversion_turn_is_told_to_retry_and_changes_nothing()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = Outbox::open(&dir.path().join("outbox"), 1000)?;
        let conversions = Conversions::new(1, Duration::from_millis(300));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            outbox.clone(),
            SharedState::default(),
            conversions.clone(),
            LocalCallers::default(),
            shutdown.clone(),
        ));
        let http = reqwest::Client::new();
        let export = envelope("01001", &[full_episode("LKH1", "001185012345", true)]);

        // Every turn taken (a large export being converted): the request waits, then is told
        // to retry, and nothing is queued; the status still answers meanwhile.
        let held = conversions.admit().await?;
        let r = http
            .post(format!("{base}/v1/xml"))
            .body(export.clone())
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        let body: serde_json::Value = r.json().await?;
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("nothing of this request was queued")
                && message.contains("send it again"),
            "{body}"
        );
        let r = http
            .post(format!("{base}/v1/events"))
            .body("{}")
            .send()
            .await?;
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "JSON Lines wait their turn too"
        );
        assert_eq!(
            http.get(format!("{base}/v1/status")).send().await?.status(),
            StatusCode::OK
        );
        assert_eq!(outbox.pending(), 0);

        // The turn given back: the same request is taken.
        drop(held);
        let r = http
            .post(format!("{base}/v1/xml"))
            .body(export)
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(outbox.pending(), 4);

        // A body above the export limit is refused as too large, not read to its end.
        let r = http
            .post(format!("{base}/v1/xml"))
            .body(vec![b' '; Limits::default().max_file_bytes + 1])
            .send()
            .await;
        // The server may answer and close before the client has sent everything.
        match r {
            Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE),
            Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
        }
        assert_eq!(outbox.pending(), 4);
        shutdown.cancel();
        server.await??;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_that_does_not_arrive_gives_its_turn_back() -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let dir = tempfile::tempdir()?;
        let conversions = Conversions::new(1, Duration::from_secs(5));
        let intake = Intake {
            outbox: Outbox::open(&dir.path().join("outbox"), 1000)?,
            state: SharedState::default(),
            conversions: conversions.clone(),
            body_wait: Duration::from_millis(300),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            axum::serve(listener, routes(intake, LocalCallers::default())).await
        });

        // Promises a thousand bytes, sends ten, and stays connected.
        let mut slow = tokio::net::TcpStream::connect(addr).await?;
        slow.write_all(
            b"POST /v1/xml HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\n<GIAMDINH>",
        )
        .await?;
        let mut answer = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer)).await??;
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 408") && answer.contains("send the whole export at once"),
            "{answer}"
        );
        assert!(conversions.admit().await.is_ok(), "the turn is given back");
        server.abort();
        Ok(())
    }
}
