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

/// `lienthong_grpc_tls_handshake_failures_total`: connections closed before their TLS handshake completed
pub const TLS_HANDSHAKE_FAILURES: Metric = Metric::counter(
    "lienthong_grpc_tls_handshake_failures_total",
    &["reason"],
    "Connections closed before their TLS handshake completed: refused (an untrusted or revoked client certificate, not TLS), plaintext (a caller speaking HTTP without TLS, told so) or timeout",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    MALFORMED_REQUESTS,
    REVOKED_CERTIFICATES,
    TLS_HANDSHAKE_FAILURES,
];
