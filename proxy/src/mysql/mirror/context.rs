//! What a mirrored MySQL session follows of its own context when writes are
//! mirrored as statements (no log source): values the statement text does
//! not show, so that each write is either the same on both sides or
//! recorded, and the client's own settings and answers stay as directly.
//!
//! - user variables assigned a value drawn on each server (`SET @x =
//!   UUID()`, `SELECT @y := RAND()`): a write using one is recorded;
//! - `DATABASE()` in a write when the sides' databases are named
//!   differently: recorded;
//! - the client's own `SET timestamp = ...`: turnout's pin steps aside;
//! - `ROW_COUNT()` right after an autocommit write turnout wrapped in its
//!   own transaction: the write's count, as the client would get directly;
//! - a character set whose characters may end in a backslash byte (gbk,
//!   big5, sjis, cp932): texts are lexed warily.

use std::collections::HashSet;

/// Functions and variables whose value each server draws on its own.
const DRAWN: &[&str] = &[
    "uuid(",
    "uuid_short(",
    "rand(",
    "sysdate(",
    "random_bytes(",
    "connection_id(",
    "@@hostname",
    "@@port",
    "@@server_id",
    "@@server_uuid",
];

/// Character sets with characters whose last byte is 0x5C (`\`).
const BACKSLASH_TRAILING: &[&str] = &["gbk", "big5", "sjis", "cp932"];

/// Collations of those character sets (ids a client names at login).
const BACKSLASH_TRAILING_COLLATIONS: &[u8] = &[1, 13, 28, 84, 87, 88, 95, 96];

/// The catalog query telling whether `table` (of the session's database)
/// has a trigger drawing values of each server's own.
pub(super) fn drawn_trigger_query(table: &str, event: &str) -> String {
    let likes: Vec<String> = DRAWN
        .iter()
        .map(|f| format!("LOWER(ACTION_STATEMENT) LIKE '%{}%'", f.replace('_', "\\_")))
        .collect();
    // (A trigger that inserts makes ids of the mirror's own counter.)
    format!(
        "SELECT COUNT(*) AS n FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = '{}' AND EVENT_MANIPULATION IN ({event}) AND ({} OR LOWER(ACTION_STATEMENT) LIKE '%insert%')",
        table.trim_matches('`').replace('\'', "''"),
        likes.join(" OR ")
    )
}

/// The catalog query listing the session's database's stored functions
/// that write.
pub(super) const WRITING_FUNCTIONS: &str = "SELECT LOWER(ROUTINE_NAME) AS name FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = 'FUNCTION' AND SQL_DATA_ACCESS = 'MODIFIES SQL DATA'";

/// The first of `functions` that `sql` calls.
pub(super) fn calls_one_of<'a>(sql: &str, functions: &'a [String]) -> Option<&'a str> {
    if functions.is_empty() {
        return None;
    }
    let lower = sql.to_ascii_lowercase();
    functions
        .iter()
        .find(|f| {
            lower.match_indices(f.as_str()).any(|(i, _)| {
                let before = i.checked_sub(1).map(|j| lower.as_bytes()[j]);
                let after = lower[i + f.len()..].trim_start();
                !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                    && after.starts_with('(')
            })
        })
        .map(String::as_str)
}

#[derive(Default)]
pub(super) struct Context {
    /// User variables (lower-case, without `@`) holding a drawn value.
    drawn_vars: HashSet<String>,
    /// The client set `timestamp` itself.
    pub client_timestamp: bool,
    /// The affected rows of the autocommit write turnout just wrapped.
    pub wrapped_count: Option<u64>,
    /// Per table written: whether a trigger of it draws values of its own
    /// on each server (from the authority's catalog; cleared at DDL).
    pub drawn_triggers: std::collections::HashMap<String, bool>,
    /// The stored functions that write (from the authority's catalog, on
    /// the first read that calls a function; cleared at DDL).
    pub writing_functions: Option<Vec<String>>,
}

/// Whether a client logging in with `collation` may send characters whose
/// last byte is a backslash.
pub(super) fn backslash_trailing_collation(collation: u8) -> bool {
    BACKSLASH_TRAILING_COLLATIONS.contains(&collation)
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether `sql` may switch to a character set lexed warily.
pub(super) fn names_backslash_trailing_charset(sql: &str) -> bool {
    BACKSLASH_TRAILING.iter().any(|cs| contains_ci(sql, cs))
}

/// The user variables `sql` assigns (`@x = ...` in a SET, `@x := ...`).
fn assigned(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let is_set = sql
        .trim_start()
        .get(..3)
        .is_some_and(|w| w.eq_ignore_ascii_case("set"));
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'@' && b.get(i + 1) != Some(&b'@') && (i == 0 || b[i - 1] != b'@') {
            let start = i + 1;
            let mut end = start;
            while end < b.len()
                && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b'$')
            {
                end += 1;
            }
            let mut j = end;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let assigns = b.get(j..j + 2) == Some(b":=")
                || (is_set && b.get(j) == Some(&b'=') && b.get(j + 1) != Some(&b'='));
            if end > start && assigns {
                out.push(sql[start..end].to_ascii_lowercase());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

impl Context {
    /// Follows a statement the client sent (before it runs).
    pub fn note(&mut self, sql: &str) {
        if sql.contains('@') {
            let vars = assigned(sql);
            if !vars.is_empty() {
                let drawn = DRAWN.iter().any(|f| contains_ci(sql, f));
                for v in vars {
                    if drawn {
                        self.drawn_vars.insert(v);
                    } else {
                        self.drawn_vars.remove(&v);
                    }
                }
            }
        }
        let t = sql.trim_start();
        if t.get(..3).is_some_and(|w| w.eq_ignore_ascii_case("set")) && contains_ci(t, "timestamp")
        {
            let value = t
                .rsplit('=')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_end_matches(';')
                .trim();
            self.client_timestamp =
                !(value.eq_ignore_ascii_case("default") || value == "0" || value.is_empty());
        }
    }

    /// Why the write `sql` may not be the same on the mirror, from the
    /// session's context: a user variable holding a drawn value.
    pub fn unsafe_write(&self, sql: &str) -> Option<String> {
        if self.drawn_vars.is_empty() || !sql.contains('@') {
            return None;
        }
        let lower = sql.to_ascii_lowercase();
        self.drawn_vars
            .iter()
            .find(|v| {
                let at = format!("@{v}");
                lower.match_indices(&at).any(|(i, _)| {
                    let next = lower.as_bytes().get(i + at.len());
                    !next.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$')
                        && (i == 0 || lower.as_bytes()[i - 1] != b'@')
                })
            })
            .map(|v| {
                format!("uses @{v}, which holds a value each server drew on its own (UUID(), RAND(), a server's identity): it differs on the mirror")
            })
    }

    /// `sql` with `ROW_COUNT()` answered as directly after an autocommit
    /// write turnout wrapped (its COMMIT reset the count): `None` when
    /// there is nothing to answer.
    pub fn row_count_answered(n: u64, sql: &str) -> Option<String> {
        if !contains_ci(sql, "row_count") {
            return None;
        }
        let t = sql.trim().trim_end_matches(';').trim();
        let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.eq_ignore_ascii_case("selectrow_count()") {
            return Some(format!("SELECT {n} AS `ROW_COUNT()`"));
        }
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(at) = rest.to_ascii_lowercase().find("row_count") {
            let after = &rest[at + "row_count".len()..];
            let trimmed = after.trim_start();
            if let Some(tail) = trimmed.strip_prefix('(').map(str::trim_start) {
                if let Some(tail) = tail.strip_prefix(')') {
                    out.push_str(&rest[..at]);
                    out.push_str(&n.to_string());
                    rest = tail;
                    continue;
                }
            }
            out.push_str(&rest[..at + "row_count".len()]);
            rest = after;
        }
        out.push_str(rest);
        Some(out)
    }
}

/// Whether a text of several statements inserts after its first statement
/// (only the first generated id is pinned: a later INSERT's ids are the
/// mirror's own counter's).
pub(super) fn inserts_after_the_first(sql: &str) -> bool {
    sql.split(';').skip(1).any(|st| {
        st.trim_start()
            .get(..6)
            .is_some_and(|w| w.eq_ignore_ascii_case("insert") || w.eq_ignore_ascii_case("replac"))
    })
}

/// Whether a write `sql` calls `DATABASE()` / `SCHEMA()` (each side's own
/// database name).
pub(super) fn names_database(sql: &str) -> bool {
    ["database(", "schema("]
        .iter()
        .any(|f| contains_ci(&sql.replace(' ', ""), f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_user_variables_are_followed() {
        let mut c = Context::default();
        c.note("SET @x = UUID(), @n = 3");
        c.note("SELECT @y := RAND()");
        assert!(c.unsafe_write("INSERT INTO t VALUES (@x)").is_some());
        assert!(c.unsafe_write("INSERT INTO t VALUES (@Y)").is_some());
        assert!(c
            .unsafe_write("INSERT INTO t VALUES (@xy, @@port)")
            .is_none());
        c.note("SET @x = 'fixed'");
        assert!(c.unsafe_write("INSERT INTO t VALUES (@x)").is_none());
    }

    #[test]
    fn the_clients_timestamp_is_followed() {
        let mut c = Context::default();
        c.note("SET timestamp = 1700000000");
        assert!(c.client_timestamp);
        c.note("set TIMESTAMP=DEFAULT");
        assert!(!c.client_timestamp);
    }

    #[test]
    fn row_count_is_answered_once_after_a_wrapped_write() {
        assert_eq!(
            Context::row_count_answered(3, "SELECT ROW_COUNT()").as_deref(),
            Some("SELECT 3 AS `ROW_COUNT()`")
        );
        assert_eq!(Context::row_count_answered(3, "SELECT 1"), None);
        assert_eq!(
            Context::row_count_answered(2, "INSERT INTO t (n) VALUES (row_count ( ))").as_deref(),
            Some("INSERT INTO t (n) VALUES (2)")
        );
    }

    #[test]
    fn calls_of_writing_functions_are_found() {
        let f = vec!["bump".to_string()];
        assert_eq!(calls_one_of("SELECT bump ()", &f), Some("bump"));
        assert_eq!(calls_one_of("SELECT rebump(), bump_x()", &f), None);
        assert!(drawn_trigger_query("t", "'INSERT'").contains("uuid(%"));
    }

    #[test]
    fn wary_character_sets_are_told() {
        assert!(names_backslash_trailing_charset("SET NAMES gbk"));
        assert!(!names_backslash_trailing_charset("SET NAMES utf8mb4"));
        assert!(backslash_trailing_collation(28));
        assert!(names_database("INSERT INTO t VALUES (DATABASE ())"));
        assert!(inserts_after_the_first(
            "UPDATE t SET a = 1; insert into t VALUES (1)"
        ));
        assert!(!inserts_after_the_first("INSERT INTO t VALUES (1)"));
    }
}
