//! The stores a running instance serves, swappable while it serves: a completed rebuild
//! (`lienthong regional rebuild`) replaces a region's store without a restart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lienthong_kafka::{EventProducer, KafkaArgs};
use lienthong_registry::WireCodec;
use tokio_util::sync::CancellationToken;

use crate::config::RegionalConfig;
use crate::consumer::run_region;
use crate::health::{Condition, RegionHealth};
use crate::store::RegionStore;

/// How often a serving instance looks for a completed rebuild.
pub const REBUILD_POLL: Duration = Duration::from_secs(2);

/// A region's store, or None while it opens (at start, or a swap opens the rebuilt store).
type Slot = (String, Option<Arc<RegionStore>>);

/// The stores of the regions an instance serves, shared by the query API and the consumers,
/// with whether each may answer.
#[derive(Clone)]
pub struct LiveStores {
    slots: Arc<RwLock<Vec<Slot>>>,
    health: RegionHealth,
}

/// A region's store cannot answer now; another replica, or this one in a moment, can.
#[derive(Debug, thiserror::Error)]
#[error(
    "region {region} cannot answer on this replica now ({why}); retry on another replica or in a moment"
)]
pub struct NotAnswering {
    /// The region.
    pub region: String,
    /// Why: opening, catching up.
    pub why: String,
}

impl LiveStores {
    /// The given regions, every store still to open.
    pub fn opening(regions: &[String], health: RegionHealth) -> Self {
        Self {
            slots: Arc::new(RwLock::new(
                regions.iter().map(|r| (r.clone(), None)).collect(),
            )),
            health,
        }
    }

    /// Puts `region`'s opened store in service (answering once its health says so).
    pub fn put(&self, region: &str, store: RegionStore) {
        self.set(region, Some(Arc::new(store)));
    }

    /// The regions' health.
    pub fn health(&self) -> &RegionHealth {
        &self.health
    }

    /// Every region's current store (cheap handles, safe to hold for one request); an error
    /// when one is not open or not caught up.
    pub fn snapshot(&self) -> Result<Vec<(String, Arc<RegionStore>)>, NotAnswering> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .map(|(r, s)| {
                let condition = self.health.of(r);
                match s {
                    Some(s) if condition.answers() => Ok((r.clone(), Arc::clone(s))),
                    _ => Err(NotAnswering {
                        region: r.clone(),
                        why: condition
                            .reason()
                            .unwrap_or_else(|| "the store is opening".into()),
                    }),
                }
            })
            .collect()
    }

    /// The current store of `region`.
    pub fn get(&self, region: &str) -> Option<Arc<RegionStore>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .find(|(r, _)| r == region)
            .and_then(|(_, s)| s.clone())
    }

    fn set(&self, region: &str, store: Option<Arc<RegionStore>>) -> Option<Arc<RegionStore>> {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        slots
            .iter_mut()
            .find(|(r, _)| r == region)
            .and_then(|(_, s)| std::mem::replace(s, store))
    }

    /// Swaps `region`'s store for a completed rebuild: takes the store out of service, waits
    /// until no request holds it (sled must be closed before its folder moves), moves the
    /// folders and opens the rebuilt store.
    pub async fn swap_in_rebuild(
        &self,
        config: &RegionalConfig,
        region: &str,
    ) -> anyhow::Result<()> {
        self.health.set(region, Condition::Opening).await;
        if let Some(mut old) = self.set(region, None) {
            loop {
                match Arc::try_unwrap(old) {
                    Ok(store) => {
                        tokio::task::spawn_blocking(move || drop(store)).await?;
                        break;
                    }
                    Err(still_shared) => {
                        old = still_shared;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        // A rebuild leaves a checkpoint: opening it reads no bundle.
        let opened = {
            let (config, region) = (config.clone(), region.to_owned());
            tokio::task::spawn_blocking(move || open_store(&config, &region)).await?
        };
        // On failure the region stays out of service (queries say so) rather than serving a
        // half-swapped store; the error goes to the supervisor's log and the next start.
        // Answering again once the consumer's next check finds it caught up.
        let store = opened?;
        self.put(region, store);
        Ok(())
    }
}

/// Opens a region's store, then runs its consumer and, whenever a completed rebuild appears, stops the consumer
/// (it finishes its batch and flushes), swaps the rebuilt store in and starts again from the
/// rebuilt store's own offsets. Returns at `shutdown`, or with the consumer's error.
pub async fn supervise_region(
    region: String,
    config: RegionalConfig,
    kafka: KafkaArgs,
    codec: Arc<WireCodec>,
    producer: EventProducer,
    stores: LiveStores,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    {
        // Off the runtime's workers: opening reads the store's structures.
        let (c, r) = (config.clone(), region.clone());
        let store = tokio::task::spawn_blocking(move || open_store(&c, &r)).await??;
        stores.put(&region, store);
    }
    loop {
        let store = stores
            .get(&region)
            .ok_or_else(|| anyhow::anyhow!("region {region} has no open store"))?;
        let stop = shutdown.child_token();
        let mut consumer = tokio::spawn(run_region(
            region.clone(),
            config.clone(),
            kafka.clone(),
            Arc::clone(&codec),
            producer.clone(),
            RegionStore::clone(&store),
            stores.health().clone(),
            stop.clone(),
        ));
        drop(store);
        let swap = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                ended = &mut consumer => {
                    // The consumer stopped by itself: report it as the region's end.
                    return ended?;
                }
                _ = tokio::time::sleep(REBUILD_POLL) => {
                    if crate::rebuild::rebuild_ready(&config, &region) {
                        break true;
                    }
                }
            }
        };
        stop.cancel();
        consumer.await??;
        if !swap {
            return Ok(());
        }
        tracing::info!(region, "a completed rebuild is waiting: swapping it in");
        stores.swap_in_rebuild(&config, &region).await?;
        metrics::counter!(crate::metrics::SWAPS.name, "region" => region.clone()).increment(1);
        tracing::info!(region, "rebuilt store swapped in while serving");
    }
}

/// Opens the store of `region` under the data folder.
pub fn open_store(config: &RegionalConfig, region: &str) -> anyhow::Result<RegionStore> {
    crate::rebuild::swap_in_if_ready(config, region)?;
    let path = config.data_dir.join(format!("region-{region}"));
    // Private whatever created it: the store holds full personal data.
    lienthong_runtime::private_dir(&config.data_dir)?;
    lienthong_runtime::private_dir(&path)?;
    let started = std::time::Instant::now();
    let store = RegionStore::open(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the store of region {region} in {}: {e}",
            path.display()
        )
    })?;
    // Say what the wait was and why: a checkpoint and what came after it, or every bundle.
    tracing::info!(
        region,
        documents = store.filed_documents(),
        listed = store.listed_documents(),
        from = ?store.opened_from(),
        seconds = started.elapsed().as_secs_f64(),
        "store opened"
    );
    Ok(store)
}
