//! The schema registry keeps every schema and its id across a restart (its storage is a
//! database file in the state folder): a message framed before the restart decodes after it
//! with a fresh client, and registering the contract again creates nothing. It restarts the registry every other test
//! uses, so the parallel suite skips it and deploy/local/test runs it alone, after the suite.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use lienthong_registry::{RegistryClient, SchemaSet, WireCodec};
use lienthong_tests::{keyed_events, repo_root, require_registry, unique_topic};

fn run(script: &str) {
    let status = Command::new(repo_root().join(script))
        .status()
        .unwrap_or_else(|e| panic!("{script} does not run: {e}"));
    assert!(status.success(), "{script} failed: {status}");
}

#[tokio::test]
#[ignore = "restarts the shared schema registry: deploy/local/test runs it alone"]
async fn schemas_and_their_ids_survive_a_registry_restart() -> anyhow::Result<()> {
    let registry = require_registry().await;
    let event = keyed_events(31, 1).remove(0);
    let kind = event.kind();
    let topic = unique_topic("registry-restart");
    let set = SchemaSet::built_in().with_topic(kind, &topic);
    let before = set.register(&RegistryClient::new(&registry)?).await?;
    let framed = WireCodec::new(&registry)?
        .encode_for(kind, &topic, &event.encode_to_vec())
        .await?;

    run("deploy/local/registry/stop");
    run("deploy/local/registry/start");

    let decoded = WireCodec::new(&registry)?
        .decode(Some(&framed), &topic, 0, 0)
        .await?;
    assert_eq!(
        decoded.event(&"after the restart")?,
        event,
        "a message framed before the restart decodes to the same event after it"
    );
    let after = set.register(&RegistryClient::new(&registry)?).await?;
    let created: Vec<_> = after.iter().filter(|r| r.created).collect();
    assert!(
        created.is_empty(),
        "the restarted registry had forgotten {created:?}"
    );
    let ids = |r: &[lienthong_registry::contract::Registered]| {
        r.iter()
            .map(|r| (r.subject.clone(), r.id, r.version))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&after),
        ids(&before),
        "every subject keeps its id and version"
    );
    Ok(())
}
