//! The gRPC codec of lienthong's services: prost, except that a request body that is not the
//! protobuf message it should be is the caller's error (INVALID_ARGUMENT, naming the message
//! type) and is counted, where tonic's own codec answers INTERNAL, which tells a caller to
//! look for the fault on the server.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Counter of request bodies that are not valid protobuf, by message type.
pub const MALFORMED_REQUESTS: &str = "lienthong_grpc_malformed_requests_total";

/// prost encoding; decoding errors are INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy)]
pub struct CallerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CallerCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for CallerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CallerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CallerDecoder(PhantomData)
    }
}

/// Decodes `U`; what does not decode is the caller's error.
#[derive(Debug, Clone, Copy)]
pub struct CallerDecoder<U>(PhantomData<U>);

/// The last segment of a Rust type path (`PublishRequest`), for messages and metric labels.
fn short_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

impl<U: Message + Default> Decoder for CallerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            let message = short_name::<U>();
            metrics::counter!(MALFORMED_REQUESTS, "message" => message).increment(1);
            Status::invalid_argument(format!(
                "the request is not a valid lienthong.v1.{message} protobuf message ({e}); \
                 generate the client from lienthong's .proto files"
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_are_the_short_type_names() {
        assert_eq!(short_name::<crate::v1::PublishRequest>(), "PublishRequest");
    }
}
