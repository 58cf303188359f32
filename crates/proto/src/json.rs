//! Canonical protobuf JSON of any lienthong message by its full name: what `lienthong tail`
//! prints and what the agent's and the CLI's JSON intake parse.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

/// The payload of message `full_name` as canonical protobuf JSON (field names in lowerCamelCase,
/// enums by name, bytes in base64, 64-bit integers as strings).
pub fn to_json(full_name: &str, payload: &[u8]) -> Result<serde_json::Value, String> {
    let desc = pool()
        .and_then(|p| p.get_message_by_name(full_name))
        .ok_or_else(|| format!("message type {full_name} is unknown to this build"))?;
    let msg = DynamicMessage::decode(desc, payload)
        .map_err(|e| format!("payload is not a valid {full_name}: {e}"))?;
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &SerializeOptions::new().skip_default_fields(true))
        .map_err(|e| format!("cannot render {full_name} as JSON: {e}"))?;
    serde_json::from_slice(&ser.into_inner()).map_err(|e| e.to_string())
}

/// Parses canonical protobuf JSON of message `full_name` into its binary encoding.
pub fn from_json(full_name: &str, json: &str) -> Result<Vec<u8>, String> {
    use prost::Message;
    let desc = pool()
        .and_then(|p| p.get_message_by_name(full_name))
        .ok_or_else(|| format!("message type {full_name} is unknown to this build"))?;
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(desc, &mut de)
        .map_err(|e| format!("not a valid {full_name} in JSON: {e}"))?;
    de.end()
        .map_err(|e| format!("trailing characters after the {full_name}: {e}"))?;
    Ok(msg.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{EventHeader, ReferralEvent};
    use prost::Message;

    #[test]
    fn renders_an_event_as_json() {
        let e = ReferralEvent {
            header: Some(EventHeader {
                event_id: "e1".into(),
                document_version: 2,
                ..Default::default()
            }),
            slip: None,
        };
        let v = to_json("lienthong.v1.ReferralEvent", &e.encode_to_vec()).expect("renders");
        assert_eq!(v["header"]["eventId"], "e1");
        assert_eq!(v["header"]["documentVersion"], "2");
        assert!(to_json("x.Y", &[]).is_err());
        let back = from_json("lienthong.v1.ReferralEvent", &v.to_string()).expect("parses");
        assert_eq!(ReferralEvent::decode(back.as_slice()).expect("decodes"), e);
        assert!(from_json("lienthong.v1.ReferralEvent", "{\"nope\": 1}").is_err());
    }
}
