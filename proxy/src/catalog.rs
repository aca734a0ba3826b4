//! Reading both live catalogs for the schema mapping and `turnout plan`:
//! the columns, keys and defaults of each side's tables, and the mapping
//! checked against them (`crate::mapping::catalog::problems`).

use crate::backend::rows::{RowError, Rows};
use crate::backend::transport::Backends;
use crate::backend::QueryError;
use crate::mapping::catalog::{problems, Catalog, Column, OldColumns};
use turnout_config::{Mapping, Protocol};
use turnout_control::Side;

/// Why a side's catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Reaching the side, or its answer to a catalog query.
    #[error("{side}: {source}")]
    Query {
        side: Side,
        #[source]
        source: QueryError,
    },
    /// An answer without what the query asked for.
    #[error("{side}: the catalog's answer: {source}")]
    Answer {
        side: Side,
        #[source]
        source: RowError,
    },
}

/// Reads what `names` are on `side`.
pub async fn read(
    backends: &Backends,
    side: Side,
    names: &[String],
) -> Result<Catalog, CatalogError> {
    if names.is_empty() {
        return Ok(Catalog::default());
    }
    read_filtered(backends, side, Some(names)).await
}

/// Reads every table of `side` (its search path, or its database), with
/// estimated sizes and foreign keys.
pub async fn read_all(backends: &Backends, side: Side) -> Result<Catalog, CatalogError> {
    let mut catalog = read_filtered(backends, side, None).await?;
    let (rows_sql, fk_sql) = match backends.protocol {
        Protocol::Postgres => (
            "SELECT c.relname AS table_name, c.reltuples::bigint::text AS estimated_rows \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname = ANY (current_schemas(false))",
            "SELECT kcu.table_name AS table_name, kcu.column_name AS column_name, \
             ccu.table_name AS referenced_table \
             FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name \
               AND kcu.table_schema = tc.table_schema \
             JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name \
               AND ccu.table_schema = tc.table_schema \
             WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = ANY (current_schemas(false)) \
             ORDER BY 1, 2",
        ),
        Protocol::Mysql => (
            "SELECT TABLE_NAME AS table_name, TABLE_ROWS AS estimated_rows \
             FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
            "SELECT TABLE_NAME AS table_name, COLUMN_NAME AS column_name, \
             REFERENCED_TABLE_NAME AS referenced_table \
             FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY 1, 2",
        ),
    };
    let mut answers = queries(backends, side, &[rows_sql, fk_sql])
        .await?
        .into_iter();
    let (rows, fks) = (
        answers.next().unwrap_or_default(),
        answers.next().unwrap_or_default(),
    );
    let read = |source: RowError| CatalogError::Answer { side, source };
    for r in rows.iter() {
        let table = r.str("table_name").map_err(read)?;
        // An estimate the server has not made yet (NULL, or -1) is 0.
        let n: i64 = r.parse("estimated_rows").map_err(read)?.unwrap_or(0);
        catalog.rows.insert(table.to_string(), n.max(0));
    }
    for r in fks.iter() {
        catalog.foreign_keys.push((
            r.str("table_name").map_err(read)?.to_string(),
            r.str("column_name").map_err(read)?.to_string(),
            r.str("referenced_table").map_err(read)?.to_string(),
        ));
    }
    Ok(catalog)
}

/// The rows of each query.
type Answers = Vec<Rows>;

/// Runs catalog queries on `side` over one connection; their rows as text.
async fn queries(backends: &Backends, side: Side, sqls: &[&str]) -> Result<Answers, CatalogError> {
    let query = |source: QueryError| CatalogError::Query { side, source };
    let mut out = Vec::with_capacity(sqls.len());
    match backends.protocol {
        Protocol::Postgres => {
            let mut conn = crate::backend::pg::open_simple(backends.target(side))
                .await
                .map_err(query)?;
            for sql in sqls {
                out.push(
                    crate::backend::pg::run(&mut conn, sql, side)
                        .await
                        .map_err(query)?,
                );
            }
        }
        Protocol::Mysql => {
            let (mut conn, _) = crate::backend::mysql::open_simple(backends.target(side))
                .await
                .map_err(query)?;
            for sql in sqls {
                out.push(
                    crate::backend::mysql::rows(&mut conn, sql)
                        .await
                        .map_err(query)?,
                );
            }
        }
    }
    Ok(out)
}

async fn read_filtered(
    backends: &Backends,
    side: Side,
    names: Option<&[String]>,
) -> Result<Catalog, CatalogError> {
    let list = names
        .unwrap_or_default()
        .iter()
        .map(|n| crate::backend::pg::literal(n))
        .collect::<Vec<_>>()
        .join(", ");
    let (pg_filter, my_filter) = match names {
        Some(_) => (
            format!("AND table_name IN ({list})"),
            format!("AND TABLE_NAME IN ({list})"),
        ),
        None => (String::new(), String::new()),
    };
    let (columns_sql, keys_sql) = match backends.protocol {
        Protocol::Postgres => (
            format!(
                "SELECT table_name, column_name, \
                 (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
                  WHERE a.attrelid = (quote_ident(c.table_schema) || '.' || quote_ident(c.table_name))::regclass \
                    AND a.attname = c.column_name) AS data_type, \
                 is_nullable, \
                 CASE WHEN column_default IS NULL AND is_identity = 'NO' THEN 'NO' ELSE 'YES' END \
                   AS has_default, \
                 column_default \
                 FROM information_schema.columns c \
                 WHERE table_schema = ANY (current_schemas(false)) {pg_filter} \
                 AND table_name IN (SELECT table_name FROM information_schema.tables \
                   WHERE table_schema = ANY (current_schemas(false)) AND table_type = 'BASE TABLE') \
                 ORDER BY table_name, ordinal_position"
            ),
            format!(
                "SELECT table_name AS table_name FROM information_schema.table_constraints \
                 WHERE constraint_type = 'PRIMARY KEY' AND table_schema = ANY (current_schemas(false)) \
                 {pg_filter}"
            ),
        ),
        Protocol::Mysql => (
            format!(
                "SELECT TABLE_NAME AS table_name, COLUMN_NAME AS column_name, \
                 COLUMN_TYPE AS data_type, IS_NULLABLE AS is_nullable, \
                 CASE WHEN COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE '%auto_increment%' THEN 'NO' ELSE 'YES' END \
                   AS has_default, \
                 COLUMN_DEFAULT AS column_default \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() {my_filter} \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION"
            ),
            format!(
                "SELECT TABLE_NAME AS table_name FROM information_schema.TABLE_CONSTRAINTS \
                 WHERE CONSTRAINT_TYPE = 'PRIMARY KEY' AND TABLE_SCHEMA = DATABASE() \
                 {my_filter}"
            ),
        ),
    };
    let mut answers = queries(backends, side, &[&columns_sql, &keys_sql])
        .await?
        .into_iter();
    let (columns, keys) = (
        answers.next().unwrap_or_default(),
        answers.next().unwrap_or_default(),
    );
    let mut catalog = Catalog::default();
    let read = |source: RowError| CatalogError::Answer { side, source };
    for row in columns.iter() {
        let table = row.str("table_name").map_err(read)?;
        let entry = catalog.tables.entry(table.to_string()).or_default();
        entry.0.push(Column {
            name: row.str("column_name").map_err(read)?.to_string(),
            data_type: row.str("data_type").map_err(read)?.to_ascii_lowercase(),
            nullable: row.str("is_nullable").map_err(read)? == "YES",
            has_default: row.str("has_default").map_err(read)? == "YES",
            default: row
                .text("column_default")
                .map_err(read)?
                .map(str::to_string),
        });
    }
    for row in keys.iter() {
        let table = row.str("table_name").map_err(read)?;
        if let Some(t) = catalog.tables.get_mut(table) {
            t.1 = true;
        }
    }
    Ok(catalog)
}

/// Reads both catalogs and checks `mapping` against them: old's columns
/// of the mapped tables, or every problem found.
pub async fn check(backends: &Backends, mapping: &Mapping) -> Result<OldColumns, Vec<String>> {
    let old_names: Vec<String> = mapping.tables.iter().map(|t| t.old.clone()).collect();
    let new_names: Vec<String> = mapping
        .tables
        .iter()
        .map(|t| t.new_name().to_string())
        .collect();
    let (old, new) = tokio::join!(
        read(backends, Side::Old, &old_names),
        read(backends, Side::New, &new_names)
    );
    match (old, new) {
        (Ok(o), Ok(n)) => {
            let found = problems(mapping, &o, &n);
            if !found.is_empty() {
                return Err(found);
            }
            Ok(o.tables
                .iter()
                .map(|(table, (cols, _))| {
                    let names = cols.iter().map(|c| c.name.to_lowercase()).collect();
                    (table.to_lowercase(), names)
                })
                .collect())
        }
        (o, n) => Err([o.err(), n.err()]
            .into_iter()
            .flatten()
            .map(|e| format!("catalog could not be read: {e}"))
            .collect()),
    }
}
