//! Metrics of the warehouse loader.

use lienthong_telemetry::{Metric, MetricKind, describe, zero};

/// `lienthong_warehouse_rows_total`: rows written, by table (event_history, current)
pub const ROWS: Metric = Metric {
    name: "lienthong_warehouse_rows_total",
    kind: MetricKind::Counter,
    labels: &["table"],
    help: "Rows written, by table (event_history, current)",
};

/// `lienthong_warehouse_skipped_total`: messages already applied (replays) and skipped
pub const SKIPPED: Metric = Metric {
    name: "lienthong_warehouse_skipped_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Messages already applied (replays) and skipped",
};

/// `lienthong_warehouse_batch_retries_total`: batches retried after a transient failure
pub const BATCH_RETRIES: Metric = Metric {
    name: "lienthong_warehouse_batch_retries_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Batches retried after a transient failure",
};

/// `lienthong_warehouse_commit_seconds`: time to write and commit one batch
pub const COMMIT_SECONDS: Metric = Metric {
    name: "lienthong_warehouse_commit_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Time to write and commit one batch",
};

/// `lienthong_warehouse_batch_size`: messages per committed batch
pub const BATCH_SIZE: Metric = Metric {
    name: "lienthong_warehouse_batch_size",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Messages per committed batch",
};

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[ROWS, SKIPPED, BATCH_RETRIES, COMMIT_SECONDS, BATCH_SIZE];

/// Describes these metrics and starts their counters at zero.
pub fn register() {
    describe(ALL);
    describe(lienthong_kafka::metrics::ALL);
    for table in ["event_history", "current"] {
        zero(&ROWS, &[("table", table.into())]);
    }
    zero(&SKIPPED, &[]);
    zero(&BATCH_RETRIES, &[]);
}
