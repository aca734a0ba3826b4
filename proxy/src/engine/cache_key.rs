//! The key of the classification cache: the statement's tokens, as the same
//! tokenizer the classifier parses with reads them, with literal values
//! blanked (their kind kept). Texts that differ only in literal values,
//! white space or comments share a key; any other difference gives another
//! key. Because the key comes from the classifier's own lexing, a text can
//! never share a key with a text the classifier reads differently: nested
//! comments, `$` inside identifiers, MySQL's `--1` (not a comment) and
//! `/*! ... */` (run by the server) are read the way the parser reads them.
//!
//! The classification must depend on literal kinds only, never on their
//! values; the property test in `classify/tests.rs` and the `sql` fuzz
//! target check that two texts with one key classify the same.

use sqlparser::dialect::Dialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use std::fmt::Write;

/// Formats straight into the key's bytes.
struct Sink<'a>(&'a mut Vec<u8>);

impl Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// White space, a comment or the end: nothing the server runs (what a
/// `/*! ... */` comment holds comes out of the tokenizer as tokens).
pub fn is_layout(token: &Token) -> bool {
    matches!(
        token,
        Token::Whitespace(
            Whitespace::Space
                | Whitespace::Newline
                | Whitespace::Tab
                | Whitespace::SingleLineComment { .. }
                | Whitespace::MultiLineComment(_),
        ) | Token::EOF
    )
}

/// Texts longer than this are not keyed (and so not cached).
pub const MAX_KEYED_LEN: usize = 64 * 1024;

/// The key of `sql`, or `None` when the text is not to be cached (too long,
/// or the tokenizer cannot read it: then the classifier cannot either, and
/// each such text is classified on its own).
pub fn cache_key(dialect: &dyn Dialect, sql: &str) -> Option<Vec<u8>> {
    if sql.len() > MAX_KEYED_LEN {
        return None;
    }
    let postgres = dialect.is::<sqlparser::dialect::PostgreSqlDialect>();
    if let Some(key) = plain_key(sql, postgres) {
        return Some(key);
    }
    let tokens = Tokenizer::new(dialect, sql).tokenize().ok()?;
    let mut out: Vec<u8> = Vec::with_capacity(sql.len() + 16);
    for token in tokens.iter().filter(|t| !is_layout(t)) {
        match token {
            Token::Number(_, long) => {
                out.extend_from_slice(if *long { b"\x01NL" } else { b"\x01N" })
            }
            Token::SingleQuotedString(_) => out.extend_from_slice(b"\x01S"),
            Token::DoubleQuotedString(_) => out.extend_from_slice(b"\x01D"),
            Token::TripleSingleQuotedString(_) => out.extend_from_slice(b"\x01TS"),
            Token::TripleDoubleQuotedString(_) => out.extend_from_slice(b"\x01TD"),
            Token::DollarQuotedString(_) => out.extend_from_slice(b"\x01$"),
            Token::SingleQuotedByteStringLiteral(_) => out.extend_from_slice(b"\x01BS"),
            Token::DoubleQuotedByteStringLiteral(_) => out.extend_from_slice(b"\x01BD"),
            Token::NationalStringLiteral(_) => out.extend_from_slice(b"\x01NS"),
            Token::EscapedStringLiteral(_) => out.extend_from_slice(b"\x01E"),
            Token::UnicodeStringLiteral(_) => out.extend_from_slice(b"\x01U"),
            Token::HexStringLiteral(_) => out.extend_from_slice(b"\x01X"),
            Token::Placeholder(_) => out.extend_from_slice(b"\x01P"),
            other => {
                // Everything else as the tokenizer renders it, length-prefixed
                // so that no two token sequences give one key.
                out.push(0x02);
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                let mut w = Sink(&mut out);
                let _ = match other {
                    Token::Word(w2) => write!(w, "{:?}{}", w2.quote_style, w2),
                    _ => write!(w, "{other}"),
                };
                let len = (out.len() - at - 4) as u32;
                out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
        }
    }
    Some(out)
}

/// The key of a plain text without tokenizing it: one made only of ASCII
/// letters, digits, `_`, white space, `,()=<>+-*.;` and single-quoted
/// strings, with no `--`. In such a text no character means anything
/// different to PostgreSQL, MariaDB and the parser: there is no comment,
/// no other quote, no backslash (so no escape, whatever the server's
/// settings), no `$`, `#`, `@`, `?` or `/`. The key is the text byte for
/// byte (white space and case included) with only these blanked: a run of
/// digits standing alone (a white space or one of `(,=<>+-*` before it, a
/// white space or one of `),;=<>+-*` after it, so it is a number token to
/// any tokenizer), and a single-quoted string not preceded by a letter,
/// digit or `_` (so not `E'...'`, `N'...'`, `X'...'`). Two texts with one
/// key therefore tokenize to the same tokens but for those literal values,
/// as two texts with one tokenizer key do. Placeholders are blanked too:
/// `$n` for PostgreSQL (standing alone as a number does: `a$1` is a name
/// there, and a dollar quote's tag cannot start with a digit), `?` for
/// MySQL. `None`: the text is not plain.
pub fn plain_key(sql: &str, postgres: bool) -> Option<Vec<u8>> {
    let b = sql.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 1);
    out.push(0x03);
    let class = |c: u8| PLAIN[usize::from(c)];
    let before_number = |at: usize| at == 0 || class(b[at - 1]) & BEFORE_NUMBER != 0;
    let after_number = |at: usize| b.get(at).is_none_or(|&c| class(c) & AFTER_NUMBER != 0);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let k = class(c);
        if k & COPIED != 0 {
            // A run of bytes that stand for themselves, copied at once.
            let start = i;
            i += 1;
            while i < b.len() && class(b[i]) & COPIED != 0 {
                i += 1;
            }
            out.extend_from_slice(&b[start..i]);
            continue;
        }
        match c {
            b'\'' => {
                if i > 0 && class(b[i - 1]) & IDENT != 0 {
                    return None; // a prefixed string: left to the tokenizer
                }
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return None, // unterminated
                        Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                        Some(b'\'') => break,
                        Some(&c) if c.is_ascii() && c != b'\\' => j += 1,
                        Some(_) => return None,
                    }
                }
                out.extend_from_slice(b"\x01S");
                i = j + 1;
            }
            b'0'..=b'9' => {
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                // Digits standing alone are a number to any tokenizer; in a
                // name they are part of it.
                if before_number(i) && after_number(j) {
                    out.extend_from_slice(b"\x01N");
                } else {
                    out.extend_from_slice(&b[i..j]);
                }
                i = j;
            }
            b'$' if postgres && before_number(i) => {
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                if j == i + 1 || !after_number(j) {
                    return None;
                }
                out.extend_from_slice(b"\x01P");
                i = j;
            }
            b'?' if !postgres => {
                out.extend_from_slice(b"\x01P");
                i += 1;
            }
            b'-' if b.get(i + 1) != Some(&b'-') => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// [`PLAIN`]: a byte that stands for itself in a plain text (a letter, `_`,
/// white space, `,()=<>+*.;`; not a digit, `-` or a quote, which are looked
/// at in their context).
const COPIED: u8 = 1;
/// A letter, digit or `_`.
const IDENT: u8 = 2;
/// May come right before a number standing alone: white space, `(,=<>+-*`.
const BEFORE_NUMBER: u8 = 4;
/// May come right after one: white space, `),;=<>+-*`.
const AFTER_NUMBER: u8 = 8;

/// What each byte is to [`plain_key`].
const PLAIN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut k = 0;
        if b.is_ascii_alphabetic() || b == b'_' {
            k |= COPIED | IDENT;
        }
        if b.is_ascii_digit() {
            k |= IDENT;
        }
        if b.is_ascii_whitespace() {
            k |= COPIED | BEFORE_NUMBER | AFTER_NUMBER;
        }
        if matches!(
            b,
            b',' | b'(' | b')' | b'=' | b'<' | b'>' | b'+' | b'*' | b'.' | b';'
        ) {
            k |= COPIED;
        }
        if matches!(b, b'(' | b',' | b'=' | b'<' | b'>' | b'+' | b'-' | b'*') {
            k |= BEFORE_NUMBER;
        }
        if matches!(
            b,
            b')' | b',' | b';' | b'=' | b'<' | b'>' | b'+' | b'-' | b'*'
        ) {
            k |= AFTER_NUMBER;
        }
        t[c] = k;
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};

    /// The byte-by-byte form `plain_key` had before it read bytes by table
    /// and copied runs: both must give the same key for every text.
    fn plain_key_bytewise(sql: &str, postgres: bool) -> Option<Vec<u8>> {
        let b = sql.as_bytes();
        let mut out = Vec::with_capacity(b.len() + 1);
        out.push(0x03);
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let before_number =
            |c: Option<&u8>| c.is_none_or(|&c| c.is_ascii_whitespace() || b"(,=<>+-*".contains(&c));
        let after_number = |c: Option<&u8>| {
            c.is_none_or(|&c| c.is_ascii_whitespace() || b"),;=<>+-*".contains(&c))
        };
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match c {
                b'\'' => {
                    if i > 0 && ident(b[i - 1]) {
                        return None;
                    }
                    let mut j = i + 1;
                    loop {
                        match b.get(j) {
                            None => return None,
                            Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                            Some(b'\'') => break,
                            Some(&c) if c.is_ascii() && c != b'\\' => j += 1,
                            Some(_) => return None,
                        }
                    }
                    out.extend_from_slice(b"\x01S");
                    i = j + 1;
                }
                b'0'..=b'9' if (i == 0 || before_number(b.get(i - 1))) => {
                    let mut j = i;
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    if after_number(b.get(j)) {
                        out.extend_from_slice(b"\x01N");
                    } else {
                        out.extend_from_slice(&b[i..j]);
                    }
                    i = j;
                }
                b'$' if postgres && (i == 0 || before_number(b.get(i - 1))) => {
                    let mut j = i + 1;
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    if j == i + 1 || !after_number(b.get(j)) {
                        return None;
                    }
                    out.extend_from_slice(b"\x01P");
                    i = j;
                }
                b'?' if !postgres => {
                    out.extend_from_slice(b"\x01P");
                    i += 1;
                }
                b'-' if b.get(i + 1) == Some(&b'-') => return None,
                c if ident(c) || c.is_ascii_whitespace() || b",()=<>+-*.;".contains(&c) => {
                    out.push(c);
                    i += 1;
                }
                _ => return None,
            }
        }
        Some(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn plain_key_reads_as_the_bytewise_form(
            sql in "[a-cA_0-9 \t\n\x0c'$?(),;=<>+*.\\/#\"-]{0,40}|(SELECT|UPDATE|WHERE|t1|[ ,=()]|[0-9]{1,3}|'[a-z']{0,3}'|\\$[0-9]|\\?|--|-|é){0,16}",
            postgres in any::<bool>(),
        ) {
            prop_assert_eq!(plain_key(&sql, postgres), plain_key_bytewise(&sql, postgres));
        }
    }

    fn pg(sql: &str) -> Option<Vec<u8>> {
        cache_key(&PostgreSqlDialect {}, sql)
    }

    fn my(sql: &str) -> Option<Vec<u8>> {
        cache_key(&MySqlDialect {}, sql)
    }

    #[test]
    fn literals_differ_keys_do_not() {
        let a = pg("UPDATE pgbench_accounts SET abalance = abalance + -3421 WHERE aid = 83910;");
        let b = pg("UPDATE pgbench_accounts SET abalance = abalance + -12 WHERE aid = 7;");
        assert_eq!(a, b);
        assert_ne!(
            a,
            pg("UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 2;")
        );
    }

    #[test]
    fn strings_and_comments() {
        assert_eq!(
            pg("SELECT 'it''s', $$x$$, $t$y$t$ -- c\n FROM t /* d */ WHERE x = $1"),
            pg("SELECT 'other', $$w$$, $t$v$t$ FROM t WHERE x = $2")
        );
        assert_ne!(pg("SELECT \"Name\" FROM t"), pg("SELECT \"name\" FROM t"));
        assert_ne!(pg("SELECT Name FROM t"), pg("SELECT \"Name\" FROM t"));
        assert_eq!(
            my("SELECT * FROM `t` WHERE a = 'x' # c"),
            my("SELECT * FROM `t` WHERE a = 'y'")
        );
    }

    #[test]
    fn the_review_s_poisoning_texts_get_keys_of_their_own() {
        // Nested comment: the DELETE is inside it, the SELECT runs.
        let poison = pg("/* /* */ DELETE FROM t WHERE id = 1 -- */ SELECT 'harmless'");
        assert_ne!(poison, pg("DELETE FROM t WHERE id = 3"));
        assert_eq!(poison, pg("/* c */ SELECT 'x'"));
        // `$` inside an identifier is not a dollar quote.
        assert_ne!(
            pg("SELECT a$b FROM t; DELETE FROM t WHERE id = 1; SELECT $b$x$b$"),
            pg("SELECT a FROM t")
        );
        // MariaDB: `--1` is minus minus one, not a comment.
        assert_ne!(my("SELECT 1 --1; UPDATE t SET a = 1"), my("SELECT 1"));
        // `/*! ... */` runs on the server.
        assert_ne!(my("SELECT 1 /*! ; DELETE FROM t */"), my("SELECT 1"));
    }

    #[test]
    fn literal_kinds_are_kept() {
        assert_ne!(pg("SELECT 1"), pg("SELECT '1'"));
        assert_ne!(pg("SELECT 'a'"), pg("SELECT E'a'"));
    }

    #[test]
    fn plain_texts_are_keyed_without_the_tokenizer() {
        let a = plain_key(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            true,
        );
        assert!(a.is_some());
        assert_eq!(
            a,
            plain_key("SELECT abalance FROM pgbench_accounts WHERE aid = 7;", true)
        );
        assert_eq!(
            plain_key("INSERT INTO t VALUES (1, 'it''s', -3)", true),
            plain_key("INSERT INTO t VALUES (22, 'x', -4)", true)
        );
        // Not literals: digits in names, glued to words, prefixed strings.
        assert_ne!(
            plain_key("SELECT c1 FROM t", true),
            plain_key("SELECT c2 FROM t", true)
        );
        assert_ne!(
            plain_key("SELECT 1 x", true),
            plain_key("SELECT 1INTO x", true)
        );
        assert_eq!(plain_key("SELECT E'a'", true), None);
        // Placeholders: PostgreSQL's `$n` alone, MySQL's `?`.
        assert_eq!(
            plain_key("UPDATE t SET v = $1 WHERE id = $2", true),
            plain_key("UPDATE t SET v = $3 WHERE id = $4", true)
        );
        assert_eq!(plain_key("SELECT a$1 FROM t", true), None);
        assert_eq!(plain_key("SELECT $1$x$1$", true), None);
        assert_eq!(plain_key("SELECT $1", false), None);
        assert!(plain_key("SELECT v FROM t WHERE id = ?", false).is_some());
        assert_eq!(plain_key("SELECT v FROM t WHERE id = ?", true), None);
        // Anything that could be read two ways goes to the tokenizer.
        for text in [
            "SELECT 1 --1",
            "SELECT 1 /* x */",
            "SELECT 'a\\' , 'b'",
            "SELECT a$b FROM t",
            "SELECT \"a\" FROM t",
            "SELECT 1 # x",
            "SELECT 'open",
            "SELECT @x",
        ] {
            assert_eq!(plain_key(text, true), None, "{text}");
        }
    }

    #[test]
    fn unreadable_and_long_texts_are_not_keyed() {
        assert_eq!(pg("SELECT 'open"), None);
        assert_eq!(pg(&"x".repeat(MAX_KEYED_LEN + 1)), None);
    }
}
