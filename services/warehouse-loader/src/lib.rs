//! The national warehouse loader: consumes the de-identified analytics topics and writes their
//! rows to PostgreSQL, one transaction per batch holding both the rows and the consumed
//! offsets; and the access audit into the restricted access table.

pub mod accesses;
pub mod config;
pub mod loader;
pub mod metrics;
pub mod migrations;
pub mod postgres;
pub mod rows;
pub mod store;

pub use config::LoaderConfig;
pub use loader::{LoaderError, run};
pub use postgres::{PgConnectError, PgSettings, PgSslMode};
