//! Who is calling: a facility named by its client certificate (mutual TLS) or by a signed
//! bearer token; what it may do (the token's scopes); who acts for it (the token's `act`, or
//! for a certificate the `x-lienthong-individual` metadata); and which facilities it speaks
//! for (itself, or the members of its regional hub). The same rules hold at every lienthong
//! API: a hub publishes for its members at the gateway and reads their lists at the regional
//! query API.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use lienthong_core::FacilityCode;
use tonic::{Request, Status};

use crate::revoked::RevokedCertificates;
use crate::tokens::{Claims, KeySet, Scope};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller's facility code.
    pub facility: String,
    /// How it was established: "mtls" or "token".
    pub method: &'static str,
    /// The individual acting for the facility, when the credential names one.
    pub individual: Option<String>,
    /// What it may do: a token's scopes; every scope for a facility's certificate.
    pub scopes: BTreeSet<Scope>,
    /// The token's id (for revocation), when it is a token.
    pub token_id: Option<String>,
}

impl Identity {
    /// Ok when the caller may do `scope`; PERMISSION_DENIED saying which scope is missing.
    pub fn require(&self, scope: Scope) -> Result<(), Status> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the caller's token does not grant the {} scope; ask the issuer for a token with it",
                scope.as_str()
            )))
        }
    }
}

/// Token ids revoked before their expiry, as every verifier learns them (from the revocations
/// topic): jti → the expiry after which the entry is no longer needed.
#[derive(Debug, Default)]
pub struct Revocations {
    revoked: RwLock<HashMap<String, u64>>,
}

impl Revocations {
    /// Records a revocation of `jti` until `expires` (seconds since the epoch).
    pub fn revoke(&self, jti: &str, expires: u64) {
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        let now = now_secs();
        if revoked.len() > 100_000 {
            revoked.retain(|_, exp| *exp > now);
        }
        revoked.insert(jti.to_owned(), expires);
    }

    /// True when `jti` is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(jti)
    }

    /// Applies one record of the revocations topic (a framed `TokenRevocation`); a record
    /// that does not decode is logged and skipped (it can revoke nothing).
    pub fn apply_record(&self, payload: &[u8]) {
        use prost::Message as _;
        let decoded = lienthong_registry::frame::parse(payload)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                lienthong_proto::v1::TokenRevocation::decode(f.payload).map_err(|e| e.to_string())
            });
        match decoded {
            Ok(r) if !r.jti.trim().is_empty() => {
                let expires = r
                    .expires_at
                    .map_or(u64::MAX, |t| u64::try_from(t.seconds).unwrap_or(0));
                tracing::info!(jti = %r.jti, facility = %r.facility, reason = %r.reason, "token revoked");
                self.revoke(r.jti.trim(), expires);
            }
            Ok(_) => tracing::warn!("a token revocation without a token id was skipped"),
            Err(e) => {
                tracing::warn!(error = %e, "a record of the revocations topic does not decode; skipped")
            }
        }
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How bearer tokens are checked.
pub struct TokenPolicy {
    /// The public keys.
    pub keys: KeySet,
    /// The audience this service is (a token must name it).
    pub audience: String,
    /// Longest accepted lifetime (`exp - iat`), in seconds.
    pub max_lifetime_secs: u64,
    /// Revoked token ids.
    pub revocations: Arc<Revocations>,
}

/// Establishes identities and the facilities each caller speaks for.
pub struct Authenticator {
    tokens: Option<TokenPolicy>,
    hubs: HashMap<String, HashSet<String>>,
    insecure: bool,
    revoked_certificates: Option<RevokedCertificates>,
}

/// A printable, bounded name of an individual, or None.
fn individual_name(name: Option<&str>) -> Option<String> {
    name.map(str::trim)
        .filter(|a| !a.is_empty() && a.len() <= 128 && !a.chars().any(char::is_control))
        .map(str::to_owned)
}

impl Authenticator {
    /// `tokens`: how bearer tokens are checked, when they are allowed; `insecure`: no
    /// authentication.
    pub fn new(
        tokens: Option<TokenPolicy>,
        hubs: HashMap<String, HashSet<String>>,
        insecure: bool,
    ) -> Self {
        Self {
            tokens,
            hubs,
            insecure,
            revoked_certificates: None,
        }
    }

    /// Refuses client certificates on `list` (the `--client-crl` file).
    #[must_use]
    pub fn with_revoked_certificates(mut self, list: Option<RevokedCertificates>) -> Self {
        self.revoked_certificates = list;
        self
    }

    /// The caller of a request; None only in insecure development mode.
    pub fn identify<T>(&self, req: &Request<T>) -> Result<Option<Identity>, Status> {
        let header = |name: &str| req.metadata().get(name).map(|v| v.as_bytes());
        if let Some(why) = lienthong_telemetry::browser::sent_for_a_page(
            header("origin"),
            header("sec-fetch-site"),
        ) {
            return Err(Status::permission_denied(format!(
                "a request a browser sent for a web page is refused ({why}): this API serves facilities' systems, whose gRPC clients send no Origin"
            )));
        }
        if let Some(certs) = crate::tls::PeerInfo::of(req).and_then(|p| p.certs.as_ref())
            && let Some(cert) = certs.first()
        {
            if let Some(revoked) = &self.revoked_certificates {
                revoked.check(cert.as_ref())?;
            }
            let individual = individual_name(
                req.metadata()
                    .get("x-lienthong-individual")
                    .and_then(|v| v.to_str().ok()),
            );
            return facility_from_cert(cert.as_ref()).map(|facility| {
                Some(Identity {
                    facility,
                    method: "mtls",
                    individual,
                    scopes: Scope::ALL.into_iter().collect(),
                    token_id: None,
                })
            });
        }
        if let Some(value) = req.metadata().get("authorization") {
            let text = value
                .to_str()
                .map_err(|_| Status::unauthenticated("authorization header is not ASCII"))?;
            let token = text.strip_prefix("Bearer ").ok_or_else(|| {
                Status::unauthenticated("authorization header must be `Bearer <token>`")
            })?;
            let policy = self.tokens.as_ref().ok_or_else(|| {
                Status::unauthenticated(
                    "this service does not accept bearer tokens; use a client certificate",
                )
            })?;
            return policy.verify(token.trim()).map(Some);
        }
        if self.insecure {
            return Ok(None);
        }
        Err(Status::unauthenticated(
            "no client certificate and no bearer token: a facility must identify itself",
        ))
    }

    /// True when the caller speaks for `facility`: it is that facility, or a hub with it among
    /// its members. Publishing for a facility and reading its lists both ask this.
    pub fn may_act_for(&self, caller: Option<&Identity>, facility: &str) -> bool {
        match caller {
            None => self.insecure,
            Some(id) => {
                id.facility == facility.trim()
                    || self
                        .hubs
                        .get(&id.facility)
                        .is_some_and(|f| f.contains(facility.trim()))
            }
        }
    }
}

impl TokenPolicy {
    /// The identity a token proves, or UNAUTHENTICATED saying why not.
    pub fn verify(&self, token: &str) -> Result<Identity, Status> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Status::unauthenticated("the bearer token is not a JWT"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Status::unauthenticated(format!(
                "the token is signed with {:?}; this service accepts EdDSA tokens only",
                header.alg
            )));
        }
        let kid = header.kid.ok_or_else(|| {
            Status::unauthenticated("the token names no key (kid); ask for a new token")
        })?;
        let key = self.keys.key(&kid).ok_or_else(|| {
            Status::unauthenticated(format!(
                "the token's key {kid:?} is not in this service's key set (retired or unknown); ask for a new token"
            ))
        })?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "aud", "sub"]);
        v.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
            let why = match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the token has expired; ask for a new one".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the token's signature is not valid for this service".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => format!(
                    "the token is not for this service (audience {:?}); ask for a token naming it",
                    self.audience
                ),
                jsonwebtoken::errors::ErrorKind::Json(_) => {
                    "the token lacks a claim this service needs (sub, aud, exp, iat, jti, scope)"
                        .to_owned()
                }
                other => format!("the token is not valid: {other:?}"),
            };
            Status::unauthenticated(why)
        })?;
        let c = data.claims;
        let lifetime = c.exp.saturating_sub(c.iat);
        if lifetime > self.max_lifetime_secs {
            return Err(Status::unauthenticated(format!(
                "the token is valid for {lifetime} s, longer than this service accepts ({} s); ask for a shorter-lived token",
                self.max_lifetime_secs
            )));
        }
        if c.iat > now_secs() + 60 {
            return Err(Status::unauthenticated(
                "the token was issued in the future",
            ));
        }
        if c.jti.trim().is_empty() {
            return Err(Status::unauthenticated("the token has no id (jti)"));
        }
        if self.revocations.is_revoked(&c.jti) {
            return Err(Status::unauthenticated(
                "the token was revoked; ask for a new one",
            ));
        }
        let facility = FacilityCode::parse(&c.sub).map_err(|e| {
            Status::unauthenticated(format!("token subject is not a facility code: {e}"))
        })?;
        let mut scopes = BTreeSet::new();
        for name in c.scope.split_whitespace() {
            scopes.insert(Scope::parse(name).ok_or_else(|| {
                Status::unauthenticated(format!("the token names an unknown scope {name:?}"))
            })?);
        }
        let individual = individual_name(c.act.as_deref());
        if scopes.contains(&Scope::Read) && individual.is_none() {
            return Err(Status::unauthenticated(
                "a token with the read scope must name the individual acting (act)",
            ));
        }
        Ok(Identity {
            facility: facility.to_string(),
            method: "token",
            individual,
            scopes,
            token_id: Some(c.jti),
        })
    }
}

fn facility_from_cert(der: &[u8]) -> Result<String, Status> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Status::unauthenticated("client certificate cannot be parsed"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| {
            Status::unauthenticated(
                "client certificate has no common name; it must be the facility code",
            )
        })?;
    FacilityCode::parse(cn).map(|f| f.to_string()).map_err(|e| {
        Status::unauthenticated(format!(
            "client certificate common name is not a facility code: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{TokenRequest, TokenSigner, generate_signing_key};
    use jsonwebtoken::{EncodingKey, Header};

    struct Fixture {
        signer: TokenSigner,
        auth: Authenticator,
        revocations: Arc<Revocations>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let (pem, jwk) = generate_signing_key("k1").expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys.json");
        std::fs::write(&path, serde_json::json!({ "keys": [jwk] }).to_string()).expect("write");
        let revocations = Arc::new(Revocations::default());
        let hubs = HashMap::from([("79000".to_owned(), HashSet::from(["79025".to_owned()]))]);
        Fixture {
            signer: TokenSigner::from_pem(pem.as_bytes(), "k1").expect("signer"),
            auth: Authenticator::new(
                Some(TokenPolicy {
                    keys: KeySet::from_file(&path).expect("set"),
                    audience: "lienthong-gateway".into(),
                    max_lifetime_secs: 3600,
                    revocations: Arc::clone(&revocations),
                }),
                hubs,
                false,
            ),
            revocations,
            _dir: dir,
        }
    }

    fn token(f: &Fixture, scopes: &[Scope], ttl: u64) -> String {
        f.signer
            .issue(&TokenRequest {
                facility: "79025".into(),
                audiences: vec!["lienthong-gateway".into()],
                scopes: scopes.to_vec(),
                individual: Some("001234/HCM-CCHN".into()),
                ttl_secs: ttl,
            })
            .expect("token")
    }

    fn req_with(token: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        r
    }

    fn refused(f: &Fixture, token: &str) -> String {
        f.auth
            .identify(&req_with(token))
            .expect_err("refused")
            .message()
            .to_owned()
    }

    #[test]
    fn a_valid_token_names_the_facility_its_scopes_and_the_individual() {
        let f = fixture();
        let id = f
            .auth
            .identify(&req_with(&token(&f, &[Scope::Publish, Scope::Read], 60)))
            .expect("valid")
            .expect("identity");
        assert_eq!(id.facility, "79025");
        assert_eq!(id.individual.as_deref(), Some("001234/HCM-CCHN"));
        assert!(id.require(Scope::Read).is_ok());
        let denied = id.require(Scope::Acknowledge).expect_err("no such scope");
        assert!(denied.message().contains("acknowledge"));
    }

    #[test]
    fn forged_foreign_long_revoked_and_hs256_tokens_are_refused() {
        let f = fixture();
        // Signed by another key under the same key id.
        let other = fixture();
        assert!(refused(&f, &token(&other, &[Scope::Publish], 60)).contains("signature"));
        // Longer than the maximum lifetime.
        assert!(refused(&f, &token(&f, &[Scope::Publish], 7200)).contains("longer than"));
        // Revoked.
        let t = token(&f, &[Scope::Publish], 60);
        let jti = jsonwebtoken::dangerous::insecure_decode::<Claims>(&t)
            .expect("claims")
            .claims
            .jti;
        f.revocations.revoke(&jti, u64::MAX);
        assert!(refused(&f, &t).contains("revoked"));
        // HS256 with a guessed secret, and a token for another audience.
        let claims = serde_json::json!({"sub": "79025", "aud": ["lienthong-gateway"], "exp": now_secs() + 60, "iat": now_secs(), "jti": "x", "scope": "publish"});
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"guess"),
        )
        .expect("hs256");
        assert!(refused(&f, &hs).contains("EdDSA"));
        let foreign = f
            .signer
            .issue(&TokenRequest {
                facility: "79025".into(),
                audiences: vec!["lienthong-regional".into()],
                scopes: vec![Scope::Publish],
                individual: None,
                ttl_secs: 60,
            })
            .expect("token");
        assert!(refused(&f, &foreign).contains("not for this service"));
        assert_eq!(
            f.auth.identify(&Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(refused(&f, "not.a.jwt").contains("not a JWT"));
    }

    #[test]
    fn revocation_records_revoke_and_garbage_is_skipped() {
        use prost::Message as _;
        let r = Revocations::default();
        let record = lienthong_proto::v1::TokenRevocation {
            jti: "abc".into(),
            facility: "79025".into(),
            reason: "device lost".into(),
            ..Default::default()
        };
        r.apply_record(&lienthong_registry::frame::write(
            7,
            &[0],
            &record.encode_to_vec(),
        ));
        assert!(r.is_revoked("abc"));
        r.apply_record(b"not a frame");
        r.apply_record(&lienthong_registry::frame::write(7, &[0], b"\xff\xff"));
        r.apply_record(&lienthong_registry::frame::write(7, &[0], &[]));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn hubs_act_for_their_members_only() {
        let f = fixture();
        let hub = Identity {
            facility: "79000".into(),
            method: "token",
            individual: None,
            scopes: BTreeSet::new(),
            token_id: None,
        };
        assert!(f.auth.may_act_for(Some(&hub), "79025"));
        assert!(f.auth.may_act_for(Some(&hub), "79000"));
        assert!(!f.auth.may_act_for(Some(&hub), "01001"));
        assert!(!f.auth.may_act_for(None, "01001"));
    }
}
