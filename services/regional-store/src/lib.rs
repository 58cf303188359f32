//! The regional store: per-province materialized views of the clinical documents in sled,
//! exactly once under crashes and rebalances, with a clinician query API.

pub mod audit;
pub mod bundles;
pub mod care;
pub mod config;
pub mod consumer;
pub mod filing;
pub mod health;
pub mod lists;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod packed;
pub mod query;
pub mod rebuild;
pub mod server;
pub mod store;
