//! The ingest gateway: facilities publish clinical events over authenticated gRPC; each event is
//! validated, pseudonymized, framed through the schema registry and produced with the idempotent
//! producer, and acknowledged only after Kafka's delivery report.

pub mod client;
pub mod config;
pub mod dedupe;
pub mod identity;
pub mod keys;
pub mod limits;
pub mod pipeline;
pub mod server;
mod service;

pub use config::GatewayConfig;
pub use identity::{Authenticator, Identity};
pub use pipeline::Gateway;
pub use server::{GatewayError, run, server_tls, token_secret};
