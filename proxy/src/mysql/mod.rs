//! The MySQL/MariaDB protocol adapter: turnout's own handshake and
//! authentication with clients, backend authentication, and forwarding.

pub mod auth;
pub mod packet;
pub mod session;
