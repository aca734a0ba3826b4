//! The protocol-agnostic half of a shadow read: compare the target's and
//! the shadow's rows by value, re-check a mismatch on both sides, decide
//! whether it is confirmed or transient, and write the read-diff record.
//! Each protocol adapter captures the client's answer, runs the query on a
//! side and turns rows into normalized values.

use super::compare::{self, ResultSet};
use super::SqlDialect;
use sqlparser::ast::{visit_relations, Statement};
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
}

impl SampleError {
    /// The reason a skipped sample is counted under.
    pub fn skip_reason(&self) -> &'static str {
        match self {
            SampleError::Unavailable(_) => "shadow_unavailable",
            SampleError::Undecodable(_) => "not_comparable",
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
    let (ordered, ignore) = query_shape(found.sql, dialect, settings.ignore);
    let mut last = outcome(&target, &first, ordered, &ignore);
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
        let now = outcome(&t.set, &s, ordered, &ignore);
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
        redact(&mut record);
    }
    if status == DiffStatus::Confirmed {
        warn!(fingerprint = %record.fingerprint, missing = record.missing_count, extra = record.extra_count, differing = record.differing_count, "read differs between sides (confirmed)");
    }
    if let Err(e) = settings.log.mismatch(&record) {
        warn!(error = %e, "read-diff record could not be written");
    }
    Ok(())
}

/// Replaces each row value of `record` by its length (NULL stays NULL):
/// which rows and columns differ is kept, what they hold is not.
fn redact(record: &mut ReadDiff) {
    let hide = |row: &mut readdiff::Row| {
        for v in row.iter_mut().flatten() {
            *v = format!("<redacted: {} bytes>", v.len());
        }
    };
    record.missing.iter_mut().for_each(hide);
    record.extra.iter_mut().for_each(hide);
    for d in record.differing.iter_mut() {
        hide(&mut d.target);
        hide(&mut d.shadow);
    }
}

/// The mismatch between `target` and the shadow's answer, as a record
/// without its identity fields; `None` when they match.
fn outcome(
    target: &ResultSet,
    shadow: &Answered,
    ordered: bool,
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
    let d = compare::compare(target, s, ordered, ignore);
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
}

/// Whether the query orders its rows, and the columns to ignore for the
/// tables it reads.
fn query_shape(
    sql: &str,
    dialect: SqlDialect,
    ignore: &BTreeMap<String, Vec<String>>,
) -> (bool, Vec<String>) {
    let d: Box<dyn Dialect> = match dialect {
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
        SqlDialect::Mysql => Box::new(MySqlDialect {}),
    };
    let Ok(statements) = Parser::parse_sql(d.as_ref(), sql) else {
        return (false, Vec::new());
    };
    let Some(Statement::Query(q)) = statements.first() else {
        return (false, Vec::new());
    };
    let ordered = q.order_by.is_some();
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
    (ordered, columns)
}
