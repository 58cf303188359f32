//! The contract as a buf module (buf.yaml): `buf lint` is clean, and `buf breaking` finds no
//! change that would break a published client, neither against the main branch nor against
//! the published contract recorded in proto/published-contract.json (`deploy/local/buf
//! publish`), which catches a break however many commits ago it landed. buf comes from
//! deploy/local/buf (run by deploy/local/test); a missing tool fails the test.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use lienthong_tests::repo_root;

fn buf(args: &[&str]) -> (bool, String) {
    let path = std::env::var_os("LIENTHONG_BUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".state/bin/buf"));
    assert!(
        path.is_file(),
        "{} not found: run deploy/local/buf (deploy/local/test does) or set LIENTHONG_BUF",
        path.display()
    );
    let out = Command::new(path)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("buf runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_contract_lints_clean() {
    let (ok, text) = buf(&["lint"]);
    assert!(ok, "buf lint:\n{text}");
    let (ok, text) = buf(&["format", "--diff", "--exit-code", "proto"]);
    assert!(ok, "buf format (run `buf format -w proto`):\n{text}");
}

#[test]
fn nothing_breaks_what_the_main_branch_published() {
    let git = repo_root().join(".git");
    assert!(
        git.exists(),
        "the breaking-change check compares with the main branch of this git checkout"
    );
    // The proto folder as the main branch has it (the module root of buf.yaml).
    let against = format!("{}#branch=main,subdir=proto", git.display());
    let (ok, text) = buf(&["breaking", "--against", &against]);
    assert!(ok, "buf breaking against main:\n{text}");
}

#[test]
fn nothing_breaks_the_published_contract() {
    let (ok, text) = buf(&["breaking", "--against", "proto/published-contract.json"]);
    assert!(
        ok,
        "buf breaking against proto/published-contract.json:\n{text}"
    );
}

#[test]
fn every_file_names_its_package_for_go_java_and_csharp() {
    for entry in std::fs::read_dir(repo_root().join("proto/lienthong/v1")).expect("proto dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "proto") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for option in [
            "go_package",
            "java_package",
            "java_multiple_files",
            "csharp_namespace",
        ] {
            assert!(
                text.contains(&format!("option {option} =")),
                "{} lacks {option}",
                path.display()
            );
        }
    }
}
