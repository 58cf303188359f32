//! Metrics of the warehouse loader.

use lienthong_telemetry::{Metric, describe, zero};

/// `lienthong_warehouse_rows_total`: rows written, by table (event_history, current)
pub const ROWS: Metric = Metric::counter(
    "lienthong_warehouse_rows_total",
    &["table"],
    "Rows written, by table (event_history, current)",
);

/// `lienthong_warehouse_conflicts_total`: events dead-lettered as a stored version with other content
pub const CONFLICTS: Metric = Metric::counter(
    "lienthong_warehouse_conflicts_total",
    &[],
    "Events dead-lettered as the stored version of their document with other content",
);

/// `lienthong_warehouse_skipped_total`: messages already applied (replays) and skipped
pub const SKIPPED: Metric = Metric::counter(
    "lienthong_warehouse_skipped_total",
    &[],
    "Messages already applied (replays) and skipped",
);

/// `lienthong_warehouse_batch_retries_total`: batches retried after a transient failure
pub const BATCH_RETRIES: Metric = Metric::counter(
    "lienthong_warehouse_batch_retries_total",
    &[],
    "Batches retried after a transient failure",
);

/// `lienthong_warehouse_commit_seconds`: time to write and commit one batch
pub const COMMIT_SECONDS: Metric = Metric::histogram(
    "lienthong_warehouse_commit_seconds",
    &[],
    "Time to write and commit one batch",
);

/// `lienthong_warehouse_batch_size`: messages per committed batch
pub const BATCH_SIZE: Metric = Metric::histogram(
    "lienthong_warehouse_batch_size",
    &[],
    "Messages per committed batch",
);

/// `lienthong_warehouse_freshness_seconds`: time from an event's acceptance at the gateway to its rows being committed
pub const FRESHNESS: Metric = Metric::histogram(
    "lienthong_warehouse_freshness_seconds",
    &[],
    "Time from an event's acceptance at the gateway (the analytics record carries its timestamp) to its rows being committed in the warehouse",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    ROWS,
    SKIPPED,
    CONFLICTS,
    BATCH_RETRIES,
    COMMIT_SECONDS,
    BATCH_SIZE,
    FRESHNESS,
];

/// Describes these metrics and starts their counters at zero.
pub fn register() {
    describe(ALL);
    describe(lienthong_kafka::metrics::ALL);
    for table in ["event_history", "current"] {
        zero(&ROWS, &[("table", table.into())]);
    }
    zero(&SKIPPED, &[]);
    zero(&CONFLICTS, &[]);
    zero(&BATCH_RETRIES, &[]);
}
