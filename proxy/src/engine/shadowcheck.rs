//! The protocol-agnostic half of a shadow read: compare the target's and
//! the shadow's rows by value, re-check a mismatch on both sides, decide
//! whether it is confirmed or transient, and write the read-diff record.
//! Each protocol adapter captures the client's answer, runs the query on a
//! side and turns rows into normalized values.

use super::compare::{self, OrderTerm, ResultSet, Shape};
use super::SqlDialect;
use sqlparser::ast::{visit_relations, Expr, Ident, OrderByKind, Statement, Value};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;
use tracing::warn;
use turnout_control::readdiff::{self, DiffStatus, DifferingRow, ReadDiff, ReadDiffLog};
use turnout_control::Side;

/// Re-checks of a mismatch before it counts as confirmed.
const RECHECKS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Undecodable(String),
    /// The read writes (a function with side effects, `nextval`, ...): it
    /// failed in the read-only transaction every sample runs in, so it ran
    /// once, for the client, and is not compared.
    #[error("{0}")]
    NotReadOnly(String),
}

impl SampleError {
    /// The reason a skipped sample is counted under.
    pub fn skip_reason(&self) -> &'static str {
        match self {
            SampleError::Unavailable(_) => "shadow_unavailable",
            SampleError::Undecodable(_) => "not_comparable",
            SampleError::NotReadOnly(_) => "not_read_only",
        }
    }
}

/// What one side answered: its rows, or its error.
pub struct Answered {
    pub set: ResultSet,
    pub error: Option<String>,
}

/// Which read this is, for the record.
pub struct Found<'a> {
    pub fingerprint: &'a str,
    pub sql: &'a str,
    pub params: Option<Vec<Option<String>>>,
    pub target: Side,
    pub shadow: Side,
}

/// The sampler's settings the check uses.
pub struct Settings<'a> {
    pub log: &'a ReadDiffLog,
    pub recheck_delay: Duration,
    pub log_statements: bool,
    /// Records carry row values (`sampling.log_values`); otherwise each
    /// value is replaced by its length.
    pub log_values: bool,
    /// Per table: columns to leave out of the comparison.
    pub ignore: &'a BTreeMap<String, Vec<String>>,
}

/// Compares `target` with the shadow's `first` answer; on a mismatch runs
/// the query again on both sides (`run`) to tell a real divergence (the
/// same rows differ every time) from a race with writers, and records it.
pub async fn settle<F, Fut>(
    settings: Settings<'_>,
    found: Found<'_>,
    target: ResultSet,
    first: Answered,
    dialect: SqlDialect,
    run: F,
) -> Result<(), SampleError>
where
    F: Fn(Side) -> Fut,
    Fut: Future<Output = Result<Answered, SampleError>>,
{
    let (shape, ignore) = query_shape(found.sql, dialect, settings.ignore);
    let mut last = outcome(&target, &first, &shape, &ignore);
    if last.is_none() {
        settings.log.matched(found.fingerprint);
        return Ok(());
    }
    let initial = last.clone();
    // Races with concurrent writes clear up, or at least move: look again,
    // on both sides. A difference is confirmed when every re-check finds
    // one and the last two found the same rows: a real divergence stays
    // put; a race with writers shows different values each time.
    let mut delay = settings.recheck_delay;
    let mut previous: Option<ReadDiff> = None;
    let mut stable = false;
    for _ in 0..RECHECKS {
        tokio::time::sleep(delay).await;
        delay *= 2;
        // Both at once: the smaller the gap, the fewer writes fall in it.
        let (t, s) = tokio::join!(run(found.target), run(found.shadow));
        let (t, s) = (t?, s?);
        if t.error.is_some() {
            return Err(SampleError::Unavailable(format!(
                "the read failed on {} at the re-check",
                found.target
            )));
        }
        // The first answer's key columns hold for the re-checks.
        let t = ResultSet {
            key: target.key.clone(),
            ..t.set
        };
        let now = outcome(&t, &s, &shape, &ignore);
        stable = match (&previous, &now) {
            (Some(a), Some(b)) => same_rows(a, b),
            _ => false,
        };
        previous = now.clone();
        last = now;
        if last.is_none() {
            break;
        }
    }
    let (status, record) = match last {
        Some(_) if stable => (DiffStatus::Confirmed, last),
        _ => (DiffStatus::Transient, initial),
    };
    let Some(record) = record else {
        return Ok(());
    };
    let mut record = ReadDiff {
        at: readdiff::now_rfc3339(),
        status,
        fingerprint: found.fingerprint.to_string(),
        target: found.target.name().to_string(),
        shadow: found.shadow.name().to_string(),
        statement: settings.log_statements.then(|| found.sql.to_string()),
        params: if settings.log_statements {
            found.params
        } else {
            None
        },
        ..record
    };
    if !settings.log_values {
        hash_values(&mut record);
    }
    if status == DiffStatus::Confirmed {
        warn!(fingerprint = %record.fingerprint, missing = record.missing_count, extra = record.extra_count, differing = record.differing_count, "read differs between sides (confirmed)");
    }
    if let Err(e) = settings.log.mismatch(&record) {
        warn!(error = %e, "read-diff record could not be written");
    }
    Ok(())
}

/// Replaces each row value of `record` that is not a key value by a short
/// keyed hash of it (`#1a2b3c4d`; NULL stays NULL): which rows and columns
/// differ, and whether two values are equal, is kept; what they hold is
/// not. Key values stay, so the rows can be found.
fn hash_values(record: &mut ReadDiff) {
    let keep: Vec<bool> = record
        .columns
        .iter()
        .map(|c| record.key_columns.contains(c))
        .collect();
    let hide = |row: &mut readdiff::Row| {
        for (i, v) in row.iter_mut().enumerate() {
            if let Some(v) = v {
                if !keep.get(i).copied().unwrap_or(false) {
                    *v = value_hash(v);
                }
            }
        }
    };
    record.values_hashed = true;
    record.missing.iter_mut().for_each(hide);
    record.extra.iter_mut().for_each(hide);
    for d in record.differing.iter_mut() {
        hide(&mut d.target);
        hide(&mut d.shadow);
    }
}

/// A short hash of `value`, keyed by a secret drawn once per process: equal
/// values look equal within a report, and a small value (a flag, a
/// number) cannot be found by hashing guesses.
fn value_hash(value: &str) -> String {
    use hmac::{Hmac, Mac};
    use std::sync::OnceLock;
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(rand::random);
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return "#".into();
    };
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("#{hex}")
}

/// The mismatch between `target` and the shadow's answer, as a record
/// without its identity fields; `None` when they match.
fn outcome(
    target: &ResultSet,
    shadow: &Answered,
    shape: &Shape,
    ignore: &[String],
) -> Option<ReadDiff> {
    let blank = |columns: Vec<String>, rows_shadow: usize| ReadDiff {
        at: String::new(),
        status: DiffStatus::Confirmed,
        fingerprint: String::new(),
        target: String::new(),
        shadow: String::new(),
        statement: None,
        params: None,
        shadow_error: None,
        columns,
        rows_target: target.rows.len(),
        rows_shadow,
        missing_count: 0,
        extra_count: 0,
        differing_count: 0,
        key_columns: Vec::new(),
        order_differs: false,
        values_hashed: false,
        missing: Vec::new(),
        extra: Vec::new(),
        differing: Vec::new(),
    };
    if let Some(e) = &shadow.error {
        let mut r = blank(target.columns.clone(), 0);
        r.shadow_error = Some(e.clone());
        return Some(r);
    }
    let s = &shadow.set;
    let d = compare::compare(target, s, shape, ignore);
    if d.is_empty() {
        return None;
    }
    let mut r = blank(
        target
            .columns
            .iter()
            .filter(|c| !ignore.contains(c))
            .cloned()
            .collect(),
        s.rows.len(),
    );
    r.missing_count = d.missing_count;
    r.extra_count = d.extra_count;
    r.differing_count = d.differing_count;
    r.key_columns = d.key;
    r.order_differs = d.order_differs;
    r.missing = d.missing;
    r.extra = d.extra;
    r.differing = d
        .differing
        .into_iter()
        .map(|x| DifferingRow {
            target: x.target,
            shadow: x.shadow,
            columns: x.columns,
        })
        .collect();
    Some(r)
}

/// Two findings name the same rows with the same values.
fn same_rows(a: &ReadDiff, b: &ReadDiff) -> bool {
    a.shadow_error == b.shadow_error
        && a.missing == b.missing
        && a.extra == b.extra
        && a.differing == b.differing
        && a.rows_target == b.rows_target
        && a.rows_shadow == b.rows_shadow
        && a.order_differs == b.order_differs
}

/// Whether the query orders its rows (and by which result columns), and
/// the columns to ignore for the tables it reads.
fn query_shape(
    sql: &str,
    dialect: SqlDialect,
    ignore: &BTreeMap<String, Vec<String>>,
) -> (Shape, Vec<String>) {
    let d: Box<dyn Dialect> = match dialect {
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
        SqlDialect::Mysql => Box::new(MySqlDialect {}),
    };
    let Ok(statements) = Parser::parse_sql(d.as_ref(), sql) else {
        return (Shape::default(), Vec::new());
    };
    let Some(Statement::Query(q)) = statements.first() else {
        return (Shape::default(), Vec::new());
    };
    let shape = Shape {
        ordered: q.order_by.is_some(),
        order_by: q
            .order_by
            .as_ref()
            .and_then(|o| match &o.kind {
                OrderByKind::Expressions(exprs) => exprs
                    .iter()
                    .map(|e| order_term(&e.expr, dialect))
                    .collect::<Option<Vec<_>>>(),
                OrderByKind::All(_) => None,
            })
            .unwrap_or_default(),
    };
    let mut columns = Vec::new();
    if !ignore.is_empty() {
        let _ = visit_relations(&statements[0], |name| {
            let full = name.to_string();
            let last = name
                .0
                .last()
                .map(|p| p.to_string().trim_matches(['"', '`']).to_string())
                .unwrap_or_default();
            for key in [full, last] {
                if let Some(cols) = ignore.get(&key) {
                    columns.extend(cols.iter().cloned());
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    (shape, columns)
}

/// The result column an ORDER BY term names, if it names one.
fn order_term(expr: &Expr, dialect: SqlDialect) -> Option<OrderTerm> {
    let name = |id: &Ident| match (id.quote_style, dialect) {
        (None, SqlDialect::Postgres) => id.value.to_lowercase(),
        _ => id.value.clone(),
    };
    match expr {
        Expr::Identifier(id) => Some(OrderTerm::Column(name(id))),
        Expr::CompoundIdentifier(ids) => ids.last().map(|id| OrderTerm::Column(name(id))),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok().map(OrderTerm::Position),
            _ => None,
        },
        _ => None,
    }
}
