//! `lienthong`'s exit codes, each shown by the real command: 0 success, 1 failed (fix and run
//! again), 2 usage, 3 refused as it is, 4 unavailable (retry later), 5 drift from the spec.
//! Also: `tail --max` ends when the topic holds fewer messages, and a dead letter asked for by
//! an offset where there is none is an error, not silence.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Output;
use std::time::{Duration, Instant};

use lienthong_tests::{create_topic, kafka, require_kafka, unique_topic};

use lienthong_tests::lienthong_cli as lienthong;

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(code(&lienthong(&["--no-such-flag"])), 2);
    assert_eq!(code(&lienthong(&["topics", "frobnicate"])), 2);
    assert_eq!(code(&lienthong(&["--help"])), 0);
    assert_eq!(code(&lienthong(&["version"])), 0);
}

#[test]
fn unreadable_input_exits_1_and_input_refused_as_given_exits_3() {
    let out = lienthong(&["facilities", "check", "/nonexistent/facilities.csv"]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("facilities.csv");
    std::fs::write(&file, "not,a,facility,directory\n\u{0}\n").expect("write");
    let out = lienthong(&["facilities", "check", file.to_str().expect("utf-8")]);
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stderr));
    // A line that is no event: the file is refused before anything is sent.
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"referral\": {\"header\": {\"documentId\": 5}}}\n",
    )
    .expect("write");
    let out = lienthong(&["publish", "--file", events.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 3, "{stderr}");
    assert!(
        stderr.contains("events.jsonl:1:"),
        "the line is named: {stderr}"
    );
    let out = lienthong(&["publish", "--file", "/nonexistent/events.jsonl"]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    // A malformed citizen ID, refused before the warehouse is asked (as the regional store
    // refuses one).
    let out = lienthong(&["audit", "accesses", "--citizen-id", "12"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 3, "{stderr}");
    assert!(stderr.contains("12 or 9 characters"), "{stderr}");
    // A token longer-lived than the services accept would be refused by every one of them.
    let key = dir.path().join("issuer.pem");
    let key_set = dir.path().join("keys.json");
    let out = lienthong(&[
        "tokens",
        "keygen",
        "--key-id",
        "k1",
        "--private-key",
        key.to_str().expect("utf-8"),
        "--key-set",
        key_set.to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let issue = |extra: &[&str]| {
        let mut args = vec![
            "tokens",
            "issue",
            "--facility",
            "79025",
            "--scope",
            "publish",
            "--key-file",
            key.to_str().expect("utf-8"),
            "--key-id",
            "k1",
            "--ttl-secs",
            "31536000",
        ];
        args.extend_from_slice(extra);
        lienthong(&args)
    };
    let out = issue(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 3, "{stderr}");
    assert!(stderr.contains("--token-max-lifetime-secs"), "{stderr}");
    assert!(out.stdout.is_empty(), "no token is printed");
    assert_eq!(code(&issue(&["--max-lifetime-secs", "31536000"])), 0);
    // A facility code that is none, a key id already in the set: refused as given.
    let mut bad_facility = vec![
        "tokens",
        "issue",
        "--facility",
        "ABC",
        "--scope",
        "publish",
        "--key-id",
        "k1",
        "--key-file",
    ];
    bad_facility.push(key.to_str().expect("utf-8"));
    assert_eq!(code(&lienthong(&bad_facility)), 3);
    let again = lienthong(&[
        "tokens",
        "keygen",
        "--key-id",
        "k1",
        "--private-key",
        dir.path().join("other.pem").to_str().expect("utf-8"),
        "--key-set",
        key_set.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        code(&again),
        3,
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn unreachable_services_exit_4() {
    let out = lienthong(&[
        "topics",
        "list",
        "--kafka-bootstrap",
        "127.0.0.1:1",
        "--kafka-timeout-secs",
        "2",
    ]);
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    let out = lienthong(&[
        "schemas",
        "list",
        "--registry-url",
        "https://localhost:1/apis/ccompat/v7",
        "--registry-timeout-secs",
        "2",
    ]);
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().expect("temporary folder");
    let token = dir.path().join("token");
    std::fs::write(&token, "header.payload.signature").expect("write");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = lienthong(&[
        "publish",
        "--sample",
        "1",
        "--facility",
        "79025",
        "--gateway",
        "https://localhost:1",
        "--token-file",
        token.to_str().expect("utf-8"),
        "--max-retries",
        "0",
    ]);
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn acls_that_differ_from_the_spec_exit_5() {
    require_kafka();
    let dir = tempfile::tempdir().expect("temporary folder");
    let spec = dir.path().join("acls.toml");
    // A principal that exists nowhere, granted something never applied: drift by construction.
    std::fs::write(
        &spec,
        format!(
            "[[principal]]\nname = \"nobody-{}\"\nread = [\"lienthong.referral.v1\"]\n",
            uuid::Uuid::new_v4().simple()
        ),
    )
    .expect("write");
    let out = lienthong(&["acls", "list", "--spec", spec.to_str().expect("utf-8")]);
    assert_eq!(code(&out), 5, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing"));
    let shipped = lienthong(&["acls", "list"]);
    assert_eq!(
        code(&shipped),
        0,
        "the local stack applies the shipped spec"
    );
}

#[tokio::test]
async fn a_missing_dead_letter_is_an_error_and_tail_max_ends_when_idle() {
    require_kafka();
    let topic = unique_topic("cli.exit");
    create_topic(&kafka(), &topic, 1).await.expect("topic");
    for command in ["show", "replay"] {
        let out = lienthong(&[
            "dlq",
            command,
            "--topic",
            &topic,
            "--partition",
            "0",
            "--offset",
            "41",
        ]);
        assert_eq!(
            code(&out),
            3,
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("no dead letter"));
    }

    // An empty topic and a count of 5: tail waits its idle limit (10 s by default), then ends.
    let started = Instant::now();
    let out = lienthong(&["tail", "--topic", &topic, "--from-beginning", "--max", "5"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 message(s) shown"));
}
