//! What a privacy scan of analytics records searches: every byte of a record except its keyed
//! hashes, which are compared whole.
//!
//! A keyed hash is 64 lowercase hex characters, and about one in twenty of them holds some
//! 12-digit citizen ID of a test's hundred thousand patients by chance. Such a match says nothing
//! about a leak, so a scan masks the hashes first. It masks only protobuf fields that are a
//! hash in full (at least 32 hex characters and nothing else): an identifier in a field of its
//! own, or in free text beside a hash, stays visible. Masking a hex run by its characters alone
//! would be unsafe, as a field's tag or length byte can itself be a hex character.

use std::ops::Range;

// The project's LEB128 reader: protobuf keys and lengths are the same varints.
use lienthong_regional_store::packed::take_varint as varint;

/// Shortest run of hex characters taken for a keyed hash (a 128-bit digest, hex).
const SHORTEST_HASH: usize = 32;

/// The byte that replaces each character of a keyed hash; no identifier is made of it.
const MASK: u8 = b'#';

/// A record as a privacy scan reads it.
#[derive(Debug, Default)]
pub struct Scannable {
    /// The record with every keyed hash masked, the same length; every other byte is kept.
    pub masked: Vec<u8>,
    /// The keyed hashes masked, to compare whole with identifiers that are hashes themselves
    /// (an operational patient key must never reappear as an analytics key).
    pub hashes: Vec<String>,
}

/// `record` (a Kafka key, or a protobuf payload) split into its keyed hashes and the rest. A
/// record that is a hash is one whole; one that does not parse as protobuf is kept whole.
pub fn scannable(record: &[u8]) -> Scannable {
    let mut out = Scannable {
        masked: record.to_vec(),
        hashes: Vec::new(),
    };
    if is_keyed_hash(record) {
        out.hashes
            .push(String::from_utf8_lossy(record).into_owned());
        out.masked.fill(MASK);
    } else {
        mask_fields(&mut out.masked, &mut out.hashes);
    }
    out
}

fn is_keyed_hash(bytes: &[u8]) -> bool {
    bytes.len() >= SHORTEST_HASH
        && bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Masks the keyed hashes among the fields of `message`, in nested messages too, when it parses
/// as protobuf; leaves it as it is otherwise.
fn mask_fields(message: &mut [u8], hashes: &mut Vec<String>) {
    let Some(fields) = length_delimited_fields(message) else {
        return;
    };
    for range in fields {
        let content = &mut message[range];
        if is_keyed_hash(content) {
            hashes.push(String::from_utf8_lossy(content).into_owned());
            content.fill(MASK);
        } else {
            // A string that happens to parse as a message only has its hash-shaped parts masked.
            mask_fields(content, hashes);
        }
    }
}

/// Where the contents of the length-delimited fields of `message` lie, or `None` when it is not
/// a well-formed protobuf message.
fn length_delimited_fields(message: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < message.len() {
        let key = varint(message, &mut at)?;
        if key >> 3 == 0 {
            return None;
        }
        let end = match key & 7 {
            0 => {
                varint(message, &mut at)?;
                at
            }
            1 => at.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(message, &mut at)?).ok()?;
                let end = at.checked_add(len)?;
                out.push(at..end);
                end
            }
            5 => at.checked_add(4)?,
            _ => return None,
        };
        if end > message.len() {
            return None;
        }
        at = end;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_proto::v1 as pb;
    use prost::Message as _;

    /// A 64-character hash with a 12-digit citizen ID inside it.
    const HASH_HOLDING_AN_ID: &str =
        "ab060186775298cd0123456789abcdef0123456789abcdef0123456789abcdef";
    const CITIZEN_ID: &str = "060186775298";

    fn holds(bytes: &[u8], needle: &str) -> bool {
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn a_hash_that_holds_an_id_by_chance_is_masked() {
        let header = pb::AnalyticsHeader {
            event_key: HASH_HOLDING_AN_ID.into(),
            source_facility_code: "79025".into(),
            ..Default::default()
        };
        let bytes = header.encode_to_vec();
        assert!(holds(&bytes, CITIZEN_ID));
        let scan = scannable(&bytes);
        assert!(!holds(&scan.masked, CITIZEN_ID));
        assert!(holds(&scan.masked, "79025"), "other fields are kept");
        assert_eq!(scan.masked.len(), bytes.len());
        assert_eq!(scan.hashes, [HASH_HOLDING_AN_ID]);
    }

    #[test]
    fn an_id_in_a_field_of_its_own_beside_a_hash_stays_visible() {
        // Field 6 has tag byte b'2', a hex character: the ID's field follows the hash directly.
        let header = pb::AnalyticsHeader {
            event_key: HASH_HOLDING_AN_ID.replace(CITIZEN_ID, "000000000000"),
            recorded_on: CITIZEN_ID.into(),
            ..Default::default()
        };
        let masked = scannable(&header.encode_to_vec()).masked;
        assert!(holds(&masked, CITIZEN_ID));
        let only_hash_beside_text = pb::AnalyticsHeader {
            recorded_on: format!("{CITIZEN_ID} {}", &HASH_HOLDING_AN_ID[..40]),
            ..Default::default()
        };
        let masked = scannable(&only_hash_beside_text.encode_to_vec()).masked;
        assert!(
            holds(&masked, CITIZEN_ID),
            "a hash inside free text is not a field of its own"
        );
    }

    #[test]
    fn hashes_in_nested_messages_are_masked() {
        let nested = pb::AnalyticsReferralEvent {
            header: Some(pb::AnalyticsHeader {
                document_key: HASH_HOLDING_AN_ID.into(),
                ..Default::default()
            }),
            patient: Some(pb::AnalyticsPatient {
                patient_key: HASH_HOLDING_AN_ID.into(),
                age_band: "40-44".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let scan = scannable(&nested.encode_to_vec());
        assert!(!holds(&scan.masked, CITIZEN_ID));
        assert!(holds(&scan.masked, "40-44"));
        assert_eq!(scan.hashes.len(), 2);
    }

    #[test]
    fn a_key_that_is_a_hash_is_masked_and_other_bytes_are_kept() {
        let key = scannable(HASH_HOLDING_AN_ID.as_bytes());
        assert!(!holds(&key.masked, CITIZEN_ID));
        assert_eq!(key.hashes, [HASH_HOLDING_AN_ID]);
        let short = &HASH_HOLDING_AN_ID[..31];
        assert_eq!(scannable(short.as_bytes()).masked, short.as_bytes());
        let not_protobuf = [0xff, 0xff, b'0', b'6'];
        let kept = scannable(&not_protobuf);
        assert_eq!(kept.masked, not_protobuf);
        assert!(kept.hashes.is_empty());
    }
}
