//! Metrics of the regional store: applying, the store's size, the query API.

use lienthong_telemetry::{Metric, describe, zero};

/// `lienthong_regional_applied_total`: events applied to the region's store
pub const APPLIED: Metric = Metric::counter(
    "lienthong_regional_applied_total",
    &["region"],
    "Events applied to the region's store",
);

/// `lienthong_regional_stale_total`: duplicates, older versions and replayed messages skipped
pub const STALE: Metric = Metric::counter(
    "lienthong_regional_stale_total",
    &["region"],
    "Duplicates, older versions and replayed messages skipped",
);

/// `lienthong_regional_conflicts_total`: events dead-lettered as the stored version with other content
pub const CONFLICTS: Metric = Metric::counter(
    "lienthong_regional_conflicts_total",
    &["region"],
    "Events dead-lettered as the stored version of their document with other content",
);

/// `lienthong_regional_apply_seconds`: time to apply one consumer batch
pub const APPLY_SECONDS: Metric = Metric::histogram(
    "lienthong_regional_apply_seconds",
    &[],
    "Time to apply one consumer batch",
);

/// `lienthong_regional_store_bytes`: bytes of the region's store on disk
pub const STORE_BYTES: Metric = Metric::gauge(
    "lienthong_regional_store_bytes",
    &["region"],
    "Bytes of the region's store on disk",
);

/// `lienthong_regional_filed_documents`: document ids held in memory by the filing
pub const FILED: Metric = Metric::gauge(
    "lienthong_regional_filed_documents",
    &["region"],
    "Document ids held in memory by the filing",
);

/// `lienthong_regional_listed_documents`: worklist and appointment entries held in memory
pub const LISTED: Metric = Metric::gauge(
    "lienthong_regional_listed_documents",
    &["region"],
    "Worklist and appointment entries held in memory",
);

/// `lienthong_regional_bundles`: sled values holding the documents, about a hundred each
pub const BUNDLES: Metric = Metric::gauge(
    "lienthong_regional_bundles",
    &["region"],
    "sled values holding the documents, about a hundred each",
);

/// `lienthong_regional_batch_retries_total`: consumer batches retried after a transient failure
pub const BATCH_RETRIES: Metric = Metric::counter(
    "lienthong_regional_batch_retries_total",
    &[],
    "Consumer batches retried after a transient failure (registry, dead-letter topic, store)",
);

/// `lienthong_regional_swaps_total`: rebuilt stores swapped in while serving
pub const SWAPS: Metric = Metric::counter(
    "lienthong_regional_swaps_total",
    &["region"],
    "Rebuilt stores swapped in while serving",
);

/// `lienthong_regional_queries_total`: query API calls by method and outcome (ok, or the gRPC code of the failure)
pub const QUERIES: Metric = Metric::counter(
    "lienthong_regional_queries_total",
    &["method", "outcome"],
    "Query API calls by method and outcome (ok, or the gRPC code of the failure)",
);

/// `lienthong_regional_query_seconds`: time to answer a query API call, failures included
pub const QUERY_SECONDS: Metric = Metric::histogram(
    "lienthong_regional_query_seconds",
    &["method"],
    "Time to answer a query API call, failures included",
);

/// `lienthong_regional_break_glass_total`: patient reads answered without a care relationship (EMERGENCY)
pub const BREAK_GLASS: Metric = Metric::counter(
    "lienthong_regional_break_glass_total",
    &["facility"],
    "Patient reads answered without a care relationship because the purpose was EMERGENCY (break-the-glass), by calling facility",
);

/// `lienthong_regional_access_refused_total`: patient reads refused for want of a care relationship or over the read limit
pub const ACCESS_REFUSED: Metric = Metric::counter(
    "lienthong_regional_access_refused_total",
    &["reason"],
    "Patient reads refused: no care relationship (no_relationship), a card that does not match (card_mismatch), or over the facility's read limit (read_limit)",
);

/// `lienthong_regional_audit_failures_total`: access records not stored (their answers withheld)
pub const AUDIT_FAILURES: Metric = Metric::counter(
    "lienthong_regional_audit_failures_total",
    &["reason"],
    "Access records not stored, so their answers were withheld: Kafka known unreachable (kafka_unreachable, refused at once) or the record not acknowledged (not_acknowledged)",
);

/// `lienthong_regional_ready`: 1 while the region's store is open, caught up and in touch with Kafka
pub const READY: Metric = Metric::gauge(
    "lienthong_regional_ready",
    &["region"],
    "1 while the region's store is open, caught up within --ready-max-lag and in touch with Kafka (gRPC health SERVING), else 0",
);

/// `lienthong_regional_behind_messages`: messages of the region's topics not yet in its store
pub const BEHIND: Metric = Metric::gauge(
    "lienthong_regional_behind_messages",
    &["region"],
    "Messages of the region's topics not yet in this replica's store (high watermarks less stored positions)",
);

/// `lienthong_regional_checkpoint_seconds`: time to write a checkpoint of a store's in-memory structures
pub const CHECKPOINT_SECONDS: Metric = Metric::histogram(
    "lienthong_regional_checkpoint_seconds",
    &[],
    "Time to write a checkpoint of a store's in-memory structures (the writer waits for part of it)",
);

/// `lienthong_regional_freshness_seconds`: time from an event's acceptance at the gateway to its being stored
pub const FRESHNESS: Metric = Metric::histogram(
    "lienthong_regional_freshness_seconds",
    &[],
    "Time from an event's acceptance at the gateway (its Kafka timestamp) to its batch being stored in the region's store",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    BATCH_RETRIES,
    APPLIED,
    STALE,
    CONFLICTS,
    APPLY_SECONDS,
    STORE_BYTES,
    FILED,
    LISTED,
    BUNDLES,
    SWAPS,
    QUERIES,
    QUERY_SECONDS,
    BREAK_GLASS,
    ACCESS_REFUSED,
    AUDIT_FAILURES,
    READY,
    BEHIND,
    CHECKPOINT_SECONDS,
    FRESHNESS,
];

/// The query methods, as the `method` label names them.
pub const QUERY_METHODS: [&str; 5] = [
    "GetPatientRecord",
    "ListIncomingReferrals",
    "ListAppointments",
    "FindReusableLabResults",
    "AcknowledgeReferral",
];

/// Outcomes of a query call started at zero (any other failure code appears at its first use).
const QUERY_OUTCOMES: [tonic::Code; 6] = [
    tonic::Code::Ok,
    tonic::Code::InvalidArgument,
    tonic::Code::Unauthenticated,
    tonic::Code::PermissionDenied,
    tonic::Code::Unavailable,
    tonic::Code::Internal,
];

/// The `outcome` label of a query call: `ok`, or its failure's gRPC code in snake case.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Describes these metrics and starts the counters of `regions` and of the query API at zero.
pub fn register(regions: &[String]) {
    describe(ALL);
    describe(lienthong_kafka::metrics::ALL);
    describe(lienthong_grpc::metrics::ALL);
    for region in regions {
        for metric in [&APPLIED, &STALE, &CONFLICTS, &SWAPS, &READY] {
            zero(metric, &[("region", region.clone())]);
        }
    }
    zero(&BATCH_RETRIES, &[]);
    for reason in ["no_relationship", "card_mismatch", "read_limit"] {
        zero(&ACCESS_REFUSED, &[("reason", reason.into())]);
    }
    for reason in ["kafka_unreachable", "not_acknowledged"] {
        zero(&AUDIT_FAILURES, &[("reason", reason.into())]);
    }
    for method in QUERY_METHODS {
        for code in QUERY_OUTCOMES {
            zero(
                &QUERIES,
                &[
                    ("method", method.into()),
                    ("outcome", code_label(code).into()),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_method_is_counted_from_zero() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || register(&["79".into()]));
        let text = handle.render();
        zero(&BATCH_RETRIES, &[]);
        for method in QUERY_METHODS {
            assert!(
                text.contains(&format!(
                    "lienthong_regional_queries_total{{method=\"{method}\",outcome=\"permission_denied\"}} 0"
                )),
                "{text}"
            );
        }
        assert!(
            text.contains("lienthong_regional_applied_total{region=\"79\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# HELP lienthong_regional_queries_total"),
            "{text}"
        );
    }
}
