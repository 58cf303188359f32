//! The local HTTP intake, for HIS integrations that push instead of exporting files:
//! `POST /v1/xml` takes an export (envelope or bare tables), `POST /v1/events` takes events as
//! JSON Lines of `lienthong.v1.EventEnvelope` (canonical protobuf JSON), `GET /v1/status` the
//! status. A 200 answer means the events are flushed to the outbox. Listen on loopback: the
//! HIS runs beside the agent, and the requests carry personal data.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
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

use crate::outbox::{Outbox, OutboxError};
use crate::revisions::Revision;
use crate::sender::SharedState;
use crate::xml::{Limits, convert};
use tracing::Instrument as _;

struct Intake {
    outbox: Outbox,
    state: SharedState,
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

async fn xml(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Bytes) -> Response {
    let name = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("request")
        .to_owned();
    let c = match convert(&name, &body, &Limits::default(), &ValidationContext::now()) {
        Ok(c) => c,
        Err(e) => {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string()}),
            );
        }
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

async fn events(State(intake): State<Arc<Intake>>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "the body is not UTF-8 JSON Lines"}),
            );
        }
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
    // All or nothing: a request with a bad line changes nothing, so the HIS can fix and resend.
    if !errors.is_empty() {
        return answer(StatusCode::UNPROCESSABLE_ENTITY, json!({"errors": errors}));
    }
    let n = accepted.len();
    let span = tracing::info_span!("intake", via = "http-events", events = n);
    if let Err(e) = intake.outbox.enqueue(accepted).instrument(span).await {
        return outbox_error(e);
    }
    answer(StatusCode::OK, json!({"queued": n}))
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
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/v1/xml", post(xml))
        .route("/v1/events", post(events))
        .route("/v1/status", get(status))
        .layer(axum::extract::DefaultBodyLimit::max(
            Limits::default().max_file_bytes,
        ))
        .with_state(Arc::new(Intake { outbox, state }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
