//! A caller that speaks plain text to a TLS port is told so in the protocol it speaks, before
//! the connection closes: a gRPC client (HTTP/2 without TLS, `http://` or grpcurl's
//! `-plaintext`) gets its first call answered UNAUTHENTICATED with a message saying to connect
//! with TLS, which every gRPC client shows as the call's error, then a GOAWAY with the same
//! text; `curl http://` gets an HTTP/1.1 400 saying the same. Without this the caller only sees the connection close, which reads like a network
//! fault or a connection limit. Anything else that is not TLS goes on to the handshake, which
//! refuses it.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::connections::CountedConnection;

/// What a caller's first bytes show it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A TLS record, or anything the handshake should judge.
    Tls,
    /// The HTTP/2 client preface in clear text.
    Http2,
    /// An HTTP/1 request line in clear text.
    Http1,
    /// The caller closed the connection before sending anything.
    Closed,
}

/// What the caller is told, in both protocols.
pub const TLS_REQUIRED: &str = "this port speaks TLS only: connect with TLS (an https:// address; grpcurl without -plaintext) trusting the CA that signed the server's certificate";

/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// The start of the HTTP/2 client preface (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// How long a caller that was told may take to close before the connection is dropped; reading
/// what it sent meanwhile lets the answer arrive instead of a reset.
const LINGER: Duration = Duration::from_millis(500);

/// Waits for the caller's first bytes and judges them, taking nothing from the connection.
pub async fn opening(connection: &CountedConnection) -> io::Result<Opening> {
    let mut buf = [0u8; HTTP2_PREFACE.len()];
    loop {
        let n = connection.peek(&mut buf).await?;
        if let Some(judged) = judge(&buf[..n]) {
            return Ok(judged);
        }
        // Too few bytes yet to tell; peek returns at once while they wait, so pause.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Judges a caller's first bytes; `None` while too few have arrived to tell.
fn judge(first: &[u8]) -> Option<Opening> {
    let Some(&byte) = first.first() else {
        return Some(Opening::Closed);
    };
    if byte == HANDSHAKE_RECORD {
        return Some(Opening::Tls);
    }
    let seen = first.len().min(HTTP2_PREFACE.len());
    if first[..seen] == HTTP2_PREFACE[..seen] {
        return (seen == HTTP2_PREFACE.len()).then_some(Opening::Http2);
    }
    // An HTTP/1 request line starts with a method token of capital letters and a space.
    let method = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match first.get(method) {
        Some(b' ') if method >= 3 => Some(Opening::Http1),
        None if method == first.len() && method < 8 => None,
        _ => Some(Opening::Tls),
    }
}

/// Tells a caller that spoke `opening` in clear text that the port needs TLS, then closes.
pub async fn tell(mut connection: CountedConnection, opening: Opening) {
    let told = match opening {
        Opening::Http2 => refuse_grpc(&mut connection).await,
        Opening::Http1 => connection.write_all(&http1_refusal()).await,
        Opening::Tls | Opening::Closed => return,
    };
    if told.is_err() || connection.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(connection.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// HTTP/2 frame types and flags this module reads or writes (RFC 9113, section 6).
mod frame {
    pub const HEADERS: u8 = 0x1;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const ACK: u8 = 0x1;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const INADEQUATE_SECURITY: u32 = 0xc;
}

/// The most a clear-text caller may send before its first call, and how long it may take to
/// make it, before it is told by GOAWAY alone.
const MAX_READ: usize = 64 * 1024;
const FIRST_CALL_WAIT: Duration = Duration::from_secs(1);

/// Answers a gRPC client's first call as a gRPC error carrying `TLS_REQUIRED` (clients show
/// the message of a call's status, not the connection's), then says GOAWAY with the same text.
/// Whoever sends no call gets the GOAWAY alone.
async fn refuse_grpc(connection: &mut CountedConnection) -> io::Result<()> {
    let mut preface = [0u8; 24];
    connection.read_exact(&mut preface).await?;
    connection
        .write_all(&encode(frame::SETTINGS, 0, 0, &[]))
        .await?;
    let mut stream = 0;
    let first_call = async {
        let mut read = 0;
        while read < MAX_READ {
            let mut head = [0u8; 9];
            connection.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            read += 9 + len;
            if read > MAX_READ {
                break;
            }
            let mut payload = vec![0u8; len];
            connection.read_exact(&mut payload).await?;
            match kind {
                frame::SETTINGS if flags & frame::ACK == 0 => {
                    connection
                        .write_all(&encode(frame::SETTINGS, frame::ACK, 0, &[]))
                        .await?;
                }
                frame::HEADERS if id != 0 => {
                    stream = id;
                    let trailers = unauthenticated_trailers();
                    let flags = frame::END_STREAM | frame::END_HEADERS;
                    return connection
                        .write_all(&encode(frame::HEADERS, flags, id, &trailers))
                        .await;
                }
                _ => {}
            }
        }
        Ok(())
    };
    // A client that never calls is told by the GOAWAY alone.
    if let Ok(Err(e)) = tokio::time::timeout(FIRST_CALL_WAIT, first_call).await {
        return Err(e);
    }
    connection.write_all(&goaway(stream)).await
}

/// One HTTP/2 frame.
fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// GOAWAY after `last_stream`, with INADEQUATE_SECURITY and `TLS_REQUIRED` as debug data.
fn goaway(last_stream: u32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + TLS_REQUIRED.len());
    payload.extend_from_slice(&last_stream.to_be_bytes());
    payload.extend_from_slice(&frame::INADEQUATE_SECURITY.to_be_bytes());
    payload.extend_from_slice(TLS_REQUIRED.as_bytes());
    encode(frame::GOAWAY, 0, 0, &payload)
}

/// A gRPC trailers-only answer, UNAUTHENTICATED (the server cannot know a caller without TLS)
/// with `TLS_REQUIRED`, as an HPACK block of literals that touch no dynamic table.
fn unauthenticated_trailers() -> Vec<u8> {
    const STATUS_200: u8 = 0x88; // static table entry 8
    let mut block = vec![STATUS_200];
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("grpc-status", "16"),
        // Printable ASCII without '%' needs no percent-encoding.
        ("grpc-message", TLS_REQUIRED),
    ] {
        block.push(0x00); // literal without indexing, new name
        hpack_string(&mut block, name);
        hpack_string(&mut block, value);
    }
    block
}

/// An HPACK string literal without Huffman coding (RFC 7541, sections 5.1 and 5.2).
fn hpack_string(out: &mut Vec<u8>, text: &str) {
    const PREFIX: usize = 0x7f;
    let mut len = text.len();
    if len < PREFIX {
        out.push(len as u8);
    } else {
        out.push(PREFIX as u8);
        len -= PREFIX;
        while len >= 0x80 {
            out.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(text.as_bytes());
}

/// An HTTP/1.1 400 whose body is `TLS_REQUIRED`.
fn http1_refusal() -> Vec<u8> {
    let body = format!("{TLS_REQUIRED}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_judged_once_enough_have_arrived() {
        assert_eq!(judge(&[]), Some(Opening::Closed));
        assert_eq!(judge(&[0x16, 0x03, 0x01]), Some(Opening::Tls));
        assert_eq!(judge(&[0x16]), Some(Opening::Tls));
        assert_eq!(judge(b"PRI * HTTP/2.0"), Some(Opening::Http2));
        assert_eq!(judge(b"PRI * HT"), None);
        assert_eq!(judge(b"P"), None);
        assert_eq!(judge(b"GET / HTTP/1.1\r\n"), Some(Opening::Http1));
        assert_eq!(judge(b"POST /x"), Some(Opening::Http1));
        assert_eq!(judge(b"PRIX"), None);
        assert_eq!(judge(b"PRINT / "), Some(Opening::Http1));
        // Not TLS and not HTTP: the handshake refuses it.
        assert_eq!(judge(b"\x00\x01garbage"), Some(Opening::Tls));
        assert_eq!(judge(b"get / HTTP/1.1"), Some(Opening::Tls));
        assert_eq!(judge(b"ABCDEFGHIJ"), Some(Opening::Tls));
        assert_eq!(judge(b"GE"), None);
    }

    #[test]
    fn the_goaway_carries_the_reason() {
        let out = goaway(3);
        let len = u32::from_be_bytes([0, out[0], out[1], out[2]]) as usize;
        assert_eq!(out[3], 7);
        assert_eq!(out.len(), 9 + len);
        assert_eq!(&out[9..13], &3u32.to_be_bytes());
        assert_eq!(&out[13..17], &12u32.to_be_bytes());
        assert_eq!(&out[17..], TLS_REQUIRED.as_bytes());
    }

    #[test]
    fn long_strings_take_a_multi_byte_length() {
        let mut out = Vec::new();
        hpack_string(&mut out, &"x".repeat(147));
        assert_eq!(&out[..2], &[0x7f, 20]);
        let mut out = Vec::new();
        hpack_string(&mut out, &"x".repeat(127 + 300));
        assert_eq!(&out[..3], &[0x7f, 0xac, 0x02]);
        assert!(
            !TLS_REQUIRED.contains('%') && TLS_REQUIRED.bytes().all(|b| (0x20..0x7f).contains(&b))
        );
    }
}
