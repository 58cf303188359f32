//! Topics as code: a checked-in spec (deploy/topics.toml) applied idempotently to a cluster.

mod apply;
mod names;
mod spec;

pub use apply::{TopicChange, TopicState, apply, describe};
pub use names::DocumentTopics;
pub use spec::{CleanupPolicy, ReplicationOverride, TopicSpec, TopicsSpec};

/// The spec shipped with lienthong (deploy/topics.toml), used when no --spec is given.
pub const DEFAULT_SPEC: &str = include_str!("../../../../deploy/topics.toml");
