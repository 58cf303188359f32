//! Any bytes as a consumed Kafka value: the Confluent frame parses or is refused, and what
//! parses writes back to the same bytes' frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_registry::frame;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(f) = frame::parse(bytes) {
        let again = frame::write(f.schema_id, &f.indexes, f.payload);
        let reparsed = frame::parse(&again).expect("a written frame parses");
        assert_eq!(reparsed, f);
    }
});
