//! Old and new schemas (`[mapping]`): a mirrored write on a mapped table is
//! rewritten for `new` through its syntax tree — the table renamed, columns
//! renamed, dropped columns left out, computed columns added from the old
//! row's values. A statement the mapping cannot translate is never run
//! wrong on the mirror: the caller records it (or refuses it under
//! `mirror.on_unsafe = "fail"`) and runs it on the authority alone.

pub mod catalog;
pub mod rows;

use crate::backend::rows::Rows;
use crate::engine::SqlDialect;
use sqlparser::ast::{
    AssignmentTarget, ConflictTarget, Expr, Ident, ObjectName, ObjectNamePart, OnConflictAction,
    OnInsert, SelectItem, SetExpr, Statement, TableObject,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::LazyLock;
use turnout_config::Mapping;
use turnout_control::Side;

/// One mapped table, ready to rewrite with.
#[derive(Debug, Clone)]
struct Table {
    new: String,
    renames: HashMap<String, String>,
    dropped: HashSet<String>,
    /// New columns and their value, an expression over old columns.
    computed: Vec<(String, Expr)>,
}

/// The mapping, parsed.
#[derive(Debug, Clone, Default)]
pub struct SchemaMap {
    /// By old table name, lower-case.
    tables: HashMap<String, Table>,
    dialect: Option<SqlDialect>,
    /// Old's columns of the mapped tables, once checked against old's
    /// catalog ([`catalog::check`]).
    old_columns: catalog::OldColumns,
    /// `mapping.after_finalize = "translate"`: statements keep being
    /// translated in the finalized phase.
    keep_after_finalize: bool,
}

/// New's column names of one table, back to old's.
#[derive(Debug, Clone, Default)]
pub struct ColumnsBack {
    renamed: HashMap<String, String>,
    new_only: HashSet<String>,
    /// Old's columns, when known.
    old: Option<HashSet<String>>,
}

impl ColumnsBack {
    /// Catalog rows of new's table whose `column` names a column, under
    /// old's names; rows of columns old does not have are left out.
    pub fn rows_under_old_names(&self, rows: Rows, column: &str) -> Rows {
        rows.map_column(column, |name| self.old_name(name))
    }

    /// Old's name of new's `column`; `None` when old has no such column.
    pub fn old_name(&self, column: &str) -> Option<String> {
        let k = column.to_lowercase();
        if self.new_only.contains(&k) {
            return None;
        }
        let name = self
            .renamed
            .get(&k)
            .cloned()
            .unwrap_or_else(|| column.to_string());
        match &self.old {
            Some(old) if !old.contains(&name.to_lowercase()) => None,
            _ => Some(name),
        }
    }
}

/// What the mirror runs for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translation {
    /// No mapped table: the statement as it is.
    Unchanged,
    /// The statement for `new`.
    Sql(String),
    /// Nothing to do on `new` (an UPDATE of dropped columns only).
    Skip,
}

fn dialect_of(d: SqlDialect) -> Box<dyn Dialect> {
    match d {
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
        SqlDialect::Mysql => Box::new(MySqlDialect {}),
    }
}

fn last_part(name: &ObjectName) -> Option<&Ident> {
    match name.0.last()? {
        ObjectNamePart::Identifier(i) => Some(i),
        _ => None,
    }
}

fn last_part_mut(name: &mut ObjectName) -> Option<&mut Ident> {
    match name.0.last_mut()? {
        ObjectNamePart::Identifier(i) => Some(i),
        _ => None,
    }
}

/// How an identifier is compared: unquoted names fold to lower case.
fn key(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

impl SchemaMap {
    /// Parses the config's mapping (computed expressions in `dialect`).
    pub fn new(mapping: &Mapping, dialect: SqlDialect) -> Result<SchemaMap, Vec<String>> {
        let d = dialect_of(dialect);
        let mut tables = HashMap::new();
        let mut errors = Vec::new();
        for (i, t) in mapping.tables.iter().enumerate() {
            let mut computed = Vec::new();
            for (column, text) in &t.computed {
                match Parser::new(d.as_ref())
                    .try_with_sql(text)
                    .and_then(|mut p| p.parse_expr())
                {
                    Ok(e) => computed.push((column.clone(), e)),
                    Err(e) => errors.push(format!(
                        "mapping.tables[{i}].computed.{column}: not an SQL expression: {e}"
                    )),
                }
            }
            tables.insert(
                t.old.to_lowercase(),
                Table {
                    new: t.new_name().to_string(),
                    renames: t
                        .columns
                        .iter()
                        .map(|(a, b)| (a.to_lowercase(), b.clone()))
                        .collect(),
                    dropped: t.drop.iter().map(|c| c.to_lowercase()).collect(),
                    computed,
                },
            );
        }
        if errors.is_empty() {
            Ok(SchemaMap {
                tables,
                dialect: Some(dialect),
                old_columns: Default::default(),
                keep_after_finalize: mapping.after_finalize
                    == turnout_config::AfterFinalize::Translate,
            })
        } else {
            Err(errors)
        }
    }

    pub fn is_identity(&self) -> bool {
        self.tables.is_empty()
    }

    /// Whether sessions keep translating once the phase is finalized
    /// (`mapping.after_finalize = "translate"` and a mapping to apply).
    pub fn translates_after_finalize(&self) -> bool {
        self.keep_after_finalize && !self.is_identity()
    }

    /// This mapping, knowing old's columns of its tables (from
    /// [`catalog::check`]).
    pub fn with_old_columns(mut self, columns: catalog::OldColumns) -> SchemaMap {
        self.old_columns = columns;
        self
    }

    /// The mapping toward `side`. Clients write for `old`, so toward `old`
    /// nothing is translated; toward `new`, this mapping.
    pub fn toward(&self, side: Side) -> &SchemaMap {
        static IDENTITY: LazyLock<SchemaMap> = LazyLock::new(SchemaMap::default);
        match side {
            Side::New => self,
            Side::Old => &IDENTITY,
        }
    }

    /// Old's table `table` with `columns` as new has it: new's table name,
    /// the columns both sides have (old's names) and their names on new.
    pub fn compared(&self, table: &str, columns: &[String]) -> (String, Vec<String>, Vec<String>) {
        let Some(t) = self.tables.get(&table.to_lowercase()) else {
            return (table.to_string(), columns.to_vec(), columns.to_vec());
        };
        let kept: Vec<String> = columns
            .iter()
            .filter(|c| !t.dropped.contains(&c.to_lowercase()))
            .cloned()
            .collect();
        let on_new = kept
            .iter()
            .map(|c| {
                t.renames
                    .get(&c.to_lowercase())
                    .cloned()
                    .unwrap_or_else(|| c.clone())
            })
            .collect();
        (t.new.clone(), kept, on_new)
    }

    /// The name on the other side of the table called `table` (unqualified)
    /// on `side`: the same when it is not mapped.
    pub fn counterpart(&self, table: &str, side: Side) -> String {
        let found = match side {
            Side::Old => self
                .tables
                .get(&table.to_lowercase())
                .map(|t| t.new.clone()),
            Side::New => self
                .tables
                .iter()
                .find(|(_, t)| t.new.eq_ignore_ascii_case(table))
                .map(|(old, _)| old.clone()),
        };
        found.unwrap_or_else(|| table.to_string())
    }

    /// What `table` (named as a client names it, perhaps schema-qualified)
    /// is called on `new`, with each of new's column names mapped to old's
    /// (`None` for the columns new alone has). `None` when not mapped.
    pub fn table_on_new(&self, table: &str) -> Option<(String, ColumnsBack)> {
        let (schema, name) = match table.rsplit_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, table),
        };
        let unquoted = name.trim_matches('"').trim_matches('`');
        let k = if name != unquoted {
            unquoted.to_string()
        } else {
            unquoted.to_lowercase()
        };
        let t = self.tables.get(&k)?;
        let new = match schema {
            Some(s) => format!("{s}.{}", t.new),
            None => t.new.clone(),
        };
        let back = ColumnsBack {
            renamed: t
                .renames
                .iter()
                .map(|(old, new)| (new.to_lowercase(), old.clone()))
                .collect(),
            new_only: t.computed.iter().map(|(c, _)| c.to_lowercase()).collect(),
            old: self.old_columns.get(&k).cloned(),
        };
        Some((new, back))
    }

    /// The statement(s) of `sql` rewritten for `new`. `Err`: why they
    /// cannot be.
    pub fn translate(&self, sql: &str) -> Result<Translation, String> {
        let Some(dialect) = self.dialect.filter(|_| !self.is_identity()) else {
            return Ok(Translation::Unchanged);
        };
        let mut statements = Parser::parse_sql(dialect_of(dialect).as_ref(), sql)
            .map_err(|e| format!("the statement could not be parsed to map it: {e}"))?;
        let mut changed = false;
        let mut kept = Vec::new();
        for mut s in statements.drain(..) {
            match self.rewrite(&mut s)? {
                Some(true) => {
                    changed = true;
                    kept.push(s);
                }
                Some(false) => kept.push(s),
                None => changed = true, // nothing of it on new
            }
        }
        if !changed {
            return Ok(Translation::Unchanged);
        }
        if kept.is_empty() {
            return Ok(Translation::Skip);
        }
        Ok(Translation::Sql(
            kept.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }

    /// Why `new` cannot run the client's `sql` (written for old) through
    /// this mapping; `None` when it can. `prepared`: its parameters must
    /// stay as they are ([`Self::translate_prepared`]).
    pub fn not_for_new(&self, sql: &str, prepared: bool) -> Option<String> {
        let t = if prepared {
            self.translate_prepared(sql)
        } else {
            self.translate(sql)
        };
        match t {
            Ok(Translation::Skip) => Some("it only names columns new does not have".into()),
            Ok(_) => None,
            Err(e) => Some(e),
        }
    }

    /// [`Self::translate`] for a prepared statement, whose values the
    /// client binds by position: its parameters must stay the same (a
    /// dropped or computed column must not take one away or add one).
    pub fn translate_prepared(&self, sql: &str) -> Result<Translation, String> {
        let t = self.translate(sql)?;
        if let Translation::Sql(mapped) = &t {
            if self.parameters(mapped) != self.parameters(sql) {
                return Err("the statement's parameters would change for new (a dropped or computed column takes one); not translated".into());
            }
        }
        Ok(t)
    }

    /// `sql` as `new` runs it: translated, or as it is (for statements
    /// already found translatable).
    pub fn translated_or_same(&self, sql: &str) -> String {
        match self.translate(sql) {
            Ok(Translation::Sql(mapped)) => mapped,
            _ => sql.to_string(),
        }
    }

    /// The parameter placeholders (`$1`, `?`) of `sql`, sorted.
    fn parameters(&self, sql: &str) -> Vec<String> {
        let Some(dialect) = self.dialect else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Ok(statements) = Parser::parse_sql(dialect_of(dialect).as_ref(), sql) {
            let _ = sqlparser::ast::visit_expressions(&statements, |e| {
                if let Expr::Value(v) = e {
                    if let sqlparser::ast::Value::Placeholder(p) = &v.value {
                        out.push(p.clone());
                    }
                }
                ControlFlow::<()>::Continue(())
            });
        }
        out.sort();
        out
    }

    /// The mapped table `s` names, if it names exactly one.
    fn mapped_table(&self, s: &Statement) -> Result<Option<(String, &Table)>, String> {
        let mut found: Vec<String> = Vec::new();
        let _ = sqlparser::ast::visit_relations(s, |name| {
            if let Some(i) = last_part(name) {
                let k = key(i);
                if self.tables.contains_key(&k) && !found.contains(&k) {
                    found.push(k);
                }
            }
            ControlFlow::<()>::Continue(())
        });
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(self.tables.get(one).map(|t| (one.clone(), t))),
            _ => Err(format!(
                "the statement touches several mapped tables ({}); not translated",
                found.join(", ")
            )),
        }
    }

    /// Rewrites one statement: `Some(changed)`, or `None` when nothing of
    /// it remains for `new`.
    fn rewrite(&self, s: &mut Statement) -> Result<Option<bool>, String> {
        if let Statement::Copy {
            source: sqlparser::ast::CopySource::Table { table_name, .. },
            ..
        } = s
        {
            if let Some(k) = last_part(table_name).map(key) {
                if self.tables.contains_key(&k) {
                    return Err(format!(
                        "COPY on the mapped table {k} is not translated (its rows are in old's column layout)"
                    ));
                }
            }
        }
        let Some((old_name, table)) = self.mapped_table(s)? else {
            return Ok(Some(false));
        };
        let table = table.clone();
        match s {
            Statement::Query(q) => keep_column_names(q, &table)?,
            // RETURNING answers the client under its own column names.
            Statement::Insert(sqlparser::ast::Insert {
                returning: Some(r), ..
            })
            | Statement::Update(sqlparser::ast::Update {
                returning: Some(r), ..
            })
            | Statement::Delete(sqlparser::ast::Delete {
                returning: Some(r), ..
            }) => {
                alias_renamed(r, &table);
            }
            _ => {}
        }
        // Columns in expressions (WHERE, SET values, RETURNING, ...).
        let mut bad = None;
        let _ = sqlparser::ast::visit_expressions_mut(s, |e| {
            let ident = match e {
                Expr::Identifier(i) => Some(i),
                Expr::CompoundIdentifier(parts) => parts.last_mut(),
                _ => None,
            };
            if let Some(i) = ident {
                let k = key(i);
                if table.dropped.contains(&k) {
                    bad = Some(format!(
                        "uses column {old_name}.{}, which new does not have",
                        i.value
                    ));
                    return ControlFlow::Break(());
                }
                if let Some(n) = table.renames.get(&k) {
                    i.value = n.clone();
                }
            }
            ControlFlow::Continue(())
        });
        // The table itself.
        let _ = sqlparser::ast::visit_relations_mut(s, |name| {
            if let Some(i) = last_part_mut(name) {
                if key(i) == old_name {
                    i.value = table.new.clone();
                }
            }
            ControlFlow::<()>::Continue(())
        });
        match s {
            Statement::Insert(insert) => {
                if !matches!(insert.table, TableObject::TableName(_)) {
                    return Err("INSERT into a table function cannot be mapped".into());
                }
                insert_columns(insert, &table, &old_name, bad.take())?;
            }
            Statement::Update(update) => {
                if let Some(b) = bad {
                    return Err(b);
                }
                let before = update.assignments.len();
                assignments(&mut update.assignments, &table)?;
                if update.assignments.is_empty() && before > 0 {
                    return Ok(None);
                }
            }
            _ => {
                if let Some(b) = bad {
                    return Err(b);
                }
            }
        }
        Ok(Some(true))
    }
}

/// A read's result columns keep their old names on `new` (a renamed
/// column is selected under its old name), so the two sides' answers
/// compare column by column. `SELECT *` cannot keep them.
fn keep_column_names(q: &mut sqlparser::ast::Query, table: &Table) -> Result<(), String> {
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Err("a set operation (UNION, ...) on a mapped table is not translated".into());
    };
    if alias_renamed(&mut select.projection, table) {
        return Err(
            "SELECT * on a mapped table cannot be compared column by column; name the columns"
                .into(),
        );
    }
    Ok(())
}

/// Gives each renamed column of `items` its old name as an alias, so the
/// answer's column names stay the client's. `true` when `items` has a `*`
/// (whose columns are new's own).
fn alias_renamed(items: &mut [SelectItem], table: &Table) -> bool {
    let mut wildcard = false;
    for item in items.iter_mut() {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => wildcard = true,
            SelectItem::UnnamedExpr(e) => {
                let ident = match e {
                    Expr::Identifier(i) => Some(i.clone()),
                    Expr::CompoundIdentifier(parts) => parts.last().cloned(),
                    _ => None,
                };
                if let Some(i) = ident.filter(|i| table.renames.contains_key(&key(i))) {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: i,
                    };
                }
            }
            SelectItem::ExprWithAlias { .. } | SelectItem::ExprWithAliases { .. } => {}
        }
    }
    wildcard
}

/// An INSERT's column list and rows through the mapping.
fn insert_columns(
    insert: &mut sqlparser::ast::Insert,
    table: &Table,
    old_name: &str,
    bad: Option<String>,
) -> Result<(), String> {
    let names: Vec<String> = insert
        .columns
        .iter()
        .map(|c| last_part(c).map(key).unwrap_or_default())
        .collect();
    let changes_shape = !table.dropped.is_empty() || !table.computed.is_empty();
    if names.is_empty() && (changes_shape || !table.renames.is_empty()) {
        return Err(format!(
            "INSERT INTO {old_name} without a column list cannot be mapped; name the columns"
        ));
    }
    // Which positions stay, and the computed columns' values per row.
    let keep: Vec<bool> = names.iter().map(|n| !table.dropped.contains(n)).collect();
    let rows: Option<&mut Vec<sqlparser::ast::Parens<Vec<Expr>>>> =
        match insert.source.as_deref_mut().map(|q| q.body.as_mut()) {
            Some(SetExpr::Values(v)) => Some(&mut v.rows),
            _ => None,
        };
    match rows {
        None if changes_shape => {
            return Err(format!(
                "INSERT INTO {old_name} ... SELECT cannot be mapped when columns are dropped or computed"
            ))
        }
        None => {}
        Some(rows) => {
            for row in rows.iter_mut() {
                let values = &mut row.content;
                if values.len() != names.len() {
                    return Err("an INSERT row has another number of values than columns".into());
                }
                let mut extra = Vec::new();
                for (column, expr) in &table.computed {
                    extra.push((column.clone(), substitute(expr, &names, values, old_name)?));
                }
                let mut i = 0;
                values.retain(|_| {
                    let k = keep[i];
                    i += 1;
                    k
                });
                values.extend(extra.into_iter().map(|(_, v)| v));
            }
        }
    }
    // The dropped columns' values had identifiers renamed above only if
    // they were expressions; a dropped column in the list is fine, its
    // values are gone.
    if let Some(b) = bad {
        if !names.iter().any(|n| table.dropped.contains(n)) {
            return Err(b);
        }
    }
    let mut i = 0;
    insert.columns.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
    for c in insert.columns.iter_mut() {
        if let Some(id) = last_part_mut(c) {
            if let Some(n) = table.renames.get(&key(id)) {
                id.value = n.clone();
            }
        }
    }
    for (column, _) in &table.computed {
        insert
            .columns
            .push(ObjectName::from(vec![Ident::new(column.clone())]));
    }
    if let Some(OnInsert::OnConflict(c)) = &mut insert.on {
        if let Some(ConflictTarget::Columns { columns, .. }) = &mut c.conflict_target {
            for id in columns.iter_mut() {
                if let Some(n) = table.renames.get(&key(id)) {
                    id.value = n.clone();
                }
            }
        }
        if let OnConflictAction::DoUpdate(u) = &mut c.action {
            assignments(&mut u.assignments, table)?;
        }
    }
    if let Some(OnInsert::DuplicateKeyUpdate(a)) = &mut insert.on {
        assignments(a, table)?;
    }
    Ok(())
}

/// SET targets through the mapping: renamed, dropped ones left out, and a
/// computed column set again when a column it is computed from changes.
fn assignments(list: &mut Vec<sqlparser::ast::Assignment>, table: &Table) -> Result<(), String> {
    // What this statement assigns, by old column name (values are already
    // in new's terms).
    let mut assigned: HashMap<String, Expr> = HashMap::new();
    for a in list.iter() {
        if let AssignmentTarget::ColumnName(name) = &a.target {
            if let Some(id) = last_part(name) {
                assigned.insert(key(id), a.value.clone());
            }
        }
    }
    let mut out = Vec::with_capacity(list.len());
    for mut a in list.drain(..) {
        match &mut a.target {
            AssignmentTarget::ColumnName(name) => {
                let Some(id) = last_part_mut(name) else {
                    out.push(a);
                    continue;
                };
                let k = key(id);
                if table.dropped.contains(&k) {
                    continue;
                }
                if let Some(n) = table.renames.get(&k) {
                    id.value = n.clone();
                }
                out.push(a);
            }
            AssignmentTarget::Tuple(_) => {
                return Err("a tuple assignment cannot be mapped".into());
            }
        }
    }
    for (column, expr) in &table.computed {
        let mut inputs = Vec::new();
        let _ = sqlparser::ast::visit_expressions(expr, |e| {
            if let Expr::Identifier(i) = e {
                inputs.push(key(i));
            }
            ControlFlow::<()>::Continue(())
        });
        if !inputs.iter().any(|i| assigned.contains_key(i)) {
            continue;
        }
        // The new value from what is assigned, the rest from the row on new.
        let mut value = expr.clone();
        let mut missing = None;
        let _ = sqlparser::ast::visit_expressions_mut(&mut value, |e| {
            if let Expr::Identifier(i) = e {
                let k = key(i);
                if let Some(v) = assigned.get(&k) {
                    *e = Expr::Nested(Box::new(v.clone()));
                } else if table.dropped.contains(&k) {
                    missing = Some(i.value.clone());
                    return ControlFlow::Break(());
                } else if let Some(n) = table.renames.get(&k) {
                    i.value = n.clone();
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(m) = missing {
            return Err(format!(
                "computed column {column} needs {m}, which new does not have and the statement does not set"
            ));
        }
        out.push(sqlparser::ast::Assignment {
            target: AssignmentTarget::ColumnName(ObjectName::from(vec![Ident::new(
                column.clone(),
            )])),
            value,
        });
    }
    *list = out;
    Ok(())
}

/// `expr` with each old column replaced by that column's value in the row.
fn substitute(expr: &Expr, names: &[String], values: &[Expr], table: &str) -> Result<Expr, String> {
    let mut e = expr.clone();
    let mut missing = None;
    let _ = sqlparser::ast::visit_expressions_mut(&mut e, |x| {
        if let Expr::Identifier(i) = x {
            match names.iter().position(|n| *n == key(i)) {
                Some(p) => *x = Expr::Nested(Box::new(values[p].clone())),
                None => {
                    missing = Some(i.value.clone());
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    match missing {
        Some(m) => Err(format!(
            "a computed column needs {table}.{m}, which the INSERT does not set"
        )),
        None => Ok(e),
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
