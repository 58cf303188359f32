//! The Confluent protobuf wire format: `0x00`, 4-byte big-endian schema id, message indexes
//! (zig-zag varints; `[0]` is written as a single 0 byte), then the protobuf payload.
//! A producer frames with the id of the exact schema its build encodes with, looked up once per
//! topic; unframing goes through `schema_registry_converter`, which looks the schema up once
//! per schema id and caches it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use lienthong_core::{ClinicalEvent, DocumentKind};
use schema_registry_converter::async_impl::proto_raw::ProtoRawDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;

use crate::client::RegistryClient;
use crate::contract::SchemaSet;
use crate::error::{DecodeError, Error, Result};
use crate::frame::FrameError;
use crate::settings::RegistryArgs;

/// A message with its frame removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Schema id from the frame.
    pub schema_id: u32,
    /// Fully-qualified protobuf message name the frame points at.
    pub full_name: String,
    /// The protobuf payload.
    pub payload: Vec<u8>,
}

impl Decoded {
    /// The lienthong event the payload holds.
    // `origin` is only formatted on failure: this runs for every consumed message.
    pub fn event(&self, origin: &dyn std::fmt::Display) -> Result<ClinicalEvent, DecodeError> {
        let kind = DocumentKind::ALL
            .into_iter()
            .find(|k| k.message_name() == self.full_name)
            .ok_or_else(|| DecodeError::UnknownMessage {
                origin: origin.to_string(),
                schema_id: self.schema_id,
                full_name: self.full_name.clone(),
            })?;
        ClinicalEvent::decode(kind, &self.payload).map_err(|e| DecodeError::Payload {
            origin: origin.to_string(),
            full_name: self.full_name.clone(),
            message: e.to_string(),
        })
    }
}

/// Frames and unframes lienthong events against one registry.
pub struct WireCodec {
    decoder: ProtoRawDecoder,
    // Asked for the ids producers frame with, and, when a consumed schema id is unknown,
    // whether the registry still knows the topic at all.
    client: Arc<RegistryClient>,
    contract: Arc<SchemaSet>,
    // Topic → (value message, look-up of the schema id this build frames it with).
    writers: Mutex<HashMap<String, (String, WriterLookup)>>,
}

/// A schema id look-up, or its failure, shared by every message waiting for it.
type WriterLookup = Shared<BoxFuture<'static, Result<u32, Arc<String>>>>;

impl WireCodec {
    /// A codec for the configured registry.
    pub fn new(args: &RegistryArgs) -> Result<Self> {
        let mut builder = SrSettings::new_builder(args.base()?);
        builder.set_timeout(args.timeout());
        if let Some((user, password)) = args.credentials()? {
            builder.set_basic_authorization(&user, Some(&password));
        }
        let settings = builder
            .build_with(args.http_client_builder()?)
            .map_err(|e| Error::Config(format!("schema registry client: {e}")))?;
        Ok(Self {
            decoder: ProtoRawDecoder::new(settings),
            client: Arc::new(RegistryClient::new(args)?),
            contract: Arc::new(SchemaSet::built_in()),
            writers: Mutex::default(),
        })
    }

    /// Frames an encoded event for its standard topic (subject `<topic>-value`).
    pub async fn encode(&self, kind: DocumentKind, payload: &[u8]) -> Result<Vec<u8>> {
        self.encode_for(kind, kind.topic(), payload).await
    }

    /// Frames an encoded event for `topic` (TopicNameStrategy: subject `<topic>-value`).
    pub async fn encode_for(
        &self,
        kind: DocumentKind,
        topic: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        self.encode_message(topic, kind.message_name(), payload)
            .await
    }

    /// Frames an encoded message named `full_name` for `topic` (subject `<topic>-value`) with
    /// the id of the schema this build encodes it with (see [`SchemaSet::writer_id`]), looked
    /// up once per topic.
    pub async fn encode_message(
        &self,
        topic: &str,
        full_name: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        let lookup = self.writer_lookup(topic, full_name);
        match lookup.clone().await {
            // Every topic's value is the first message of its file: index path [0].
            Ok(id) => Ok(crate::frame::write(id, &[0], payload)),
            Err(message) => {
                // A failed look-up is not kept: the next message asks again.
                let mut writers = self.writers();
                if writers
                    .get(topic)
                    .is_some_and(|(_, kept)| kept.ptr_eq(&lookup))
                {
                    writers.remove(topic);
                }
                Err(Error::Encode {
                    topic: topic.to_owned(),
                    message_name: full_name.to_owned(),
                    message: message.to_string(),
                })
            }
        }
    }

    /// Frames the values of the topics just registered with their registered ids, asking the
    /// registry nothing more.
    pub fn remember(&self, registered: &[crate::contract::Registered]) {
        let mut writers = self.writers();
        for r in registered {
            if let Some((topic, message)) = &r.value_of {
                let known = futures::future::ready(Ok(r.id)).boxed().shared();
                writers.insert(topic.clone(), (message.clone(), known));
            }
        }
    }

    /// The look-up of `topic`'s writer id, shared by every message framed while it runs: they
    /// all wake together when it ends, in the order they asked, so messages framed
    /// concurrently are handed to the producer in the order their framing began (one
    /// patient's events stay in order).
    fn writer_lookup(&self, topic: &str, full_name: &str) -> WriterLookup {
        let mut writers = self.writers();
        if let Some((name, lookup)) = writers.get(topic)
            && name == full_name
        {
            return lookup.clone();
        }
        let (client, contract) = (Arc::clone(&self.client), Arc::clone(&self.contract));
        let (t, name) = (topic.to_owned(), full_name.to_owned());
        let lookup = async move {
            contract
                .writer_id(&client, &t, &name)
                .await
                .map_err(|e| Arc::new(e.to_string()))
        }
        .boxed()
        .shared();
        writers.insert(topic.to_owned(), (full_name.to_owned(), lookup.clone()));
        lookup
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, WriterLookup)>> {
        self.writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes the frame of a message read from `topic[partition]@offset`.
    pub async fn decode(
        &self,
        bytes: Option<&[u8]>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Decoded, DecodeError> {
        // Formatted only on failure: this runs for every consumed message.
        let origin = || format!("{topic}[{partition}]@{offset}");
        let bytes = bytes.unwrap_or_default();
        // Checked here, bounded, before the registry client reads the indexes.
        let schema_id = match crate::frame::parse(bytes) {
            Ok(frame) => frame.schema_id,
            Err(FrameError::Empty) => return Err(DecodeError::Empty { origin: origin() }),
            Err(FrameError::NoMagicByte(found)) => {
                return Err(DecodeError::NoMagicByte {
                    origin: origin(),
                    found,
                });
            }
            Err(FrameError::Truncated(len)) => {
                return Err(DecodeError::Truncated {
                    origin: origin(),
                    len,
                });
            }
            Err(reason) => {
                return Err(DecodeError::BadFrame {
                    origin: origin(),
                    reason,
                });
            }
        };
        match self.decoder.decode(Some(bytes)).await {
            Ok(Some(r)) => Ok(Decoded {
                schema_id,
                full_name: r.full_name.to_string(),
                payload: r.bytes,
            }),
            Ok(None) => Err(DecodeError::Empty { origin: origin() }),
            Err(e) => {
                let origin = origin();
                let text = e.error.clone();
                let cause = e.cause.clone().unwrap_or_default();
                let failure = Failure::of(&text, &cause, e.retriable);
                let message = if cause.is_empty() {
                    text
                } else {
                    format!("{text}: {cause}")
                };
                let error = match failure {
                    Failure::Registry => DecodeError::Registry { origin, message },
                    Failure::UnknownSchema => self.unknown_schema(topic, origin, schema_id).await,
                    Failure::BadIndexes => DecodeError::Truncated {
                        origin,
                        len: bytes.len(),
                    },
                    Failure::Schema => DecodeError::Schema { origin, message },
                };
                if matches!(error, DecodeError::Registry { .. }) {
                    // The converter keeps failed look-ups; the retry must ask again.
                    self.decoder.remove_errors_from_cache();
                }
                Err(error)
            }
        }
    }
}

impl WireCodec {
    /// A schema id the registry does not know is the message's fault only while the registry
    /// still knows the topic's subject. A registry with no version of it has lost its state
    /// (started empty, or another registry in its place): every stored message would then be
    /// dead-lettered, so it is a registry failure, retried until the registry is restored.
    async fn unknown_schema(&self, topic: &str, origin: String, schema_id: u32) -> DecodeError {
        let subject = format!("{topic}-value");
        match self.client.versions(&subject).await {
            Ok(versions) if !versions.is_empty() => {
                DecodeError::UnknownSchema { origin, schema_id }
            }
            Ok(_) => DecodeError::Registry {
                origin,
                message: format!(
                    "schema id {schema_id} is unknown and the registry has no version of subject {subject}: the registry has lost the schemas the stored messages name (started empty, or another registry in its place); restore its database (docs/backup-restore.md). The message is read again meanwhile, not dead-lettered"
                ),
            },
            Err(e) => DecodeError::Registry {
                origin,
                message: format!(
                    "schema id {schema_id} is unknown, and whether the registry still knows {subject} could not be asked: {e}"
                ),
            },
        }
    }
}

/// What a failed schema look-up says: about the registry (retry: it says nothing about the
/// message) or about the message (dead-letter it: it will not get better).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The registry could not be reached or did not serve: refused credentials or
    /// permissions (401, 403), overloaded or failing (429, 5xx), a timeout. Retried.
    Registry,
    /// The registry answered that it has no schema of that id (404).
    UnknownSchema,
    /// The frame's message indexes fit no message of the schema.
    BadIndexes,
    /// The schema was served but cannot be used.
    Schema,
}

impl Failure {
    /// Classifies the converter's error, whose only record of the HTTP answer is its text
    /// ("HTTP request to schema registry failed with status 401 Unauthorized").
    fn of(text: &str, cause: &str, retriable: bool) -> Self {
        let status = http_status(text).or_else(|| http_status(cause));
        match status {
            Some(404) => Self::UnknownSchema,
            Some(_) => Self::Registry,
            None if retriable => Self::Registry,
            None if [text, cause]
                .iter()
                .any(|t| t.contains("not found") || t.contains("40403")) =>
            {
                Self::UnknownSchema
            }
            None if text.contains("index") || cause.contains("index") => Self::BadIndexes,
            None => Self::Schema,
        }
    }
}

/// The HTTP status a converter error reports, if it reports one.
fn http_status(text: &str) -> Option<u16> {
    let (_, after) = text.split_once("failed with status ")?;
    after.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "HTTP request to schema registry failed with status";
    const UNPARSED: &str = "error_code: 0, message: couldn't parse schema registry error json";

    #[test]
    fn a_registry_that_refuses_or_fails_is_retried_never_blamed_on_the_message() {
        for status in [
            "401 Unauthorized",
            "403 Forbidden",
            "408 Request Timeout",
            "429 Too Many Requests",
            "500 Internal Server Error",
            "502 Bad Gateway",
            "504 Gateway Timeout",
        ] {
            let text = format!("{STATUS} {status}");
            assert_eq!(
                Failure::of(&text, UNPARSED, false),
                Failure::Registry,
                "{status}"
            );
        }
        assert_eq!(
            Failure::of("error sending request", "connection refused", true),
            Failure::Registry
        );
    }

    #[test]
    fn an_unknown_id_and_an_unusable_schema_are_the_message_s() {
        let not_found = format!("{STATUS} 404 Not Found");
        assert_eq!(
            Failure::of(
                &not_found,
                "error_code: 40403, message: Schema not found",
                false
            ),
            Failure::UnknownSchema
        );
        assert_eq!(
            Failure::of("could not get index", "", false),
            Failure::BadIndexes
        );
        assert_eq!(
            Failure::of("could not parse schema", "unexpected token", false),
            Failure::Schema
        );
    }

    #[test]
    fn the_status_is_read_from_the_converter_s_words() {
        assert_eq!(
            http_status(&format!("{STATUS} 401 Unauthorized")),
            Some(401)
        );
        assert_eq!(http_status("failed with status 5"), None);
        assert_eq!(http_status("no status here"), None);
    }
}
