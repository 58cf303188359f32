//! Serving and calling lienthong's gRPC APIs: who the caller is and which facilities it acts
//! for, bearer tokens, server TLS and the serving flags every API shares, and the client
//! connection the facility agent and the CLI open to the gateway.

pub mod bearer;
pub mod client;
pub mod connections;
pub mod identity;
pub mod metrics;
pub mod plaintext;
pub mod rate;
pub mod revoked;
pub mod serving;
#[cfg(test)]
mod test_pki;
pub mod tls;
pub mod tokens;
mod watched;

pub use bearer::{BearerToken, TokenFile};
pub use client::{ClientError, Endpoint, GatewayConnection, RegionalConnection, authorized};
pub use connections::{BoundedIncoming, ConnectionLimits};
pub use identity::{Authenticator, Identity, Revocations, TokenPolicy};
pub use rate::FacilityRateLimit;
pub use revoked::{CrlError, RevokedCertificates};
pub use serving::{
    DEFAULT_MAX_TOKEN_LIFETIME_SECS, GATEWAY_AUDIENCE, REGIONAL_AUDIENCE, ServingArgs, ServingError,
};
pub use tokens::{
    Claims, KeySet, Scope, TokenError, TokenRequest, TokenSigner, generate_signing_key,
};
