//! What backfill and verify say to each database: one connection type over
//! both protocols, and the SQL each dialect needs (keyset batches under a
//! env row lock, upserts, order-independent range checksums).

use crate::backend::rows::{RowError, Rows as Named};
use crate::backend::transport::Backends;
use turnout_config::Protocol;
use turnout_control::Side;

/// The longest one statement of backfill or verify waits for its answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Rows as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// A connection of turnout's own to one side.
pub enum Conn {
    Pg(crate::wire::pg_framed::Framed),
    My(crate::wire::my_packet::Packets),
}

impl Conn {
    pub async fn open(backends: &Backends, side: Side) -> Result<Conn, String> {
        match backends.protocol {
            Protocol::Postgres => crate::backend::pg::open_simple(backends.target(side))
                .await
                .map(Conn::Pg)
                .map_err(|e| format!("{side}: {e}")),
            Protocol::Mysql => {
                let (conn, _version) =
                    crate::backend::mysql::open_simple(backends.target(side)).await?;
                Ok(Conn::My(conn))
            }
        }
    }

    /// Runs one statement; its rows as they came (the columns the caller
    /// listed, in order), or its error naming `side`.
    pub async fn rows(&mut self, sql: &str, side: Side) -> Result<Rows, String> {
        self.query(sql, side).await.map(Named::into_data)
    }

    /// Runs one statement; its rows, read by column name, or its error
    /// naming `side`. A side that does not answer within
    /// [`ANSWER_TIMEOUT`] is an error (the connection is then replaced by
    /// the caller).
    pub async fn query(&mut self, sql: &str, side: Side) -> Result<Named, String> {
        let run = async {
            match self {
                Conn::Pg(c) => Ok(crate::backend::pg::run(c, sql, side).await?),
                Conn::My(c) => crate::backend::mysql::rows(c, sql)
                    .await
                    .map_err(|e| format!("on {side}: {e}")),
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{side} did not answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ))
            })
    }
}

/// The SQL dialect of both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Pg,
    My,
}

/// One table as backfill and verify see it: its columns in order and its
/// primary key's columns in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    pub name: String,
    pub columns: Vec<String>,
    pub key: Vec<String>,
    pub estimated_rows: i64,
}

impl Dialect {
    pub fn of(protocol: Protocol) -> Dialect {
        match protocol {
            Protocol::Postgres => Dialect::Pg,
            Protocol::Mysql => Dialect::My,
        }
    }

    pub fn ident(self, name: &str) -> String {
        match self {
            Dialect::Pg => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::My => format!("`{}`", name.replace('`', "``")),
        }
    }

    pub fn literal(self, value: &Option<String>) -> String {
        let Some(v) = value else {
            return "NULL".into();
        };
        match self {
            Dialect::Pg => format!("'{}'", v.replace('\'', "''")),
            Dialect::My => {
                let mut out = String::with_capacity(v.len() + 2);
                out.push('\'');
                for c in v.chars() {
                    match c {
                        '\'' => out.push_str("''"),
                        '\\' => out.push_str("\\\\"),
                        '\0' => out.push_str("\\0"),
                        c => out.push(c),
                    }
                }
                out.push('\'');
                out
            }
        }
    }

    pub(crate) fn list(self, names: &[String]) -> String {
        names
            .iter()
            .map(|n| self.ident(n))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every base table of the current schema: (table, column, position in
    /// the primary key or 0, estimated rows), in column order.
    pub fn tables_query(self) -> &'static str {
        match self {
            Dialect::Pg => {
                "SELECT c.relname::text AS table_name, a.attname::text AS column_name, \
                        COALESCE(array_position(i.indkey::int2[], a.attnum) \
                                 - array_lower(i.indkey::int2[], 1) + 1, 0)::text AS key_position, \
                        GREATEST(c.reltuples, 0)::bigint::text AS estimated_rows \
                 FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
                      AND NOT a.attisdropped AND a.attgenerated = '' \
                 LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                   AND n.nspname = current_schema() \
                 ORDER BY c.relname, a.attnum"
            }
            Dialect::My => {
                "SELECT c.TABLE_NAME AS table_name, c.COLUMN_NAME AS column_name, \
                        COALESCE(k.ORDINAL_POSITION, 0) AS key_position, \
                        COALESCE(t.TABLE_ROWS, 0) AS estimated_rows \
                 FROM information_schema.COLUMNS c \
                 JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA \
                      AND t.TABLE_NAME = c.TABLE_NAME AND t.TABLE_TYPE = 'BASE TABLE' \
                 LEFT JOIN information_schema.KEY_COLUMN_USAGE k \
                      ON k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME \
                      AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY' \
                 WHERE c.TABLE_SCHEMA = DATABASE() AND c.EXTRA NOT LIKE '%GENERATED%' \
                 ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION"
            }
        }
    }

    /// Foreign keys between tables of the schema: each row a referencing
    /// table (`child`) and the table it references (`parent`).
    pub fn foreign_keys_query(self) -> &'static str {
        match self {
            Dialect::Pg => {
                "SELECT DISTINCT cl.relname::text AS child, pl.relname::text AS parent \
                 FROM pg_constraint c \
                 JOIN pg_class cl ON cl.oid = c.conrelid \
                 JOIN pg_class pl ON pl.oid = c.confrelid \
                 JOIN pg_namespace n ON n.oid = cl.relnamespace \
                 WHERE c.contype = 'f' AND c.conrelid <> c.confrelid \
                   AND n.nspname = current_schema()"
            }
            Dialect::My => {
                "SELECT DISTINCT TABLE_NAME AS child, REFERENCED_TABLE_NAME AS parent \
                 FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL \
                   AND REFERENCED_TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME <> TABLE_NAME"
            }
        }
    }

    /// The exact number of rows of `table`.
    pub fn count(self, table: &str) -> String {
        format!("SELECT count(*) AS n FROM {}", self.ident(table))
    }

    /// `(key) > (after)` (and `<= (upto)`): a keyset range.
    pub fn range(
        self,
        key: &[String],
        after: Option<&[Option<String>]>,
        upto: Option<&[Option<String>]>,
    ) -> String {
        let tuple = |vals: &[Option<String>]| {
            vals.iter()
                .map(|v| self.literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cols = self.list(key);
        let mut parts = Vec::new();
        // A single column without parentheses: every server uses its index.
        let (open, close) = if key.len() == 1 { ("", "") } else { ("(", ")") };
        if let Some(a) = after {
            parts.push(format!("{open}{cols}{close} > {open}{}{close}", tuple(a)));
        }
        if let Some(u) = upto {
            parts.push(format!("{open}{cols}{close} <= {open}{}{close}", tuple(u)));
        }
        if parts.is_empty() {
            "TRUE".into()
        } else {
            parts.join(" AND ")
        }
    }

    /// Inside a side job's transaction: its lock waits end after a moment
    /// (then it retries), so it never holds a client in a deadlock long
    /// enough to be the one the server keeps. PostgreSQL checks for a
    /// deadlock after `deadlock_timeout` (1 s by default); InnoDB at once,
    /// and gives up the transaction that changed fewer rows: the job's.
    pub fn short_lock_wait(self) -> &'static str {
        match self {
            Dialect::Pg => "SET LOCAL lock_timeout = '250ms'",
            Dialect::My => "SET SESSION innodb_lock_wait_timeout = 1",
        }
    }

    /// Whether `error` is a lock wait the server gave up (a lock timeout,
    /// or a deadlock it broke): worth another try.
    pub fn lock_given_up(error: &str) -> bool {
        [
            "lock timeout",
            "deadlock detected",
            "Lock wait timeout exceeded",
            "Deadlock found",
        ]
        .iter()
        .any(|m| error.contains(m))
    }

    /// The statement that locks against writers: a env row lock.
    pub fn share_lock(self) -> &'static str {
        match self {
            Dialect::Pg => "FOR SHARE",
            Dialect::My => "LOCK IN SHARE MODE",
        }
    }

    /// The next batch of `t` after `after`, under a env row lock.
    pub fn batch(self, t: &TableShape, after: Option<&[Option<String>]>, n: usize) -> String {
        format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT {n} {}",
            self.list(&t.columns),
            self.ident(&t.name),
            self.range(&t.key, after, None),
            self.list(&t.key),
            self.share_lock()
        )
    }

    /// The rows of `t` with the given keys, under a env row lock.
    pub fn rows_by_key(self, t: &TableShape, keys: &[Vec<Option<String>>]) -> String {
        format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {} {}",
            self.list(&t.columns),
            self.ident(&t.name),
            self.key_in(&t.key, keys),
            self.list(&t.key),
            self.share_lock()
        )
    }

    pub fn key_in(self, key: &[String], keys: &[Vec<Option<String>>]) -> String {
        let alternatives: Vec<String> = keys
            .iter()
            .map(|k| {
                key.iter()
                    .zip(k)
                    .map(|(c, v)| format!("{} = {}", self.ident(c), self.literal(v)))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            })
            .map(|a| format!("({a})"))
            .collect();
        if alternatives.is_empty() {
            "FALSE".into()
        } else {
            alternatives.join(" OR ")
        }
    }

    /// Inserts `rows` (of `t`'s columns), replacing the rows already there
    /// under the same key.
    pub fn upsert(self, t: &TableShape, rows: &[Vec<Option<String>>]) -> String {
        let values: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "({})",
                    r.iter()
                        .map(|v| self.literal(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        let others: Vec<&String> = t.columns.iter().filter(|c| !t.key.contains(c)).collect();
        let head = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.ident(&t.name),
            self.list(&t.columns),
            values.join(", ")
        );
        match self {
            Dialect::Pg if others.is_empty() => {
                format!("{head} ON CONFLICT ({}) DO NOTHING", self.list(&t.key))
            }
            Dialect::Pg => format!(
                "{head} ON CONFLICT ({}) DO UPDATE SET {}",
                self.list(&t.key),
                others
                    .iter()
                    .map(|c| format!("{0} = EXCLUDED.{0}", self.ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Dialect::My => {
                let set = if others.is_empty() {
                    t.key.iter().collect::<Vec<_>>()
                } else {
                    others
                };
                format!(
                    "{head} ON DUPLICATE KEY UPDATE {}",
                    set.iter()
                        .map(|c| format!("{0} = VALUES({0})", self.ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    }

    /// A row's hash: the listed columns' values as text, NULLs told apart.
    fn row_hash(self, columns: &[String]) -> String {
        match self {
            Dialect::Pg => format!(
                "md5(ROW({})::text)",
                columns
                    .iter()
                    .map(|c| self.ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Dialect::My => format!(
                "MD5(CONCAT_WS('|', {}))",
                columns
                    .iter()
                    .map(|c| format!("COALESCE(HEX({}), 'N')", self.ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Count and order-independent checksum of a range: `columns` name the
    /// compared columns in the same order on both sides.
    pub fn checksum(self, table: &str, columns: &[String], range: &str) -> String {
        let h = self.row_hash(columns);
        match self {
            Dialect::Pg => format!(
                "SELECT count(*)::text AS row_count, \
                        COALESCE(sum(('x' || substr({h}, 1, 15))::bit(60)::bigint), 0)::text AS checksum \
                 FROM {} WHERE {range}",
                self.ident(table)
            ),
            Dialect::My => format!(
                "SELECT COUNT(*) AS row_count, \
                        COALESCE(SUM(CAST(CONV(SUBSTR({h}, 1, 15), 16, 10) AS UNSIGNED)), 0) AS checksum \
                 FROM {} WHERE {range}",
                self.ident(table)
            ),
        }
    }

    /// Each row of a range: its key, then its hash, in key order.
    pub fn row_hashes(
        self,
        table: &str,
        key: &[String],
        columns: &[String],
        range: &str,
    ) -> String {
        format!(
            "SELECT {}, {} FROM {} WHERE {range} ORDER BY {}",
            self.list(key),
            self.row_hash(columns),
            self.ident(table),
            self.list(key)
        )
    }

    /// The key at the end of the next verify range after `after`.
    pub fn range_end(self, t: &TableShape, after: Option<&[Option<String>]>, n: usize) -> String {
        format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT 1 OFFSET {}",
            self.list(&t.key),
            self.ident(&t.name),
            self.range(&t.key, after, None),
            self.list(&t.key),
            n.saturating_sub(1)
        )
    }

    pub fn delete_keys(self, table: &str, key: &[String], keys: &[Vec<Option<String>>]) -> String {
        format!(
            "DELETE FROM {} WHERE {}",
            self.ident(table),
            self.key_in(key, keys)
        )
    }
}

/// The tables of `rows` ([`Dialect::tables_query`]'s answer).
pub fn shapes(rows: &Named) -> Result<Vec<TableShape>, String> {
    let mut out: Vec<TableShape> = Vec::new();
    let mut keyed: Vec<Vec<(i64, String)>> = Vec::new();
    let read = |e: RowError| format!("the catalog's answer: {e}");
    for r in rows.iter() {
        let table = r.str("table_name").map_err(read)?.to_string();
        let column = r.str("column_name").map_err(read)?.to_string();
        let position: i64 = r.parse("key_position").map_err(read)?.unwrap_or(0);
        let estimated: i64 = r.parse("estimated_rows").map_err(read)?.unwrap_or(0);
        if out.last().map(|t| &t.name) != Some(&table) {
            out.push(TableShape {
                name: table.clone(),
                columns: Vec::new(),
                key: Vec::new(),
                estimated_rows: estimated,
            });
            keyed.push(Vec::new());
        }
        if let (Some(t), Some(k)) = (out.last_mut(), keyed.last_mut()) {
            t.columns.push(column.clone());
            if position > 0 {
                k.push((position, column.clone()));
            }
        }
    }
    for (t, mut k) in out.iter_mut().zip(keyed) {
        k.sort();
        t.key = k.into_iter().map(|(_, c)| c).collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TableShape {
        TableShape {
            name: "users".into(),
            columns: vec!["id".into(), "name".into()],
            key: vec!["id".into()],
            estimated_rows: 0,
        }
    }

    #[test]
    fn statements_for_both_dialects() {
        let last = vec![Some("5".to_string())];
        assert_eq!(
            Dialect::Pg.batch(&t(), Some(&last), 10),
            "SELECT \"id\", \"name\" FROM \"users\" WHERE \"id\" > '5' ORDER BY \"id\" LIMIT 10 FOR SHARE"
        );
        assert_eq!(
            Dialect::My.upsert(&t(), &[vec![Some("1".into()), Some("it's \\ here".into())]]),
            "INSERT INTO `users` (`id`, `name`) VALUES ('1', 'it''s \\\\ here') ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)"
        );
        assert_eq!(
            Dialect::Pg.upsert(&t(), &[vec![Some("1".into()), None]]),
            "INSERT INTO \"users\" (\"id\", \"name\") VALUES ('1', NULL) ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
        );
        let two = vec!["a".to_string(), "b".to_string()];
        let k = vec![Some("1".to_string()), Some("x".to_string())];
        assert_eq!(
            Dialect::Pg.range(&two, Some(&k), Some(&k)),
            "(\"a\", \"b\") > ('1', 'x') AND (\"a\", \"b\") <= ('1', 'x')"
        );
    }

    #[test]
    fn shapes_group_columns_and_order_keys() {
        let row = |t: &str, c: &str, p: &str| {
            vec![
                Some(t.to_string()),
                Some(c.to_string()),
                Some(p.to_string()),
                Some("7".to_string()),
            ]
        };
        let names = [
            "table_name",
            "column_name",
            "key_position",
            "estimated_rows",
        ];
        let s = shapes(&Named::new(
            names.map(String::from).to_vec(),
            vec![
                row("a", "x", "2"),
                row("a", "y", "1"),
                row("a", "z", "0"),
                row("b", "v", "0"),
            ],
        ))
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].key, vec!["y".to_string(), "x".to_string()]);
        assert_eq!(s[0].columns.len(), 3);
        assert!(s[1].key.is_empty());
        assert_eq!(s[1].estimated_rows, 7);
    }
}
