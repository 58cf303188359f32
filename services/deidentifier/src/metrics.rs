//! Metrics of the de-identification service.

use lienthong_telemetry::{Metric, describe, zero};

/// `lienthong_deidentifier_events_total`: analytics events committed, by analytics topic kind
pub const EVENTS: Metric = Metric::counter(
    "lienthong_deidentifier_events_total",
    &["kind"],
    "Analytics events committed, by kind (referral, appointment, lab-result, referral-receipt)",
);

/// `lienthong_deidentifier_transactions_total`: transactions, by outcome
pub const TRANSACTIONS: Metric = Metric::counter(
    "lienthong_deidentifier_transactions_total",
    &["outcome"],
    "Kafka transactions, by outcome (committed, aborted)",
);

/// `lienthong_deidentifier_batch_retries_total`: batches retried after a transient failure
pub const BATCH_RETRIES: Metric = Metric::counter(
    "lienthong_deidentifier_batch_retries_total",
    &[],
    "Batches retried after a transient failure (registry, dead letters, transaction)",
);

/// `lienthong_deidentifier_transaction_seconds`: time to produce and commit one transaction
pub const TRANSACTION_SECONDS: Metric = Metric::histogram(
    "lienthong_deidentifier_transaction_seconds",
    &[],
    "Time to produce one batch and commit its transaction with its offsets",
);

/// `lienthong_deidentifier_producer_replacements_total`: transactional producers replaced after a wedged call
pub const PRODUCER_REPLACEMENTS: Metric = Metric::counter(
    "lienthong_deidentifier_producer_replacements_total",
    &[],
    "Transactional producers replaced because a call did not return long after its timeout (its batch is produced again)",
);

/// `lienthong_deidentifier_rewinds_total`: batches read again after the consumer's group membership was lost
pub const REWINDS: Metric = Metric::counter(
    "lienthong_deidentifier_rewinds_total",
    &[],
    "Times the consumer's group membership was gone at commit: the open batches were aborted and read again from the committed offsets",
);

/// `lienthong_analytics_risk_min_group_size`: smallest group of distinct patients sharing the kept quasi-identifiers
pub const RISK_MIN_GROUP: Metric = Metric::gauge(
    "lienthong_analytics_risk_min_group_size",
    &[],
    "Smallest number of distinct patients sharing one combination of the kept quasi-identifiers (k) in the sliding window",
);

/// `lienthong_analytics_risk_share_below_floor`: share of the window's events in groups below the floor
pub const RISK_SHARE_BELOW: Metric = Metric::gauge(
    "lienthong_analytics_risk_share_below_floor",
    &[],
    "Share (0 to 1) of the sliding window's events whose combination is shared by fewer patients than the policy's k_floor",
);

/// `lienthong_analytics_risk_window_events`: events in the risk window
pub const RISK_WINDOW_EVENTS: Metric = Metric::gauge(
    "lienthong_analytics_risk_window_events",
    &[],
    "Events in the sliding window the risk is measured over",
);

/// `lienthong_analytics_risk_k_floor`: the policy's floor for k
pub const RISK_K_FLOOR: Metric = Metric::gauge(
    "lienthong_analytics_risk_k_floor",
    &[],
    "The policy's k_floor",
);

/// `lienthong_analytics_age_band_years`: width of the age bands being published
pub const AGE_BAND_YEARS: Metric = Metric::gauge(
    "lienthong_analytics_age_band_years",
    &[],
    "Width in years of the age bands being published (widens when k falls below the floor)",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    EVENTS,
    TRANSACTIONS,
    BATCH_RETRIES,
    TRANSACTION_SECONDS,
    PRODUCER_REPLACEMENTS,
    REWINDS,
    RISK_MIN_GROUP,
    RISK_SHARE_BELOW,
    RISK_WINDOW_EVENTS,
    RISK_K_FLOOR,
    AGE_BAND_YEARS,
];

/// Describes these metrics and starts their counters at zero.
pub fn register() {
    describe(ALL);
    describe(lienthong_kafka::metrics::ALL);
    for kind in crate::transform::AnalyticsKind::ALL {
        zero(&EVENTS, &[("kind", kind.as_str().into())]);
    }
    for outcome in ["committed", "aborted"] {
        zero(&TRANSACTIONS, &[("outcome", outcome.into())]);
    }
    zero(&BATCH_RETRIES, &[]);
    zero(&PRODUCER_REPLACEMENTS, &[]);
    zero(&REWINDS, &[]);
}
