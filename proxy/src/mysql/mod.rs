//! The MySQL/MariaDB protocol adapter: turnout's own handshake and
//! authentication with clients, backend authentication, and forwarding.

pub mod auth;
pub mod counters;
pub mod database;
pub mod kill;
pub mod mirror;
pub mod packet;
pub mod response;
pub mod session;
pub mod shadow;
