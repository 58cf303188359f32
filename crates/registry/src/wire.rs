//! The Confluent protobuf wire format: `0x00`, 4-byte big-endian schema id, message indexes
//! (zig-zag varints; `[0]` is written as a single 0 byte), then the protobuf payload.
//! Framing and unframing go through `schema_registry_converter`, which looks the schema up in
//! the registry once per subject (encode) or schema id (decode) and caches it.

use lienthong_core::{ClinicalEvent, DocumentKind};
use schema_registry_converter::async_impl::proto_raw::{ProtoRawDecoder, ProtoRawEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;

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
    encoder: ProtoRawEncoder,
    decoder: ProtoRawDecoder,
}

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
            encoder: ProtoRawEncoder::new(settings.clone()),
            decoder: ProtoRawDecoder::new(settings),
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

    /// Frames an encoded message named `full_name` for `topic` (subject `<topic>-value`).
    pub async fn encode_message(
        &self,
        topic: &str,
        full_name: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        let strategy = SubjectNameStrategy::TopicNameStrategy(topic.to_owned(), false);
        crate::retry::transient_failures(
            topic,
            || async {
                let framed = self
                    .encoder
                    .encode(payload, full_name, strategy.clone())
                    .await;
                // Failures are cached by the converter; clear them so a later call can
                // succeed once the schema is registered or the registry reachable.
                if framed.is_err() {
                    self.encoder.remove_errors_from_cache();
                }
                framed
            },
            |e| e.retriable,
        )
        .await
        .map_err(|e| {
            let cause = e.cause.map(|c| format!(" ({c})")).unwrap_or_default();
            Error::Encode {
                topic: topic.to_owned(),
                message_name: full_name.to_owned(),
                message: format!(
                    "{}{cause}; register the schemas with `lienthong schemas register`",
                    e.error
                ),
            }
        })
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
                let unknown = [&text, &cause]
                    .iter()
                    .any(|t| t.contains("404") || t.contains("not found") || t.contains("40403"));
                if e.retriable {
                    self.decoder.remove_errors_from_cache();
                }
                if unknown {
                    Err(DecodeError::UnknownSchema { origin, schema_id })
                } else if text.contains("index") || cause.contains("index") {
                    Err(DecodeError::Truncated {
                        origin,
                        len: bytes.len(),
                    })
                } else {
                    let message = if cause.is_empty() {
                        text
                    } else {
                        format!("{text}: {cause}")
                    };
                    // Only a failure to reach the registry is worth retrying; a schema that
                    // cannot be used will not get better and must not block the partition.
                    if e.retriable {
                        Err(DecodeError::Registry { origin, message })
                    } else {
                        Err(DecodeError::Schema { origin, message })
                    }
                }
            }
        }
    }
}
