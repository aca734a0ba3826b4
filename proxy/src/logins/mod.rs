//! Who may log in to turnout, per protocol: the configured users with their
//! verifiers (PostgreSQL's SCRAM-SHA-256 and md5, MySQL's password hashes),
//! computed once from the config and swapped whole on reload with the rest
//! of the live config. Pure data and its cryptography: no I/O, below the
//! protocol adapters that run the login exchanges.

pub mod mysql;
pub mod pg;
pub mod scram;
