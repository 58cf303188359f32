//! The ingest gateway end to end: real TLS (certificates generated here), real broker, real
//! registry. Every rejection class has a precise status and produces nothing.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use lienthong_core::ClinicalEvent;
use lienthong_proto::v1 as pb;
use lienthong_registry::WireCodec;
use lienthong_tests::gateway::{events_from, record_count, request, start_gateway};
use lienthong_tests::{read_at, require_registry};
use rdkafka::Message;
use rdkafka::message::Headers;
use tonic::Code;

fn outcomes(results: &[pb::EventResult]) -> Vec<pb::Outcome> {
    results
        .iter()
        .map(|r| pb::Outcome::try_from(r.outcome).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn accepted_events_are_in_kafka_framed_keyed_and_decodable() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client = gw.client_with_cert("79025").await?;
    let events = events_from("79025", 31, 6);
    let resp = client.publish(request(events.clone())).await?.into_inner();
    assert_eq!(
        outcomes(&resp.results),
        vec![pb::Outcome::Accepted; 6],
        "{resp:?}"
    );
    let codec = WireCodec::new(&require_registry().await)?;
    for (sent, result) in events.iter().zip(&resp.results) {
        assert_eq!(result.topic, gw.topics[&sent.kind()]);
        let msg = read_at(&result.topic, result.partition, result.offset).await?;
        let key = std::str::from_utf8(msg.key().unwrap_or_default())?.to_owned();
        assert_eq!(key.len(), 64, "key is the hex HMAC patient key");
        let headers: Vec<(String, Vec<u8>)> = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let event_id = sent
            .header()
            .map(|h| h.event_id.clone())
            .unwrap_or_default();
        assert!(
            headers.contains(&("lienthong-event-id".into(), event_id.clone().into_bytes())),
            "{headers:?}"
        );
        assert!(headers.contains(&("lienthong-source-facility".into(), b"79025".to_vec())));
        let decoded = codec
            .decode(msg.payload(), msg.topic(), msg.partition(), msg.offset())
            .await?
            .event(&"test")?;
        let h = decoded.header().cloned().unwrap_or_default();
        assert_eq!(h.event_id, event_id);
        assert_eq!(h.patient_key, key);
        assert_eq!(h.patient_key_id, "test");
        assert!(h.recorded_at.is_some());
        // Apart from what the gateway adds to the header, the document is what was sent.
        let mut expected = sent.clone();
        let eh = expected.header_mut();
        eh.patient_key = h.patient_key.clone();
        eh.patient_key_id = h.patient_key_id.clone();
        eh.recorded_at = h.recorded_at;
        assert_eq!(decoded, expected);
    }
    gw.stop().await
}

#[tokio::test]
async fn every_rejection_class_has_a_precise_answer_and_produces_nothing() -> anyhow::Result<()> {
    let gw = start_gateway(|c| c.max_message_bytes = 64 * 1024).await?;
    let mut client = gw.client_with_cert("79025").await?;

    // Invalid document: REJECTED with the validation codes, paths and messages.
    let mut bad = events_from("79025", 32, 1).remove(0);
    if let ClinicalEvent::Referral(e) = &mut bad
        && let Some(p) = e.slip.as_mut().and_then(|s| s.patient.as_mut())
    {
        p.citizen_id = "07920300123".into();
    }
    let resp = client.publish(request(vec![bad])).await?.into_inner();
    assert_eq!(outcomes(&resp.results), vec![pb::Outcome::Rejected]);
    let err = &resp.results[0].errors[0];
    assert_eq!(
        (err.code.as_str(), err.path.as_str()),
        ("citizen_id.length", "slip.patient.citizen_id")
    );
    assert!(!err.message.is_empty() && !err.message_vi.is_empty());
    assert!(
        !err.value.contains("0792030012"),
        "personal value must be masked: {}",
        err.value
    );

    // Unknown document kind (an empty envelope, as a newer client's kind would decode).
    let resp = client
        .publish(pb::PublishRequest {
            events: vec![pb::EventEnvelope { event: None }],
            request_id: "r".into(),
        })
        .await?
        .into_inner();
    assert_eq!(outcomes(&resp.results), vec![pb::Outcome::Rejected]);
    assert_eq!(resp.results[0].errors[0].code, "event.unknown_kind");

    // Wrong facility for the identity: REJECTED naming the facility and the caller.
    let other = events_from("01001", 33, 1);
    let resp = client.publish(request(other)).await?.into_inner();
    assert_eq!(outcomes(&resp.results), vec![pb::Outcome::Rejected]);
    let refused = &resp.results[0];
    assert_eq!(refused.errors.len(), 1, "{refused:?}");
    let e = &refused.errors[0];
    assert_eq!(
        (e.code.as_str(), e.path.as_str(), e.value.as_str()),
        (
            "header.source_facility_forbidden",
            "header.source_facility_code",
            "01001"
        )
    );
    assert!(
        refused.message.contains("79025") && !e.message_vi.is_empty(),
        "{refused:?}"
    );

    // No identity at all.
    let mut anonymous = gw.client_without_cert().await?;
    let status = anonymous
        .publish(request(events_from("79025", 34, 1)))
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Expired (beyond the validator's 30 s leeway), forged (another key under the same key id),
    // read-only (no publish scope) and too long-lived tokens.
    let claims = lienthong_grpc::Claims {
        sub: "79025".into(),
        aud: vec![lienthong_grpc::GATEWAY_AUDIENCE.into()],
        exp: 1,
        iat: 0,
        jti: "expired-1".into(),
        scope: "publish".into(),
        act: None,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(lienthong_tests::tokens::KEY_ID.into());
    let expired = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(lienthong_tests::tokens::issuer().pem.as_bytes())?,
    )?;
    let (other_key, _) = lienthong_grpc::generate_signing_key(lienthong_tests::tokens::KEY_ID)?;
    let request_for = |scopes: Vec<lienthong_grpc::Scope>, ttl_secs| lienthong_grpc::TokenRequest {
        facility: "79025".into(),
        audiences: vec![lienthong_grpc::GATEWAY_AUDIENCE.into()],
        scopes,
        individual: Some("000001/HCM-CCHN".into()),
        ttl_secs,
    };
    let forged = lienthong_grpc::TokenSigner::from_pem(
        other_key.as_bytes(),
        lienthong_tests::tokens::KEY_ID,
    )?
    .issue(&request_for(vec![lienthong_grpc::Scope::Publish], 60))?;
    let issuer = lienthong_tests::tokens::issuer();
    let read_only = issuer.token(
        "79025",
        lienthong_grpc::GATEWAY_AUDIENCE,
        &[lienthong_grpc::Scope::Read],
        60,
    );
    let year = issuer.token(
        "79025",
        lienthong_grpc::GATEWAY_AUDIENCE,
        &[lienthong_grpc::Scope::Publish],
        366 * 24 * 3600,
    );
    for (token, why) in [(read_only, "publish scope")] {
        let mut req = tonic::Request::new(request(events_from("79025", 35, 1)));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let status = anonymous.publish(req).await.expect_err("must be refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{why}: {status:?}");
        assert!(
            status.message().contains(why),
            "{why}: {}",
            status.message()
        );
    }
    for (token, why) in [
        (expired, "expired"),
        (forged, "signature"),
        (year, "longer than"),
    ] {
        let mut req = tonic::Request::new(request(events_from("79025", 35, 1)));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let status = anonymous.publish(req).await.expect_err("must be refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{why}: {status:?}");
        assert!(
            status.message().contains(why),
            "{why}: {}",
            status.message()
        );
    }

    // Oversize message.
    let mut big = events_from("79025", 36, 1).remove(0);
    if let ClinicalEvent::Referral(e) = &mut big
        && let Some(s) = e.slip.as_mut()
    {
        s.course_of_illness = "x".repeat(100 * 1024);
    }
    let status = client
        .publish(request(vec![big]))
        .await
        .expect_err("too large");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );

    for topic in gw.topics.values() {
        assert_eq!(
            record_count(topic)?,
            0,
            "{topic} must be empty after rejections"
        );
    }
    gw.stop().await
}

#[tokio::test]
async fn tokens_and_hubs_authorize_publishing() -> anyhow::Result<()> {
    let gw = start_gateway(|c| c.serving.hubs = vec!["79000=79025,79026".into()]).await?;
    let mut client = gw.client_without_cert().await?;
    for (caller, source) in [("79025", "79025"), ("79000", "79026")] {
        let mut req = tonic::Request::new(request(events_from(source, 37, 2)));
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", gw.token(caller, 300)).parse()?,
        );
        let resp = client.publish(req).await?.into_inner();
        assert_eq!(
            outcomes(&resp.results),
            vec![pb::Outcome::Accepted; 2],
            "{caller} for {source}"
        );
    }
    // An event of a facility outside the hub is refused alone; its member's is stored.
    let mut mixed = events_from("01001", 38, 1);
    mixed.extend(events_from("79026", 39, 1));
    let mut req = tonic::Request::new(request(mixed));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", gw.token("79000", 300)).parse()?,
    );
    let resp = client.publish(req).await?.into_inner();
    assert_eq!(
        outcomes(&resp.results),
        vec![pb::Outcome::Rejected, pb::Outcome::Accepted],
        "{resp:?}"
    );
    assert_eq!(
        resp.results[0].errors[0].code, "header.source_facility_forbidden",
        "not a member of the hub: {resp:?}"
    );
    gw.stop().await
}

#[tokio::test]
async fn a_retried_event_is_answered_duplicate_and_stored_once() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client = gw.client_with_cert("79025").await?;
    let event = events_from("79025", 39, 1);
    let topic = gw.topics[&event[0].kind()].clone();
    let first = client.publish(request(event.clone())).await?.into_inner();
    let second = client.publish(request(event)).await?.into_inner();
    assert_eq!(outcomes(&first.results), vec![pb::Outcome::Accepted]);
    assert_eq!(outcomes(&second.results), vec![pb::Outcome::Duplicate]);
    assert_eq!(
        (second.results[0].partition, second.results[0].offset),
        (first.results[0].partition, first.results[0].offset)
    );
    assert_eq!(record_count(&topic)?, 1);
    gw.stop().await
}

#[tokio::test]
async fn an_event_id_reused_with_other_content_is_rejected_not_called_duplicate()
-> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client = gw.client_with_cert("79025").await?;
    let mut g = lienthong_core::fixtures::Generator::new(47, time::OffsetDateTime::now_utc());
    let first = lienthong_core::fixtures::reassign(ClinicalEvent::Referral(g.referral()), "79025");
    let topic = gw.topics[&first.kind()].clone();
    let mut corrected = first.clone();
    if let ClinicalEvent::Referral(r) = &mut corrected {
        r.slip.get_or_insert_with(Default::default).clinical_signs = "Sốt cao, đã sửa".into();
    }
    // A retry may carry another recorded_at: the gateway sets that field itself.
    let mut retried = first.clone();
    retried.header_mut().recorded_at = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    });
    let stored = client.publish(request(vec![first])).await?.into_inner();
    let reused = client.publish(request(vec![corrected])).await?.into_inner();
    let retry = client.publish(request(vec![retried])).await?.into_inner();
    assert_eq!(outcomes(&stored.results), vec![pb::Outcome::Accepted]);
    assert_eq!(
        outcomes(&reused.results),
        vec![pb::Outcome::Rejected],
        "{reused:?}"
    );
    assert_eq!(reused.results[0].errors[0].code, "header.event_id_conflict");
    assert!(reused.results[0].message.contains("document_version"));
    assert_eq!(outcomes(&retry.results), vec![pb::Outcome::Duplicate]);
    assert_eq!(record_count(&topic)?, 1);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_in_concurrent_requests_is_stored_once() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let client = gw.client_with_cert("79025").await?;
    let event = events_from("79025", 43, 1).remove(0);
    let topic = gw.topics[&event.kind()].clone();
    let mut other = event.clone();
    other.header_mut().source_system = "another HIS".into();
    // Clients that timed out and retried while the first request was still being produced,
    // and some carrying other content under the same event_id.
    let sent: Vec<bool> = (0..16).map(|i| i % 4 == 3).collect();
    let answers = futures::future::try_join_all(sent.iter().map(|&is_other| {
        let mut client = client.clone();
        let e = if is_other {
            other.clone()
        } else {
            event.clone()
        };
        async move {
            client
                .publish(request(vec![e]))
                .await
                .map(|a| a.into_inner().results.remove(0))
        }
    }))
    .await?;
    let accepted: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].outcome() == pb::Outcome::Accepted)
        .collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    let (winner, at) = (sent[accepted[0]], &answers[accepted[0]]);
    for (a, &is_other) in answers.iter().zip(&sent) {
        if is_other == winner {
            assert!(
                matches!(a.outcome(), pb::Outcome::Accepted | pb::Outcome::Duplicate)
                    && (a.partition, a.offset) == (at.partition, at.offset),
                "{a:?}"
            );
        } else {
            assert_eq!(a.outcome(), pb::Outcome::Rejected, "{a:?}");
            assert_eq!(a.errors[0].code, "header.event_id_conflict");
        }
    }
    assert_eq!(record_count(&topic)?, 1);
    gw.stop().await
}

#[tokio::test]
async fn the_same_event_twice_in_one_request_is_stored_once() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client = gw.client_with_cert("79025").await?;
    let event = events_from("79025", 41, 2);
    let topic = gw.topics[&event[0].kind()].clone();
    let mut other = event[0].clone();
    other.header_mut().source_system = "another HIS".into();
    let twice = vec![
        event[0].clone(),
        event[0].clone(),
        event[1].clone(),
        other,
        event[0].clone(),
    ];
    let answer = client.publish(request(twice)).await?.into_inner();
    assert_eq!(
        outcomes(&answer.results),
        vec![
            pb::Outcome::Accepted,
            pb::Outcome::Duplicate,
            pb::Outcome::Accepted,
            pb::Outcome::Rejected,
            pb::Outcome::Duplicate
        ],
        "{answer:?}"
    );
    let at = |i: usize| (answer.results[i].partition, answer.results[i].offset);
    assert_eq!(at(1), at(0), "the copy names where the first was stored");
    assert_eq!(at(4), at(0));
    assert_eq!(
        answer.results[3].errors[0].code, "header.event_id_conflict",
        "a copy with other content is no repeat: {answer:?}"
    );
    let stored: i64 = [&topic, &gw.topics[&event[1].kind()]]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|t| record_count(t))
        .sum::<anyhow::Result<i64>>()?;
    assert_eq!(stored, 2, "two distinct events, each produced once");
    gw.stop().await
}

#[tokio::test]
async fn an_event_larger_than_the_topic_accepts_is_rejected_not_retried() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client = gw.client_with_cert("79025").await?;
    let mut g = lienthong_core::fixtures::Generator::new(43, time::OffsetDateTime::now_utc());
    let mut referral = g.referral();
    // Under the gateway's 4 MiB request limit, over Kafka's 1 MB message limit.
    referral
        .slip
        .get_or_insert_with(Default::default)
        .clinical_signs = "sốt ".repeat(300_000);
    let event = lienthong_core::fixtures::reassign(ClinicalEvent::Referral(referral), "79025");
    let topic = gw.topics[&event.kind()].clone();
    // Twice in one request: the copy is as permanent a refusal as the first.
    let answer = client
        .publish(request(vec![event.clone(), event]))
        .await?
        .into_inner();
    assert_eq!(
        outcomes(&answer.results),
        vec![pb::Outcome::Rejected, pb::Outcome::Rejected],
        "{answer:?}"
    );
    // Both refused alike (the sizes may differ by a byte: each carries its own recorded_at).
    let refusal = |r: &pb::EventResult| {
        r.errors
            .iter()
            .map(|e| (e.code.clone(), e.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(refusal(&answer.results[0]), refusal(&answer.results[1]));
    assert_eq!(answer.results[1].retry_after_ms, 0);
    let r = &answer.results[0];
    assert_eq!(r.retry_after_ms, 0, "nothing to retry");
    assert!(
        r.errors.iter().any(|e| e.code == "event.too_large"),
        "{r:?}"
    );
    assert!(r.message.contains("retrying will not help"), "{r:?}");
    assert!(
        r.errors.iter().any(|e| e.value == "1000000"),
        "the producer's limit is named: {r:?}"
    );
    assert_eq!(record_count(&topic)?, 0);
    gw.stop().await
}

/// The limit is the topic's own, read from the broker at start: an operator who lowers a
/// topic's `max.message.bytes` gets precise rejections, not retries.
#[tokio::test]
async fn the_topic_size_limit_is_read_from_the_broker() -> anyhow::Result<()> {
    let kafka = lienthong_tests::require_kafka();
    let small = lienthong_tests::unique_topic("gw.small");
    lienthong_tests::create_topic_with(&kafka, &small, 1, &[("max.message.bytes", "20000")])
        .await?;
    let topic = small.clone();
    let gw = start_gateway(move |c| {
        let mut topics = c.topics();
        topics.insert(lienthong_core::DocumentKind::Referral, topic);
        c.topics = lienthong_kafka::topics::DocumentTopics::from_map(&topics);
    })
    .await?;
    let mut client = gw.client_with_cert("79025").await?;
    let mut g = lienthong_core::fixtures::Generator::new(44, time::OffsetDateTime::now_utc());
    let mut big = g.referral();
    big.slip.get_or_insert_with(Default::default).clinical_signs = "sốt ".repeat(5_000);
    let big = lienthong_core::fixtures::reassign(ClinicalEvent::Referral(big), "79025");
    let small_one =
        lienthong_core::fixtures::reassign(ClinicalEvent::Referral(g.referral()), "79025");
    let answer = client
        .publish(request(vec![big, small_one]))
        .await?
        .into_inner();
    assert_eq!(
        outcomes(&answer.results),
        vec![pb::Outcome::Rejected, pb::Outcome::Accepted],
        "{answer:?}"
    );
    let r = &answer.results[0];
    assert!(
        r.errors
            .iter()
            .any(|e| e.code == "event.too_large" && e.value == "20000"),
        "{r:?}"
    );
    assert!(
        r.message.contains("more than the 20000 bytes it accepts"),
        "{r:?}"
    );
    assert_eq!(record_count(&small)?, 1, "only the event that fits");
    gw.stop().await
}

#[tokio::test]
async fn publish_stream_answers_every_request_in_order() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client = gw.client_with_cert("79025").await?;
    let requests: Vec<pb::PublishStreamRequest> = (0..20)
        .map(|i| pb::PublishStreamRequest {
            events: request(events_from("79025", 100 + i, 5)).events,
            request_id: format!("req-{i}"),
        })
        .collect();
    let mut responses = client
        .publish_stream(futures::stream::iter(requests))
        .await?
        .into_inner();
    let mut i = 0;
    while let Some(resp) = responses.message().await? {
        assert_eq!(resp.request_id, format!("req-{i}"));
        assert_eq!(outcomes(&resp.results), vec![pb::Outcome::Accepted; 5]);
        i += 1;
    }
    assert_eq!(i, 20);
    let total: i64 = gw
        .topics
        .values()
        .map(|t| record_count(t).unwrap_or(-1))
        .sum();
    assert_eq!(total, 100);
    gw.stop().await
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_resource_exhausted_and_memory_stays_bounded() -> anyhow::Result<()> {
    let gw = start_gateway(|c| {
        c.max_in_flight_events = 40;
        c.max_batch_events = 20;
    })
    .await?;
    let client = gw.client_with_cert("79025").await?;
    let before = rss_kib();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60u64 {
        let mut client = client.clone();
        tasks.spawn(async move {
            client
                .publish(request(events_from("79025", 1000 + i, 20)))
                .await
        });
    }
    let (mut ok, mut exhausted) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(
                    s.metadata().get("retry-after-ms").is_some(),
                    "retry hint missing"
                );
                exhausted += 1;
            }
            Err(s) => panic!("unexpected status {s:?}"),
        }
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(ok > 0 && exhausted > 0, "ok {ok}, exhausted {exhausted}");
    assert!(
        grown_mib < 200,
        "memory grew by {grown_mib} MiB under overload"
    );
    gw.stop().await
}

#[tokio::test]
async fn grpcurl_lists_the_service_by_reflection_and_publishes_an_event() -> anyhow::Result<()> {
    let grpcurl = std::env::var("LIENTHONG_GRPCURL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| lienthong_tests::repo_root().join(".state/bin/grpcurl"));
    assert!(
        grpcurl.is_file(),
        "{} missing: deploy/local/test builds grpcurl from the Go module proxy",
        grpcurl.display()
    );
    let gw = start_gateway(|_| {}).await?;
    let dir = tempfile::tempdir()?;
    let (cert, key) = gw.pki.leaf("79025", true)?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, gw.pki.ca_pem())?;
    std::fs::write(dir.path().join("c.pem"), cert)?;
    std::fs::write(dir.path().join("c.key"), key)?;
    let base = |args: &[&str]| {
        // tokio's Command: the gateway runs on this test's runtime and must keep serving.
        let mut c = tokio::process::Command::new(&grpcurl);
        c.arg("-cacert")
            .arg(&ca)
            .arg("-cert")
            .arg(dir.path().join("c.pem"))
            .arg("-key")
            .arg(dir.path().join("c.key"));
        c.args(["-servername", "localhost"]).args(args);
        c
    };
    let addr = gw.addr.to_string();
    let list = base(&[&addr, "list"]).output().await?;
    let services = String::from_utf8_lossy(&list.stdout);
    assert!(
        services.contains("lienthong.v1.IngestService")
            && services.contains("grpc.health.v1.Health"),
        "{services}{}",
        String::from_utf8_lossy(&list.stderr)
    );

    // The request as the README makes it: `lienthong publish … --print request > request.json`,
    // then `grpcurl -d @ … < request.json`.
    let printed = tokio::process::Command::new(lienthong_tests::workspace_bin("lienthong"))
        .args(["publish", "--sample", "3", "--facility", "79025"])
        .args(["--print", "request"])
        .output()
        .await?;
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let request_json = dir.path().join("request.json");
    std::fs::write(&request_json, &printed.stdout)?;
    let out = base(&["-d", "@", &addr, "lienthong.v1.IngestService/Publish"])
        .stdin(std::fs::File::open(&request_json)?)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("OUTCOME_ACCEPTED").count(), 3, "{stdout}");

    // Without TLS, grpc-go shows the gateway's reason as the call's error.
    let plain = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &addr, "list"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success(), "{stderr}");
    assert!(
        stderr.contains("code = Unauthenticated")
            && stderr.contains(lienthong_grpc::plaintext::TLS_REQUIRED),
        "{stderr}"
    );
    gw.stop().await
}

/// A browser holding a facility's client certificate, sent a web page's cross-site request
/// (which the browser makes without asking, with the certificate): refused before anything is
/// read, nothing stored. The same facility's own client publishes.
#[tokio::test]
async fn a_web_page_s_request_with_a_facility_certificate_is_refused() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client =
        pb::ingest_service_client::IngestServiceClient::new(gw.channel_with_cert("79025").await?);
    for (name, value) in [
        ("origin", "https://forged.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let mut req = tonic::Request::new(request(events_from("79025", 41, 1)));
        req.metadata_mut().insert(name, value.parse()?);
        let status = client.publish(req).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("web page"), "{status:?}");
    }
    for topic in gw.topics.values() {
        assert_eq!(record_count(topic)?, 0);
    }
    let answer = client
        .publish(request(events_from("79025", 41, 1)))
        .await?
        .into_inner();
    assert_eq!(answer.results[0].outcome, pb::Outcome::Accepted as i32);
    gw.stop().await
}

/// A body that is not a PublishRequest (field 1 sent as a number where the request holds its
/// events) is the caller's error: INVALID_ARGUMENT naming the message, counted, nothing stored.
#[tokio::test]
async fn a_malformed_request_body_is_invalid_argument_not_internal() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut raw = tonic::client::Grpc::new(gw.channel_with_cert("79025").await?);
    raw.ready().await?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/lienthong.v1.IngestService/Publish");
    let status = raw
        .unary(
            tonic::Request::new(pb::PageRequest {
                page_size: 5,
                page_token: String::new(),
            }),
            path,
            lienthong_proto::codec::CallerCodec::<pb::PageRequest, pb::PublishResponse>::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("not a valid lienthong.v1.PublishRequest"),
        "{status:?}"
    );
    for topic in gw.topics.values() {
        assert_eq!(record_count(topic)?, 0);
    }
    gw.stop().await
}

/// One host opening connections and never finishing the TLS handshake (a slowloris, or a
/// scanner) holds at most its per-address share, each for the handshake deadline only; a
/// facility on another address publishes meanwhile as if nothing were happening.
#[tokio::test]
async fn stalled_connections_from_one_host_do_not_shut_out_facilities() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const PER_PEER: usize = 20;
    let gw = start_gateway(|c| {
        c.serving.max_connections_per_peer = PER_PEER;
        c.serving.tls_handshake_timeout_secs = 2;
    })
    .await?;
    // The first bytes of a TLS ClientHello, never finished, from 127.0.0.2 (all of 127/8 is
    // this host; the facility below calls from 127.0.0.1).
    let mut stalled = Vec::new();
    for _ in 0..3 * PER_PEER {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0)))?;
        let mut stream = socket.connect(gw.addr).await?;
        stream
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01])
            .await?;
        stalled.push(stream);
    }
    let started = std::time::Instant::now();
    let mut client = gw.client_with_cert("79025").await?;
    let answer = client.publish(request(events_from("79025", 77, 1))).await?;
    assert_eq!(
        outcomes(&answer.into_inner().results),
        vec![pb::Outcome::Accepted]
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the facility waited {:?}",
        started.elapsed()
    );

    // Every stalled connection is closed: those over the share at once, the rest at the
    // handshake deadline.
    let closed_at = futures::future::join_all(stalled.iter_mut().map(|stream| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("closed by the gateway within the deadline");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        started.elapsed()
    }))
    .await;
    let at_once = closed_at
        .iter()
        .filter(|t| **t < std::time::Duration::from_millis(1500))
        .count();
    assert!(
        at_once >= 2 * PER_PEER,
        "{at_once} closed at once: {closed_at:?}"
    );
    assert!(
        closed_at
            .iter()
            .all(|t| *t < std::time::Duration::from_secs(6)),
        "{closed_at:?}"
    );
    gw.stop().await
}

/// A connection may have at most 256 requests in progress: the gateway says so in its HTTP/2
/// settings, so one peer cannot open streams without end, each holding server state.
#[tokio::test]
async fn a_connection_may_open_a_bounded_number_of_streams() -> anyhow::Result<()> {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let gw = start_gateway(|_| {}).await?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls::pki_types::pem::PemObject as _;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(gw.pki.ca_pem().as_bytes()) {
            roots.add(cert?)?;
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.addr).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    let (send, connection) = h2::client::handshake(stream).await?;
    let driver = tokio::spawn(connection);
    let mut send = send.ready().await?;
    // The server's settings arrive with its first frames.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while send.current_max_send_streams() == usize::MAX && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        send = send.ready().await?;
    }
    assert_eq!(send.current_max_send_streams(), 256);
    driver.abort();
    gw.stop().await
}

/// With a facility directory, a document naming a facility it does not list is REJECTED
/// `facility.unknown`; the operator adds the facility to the file and, without a restart,
/// the same document is accepted.
#[tokio::test]
async fn facilities_are_checked_against_a_directory_that_reloads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("facilities.csv");
    let mut g = lienthong_core::fixtures::Generator::new(45, time::OffsetDateTime::now_utc());
    let event = lienthong_core::fixtures::reassign(ClinicalEvent::Referral(g.referral()), "79025");
    let ClinicalEvent::Referral(r) = &event else {
        unreachable!()
    };
    let receiving = r
        .slip
        .as_ref()
        .unwrap()
        .receiving
        .as_ref()
        .unwrap()
        .code
        .clone();
    let listed = |codes: &[&str]| {
        let mut text = String::from("code,name,province,level,valid_from,valid_to\n");
        for code in codes {
            let region = lienthong_core::ProvinceCode::region_of(&code[..2]).unwrap();
            text.push_str(&format!(
                "{code},Cơ sở {code},{region},co_ban,2000-01-01,\n"
            ));
        }
        text
    };
    std::fs::write(&file, listed(&["79025"]))?;
    let path = file.clone();
    let gw = start_gateway(move |c| {
        c.facility_directory = Some(path);
        c.facility_directory_reload_secs = 1;
    })
    .await?;
    let mut client = gw.client_with_cert("79025").await?;
    let answer = client
        .publish(request(vec![event.clone()]))
        .await?
        .into_inner();
    assert_eq!(
        outcomes(&answer.results),
        vec![pb::Outcome::Rejected],
        "{answer:?}"
    );
    let errors = &answer.results[0].errors;
    assert!(
        errors.iter().any(|e| e.code == "facility.unknown"
            && e.path == "slip.receiving.code"
            && e.value == receiving
            && !e.message_vi.is_empty()),
        "{errors:?}"
    );

    // A broken file is not used; the directory in force stays.
    std::fs::write(&file, "code,name\nnonsense\n")?;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let again = client
        .publish(request(vec![event.clone()]))
        .await?
        .into_inner();
    assert_eq!(
        outcomes(&again.results),
        vec![pb::Outcome::Rejected],
        "{again:?}"
    );

    std::fs::write(&file, listed(&["79025", &receiving]))?;
    let mut accepted = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let answer = client
            .publish(request(vec![event.clone()]))
            .await?
            .into_inner();
        if outcomes(&answer.results) == vec![pb::Outcome::Accepted] {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "accepted once the directory lists the facility");
    gw.stop().await
}

/// A token revoked with `lienthong tokens revoke` is refused by a running gateway within
/// seconds (it follows the revocations topic); other tokens of the facility still work.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_is_refused_within_seconds() -> anyhow::Result<()> {
    let gw = start_gateway(|_| {}).await?;
    let mut client = gw.client_without_cert().await?;
    let (revoked, kept) = (gw.token("79025", 600), gw.token("79025", 600));
    let publish = |token: &str, seed: u64| -> anyhow::Result<tonic::Request<pb::PublishRequest>> {
        let mut req = tonic::Request::new(request(events_from("79025", seed, 1)));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        Ok(req)
    };
    client.publish(publish(&revoked, 70)?).await?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("revoked.token");
    std::fs::write(&file, &revoked)?;
    let out = std::process::Command::new(lienthong_tests::workspace_bin("lienthong"))
        .args([
            "tokens",
            "revoke",
            "--reason",
            "test: device lost",
            "--token-file",
        ])
        .arg(&file)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = std::time::Instant::now();
    let mut seed = 71;
    let refused = loop {
        seed += 1;
        match client.publish(publish(&revoked, seed)?).await {
            Err(status) => break status,
            Ok(_) => {
                assert!(
                    revoked_at.elapsed() < std::time::Duration::from_secs(10),
                    "the revoked token is still accepted after 10 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    println!("revocation took effect after {:?}", revoked_at.elapsed());
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    assert!(revoked_at.elapsed() < std::time::Duration::from_secs(5));
    client.publish(publish(&kept, 99)?).await?;
    gw.stop().await
}

/// A facility certificate its CA revoked is refused (UNAUTHENTICATED, naming the serial) within
/// seconds of the revocation list being replaced, on a connection already open; the facility's
/// other certificates keep working; nothing of the refused request reaches Kafka.
#[tokio::test]
async fn a_revoked_client_certificate_is_refused_within_seconds() -> anyhow::Result<()> {
    use lienthong_proto::v1::ingest_service_client::IngestServiceClient;
    let gw = start_gateway(|_| {}).await?;
    let (lost_cert, lost_key) = gw.pki.client_leaf("79025", 0x7702_5001)?;
    let (kept_cert, kept_key) = gw.pki.client_leaf("79025", 0x7702_5002)?;
    let mut lost = IngestServiceClient::new(gw.channel_with_identity(&lost_cert, &lost_key).await?);
    let mut kept = IngestServiceClient::new(gw.channel_with_identity(&kept_cert, &kept_key).await?);
    let accepted = |r: pb::PublishResponse| outcomes(&r.results) == vec![pb::Outcome::Accepted];
    assert!(accepted(
        lost.publish(request(events_from("79025", 71, 1)))
            .await?
            .into_inner()
    ));

    gw.revoke(&[0x7702_5001])?;
    let started = std::time::Instant::now();
    let refusal = loop {
        match lost.publish(request(events_from("79025", 72, 1))).await {
            Err(status) => break status,
            Ok(_) if started.elapsed() < std::time::Duration::from_secs(10) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Ok(_) => panic!("the revoked certificate is still accepted after 10 s"),
        }
    };
    assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
    assert!(
        refusal.message().contains("revoked") && refusal.message().contains("77:02:50:01"),
        "{}",
        refusal.message()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused {:?} after the list changed",
        started.elapsed()
    );
    // What the revoked certificate sends reaches nothing.
    let before = record_count(&gw.topics[&lienthong_core::DocumentKind::Referral])?;
    let e = lost
        .publish(request(events_from("79025", 73, 3)))
        .await
        .expect_err("revoked");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(
        record_count(&gw.topics[&lienthong_core::DocumentKind::Referral])?,
        before
    );
    assert!(accepted(
        kept.publish(request(events_from("79025", 74, 1)))
            .await?
            .into_inner()
    ));
    gw.stop().await
}
