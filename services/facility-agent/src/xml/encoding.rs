//! The text of an XML file, whatever encoding it is in: a byte-order mark (UTF-8, UTF-16) or the
//! declared encoding (windows-1258, the Vietnamese code page many HIS still export in) decides,
//! every byte must decode, and the result is NFC, so Vietnamese letters compare equal however
//! the exporter composed them. What cannot be decoded exactly is refused by its true reason:
//! a replacement character delivered is a name or a diagnosis silently changed.

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_8};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Why a file's bytes are not text this agent can deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// The declaration names an encoding that does not exist.
    #[error("the file declares encoding {0:?}, which is not a known encoding; export it as UTF-8")]
    Unknown(String),
    /// UTF-16 is recognisable only by its byte-order mark.
    #[error(
        "the file is UTF-16 without a byte-order mark; export it as UTF-8 or UTF-16 with a BOM"
    )]
    Utf16WithoutBom,
    /// Some bytes are not valid in the encoding.
    #[error("the file is not valid {encoding} from byte {at}; export it again as UTF-8")]
    Invalid {
        /// The encoding the file is read in.
        encoding: &'static str,
        /// Where the first invalid sequence starts.
        at: usize,
    },
    /// The file holds the mark of characters lost by an earlier conversion.
    #[error(
        "the file contains U+FFFD, the mark of a character lost in an earlier encoding \
         conversion; export it again from the HIS as UTF-8"
    )]
    Replacement,
}

/// The file's text, decoded exactly and normalised to NFC.
pub fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, EncodingError> {
    let (encoding, body) = match Encoding::for_bom(bytes) {
        Some((encoding, bom)) => (encoding, &bytes[bom..]),
        None if bytes.starts_with(b"<\0") || bytes.starts_with(b"\0<") => {
            return Err(EncodingError::Utf16WithoutBom);
        }
        None => {
            let encoding = declared(bytes)?.unwrap_or(UTF_8);
            // Declared UTF-16 without a BOM: the declaration itself was read as ASCII, so the
            // bytes cannot be UTF-16.
            if encoding.output_encoding() != encoding {
                return Err(EncodingError::Utf16WithoutBom);
            }
            (encoding, bytes)
        }
    };
    let text = if encoding == UTF_8 {
        Cow::Borrowed(
            std::str::from_utf8(body).map_err(|e| EncodingError::Invalid {
                encoding: "UTF-8",
                at: e.valid_up_to(),
            })?,
        )
    } else {
        let (text, had_errors) = encoding.decode_without_bom_handling(body);
        if had_errors {
            let at = first_invalid(encoding, body);
            return Err(EncodingError::Invalid {
                encoding: encoding.name(),
                at,
            });
        }
        text
    };
    if text.contains('\u{FFFD}') {
        return Err(EncodingError::Replacement);
    }
    Ok(match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => text,
        _ => Cow::Owned(text.nfc().collect()),
    })
}

/// The encoding named by an ASCII XML declaration (`<?xml … encoding="…"?>`), if any.
fn declared(bytes: &[u8]) -> Result<Option<&'static Encoding>, EncodingError> {
    let Some(rest) = bytes.strip_prefix(b"<?xml") else {
        return Ok(None);
    };
    let end = rest.iter().position(|&b| b == b'>').unwrap_or(rest.len());
    let decl = String::from_utf8_lossy(&rest[..end.min(512)]);
    let Some(at) = decl.find("encoding") else {
        return Ok(None);
    };
    let value = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')
        .map(str::trim_start)
        .and_then(|v| {
            let quote = v.chars().next().filter(|q| *q == '"' || *q == '\'')?;
            v[1..].split(quote).next()
        })
        .unwrap_or("");
    Encoding::for_label(value.trim().as_bytes())
        .map(Some)
        .ok_or_else(|| EncodingError::Unknown(value.to_owned()))
}

/// Where the first byte sequence invalid in `encoding` starts.
fn first_invalid(encoding: &'static Encoding, body: &[u8]) -> usize {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(body.len() * 3);
    let (result, read) = decoder.decode_to_string_without_replacement(body, &mut out, true);
    match result {
        encoding_rs::DecoderResult::Malformed(bad, _) => read - bad as usize,
        _ => read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_passes_through_unchanged_and_without_copy() {
        let doc = "<?xml version=\"1.0\" encoding=\"utf-8\"?><A>Nguyễn</A>";
        assert!(matches!(decode(doc.as_bytes()), Ok(Cow::Borrowed(s)) if s == doc));
    }

    #[test]
    fn windows_1258_as_declared_becomes_composed_vietnamese() {
        // "Nguyễn" in windows-1258: N g u y ê (0xEA) + combining tilde (0xDE) n.
        let mut doc = b"<?xml version=\"1.0\" encoding=\"windows-1258\"?><A>Nguy".to_vec();
        doc.extend_from_slice(b"\xEA\xDEn</A>");
        let text = decode(&doc).expect("decodes");
        assert!(text.ends_with("<A>Nguyễn</A>"), "{text}");
        assert!(text.contains("Nguy\u{1EC5}n"), "precomposed ễ");
    }

    #[test]
    fn utf16_with_a_bom_decodes_and_without_one_is_refused_by_name() {
        for bytes in [
            "\u{feff}<A>Nguyễn</A>"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<_>>(),
            "\u{feff}<A>Nguyễn</A>"
                .encode_utf16()
                .flat_map(u16::to_be_bytes)
                .collect(),
        ] {
            assert_eq!(decode(&bytes).expect("decodes"), "<A>Nguyễn</A>");
        }
        let bare: Vec<u8> = "<A>x</A>"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(decode(&bare), Err(EncodingError::Utf16WithoutBom));
        let declared = b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><A>x</A>";
        assert_eq!(decode(declared), Err(EncodingError::Utf16WithoutBom));
    }

    #[test]
    fn undecodable_bytes_and_unknown_encodings_are_refused_with_the_place() {
        assert_eq!(
            decode(b"<A>Nguy\xEA\xDEn</A>"),
            Err(EncodingError::Invalid {
                encoding: "UTF-8",
                at: 7
            })
        );
        assert_eq!(
            decode(b"<?xml version='1.0' encoding='klingon'?><A/>"),
            Err(EncodingError::Unknown("klingon".into()))
        );
    }

    #[test]
    fn decomposed_utf8_is_composed_and_replacement_characters_are_refused() {
        let decomposed = "<A>Nguye\u{302}\u{303}n</A>";
        assert_eq!(
            decode(decomposed.as_bytes()).expect("decodes"),
            "<A>Nguyễn</A>"
        );
        assert_eq!(
            decode("<A>Nguy\u{FFFD}n</A>".as_bytes()),
            Err(EncodingError::Replacement)
        );
    }
}
