//! An in-process gateway on port 0 with real TLS material generated at test time, writing to
//! unique topics, and clients that call it with a certificate, a token or nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lienthong_core::{ClinicalEvent, DocumentKind, PatientKeyer};
use lienthong_gateway::GatewayConfig;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::ingest_service_client::IngestServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{create_topic, kafka, unique_topic};

/// A test CA that signs the server certificate and facility client certificates.
pub struct TestPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// A fresh CA.
    pub fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "lienthong test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let ca_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            ca_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// (certificate PEM, key PEM) for `common_name`, valid for localhost.
    pub fn leaf(&self, common_name: &str, client: bool) -> anyhow::Result<(String, String)> {
        self.leaf_numbered(common_name, client, None)
    }

    /// A facility's client certificate (PEM) and key with serial number `serial`, so that a
    /// revocation list can name it.
    pub fn client_leaf(&self, facility: &str, serial: u64) -> anyhow::Result<(String, String)> {
        self.leaf_numbered(facility, true, Some(serial))
    }

    fn leaf_numbered(
        &self,
        common_name: &str,
        client: bool,
        serial: Option<u64>,
    ) -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = serial.map(SerialNumber::from);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A certificate revocation list (PEM) signed by this CA, revoking `serials`.
    pub fn crl(&self, serials: &[u64]) -> anyhow::Result<String> {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from(now.unix_timestamp_nanos() as u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// A MoH XML export of `episodes` synthetic episodes of `facility`, as a HIS drops it into
/// an agent's inbox (`lienthong xml sample`).
pub fn xml_export(facility: &str, episodes: u32, seed: u64) -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new(crate::workspace_bin("lienthong"))
        .args(["xml", "sample", "--facility", facility])
        .args([
            "--episodes",
            &episodes.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "lienthong xml sample failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// A running gateway.
pub struct TestGateway {
    /// Listening address.
    pub addr: SocketAddr,
    /// The PKI its TLS uses.
    pub pki: TestPki,
    /// Random bytes the gateway's pseudonym key is made of.
    pub token_secret: Vec<u8>,
    /// Topic per document kind (unique to this gateway).
    pub topics: BTreeMap<DocumentKind, String>,
    /// The client certificate revocation list it reads (`--client-crl`).
    pub crl: std::path::PathBuf,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), lienthong_gateway::GatewayError>>>,
    restart: (
        GatewayConfig,
        lienthong_kafka::KafkaArgs,
        lienthong_registry::RegistryArgs,
        PatientKeyer,
    ),
    _dir: tempfile::TempDir,
}

/// Starts a gateway with mutual TLS and tokens enabled, writing to fresh unique topics.
pub async fn start_gateway(adjust: impl FnOnce(&mut GatewayConfig)) -> anyhow::Result<TestGateway> {
    let kafka = crate::require_kafka();
    let registry = crate::require_registry().await;
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let (cert, key) = pki.leaf("localhost", false)?;
    let write = |name: &str, text: &[u8]| -> anyhow::Result<std::path::PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    // Printable, like the key files operators write: the gateway trims whitespace around the key.
    let token_secret: Vec<u8> = (0..48)
        .map(|_| format!("{:02x}", rand_byte()))
        .collect::<String>()
        .into_bytes();
    let mut config = GatewayConfig::new("127.0.0.1:0".parse()?);
    config.serving.tls_cert = Some(write("server.pem", cert.as_bytes())?);
    config.serving.tls_key = Some(write("server.key", key.as_bytes())?);
    config.serving.client_ca = Some(write("ca.pem", pki.ca_pem().as_bytes())?);
    // An empty revocation list, as production runs with one: `revoke` rewrites it.
    let crl = write("crl.pem", pki.crl(&[])?.as_bytes())?;
    config.serving.client_crl = Some(crl.clone());
    config.serving.token_keys = Some(crate::tokens::issuer().write_key_set(dir.path()));
    let mut topics = BTreeMap::new();
    for kind in DocumentKind::ALL {
        let topic = unique_topic(&format!("gw.{}", kind.as_str()));
        create_topic(&kafka, &topic, 3).await?;
        topics.insert(kind, topic);
    }
    config.topics = lienthong_kafka::topics::DocumentTopics::from_map(&topics);
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let keyer = PatientKeyer::new("test", &token_secret[..32])?;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(lienthong_gateway::run(
        config.clone(),
        kafka.clone(),
        registry.clone(),
        keyer.clone(),
        listener,
        shutdown.clone(),
    ));
    let gw = TestGateway {
        addr,
        pki,
        token_secret,
        topics,
        crl,
        shutdown,
        handle: Some(handle),
        restart: (config, kafka, registry, keyer),
        _dir: dir,
    };
    gw.wait_ready().await?;
    Ok(gw)
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u8
}

impl TestGateway {
    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                anyhow::bail!("gateway exited during start-up");
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("gateway did not start listening")
    }

    fn tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pki.ca_pem()))
            .domain_name("localhost")
    }

    /// A client authenticated by a client certificate naming `facility`.
    pub async fn client_with_cert(
        &self,
        facility: &str,
    ) -> anyhow::Result<IngestServiceClient<Channel>> {
        Ok(IngestServiceClient::new(
            self.channel_with_cert(facility).await?,
        ))
    }

    /// A channel authenticated by a client certificate naming `facility` (for raw calls).
    pub async fn channel_with_cert(&self, facility: &str) -> anyhow::Result<Channel> {
        let (cert, key) = self.pki.leaf(facility, true)?;
        self.channel_with_identity(&cert, &key).await
    }

    /// A channel authenticated by the client certificate `cert` with its `key` (PEM).
    pub async fn channel_with_identity(&self, cert: &str, key: &str) -> anyhow::Result<Channel> {
        Ok(
            Channel::from_shared(format!("https://localhost:{}", self.addr.port()))?
                .tls_config(self.tls().identity(Identity::from_pem(cert, key)))?
                .connect()
                .await?,
        )
    }

    /// Replaces the revocation list with one revoking `serials` (the gateway re-reads it).
    pub fn revoke(&self, serials: &[u64]) -> anyhow::Result<()> {
        let fresh = self.crl.with_extension("new");
        std::fs::write(&fresh, self.pki.crl(serials)?)?;
        std::fs::rename(&fresh, &self.crl)?;
        Ok(())
    }

    /// A TLS client without a certificate (use with a bearer token, or to test refusal).
    pub async fn client_without_cert(&self) -> anyhow::Result<IngestServiceClient<Channel>> {
        let channel = Channel::from_shared(format!("https://localhost:{}", self.addr.port()))?
            .tls_config(self.tls())?
            .connect()
            .await?;
        Ok(IngestServiceClient::new(channel))
    }

    /// A publishing token for `facility`.
    pub fn token(&self, facility: &str, ttl_secs: u64) -> String {
        crate::tokens::issuer().token(
            facility,
            lienthong_grpc::GATEWAY_AUDIENCE,
            &[lienthong_grpc::Scope::Publish],
            ttl_secs,
        )
    }

    /// Flags of a `lienthong-facility-agent` delivering to this gateway as `facility`, with
    /// its data in `dir/agent` and its inbox (created) at `dir/inbox`; the CA and a token for
    /// an hour are written into `dir`. Files are the only intake: no HTTP or gRPC listener,
    /// whose fixed ports could be taken.
    pub fn inbox_agent_args(
        &self,
        facility: &str,
        dir: &std::path::Path,
    ) -> anyhow::Result<Vec<String>> {
        let (ca, token, inbox) = (dir.join("ca.pem"), dir.join("token"), dir.join("inbox"));
        std::fs::write(&ca, self.pki.ca_pem())?;
        std::fs::write(&token, self.token(facility, 3600))?;
        std::fs::create_dir_all(&inbox)?;
        let path = |p: std::path::PathBuf| p.display().to_string();
        Ok(vec![
            "--data-dir".into(),
            path(dir.join("agent")),
            "--inbox".into(),
            path(inbox),
            "--poll-ms".into(),
            "200".into(),
            "--http-listen".into(),
            String::new(),
            "--grpc-listen".into(),
            String::new(),
            "--gateway".into(),
            format!("https://localhost:{}", self.addr.port()),
            "--ca".into(),
            path(ca),
            "--token-file".into(),
            path(token),
        ])
    }

    /// Stops serving (an outage): clients get connection errors until `resume`.
    pub async fn pause(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await??;
        }
        Ok(())
    }

    /// Serves again on the same address, with the same PKI, keys and topics.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let (config, kafka, registry, keyer) = self.restart.clone();
        self.shutdown = CancellationToken::new();
        self.handle = Some(tokio::spawn(lienthong_gateway::run(
            config,
            kafka,
            registry,
            keyer,
            listener,
            self.shutdown.clone(),
        )));
        self.wait_ready().await
    }

    /// Stops the gateway (graceful drain) and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await??;
        }
        Ok(())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Wraps events in a request.
pub fn request(events: Vec<ClinicalEvent>) -> pb::PublishRequest {
    pb::PublishRequest {
        events: events.into_iter().map(envelope).collect(),
        request_id: String::new(),
    }
}

/// One event in an envelope.
pub fn envelope(event: ClinicalEvent) -> pb::EventEnvelope {
    event.into()
}

/// Valid events whose source facility is `facility` (facility and ids rewritten consistently).
pub fn events_from(facility: &str, seed: u64, count: usize) -> Vec<ClinicalEvent> {
    let mut g = lienthong_core::fixtures::Generator::new(seed, time::OffsetDateTime::now_utc());
    (0..count)
        .map(|i| lienthong_core::fixtures::reassign(g.any(i), facility))
        .collect()
}

/// The high watermark of every partition of `topic`, summed: how many records it holds.
pub fn record_count(topic: &str) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let args = kafka();
    let consumer: BaseConsumer = args.client_config()?.create()?;
    let md = consumer.fetch_metadata(Some(topic), args.timeout())?;
    let mut total = 0;
    for t in md.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), args.timeout())?;
            total += high - low;
        }
    }
    Ok(total)
}

/// Every record of `topic`: (partition, key, `lienthong-event-id` header), in offset order per
/// partition.
pub fn read_all(topic: &str) -> anyhow::Result<Vec<(i32, Vec<u8>, String)>> {
    Ok(read_records(topic)?
        .into_iter()
        .map(|(p, key, id, _)| (p, key, id))
        .collect())
}

/// One record as read back: (partition, key, `lienthong-event-id` header, payload).
pub type Record = (i32, Vec<u8>, String, Vec<u8>);

/// Every record of `topic`, in offset order per partition.
pub fn read_records(topic: &str) -> anyhow::Result<Vec<Record>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    let args = kafka();
    let mut cfg = args.client_config()?;
    cfg.set("group.id", unique_topic("read-all"))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(topic), args.timeout())?;
    let mut out = Vec::new();
    for t in md.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), args.timeout())?;
            if high <= low {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            consumer.assign(&tpl)?;
            let mut next = low;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while next < high {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "reading {topic} timed out"
                );
                let Some(m) = consumer.poll(std::time::Duration::from_millis(500)) else {
                    continue;
                };
                let m = m?;
                next = m.offset() + 1;
                let id = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "lienthong-event-id")
                            .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                    })
                    .unwrap_or_default();
                out.push((
                    p.id(),
                    m.key().unwrap_or_default().to_vec(),
                    id,
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
    }
    Ok(out)
}
