//! Query fingerprints: the statement with its literals replaced, so that one
//! query shape is one key for rules, samples and read-diff reports.

use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

/// Longest fingerprint kept; longer ones are cut (and marked with `…`).
const MAX_LEN: usize = 2048;

/// Normalizes `sql`: literals and placeholders become `?`, lists of them one
/// `?`, comments go, white space is one space, unquoted words are lower case.
/// Text the tokenizer cannot read is fingerprinted by its words alone.
pub fn fingerprint(dialect: &dyn Dialect, sql: &str) -> String {
    let tokens = match Tokenizer::new(dialect, sql).tokenize() {
        Ok(t) => t,
        Err(_) => return cap(sql.split_whitespace().collect::<Vec<_>>().join(" ")),
    };
    // Each piece, and whether it ends an operand (so a `-` after it is binary).
    let mut out: Vec<(String, bool)> = Vec::with_capacity(tokens.len());
    for token in tokens {
        let (piece, operand) = match token {
            Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab) => {
                (" ".to_string(), false)
            }
            Token::Whitespace(_) => continue, // comments
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_) => ("?".to_string(), true),
            Token::Word(w) if w.quote_style.is_none() => {
                (w.value.to_lowercase(), w.keyword == Keyword::NoKeyword)
            }
            Token::Word(w) => (Token::Word(w).to_string(), true),
            Token::RParen => (")".to_string(), true),
            Token::EOF => continue,
            other => (other.to_string(), false),
        };
        if piece == " " {
            if out.last().is_none_or(|(l, _)| l == " ") {
                continue;
            }
        } else if piece == "?" {
            let prev = last_significant(&out, out.len());
            // A sign before a number is part of the literal.
            if let Some(i) = prev.filter(|&i| out[i].0 == "-") {
                let before = last_significant(&out, i);
                if before.is_none_or(|j| !out[j].1) {
                    out.truncate(i);
                }
            }
            // `?, ?, ?` becomes `?`.
            let prev = last_significant(&out, out.len());
            if let Some(i) = prev.filter(|&i| out[i].0 == ",") {
                if last_significant(&out, i).is_some_and(|j| out[j].0 == "?") {
                    out.truncate(i);
                    while out.last().is_some_and(|(l, _)| l == " ") {
                        out.pop();
                    }
                    continue;
                }
            }
        }
        out.push((piece, operand));
    }
    while out.last().is_some_and(|(l, _)| l == " " || l == ";") {
        out.pop();
    }
    cap(out.into_iter().map(|(p, _)| p).collect())
}

/// Index of the last non-space piece before `end`.
fn last_significant(out: &[(String, bool)], end: usize) -> Option<usize> {
    out[..end].iter().rposition(|(p, _)| p != " ")
}

fn cap(s: String) -> String {
    cut(s, MAX_LEN)
}

/// `s` cut to at most `max` bytes (at a character boundary), marked with `…`.
pub(crate) fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The tables a fingerprint (or any statement) names, as written (last name
/// part, unquoted), first seen first; empty when it does not parse.
pub fn tables_of(fingerprint: &str) -> Vec<String> {
    use sqlparser::ast::visit_relations;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;
    use std::ops::ControlFlow;
    let Ok(statements) = Parser::parse_sql(&GenericDialect {}, fingerprint) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for statement in &statements {
        let _ = visit_relations(statement, |name| {
            if let Some(last) = name.0.last() {
                let t = last.to_string().trim_matches(['"', '`']).to_string();
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};

    fn pg(sql: &str) -> String {
        fingerprint(&PostgreSqlDialect {}, sql)
    }

    #[test]
    fn literals_and_placeholders_share_a_fingerprint() {
        let a = pg("SELECT abalance FROM pgbench_accounts WHERE aid = 42");
        let b = pg("select  abalance\n from pgbench_accounts where aid = $1;");
        assert_eq!(a, b);
        assert_eq!(a, "select abalance from pgbench_accounts where aid = ?");
    }

    #[test]
    fn lists_collapse_and_comments_go() {
        assert_eq!(
            pg("SELECT * FROM t WHERE id IN (1, 2, 3) -- hot\n AND name = 'x' /* c */"),
            "select * from t where id in (?) and name = ?"
        );
        assert_eq!(pg("SELECT -5, 'a''b', E'\\n', $$body$$"), "select ?");
        assert_eq!(
            pg("SELECT a - 5 FROM t WHERE x = -5"),
            "select a - ? from t where x = ?"
        );
    }

    #[test]
    fn quoted_identifiers_keep_their_case() {
        assert_eq!(pg(r#"SELECT "Name" FROM "T""#), r#"select "Name" from "T""#);
        let my = fingerprint(&MySqlDialect {}, "SELECT `Name` FROM t WHERE a = ?");
        assert_eq!(my, "select `Name` from t where a = ?");
    }

    #[test]
    fn unreadable_text_still_gets_a_fingerprint() {
        assert_eq!(pg("SELECT 'unterminated"), "SELECT 'unterminated");
        let long = format!("SELECT {}", "x,".repeat(5000));
        assert!(pg(&long).chars().count() <= MAX_LEN + 1);
    }
}
