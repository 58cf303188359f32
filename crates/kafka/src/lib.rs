//! Kafka for lienthong: connection settings shared by every binary, the idempotent producer,
//! topics and ACLs as code.

pub mod acls;
pub mod assignment;
pub mod build;
pub mod connection;
pub mod consumption;
pub mod dlq;
pub mod error;
pub mod follow;
pub mod metrics;
pub mod producer;
pub mod topics;
pub mod trace;

pub use connection::{KafkaArgs, SecurityProtocol};
pub use error::{Error, Result};
pub use producer::{Delivery, EventProducer};
