//! Row images (PostgreSQL): the mirror applies the rows the authority wrote,
//! not the statement again. The authority runs the client's INSERT, UPDATE or
//! DELETE with one column added at the end of its `RETURNING` list, the whole
//! row as its text (`ROW(t.*)::text`, each value as the session's own text
//! output); turnout takes that column off before the client sees the
//! answer, and the mirror applies exactly those rows by primary key, in one
//! statement whatever their number, from an array of its table's row type
//! ([`super::image_check::rows_param`]):
//!
//! - inserted and updated rows: an upsert of every column the row carries;
//! - deleted rows: a DELETE by key.
//!
//! Each apply answers how many rows it inserted and how many it found
//! already there (or deleted), so a mirror that held other rows than the
//! authority is seen at once (`row_count_mismatch`), never silently.
//!
//! What the statement is (its target, whether the client has a `RETURNING`
//! list) depends only on its structure, never on literal values, so it is
//! kept in the statement's cached [`Classification`](super::Classification).

use crate::backend::rows::Rows;
use sqlparser::ast::{
    AssignmentTarget, FromTable, Ident, ObjectName, ObjectNamePart, OnConflictAction, OnInsert,
    SetExpr, Statement, TableFactor, TableObject,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// What a write does to its table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    /// `INSERT ... ON CONFLICT DO UPDATE`: rows inserted or updated.
    Upsert,
    Update,
    Delete,
}

/// A write that can carry row images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTarget {
    pub op: Op,
    /// The target table as the statement names it (perhaps qualified).
    pub table: String,
    /// How `RETURNING` refers to the target's row: its alias, or its name.
    pub reference: String,
    /// The client's own `RETURNING` list is there (the added column goes
    /// after it; without it, the answer's rows are all turnout's).
    pub returning: bool,
    /// Columns an UPDATE (or `DO UPDATE`) assigns, folded as PostgreSQL
    /// folds them: assigning a key column moves the row, which a row image
    /// (the new row only) cannot say.
    pub assigned: Vec<String>,
}

/// Whether a statement's writes can be mirrored as row images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ImagePlan {
    /// Not a write of rows (a read, a setting, DDL) or not PostgreSQL.
    #[default]
    None,
    Target(ImageTarget),
    /// A write whose rows `RETURNING` cannot capture: mirrored as a statement.
    Statement(&'static str),
}

impl ImagePlan {
    pub fn target(&self) -> Option<&ImageTarget> {
        match self {
            ImagePlan::Target(t) => Some(t),
            _ => None,
        }
    }

    /// Why a write mirrored as a statement may not do on the mirror what it
    /// did on the authority (rows it chose by what it read there): data
    /// modifications under WITH, MERGE, several writes in one text, a
    /// statement prepared by SQL, large objects, a text the parser cannot
    /// read (a `DO` block: what it does is in a string). Others
    /// mirrored as statements do the same on both sides (TRUNCATE, COPY) or
    /// are a function's own business (`SELECT f()`, `EXPLAIN ANALYZE`).
    pub fn statement_risk(&self) -> Option<&'static str> {
        const RISKS: [&str; 6] = [
            "a write inside a WITH clause",
            "MERGE",
            "several statements in one text",
            "EXECUTE of a statement prepared by SQL",
            "a large-object function (the object's id and bytes may differ)",
            UNREAD,
        ];
        match self {
            ImagePlan::Statement(r) if RISKS.contains(r) => Some(r),
            _ => None,
        }
    }
}

/// The plan of a write the parser could not read.
pub const UNREAD: &str = "a statement turnout's parser cannot read (a DO block, new syntax)";

fn fold(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

fn last_ident(name: &ObjectName) -> Option<&Ident> {
    match name.0.last()? {
        ObjectNamePart::Identifier(i) => Some(i),
        _ => None,
    }
}

fn plain_name(name: &ObjectName) -> bool {
    name.0.iter().all(|p| {
        p.as_ident()
            .is_some_and(|i| i.quote_style.is_none() || i.quote_style == Some('"'))
    })
}

fn assigned(targets: &[sqlparser::ast::Assignment]) -> Vec<String> {
    let mut out = Vec::new();
    for a in targets {
        let names: Vec<&ObjectName> = match &a.target {
            AssignmentTarget::ColumnName(n) => vec![n],
            AssignmentTarget::Tuple(ns) => ns.iter().collect(),
        };
        for n in names {
            // `SET col[1] = ...` or `SET col.field = ...` still assign `col`.
            if let Some(i) = n.0.first().and_then(|p| p.as_ident()) {
                out.push(fold(i));
            }
        }
    }
    out
}

/// The row-image plan of one parsed PostgreSQL statement that writes.
pub fn plan(statements: &[Statement]) -> ImagePlan {
    let [statement] = statements else {
        return ImagePlan::Statement("several statements in one text");
    };
    let statement = match statement {
        Statement::Query(q) => match &*q.body {
            // `WITH ... INSERT/UPDATE/DELETE`: the CTEs must only read.
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => {
                let reads_only = q.with.as_ref().is_none_or(|w| {
                    w.cte_tables
                        .iter()
                        .all(|c| matches!(&*c.query.body, SetExpr::Select(_) | SetExpr::Values(_)))
                });
                if !reads_only {
                    return ImagePlan::Statement("a write inside a WITH clause");
                }
                if q.order_by.is_some() || q.limit_clause.is_some() {
                    return ImagePlan::Statement("an unusual WITH statement");
                }
                s
            }
            _ if calls_large_objects(q) => {
                return ImagePlan::Statement(
                    "a large-object function (the object's id and bytes may differ)",
                )
            }
            _ => return ImagePlan::Statement("a write inside a query (a function or a CTE)"),
        },
        other => other,
    };
    match statement {
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return ImagePlan::Statement("an INSERT into a table function");
            };
            if !plain_name(name) {
                return ImagePlan::Statement("an INSERT into an unusual name");
            }
            let Some(last) = last_ident(name) else {
                return ImagePlan::Statement("an INSERT into an unusual name");
            };
            let reference = match &insert.table_alias {
                Some(a) => a.alias.to_string(),
                None => last.to_string(),
            };
            let (op, assigned) = match &insert.on {
                None => (Op::Insert, Vec::new()),
                Some(OnInsert::OnConflict(c)) => match &c.action {
                    OnConflictAction::DoNothing => (Op::Insert, Vec::new()),
                    OnConflictAction::DoUpdate(u) => (Op::Upsert, assigned(&u.assignments)),
                },
                Some(_) => return ImagePlan::Statement("an INSERT with a MySQL clause"),
            };
            ImagePlan::Target(ImageTarget {
                op,
                table: name.to_string(),
                reference,
                returning: insert.returning.is_some(),
                assigned,
            })
        }
        Statement::Update(update) => {
            let (table, reference) = match relation_target(&update.table) {
                Ok(t) => t,
                Err(why) => return ImagePlan::Statement(why),
            };
            ImagePlan::Target(ImageTarget {
                op: Op::Update,
                table,
                reference,
                returning: update.returning.is_some(),
                assigned: assigned(&update.assignments),
            })
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let ([table], true) = (tables.as_slice(), delete.tables.is_empty()) else {
                return ImagePlan::Statement("a DELETE from several tables");
            };
            let (table, reference) = match relation_target(table) {
                Ok(t) => t,
                Err(why) => return ImagePlan::Statement(why),
            };
            ImagePlan::Target(ImageTarget {
                op: Op::Delete,
                table,
                reference,
                returning: delete.returning.is_some(),
                assigned: Vec::new(),
            })
        }
        Statement::Merge(_) => ImagePlan::Statement("MERGE"),
        Statement::Execute { .. } => ImagePlan::Statement("EXECUTE of a statement prepared by SQL"),
        Statement::Truncate(_) => ImagePlan::Statement("TRUNCATE"),
        Statement::Copy { .. } => ImagePlan::Statement("COPY"),
        _ => ImagePlan::Statement("a statement whose writes RETURNING cannot capture"),
    }
}

/// Server functions that write large objects (which neither row images
/// nor PostgreSQL's logical decoding carry).
pub const LARGE_OBJECT_WRITES: &[&str] = &[
    "lo_import",
    "lo_unlink",
    "lo_create",
    "lo_creat",
    "lo_from_bytea",
    "lo_put",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
];

/// Whether a query calls a server function that writes a large object.
fn calls_large_objects(q: &sqlparser::ast::Query) -> bool {
    sqlparser::ast::visit_expressions(q, |e: &sqlparser::ast::Expr| match e {
        sqlparser::ast::Expr::Function(f)
            if f.name.0.last().is_some_and(|p| {
                LARGE_OBJECT_WRITES
                    .contains(&p.to_string().trim_matches('"').to_lowercase().as_str())
            }) =>
        {
            std::ops::ControlFlow::Break(())
        }
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_break()
}

/// The table an UPDATE or DELETE writes (as written) and how `RETURNING`
/// refers to it (its alias, or its name); `Err`: why it is not one plain
/// table.
fn relation_target(
    table: &sqlparser::ast::TableWithJoins,
) -> Result<(String, String), &'static str> {
    if !table.joins.is_empty() {
        return Err("a write to joined tables");
    }
    let TableFactor::Table { name, alias, .. } = &table.relation else {
        return Err("a write to something other than a table");
    };
    let Some(last) = last_ident(name).filter(|_| plain_name(name)) else {
        return Err("a write to an unusual name");
    };
    let reference = alias
        .as_ref()
        .map_or_else(|| last.to_string(), |a| a.name.to_string());
    Ok((name.to_string(), reference))
}

/// Where the statement's last token ends (before trailing semicolons,
/// comments and white space), as a byte offset.
fn statement_end(sql: &str) -> Option<usize> {
    let trimmed = sql
        .trim_end()
        .trim_end_matches([';', ' ', '\t', '\r', '\n']);
    if !trimmed.contains("--") && !trimmed.contains("/*") && !trimmed.contains(';') {
        return Some(trimmed.len());
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let last = tokens.iter().rposition(|t| {
        !matches!(
            t.token,
            Token::Whitespace(_) | Token::SemiColon | Token::EOF
        )
    })?;
    if tokens[..last].iter().any(|t| t.token == Token::SemiColon) {
        // Two statements: not a single write.
        return None;
    }
    match tokens.get(last + 1) {
        None => Some(sql.len()),
        Some(t) if t.token == Token::EOF => Some(sql.len()),
        // The added text goes before the trailing comment or `;`.
        Some(t) => offset_of(sql, t.span.start.line, t.span.start.column),
    }
}

/// The byte offset of a 1-based line and column (in characters).
fn offset_of(sql: &str, line: u64, column: u64) -> Option<usize> {
    let mut at = 0usize;
    for (n, text) in sql.split_inclusive('\n').enumerate() {
        if n as u64 + 1 == line {
            let chars = column.checked_sub(1)? as usize;
            let within = text
                .char_indices()
                .nth(chars)
                .map_or(text.len(), |(i, _)| i);
            return Some(at + within);
        }
        at += text.len();
    }
    (line as usize > sql.split_inclusive('\n').count()).then_some(sql.len())
}

/// The client's statement with the row image added at the end of its
/// `RETURNING` list; `None` when its end cannot be found (then it is
/// mirrored as a statement).
pub fn capture_text(sql: &str, target: &ImageTarget) -> Option<String> {
    let end = statement_end(sql)?;
    let added = if target.returning {
        format!(", ROW({}.*)::text", target.reference)
    } else {
        format!(" RETURNING ROW({}.*)::text", target.reference)
    };
    let mut out = String::with_capacity(sql.len() + added.len());
    out.push_str(&sql[..end]);
    out.push_str(&added);
    out.push_str(&sql[end..]);
    Some(out)
}

/// What the mirror's catalog says of a table, for applying rows to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTable {
    /// The table's name as the apply statements write it.
    pub name: String,
    /// Columns that can be written, with whether each is in the key.
    pub columns: Vec<(String, bool)>,
    /// Generated columns (`GENERATED ALWAYS AS ... STORED`): never written.
    pub generated: Vec<String>,
    /// Every column, in the order of the table's row type.
    pub order: Vec<String>,
    /// A partitioned table (whose rows have no `xmax` to tell inserted
    /// rows from updated ones).
    pub partitioned: bool,
}

impl MirrorTable {
    pub fn key(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|(_, k)| *k)
            .map(|(c, _)| c.as_str())
            .collect()
    }
}

/// The catalog query for [`MirrorTable`]: one row per column (name, in the
/// key, generated). `table` is the name as the client wrote it.
pub fn catalog_query(table: &str) -> String {
    let literal = format!("'{}'", table.replace('\'', "''"));
    format!(
        "SELECT a.attname::text AS column_name, \
                (EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                         AND i.indisprimary AND a.attnum = ANY (i.indkey)))::text AS in_key, \
                (a.attgenerated <> '')::text AS generated, \
                (SELECT c.relkind FROM pg_class c WHERE c.oid = a.attrelid)::text AS kind \
         FROM pg_attribute a \
         WHERE a.attrelid = to_regclass({literal}) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum"
    )
}

/// The [`MirrorTable`] from [`catalog_query`]'s rows; `Err` when the mirror
/// has no such table.
pub fn mirror_table(table: &str, rows: &Rows) -> Result<MirrorTable, String> {
    if rows.is_empty() {
        return Err(format!("the mirror has no table {table}"));
    }
    let mut t = MirrorTable {
        name: table.to_string(),
        columns: Vec::new(),
        generated: Vec::new(),
        order: Vec::new(),
        partitioned: false,
    };
    let read = |e: crate::backend::rows::RowError| format!("{table}: the catalog's answer: {e}");
    for r in rows.iter() {
        let name = r.str("column_name").map_err(read)?.to_string();
        t.partitioned = r.str("kind").map_err(read)? == "p";
        t.order.push(name.clone());
        if r.str("generated").map_err(read)? == "true" {
            t.generated.push(name);
        } else {
            t.columns
                .push((name, r.str("in_key").map_err(read)? == "true"));
        }
    }
    Ok(t)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The marker in the first column of every apply's answer row.
pub const APPLIED: &str = "turnout:applied";

/// The statement that applies a write's row images on the mirror: `$1` is
/// the rows, an array of the table's row type in text
/// ([`super::image_check::rows_param`]); `written` the columns they carry
/// (the authority's). Its answer is one row: [`APPLIED`] and the rows it
/// inserted (or deleted); the others were found already there.
pub fn apply_statement(op: Op, table: &MirrorTable, written: &[String]) -> String {
    let name = &table.name;
    let rows = format!("unnest($1::{name}[]) AS r");
    let key: Vec<String> = table.key().iter().map(|k| quote(k)).collect();
    let matches: Vec<String> = key.iter().map(|k| format!("t.{k} = r.{k}")).collect();
    if op == Op::Delete {
        return format!(
            "WITH a AS (DELETE FROM {name} AS t USING {rows} WHERE {} RETURNING 1) \
             SELECT '{APPLIED}', count(*) FROM a",
            matches.join(" AND ")
        );
    }
    let columns: Vec<String> = table
        .columns
        .iter()
        .filter(|(c, _)| written.iter().any(|k| k == c))
        .map(|(c, _)| quote(c))
        .collect();
    let updates: Vec<String> = table
        .columns
        .iter()
        .filter(|(c, k)| !k && written.iter().any(|x| x == c))
        .map(|(c, _)| format!("{0} = EXCLUDED.{0}", quote(c)))
        .collect();
    let list = columns.join(", ");
    let picked: Vec<String> = columns.iter().map(|c| format!("r.{c}")).collect();
    let picked = picked.join(", ");
    if key.is_empty() {
        // No key (only INSERTs come here): the rows are added as they are.
        return format!(
            "WITH a AS (INSERT INTO {name} ({list}) OVERRIDING SYSTEM VALUE \
             SELECT {picked} FROM {rows} RETURNING 1) \
             SELECT '{APPLIED}', count(*) FROM a"
        );
    }
    let conflict = key.join(", ");
    if updates.is_empty() {
        // Every column is in the key: an existing row is already right,
        // counted as found by the rows the insert did not return.
        return format!(
            "WITH a AS (INSERT INTO {name} AS t ({list}) OVERRIDING SYSTEM VALUE \
             SELECT {picked} FROM {rows} ON CONFLICT ({conflict}) DO NOTHING RETURNING 1) \
             SELECT '{APPLIED}', count(*) FROM a"
        );
    }
    let action = format!("DO UPDATE SET {}", updates.join(", "));
    if table.partitioned {
        // No `xmax` on a partitioned table: the rows there before, counted
        // in the statement's snapshot (before the upsert).
        return format!(
            "WITH e AS (SELECT count(*) AS n FROM {name} AS t JOIN {rows} ON {}), \
             a AS (INSERT INTO {name} AS t ({list}) OVERRIDING SYSTEM VALUE \
             SELECT {picked} FROM {rows} ON CONFLICT ({conflict}) {action} RETURNING 1) \
             SELECT '{APPLIED}', (SELECT count(*) FROM a) - (SELECT n FROM e)",
            matches.join(" AND ")
        );
    }
    format!(
        "WITH a AS (INSERT INTO {name} AS t ({list}) OVERRIDING SYSTEM VALUE \
         SELECT {picked} FROM {rows} \
         ON CONFLICT ({conflict}) {action} RETURNING (t.xmax = 0) AS inserted) \
         SELECT '{APPLIED}', count(*) FILTER (WHERE inserted) FROM a"
    )
}

/// What a write's apply must find on the mirror, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub op: Op,
    pub rows: usize,
    pub table: String,
    pub fingerprint: String,
}

impl Expect {
    /// Why the mirror's answer (rows it inserted, or deleted) shows the
    /// sides held different rows; `None` when it agrees.
    pub fn mismatch(&self, applied: i64, mirror: &str) -> Option<String> {
        let rows = self.rows as i64;
        let table = &self.table;
        let found = rows - applied;
        match self.op {
            Op::Insert if found > 0 => Some(format!(
                "the authority inserted {rows} row(s) into {table}; {found} of them already existed on {mirror} (now with the authority's values)"
            )),
            Op::Update if applied > 0 => Some(format!(
                "the authority updated {rows} row(s) of {table}; {applied} of them were missing on {mirror} (inserted from the authority's rows)"
            )),
            Op::Delete if applied != rows => Some(format!(
                "the authority deleted {rows} row(s) from {table}; {mirror} deleted {applied}"
            )),
            _ => None,
        }
    }

    /// Whether the mismatch says rows were missing on the mirror (what a
    /// backfill not finished yet leaves by design).
    pub fn missing_rows(&self, applied: i64) -> bool {
        match self.op {
            Op::Update => applied > 0,
            Op::Delete => applied < self.rows as i64,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::parser::Parser;

    fn plan_of(sql: &str) -> ImagePlan {
        plan(&Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap())
    }

    fn target(sql: &str) -> ImageTarget {
        match plan_of(sql) {
            ImagePlan::Target(t) => t,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn writes_are_planned_by_their_target_and_returning() {
        let t = target("INSERT INTO public.orders AS o (id) VALUES (1) RETURNING id");
        assert_eq!(
            (t.op, t.table.as_str(), t.reference.as_str(), t.returning),
            (Op::Insert, "public.orders", "o", true)
        );
        let t = target("UPDATE \"Jobs\" SET worker = 1, (a, b) = (1, 2) WHERE id = (SELECT id FROM \"Jobs\" ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)");
        assert_eq!((t.op, t.reference.as_str()), (Op::Update, "\"Jobs\""));
        assert_eq!(t.assigned, ["worker", "a", "b"]);
        let t = target("DELETE FROM q USING r WHERE q.id = r.id");
        assert_eq!((t.op, t.returning), (Op::Delete, false));
        let t = target("INSERT INTO k VALUES (1) ON CONFLICT (id) DO UPDATE SET Hits = k.hits + 1");
        assert_eq!(
            (t.op, t.assigned.clone()),
            (Op::Upsert, vec!["hits".to_string()])
        );
        let t = target("WITH s AS (SELECT 1 AS id) INSERT INTO t SELECT id FROM s");
        assert_eq!(t.op, Op::Insert);
        let c = crate::engine::Classifier::new(crate::engine::SqlDialect::Postgres, 16);
        for (sql, risk) in [
            (
                "DO $$ BEGIN INSERT INTO t VALUES (random()); END $$",
                UNREAD,
            ),
            ("EXECUTE ins(1)", "EXECUTE of a statement prepared by SQL"),
            (
                "SELECT lo_from_bytea(0, 'x')",
                "a large-object function (the object's id and bytes may differ)",
            ),
        ] {
            let class = c.classify(sql);
            assert_eq!(class.image.statement_risk(), Some(risk), "{sql}: {class:?}");
        }
        for sql in [
            "WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
            "SELECT f()",
            "INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)",
            "TRUNCATE a",
        ] {
            assert!(matches!(plan_of(sql), ImagePlan::Statement(_)), "{sql}");
        }
    }

    #[test]
    fn the_image_goes_after_the_last_token() {
        let t = target("UPDATE t SET a = 1");
        assert_eq!(
            capture_text("UPDATE t SET a = 1 ;\n", &t).unwrap(),
            "UPDATE t SET a = 1 RETURNING ROW(t.*)::text ;\n"
        );
        assert_eq!(
            capture_text("UPDATE t SET a = '--;' -- done\n", &t).unwrap(),
            "UPDATE t SET a = '--;' RETURNING ROW(t.*)::text -- done\n"
        );
        assert_eq!(
            capture_text("UPDATE t SET a = 'é' /* x */;", &t).unwrap(),
            "UPDATE t SET a = 'é' RETURNING ROW(t.*)::text /* x */;"
        );
        let r = target("INSERT INTO t VALUES (1) RETURNING id");
        assert_eq!(
            capture_text("INSERT INTO t VALUES (1) RETURNING id", &r).unwrap(),
            "INSERT INTO t VALUES (1) RETURNING id, ROW(t.*)::text"
        );
        assert_eq!(capture_text("UPDATE t SET a = 1; SELECT 1 -- x", &t), None);
    }

    #[test]
    fn counts_that_disagree_are_named() {
        let e = Expect {
            op: Op::Update,
            rows: 3,
            table: "t".into(),
            fingerprint: "f".into(),
        };
        assert_eq!(e.mismatch(0, "new"), None);
        assert!(e
            .mismatch(1, "new")
            .unwrap()
            .contains("1 of them were missing on new"));
        let d = Expect {
            op: Op::Delete,
            ..e
        };
        assert!(d.mismatch(2, "new").unwrap().contains("new deleted 2"));
        assert_eq!(d.mismatch(3, "new"), None);
    }
}
