//! `lienthong tokens`: the bearer tokens of facilities that do not use client certificates —
//! the issuer's signing key and the services' key set (`keygen`), and tokens (`issue`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use lienthong_grpc::{Scope, TokenRequest, TokenSigner};

/// A scope on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    /// Publish events at the gateway.
    Publish,
    /// Read patient data and the facility's lists at a regional store (needs --individual).
    Read,
    /// Acknowledge referrals at a regional store.
    Acknowledge,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Publish => Scope::Publish,
            ScopeArg::Read => Scope::Read,
            ScopeArg::Acknowledge => Scope::Acknowledge,
        }
    }
}

/// Token commands.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Print a signed bearer token (EdDSA) for a facility.
    Issue {
        /// Facility code the token speaks for.
        #[arg(long)]
        facility: String,
        /// What the token allows; repeat for several.
        #[arg(long = "scope", value_enum, required = true)]
        scopes: Vec<ScopeArg>,
        /// The individual acting for the facility (practitioner licence number or user id);
        /// required with --scope read, and written to the access audit.
        #[arg(long)]
        individual: Option<String>,
        /// The issuer's private key (Ed25519, PKCS#8 PEM, from `tokens keygen`).
        #[arg(long, env = "LIENTHONG_TOKEN_SIGNING_KEY")]
        key_file: PathBuf,
        /// The key's id in the services' key set.
        #[arg(long, env = "LIENTHONG_TOKEN_KEY_ID")]
        key_id: String,
        /// Services the token is for (their --token-audience); repeat for several. By default
        /// lienthong-gateway for publish, lienthong-regional for read and acknowledge.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Validity in seconds, at most --max-lifetime-secs.
        #[arg(long, default_value_t = 24 * 3600)]
        ttl_secs: u64,
        /// The longest lifetime the services accept (their --token-max-lifetime-secs, from the
        /// same variable): a longer --ttl-secs makes a token every service would refuse, so it
        /// is refused here.
        #[arg(long, env = "LIENTHONG_TOKEN_MAX_LIFETIME_SECS", default_value_t = lienthong_grpc::DEFAULT_MAX_TOKEN_LIFETIME_SECS)]
        max_lifetime_secs: u64,
    },
    /// Revoke a token before its expiry: every gateway and regional store refuses it within
    /// seconds (they follow the revocations topic).
    Revoke {
        /// The token to revoke, from its file (its id, facility and expiry are read from it).
        #[arg(long, conflicts_with = "jti", required_unless_present = "jti")]
        token_file: Option<PathBuf>,
        /// Or the token's id (its `jti`), e.g. from the access audit.
        #[arg(long)]
        jti: Option<String>,
        /// Why (kept with the revocation).
        #[arg(long, default_value = "")]
        reason: String,
        /// The longest lifetime the services accept (their --token-max-lifetime-secs): a
        /// revocation by --jti alone lasts that long, since the token's own expiry is unknown.
        #[arg(long, env = "LIENTHONG_TOKEN_MAX_LIFETIME_SECS", default_value_t = lienthong_grpc::DEFAULT_MAX_TOKEN_LIFETIME_SECS)]
        max_lifetime_secs: u64,
        /// The revocations topic the services follow.
        #[arg(long, env = "LIENTHONG_TOKEN_REVOCATIONS_TOPIC", default_value = lienthong_core::routing::REVOCATIONS_TOPIC)]
        topic: String,
        #[command(flatten, next_help_heading = "Kafka connection")]
        kafka: Box<lienthong_kafka::KafkaArgs>,
        #[command(flatten, next_help_heading = "Schema registry")]
        registry: Box<lienthong_registry::RegistryArgs>,
    },
    /// Make an issuer signing key (private, 0600) and add its public key to a key set file
    /// (the services' --token-keys). To rotate: make a key with a new id into the same set,
    /// issue with it, and remove the old key from the set once its tokens have expired.
    Keygen {
        /// Id of the new key (e.g. the year and a number: 2026-1).
        #[arg(long)]
        key_id: String,
        /// Where to write the private key (must not exist).
        #[arg(long)]
        private_key: PathBuf,
        /// The key set file to add the public key to (created if missing).
        #[arg(long)]
        key_set: PathBuf,
    },
}

/// Publishes the revocation of a token.
async fn revoke(
    token_file: Option<PathBuf>,
    jti: Option<String>,
    reason: String,
    max_lifetime_secs: u64,
    topic: &str,
    kafka: &lienthong_kafka::KafkaArgs,
    registry: &lienthong_registry::RegistryArgs,
) -> anyhow::Result<ExitCode> {
    use prost::Message as _;
    let (jti, facility, expires) = match (token_file, jti) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let claims =
                jsonwebtoken::dangerous::insecure_decode::<lienthong_grpc::Claims>(text.trim())
                    .with_context(|| format!("{} does not hold a lienthong token", path.display()))?
                    .claims;
            (claims.jti, claims.sub, Some(claims.exp))
        }
        (None, Some(jti)) => (jti, String::new(), None),
        (None, None) => bail!("give --token-file or --jti"),
    };
    if jti.trim().is_empty() || jti.len() > 128 || jti.chars().any(char::is_control) {
        bail!(crate::exit::Refused(
            "the token id must be 1 to 128 printable characters".into(),
        ));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Without the token, revoke for the longest lifetime any service accepts.
    let expires = expires.map_or(
        now.saturating_add(i64::try_from(max_lifetime_secs).unwrap_or(i64::MAX)),
        |e| i64::try_from(e).unwrap_or(i64::MAX),
    );
    let record = lienthong_proto::v1::TokenRevocation {
        jti: jti.trim().to_owned(),
        expires_at: Some(prost_types::Timestamp {
            seconds: expires,
            nanos: 0,
        }),
        facility,
        reason,
        revoked_at: Some(prost_types::Timestamp {
            seconds: now,
            nanos: 0,
        }),
    };
    kafka.probe().await?;
    let registered = lienthong_registry::SchemaSet::built_in()
        .with_revocations_topic(topic)
        .register(&lienthong_registry::RegistryClient::new(registry)?)
        .await?;
    let codec = lienthong_registry::WireCodec::new(registry)?;
    codec.remember(&registered);
    let framed = codec
        .encode_message(
            topic,
            "lienthong.v1.TokenRevocation",
            &record.encode_to_vec(),
        )
        .await?;
    let producer = lienthong_kafka::EventProducer::new(kafka, std::time::Duration::from_secs(15))?;
    let d = producer
        .send(topic, record.jti.as_bytes(), &framed, &[])
        .await?;
    println!(
        "token {} revoked ({topic} partition {} offset {}): the services refuse it within seconds",
        record.jti, d.partition, d.offset
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a token command.
pub async fn run(cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::Revoke {
            token_file,
            jti,
            reason,
            max_lifetime_secs,
            topic,
            kafka,
            registry,
        } => {
            revoke(
                token_file,
                jti,
                reason,
                max_lifetime_secs,
                &topic,
                &kafka,
                &registry,
            )
            .await
        }
        TokensCommand::Issue {
            facility,
            scopes,
            individual,
            key_file,
            key_id,
            audiences,
            ttl_secs,
            max_lifetime_secs,
        } => {
            if ttl_secs > max_lifetime_secs {
                bail!(crate::exit::Refused(format!(
                    "--ttl-secs {ttl_secs} is longer than the services accept \
                     ({max_lifetime_secs} s, their --token-max-lifetime-secs): every service \
                     would refuse this token; issue a shorter one, or give --max-lifetime-secs \
                     when the services are started with a longer maximum"
                )));
            }
            let scopes: Vec<Scope> = scopes.into_iter().map(Scope::from).collect();
            let audiences = if audiences.is_empty() {
                let mut a = Vec::new();
                if scopes.contains(&Scope::Publish) {
                    a.push(lienthong_grpc::GATEWAY_AUDIENCE.to_owned());
                }
                if scopes.iter().any(|s| *s != Scope::Publish) {
                    a.push(lienthong_grpc::REGIONAL_AUDIENCE.to_owned());
                }
                a
            } else {
                audiences
            };
            let signer = TokenSigner::from_file(&key_file, &key_id)?;
            let token = signer
                .issue(&TokenRequest {
                    facility,
                    audiences,
                    scopes,
                    individual,
                    ttl_secs,
                })
                .map_err(|e| match e {
                    // What was asked makes no valid token: refused as given.
                    lienthong_grpc::TokenError::Subject { .. }
                    | lienthong_grpc::TokenError::Request(_) => {
                        anyhow::Error::new(crate::exit::Refused(e.to_string()))
                    }
                    other => other.into(),
                })?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Keygen {
            key_id,
            private_key,
            key_set,
        } => {
            if key_id.trim().is_empty()
                || key_id.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                bail!(crate::exit::Refused(
                    "--key-id must be a non-empty word without spaces".into(),
                ));
            }
            if private_key.exists() {
                bail!(crate::exit::Refused(format!(
                    "{} exists: a signing key is never overwritten; choose another path",
                    private_key.display()
                )));
            }
            let mut set: serde_json::Value = match std::fs::read_to_string(&key_set) {
                Ok(text) => {
                    lienthong_grpc::tokens::parse_key_set(&text, &key_set)?;
                    serde_json::from_str(&text)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    serde_json::json!({ "keys": [] })
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", key_set.display()));
                }
            };
            let keys = set["keys"]
                .as_array_mut()
                .context("the key set has no \"keys\" array")?;
            if keys.iter().any(|k| k["kid"] == key_id.as_str()) {
                bail!(crate::exit::Refused(format!(
                    "{} already holds a key {key_id:?}; choose a new id",
                    key_set.display()
                )));
            }
            let (pem, jwk) = lienthong_grpc::generate_signing_key(&key_id)?;
            keys.push(jwk);
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&private_key)
                    .with_context(|| format!("cannot create {}", private_key.display()))?;
                f.write_all(pem.as_bytes())?;
            }
            std::fs::write(&key_set, serde_json::to_string_pretty(&set)? + "\n")
                .with_context(|| format!("cannot write {}", key_set.display()))?;
            println!(
                "signing key {key_id} written to {} (keep it secret); its public key added to {} ({} key(s))",
                private_key.display(),
                key_set.display(),
                set["keys"].as_array().map_or(0, Vec::len)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
