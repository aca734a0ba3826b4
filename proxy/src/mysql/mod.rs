//! The MySQL/MariaDB protocol adapter: turnout's own handshake and
//! authentication with clients, backend authentication, and forwarding.

pub mod counters;
pub mod database;
pub mod kill;
pub mod log;
pub mod mirror;
mod queue;
pub mod session;
pub mod shadow;

// Below the adapter, under the names its modules use.
pub use crate::wire::my_packet as packet;
pub use crate::wire::my_response as response;
// The logins the adapter checks.
pub use crate::logins::mysql as auth;

/// The MySQL adapter, as the server and the flips use it.
pub struct Mysql;

crate::shared::adapter!(Mysql, session::serve, counters::catch_up, log: log::MyLog);
