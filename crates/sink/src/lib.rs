//! The one path of a consumed message, shared by every sink (the regional store, the warehouse
//! loader) and by the regional rebuild: decode through the registry, recognise a receipt,
//! validate an event, recognise a de-identified analytics event, and dead-letter what is poison, durably, before the offset moves past
//! it. The sink only maps what was read into what it writes. Retrying what is transient, with
//! backoff, belongs here too, as do the settings of a consumer that keeps its own offsets.

pub mod analytics;
pub mod freshness;
pub mod message;
pub mod retry;
pub mod settings;

pub use analytics::AnalyticsMessage;
pub use message::{Consumed, MessageReader, Origin, Transient};
pub use retry::{Retrying, retry, retry_unless};
pub use settings::sink_consumer_config;
