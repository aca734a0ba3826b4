//! What a statement is — read, write, DDL, transaction control, session
//! setting — decided with a real SQL parser and cached per statement text.
//!
//! Anything the parser cannot read, or whose effects are unknown, is a write:
//! it is mirrored, never silently dropped.

use super::fingerprint::fingerprint;
use sqlparser::ast::{
    visit_expressions, visit_statements, CopySource, Expr, SetExpr, Statement, TableObject,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use std::ops::ControlFlow;
use turnout_config::RuleAction;

/// Statements longer than this are not parsed (bounded CPU); they count as writes.
const MAX_PARSED_LEN: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    Release,
    RollbackTo,
}

/// The kind of one statement, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads only: served by the read target.
    Read,
    /// A read that takes row locks (`FOR UPDATE`/`FOR SHARE`): the authority's.
    LockingRead,
    /// Changes rows (or might: unknown and unparsable statements are here).
    Write,
    /// Changes the schema.
    Ddl,
    Transaction(TxControl),
    /// Changes session state (`SET`, `RESET`, `DISCARD`, `PREPARE`, `USE`, ...).
    Session,
    /// Neither reads nor writes data (`LISTEN`, `SHOW`, `EXPLAIN` without ANALYZE, ...).
    Other,
}

/// One statement of a query text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementClass {
    pub kind: Kind,
    /// Why running it again on the mirror may not reproduce its effect.
    pub unsafe_reason: Option<&'static str>,
    /// Calls something whose value differs per run (`now()`, `random()`, ...),
    /// so the mirror must apply the authority's values, not re-evaluate.
    pub nondeterministic: bool,
}

/// What a query text (one or more statements) is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classification {
    pub statements: Vec<StatementClass>,
    pub fingerprint: String,
    /// The parser's complaint when the text could not be parsed.
    pub parse_error: Option<String>,
    /// For a text that is one INSERT: its target table, as written.
    pub insert_table: Option<String>,
    /// The config rule (`mirror.rules`) whose fingerprint this text has.
    pub rule: Option<RuleAction>,
    /// The text parsed and names no table (`SELECT 1`, `SELECT @@socket`,
    /// `SELECT now()`): no data to compare between the sides.
    pub no_tables: bool,
    /// PostgreSQL writes: whether the mirror can apply the authority's row
    /// images ([`super::row_image`]).
    pub image: super::row_image::ImagePlan,
}

impl Kind {
    /// The kind's name, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::LockingRead => "locking_read",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::Transaction(_) => "transaction",
            Kind::Session => "session",
            Kind::Other => "other",
        }
    }
}

impl Classification {
    /// The kind that decides routing for the whole text: a write anywhere makes
    /// the text a write; DDL beats that; a lone statement keeps its kind.
    pub fn kind(&self) -> Kind {
        match self.statements.as_slice() {
            [] => Kind::Other,
            [one] => one.kind,
            many => {
                if many.iter().any(|s| s.kind == Kind::Ddl) {
                    Kind::Ddl
                } else if many
                    .iter()
                    .any(|s| matches!(s.kind, Kind::Write | Kind::Transaction(_) | Kind::Session))
                {
                    Kind::Write
                } else if many.iter().any(|s| s.kind == Kind::LockingRead) {
                    Kind::LockingRead
                } else {
                    Kind::Read
                }
            }
        }
    }

    /// A `mirror.rules` entry keeps this shape on one side on purpose
    /// (`never_mirror`, `old`, `new`).
    pub fn ruled_to_one_side(&self) -> bool {
        matches!(
            self.rule,
            Some(RuleAction::NeverMirror | RuleAction::Old | RuleAction::New)
        )
    }

    pub fn unsafe_reason(&self) -> Option<&'static str> {
        self.statements.iter().find_map(|s| s.unsafe_reason)
    }

    pub fn nondeterministic(&self) -> bool {
        self.statements.iter().any(|s| s.nondeterministic)
    }
}

/// MySQL functions whose value the mirror cannot be given beforehand (the
/// time is, with `SET TIMESTAMP`; auto-increment ids with `SET INSERT_ID`).
const CONTEXT_UNSAFE_FUNCTIONS: &[&str] =
    &["uuid", "uuid_short", "sysdate", "rand", "random_bytes"];

/// Why a MySQL write cannot be replayed from the statement and its
/// context (what statement-based replication calls unsafe), if it cannot.
fn statement_context_unsafe(statement: &Statement) -> Option<&'static str> {
    let limited = match statement {
        Statement::Update(u) => u.limit.is_some() && u.order_by.is_empty(),
        Statement::Delete(d) => d.limit.is_some() && d.order_by.is_empty(),
        _ => false,
    };
    if limited {
        return Some("LIMIT without ORDER BY may pick other rows on the mirror");
    }
    let mut found = None;
    let _ = visit_expressions(statement, |e: &Expr| match function_name(e) {
        Some(name) if CONTEXT_UNSAFE_FUNCTIONS.contains(&name.as_str()) => {
            found = Some(
                    "calls UUID(), UUID_SHORT(), SYSDATE(), RAND() or RANDOM_BYTES(), whose values differ on the mirror",
                );
            ControlFlow::Break(())
        }
        Some(name) if SERVER_FUNCTIONS.contains(&name.as_str()) => {
            found = Some(
                "calls CONNECTION_ID() (or another function of the server and session), whose value is each server's own",
            );
            ControlFlow::Break(())
        }
        _ => match e {
            Expr::Identifier(i) if server_variable(&i.value) => {
                found = Some(
                    "reads a server variable (@@port, @@hostname, @@server_id, ...) whose value is each server's own",
                );
                ControlFlow::Break(())
            }
            Expr::CompoundIdentifier(parts)
                if parts.first().is_some_and(|p| p.value.starts_with("@@"))
                    && server_variable(&format!(
                        "@@{}",
                        parts.last().map(|p| p.value.as_str()).unwrap_or_default()
                    )) =>
            {
                found = Some(
                    "reads a server variable (@@port, @@hostname, @@server_id, ...) whose value is each server's own",
                );
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        },
    });
    found
}

/// MySQL functions whose value is the server's or the session's own.
const SERVER_FUNCTIONS: &[&str] = &["connection_id", "user", "session_user", "system_user"];

/// `@@port`, `@@global.hostname`, ...: a server's identity, which differs
/// between the sides.
fn server_variable(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("@@") else {
        return false;
    };
    let rest = rest.to_ascii_lowercase();
    let var = rest.rsplit('.').next().unwrap_or(&rest);
    matches!(
        var,
        "port"
            | "hostname"
            | "server_id"
            | "server_uuid"
            | "pid_file"
            | "datadir"
            | "socket"
            | "gtid_domain_id"
            | "version"
            | "version_comment"
            | "basedir"
            | "log_bin_basename"
            | "pseudo_thread_id"
            | "gtid_binlog_pos"
            | "gtid_current_pos"
            | "last_gtid"
    )
}

/// A statement that assigns a user variable (`@n := ...`).
fn assigns(statement: &Statement) -> bool {
    visit_expressions(statement, |e: &Expr| {
        if matches!(
            e,
            Expr::BinaryOp {
                op: sqlparser::ast::BinaryOperator::Assignment,
                ..
            }
        ) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// A write whose rows a query inside it chooses by what it reads: a
/// `LIMIT`, or row locks (`FOR UPDATE SKIP LOCKED` queues).
fn picks_rows(statement: &Statement) -> bool {
    struct Picks;
    impl sqlparser::ast::Visitor for Picks {
        type Break = ();
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
            if q.limit_clause.is_some() || !q.locks.is_empty() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    matches!(
        statement,
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Query(_)
    ) && sqlparser::ast::Visit::visit(statement, &mut Picks).is_break()
}

/// A query that contains a data-modifying statement (`WITH x AS (INSERT ...)`).
fn modifies(statement: &Statement) -> bool {
    visit_statements(statement, |s: &Statement| {
        if matches!(
            s,
            Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
                | Statement::Merge(_)
        ) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

fn classify_statement(statement: &Statement) -> StatementClass {
    let c = calls(statement);
    let mut unsafe_reason = None;
    let kind = match statement {
        Statement::Query(q) => {
            let into = match &*q.body {
                SetExpr::Select(s) => s.into.as_ref(),
                _ => None,
            };
            let sets_variable = into.is_some_and(|i| {
                !i.targets.is_empty() && i.targets.iter().all(|t| t.to_string().starts_with('@'))
            }) || assigns(statement);
            if sets_variable && !modifies(statement) && !c.side_effects {
                // MySQL's `SELECT ... INTO @var` and `SELECT @n := @n + 1`
                // set session variables: the mirror needs them as well (a
                // later `INSERT ... VALUES (@n)` runs there too).
                Kind::Session
            } else if into.is_some() {
                Kind::Ddl
            } else if modifies(statement) || c.side_effects {
                Kind::Write
            } else if !q.locks.is_empty() {
                Kind::LockingRead
            } else {
                Kind::Read
            }
        }
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_) => Kind::Write,
        Statement::Copy { to, source, .. } => {
            if *to {
                match source {
                    CopySource::Query(_) if modifies(statement) => Kind::Write,
                    _ => Kind::Read,
                }
            } else {
                Kind::Write
            }
        }
        Statement::Call(_) => {
            unsafe_reason = Some("a procedure call's effects may differ when run again");
            Kind::Write
        }
        Statement::Explain {
            analyze,
            statement,
            options,
            ..
        } => {
            let inner = classify_statement(statement);
            let analyze = *analyze || options.as_deref().is_some_and(analyze_option);
            if analyze && matches!(inner.kind, Kind::Write | Kind::Ddl) {
                inner.kind
            } else {
                Kind::Other
            }
        }
        Statement::StartTransaction { .. } => Kind::Transaction(TxControl::Begin),
        Statement::Commit { .. } => Kind::Transaction(TxControl::Commit),
        Statement::Rollback { savepoint, .. } => Kind::Transaction(if savepoint.is_some() {
            TxControl::RollbackTo
        } else {
            TxControl::Rollback
        }),
        Statement::Savepoint { .. } => Kind::Transaction(TxControl::Savepoint),
        Statement::ReleaseSavepoint { .. } => Kind::Transaction(TxControl::Release),
        Statement::Set(_)
        | Statement::Reset(_)
        | Statement::Discard { .. }
        | Statement::Prepare { .. }
        | Statement::Deallocate { .. }
        | Statement::Use(_) => Kind::Session,
        // EXECUTE runs a prepared statement of unknown kind: a write.
        Statement::Execute { .. } => Kind::Write,
        Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::ExplainTable { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Kind::Other,
        // A cursor runs its query at each FETCH, on the side that holds it:
        // over a function with side effects (a large object's), the mirror
        // cannot follow, so it is recorded.
        Statement::Declare { .. } if c.side_effects || modifies(statement) => {
            unsafe_reason = Some(
                "a cursor over a query with side effects runs it at each FETCH, on the authority alone",
            );
            Kind::Write
        }
        Statement::Declare { .. } => Kind::Other,
        // NOTIFY and row locks are side effects others can see: mirrored.
        Statement::NOTIFY { .. } | Statement::Lock(_) | Statement::LockTables { .. } => Kind::Write,
        Statement::Kill { .. } => Kind::Other,
        // Maintenance that changes no rows (and cannot run in a transaction block).
        Statement::Vacuum(_) | Statement::Analyze(_) => Kind::Other,
        // DDL that writes rows through a data-modifying WITH (`CREATE TABLE
        // x AS WITH d AS (DELETE ...) SELECT ...`) is a write: mirrored.
        other if is_ddl(other) && modifies(other) => Kind::Write,
        other if is_ddl(other) => Kind::Ddl,
        _ => Kind::Write,
    };
    StatementClass {
        kind,
        unsafe_reason,
        nondeterministic: c.nondeterministic && matches!(kind, Kind::Write | Kind::Ddl),
    }
}

/// The relations (lower-case, unqualified names) a DDL text creates or
/// renames to: tables, views, materialized views, sequences.
pub fn created_relations(dialect: SqlDialect, sql: &str) -> Vec<String> {
    use sqlparser::ast::{AlterTableOperation, ObjectName, RenameTableNameKind};
    let Ok(statements) = Parser::parse_sql(dialect_of(dialect), sql) else {
        return Vec::new();
    };
    let last = |n: &ObjectName| n.0.last().map(|p| plain_name(&p.to_string()));
    let mut out = Vec::new();
    for s in &statements {
        match s {
            Statement::CreateTable(t) => out.extend(last(&t.name)),
            Statement::CreateView(v) => out.extend(last(&v.name)),
            Statement::CreateSequence { name, .. } => out.extend(last(name)),
            Statement::AlterTable(a) => {
                for op in &a.operations {
                    if let AlterTableOperation::RenameTable { table_name } = op {
                        let name = match table_name {
                            RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => n,
                        };
                        out.extend(last(name));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `EXPLAIN (...)` options run the statement: `ANALYZE` among them,
/// unless it is switched off by a keyword (`ANALYZE false`, `ANALYZE off`).
/// A literal value (`ANALYZE 0`, `ANALYZE 'on'`) counts as on whatever it
/// is: the classification never depends on a literal's value (the cache
/// keys literals by kind alone), and running an EXPLAIN on the mirror too
/// is harmless.
fn analyze_option(options: &[sqlparser::ast::UtilityOption]) -> bool {
    use sqlparser::ast::Value;
    options.iter().any(|o| {
        (o.name.value.eq_ignore_ascii_case("analyze")
            || o.name.value.eq_ignore_ascii_case("analyse"))
            && !match &o.arg {
                None => false,
                Some(Expr::Value(v)) => matches!(v.value, Value::Boolean(false)),
                Some(Expr::Identifier(i)) => {
                    i.quote_style.is_none()
                        && ["off", "false", "no"]
                            .iter()
                            .any(|w| i.value.eq_ignore_ascii_case(w))
                }
                Some(_) => false,
            }
    })
}

fn is_ddl(statement: &Statement) -> bool {
    // Keyword-level test on the statement's own rendering: CREATE, ALTER, DROP,
    // COMMENT, GRANT, REVOKE and RENAME are schema changes in both dialects.
    let text = statement.to_string();
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "CREATE" | "ALTER" | "DROP" | "COMMENT" | "GRANT" | "REVOKE" | "RENAME"
    )
}

/// A schema change by its leading keyword, as [`is_ddl`] tells a parsed
/// one: one statement (a stored program's body, `BEGIN ... END` with its own
/// semicolons, counts as one).
fn is_unparsed_ddl(dialect: SqlDialect, sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(6)
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .collect();
    let Some(first) = words.first() else {
        return false;
    };
    if !matches!(
        first.as_str(),
        "CREATE" | "ALTER" | "DROP" | "COMMENT" | "GRANT" | "REVOKE" | "RENAME"
    ) {
        return false;
    }
    // (PostgreSQL bodies are quoted strings: a `;` outside one ends the
    // statement there.)
    let stored_program = dialect == SqlDialect::Mysql
        && first == "CREATE"
        && words.iter().any(|w| {
            matches!(
                w.as_str(),
                "PROCEDURE" | "FUNCTION" | "TRIGGER" | "EVENT" | "PACKAGE"
            )
        });
    stored_program || sql.trim().trim_end_matches(';').matches(';').count() == 0
}

/// The transaction control a single statement the parser could not read
/// is, by its leading keywords (`BEGIN ... DEFERRABLE`).
fn transaction_keyword(dialect: SqlDialect, sql: &str) -> Option<TxControl> {
    let text = sql.trim().trim_end_matches(';');
    if text.contains(';') || text.contains("--") || text.contains("/*") {
        return None;
    }
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect();
    // Only the words of transaction modes may follow: anything else is left
    // to the "unparsed is a write" rule.
    const MODES: &[&str] = &[
        "work",
        "transaction",
        "isolation",
        "level",
        "serializable",
        "repeatable",
        "read",
        "committed",
        "uncommitted",
        "only",
        "write",
        "not",
        "deferrable",
        "with",
        "consistent",
        "snapshot",
        "and",
        "no",
        "chain",
    ];
    let (first, rest) = words.split_first()?;
    if !rest.iter().all(|w| MODES.contains(&w.as_str())) {
        return None;
    }
    match first.as_str() {
        "begin" if dialect == SqlDialect::Mysql && rest.first().is_some_and(|w| w == "not") => None,
        "begin" => Some(TxControl::Begin),
        "start" if rest.first().is_some_and(|w| w == "transaction") => Some(TxControl::Begin),
        "commit" | "end" => Some(TxControl::Commit),
        "rollback" | "abort" => Some(TxControl::Rollback),
        _ => None,
    }
}

/// MariaDB runs the text of `/*M! ... */` comments as it runs MySQL's
/// `/*! ... */`; the parser knows only the latter.
fn executable_comments(dialect: SqlDialect, sql: &str) -> std::borrow::Cow<'_, str> {
    if dialect == SqlDialect::Mysql && sql.contains("/*M!") {
        std::borrow::Cow::Owned(sql.replace("/*M!", "/*!"))
    } else {
        std::borrow::Cow::Borrowed(sql)
    }
}

fn dialect_of(d: SqlDialect) -> &'static dyn Dialect {
    match d {
        SqlDialect::Postgres => &PostgreSqlDialect {},
        SqlDialect::Mysql => &MySqlDialect {},
    }
}

/// Classifies without the cache.
pub fn classify_uncached(dialect: SqlDialect, sql: &str) -> Classification {
    let text = executable_comments(dialect, sql);
    classify_text(dialect, dialect_of(dialect), &text)
}

fn classify_text(dialect: SqlDialect, d: &dyn Dialect, sql: &str) -> Classification {
    let fingerprint = fingerprint(d, sql);
    let unparsed = |reason: String| Classification {
        statements: vec![StatementClass {
            kind: Kind::Write,
            unsafe_reason: None,
            nondeterministic: false,
        }],
        fingerprint: fingerprint.clone(),
        parse_error: Some(reason),
        image: match dialect {
            SqlDialect::Postgres => {
                super::row_image::ImagePlan::Statement(super::row_image::UNREAD)
            }
            SqlDialect::Mysql => super::row_image::ImagePlan::None,
        },
        ..Classification::default()
    };
    if sql.len() > MAX_PARSED_LEN {
        return unparsed(format!(
            "statement of {} bytes is longer than the {MAX_PARSED_LEN} bytes turnout parses",
            sql.len()
        ));
    }
    // MySQL's `LOCK IN SHARE MODE` is not in the parser's grammar.
    if dialect == SqlDialect::Mysql {
        let trimmed = sql.trim_end().trim_end_matches(';').trim_end();
        let cut = trimmed.len().saturating_sub("lock in share mode".len());
        if trimmed.is_char_boundary(cut)
            && trimmed[cut..].eq_ignore_ascii_case("lock in share mode")
        {
            let mut c = classify_text(dialect, d, &trimmed[..cut]);
            if c.kind() == Kind::Read && c.statements.len() == 1 {
                c.statements[0].kind = Kind::LockingRead;
                c.fingerprint = fingerprint;
                return c;
            }
        }
    }
    match Parser::parse_sql(d, sql) {
        Ok(statements) => {
            let classes: Vec<StatementClass> = statements
                .iter()
                .map(|s| {
                    let mut c = classify_statement(s);
                    if dialect == SqlDialect::Mysql
                        && matches!(c.kind, Kind::Write | Kind::Ddl)
                        && c.unsafe_reason.is_none()
                    {
                        c.unsafe_reason = statement_context_unsafe(s);
                    }
                    if c.kind == Kind::Write && c.unsafe_reason.is_none() && picks_rows(s) {
                        // (Row images carry the rows it chose; run again as
                        // a statement it may choose others.)
                        c.unsafe_reason = Some(
                            "the rows it writes are chosen by a query with LIMIT or row locks (SKIP LOCKED), which may choose other rows on the mirror",
                        );
                    }
                    c
                })
                .collect();
            let image = if dialect == SqlDialect::Postgres
                && classes.iter().any(|c| c.kind == Kind::Write)
            {
                super::row_image::plan(&statements)
            } else {
                super::row_image::ImagePlan::None
            };
            Classification {
                statements: classes,
                fingerprint,
                parse_error: None,
                insert_table: match statements.as_slice() {
                    [Statement::Insert(insert)] => match &insert.table {
                        // (The parser takes a string for a name, `INSERT 'x'`,
                        // which no server does: a literal is never a table.)
                        TableObject::TableName(name)
                            if name.0.iter().all(|part| {
                                part.as_ident().is_some_and(|i| i.quote_style != Some('\''))
                            }) =>
                        {
                            Some(name.to_string())
                        }
                        _ => None,
                    },
                    _ => None,
                },
                rule: None,
                image,
                no_tables: {
                    let mut named = false;
                    let _ = sqlparser::ast::visit_relations(&statements, |_| {
                        named = true;
                        std::ops::ControlFlow::<()>::Break(())
                    });
                    !named
                },
            }
        }
        Err(e) => {
            // A statement the parser could not read, known by its keywords.
            let by_keyword = |kind| Classification {
                statements: vec![StatementClass {
                    kind,
                    unsafe_reason: None,
                    nondeterministic: false,
                }],
                fingerprint: fingerprint.clone(),
                parse_error: Some(e.to_string()),
                ..Classification::default()
            };
            if let Some(tx) = transaction_keyword(dialect, sql) {
                // Modes the parser does not know (`DEFERRABLE`, `WITH
                // CONSISTENT SNAPSHOT`) keep a BEGIN a BEGIN: taken for a
                // write, it would be wrapped in a transaction of turnout's.
                return by_keyword(Kind::Transaction(tx));
            }
            if is_unparsed_ddl(dialect, sql) {
                // DDL the parser does not know (MySQL's `LONG VARBINARY`
                // columns, procedure bodies) follows `mirror.ddl` like the
                // DDL it knows, never the write path.
                return by_keyword(Kind::Ddl);
            }
            // Maintenance commands the parser may not know change no rows;
            // they go to the authority alone (several cannot run in a
            // transaction block, so wrapping them as writes would break them).
            let first = sql
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches(';')
                .to_ascii_lowercase();
            let maintenance = [
                "vacuum",
                "analyze",
                "analyse",
                "checkpoint",
                "reindex",
                "cluster",
            ];
            // (MariaDB's `ANALYZE <statement>` runs the statement: only
            // `ANALYZE TABLE` is maintenance there.)
            let second = sql
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_ascii_lowercase();
            let runs_statement = dialect == SqlDialect::Mysql
                && first == "analyze"
                && !matches!(second.as_str(), "table" | "local" | "no_write_to_binlog");
            if sql.split(';').filter(|s| !s.trim().is_empty()).count() == 1
                && maintenance.contains(&first.as_str())
                && !runs_statement
            {
                by_keyword(Kind::Other)
            } else {
                unparsed(e.to_string())
            }
        }
    }
}

mod classifier;
mod functions;
pub use classifier::Classifier;
use functions::{calls, function_name, plain_name};

#[cfg(test)]
mod tests;
