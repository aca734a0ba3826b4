//! The per-statement series (`turnout_queries_total`,
//! `turnout_query_seconds`) by kind and side, recorded through handles
//! taken from the recorder once, when it is installed: a statement then
//! costs two atomic updates, not a key built and looked up.

use metrics::{counter, histogram, Counter, Histogram};
use std::sync::OnceLock;
use turnout_control::Side;

/// The kinds `turnout_queries_total` counts, as `Kind::name` names them.
const QUERY_KINDS: [&str; 7] = [
    "read",
    "locking_read",
    "write",
    "ddl",
    "transaction",
    "session",
    "other",
];

static QUERIES: OnceLock<[[(Counter, Histogram); 7]; 2]> = OnceLock::new();

/// Takes the handles from the recorder just installed, every series at
/// zero (so each is there from start).
pub fn take_handles() {
    let queries = [Side::Old, Side::New].map(|side| {
        QUERY_KINDS.map(|kind| {
            let c = counter!("turnout_queries_total", "kind" => kind, "side" => side.name());
            c.absolute(0);
            let h = histogram!("turnout_query_seconds", "kind" => kind, "side" => side.name());
            (c, h)
        })
    });
    let _ = QUERIES.set(queries);
}

/// One statement of `kind` answered by `side` in `seconds`.
pub fn record_query(kind: &'static str, side: Side, seconds: f64) {
    let Some(queries) = QUERIES.get() else {
        // No recorder installed: the facade's calls would be no-ops.
        return;
    };
    let side = match side {
        Side::Old => 0,
        Side::New => 1,
    };
    match QUERY_KINDS.iter().position(|k| *k == kind) {
        Some(k) => {
            let (c, h) = &queries[side][k];
            c.increment(1);
            h.record(seconds);
        }
        None => {
            counter!("turnout_queries_total", "kind" => kind, "side" => ["old", "new"][side])
                .increment(1);
            histogram!("turnout_query_seconds", "kind" => kind, "side" => ["old", "new"][side])
                .record(seconds);
        }
    }
}
