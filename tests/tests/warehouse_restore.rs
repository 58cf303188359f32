//! Restoring the warehouse from a backup: a database dumped with `pg_dump` while the loader ran,
//! restored with `pg_restore` after more events were loaded, catches up by itself from the
//! Kafka positions stored in it, to exactly what the database that was never restored holds:
//! nothing lost, nothing twice (docs/backup-restore.md).

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use lienthong_tests::deidentifier::analytics_topics_with_schemas;
use lienthong_tests::warehouse::{
    connect, fresh_database, loader_config, pg_settings, publish_analytics, start_loader,
};
use lienthong_tests::{kafka, keyed_events, require_kafka, require_registry};

/// Runs a PostgreSQL client program against `dsn` as the local stack connects: TLS verified
/// against the development CA, the password from a private password file.
fn pg_tool(program: &str, dsn: &str, args: &[&str], dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let settings = pg_settings();
    let password = std::fs::read_to_string(
        settings
            .password_file
            .as_ref()
            .expect("the local stack has a PostgreSQL password file"),
    )?;
    let passfile = dir.join("pgpass");
    std::fs::write(&passfile, format!("*:*:*:*:{}\n", password.trim()))?;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600))?;
    let out = Command::new(program)
        .args(args)
        .arg("--dbname")
        .arg(dsn)
        .env("PGPASSFILE", &passfile)
        .env("PGSSLMODE", "verify-full")
        .env(
            "PGSSLROOTCERT",
            settings.tls_ca.as_ref().expect("the local stack has a CA"),
        )
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One text of what a warehouse holds: every event and every current document, in order.
async fn contents(dsn: &str) -> anyhow::Result<String> {
    let db = connect(dsn).await?;
    let mut text = String::new();
    for sql in [
        "SELECT event_id || ' ' || document_version FROM event_history ORDER BY 1",
        "SELECT document_id || ' ' || document_version FROM referrals ORDER BY 1",
        "SELECT document_id || ' ' || document_version FROM appointments ORDER BY 1",
        "SELECT document_id || ' ' || document_version FROM lab_reports ORDER BY 1",
    ] {
        for row in db.query(sql, &[]).await? {
            text.push_str(row.get::<_, &str>(0));
            text.push('\n');
        }
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_catches_up_exactly_from_its_stored_positions() -> anyhow::Result<()> {
    require_kafka();
    let registry = require_registry().await;
    let topics = analytics_topics_with_schemas(&registry).await?;
    let live = fresh_database().await?;
    let config = loader_config(&live, &topics);
    let dir = tempfile::tempdir()?;
    let dump = dir.path().join("warehouse.dump");
    let dump_arg = dump.display().to_string();

    // Loaded, then backed up while the loader runs.
    let before = keyed_events(9101, 600);
    publish_analytics(&registry, &topics, &before).await?;
    let loader = start_loader(config.clone(), kafka(), registry.clone(), 600).await?;
    pg_tool(
        "pg_dump",
        &live,
        &["--format", "custom", "--file", &dump_arg],
        dir.path(),
    )?;

    // More is loaded after the backup.
    let after = keyed_events(9102, 400);
    publish_analytics(&registry, &topics, &after).await?;
    lienthong_tests::warehouse::wait_for_count(
        &loader.db,
        "SELECT count(*) FROM event_history",
        1000,
        std::time::Duration::from_secs(60),
    )
    .await?;
    loader.stop().await?;

    // The database is lost; the backup is restored into a new one and the loader started on
    // it with the same settings: it reads on from the positions the backup holds.
    let restored = fresh_database().await?;
    pg_tool(
        "pg_restore",
        &restored,
        &["--exit-on-error", &dump_arg],
        dir.path(),
    )?;
    let mut again = config.clone();
    again.pg = pg_settings().with_dsn(&restored);
    let loader = start_loader(again, kafka(), registry.clone(), 1000).await?;
    // Settled: nothing more arrives after the count is reached.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    loader.stop().await?;

    let (expected, got) = (contents(&live).await?, contents(&restored).await?);
    assert_eq!(expected.lines().count(), got.lines().count());
    assert!(
        expected == got,
        "the restored warehouse differs from the one never restored"
    );
    Ok(())
}
