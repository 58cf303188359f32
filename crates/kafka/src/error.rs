//! Errors of the Kafka layer.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to Kafka or reading the topic spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker did not answer in time.
    #[error(
        "cannot reach Kafka at {bootstrap} within {timeout:?}; is the broker running? \
         locally run `deploy/local/up`, otherwise check --kafka-bootstrap / LIENTHONG_KAFKA_BOOTSTRAP"
    )]
    Unreachable {
        /// Bootstrap servers tried.
        bootstrap: String,
        /// How long we waited.
        timeout: Duration,
        /// Client error.
        source: rdkafka::error::KafkaError,
    },
    /// A broker answered but refused this client: its credentials or its TLS settings.
    #[error("Kafka at {bootstrap} refused this client: {hint} (librdkafka: {reason})")]
    Refused {
        /// Bootstrap servers tried.
        bootstrap: String,
        /// What was refused and which settings to check.
        hint: String,
        /// librdkafka's own words.
        reason: String,
    },
    /// A connection setting is inconsistent or unreadable.
    #[error("invalid Kafka settings: {0}")]
    Config(String),
    /// The client could not be created.
    #[error("cannot create Kafka client")]
    Client(#[source] rdkafka::error::KafkaError),
    /// The topic spec file could not be read.
    #[error("cannot read topic spec {path}")]
    SpecRead {
        /// File.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The topic spec is malformed.
    #[error("invalid topic spec {path}, line {line}, column {column}: {message}")]
    Spec {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// An admin operation failed for a topic.
    #[error("topic {topic}: {message}")]
    Topic {
        /// Topic name.
        topic: String,
        /// What failed and what to do.
        message: String,
    },
    /// A message could not be delivered to Kafka. The broker's reason is part of the message
    /// (not a separate source), so that every log line of it says why.
    #[error("delivery to {topic} failed: {cause}")]
    Delivery {
        /// Topic.
        topic: String,
        /// Client error.
        cause: rdkafka::error::KafkaError,
    },
    /// Any other client error.
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl Error {
    /// True when the broker or the client refused a message for its size: a permanent
    /// failure of that message, which no retry can mend.
    pub fn is_too_large(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode;
        let code = match self {
            Self::Delivery { cause, .. } | Self::Kafka(cause) => cause.rdkafka_error_code(),
            _ => None,
        };
        matches!(
            code,
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
        )
    }
}

#[cfg(test)]
mod too_large_tests {
    use super::*;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_message_too_large_is_told_from_a_passing_failure() {
        let delivery = |code| Error::Delivery {
            topic: "t".into(),
            cause: KafkaError::MessageProduction(code),
        };
        assert!(delivery(RDKafkaErrorCode::MessageSizeTooLarge).is_too_large());
        assert!(!delivery(RDKafkaErrorCode::BrokerTransportFailure).is_too_large());
        assert!(!delivery(RDKafkaErrorCode::MessageTimedOut).is_too_large());
    }
}
