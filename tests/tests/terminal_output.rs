//! What `lienthong` prints from outside sources — export file names and contents, an agent's
//! rejected events and the gateway's reasons — reaches a person's terminal as text: an escape
//! sequence, a bell or a bidirectional override in it is shown as U+FFFD, never obeyed.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use lienthong_tests::lienthong_cli as lienthong;

/// Control characters other than line breaks, and bidirectional controls.
fn steering(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202A}'..='\u{202E}').contains(c))
        .collect()
}

#[test]
fn an_export_s_hostile_name_and_content_are_shown_not_obeyed() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("\u{1b}]0;owned\u{7}\u{1b}[2J.xml");
    std::fs::write(
        &file,
        "<GIAMDINHHS><THONGTINDONVI><MACSKCB>79025\u{1b}[31m</MACSKCB></THONGTINDONVI>",
    )
    .expect("write");
    let out = lienthong(&["xml", "convert", file.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty(), "the export is reported");
    assert!(stderr.contains("owned"), "the file is named: {stderr}");
    assert_eq!(steering(&stderr), [] as [char; 0], "{stderr:?}");
}

#[test]
fn an_agent_s_rejected_events_are_shown_not_obeyed() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let hostile = serde_json::json!({
        "event_id": "e1",
        "document_id": "referral/79025/S1",
        "episode": "LK\u{202e}1",
        "file": "\u{1b}]0;owned\u{7}.xml",
        "reason": "name: bad\nREJECTED a forged line\u{1b}[1A",
    });
    let status = serde_json::json!({
        "pending": 0, "oldest_pending_secs": 0, "max_pending": 100, "rejected": 1,
        "recent_rejected": [hostile], "delivered_since_start": 0,
        "last_error": "REJECTED \u{1b}[2J", "written_at": 0,
    });
    std::fs::write(dir.path().join("status.json"), status.to_string()).expect("write");
    let out = lienthong(&[
        "agent",
        "status",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("referral/79025/S1"), "{stdout}");
    assert_eq!(steering(&stdout), [] as [char; 0], "{stdout:?}");
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("REJECTED a forged line")),
        "a reason cannot start a line of its own: {stdout}"
    );
}
