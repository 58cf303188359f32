//! Metrics of the ingest gateway.

use lienthong_telemetry::{Metric, describe, zero};

/// `lienthong_gateway_requests_total`: gRPC calls answered, by method and status code
pub const REQUESTS: Metric = Metric::counter(
    "lienthong_gateway_requests_total",
    &["method", "code"],
    "gRPC calls answered, by method and status code",
);

/// `lienthong_gateway_request_seconds`: time to answer a gRPC call
pub const REQUEST_SECONDS: Metric = Metric::histogram(
    "lienthong_gateway_request_seconds",
    &["method"],
    "Time to answer a gRPC call",
);

/// `lienthong_gateway_events_total`: events by document kind and outcome (accepted, duplicate, rejected, unavailable)
pub const EVENTS: Metric = Metric::counter(
    "lienthong_gateway_events_total",
    &["kind", "outcome"],
    "Events by document kind and outcome (accepted, duplicate, rejected, unavailable)",
);

/// `lienthong_gateway_rejects_total`: rejected events by violation code
pub const REJECTS: Metric = Metric::counter(
    "lienthong_gateway_rejects_total",
    &["code"],
    "Rejected events by violation code",
);

/// `lienthong_gateway_throttled_total`: events refused with RESOURCE_EXHAUSTED, by reason (rate or capacity)
pub const THROTTLED: Metric = Metric::counter(
    "lienthong_gateway_throttled_total",
    &["reason"],
    "Events refused with RESOURCE_EXHAUSTED, by reason (rate or capacity)",
);

/// `lienthong_gateway_in_flight_events`: events being produced now
pub const IN_FLIGHT: Metric = Metric::gauge(
    "lienthong_gateway_in_flight_events",
    &[],
    "Events being produced now",
);

/// `lienthong_gateway_ack_seconds`: time from receiving an event to Kafka's acknowledgement
pub const ACK_SECONDS: Metric = Metric::histogram(
    "lienthong_gateway_ack_seconds",
    &["kind"],
    "Time from receiving an event to Kafka's acknowledgement",
);

/// `lienthong_gateway_facility_directory_entries`: facilities in the directory in force
pub const DIRECTORY_ENTRIES: Metric = Metric::gauge(
    "lienthong_gateway_facility_directory_entries",
    &[],
    "Facilities in the facility directory in force",
);

/// `lienthong_gateway_facility_directory_reload_failures_total`: changed directory files not used
pub const DIRECTORY_RELOAD_FAILURES: Metric = Metric::counter(
    "lienthong_gateway_facility_directory_reload_failures_total",
    &[],
    "Changed facility directory files that could not be used (the previous one stays in force)",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    REQUESTS,
    REQUEST_SECONDS,
    EVENTS,
    REJECTS,
    THROTTLED,
    IN_FLIGHT,
    ACK_SECONDS,
    DIRECTORY_ENTRIES,
    DIRECTORY_RELOAD_FAILURES,
];

/// Describes these metrics and starts their counters at zero.
pub fn register() {
    describe(ALL);
    describe(lienthong_kafka::metrics::ALL);
    describe(lienthong_grpc::metrics::ALL);
    zero(&DIRECTORY_RELOAD_FAILURES, &[]);
    for reason in ["rate", "capacity"] {
        zero(&THROTTLED, &[("reason", reason.into())]);
    }
    for kind in lienthong_core::DocumentKind::ALL {
        for outcome in ["accepted", "duplicate", "rejected", "unavailable"] {
            zero(
                &EVENTS,
                &[("kind", kind.as_str().into()), ("outcome", outcome.into())],
            );
        }
    }
}
