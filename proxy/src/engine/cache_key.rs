//! A cheap key for the classification cache: the statement text with its
//! literals blanked, found by one pass over the bytes. Texts that differ only
//! in literal values share a key (and a classification); anything else that
//! differs gives another key.

use super::SqlDialect;

/// The key of `sql`. Never fails: an unterminated quote runs to the end.
pub fn cache_key(dialect: SqlDialect, sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len().min(4096));
    let mysql = dialect == SqlDialect::Mysql;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if out.last().is_some_and(|&l| l != b' ') {
                    out.push(b' ');
                }
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'#' if mysql => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                continue;
            }
            b'\'' => {
                // E'..' (escape string): `e` standing alone before the quote.
                let n = out.len();
                let escape = !mysql
                    && n > 0
                    && out[n - 1] == b'e'
                    && !(n > 1 && (out[n - 2].is_ascii_alphanumeric() || out[n - 2] == b'_'));
                let backslash = mysql || escape;
                if escape {
                    out.pop();
                }
                i = skip_quoted(b, i, b'\'', backslash);
                literal(&mut out);
                continue;
            }
            b'"' if mysql => {
                i = skip_quoted(b, i, b'"', true);
                literal(&mut out);
                continue;
            }
            b'"' | b'`' => {
                // A quoted identifier: kept as written.
                let end = skip_quoted(b, i, c, false);
                out.extend_from_slice(&b[i..end]);
                i = end;
                continue;
            }
            b'$' if !mysql => {
                if let Some(end) = dollar_quote_end(b, i) {
                    i = end;
                    literal(&mut out);
                    continue;
                }
                // `$1` placeholder.
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                literal(&mut out);
                continue;
            }
            b'?' => {
                i += 1;
                literal(&mut out);
                continue;
            }
            b'0'..=b'9'
                if !out
                    .last()
                    .is_some_and(|&l| l.is_ascii_alphanumeric() || l == b'_') =>
            {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                literal(&mut out);
                continue;
            }
            _ => out.push(c.to_ascii_lowercase()),
        }
        i += 1;
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes `?`, folding `?, ?` lists into one `?`.
fn literal(out: &mut Vec<u8>) {
    let mut n = out.len();
    while n > 0 && out[n - 1] == b' ' {
        n -= 1;
    }
    if n > 0 && out[n - 1] == b',' {
        let mut m = n - 1;
        while m > 0 && out[m - 1] == b' ' {
            m -= 1;
        }
        if m > 0 && out[m - 1] == b'?' {
            out.truncate(m);
            return;
        }
    }
    out.push(b'?');
}

/// Index just past the closing quote of a quoted run starting at `start`.
fn skip_quoted(b: &[u8], start: usize, quote: u8, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// End of a PostgreSQL dollar-quoted string `$tag$...$tag$` starting at `start`.
fn dollar_quote_end(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    while j < b.len()
        && (b[j].is_ascii_alphanumeric() || b[j] == b'_')
        && !b[start + 1].is_ascii_digit()
    {
        j += 1;
    }
    if b.get(j) != Some(&b'$') {
        return None;
    }
    let tag = &b[start..=j];
    let body = j + 1;
    let pos = b[body..].windows(tag.len()).position(|w| w == tag)?;
    Some(body + pos + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SqlDialect::*;

    #[test]
    fn literals_differ_keys_do_not() {
        let a = cache_key(
            Postgres,
            "UPDATE pgbench_accounts SET abalance = abalance + -3421 WHERE aid = 83910;",
        );
        let b = cache_key(
            Postgres,
            "update pgbench_accounts  set abalance = abalance + -12 where aid = 7;",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            cache_key(
                Postgres,
                "UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 2;"
            )
        );
    }

    #[test]
    fn strings_comments_and_lists() {
        assert_eq!(
            cache_key(Postgres, "SELECT 'it''s', E'a\\'b', $$x$$, $t$y$t$ -- c\n FROM t /* d */ WHERE id IN (1, 2, 3) AND x = $1"),
            cache_key(Postgres, "select 'other', E'z', $$w$$, $t$v$t$ from t where id in (9) and x = $2")
        );
        assert_ne!(
            cache_key(Postgres, "SELECT \"Name\" FROM t"),
            cache_key(Postgres, "SELECT \"name\" FROM t")
        );
        assert_eq!(
            cache_key(Mysql, "SELECT * FROM `t` WHERE a = \"x\" # c"),
            cache_key(Mysql, "SELECT * FROM `t` WHERE a = 'y'")
        );
    }

    #[test]
    fn identifiers_with_digits_are_not_literals() {
        assert_ne!(
            cache_key(Postgres, "SELECT t1.a FROM t1"),
            cache_key(Postgres, "SELECT t2.a FROM t2")
        );
    }

    #[test]
    fn unterminated_input_still_gets_a_key() {
        let _ = cache_key(Postgres, "SELECT 'open");
        let _ = cache_key(Postgres, "SELECT $tag$ open");
        let _ = cache_key(Postgres, "/* open");
        let _ = cache_key(Mysql, "SELECT \"open \\");
    }
}
