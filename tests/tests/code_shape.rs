//! The shape the code keeps (STYLE.md): libraries under crates/, one binary per folder under
//! services/, and no service built from another, so that a service links only what it uses
//! (the facility agent, on hospital servers, never librdkafka); no source file of the regional
//! store longer than one reader can hold (700 lines). Read from `cargo metadata` and the tree.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lienthong_tests::repo_root;
use serde_json::Value;

/// The triple of the machine the tests run on (`rustc -vV`).
fn host() -> String {
    let out = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc names its host")
        .to_owned()
}

/// `cargo metadata` of the workspace for this machine, with the resolved dependency graph
/// (offline: what the build already fetched is all it needs).
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host()])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Workspace packages by name, each with the folder of its manifest.
fn members(meta: &Value) -> BTreeMap<String, PathBuf> {
    let ids: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| ids.contains(p["id"].as_str().unwrap_or_default()))
        .map(|p| {
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest"));
            (
                p["name"].as_str().expect("name").to_owned(),
                manifest.parent().expect("folder").to_path_buf(),
            )
        })
        .collect()
}

fn is_service(folder: &Path) -> bool {
    folder
        .parent()
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "services"))
}

#[test]
fn no_service_is_built_from_another_service() {
    let meta = metadata();
    let members = members(&meta);
    let services: BTreeSet<&str> = members
        .iter()
        .filter(|(_, folder)| is_service(folder))
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        services.contains("lienthong-gateway") && services.contains("lienthong-facility-agent"),
        "services found: {services:?}"
    );
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        // The command line drives every service by design.
        if !services.contains(name) || name == "lienthong-cli" {
            continue;
        }
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let on = dep["name"].as_str().unwrap_or_default();
            let kind = dep["kind"].as_str().unwrap_or("normal");
            assert!(
                !services.contains(on) || kind == "dev",
                "{name} is built from the service {on}: move what they share into a crate under crates/"
            );
        }
    }
}

#[test]
fn the_facility_agent_links_no_kafka_client() {
    let meta = metadata();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let agent = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "lienthong-facility-agent")
        .and_then(|p| p["id"].as_str())
        .expect("the agent is a member");
    // Everything the agent's binary links: normal and build dependencies, transitively.
    let mut seen = BTreeSet::new();
    let mut next = vec![agent];
    while let Some(id) = next.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let linked = dep["dep_kinds"]
                .as_array()
                .expect("kinds")
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if linked {
                next.push(dep["pkg"].as_str().expect("pkg"));
            }
        }
    }
    let kafka: Vec<&&str> = seen
        .iter()
        .filter(|id| id.contains("rdkafka") || id.contains("lienthong-kafka"))
        .collect();
    assert!(
        kafka.is_empty(),
        "the facility agent links {kafka:?}; it talks to the gateway only"
    );
    assert!(seen.len() > 50, "the walk found the agent's dependencies");
}

#[test]
fn no_source_file_of_the_regional_store_is_over_700_lines() {
    let mut long = Vec::new();
    let mut folders = vec![repo_root().join("services/regional-store/src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let lines = std::fs::read_to_string(&path)
                    .expect("text")
                    .lines()
                    .count();
                if lines > 700 {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by idea, as store/ and query/ are: {long:?}"
    );
}
