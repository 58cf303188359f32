//! What `lienthong`'s exit code tells a script. Each code means one thing, so a script can
//! decide between fixing the input, retrying later and giving up (README, "Exit codes").
//! 0 is success.

use std::process::ExitCode;

/// Failed for a reason the message names (a file, a setting, a bug): fix it, then run again.
pub const FAILED: u8 = 1;
/// The command line is wrong (clap's usage errors use 2 as well).
pub const USAGE: u8 = 2;
/// Input refused as it is: events rejected, an incompatible schema, an invalid file, messages
/// that do not decode, a dead letter that is not there. The same input will fail again.
pub const REFUSED: u8 = 3;
/// A service could not be reached or asked to come back later (Kafka, the schema registry,
/// the gateway): retry later, nothing was refused.
pub const UNAVAILABLE: u8 = 4;
/// The cluster differs from the spec (`topics list`, `acls list`), or what is measured is
/// outside its policy (`analytics risk`: k below the floor).
pub const DRIFT: u8 = 5;

/// Input a command refused as it is (a file line that is no event, …): exit code REFUSED.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The process exit code for `code`.
pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// The exit code of an error that ended a command: UNAVAILABLE when one of its causes says a
/// service could not be reached, REFUSED when a service refused the request as it is (invalid,
/// not permitted, not found), FAILED otherwise.
pub fn of_error(e: &anyhow::Error) -> u8 {
    // A call that never reached its API: retry only when the API may be down, otherwise a
    // setting (URL, CA) is wrong, whatever code the client gave the status.
    if let Some(unreached) = e
        .chain()
        .find_map(|c| c.downcast_ref::<lienthong_grpc::client::Unreached>())
    {
        return if unreached.may_heal() {
            UNAVAILABLE
        } else {
            FAILED
        };
    }
    let refused = e.chain().any(|cause| {
        cause.is::<Refused>()
            || cause.downcast_ref::<tonic::Status>().is_some_and(|s| {
                matches!(
                    s.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::PermissionDenied
                        | tonic::Code::NotFound
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::OutOfRange
                        | tonic::Code::AlreadyExists
                )
            })
    });
    if refused {
        return REFUSED;
    }
    let unreachable = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<lienthong_kafka::Error>(),
            Some(lienthong_kafka::Error::Unreachable { .. })
        ) || matches!(
            cause.downcast_ref::<lienthong_registry::Error>(),
            Some(lienthong_registry::Error::Unreachable { .. })
        ) || matches!(
            cause.downcast_ref::<lienthong_grpc::client::ClientError>(),
            Some(lienthong_grpc::client::ClientError::Transport { .. })
        ) || matches!(
            cause.downcast_ref::<lienthong_warehouse_loader::PgConnectError>(),
            Some(lienthong_warehouse_loader::PgConnectError::Postgres { source, .. })
                if source.as_db_error().is_none()
        ) || cause.downcast_ref::<tonic::transport::Error>().is_some()
            || cause.downcast_ref::<tonic::Status>().is_some_and(|s| {
                matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::DeadlineExceeded
                )
            })
    });
    if unreachable { UNAVAILABLE } else { FAILED }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_means_retry_refused_means_change_anything_else_means_fix() {
        let status = anyhow::Error::new(tonic::Status::unavailable("gateway restarting"))
            .context("publishing");
        assert_eq!(of_error(&status), UNAVAILABLE);
        let refused = anyhow::Error::new(tonic::Status::permission_denied("not yours"));
        assert_eq!(of_error(&refused), REFUSED);
        let invalid = anyhow::Error::new(tonic::Status::invalid_argument("citizen id"));
        assert_eq!(of_error(&invalid), REFUSED);
        let bad_token = anyhow::Error::new(tonic::Status::unauthenticated("expired"));
        assert_eq!(of_error(&bad_token), FAILED);
        assert_eq!(
            of_error(&anyhow::anyhow!("cannot read events.jsonl")),
            FAILED
        );
        let invalid_line = anyhow::Error::new(Refused("events.jsonl:3: not an event".into()));
        assert_eq!(of_error(&invalid_line), REFUSED);
    }

    #[test]
    fn every_code_is_distinct() {
        let all = [0, FAILED, USAGE, REFUSED, UNAVAILABLE, DRIFT];
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }
}
