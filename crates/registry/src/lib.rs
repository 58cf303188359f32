//! The schema registry side of the contract: registering the .proto files with a
//! Confluent-compatible registry (Apicurio locally) under TopicNameStrategy subjects with
//! references, enforcing BACKWARD compatibility, and the Confluent protobuf wire format
//! (magic byte, schema id, message indexes, payload) every Kafka message is framed in.

pub mod client;
pub mod contract;
pub mod error;
pub mod frame;
pub mod retry;
pub mod settings;
pub mod wire;

pub use client::{Compatibility, RegistryClient};
pub use contract::{ProtoFile, SchemaSet, Standing};
pub use error::{DecodeError, Error, Result};
pub use settings::RegistryArgs;
pub use wire::{Decoded, WireCodec};
