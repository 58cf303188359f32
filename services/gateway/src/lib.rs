//! The ingest gateway: facilities publish clinical events over authenticated gRPC; each event is
//! validated, pseudonymized, framed through the schema registry and produced with the idempotent
//! producer, and acknowledged only after Kafka's delivery report.

pub mod config;
pub mod dedupe;
pub mod directory;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod server;
mod service;

pub use config::GatewayConfig;
pub use pipeline::Gateway;
pub use server::{GatewayError, run};
