//! The local gRPC intake: the gateway's own `IngestService.Publish`, served by the agent on
//! loopback, so a HIS integrated with the gateway's API can point at the agent instead and gain
//! the outbox. ACCEPTED here means validated and flushed to the outbox (delivery follows);
//! REJECTED carries the same validation errors the gateway would give.

use std::pin::Pin;

use lienthong_core::ClinicalEvent;
use lienthong_core::validation::{Severity, ValidationContext};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::conversions::Conversions;
use crate::outbox::{Outbox, OutboxError};
use tracing::Instrument as _;

/// `IngestService` in front of the outbox.
pub struct LocalIngest {
    outbox: Outbox,
    conversions: Conversions,
}

fn result(event_id: String, outcome: pb::Outcome, message: &str) -> pb::EventResult {
    pb::EventResult {
        event_id,
        outcome: outcome as i32,
        message: message.to_owned(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl IngestService for LocalIngest {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let request = request.into_inner();
        let turn = self
            .conversions
            .admit()
            .await
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let request_id = request.request_id;
        let (results, queue) = turn.run(move || check(request.events)).await.map_err(|e| {
            Status::internal(format!(
                "the validation failed inside the agent ({e}); nothing was queued: send the request again"
            ))
        })?;
        if !queue.is_empty() {
            let span = tracing::info_span!("intake", via = "grpc", events = queue.len());
            self.outbox
                .enqueue(queue)
                .instrument(span)
                .await
                .map_err(|e| match e {
                    OutboxError::Full { .. } => Status::resource_exhausted(e.to_string()),
                    other => Status::internal(other.to_string()),
                })?;
        }
        Ok(Response::new(pb::PublishResponse {
            request_id,
            results,
        }))
    }

    type PublishStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::PublishStreamResponse, Status>> + Send + 'static>>;

    async fn publish_stream(
        &self,
        _request: Request<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        Err(Status::unimplemented(
            "the facility agent takes Publish; send batches with it",
        ))
    }
}

/// Validates each event as the gateway would: the answer for each, and the valid ones to queue.
fn check(events: Vec<pb::EventEnvelope>) -> (Vec<pb::EventResult>, Vec<pb::EventEnvelope>) {
    let ctx = ValidationContext::now();
    let mut results = Vec::with_capacity(events.len());
    let mut queue = Vec::new();
    for envelope in events {
        let Some(event) = ClinicalEvent::from_envelope(envelope) else {
            results.push(result(
                String::new(),
                pb::Outcome::Rejected,
                "the envelope carries no event of a kind this agent knows",
            ));
            continue;
        };
        let id = event
            .header()
            .map(|h| h.event_id.clone())
            .unwrap_or_default();
        let violations = event.validate(&ctx);
        if violations.iter().any(|v| v.severity == Severity::Error) {
            let mut r = result(
                id,
                pb::Outcome::Rejected,
                "the event is not valid; nothing was queued",
            );
            r.errors = violations.iter().map(pb::ValidationError::from).collect();
            results.push(r);
        } else {
            queue.push(pb::EventEnvelope::from(event));
            results.push(result(
                id,
                pb::Outcome::Accepted,
                "queued in the facility agent's outbox",
            ));
        }
    }
    (results, queue)
}

/// Serves the local gRPC intake on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    outbox: Outbox,
    conversions: Conversions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(IngestServiceServer::new(LocalIngest {
            outbox,
            conversions,
        }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lienthong_core::fixtures::Generator;
    use lienthong_proto::v1::ingest_service_client::IngestServiceClient;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_without_a_conversion_turn_is_resource_exhausted_and_queues_nothing()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = Outbox::open(&dir.path().join("outbox"), 1000)?;
        let conversions = Conversions::new(1, Duration::from_millis(300));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            outbox.clone(),
            conversions.clone(),
            shutdown.clone(),
        ));
        let mut client = IngestServiceClient::connect(format!("http://{addr}")).await?;
        let mut generator = Generator::new(7, time::OffsetDateTime::now_utc());
        let request = pb::PublishRequest {
            request_id: "busy".into(),
            events: vec![pb::EventEnvelope::from(ClinicalEvent::Referral(
                generator.referral(),
            ))],
        };

        let held = conversions.admit().await?;
        let refused = client
            .publish(request.clone())
            .await
            .expect_err("no turn free");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("nothing of this request was queued"),
            "{refused:?}"
        );
        assert_eq!(outbox.pending(), 0);

        drop(held);
        let answer = client.publish(request).await?.into_inner();
        assert_eq!(answer.results[0].outcome, pb::Outcome::Accepted as i32);
        assert_eq!(outbox.pending(), 1);
        shutdown.cancel();
        server.await??;
        Ok(())
    }
}
