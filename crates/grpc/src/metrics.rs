//! Metrics of every gRPC service lienthong serves.

use lienthong_telemetry::Metric;

/// `lienthong_grpc_malformed_requests_total`: request bodies that are not valid protobuf
pub const MALFORMED_REQUESTS: Metric = Metric::counter(
    lienthong_proto::codec::MALFORMED_REQUESTS,
    &["message"],
    "Request bodies that are not valid protobuf, by message type (answered INVALID_ARGUMENT)",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[MALFORMED_REQUESTS];
