//! Statement texts in frontend messages: rewritten through the schema
//! mapping, and the statements that drop every prepared statement.

use super::cstr;
use crate::pg::codec::{self, put_cstr};
use bytes::{BufMut, BytesMut};

/// Whether `sql` drops every prepared statement of the session
/// (`DEALLOCATE [PREPARE] ALL`, `DISCARD ALL`), perhaps among others.
pub(super) fn drops_prepared(sql: &str) -> bool {
    let t = sql.trim_start();
    let starts = |w: &str| t.get(..w.len()).is_some_and(|p| p.eq_ignore_ascii_case(w));
    let several = t.trim_end().trim_end_matches(';').contains(';');
    if !(starts("deallocate") || starts("discard") || several) {
        return false;
    }
    let lower = t.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .any(|w| matches!(w, ["deallocate" | "discard" | "prepare", "all"]))
}

/// [`rewrite_statements`] with a mapping that changes every statement (for
/// the fuzz targets).
#[doc(hidden)]
pub fn rewrite_for_fuzzing(msgs: &[u8]) -> usize {
    rewrite_statements(msgs, |sql| Some(format!("{sql} "))).len()
}

/// `msgs` (whole frontend messages) with the SQL of each Query and Parse
/// replaced by `map`'s answer, when it has one.
pub(super) fn rewrite_statements<'a>(
    msgs: &'a [u8],
    map: impl Fn(&str) -> Option<String>,
) -> std::borrow::Cow<'a, [u8]> {
    let mut out: Option<BytesMut> = None;
    let mut at = 0;
    while let Some(len) = msgs
        .get(at + 1..at + 5)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
    {
        let end = (at + 1 + len).min(msgs.len());
        let tag = msgs[at];
        let body = msgs.get(at + 5..end).unwrap_or_default();
        let replaced = match tag {
            b'Q' => cstr(body)
                .and_then(|(sql, _)| map(sql))
                .map(|sql| codec::query(&sql)),
            b'P' => cstr(body)
                .and_then(|(name, rest)| cstr(rest).map(|(sql, types)| (name, sql, types)))
                .and_then(|(name, sql, types)| {
                    map(sql).map(|sql| {
                        let mut b = BytesMut::new();
                        put_cstr(&mut b, name);
                        put_cstr(&mut b, &sql);
                        b.put_slice(types);
                        codec::frame(b'P', &b)
                    })
                }),
            _ => None,
        };
        match replaced {
            Some(f) => out
                .get_or_insert_with(|| BytesMut::from(&msgs[..at]))
                .extend_from_slice(&f),
            None => {
                if let Some(o) = out.as_mut() {
                    o.extend_from_slice(&msgs[at..end]);
                }
            }
        }
        let stuck = end <= at + 1;
        at = end;
        if stuck {
            break;
        }
    }
    match out {
        Some(mut o) => {
            if at < msgs.len() {
                o.extend_from_slice(&msgs[at..]);
            }
            std::borrow::Cow::Owned(o.to_vec())
        }
        None => std::borrow::Cow::Borrowed(msgs),
    }
}

#[cfg(test)]
mod tests {
    use super::super::query;
    use super::*;
    use crate::pg::codec;
    use bytes::{BufMut, Bytes, BytesMut};

    fn parse(name: &str, sql: &str) -> Bytes {
        let mut b = BytesMut::new();
        put_cstr(&mut b, name);
        put_cstr(&mut b, sql);
        b.put_u16(0);
        codec::frame(b'P', &b)
    }

    #[test]
    fn statements_dropping_every_prepared_statement_are_seen() {
        for sql in [
            "DEALLOCATE ALL",
            "  discard all;",
            "deallocate prepare all",
            "SET x = 1; DISCARD ALL",
        ] {
            assert!(drops_prepared(sql), "{sql}");
        }
        for sql in [
            "DEALLOCATE _pg3_1",
            "SELECT 'all'",
            "DISCARD PLANS",
            "UPDATE t SET a = 'discard all'",
        ] {
            assert!(!drops_prepared(sql), "{sql}");
        }
    }

    #[test]
    fn statements_are_rewritten_in_place_and_the_rest_kept() {
        let map =
            |sql: &str| (sql == "SELECT a FROM t").then(|| "SELECT b AS a FROM u".to_string());
        let mut msgs = BytesMut::new();
        msgs.extend_from_slice(&parse("s1", "SELECT a FROM t"));
        msgs.extend_from_slice(&codec::frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
        msgs.extend_from_slice(&query("SELECT a FROM t"));
        msgs.extend_from_slice(&codec::frame(b'S', &[]));
        let out = rewrite_statements(&msgs, map);
        let mut expected = BytesMut::new();
        expected.extend_from_slice(&parse("s1", "SELECT b AS a FROM u"));
        expected.extend_from_slice(&codec::frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
        expected.extend_from_slice(&query("SELECT b AS a FROM u"));
        expected.extend_from_slice(&codec::frame(b'S', &[]));
        assert_eq!(&out[..], &expected[..]);
        // Nothing to change: the very same bytes, not a copy.
        let same = query("SELECT 1");
        assert!(matches!(
            rewrite_statements(&same, map),
            std::borrow::Cow::Borrowed(_)
        ));
        // Cut or lying lengths are passed on as they are, never a panic.
        for cut in [
            &msgs[..3],
            &msgs[..9],
            b"Q\0\0\0\x01".as_slice(),
            b"Q\xff\xff\xff\xff",
        ] {
            let _ = rewrite_statements(cut, map);
        }
    }
}
