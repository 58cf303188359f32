//! Serving and calling lienthong's gRPC APIs: who the caller is and which facilities it acts
//! for, bearer tokens, server TLS and the serving flags every API shares, and the client
//! connection the facility agent and the CLI open to the gateway.

pub mod client;
pub mod identity;
pub mod metrics;
pub mod rate;
pub mod serving;
pub mod tokens;

pub use client::{ClientError, Endpoint, GatewayConnection, RegionalConnection, authorized};
pub use identity::{Authenticator, Identity};
pub use rate::FacilityRateLimit;
pub use serving::{DEFAULT_AUDIENCE, ServingArgs, ServingError, server_tls};
pub use tokens::{Claims, TokenError, issue_token, read_token_secret};
