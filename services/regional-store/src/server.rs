//! Running a regional store: one supervised consumer task per region and the query API, owned
//! by one JoinSet and stopped by one CancellationToken (consumers finish their batch and flush
//! sled).

use std::sync::Arc;
use std::time::Duration;

use lienthong_core::{DocumentKind, PatientKeyer};
use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_proto::v1::regional_query_service_server::RegionalQueryServiceServer;
use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet, WireCodec};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::RegionalConfig;
use crate::health::RegionHealth;
use crate::live::{LiveStores, supervise_region};
use crate::query::QueryApi;

/// How long the consumers get to finish their batch and flush sled after the shutdown signal
/// before they are aborted (an aborted batch is read again from the stored offsets).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the store until `shutdown`.
pub async fn run(
    config: RegionalConfig,
    kafka: KafkaArgs,
    registry: RegistryArgs,
    keyer: PatientKeyer,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    crate::metrics::register(&config.regions);
    // Not ready from the first moment (the revocations and the registry come first); the
    // query API listens once those are done, NOT_SERVING until every region's store is open
    // and caught up.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let region_health = RegionHealth::opening(&config.regions, health_reporter).await;
    let builder = config.serving.server("the query API")?;
    let revocations = Arc::new(lienthong_grpc::Revocations::default());
    let auth = config
        .serving
        .authenticator(lienthong_grpc::REGIONAL_AUDIENCE, Arc::clone(&revocations))?;
    kafka.probe().await?;
    // Tokens are accepted only once every revocation made before this start is known.
    let follower = lienthong_kafka::follow::Follower::start(
        &kafka,
        config.serving.revocations_topic(),
        move |record| revocations.apply_record(record),
        &shutdown,
    )
    .await?;
    let mut schemas = SchemaSet::built_in()
        .with_receipt_topic(&config.topic_receipt)
        .with_audit_topic(&config.audit_topic);
    for kind in DocumentKind::ALL {
        schemas = schemas.with_topic(kind, config.topic(kind));
    }
    let registered = schemas.register(&RegistryClient::new(&registry)?).await?;
    let codec = Arc::new(WireCodec::new(&registry)?);
    codec.remember(&registered);
    let producer = EventProducer::new(&kafka, Duration::from_secs(15))?;

    let stores = LiveStores::opening(&config.regions, region_health.clone());
    let mut tasks = JoinSet::new();
    for region in &config.regions {
        tasks.spawn(supervise_region(
            region.clone(),
            config.clone(),
            kafka.clone(),
            Arc::clone(&codec),
            producer.clone(),
            stores.clone(),
            shutdown.clone(),
        ));
    }

    let window = time::Duration::days(i64::from(config.care_window_days));
    let api = QueryApi {
        stores,
        auth,
        keyer,
        producer: producer.clone(),
        codec: Arc::clone(&codec),
        audit: crate::audit::AuditLog {
            producer: producer.clone(),
            codec,
            topic: config.audit_topic.clone(),
            health: region_health.clone(),
        },
        receipt_topic: config.topic_receipt.clone(),
        care: crate::care::CareRule { window },
        attestations: crate::care::Attestations::new(window),
        read_limit: lienthong_grpc::FacilityRateLimit::new(
            f64::from(config.patient_reads_per_minute) / 60.0,
            f64::from(config.patient_read_burst),
        ),
        acknowledged: std::sync::Mutex::new(std::collections::HashMap::new()),
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lienthong_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut builder = builder.timeout(Duration::from_secs(30));
    tracing::info!(addr = ?listener.local_addr().ok(), regions = ?config.regions, "regional store serving");
    let serve = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(RegionalQueryServiceServer::new(api))
        .serve_with_incoming_shutdown(
            config.serving.incoming(listener)?,
            shutdown.clone().cancelled_owned(),
        );
    tokio::pin!(serve);
    // A region whose store cannot be opened or whose consumer stops with an error stops the
    // instance: a replica that can no longer follow its region must not linger half alive.
    let mut failed = None;
    let served = loop {
        tokio::select! {
            served = &mut serve => break served,
            Some(ended) = tasks.join_next() => {
                let error = match ended {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::Error::new(e),
                };
                tracing::error!(error = format!("{error:#}"), "a region stopped; stopping the store");
                failed.get_or_insert(error);
                shutdown.cancel();
            }
        }
    };
    shutdown.cancel();
    lienthong_runtime::drain(&mut tasks, "regional consumer", SHUTDOWN_GRACE).await;
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    if let Some(follower) = follower {
        follower.finish().await;
    }
    if let Some(error) = failed {
        return Err(error);
    }
    served?;
    Ok(())
}
