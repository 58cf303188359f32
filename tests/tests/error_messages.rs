//! An error that writes its cause into its own message does not also return that cause as its
//! source: binaries print an error with its chain of causes, which would then name the same
//! cause twice ("cannot read token file /x: No such file… : No such file…"). Each error does
//! one or the other; these sources are checked for the two ways thiserror makes a field the
//! source (`#[from]`/`#[source]` on a field the message prints, or a field named `source`).

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

/// The `#[error(…)]` attributes of `text`, each with the lines that follow it up to the next.
fn error_attributes(text: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].trim_start().starts_with("#[error(") {
            i += 1;
            continue;
        }
        let start = i;
        let mut attribute = String::new();
        while i < lines.len() {
            attribute.push_str(lines[i]);
            attribute.push('\n');
            i += 1;
            if lines[i - 1].trim_end().ends_with(")]") {
                break;
            }
        }
        let mut variant = String::new();
        while i < lines.len() && !lines[i].trim_start().starts_with("#[error(") {
            let line = lines[i].trim();
            variant.push_str(line);
            variant.push('\n');
            i += 1;
            // A variant ends at its closing line (tuple or struct) or at the enum's end.
            if line == "}," || line.ends_with("),") || line == "}" {
                break;
            }
        }
        found.push((start + 1, attribute, variant));
    }
    found
}

#[test]
fn no_error_names_its_cause_both_in_its_message_and_as_its_source() {
    let mut doubled = Vec::new();
    let mut checked = 0;
    for (path, text) in lienthong_tests::rust_sources() {
        for (line, attribute, variant) in error_attributes(&text) {
            checked += 1;
            let prints_field_zero = attribute.contains("{0}") || attribute.contains("{0:");
            let field_zero_is_source =
                variant.contains("(#[from]") || variant.contains("(#[source]");
            let prints_source = attribute.contains("{source}") || attribute.contains("{source:");
            if (prints_field_zero && field_zero_is_source) || prints_source {
                doubled.push(format!("{}:{line}", path.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} error messages found: is the scan broken?"
    );
    assert!(
        doubled.is_empty(),
        "these errors print their cause and also return it as the source, so a chain names it twice; keep it in one place (a field not named `source` without #[from], and a From impl if needed): {doubled:#?}"
    );
}

#[test]
fn the_scan_sees_a_doubled_cause() {
    let text = "enum E {\n    #[error(\"read {path}: {source}\")]\n    Read { path: String, source: std::io::Error },\n    #[error(\"kafka: {0}\")]\n    Kafka(#[from] KafkaError),\n    #[error(\"fine: {0}\")]\n    Fine(String),\n}\n";
    let found = error_attributes(text);
    assert_eq!(found.len(), 3);
    assert!(found[0].1.contains("{source}"));
    assert!(found[1].2.contains("(#[from]"));
    assert!(!found[2].2.contains("#[from]"));
}
