//! Below the protocol adapters: reaching the backends (transport, TLS) and
//! what the side jobs share about them (catch-up results). The adapters
//! and side jobs use this layer; it uses none of them.

pub mod binlog;
pub mod catch_up;
pub mod mysql;
pub mod pg;
pub mod pglog;
pub mod pgoutput;
pub mod rows;
pub mod transport;

use turnout_control::Side;

/// What went wrong with a query of turnout's own on a backend (a side
/// job's: catalog reads, catch-up, backfill, verify).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Connecting or logging in (the message names the backend).
    #[error("{0}")]
    Login(String),
    /// The connection failed while the query ran.
    #[error("{}{}", on(.side), .detail)]
    Broken { side: Option<Side>, detail: String },
    /// The backend refused the query: its own message.
    #[error("{}{}", on(.side), .message)]
    Refused { side: Option<Side>, message: String },
    #[error("{side} did not answer within {secs} s")]
    Timeout { side: Side, secs: u64 },
    /// The answer did not hold what it announced.
    #[error("{0}")]
    Malformed(String),
}

fn on(side: &Option<Side>) -> String {
    side.map(|s| format!("on {s}: ")).unwrap_or_default()
}

/// Jobs whose own errors are still words take these as words.
impl From<QueryError> for String {
    fn from(e: QueryError) -> String {
        e.to_string()
    }
}
