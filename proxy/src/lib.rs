//! turnout's data path: listeners, TLS, authentication, and the protocol
//! adapters that forward client sessions to the side the routing names.

pub mod admin;
pub mod backend;
pub mod backend_check;
pub mod backfill;
pub mod catalog;
pub mod engine;
pub mod flip;
#[doc(hidden)]
pub mod fuzzing;
pub mod logins;
pub mod mapping;
pub mod metrics;
pub mod mysql;
pub mod pg;
pub mod server;
pub mod shared;
pub mod store;
pub mod stream;
pub mod tls;
pub mod wire;

pub use server::{Server, ServerError};

/// The adapter of `protocol`: the one place that names each (the server,
/// the flips and the CLI go through [`shared::Adapter`]).
pub fn adapter_for(protocol: turnout_config::Protocol) -> std::sync::Arc<dyn shared::Adapter> {
    match protocol {
        turnout_config::Protocol::Postgres => std::sync::Arc::new(pg::Postgres),
        turnout_config::Protocol::Mysql => std::sync::Arc::new(mysql::Mysql),
    }
}
