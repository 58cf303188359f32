//! The de-identification service: the one place where personal data leaves the document
//! topics. It consumes the document topics and produces the analytics topics under the
//! reviewed policy (policy.toml), exactly once through Kafka transactions, and measures the
//! re-identification risk of what it publishes.

pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod risk;
mod transaction;
pub mod transform;
pub mod widening;

pub use config::{AnalyticsTopics, DeidentifierConfig};
pub use pipeline::{DeidentifierError, run};
pub use policy::Policy;
pub use transform::{AnalyticsEvent, AnalyticsKind, Deidentifier};
