//! The Confluent wire format against the real Apicurio registry and Kafka broker.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use lienthong_registry::{DecodeError, RegistryClient, SchemaSet, WireCodec};
use lienthong_tests::{
    create_topic, keyed_events, publish_framed, read_at, repo_root, require_kafka,
    require_registry, unique_topic, workspace_bin,
};
use rdkafka::Message;

#[tokio::test]
async fn framed_events_round_trip_field_by_field() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let published = publish_framed(&kafka, &registry, keyed_events(11, 6)).await?;
    let codec = WireCodec::new(&registry)?;
    for (event, partition, offset) in published {
        let topic = event.kind().topic();
        let msg = read_at(topic, partition, offset).await?;
        let bytes = msg.payload().unwrap_or_default();
        assert_eq!(bytes[0], 0, "magic byte");
        assert_eq!(bytes[5], 0, "message index [0] is written as a single 0");
        let decoded = codec.decode(Some(bytes), topic, partition, offset).await?;
        assert_eq!(decoded.full_name, event.kind().message_name());
        let back = decoded.event(&"test")?;
        assert_eq!(
            back, event,
            "{topic}[{partition}]@{offset} differs after the round trip"
        );
    }
    Ok(())
}

/// A registry that refuses the reader's credentials says nothing about the message: the error
/// is the registry's (retried by every sink), never "this message cannot be decoded" (which
/// would send a good event to the dead letters).
#[tokio::test]
async fn a_registry_refusing_the_reader_is_a_registry_failure_not_the_message_s()
-> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let kafka = require_kafka();
    let registry = require_registry().await;
    let published = publish_framed(&kafka, &registry, keyed_events(61, 1)).await?;
    let (event, partition, offset) = published.first().expect("one event").clone();
    let topic = event.kind().topic();
    let msg = read_at(topic, partition, offset).await?;

    let dir = tempfile::tempdir()?;
    let wrong = dir.path().join("password");
    std::fs::write(&wrong, "not-the-password")?;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600))?;
    let mut refused = registry.clone();
    refused.registry_password_file = Some(wrong);
    let codec = WireCodec::new(&refused)?;
    for attempt in 0..2 {
        match codec.decode(msg.payload(), topic, partition, offset).await {
            Err(DecodeError::Registry { message, .. }) => {
                assert!(message.contains("401"), "{message}");
            }
            other => panic!("attempt {attempt}: expected a registry failure, got {other:?}"),
        }
    }
    // The same message decodes with the right credentials.
    let decoded = WireCodec::new(&registry)?
        .decode(msg.payload(), topic, partition, offset)
        .await?;
    assert_eq!(decoded.event(&"test")?, event);
    Ok(())
}

#[tokio::test]
async fn bad_frames_give_specific_errors_naming_where_they_came_from() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    // A topic whose subject the registry knows: an unknown schema id is the message's fault.
    let topic = unique_topic("badframes");
    create_topic(&kafka, &topic, 1).await?;
    SchemaSet::built_in()
        .with_topic(lienthong_core::DocumentKind::Referral, &topic)
        .register(&RegistryClient::new(&registry)?)
        .await?;
    let producer = lienthong_kafka::EventProducer::new(&kafka, std::time::Duration::from_secs(10))?;
    let cases: [&[u8]; 3] = [
        b"\x0a\x03abc",
        &[0, 0, 0],
        &[0, 0x7f, 0xff, 0xff, 0x00, 0, 0x0a, 0x01, 0x41],
    ];
    for payload in cases {
        producer.send(&topic, b"k", payload, &[]).await?;
    }
    let codec = WireCodec::new(&registry)?;
    let mut errors = Vec::new();
    for offset in 0..3 {
        let msg = read_at(&topic, 0, offset).await?;
        errors.push(
            codec
                .decode(msg.payload(), &topic, 0, offset)
                .await
                .expect_err("must not decode"),
        );
    }
    assert!(
        matches!(&errors[0], DecodeError::NoMagicByte { found: 0x0a, .. }),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(&errors[1], DecodeError::Truncated { len: 3, .. }),
        "{:?}",
        errors[1]
    );
    assert!(
        matches!(
            &errors[2],
            DecodeError::UnknownSchema {
                schema_id: 0x7fff_ff00,
                ..
            }
        ),
        "{:?}",
        errors[2]
    );
    for (i, e) in errors.iter().enumerate() {
        assert!(e.to_string().starts_with(&format!("{topic}[0]@{i}")), "{e}");
    }

    // The same frame on a topic whose subject the registry does not know (a registry that
    // lost its state): a registry failure, retried, never the message's fault.
    let unknown_subject = unique_topic("badframes.lost");
    create_topic(&kafka, &unknown_subject, 1).await?;
    producer.send(&unknown_subject, b"k", cases[2], &[]).await?;
    let msg = read_at(&unknown_subject, 0, 0).await?;
    let lost = codec
        .decode(msg.payload(), &unknown_subject, 0, 0)
        .await
        .expect_err("must not decode");
    assert!(
        matches!(&lost, DecodeError::Registry { .. })
            && lost.to_string().contains(&format!(
                "has no version of subject {unknown_subject}-value"
            ))
            && lost.to_string().contains("not dead-lettered"),
        "{lost:?}"
    );

    // The analyst's tool reports the same and exits non-zero, without panicking.
    let out = Command::new(workspace_bin("lienthong"))
        .args([
            "tail",
            "--kafka-bootstrap",
            &kafka.bootstrap,
            "--registry-url",
            &registry.registry_url,
            "--topic",
            &topic,
            "--from-beginning",
            "--max",
            "3",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("not Confluent-framed")
            && stderr.contains("truncated frame")
            && stderr.contains("unknown to the registry"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn tail_prints_decoded_json_with_partition_offset_key_and_headers() -> anyhow::Result<()> {
    let kafka = require_kafka();
    let registry = require_registry().await;
    let published = publish_framed(&kafka, &registry, keyed_events(12, 1)).await?;
    let (event, partition, offset) = &published[0];
    // Tail from the beginning of a busy shared topic would be slow: tail everything and pick
    // ours out by partition and offset.
    let out = Command::new(workspace_bin("lienthong"))
        .args([
            "tail",
            "--kafka-bootstrap",
            &kafka.bootstrap,
            "--registry-url",
            &registry.registry_url,
            "--topic",
            event.kind().topic(),
            "--from-beginning",
            "--idle-exit-secs",
            "3",
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["partition"] == *partition && v["offset"] == *offset)
        .ok_or_else(|| {
            anyhow::anyhow!("message {partition}@{offset} not in tail output:\n{stdout}")
        })?;
    let header = event.header().expect("header");
    assert_eq!(line["key"], header.patient_key.as_str());
    assert_eq!(line["message_type"], event.kind().message_name());
    assert_eq!(line["value"]["header"]["eventId"], header.event_id.as_str());
    assert!(line["schema_id"].as_u64().is_some_and(|id| id > 0));
    assert!(line["headers"].is_object());
    Ok(())
}

fn copy_protos(dir: &std::path::Path) -> anyhow::Result<()> {
    for (path, _) in lienthong_proto::PROTO_SOURCES {
        let to = dir.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(repo_root().join("proto").join(path), to)?;
    }
    Ok(())
}

/// referral.proto with one optional field added: a compatible change.
fn with_a_new_field(referral: &str) -> String {
    referral.replace(
        "  PartialDateTime issued_at = 28;\n",
        "  PartialDateTime issued_at = 28;\n  // test-only addition\n  optional string note = 29;\n",
    )
}

/// A proto root holding the contract with that compatible change, as a later release has it.
fn newer_contract() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    copy_protos(dir.path())?;
    let referral = dir.path().join("lienthong/v1/referral.proto");
    std::fs::write(
        &referral,
        with_a_new_field(&std::fs::read_to_string(&referral)?),
    )?;
    Ok(dir)
}

#[tokio::test]
async fn incompatible_changes_are_refused_and_compatible_ones_pass() -> anyhow::Result<()> {
    let registry = require_registry().await;
    let client = RegistryClient::new(&registry)?;
    let dir = tempfile::tempdir()?;
    copy_protos(dir.path())?;
    let referral = dir.path().join("lienthong/v1/referral.proto");
    let original = std::fs::read_to_string(&referral)?;
    let check = || {
        Command::new(workspace_bin("lienthong"))
            .args([
                "schemas",
                "check",
                "--registry-url",
                &registry.registry_url,
                "--proto-dir",
            ])
            .arg(dir.path())
            .output()
    };

    // A field's type changed: refused by `schemas check`, with the registry's reason.
    std::fs::write(
        &referral,
        original.replace("string slip_number = 4;", "int64 slip_number = 4;"),
    )?;
    let out = check()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("lienthong.referral.v1-value: INCOMPATIBLE")
            && stdout.contains("Field type changed"),
        "{stdout}"
    );

    // ...and by the registry itself when someone tries to register it.
    let set = SchemaSet::from_dir(dir.path())?;
    let err = set
        .register(&client)
        .await
        .expect_err("registry must refuse");
    assert!(
        err.to_string().contains("409") || err.to_string().contains("Incompatible"),
        "{err}"
    );

    // A field renumbered: refused too.
    std::fs::write(
        &referral,
        original.replace("string clinical_signs = 11;", "string clinical_signs = 31;"),
    )?;
    let out = check()?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A new optional field is a compatible change.
    std::fs::write(&referral, with_a_new_field(&original))?;
    let out = check()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[tokio::test]
async fn a_receipt_round_trips_through_the_registry() -> anyhow::Result<()> {
    use prost::Message as _;
    let registry = require_registry().await;
    let topic = unique_topic("receipt");
    SchemaSet::built_in()
        .with_receipt_topic(&topic)
        .register(&RegistryClient::new(&registry)?)
        .await?;
    let codec = WireCodec::new(&registry)?;
    let receipt = lienthong_proto::v1::ReferralReceiptEvent {
        referral_document_id: "referral/79025/CT1".into(),
        ..Default::default()
    };
    let framed = codec
        .encode_message(
            &topic,
            "lienthong.v1.ReferralReceiptEvent",
            &receipt.encode_to_vec(),
        )
        .await?;
    let decoded = codec.decode(Some(&framed), &topic, 0, 0).await?;
    assert_eq!(decoded.full_name, "lienthong.v1.ReferralReceiptEvent");
    assert_eq!(
        lienthong_proto::v1::ReferralReceiptEvent::decode(decoded.payload.as_slice())?,
        receipt
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_starting_together_all_set_a_new_subjects_compatibility() -> anyhow::Result<()> {
    // Every service registers its schemas at start; on a new subject the registry creates
    // the compatibility rule once and answers the others 409 unless they update it instead.
    let registry = require_registry().await;
    let subject = format!("{}-value", unique_topic("compat.race"));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (registry, subject) = (registry.clone(), subject.clone());
        tasks.spawn(async move {
            RegistryClient::new(&registry)?
                .set_compatibility(&subject, "BACKWARD")
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let level = RegistryClient::new(&registry)?
        .compatibility(&subject)
        .await?;
    assert_eq!(level.as_deref(), Some("BACKWARD"));
    Ok(())
}

/// A set that names its own topics (a test's, or a service's) registers their subjects and
/// what they import, and adds no version to any other subject: the standard analytics subject,
/// whose schema imports the referral file, keeps referring to the standard referral subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_named_topics_leaves_every_other_subject_as_it_was() -> anyhow::Result<()> {
    use lienthong_core::routing::ANALYTICS_REFERRAL_TOPIC;
    let registry = require_registry().await;
    let client = RegistryClient::new(&registry)?;
    let standard = lienthong_registry::contract::value_subject(ANALYTICS_REFERRAL_TOPIC);
    let before = client.versions(&standard).await?;
    let topic = unique_topic("named.referral");
    let registered = SchemaSet::built_in()
        .with_topic(lienthong_core::DocumentKind::Referral, &topic)
        .register(&client)
        .await?;
    let subjects: Vec<&str> = registered.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "lienthong.v1.common",
            &lienthong_registry::contract::value_subject(&topic)
        ]
    );
    assert_eq!(
        client.versions(&standard).await?,
        before,
        "{standard} changed"
    );
    Ok(())
}

/// `standing` tells, per subject, whether the registry holds the contract's file and whether
/// that is the latest version; `lienthong schemas verify` exits 5 when a subject is not current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_tells_a_current_contract_from_a_missing_or_superseded_one() -> anyhow::Result<()> {
    use lienthong_core::DocumentKind::Referral;
    use lienthong_registry::contract::value_subject;
    let registry = require_registry().await;
    let client = RegistryClient::new(&registry)?;
    let topic = unique_topic("verify.referral");
    let subject = value_subject(&topic);
    let named = |set: SchemaSet| set.with_topic(Referral, &topic);
    let of = |standing: Vec<lienthong_registry::Standing>| {
        standing
            .into_iter()
            .find(|s| s.subject == subject)
            .expect("the named subject is reported")
    };

    // Not registered yet.
    let missing = of(named(SchemaSet::built_in()).standing(&client).await?);
    assert_eq!((missing.holds, missing.latest), (None, None));

    // Registered: current.
    named(SchemaSet::built_in()).register(&client).await?;
    let current = of(named(SchemaSet::built_in()).standing(&client).await?);
    assert!(current.is_current(), "{current:?}");

    // A compatible change registered after it: the built-in contract is no longer the latest.
    let dir = newer_contract()?;
    named(SchemaSet::from_dir(dir.path())?)
        .register(&client)
        .await?;
    let superseded = of(named(SchemaSet::built_in()).standing(&client).await?);
    assert_eq!(
        (superseded.holds, superseded.latest),
        (Some(1), Some(2)),
        "{superseded:?}"
    );
    assert!(!superseded.is_current());

    // The command: a contract the registry does not hold is drift, exit 5, said per subject.
    let out = Command::new(workspace_bin("lienthong"))
        .args([
            "schemas",
            "verify",
            "--registry-url",
            &registry.registry_url,
            "--proto-dir",
        ])
        .arg(dir.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("lienthong.referral.v1-value") && l.contains("not registered")),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lienthong schemas register"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_frames_with_the_schema_its_build_encodes_not_the_subject_s_latest()
-> anyhow::Result<()> {
    use lienthong_core::DocumentKind::Referral;
    let registry = require_registry().await;
    let client = RegistryClient::new(&registry)?;
    let dir = newer_contract()?;
    let newer = || SchemaSet::from_dir(dir.path());
    let id_of = |registered: Vec<lienthong_registry::contract::Registered>, topic: &str| {
        registered
            .into_iter()
            .find(|r| r.subject == format!("{topic}-value"))
            .expect("the topic's subject is registered")
            .id
    };
    let payload = keyed_events(29, 10)
        .into_iter()
        .find(|e| e.kind() == Referral)
        .expect("a referral among ten events")
        .encode_to_vec();

    // This build's contract, then a newer compatible one (as a later release registers it):
    // this build's producers keep framing with the schema they encode with.
    let topic = unique_topic("writer.referral");
    let registered = SchemaSet::built_in()
        .with_topic(Referral, &topic)
        .register(&client)
        .await?;
    let built = id_of(registered.clone(), &topic);
    let later = id_of(
        newer()?
            .with_topic(Referral, &topic)
            .register(&client)
            .await?,
        &topic,
    );
    assert_ne!(built, later);
    let codec = WireCodec::new(&registry)?;
    let framed = codec.encode_for(Referral, &topic, &payload).await?;
    let frame = lienthong_registry::frame::parse(&framed)?;
    assert_eq!(
        (frame.schema_id, frame.indexes.as_slice()),
        (built, &[0][..])
    );
    let decoded = codec.decode(Some(&framed), &topic, 0, 0).await?;
    assert_eq!(
        (decoded.full_name.as_str(), decoded.payload),
        ("lienthong.v1.ReferralEvent", payload.clone())
    );

    // A service that has just registered its contract frames with the registered ids without
    // asking the registry again (this codec's registry address answers nothing).
    let mut away = registry.clone();
    away.registry_url = "https://127.0.0.1:9/apis/ccompat/v7".into();
    let remembering = WireCodec::new(&away)?;
    remembering.remember(&registered);
    let framed = remembering.encode_for(Referral, &topic, &payload).await?;
    assert_eq!(lienthong_registry::frame::parse(&framed)?.schema_id, built);

    // A subject holding only another contract: refused, saying what to do, and nothing framed
    // under an id whose schema is not the payload's.
    let foreign = unique_topic("writer.foreign");
    newer()?
        .with_topic(Referral, &foreign)
        .register(&client)
        .await?;
    let err = codec
        .encode_for(Referral, &foreign, &payload)
        .await
        .expect_err("no version equal to this build's file");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{foreign}-value"))
            && text.contains("lienthong/v1/referral.proto")
            && text.contains("lienthong schemas register"),
        "{text}"
    );
    // A subject not registered yet: refused until it is, then framed: a refusal is not
    // remembered.
    let fresh = unique_topic("writer.fresh");
    assert!(codec.encode_for(Referral, &fresh, &payload).await.is_err());
    let now_held = id_of(
        SchemaSet::built_in()
            .with_topic(Referral, &fresh)
            .register(&client)
            .await?,
        &fresh,
    );
    let framed = codec.encode_for(Referral, &fresh, &payload).await?;
    assert_eq!(
        lienthong_registry::frame::parse(&framed)?.schema_id,
        now_held
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_framed_together_while_the_schema_is_looked_up_keep_their_order()
-> anyhow::Result<()> {
    use futures::StreamExt as _;
    use lienthong_core::DocumentKind::Referral;
    let registry = require_registry().await;
    let topic = unique_topic("writer.order");
    SchemaSet::built_in()
        .with_topic(Referral, &topic)
        .register(&RegistryClient::new(&registry)?)
        .await?;
    // A fresh codec: the first messages all wait for the one look-up of the topic's id.
    let codec = WireCodec::new(&registry)?;
    let finished = std::sync::Mutex::new(Vec::new());
    let mut framing: futures::stream::FuturesUnordered<_> = (0..300)
        .map(|i| {
            let (codec, finished, topic) = (&codec, &finished, &topic);
            async move {
                codec.encode_for(Referral, topic, &[i as u8]).await?;
                finished.lock().unwrap().push(i);
                anyhow::Ok(())
            }
        })
        .collect();
    while let Some(framed) = framing.next().await {
        framed?;
    }
    drop(framing);
    let finished = finished.into_inner().unwrap();
    assert!(
        finished.windows(2).all(|w| w[0] < w[1]),
        "framed out of order: {finished:?}"
    );
    Ok(())
}
