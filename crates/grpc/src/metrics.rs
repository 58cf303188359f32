//! Metrics of every gRPC service lienthong serves.

use lienthong_telemetry::Metric;

/// `lienthong_grpc_malformed_requests_total`: request bodies that are not valid protobuf
pub const MALFORMED_REQUESTS: Metric = Metric::counter(
    lienthong_proto::codec::MALFORMED_REQUESTS,
    &["message"],
    "Request bodies that are not valid protobuf, by message type (answered INVALID_ARGUMENT)",
);

/// `lienthong_grpc_revoked_certificates_total`: requests refused for a revoked client certificate
pub const REVOKED_CERTIFICATES: Metric = Metric::counter(
    "lienthong_grpc_revoked_certificates_total",
    &[],
    "Requests refused because their client certificate is on the revocation list (--client-crl)",
);

/// `lienthong_grpc_connections_open`: connections the API holds open
pub const CONNECTIONS_OPEN: Metric = Metric::gauge(
    "lienthong_grpc_connections_open",
    &[],
    "Connections the gRPC API holds open, TLS handshakes in progress included (at most --max-connections)",
);

/// `lienthong_grpc_connections_refused_total`: connections closed at once, over a limit
pub const CONNECTIONS_REFUSED: Metric = Metric::counter(
    "lienthong_grpc_connections_refused_total",
    &["reason"],
    "Connections closed as soon as they were accepted, by the limit they were over (total_limit: --max-connections, peer_limit: --max-connections-per-peer)",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    MALFORMED_REQUESTS,
    REVOKED_CERTIFICATES,
    CONNECTIONS_OPEN,
    CONNECTIONS_REFUSED,
];
