//! The facility agent: reads the MoH XML tables a hospital information system already exports
//! (QĐ 130 as amended by QĐ 4750 and QĐ 3176), turns them into lienthong events, and delivers
//! them to the gateway through a durable outbox that survives outages and restarts.

pub mod commands;
pub mod config;
pub mod conversions;
pub mod grpc;
pub mod http;
pub mod inbox;
pub mod listen;
pub mod local_callers;
pub mod metrics;
pub mod outbox;
pub mod revisions;
pub mod sender;
pub mod settings_file;
pub mod status;
pub mod xml;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;

/// Runs the agent until `shutdown`: the inbox watcher, the sender and the status writer, each
/// a task owned here and stopped by the same token.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::metrics::register();
    // Both hold personal data: exports waiting and events not yet delivered. The inbox may be
    // shared with the HIS's group (it writes there); never with others.
    lienthong_runtime::private_dir(&config.data_dir)?;
    lienthong_runtime::drop_dir(&config.inbox)?;
    let outbox = outbox::Outbox::open(&config.outbox_dir(), config.max_pending)?;
    tracing::info!(pending = outbox.pending(), rejected = outbox.dead(), inbox = %config.inbox.display(), gateway = %config.gateway.url, "facility agent started");
    let state: sender::SharedState = Arc::new(Mutex::new(sender::SenderState::default()));
    let conversions = config.conversions();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sender::run(
        outbox.clone(),
        config.gateway.clone(),
        sender::RequestSize {
            events: config.batch,
            bytes: config.max_request_bytes as usize,
        },
        Arc::clone(&state),
        shutdown.clone(),
    ));
    if !config.http_listen.is_empty() {
        let listener = listen::bind_intake(
            "HTTP",
            "--http-listen",
            &config.http_listen,
            config.intake_beyond_loopback,
        )
        .await?;
        tracing::info!(addr = %config.http_listen, "HTTP intake listening");
        tasks.spawn(http::serve(
            listener,
            outbox.clone(),
            Arc::clone(&state),
            conversions.clone(),
            local_callers::LocalCallers::new(&config.intake_host_names),
            shutdown.clone(),
        ));
    }
    if !config.grpc_listen.is_empty() {
        let listener = listen::bind_intake(
            "gRPC",
            "--grpc-listen",
            &config.grpc_listen,
            config.intake_beyond_loopback,
        )
        .await?;
        tracing::info!(addr = %config.grpc_listen, "gRPC intake listening");
        tasks.spawn(grpc::serve(
            listener,
            outbox.clone(),
            conversions.clone(),
            shutdown.clone(),
        ));
    }
    {
        let (config, outbox, shutdown) = (config.clone(), outbox.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut inbox = inbox::Inbox::new(conversions);
            loop {
                inbox.poll(&config.inbox, &outbox).await?;
                tokio::select! {
                    _ = tokio::time::sleep(config.poll()) => {},
                    _ = shutdown.cancelled() => return anyhow::Ok(()),
                }
            }
        });
    }
    {
        let (config, outbox, shutdown) = (config.clone(), outbox.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                if config.retry_request_file().exists() {
                    let n = outbox.retry_dead().await?;
                    std::fs::remove_file(config.retry_request_file())?;
                    tracing::info!(events = n, "rejected events queued again");
                }
                let status = status::current(&outbox, &state)?;
                if let Err(e) = status::write(&config, &status) {
                    tracing::warn!(error = %e, "cannot write the status file");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                    _ = shutdown.cancelled() => return anyhow::Ok(()),
                }
            }
        });
    }
    // Until the signal or the first failure; then every task gets the same deadline.
    let mut result = Ok(());
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => return result,
                Some(done) => {
                    if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
                        tracing::error!(error = format!("{e:#}"), "agent task failed; stopping");
                        result = Err(e);
                        break;
                    }
                }
            },
            () = shutdown.cancelled() => break,
        }
    }
    shutdown.cancel();
    lienthong_runtime::drain(&mut tasks, "agent task", SHUTDOWN_GRACE).await;
    result
}

/// How long the agent's tasks get to finish after the shutdown signal (a send in flight, a
/// file being taken in) before they are aborted; what they left is taken up at the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
