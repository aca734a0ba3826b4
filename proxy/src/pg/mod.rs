//! The PostgreSQL protocol adapter.

pub mod auth;
pub mod backend;
pub mod codec;
pub mod framed;
pub mod mirror;
pub mod pump;
pub mod scram;
pub mod sequences;
pub mod session;
pub mod shadow;
pub mod startup;
