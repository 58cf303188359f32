//! Any bytes as a MoH XML export: converted or refused with a report, never a panic, never
//! an event that validation refuses, never a replacement character delivered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_core::validation::{Severity, ValidationContext};
use lienthong_facility_agent::xml::{Limits, convert};

fuzz_target!(|bytes: &[u8]| {
    let ctx = ValidationContext::now();
    let limits = Limits {
        max_file_bytes: 1 << 20,
        ..Limits::default()
    };
    if let Ok(conversion) = convert("fuzz.xml", bytes, &limits, &ctx) {
        for event in &conversion.events {
            let errors: Vec<_> = event
                .validate(&ctx)
                .into_iter()
                .filter(|v| v.severity == Severity::Error)
                .collect();
            assert!(errors.is_empty(), "delivered an invalid event: {errors:?}");
        }
    }
});
