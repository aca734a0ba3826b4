//! The PostgreSQL protocol adapter.

pub mod auth;
pub mod log;
pub mod mirror;
pub mod pump;
pub mod sequences;
pub mod session;
pub mod shadow;
pub mod startup;

// Below the adapter, under the names its modules use.
pub use crate::backend::pg as backend;
pub use crate::wire::pg as codec;
pub use crate::wire::pg_framed as framed;

// The logins the adapter checks, under the name its modules use.
pub use crate::logins::scram;

/// The PostgreSQL adapter, as the server and the flips use it.
pub struct Postgres;

crate::shared::adapter!(
    Postgres,
    session::serve,
    sequences::catch_up,
    log: log::PgLog
);
