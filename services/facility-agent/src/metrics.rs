//! Metrics of the facility agent.

use lienthong_telemetry::{Metric, describe, zero};

/// `lienthong_agent_files_total`: export files taken, by where they went (done, rejected)
pub const FILES: Metric = Metric::counter(
    "lienthong_agent_files_total",
    &["result"],
    "Export files taken, by where they went (done, rejected)",
);

/// `lienthong_agent_intake_events_total`: events put into the outbox
pub const INTAKE_EVENTS: Metric = Metric::counter(
    "lienthong_agent_intake_events_total",
    &[],
    "Events put into the outbox",
);

/// `lienthong_agent_unchanged_documents_total`: documents exported again without a change
pub const UNCHANGED: Metric = Metric::counter(
    "lienthong_agent_unchanged_documents_total",
    &[],
    "Documents exported again without a change (nothing sent)",
);

/// `lienthong_agent_intake_paused_total`: times intake paused because the outbox was full
pub const INTAKE_PAUSED: Metric = Metric::counter(
    "lienthong_agent_intake_paused_total",
    &[],
    "Times intake paused because the outbox was full",
);

/// `lienthong_agent_intake_busy_total`: intake requests told to retry, no conversion turn free
pub const INTAKE_BUSY: Metric = Metric::counter(
    "lienthong_agent_intake_busy_total",
    &[],
    "HTTP and gRPC intake requests told to retry because no conversion turn came free (nothing queued)",
);

/// `lienthong_agent_intake_refused_total`: HTTP intake requests refused as not from a local program
pub const INTAKE_REFUSED: Metric = Metric::counter(
    "lienthong_agent_intake_refused_total",
    &["reason"],
    "HTTP intake requests refused before being read: addressed to a name that is not loopback (host) or sent by a browser for a web page (web_page)",
);

/// `lienthong_agent_events_total`: events settled with the gateway, by outcome
pub const EVENTS: Metric = Metric::counter(
    "lienthong_agent_events_total",
    &["outcome"],
    "Events settled with the gateway, by outcome",
);

/// `lienthong_agent_send_failures_total`: failed sends to the gateway, by gRPC code
pub const SEND_FAILURES: Metric = Metric::counter(
    "lienthong_agent_send_failures_total",
    &["code"],
    "Failed sends to the gateway, by gRPC code",
);

/// `lienthong_agent_token_expiry_timestamp_seconds`: when the bearer token being sent expires
pub const TOKEN_EXPIRY: Metric = Metric::gauge(
    "lienthong_agent_token_expiry_timestamp_seconds",
    &[],
    "When the bearer token the agent sends expires (unix seconds; absent without a token)",
);

/// `lienthong_agent_pending_events`: events waiting in the outbox
pub const PENDING: Metric = Metric::gauge(
    "lienthong_agent_pending_events",
    &[],
    "Events waiting in the outbox",
);

/// `lienthong_agent_oldest_pending_seconds`: age of the oldest event waiting in the outbox
pub const OLDEST_PENDING_SECONDS: Metric = Metric::gauge(
    "lienthong_agent_oldest_pending_seconds",
    &[],
    "Age of the oldest event waiting in the outbox",
);

/// `lienthong_agent_rejected_events`: events the gateway refused, kept for review
pub const REJECTED: Metric = Metric::gauge(
    "lienthong_agent_rejected_events",
    &[],
    "Events the gateway refused, kept for review",
);

/// `lienthong_agent_outbox_set_aside_total`: outbox entries set aside because unreadable
pub const SET_ASIDE: Metric = Metric::counter(
    "lienthong_agent_outbox_set_aside_total",
    &[],
    "Outbox entries set aside because they could not be read back (kept, not sent)",
);

/// `lienthong_agent_outbox_set_aside_entries`: unreadable entries kept in the outbox
pub const SET_ASIDE_ENTRIES: Metric = Metric::gauge(
    "lienthong_agent_outbox_set_aside_entries",
    &[],
    "Unreadable entries kept aside in the outbox (not sent; contact support)",
);

/// `lienthong_agent_outbox_fill_ratio`: outbox fill, 0 to 1
pub const OUTBOX_FILL_RATIO: Metric = Metric::gauge(
    "lienthong_agent_outbox_fill_ratio",
    &[],
    "Outbox fill, 0 to 1",
);

/// Every metric this crate exports.
pub const ALL: &[Metric] = &[
    FILES,
    INTAKE_EVENTS,
    INTAKE_PAUSED,
    INTAKE_BUSY,
    INTAKE_REFUSED,
    UNCHANGED,
    EVENTS,
    SEND_FAILURES,
    PENDING,
    OLDEST_PENDING_SECONDS,
    REJECTED,
    OUTBOX_FILL_RATIO,
    TOKEN_EXPIRY,
    SET_ASIDE,
    SET_ASIDE_ENTRIES,
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
    zero(&INTAKE_BUSY, &[]);
    for reason in ["host", "web_page"] {
        zero(&INTAKE_REFUSED, &[("reason", reason.into())]);
    }
    zero(&UNCHANGED, &[]);
    zero(&SET_ASIDE, &[]);
}
