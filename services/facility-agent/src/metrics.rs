//! Metrics of the facility agent.

use lienthong_telemetry::{Metric, MetricKind, describe, zero};

/// `lienthong_agent_files_total`: export files taken, by where they went (done, rejected)
pub const FILES: Metric = Metric {
    name: "lienthong_agent_files_total",
    kind: MetricKind::Counter,
    labels: &["result"],
    help: "Export files taken, by where they went (done, rejected)",
};

/// `lienthong_agent_intake_events_total`: events put into the outbox
pub const INTAKE_EVENTS: Metric = Metric {
    name: "lienthong_agent_intake_events_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Events put into the outbox",
};

/// `lienthong_agent_intake_paused_total`: times intake paused because the outbox was full
pub const INTAKE_PAUSED: Metric = Metric {
    name: "lienthong_agent_intake_paused_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Times intake paused because the outbox was full",
};

/// `lienthong_agent_events_total`: events settled with the gateway, by outcome
pub const EVENTS: Metric = Metric {
    name: "lienthong_agent_events_total",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    help: "Events settled with the gateway, by outcome",
};

/// `lienthong_agent_send_failures_total`: failed sends to the gateway, by gRPC code
pub const SEND_FAILURES: Metric = Metric {
    name: "lienthong_agent_send_failures_total",
    kind: MetricKind::Counter,
    labels: &["code"],
    help: "Failed sends to the gateway, by gRPC code",
};

/// `lienthong_agent_pending_events`: events waiting in the outbox
pub const PENDING: Metric = Metric {
    name: "lienthong_agent_pending_events",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Events waiting in the outbox",
};

/// `lienthong_agent_oldest_pending_seconds`: age of the oldest event waiting in the outbox
pub const OLDEST_PENDING_SECONDS: Metric = Metric {
    name: "lienthong_agent_oldest_pending_seconds",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Age of the oldest event waiting in the outbox",
};

/// `lienthong_agent_rejected_events`: events the gateway refused, kept for review
pub const REJECTED: Metric = Metric {
    name: "lienthong_agent_rejected_events",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Events the gateway refused, kept for review",
};

/// `lienthong_agent_outbox_fill_ratio`: outbox fill, 0 to 1
pub const OUTBOX_FILL_RATIO: Metric = Metric {
    name: "lienthong_agent_outbox_fill_ratio",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Outbox fill, 0 to 1",
};

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    FILES,
    INTAKE_EVENTS,
    INTAKE_PAUSED,
    EVENTS,
    SEND_FAILURES,
    PENDING,
    OLDEST_PENDING_SECONDS,
    REJECTED,
    OUTBOX_FILL_RATIO,
];

/// Describes these metrics and starts their counters at zero.
pub fn register() {
    describe(ALL);
    for result in ["done", "rejected"] {
        zero(&FILES, &[("result", result.into())]);
    }
    for outcome in ["accepted", "duplicate", "rejected"] {
        zero(&EVENTS, &[("outcome", outcome.into())]);
    }
    zero(&INTAKE_EVENTS, &[]);
    zero(&INTAKE_PAUSED, &[]);
}
