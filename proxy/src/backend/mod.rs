//! Below the protocol adapters: reaching the backends (transport, TLS) and
//! what the side jobs share about them (catch-up results). The adapters
//! and side jobs use this layer; it uses none of them.

pub mod catch_up;
pub mod mysql;
pub mod pg;
pub mod transport;
