//! Building and running the gateway: `run(config, listener, shutdown)` so tests can start it
//! in-process on port 0; graceful shutdown stops accepting, drains and flushes the producer.

use std::sync::Arc;
use std::time::Duration;

use lienthong_core::PatientKeyer;
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_proto::v1::ingest_service_server::IngestServiceServer;
use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet, WireCodec};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};

use crate::config::GatewayConfig;
use crate::identity::Authenticator;
use crate::pipeline::Gateway;
use crate::service::IngestApi;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Settings are inconsistent.
    #[error("invalid gateway settings: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// Path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] lienthong_kafka::Error),
    /// Registry.
    #[error(transparent)]
    Registry(#[from] lienthong_registry::Error),
    /// gRPC transport.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, GatewayError> {
    std::fs::read(path).map_err(|source| GatewayError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Server TLS from PEM files; with a client CA, client certificates are verified when
/// presented. Optional, so that token-authenticated callers can connect without one; a caller
/// with neither is refused by the authenticator.
pub fn server_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<ServerTlsConfig, GatewayError> {
    let mut tls = ServerTlsConfig::new().identity(TlsIdentity::from_pem(
        read("TLS certificate", cert)?,
        read("TLS key", key)?,
    ));
    if let Some(ca) = client_ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(read("client CA", ca)?))
            .client_auth_optional(true);
    }
    Ok(tls)
}

/// Reads the HS256 token secret (at least 32 bytes) from a file.
pub fn token_secret(path: &std::path::Path) -> Result<Vec<u8>, GatewayError> {
    let secret = read("token key file", path)?.trim_ascii().to_vec();
    if secret.len() < 32 {
        return Err(GatewayError::Config(
            "the token key must be at least 32 bytes".into(),
        ));
    }
    Ok(secret)
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
    if config.insecure_dev {
        tracing::warn!(
            "INSECURE DEVELOPMENT MODE: plain-text gRPC, callers are NOT authenticated, any facility may publish. Never use this with real data."
        );
    }
    kafka.probe()?;

    // Every event schema is registered at start-up, under the topics this gateway writes.
    let mut schemas = SchemaSet::built_in();
    for (kind, topic) in config.topics() {
        schemas = schemas.with_topic(kind, &topic);
    }
    let registered = schemas.register(&RegistryClient::new(&registry)?).await?;
    tracing::info!(subjects = registered.len(), "event schemas registered");

    let token_secret = match &config.token_key_file {
        Some(p) => Some(read("token key file", p)?.trim_ascii().to_vec()),
        None => None,
    };
    if token_secret.as_ref().is_some_and(|s| s.len() < 32) {
        return Err(GatewayError::Config(
            "the token key must be at least 32 bytes".into(),
        ));
    }
    let hubs = config.hub_map().map_err(GatewayError::Config)?;
    let auth = Authenticator::new(
        token_secret.as_deref(),
        &config.token_audience,
        hubs,
        config.insecure_dev,
    );
    let producer = EventProducer::new(&kafka, config.produce_timeout())?;
    let gateway = Arc::new(Gateway::new(
        &config,
        producer,
        WireCodec::new(&registry)?,
        keyer,
        auth,
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

    let mut builder = Server::builder()
        .concurrency_limit_per_connection(256)
        .timeout(Duration::from_secs(120));
    if !config.insecure_dev {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Err(GatewayError::Config(
                "TLS certificate and key are required".into(),
            ));
        };
        builder = builder.tls_config(server_tls(cert, key, config.client_ca.as_deref())?)?;
    }
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, tls = !config.insecure_dev, "gateway listening");
    let drain = shutdown.clone();
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain.cancelled_owned())
        .await?;

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
