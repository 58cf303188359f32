//! The tonic service: identity per call, then the pipeline.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use lienthong_proto::v1 as pb;
use pb::ingest_service_server::IngestService;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::pipeline::{Gateway, RequestError};

/// How many requests of one stream are processed at once; responses still keep request order.
const STREAM_PIPELINE_DEPTH: usize = 8;

pub(crate) struct IngestApi {
    pub gateway: Arc<Gateway>,
}

fn observe(method: &'static str, started: Instant, code: tonic::Code) {
    metrics::counter!(crate::metrics::REQUESTS.name, "method" => method, "code" => format!("{code:?}")).increment(1);
    metrics::histogram!(crate::metrics::REQUEST_SECONDS.name, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// The caller's trace context (gRPC metadata `traceparent`), if it sent one.
fn traceparent_of<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(lienthong_telemetry::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The span of one request's publication, continuing the caller's trace (`traceparent`)
/// when it sent one; its context goes into every record's `traceparent` header.
fn publish_span(traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!("publish");
    lienthong_telemetry::trace::continue_trace(&span, traceparent);
    span
}

impl IngestApi {
    /// The caller, if its credential grants the publish scope.
    fn publisher<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<lienthong_grpc::Identity>, Status> {
        let caller = self.gateway.auth().identify(request)?;
        if let Some(id) = &caller {
            id.require(lienthong_grpc::Scope::Publish)?;
        }
        Ok(caller)
    }
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let started = Instant::now();
        let caller = match self.publisher(&request) {
            Ok(c) => c,
            Err(s) => {
                observe("Publish", started, s.code());
                return Err(s);
            }
        };
        let span = publish_span(traceparent_of(&request).as_deref());
        let result = self
            .gateway
            .publish(caller.as_ref(), request.into_inner())
            .instrument(span)
            .await
            .map_err(RequestError::into_status);
        observe(
            "Publish",
            started,
            result
                .as_ref()
                .map_or_else(Status::code, |_| tonic::Code::Ok),
        );
        result.map(Response::new)
    }

    type PublishStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::PublishStreamResponse, Status>> + Send + 'static>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let started = Instant::now();
        let caller = self
            .publisher(&request)
            .inspect_err(|s| observe("PublishStream", started, s.code()))?;
        let gateway = Arc::clone(&self.gateway);
        let traceparent = traceparent_of(&request);
        let inbound = request.into_inner();
        // `buffered` runs a bounded number of requests concurrently and yields in input order.
        let responses = inbound
            .map(move |item| {
                let gateway = Arc::clone(&gateway);
                let caller = caller.clone();
                let span = publish_span(traceparent.as_deref());
                async move {
                    let item = item?;
                    let req = pb::PublishRequest {
                        events: item.events,
                        request_id: item.request_id,
                    };
                    let request_id = req.request_id.clone();
                    let ids: Vec<String> = req
                        .events
                        .iter()
                        .map(|e| crate::pipeline::event_id_of(e).unwrap_or_default())
                        .collect();
                    match gateway.publish(caller.as_ref(), req).await {
                        Ok(r) => Ok(pb::PublishStreamResponse {
                            request_id: r.request_id,
                            results: r.results,
                        }),
                        // A stream keeps going: capacity problems are answered per event.
                        Err(RequestError::Exhausted(message, after)) => {
                            Ok(pb::PublishStreamResponse {
                                request_id,
                                results: ids
                                    .into_iter()
                                    .map(|event_id| pb::EventResult {
                                        event_id,
                                        outcome: pb::Outcome::ResourceExhausted as i32,
                                        message: message.clone(),
                                        retry_after_ms: u32::try_from(after.as_millis())
                                            .unwrap_or(u32::MAX),
                                        ..Default::default()
                                    })
                                    .collect(),
                            })
                        }
                        Err(other) => Err(other.into_status()),
                    }
                }
                .instrument(span)
            })
            .buffered(STREAM_PIPELINE_DEPTH);
        observe("PublishStream", started, tonic::Code::Ok);
        Ok(Response::new(Box::pin(responses)))
    }
}
