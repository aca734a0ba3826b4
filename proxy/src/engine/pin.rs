//! Same values on both sides: rewrites a write so that the mirror applies the
//! authority's values instead of evaluating its own.
//!
//! PostgreSQL's `now()` and its relatives return the transaction's start time,
//! one value per transaction. The engine reads that value on the authority
//! (`SELECT now()` inside the authority's transaction) and this module puts it
//! into the mirror's copy of each statement as a literal. Functions with a new
//! value on every call (`random()`, `clock_timestamp()`, `gen_random_uuid()`,
//! `nextval()`) cannot be pinned this way: they are reported so the engine can
//! take the authority's row images instead, or record the statement as unsafe.

use sqlparser::ast::{
    visit_expressions_mut, Expr, Ident, SetExpr, Statement, VisitMut, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("cannot parse the statement: {0}")]
    Parse(String),
    #[error(
        "{0}() returns a new value on every call; its value cannot be pinned in the statement text"
    )]
    Unpinnable(String),
    #[error("the authority's timestamp {0:?} is not a timestamp literal")]
    BadTimestamp(String),
}

/// Functions whose value is the transaction's start time, and the cast that
/// gives each one's type from a `timestamptz`.
const TRANSACTION_TIME: &[(&str, &str)] = &[
    ("now", ""),
    ("transaction_timestamp", ""),
    ("current_timestamp", ""),
    ("localtimestamp", "::timestamp"),
    ("current_date", "::date"),
    ("current_time", "::timetz"),
    ("localtime", "::time"),
];

/// Functions with a new value per call.
const PER_CALL: &[&str] = &[
    "clock_timestamp",
    "statement_timestamp",
    "timeofday",
    "random",
    "random_normal",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "nextval",
    "setseed",
];

fn function_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .map(|p| p.to_string().trim_matches('"').to_lowercase()),
        _ => None,
    }
}

/// Rewrites every statement of `sql` with the transaction time pinned to
/// `transaction_time` (the authority's `now()`, as PostgreSQL prints it).
/// Returns the rewritten text, and whether anything was pinned.
pub fn pin_transaction_time(sql: &str, transaction_time: &str) -> Result<(String, bool), PinError> {
    let valid = !transaction_time.is_empty()
        && transaction_time
            .bytes()
            .all(|b| b.is_ascii_digit() || b" -:.+TZ".contains(&b));
    if !valid {
        return Err(PinError::BadTimestamp(transaction_time.to_string()));
    }
    let dialect = PostgreSqlDialect {};
    let mut statements: Vec<Statement> =
        Parser::parse_sql(&dialect, sql).map_err(|e| PinError::Parse(e.to_string()))?;
    let mut pinned = false;
    for statement in &mut statements {
        let flow = visit_expressions_mut(statement, |e: &mut Expr| {
            let Some(name) = function_name(e) else {
                return ControlFlow::Continue(());
            };
            if PER_CALL.contains(&name.as_str()) {
                return ControlFlow::Break(PinError::Unpinnable(name));
            }
            if let Some((_, cast)) = TRANSACTION_TIME.iter().find(|(f, _)| *f == name) {
                let literal = format!("('{transaction_time}'::timestamptz){cast}");
                match Parser::new(&dialect)
                    .try_with_sql(&literal)
                    .and_then(|mut p| p.parse_expr())
                {
                    Ok(replacement) => {
                        *e = Expr::Nested(Box::new(replacement));
                        pinned = true;
                    }
                    Err(err) => return ControlFlow::Break(PinError::Parse(err.to_string())),
                }
            }
            ControlFlow::Continue(())
        });
        if let ControlFlow::Break(e) = flow {
            return Err(e);
        }
    }
    if !pinned {
        return Ok((sql.to_string(), false));
    }
    let text = statements
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    Ok((text, true))
}

/// An `INSERT ... VALUES` whose rows call per-call functions (`random()`,
/// `gen_random_uuid()`, `clock_timestamp()`, `nextval()`, ...): the engine
/// evaluates each call once on the authority ([`PerCallPlan::values_query`],
/// inside the write's transaction) and both sides insert those values
/// ([`PerCallPlan::apply`]). Each call in VALUES runs once per row anyway, so
/// the authority's rows are what the statement as written would give.
#[derive(Debug)]
pub struct PerCallPlan {
    statement: Statement,
    /// The calls, as SQL, in the order of their placeholders.
    calls: Vec<String>,
}

struct PerCallCollector {
    calls: Vec<String>,
}

impl VisitorMut for PerCallCollector {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if function_name(e).is_some_and(|n| PER_CALL.contains(&n.as_str())) {
            let i = self.calls.len();
            self.calls.push(e.to_string());
            *e = Expr::Identifier(Ident::new(placeholder(i)));
        }
        ControlFlow::Continue(())
    }
}

fn placeholder(i: usize) -> String {
    format!("__turnout_v{i}__")
}

/// The plan for `sql` when it is one `INSERT ... VALUES` calling per-call
/// functions in its rows; `None` otherwise (other statements stay as they are).
pub fn per_call_plan(sql: &str) -> Option<PerCallPlan> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let mut statement = statements.pop()?;
    let mut collector = PerCallCollector { calls: Vec::new() };
    {
        let Statement::Insert(insert) = &mut statement else {
            return None;
        };
        let source = insert.source.as_mut()?;
        let SetExpr::Values(values) = source.body.as_mut() else {
            return None;
        };
        for row in &mut values.rows {
            for e in row.iter_mut() {
                let _ = e.visit(&mut collector);
            }
        }
    }
    if collector.calls.is_empty() || collector.calls.iter().any(|c| c.contains("__turnout_v")) {
        return None;
    }
    Some(PerCallPlan {
        statement,
        calls: collector.calls,
    })
}

impl PerCallPlan {
    /// One row: each call's value as text and its type, evaluated once.
    pub fn values_query(&self) -> String {
        let columns: Vec<String> = (0..self.calls.len())
            .map(|i| format!("v{i}::text, pg_typeof(v{i})::text"))
            .collect();
        let calls: Vec<String> = self
            .calls
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} AS v{i}"))
            .collect();
        // OFFSET 0 keeps the planner from inlining (and re-evaluating) the calls.
        format!(
            "SELECT {} FROM (SELECT {} OFFSET 0) AS turnout_values",
            columns.join(", "),
            calls.join(", ")
        )
    }

    /// The statement with each call replaced by the authority's value.
    pub fn apply(&self, row: &[Option<String>]) -> Result<String, String> {
        if row.len() != 2 * self.calls.len() {
            return Err(format!(
                "the authority gave {} values for {} calls",
                row.len() / 2,
                self.calls.len()
            ));
        }
        let mut text = self.statement.to_string();
        for (i, pair) in row.chunks(2).enumerate() {
            let Some(ty) = pair[1].as_deref() else {
                return Err("the authority gave no type for a value".into());
            };
            let literal = match pair[0].as_deref() {
                Some(v) => format!("CAST('{}' AS {ty})", v.replace('\'', "''")),
                None => format!("CAST(NULL AS {ty})"),
            };
            text = text.replace(&placeholder(i), &literal);
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-11-24 22:51:24.123456+00";

    #[test]
    fn transaction_time_functions_become_the_authoritys_value() {
        let (sql, pinned) = pin_transaction_time(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP)",
            TS,
        )
        .unwrap();
        assert!(pinned);
        assert_eq!(
            sql,
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, (('2026-11-24 22:51:24.123456+00'::TIMESTAMPTZ)))"
        );
        let (sql, _) = pin_transaction_time(
            "UPDATE t SET seen = now(), day = current_date WHERE id = 1",
            TS,
        )
        .unwrap();
        assert!(!sql.to_lowercase().contains("now()"), "{sql}");
        assert!(sql.contains("::DATE"), "{sql}");
    }

    #[test]
    fn statements_without_time_are_left_as_written() {
        let original = "update t  set x = x + 1 where id = $1";
        assert_eq!(
            pin_transaction_time(original, TS).unwrap(),
            (original.to_string(), false)
        );
    }

    #[test]
    fn per_call_values_are_refused_by_name() {
        for (sql, f) in [
            (
                "INSERT INTO t VALUES (gen_random_uuid())",
                "gen_random_uuid",
            ),
            ("UPDATE t SET r = random()", "random"),
            ("INSERT INTO t VALUES (nextval('s'))", "nextval"),
            ("UPDATE t SET at = clock_timestamp()", "clock_timestamp"),
        ] {
            assert_eq!(
                pin_transaction_time(sql, TS),
                Err(PinError::Unpinnable(f.to_string()))
            );
        }
    }

    #[test]
    fn per_call_values_in_insert_rows_are_evaluated_once() {
        let plan = per_call_plan(
            "INSERT INTO t (id, token, r) VALUES (1, gen_random_uuid(), random() * 10), (2, gen_random_uuid(), 0.5)",
        )
        .unwrap();
        assert_eq!(
            plan.values_query(),
            "SELECT v0::text, pg_typeof(v0)::text, v1::text, pg_typeof(v1)::text, v2::text, pg_typeof(v2)::text \
             FROM (SELECT gen_random_uuid() AS v0, random() AS v1, gen_random_uuid() AS v2 OFFSET 0) AS turnout_values"
        );
        let row = [
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_string()),
            Some("uuid".to_string()),
            Some("0.25".to_string()),
            Some("double precision".to_string()),
            None,
            Some("uuid".to_string()),
        ];
        assert_eq!(
            plan.apply(&row).unwrap(),
            "INSERT INTO t (id, token, r) VALUES (1, CAST('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AS uuid), CAST('0.25' AS double precision) * 10), (2, CAST(NULL AS uuid), 0.5)"
        );
        assert!(plan.apply(&row[..2]).is_err());
        // Only INSERT ... VALUES rows are planned.
        assert!(per_call_plan("UPDATE t SET r = random()").is_none());
        assert!(per_call_plan("INSERT INTO t SELECT random() FROM s").is_none());
        assert!(per_call_plan("INSERT INTO t VALUES (1, now())").is_none());
        assert!(per_call_plan("INSERT INTO").is_none());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            pin_transaction_time("INSERT INTO", TS),
            Err(PinError::Parse(_))
        ));
        assert!(matches!(
            pin_transaction_time("SELECT now()", "x'); DROP TABLE t; --"),
            Err(PinError::BadTimestamp(_))
        ));
    }
}
