//! The trace context a record carries: the `traceparent` header the gateway (and the
//! de-identification service, for analytics records) writes, which each consumer's stage
//! continues (see `lienthong_telemetry::trace`).

use lienthong_telemetry::trace::{TRACEPARENT, continue_trace, is_sampled};
use rdkafka::message::{Headers as _, Message};

/// The value of `message`'s header `name`, when it is there and UTF-8.
pub fn header<'a>(message: &'a impl Message, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The trace `message` belongs to, when its `traceparent` names a sampled one.
pub fn sampled_traceparent(message: &impl Message) -> Option<&str> {
    header(message, TRACEPARENT).filter(|t| is_sampled(Some(t.as_bytes())))
}

/// The span of a sink storing `message`, under the message's trace; None for an untraced or
/// unsampled message, so that those cost one header lookup. The span ends when dropped.
pub fn apply_span(message: &impl Message) -> Option<tracing::Span> {
    let traceparent = sampled_traceparent(message)?;
    let span = tracing::info_span!(
        "apply",
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        event_id = header(message, "lienthong-event-id").unwrap_or_default(),
    );
    continue_trace(&span, Some(traceparent));
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    fn message(headers: &[(&str, &[u8])]) -> OwnedMessage {
        let mut owned = OwnedHeaders::new();
        for (key, value) in headers {
            owned = owned.insert(Header {
                key,
                value: Some(*value),
            });
        }
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            7,
            Some(owned),
        )
    }

    #[test]
    fn only_a_sampled_well_formed_context_opens_a_span() {
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let m = message(&[
            ("lienthong-event-id", b"e1"),
            (TRACEPARENT, sampled.as_bytes()),
        ]);
        assert_eq!(sampled_traceparent(&m), Some(sampled));
        assert_eq!(header(&m, "lienthong-event-id"), Some("e1"));
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"[..],
            b"not a context",
            &[0xff, 0x00],
        ] {
            let m = message(&[(TRACEPARENT, bad)]);
            assert_eq!(sampled_traceparent(&m), None);
            assert!(apply_span(&m).is_none());
        }
        assert!(apply_span(&message(&[])).is_none());
    }
}
