//! Building and running the gateway: `run(config, listener, shutdown)` so tests can start it
//! in-process on port 0; graceful shutdown stops accepting, drains and flushes the producer.

use std::sync::Arc;
use std::time::Duration;

use lienthong_core::PatientKeyer;
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_proto::v1::ingest_service_server::IngestServiceServer;
use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet, WireCodec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::directory::DirectoryFile;
use crate::pipeline::Gateway;
use crate::service::IngestApi;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Settings are inconsistent.
    #[error("invalid gateway settings: {0}")]
    Config(String),
    /// Listener, TLS or authentication settings.
    #[error(transparent)]
    Serving(#[from] lienthong_grpc::ServingError),
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] lienthong_kafka::Error),
    /// Registry.
    #[error(transparent)]
    Registry(#[from] lienthong_registry::Error),
    /// gRPC transport.
    #[error("gRPC server: {0}")]
    Transport(tonic::transport::Error),
}

// The cause is in the message, not a source: a chain of causes names it once.
impl From<tonic::transport::Error> for GatewayError {
    fn from(e: tonic::transport::Error) -> Self {
        Self::Transport(e)
    }
}

/// Runs the gateway on `listener` until `shutdown` is cancelled, then drains.
pub async fn run(
    config: GatewayConfig,
    kafka: KafkaArgs,
    registry: RegistryArgs,
    keyer: PatientKeyer,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    config.check().map_err(GatewayError::Config)?;
    crate::metrics::register();
    let builder = config.serving.server("the ingest API")?;
    kafka.probe().await?;

    // Every event schema is confirmed registered at start-up, under the topics this gateway
    // writes; only a missing one is written, so a registered contract needs read access only.
    let mut schemas = SchemaSet::built_in();
    for (kind, topic) in config.topics() {
        schemas = schemas.with_topic(kind, &topic);
    }
    let registered = schemas.register(&RegistryClient::new(&registry)?).await?;
    tracing::info!(
        subjects = registered.len(),
        written = registered.iter().filter(|r| r.created).count(),
        "event schemas registered"
    );

    let revocations = Arc::new(lienthong_grpc::Revocations::default());
    let auth = config
        .serving
        .authenticator(lienthong_grpc::GATEWAY_AUDIENCE, Arc::clone(&revocations))?;
    // Tokens are accepted only once every revocation made before this start is known.
    let follower = lienthong_kafka::follow::Follower::start(
        &kafka,
        config.serving.revocations_topic(),
        move |record| revocations.apply_record(record),
        &shutdown,
    )
    .await?;
    let producer = EventProducer::new(&kafka, config.produce_timeout())?;
    let topic_limits = topic_limits(&kafka, &config).await?;
    let directory = match &config.facility_directory {
        Some(path) => Some(Arc::new(
            DirectoryFile::load(path.clone()).map_err(GatewayError::Config)?,
        )),
        None => {
            tracing::warn!(
                "no --facility-directory: facility codes are checked for their shape only, not that the facility exists"
            );
            None
        }
    };
    let watcher = directory.clone().map(|d| {
        tokio::spawn(d.watch(
            Duration::from_secs(config.facility_directory_reload_secs.max(1)),
            shutdown.clone(),
        ))
    });
    let codec = WireCodec::new(&registry)?;
    codec.remember(&registered);
    let gateway = Arc::new(Gateway::new(
        &config,
        producer,
        codec,
        keyer,
        auth,
        topic_limits,
        directory,
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServiceServer<IngestApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lienthong_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| GatewayError::Config(format!("reflection: {e}")))?;
    let ingest = IngestServiceServer::new(IngestApi {
        gateway: Arc::clone(&gateway),
    })
    .max_decoding_message_size(config.max_message_bytes);

    let mut builder = builder.timeout(Duration::from_secs(120));
    let addr = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        tls = !config.serving.insecure_dev,
        "gateway listening"
    );
    let drain = shutdown.clone();
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .serve_with_incoming_shutdown(config.serving.incoming(listener)?, drain.cancelled_owned())
        .await?;

    if let Some(watcher) = watcher {
        // Ends with the shutdown token, which has fired.
        let _ = watcher.await;
    }
    if let Some(follower) = follower {
        follower.finish().await;
    }
    // tonic has stopped accepting and finished in-flight calls; make sure Kafka has the rest.
    tracing::info!("gateway stopping: flushing the producer");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let producer = gateway.producer().clone();
    match tokio::task::spawn_blocking(move || producer.flush(grace)).await {
        Ok(Ok(())) => tracing::info!("producer flushed"),
        Ok(Err(e)) => tracing::error!(error = %e, "producer flush incomplete"),
        Err(e) => tracing::error!(error = %e, "producer flush task failed"),
    }
    Ok(())
}

/// The largest record each document topic takes: the smaller of its `max.message.bytes` (read
/// from the broker) and the producer's `message.max.bytes`, so an event that cannot fit is
/// refused as such, never retried.
async fn topic_limits(
    kafka: &lienthong_kafka::KafkaArgs,
    config: &GatewayConfig,
) -> Result<std::collections::BTreeMap<String, usize>, GatewayError> {
    let names: Vec<String> = config.topics().into_values().collect();
    let producer_limit = lienthong_kafka::producer::MESSAGE_MAX_BYTES;
    let mut limits = std::collections::BTreeMap::new();
    for state in lienthong_kafka::topics::describe(kafka, &names).await? {
        let topic_limit = state
            .configs
            .get("max.message.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(producer_limit);
        tracing::info!(topic = %state.name, max_record_bytes = topic_limit.min(producer_limit), "topic size limit");
        limits.insert(state.name, topic_limit.min(producer_limit));
    }
    Ok(limits)
}
