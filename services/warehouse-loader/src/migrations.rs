//! Versioned SQL migrations, applied at start-up (never by hand), once, under a lock so that
//! several replicas starting together do not race.

use tokio_postgres::Client;

/// (version, name, SQL) in order. Append only: a released migration never changes.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "warehouse",
        include_str!("../migrations/0001_warehouse.sql"),
    ),
    (
        2,
        "receipts",
        include_str!("../migrations/0002_receipts.sql"),
    ),
    (
        3,
        "monthly_history",
        include_str!("../migrations/0003_monthly_history.sql"),
    ),
    (
        4,
        "content_digest",
        include_str!("../migrations/0004_content_digest.sql"),
    ),
    (
        5,
        "accesses",
        include_str!("../migrations/0005_accesses.sql"),
    ),
    (
        6,
        "analytics_source",
        include_str!("../migrations/0006_analytics_source.sql"),
    ),
];

/// Arbitrary constant key of the advisory lock that serializes migrations.
const LOCK_KEY: i64 = 0x6c69_656e_7468_6f6e; // "lienthon"

/// Applies every migration not yet applied; returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    under_lock(client, async |c: &mut Client| apply(c).await).await
}

/// Applies every migration not yet applied and grants the reader roles their reads, all under
/// the migrations' lock: replicas starting together neither race a migration nor grant on the
/// same objects at once (PostgreSQL refuses concurrent GRANTs on one object with "tuple
/// concurrently updated"). Returns the versions applied now.
pub async fn prepare(
    client: &mut Client,
    analyst_role: &str,
    privacy_role: &str,
) -> Result<Vec<i32>, tokio_postgres::Error> {
    under_lock(client, async |c: &mut Client| {
        let applied = apply(c).await?;
        grant_analyst_reads(c, analyst_role).await?;
        grant_access_reads(c, privacy_role).await?;
        Ok(applied)
    })
    .await
}

/// Runs `work` holding the advisory lock that serializes migrations across replicas.
async fn under_lock<T>(
    client: &mut Client,
    work: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = work(client).await;
    // Unlock even when a step failed, so the next start can retry.
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await?;
    result
}

/// Grants `role` read access to every view and table of the `public` schema (pseudonymized by
/// construction) and nothing in `restricted`. Runs after every migration so new tables are
/// covered; returns false, changing nothing, when the role does not exist.
pub async fn grant_analyst_reads(
    client: &Client,
    role: &str,
) -> Result<bool, tokio_postgres::Error> {
    grant(
        client,
        role,
        "analyst",
        "GRANT USAGE ON SCHEMA public TO \"{role}\";
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{role}\";
         REVOKE ALL ON ALL TABLES IN SCHEMA restricted FROM \"{role}\";
         REVOKE ALL ON SCHEMA restricted FROM \"{role}\";",
    )
    .await
}

/// Grants `role` (the privacy officers who answer patients' requests) read access to
/// `restricted.accesses` and nothing else; returns false, changing nothing, when the role
/// does not exist.
pub async fn grant_access_reads(
    client: &Client,
    role: &str,
) -> Result<bool, tokio_postgres::Error> {
    grant(
        client,
        role,
        "privacy",
        "GRANT USAGE ON SCHEMA restricted TO \"{role}\";
         GRANT SELECT ON restricted.accesses TO \"{role}\";",
    )
    .await
}

/// Runs `sql` (with `{role}` replaced) when `role` is a plain name of an existing role.
async fn grant(
    client: &Client,
    role: &str,
    kind: &str,
    sql: &str,
) -> Result<bool, tokio_postgres::Error> {
    // A role name the SQL can carry as a quoted identifier without escaping.
    if role.is_empty()
        || !role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        tracing::warn!(
            role,
            kind,
            "role name must be lowercase letters, digits and _; no grants made"
        );
        return Ok(false);
    }
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some();
    if !exists {
        tracing::warn!(
            role,
            kind,
            "role does not exist; no read grants made (create it, then restart the loader)"
        );
        return Ok(false);
    }
    client.batch_execute(&sql.replace("{role}", role)).await?;
    Ok(true)
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        .await?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let done = client
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        if *version == 1 {
            seed_provinces(&tx).await?;
        }
        tx.commit().await?;
        tracing::info!(version, name, "migration applied");
        applied.push(*version);
    }
    Ok(applied)
}

/// Provinces and the old→new mapping, from the data compiled into crates/core.
async fn seed_provinces(tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    for p in lienthong_core::Province::all_current() {
        tx.execute(
            "INSERT INTO provinces (code, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&p.code, &p.name],
        )
        .await?;
    }
    for old in lienthong_core::province::old_codes() {
        let name = lienthong_core::province::old_province_name(old).unwrap_or_default();
        if let Some(region) = lienthong_core::province::to_current(old) {
            tx.execute(
                "INSERT INTO province_codes (old_code, old_name, region) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&old, &name, &region.as_str()],
            )
            .await?;
        }
    }
    Ok(())
}
