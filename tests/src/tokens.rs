//! The tests' token issuer: one Ed25519 signing key per test process (made at test time), its
//! public key set written wherever a service under test reads it, and tokens as an operator
//! would issue them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lienthong_grpc::{Scope, TokenRequest, TokenSigner};

/// The key id of the tests' signing key.
pub const KEY_ID: &str = "test-1";

/// The individual the tests' read tokens name.
pub const INDIVIDUAL: &str = "000001/HCM-CCHN";

/// A signing key and its public key set.
pub struct TestIssuer {
    /// PKCS#8 PEM of the private key (to sign hand-made tokens).
    pub pem: String,
    signer: TokenSigner,
    key_set: String,
}

/// The process's issuer.
pub fn issuer() -> &'static TestIssuer {
    static ISSUER: OnceLock<TestIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let (pem, jwk) = lienthong_grpc::generate_signing_key(KEY_ID).expect("signing key");
        TestIssuer {
            signer: TokenSigner::from_pem(pem.as_bytes(), KEY_ID).expect("signer"),
            key_set: serde_json::json!({ "keys": [jwk] }).to_string(),
            pem,
        }
    })
}

impl TestIssuer {
    /// Writes the public key set into `dir` and returns its path (the services' --token-keys).
    pub fn write_key_set(&self, dir: &Path) -> PathBuf {
        let path = dir.join("token-keys.json");
        std::fs::write(&path, &self.key_set).expect("key set written");
        path
    }

    /// A token for `facility` and `audience` with `scopes` (read tokens name INDIVIDUAL).
    pub fn token(&self, facility: &str, audience: &str, scopes: &[Scope], ttl_secs: u64) -> String {
        self.signer
            .issue(&TokenRequest {
                facility: facility.to_owned(),
                audiences: vec![audience.to_owned()],
                scopes: scopes.to_vec(),
                individual: scopes.contains(&Scope::Read).then(|| INDIVIDUAL.to_owned()),
                ttl_secs,
            })
            .expect("token")
    }
}
