//! Errors of registry calls and of the wire format.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network failure reaching the registry.
    #[error(
        "cannot reach the schema registry at {url}; is it running? locally run `deploy/local/up`, otherwise check --registry-url / LIENTHONG_REGISTRY_URL"
    )]
    Unreachable {
        /// URL called.
        url: String,
        /// Client error.
        source: reqwest::Error,
    },
    /// The registry answered with an error.
    #[error("schema registry refused {what} (HTTP {status}): {message}")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's message.
        message: String,
    },
    /// A setting is wrong.
    #[error("invalid registry settings: {0}")]
    Config(String),
    /// A .proto file could not be read or is inconsistent.
    #[error("proto {path}: {message}")]
    Proto {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The registry holds no version of a subject equal to this build's file.
    #[error(
        "the schema registry holds no version of {subject} equal to this build's {path}; register this build's schemas with `lienthong schemas register`"
    )]
    NotHeld {
        /// Subject.
        subject: String,
        /// The contract file.
        path: String,
    },
    /// Encoding a message failed.
    #[error("cannot frame a {message_name} for {topic}: {message}")]
    Encode {
        /// Topic.
        topic: String,
        /// Message name.
        message_name: String,
        /// Cause.
        message: String,
    },
}

/// Why a Kafka message could not be decoded, always naming where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Empty or null value.
    #[error("{origin}: message has no value")]
    Empty {
        /// `topic[partition]@offset`
        origin: String,
    },
    /// First byte is not the Confluent magic byte 0.
    #[error(
        "{origin}: not Confluent-framed (first byte {found:#04x}, expected 0x00); was it produced without the schema registry?"
    )]
    NoMagicByte {
        /// `topic[partition]@offset`
        origin: String,
        /// The byte found.
        found: u8,
    },
    /// Shorter than the frame header.
    #[error(
        "{origin}: truncated frame ({len} bytes; at least 6 needed for magic byte, schema id and message index)"
    )]
    Truncated {
        /// `topic[partition]@offset`
        origin: String,
        /// Length.
        len: usize,
    },
    /// The frame's message indexes are not a path any schema has.
    #[error("{origin}: {reason}")]
    BadFrame {
        /// `topic[partition]@offset`
        origin: String,
        /// What is wrong with the frame.
        reason: crate::frame::FrameError,
    },
    /// The registry does not know the schema id.
    #[error(
        "{origin}: schema id {schema_id} is unknown to the registry; was the message produced against another registry?"
    )]
    UnknownSchema {
        /// `topic[partition]@offset`
        origin: String,
        /// Id in the frame.
        schema_id: u32,
    },
    /// The schema names a message this build does not know.
    #[error(
        "{origin}: message type {full_name} (schema id {schema_id}) is not a lienthong event this build can read"
    )]
    UnknownMessage {
        /// `topic[partition]@offset`
        origin: String,
        /// Schema id.
        schema_id: u32,
        /// Message name from the schema.
        full_name: String,
    },
    /// The payload does not parse as that message.
    #[error("{origin}: payload is not a valid {full_name}: {message}")]
    Payload {
        /// `topic[partition]@offset`
        origin: String,
        /// Message name.
        full_name: String,
        /// Parser message.
        message: String,
    },
    /// The schema of the frame could not be used (unparseable, message index out of range).
    #[error("{origin}: the frame's schema cannot be used: {message}")]
    Schema {
        /// `topic[partition]@offset`
        origin: String,
        /// Cause.
        message: String,
    },
    /// The registry could not be reached while decoding (transient: retry later).
    #[error("{origin}: {message}")]
    Registry {
        /// `topic[partition]@offset`
        origin: String,
        /// Cause.
        message: String,
    },
}
