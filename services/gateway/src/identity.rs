//! Who is calling: a facility named by its client certificate (mutual TLS) or by a signed
//! bearer token; and whom it may publish for (itself, or the facilities of a regional hub).

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lienthong_core::FacilityCode;
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller's facility code.
    pub facility: String,
    /// How it was established: "mtls" or "token".
    pub method: &'static str,
}

/// Bearer-token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Facility code of the caller.
    pub sub: String,
    /// Audience: the gateway deployment.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
}

/// Signs a bearer token for `facility`, valid for `ttl_secs` (operators issue these).
pub fn issue_token(
    secret: &[u8],
    audience: &str,
    facility: &str,
    ttl_secs: u64,
) -> Result<String, String> {
    FacilityCode::parse(facility)
        .map_err(|e| format!("cannot issue a token for {facility:?}: {e}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: facility.trim().to_owned(),
        aud: audience.to_owned(),
        exp: now + ttl_secs,
        iat: now,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// Establishes identities and publishing rights.
pub struct Authenticator {
    token: Option<(DecodingKey, Validation)>,
    hubs: HashMap<String, HashSet<String>>,
    insecure: bool,
}

impl Authenticator {
    /// `token_secret`: HS256 secret when bearer tokens are allowed; `insecure`: no authentication.
    pub fn new(
        token_secret: Option<&[u8]>,
        audience: &str,
        hubs: HashMap<String, HashSet<String>>,
        insecure: bool,
    ) -> Self {
        let token = token_secret.map(|secret| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_audience(&[audience]);
            v.set_required_spec_claims(&["exp", "aud", "sub"]);
            v.leeway = 30;
            (DecodingKey::from_secret(secret), v)
        });
        Self {
            token,
            hubs,
            insecure,
        }
    }

    /// The caller of a request; None only in insecure development mode.
    pub fn identify<T>(&self, req: &Request<T>) -> Result<Option<Identity>, Status> {
        if let Some(certs) = req.peer_certs()
            && let Some(cert) = certs.first()
        {
            return facility_from_cert(cert.as_ref()).map(|facility| {
                Some(Identity {
                    facility,
                    method: "mtls",
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
            let (key, validation) = self.token.as_ref().ok_or_else(|| {
                Status::unauthenticated(
                    "this gateway does not accept bearer tokens; use a client certificate",
                )
            })?;
            let data =
                jsonwebtoken::decode::<Claims>(token.trim(), key, validation).map_err(|e| {
                    let why = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                            "the token has expired; ask for a new one".to_owned()
                        }
                        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                            "the token's signature is not valid for this gateway".to_owned()
                        }
                        jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                            "the token is for another audience".to_owned()
                        }
                        other => format!("the token is not valid: {other:?}"),
                    };
                    Status::unauthenticated(why)
                })?;
            let facility = FacilityCode::parse(&data.claims.sub).map_err(|e| {
                Status::unauthenticated(format!("token subject is not a facility code: {e}"))
            })?;
            return Ok(Some(Identity {
                facility: facility.to_string(),
                method: "token",
            }));
        }
        if self.insecure {
            return Ok(None);
        }
        Err(Status::unauthenticated(
            "no client certificate and no bearer token: a facility must identify itself",
        ))
    }

    /// True when the caller may publish events whose source facility is `facility`.
    pub fn may_publish(&self, caller: Option<&Identity>, facility: &str) -> bool {
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

    fn auth() -> Authenticator {
        let hubs = HashMap::from([("79000".to_owned(), HashSet::from(["79025".to_owned()]))]);
        Authenticator::new(
            Some(b"secret-secret-secret-secret-1234"),
            "lienthong-gateway",
            hubs,
            false,
        )
    }

    fn req_with(token: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        r
    }

    #[test]
    fn a_valid_token_names_the_facility() {
        let t = issue_token(
            b"secret-secret-secret-secret-1234",
            "lienthong-gateway",
            "79025",
            60,
        )
        .expect("token");
        let id = auth()
            .identify(&req_with(&t))
            .expect("valid")
            .expect("identity");
        assert_eq!(
            id,
            Identity {
                facility: "79025".into(),
                method: "token"
            }
        );
    }

    #[test]
    fn forged_expired_and_missing_tokens_are_refused() {
        let forged = issue_token(
            b"another-secret-another-secret-12",
            "lienthong-gateway",
            "79025",
            60,
        )
        .expect("token");
        assert!(
            auth()
                .identify(&req_with(&forged))
                .unwrap_err()
                .message()
                .contains("signature")
        );
        let claims = Claims {
            sub: "79025".into(),
            aud: "lienthong-gateway".into(),
            exp: 1_000,
            iat: 900,
        };
        let expired = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret-secret-secret-secret-1234"),
        )
        .expect("token");
        assert!(
            auth()
                .identify(&req_with(&expired))
                .unwrap_err()
                .message()
                .contains("expired")
        );
        let err = auth().identify(&Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn hubs_may_publish_for_their_facilities_only() {
        let a = auth();
        let hub = Identity {
            facility: "79000".into(),
            method: "token",
        };
        assert!(a.may_publish(Some(&hub), "79025"));
        assert!(a.may_publish(Some(&hub), "79000"));
        assert!(!a.may_publish(Some(&hub), "01001"));
        assert!(!a.may_publish(None, "01001"));
    }
}
