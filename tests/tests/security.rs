//! The secured local stack refuses what it must, each refusal shown by a real client: Kafka
//! without TLS, with a wrong SCRAM password or under a foreign CA (each told as what it is), principals outside their ACLs (the gateway
//! consuming, a regional store producing documents, analytics in Python reading documents),
//! PostgreSQL without TLS, the analyst role on `restricted` or writing, the registry over plain
//! HTTP. Mutual TLS to Kafka works with a certificate of the development PKI and not without.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use lienthong_kafka::{EventProducer, KafkaArgs, SecurityProtocol};
use lienthong_tests::{kafka, require_kafka};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run the tests with deploy/local/test")),
    )
}

/// Settings of one principal of the local stack.
fn as_principal(user: &str) -> KafkaArgs {
    let mut args = kafka();
    args.sasl_username = Some(user.into());
    args.sasl_password = None;
    args.sasl_password_file =
        Some(env_path("LIENTHONG_KAFKA_USERS_DIR").join(format!("{user}.password")));
    args
}

fn private_file(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

#[test]
fn a_plaintext_kafka_client_is_refused() {
    let secured = require_kafka();
    let mut plain = KafkaArgs::local(secured.bootstrap.clone());
    plain.timeout_secs = 5;
    let err = plain
        .probe_blocking()
        .expect_err("the broker has no plaintext listener");
    assert!(err.to_string().contains(&secured.bootstrap), "{err}");
}

#[test]
fn a_wrong_scram_password_is_refused() {
    require_kafka();
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut args = kafka();
    args.sasl_password = None;
    args.sasl_password_file = Some(private_file(dir.path(), "pw", "not-the-password"));
    args.timeout_secs = 5;
    let started = std::time::Instant::now();
    let err = args
        .probe_blocking()
        .expect_err("a wrong password must not authenticate");
    // The refusal is told as a refusal, naming the user and the setting, as soon as the
    // broker gives it: not as an unreachable broker after the whole wait.
    let text = err.to_string();
    assert!(
        matches!(err, lienthong_kafka::Error::Refused { .. }),
        "{text}"
    );
    let user = args.sasl_username.as_deref().expect("a SASL user");
    for part in [
        format!("user `{user}`"),
        "--kafka-sasl-password-file".to_owned(),
        "invalid credentials".to_owned(),
    ] {
        assert!(text.contains(&part), "{part} missing from: {text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "told after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_broker_certificate_under_a_foreign_ca_is_a_tls_refusal() {
    require_kafka();
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut args = kafka();
    args.kafka_tls_ca = Some(foreign_ca(dir.path()));
    args.timeout_secs = 5;
    let err = args
        .probe_blocking()
        .expect_err("the broker's certificate is not signed by this CA");
    let text = err.to_string();
    assert!(
        matches!(err, lienthong_kafka::Error::Refused { .. })
            && text.contains("--kafka-tls-ca")
            && text.contains("certificate verify failed"),
        "{text}"
    );
}

#[test]
fn the_admin_principal_lists_topics_and_nobody_else_does_with_kcat() {
    require_kafka();
    let bootstrap = kafka().bootstrap;
    let anonymous = Command::new("kcat")
        .args(["-b", &bootstrap, "-L", "-m", "5"])
        .output()
        .expect("kcat runs (deploy/local/test installs it in .state/bin)");
    assert!(
        !anonymous.status.success(),
        "kcat without credentials listed the cluster"
    );
    let admin = Command::new("kcat")
        .arg("-F")
        .arg(env_path("LIENTHONG_KAFKA_CLIENT_CONFIG"))
        .args(["-b", &bootstrap, "-L", "-m", "10"])
        .output()
        .expect("kcat runs");
    let listing = String::from_utf8_lossy(&admin.stdout);
    assert!(
        admin.status.success(),
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );
    assert!(listing.contains("lienthong.referral.v1"), "{listing}");
}

/// Fetches from partition 0 of `topic` as `args`; the first error the consumer reports.
fn first_fetch_error(args: &KafkaArgs, topic: &str) -> String {
    let consumer: BaseConsumer = args
        .client_config()
        .expect("settings")
        .set(
            "group.id",
            format!("lienthong-security-test-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Err(e)) => return e.to_string(),
            Some(Ok(m)) => panic!(
                "{topic} delivered offset {} to a principal that may not read it",
                m.offset()
            ),
            None => {}
        }
    }
    panic!("no error within 30 s while fetching {topic}");
}

#[test]
fn the_gateway_and_warehouse_principals_cannot_consume_document_topics() {
    require_kafka();
    // The warehouse loads the analytics topics: personal data never reaches it.
    for (principal, topic) in [
        ("gateway", "lienthong.referral.v1"),
        ("warehouse", "lienthong.referral.v1"),
        ("warehouse", "lienthong.lab-result.v1"),
    ] {
        let err = first_fetch_error(&as_principal(principal), topic);
        assert!(
            err.contains("authoriz") || err.contains("Authoriz"),
            "{principal} reading {topic}: {err}"
        );
    }
}

#[tokio::test]
async fn a_regional_store_principal_cannot_produce_documents() {
    require_kafka();
    let producer =
        EventProducer::new(&as_principal("regional"), Duration::from_secs(20)).expect("producer");
    let err = producer
        .send("lienthong.referral.v1", b"k", b"not a document", &[])
        .await
        .expect_err("the regional principal may not write document topics");
    let text = chain(&err);
    assert!(text.to_lowercase().contains("authoriz"), "{text}");
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn pg_reason(e: &tokio_postgres::Error) -> String {
    lienthong_warehouse_loader::postgres::reason(e)
}

#[test]
fn an_analytics_client_in_python_is_refused_document_topics() {
    require_kafka();
    lienthong_tests::run_pytest("analytics_refused.py", &[], 1);
}

/// `lienthong tail` as the analytics principal: a document topic is refused as not
/// authorized (exit 3), not reported as missing.
#[test]
fn lienthong_tail_tells_an_analyst_a_document_topic_is_not_theirs() {
    require_kafka();
    let out = std::process::Command::new(lienthong_tests::workspace_bin("lienthong"))
        .args([
            "tail",
            "--topic",
            "lienthong.referral.v1",
            "--group",
            "analytics-tail",
        ])
        .args(["--max", "1"])
        .env("LIENTHONG_KAFKA_SASL_USERNAME", "analytics")
        .env(
            "LIENTHONG_KAFKA_SASL_PASSWORD_FILE",
            env_path("LIENTHONG_KAFKA_USERS_DIR").join("analytics.password"),
        )
        .output()
        .expect("lienthong runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("may not read topic lienthong.referral.v1")
            && stderr.contains("authorization failed"),
        "{stderr}"
    );
}

#[test]
fn mutual_tls_authenticates_with_a_pki_certificate_and_not_without() {
    require_kafka();
    let pki = env_path("LIENTHONG_PKI_DIR");
    let mut args = KafkaArgs::local(
        std::env::var("LIENTHONG_KAFKA_MTLS_BOOTSTRAP").expect("LIENTHONG_KAFKA_MTLS_BOOTSTRAP"),
    );
    args.security_protocol = SecurityProtocol::Ssl;
    args.kafka_tls_ca = Some(pki.join("ca.pem"));
    args.timeout_secs = 10;
    let mut without_cert = args.clone();
    without_cert.timeout_secs = 5;
    without_cert
        .probe_blocking()
        .expect_err("the mutual-TLS listener requires a client certificate");
    args.kafka_tls_cert = Some(pki.join("client-mtls.pem"));
    args.kafka_tls_key = Some(pki.join("client-mtls.key"));
    args.probe_blocking()
        .expect("a certificate of the development PKI authenticates");
    // Authenticated is not authorized: the certificate's principal has no ACL.
    let err = first_fetch_error(&args, "lienthong.referral.v1");
    assert!(err.to_lowercase().contains("authoriz"), "{err}");
}

#[tokio::test]
async fn postgresql_refuses_a_connection_without_tls() {
    let mut settings = lienthong_tests::warehouse::pg_settings();
    settings.ssl_mode = lienthong_warehouse_loader::PgSslMode::Disable;
    let err = settings
        .connect()
        .await
        .expect_err("plaintext must be refused");
    assert!(
        err.to_string().contains("no pg_hba.conf entry")
            || err.to_string().contains("no encryption"),
        "{err}"
    );
}

#[tokio::test]
async fn the_analyst_role_reads_views_but_neither_restricted_nor_writes() -> anyhow::Result<()> {
    let dsn = lienthong_tests::warehouse::fresh_database().await?;
    let mut owner = lienthong_tests::warehouse::connect(&dsn).await?;
    lienthong_warehouse_loader::migrations::migrate(&mut owner).await?;
    assert!(
        lienthong_warehouse_loader::migrations::grant_analyst_reads(&owner, "lienthong_analyst")
            .await?
    );

    let analyst = lienthong_tests::warehouse::as_role(&dsn, "analyst")
        .connect()
        .await?;
    let n: i64 = analyst
        .query_one(
            "SELECT count(*) FROM v_referrals_by_province_month_reason",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 0);
    let restricted = analyst
        .query("SELECT * FROM restricted.accesses", &[])
        .await
        .expect_err("restricted is not for analysts");
    assert!(
        pg_reason(&restricted).contains("permission denied"),
        "{}",
        pg_reason(&restricted)
    );
    let write = analyst
        .execute("DELETE FROM event_history", &[])
        .await
        .expect_err("analysts do not write");
    assert!(
        pg_reason(&write).contains("permission denied"),
        "{}",
        pg_reason(&write)
    );
    Ok(())
}

/// The privacy officers' role reads the access table (to answer a patient) and nothing else:
/// no pseudonymized tables, no free text, no writes.
#[tokio::test]
async fn the_privacy_role_reads_the_access_table_alone() -> anyhow::Result<()> {
    let dsn = lienthong_tests::warehouse::fresh_database().await?;
    let mut owner = lienthong_tests::warehouse::connect(&dsn).await?;
    lienthong_warehouse_loader::migrations::migrate(&mut owner).await?;
    assert!(
        lienthong_warehouse_loader::migrations::grant_access_reads(&owner, "lienthong_privacy")
            .await?
    );
    let officer = lienthong_tests::warehouse::as_role(&dsn, "privacy_officer")
        .connect()
        .await?;
    let n: i64 = officer
        .query_one("SELECT count(*) FROM restricted.accesses", &[])
        .await?
        .get(0);
    assert_eq!(n, 0);
    for sql in [
        "SELECT * FROM event_history",
        "SELECT * FROM referrals",
        "DELETE FROM restricted.accesses",
    ] {
        let e = officer.execute(sql, &[]).await.expect_err(sql);
        assert!(
            pg_reason(&e).contains("permission denied"),
            "{sql}: {}",
            pg_reason(&e)
        );
    }
    Ok(())
}

/// A warehouse loader whose registry password is wrong (a rotation half done) stops at
/// start-up saying so, rather than starting and failing on its first message.
#[tokio::test]
async fn a_loader_with_refused_registry_credentials_stops_at_start_saying_why() {
    let kafka = as_principal("warehouse");
    let mut registry = lienthong_tests::require_registry().await;
    let dir = tempfile::tempdir().expect("temporary folder");
    registry.registry_password_file = Some(private_file(dir.path(), "pw", "not-the-password"));
    let config = lienthong_warehouse_loader::LoaderConfig::new(
        &lienthong_tests::warehouse::base_dsn(),
        "lienthong-warehouse-refused-registry",
        vec!["lienthong.analytics.referral.v1".to_owned()],
    );
    let run = lienthong_warehouse_loader::run(
        config,
        kafka,
        registry,
        tokio_util::sync::CancellationToken::new(),
    );
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the loader stops at start-up")
        .expect_err("refused credentials must stop it");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 401") && text.contains("--registry-password-file"),
        "{text}"
    );
}

#[tokio::test]
async fn the_registry_refuses_plain_http() {
    let secured = lienthong_tests::require_registry().await;
    let plain = lienthong_registry::RegistryArgs::local(
        secured.registry_url.replacen("https://", "http://", 1),
    );
    let client = lienthong_registry::RegistryClient::new(&plain).expect("client");
    client
        .subjects()
        .await
        .expect_err("plain HTTP must not be served");
    let https = lienthong_registry::RegistryClient::new(&secured).expect("client");
    https
        .subjects()
        .await
        .expect("HTTPS with the development CA works");
}

/// The local stack's registry settings as `user` (one of deploy/local's registry users).
fn registry_as(user: &str) -> lienthong_registry::RegistryArgs {
    let mut args = lienthong_registry::RegistryArgs::from_env().expect("LIENTHONG_REGISTRY_*");
    args.registry_username = Some(user.into());
    args.registry_password_file =
        Some(env_path("LIENTHONG_REGISTRY_USERS_DIR").join(format!("{user}.password")));
    args
}

#[tokio::test]
async fn the_registry_refuses_callers_without_valid_credentials() {
    let secured = lienthong_tests::require_registry().await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut anonymous = secured.clone();
    anonymous.registry_username = None;
    anonymous.registry_password_file = None;
    let mut wrong = secured.clone();
    wrong.registry_password_file = Some(private_file(dir.path(), "wrong.password", "not-it"));
    for (who, args) in [("anonymous", anonymous), ("wrong password", wrong)] {
        let client = lienthong_registry::RegistryClient::new(&args).expect("client");
        let err = client.subjects().await.expect_err(who);
        assert!(
            matches!(err, lienthong_registry::Error::Refused { status: 401, .. }),
            "{who}: {err}"
        );
    }
}

/// A client guessing passwords cannot flood the registry's log: each refusal is one audit
/// line naming the client's address, not the authorizer's stack trace (26 KB each).
#[tokio::test]
async fn a_refused_registry_login_is_one_audit_line() {
    use std::io::{Read as _, Seek as _};
    let log_path = env_path("LIENTHONG_REGISTRY_USERS_DIR")
        .parent()
        .expect("the registry's folder")
        .join("logs/registry.log");
    let before = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut wrong = lienthong_tests::require_registry().await;
    wrong.registry_password_file = Some(private_file(dir.path(), "wrong.password", "guess"));
    let client = lienthong_registry::RegistryClient::new(&wrong).expect("client");
    const GUESSES: usize = 20;
    for _ in 0..GUESSES {
        client.subjects().await.expect_err("refused");
    }
    let refusals = |text: &str| {
        text.lines()
            .filter(|l| l.contains("apicurio.audit") && l.contains("response_code=\\\"401"))
            .count()
    };
    // The registry writes its log asynchronously.
    let mut written = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut file = std::fs::File::open(&log_path).expect("the registry's log");
        let len = file.metadata().expect("metadata").len();
        // A rotated log starts again from its beginning.
        file.seek(std::io::SeekFrom::Start(if len >= before {
            before
        } else {
            0
        }))
        .expect("seek");
        written.clear();
        file.read_to_string(&mut written).expect("read");
        if refusals(&written) >= GUESSES {
            break;
        }
    }
    let audited = refusals(&written);
    assert!(audited >= GUESSES, "{audited} refusals audited:\n{written}");
    let longest = written.lines().map(str::len).max().unwrap_or(0);
    assert!(
        !written.contains("AuthorizedInterceptor") && longest < 4096,
        "a refusal logged a stack trace (longest line {longest} bytes)"
    );
}

#[tokio::test]
async fn services_and_analytics_read_schemas_and_register_none() {
    lienthong_tests::require_registry().await;
    let subject = format!("lienthong.test.registry-{}-value", uuid::Uuid::new_v4());
    let schema = "syntax = \"proto3\";\npackage probe;\nmessage Probe { string x = 1; }\n";
    for user in ["analytics", "services"] {
        let reader = lienthong_registry::RegistryClient::new(&registry_as(user)).expect("client");
        let subjects = reader
            .subjects()
            .await
            .expect("a reader lists the subjects");
        assert!(
            subjects
                .iter()
                .any(|s| s == "lienthong.analytics.referral.v1-value"),
            "{user}: {subjects:?}"
        );
        let err = reader
            .register(&subject, schema, &[])
            .await
            .expect_err("a read-only user must not register a schema");
        assert!(
            matches!(err, lienthong_registry::Error::Refused { status: 403, .. }),
            "{user}: {err}"
        );
        assert!(
            err.to_string().contains("lienthong schemas register"),
            "{err}"
        );
    }
    // What a service does at start-up needs no write once the contract is registered.
    let services =
        lienthong_registry::RegistryClient::new(&registry_as("services")).expect("client");
    let confirmed = lienthong_registry::SchemaSet::built_in()
        .register(&services)
        .await
        .expect("the services user confirms the registered contract");
    assert!(confirmed.iter().all(|r| !r.created), "{confirmed:?}");
    let admin = lienthong_registry::RegistryClient::new(&registry_as("admin")).expect("client");
    admin
        .register(&subject, schema, &[])
        .await
        .expect("the administrator registers a schema");
}

/// A CA of its own, generated here, that signed none of the stack's certificates.
fn foreign_ca(dir: &std::path::Path) -> PathBuf {
    let pki = lienthong_tests::gateway::TestPki::new().expect("test PKI");
    private_file(dir, "foreign-ca.pem", pki.ca_pem())
}

#[tokio::test]
async fn postgresql_and_the_registry_are_not_trusted_under_a_foreign_ca() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let ca = foreign_ca(dir.path());
    let mut pg = lienthong_tests::warehouse::pg_settings();
    pg.tls_ca = Some(ca.clone());
    let err = pg
        .connect()
        .await
        .expect_err("an unverifiable server certificate must be refused");
    assert!(
        chain(&err).to_lowercase().contains("certificate"),
        "{}",
        chain(&err)
    );

    let mut registry = lienthong_tests::require_registry().await;
    registry.registry_tls_ca = Some(ca);
    let client = lienthong_registry::RegistryClient::new(&registry).expect("client");
    client
        .subjects()
        .await
        .expect_err("the registry's certificate is not signed by this CA");
}
