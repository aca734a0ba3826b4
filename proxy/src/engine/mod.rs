//! The protocol-agnostic session engine: what a statement is (classify), and
//! (in later steps) where it goes, what is mirrored and what is sampled.

pub mod cache_key;
pub mod classify;
pub mod compare;
pub mod counted;
pub mod defaults;
pub mod fingerprint;
pub mod image_check;
pub mod locate;
pub mod lockstep;
pub mod logsync;
pub mod pin;
pub mod queue;
pub mod records;
pub mod redact;
pub mod route;
pub mod row_image;
pub mod sampler;
pub mod shadowcheck;
pub mod text;

pub use classify::{Classification, Classifier, Kind, SqlDialect, StatementClass, TxControl};
