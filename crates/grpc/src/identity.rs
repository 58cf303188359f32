//! Who is calling: a facility named by its client certificate (mutual TLS) or by a signed
//! bearer token; and which facilities it speaks for (itself, or the members of its regional
//! hub). The same rules hold at every lienthong API: a hub publishes for its members at the
//! gateway and reads their lists at the regional query API.

use std::collections::{HashMap, HashSet};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lienthong_core::FacilityCode;
use tonic::{Request, Status};

use crate::tokens::Claims;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller's facility code.
    pub facility: String,
    /// How it was established: "mtls" or "token".
    pub method: &'static str,
    /// The individual acting for the facility, when the credential names one (token `act`).
    pub individual: Option<String>,
}

/// Establishes identities and the facilities each caller speaks for.
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
                    individual: None,
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
                    "this service does not accept bearer tokens; use a client certificate",
                )
            })?;
            let data =
                jsonwebtoken::decode::<Claims>(token.trim(), key, validation).map_err(|e| {
                    let why = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                            "the token has expired; ask for a new one".to_owned()
                        }
                        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                            "the token's signature is not valid for this service".to_owned()
                        }
                        jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                            "the token is for another audience; ask for a token for this service"
                                .to_owned()
                        }
                        other => format!("the token is not valid: {other:?}"),
                    };
                    Status::unauthenticated(why)
                })?;
            let facility = FacilityCode::parse(&data.claims.sub).map_err(|e| {
                Status::unauthenticated(format!("token subject is not a facility code: {e}"))
            })?;
            // A printable, bounded name only: it goes into audit records.
            let individual = data
                .claims
                .act
                .filter(|a| !a.is_empty() && a.len() <= 128 && !a.chars().any(char::is_control));
            return Ok(Some(Identity {
                facility: facility.to_string(),
                method: "token",
                individual,
            }));
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
    use crate::tokens::issue_token;
    use jsonwebtoken::{EncodingKey, Header};

    fn auth() -> Authenticator {
        let hubs = HashMap::from([("79000".to_owned(), HashSet::from(["79025".to_owned()]))]);
        Authenticator::new(
            Some(b"secret-secret-secret-secret-1234"),
            crate::DEFAULT_AUDIENCE,
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
            crate::DEFAULT_AUDIENCE,
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
                method: "token",
                individual: None,
            }
        );
    }

    #[test]
    fn forged_expired_and_missing_tokens_are_refused() {
        let forged = issue_token(
            b"another-secret-another-secret-12",
            crate::DEFAULT_AUDIENCE,
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
            aud: crate::DEFAULT_AUDIENCE.into(),
            exp: 1_000,
            iat: 900,
            act: None,
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
    fn hubs_act_for_their_members_only() {
        let a = auth();
        let hub = Identity {
            facility: "79000".into(),
            method: "token",
            individual: None,
        };
        assert!(a.may_act_for(Some(&hub), "79025"));
        assert!(a.may_act_for(Some(&hub), "79000"));
        assert!(!a.may_act_for(Some(&hub), "01001"));
        assert!(!a.may_act_for(None, "01001"));
    }
}
