//! The Confluent protobuf frame read and written without the registry: `0x00`, the 4-byte
//! big-endian schema id, the message indexes (a zig-zag varint count, then that many zig-zag
//! varint indexes; `[0]` is the single byte 0), then the payload. Every consumed message
//! passes through `parse` before anything else reads it, so it is bounded and never panics.

/// A frame split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Schema id.
    pub schema_id: u32,
    /// Path of the message type within its file (`[0]`: the first top-level message).
    pub indexes: Vec<i32>,
    /// The protobuf payload.
    pub payload: &'a [u8],
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes at all.
    #[error("the message has no value")]
    Empty,
    /// The first byte is not 0.
    #[error("not Confluent-framed (first byte {0:#04x}, expected 0x00)")]
    NoMagicByte(u8),
    /// Shorter than magic byte, schema id and one index byte.
    #[error(
        "truncated frame ({0} bytes; at least 6 needed for magic byte, schema id and message index)"
    )]
    Truncated(usize),
    /// The message indexes are not a path any schema could have.
    #[error("the frame's message indexes are invalid: {0}")]
    Indexes(&'static str),
}

/// Deepest message nesting a frame may name; protobuf schemas nest a few levels, and an
/// attacker's count of millions must not become an allocation.
pub const MAX_INDEXES: usize = 64;

/// Splits `bytes` into its frame.
pub fn parse(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let Some(&magic) = bytes.first() else {
        return Err(FrameError::Empty);
    };
    if magic != 0 {
        return Err(FrameError::NoMagicByte(magic));
    }
    if bytes.len() < 6 {
        return Err(FrameError::Truncated(bytes.len()));
    }
    let schema_id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let mut rest = &bytes[5..];
    let count = zigzag(&mut rest)?;
    let indexes = match usize::try_from(count) {
        Ok(0) => vec![0],
        Ok(n) if n <= MAX_INDEXES => {
            let mut indexes = Vec::with_capacity(n);
            for _ in 0..n {
                let index = zigzag(&mut rest)?;
                if index < 0 {
                    return Err(FrameError::Indexes("a negative message index"));
                }
                indexes.push(index);
            }
            indexes
        }
        Ok(_) => return Err(FrameError::Indexes("more indexes than any schema nests")),
        Err(_) => return Err(FrameError::Indexes("a negative index count")),
    };
    Ok(Frame {
        schema_id,
        indexes,
        payload: rest,
    })
}

/// Frames `payload` (the inverse of `parse`).
pub fn write(schema_id: u32, indexes: &[i32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 6 + indexes.len() * 2);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    if indexes == [0] {
        out.push(0);
    } else {
        put_zigzag(&mut out, indexes.len() as i32);
        for &i in indexes {
            put_zigzag(&mut out, i);
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Reads one zig-zag varint of at most 32 bits from the front of `rest`.
fn zigzag(rest: &mut &[u8]) -> Result<i32, FrameError> {
    let mut value: u32 = 0;
    for (i, &b) in rest.iter().enumerate().take(5) {
        if i == 4 && b > 0x0F {
            return Err(FrameError::Indexes("a varint longer than 32 bits"));
        }
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Ok(((value >> 1) as i32) ^ -((value & 1) as i32));
        }
    }
    Err(FrameError::Indexes(if rest.len() < 5 {
        "the frame ends inside a varint"
    } else {
        "a varint longer than 32 bits"
    }))
}

fn put_zigzag(out: &mut Vec<u8>, v: i32) {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_common_frame_has_a_single_zero_index_byte() {
        let framed = write(7, &[0], b"payload");
        assert_eq!(&framed[..6], &[0, 0, 0, 0, 7, 0]);
        let f = parse(&framed).expect("frame");
        assert_eq!(
            (f.schema_id, f.indexes, f.payload),
            (7, vec![0], &b"payload"[..])
        );
    }

    #[test]
    fn hostile_frames_are_refused_by_reason() {
        assert_eq!(parse(b""), Err(FrameError::Empty));
        assert_eq!(parse(b"\x0a\x01"), Err(FrameError::NoMagicByte(0x0a)));
        assert_eq!(parse(b"\0\0\0"), Err(FrameError::Truncated(3)));
        // Count -1 (zig-zag 1), a count of a million, a varint that never ends.
        assert!(matches!(
            parse(b"\0\0\0\0\x01\x01"),
            Err(FrameError::Indexes(_))
        ));
        assert!(matches!(
            parse(b"\0\0\0\0\x01\x80\x89\x7a"),
            Err(FrameError::Indexes(_))
        ));
        assert!(matches!(
            parse(b"\0\0\0\0\x01\xff\xff\xff\xff\xff\xff"),
            Err(FrameError::Indexes(_))
        ));
        assert!(matches!(
            parse(b"\0\0\0\0\x01\x04\x80"),
            Err(FrameError::Indexes(_))
        ));
    }

    proptest! {
        #[test]
        fn every_frame_written_parses_back(
            id in any::<u32>(),
            indexes in prop::collection::vec(0..i32::MAX, 1..MAX_INDEXES),
            payload in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let framed = write(id, &indexes, &payload);
            let f = parse(&framed).expect("parses");
            prop_assert_eq!(f.schema_id, id);
            prop_assert_eq!(f.indexes, indexes);
            prop_assert_eq!(f.payload, &payload[..]);
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse(&bytes);
        }
    }
}
