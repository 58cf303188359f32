//! What an ACL binding is, as lienthong manages them: allow rules for one principal on topics,
//! consumer groups or transactional ids, from any host.

use std::fmt;

/// What kind of resource a binding covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A transactional id.
    TransactionalId,
}

/// Whether the name is the whole name or a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternKind {
    /// The exact name.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// What the principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Consume (topics) or join (groups).
    Read,
    /// Produce.
    Write,
    /// See metadata and offsets.
    Describe,
    /// Read topic configs (the gateway reads each topic's size limit).
    DescribeConfigs,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    /// Kafka principal, e.g. `User:gateway`.
    pub principal: String,
    /// Resource kind.
    pub resource: ResourceKind,
    /// Resource name or prefix.
    pub name: String,
    /// Literal or prefixed.
    pub pattern: PatternKind,
    /// Allowed operation.
    pub operation: Operation,
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = match self.resource {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::TransactionalId => "transactional-id",
        };
        let pattern = match self.pattern {
            PatternKind::Literal => "",
            PatternKind::Prefixed => "*",
        };
        let op = match self.operation {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Describe => "DESCRIBE",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
        };
        write!(
            f,
            "{} {op} {resource} {}{pattern}",
            self.principal, self.name
        )
    }
}
