//! Entry points of the fuzz targets (`fuzz/`, run with cargo fuzz): each
//! takes any bytes and must never panic. Not an API.

use crate::engine::{classify::classify_uncached, SqlDialect};
use crate::pg::codec::{self, CodecError, FrameScanner};

/// A client's bytes as turnout reads them: a startup packet, then frames
/// found by the scanner (in two pieces), their bodies decoded.
pub fn pg_frontend(data: &[u8]) {
    let _ = codec::parse_startup(data);
    if data.len() >= 4 {
        let _ = codec::startup_len([data[0], data[1], data[2], data[3]]);
    }
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut scanner = FrameScanner::default();
    let mut look = |seen: codec::Seen<'_>| -> Result<(), CodecError> {
        if let Some(body) = seen.body {
            let _ = codec::data_row_values(body);
            let _ = codec::error_fields(body);
            let _ = codec::error_text(body);
            let _ = codec::is_server_failure(body);
        }
        Ok(())
    };
    if let Ok(n) = scanner.scan(&data[..cut], 1 << 20, &mut look) {
        let _ = scanner.scan(&data[n.min(cut)..], 1 << 20, &mut look);
    }
    let _ = crate::pg::mirror::rewrite_for_fuzzing(data);
}

/// A MySQL server's answer (packets split by their first byte as length),
/// a client's handshake response and a KILL statement.
pub fn mysql(data: &[u8]) {
    let mut packets = Vec::new();
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        packets.push(&tail[..len]);
        rest = &tail[len..];
    }
    let answer =
        crate::mysql::response::follow_any(&packets, data.first().is_some_and(|b| b & 1 == 1));
    let _ = crate::mysql::shadow::result_set(&answer);
    let _ =
        mysql_common::io::ParseBuf(data).parse::<mysql_common::packets::HandshakeResponse<'_>>(());
    let _ = crate::mysql::kill::parse(&String::from_utf8_lossy(data));
    let _ = crate::mysql::packet::err_text(data);
}

/// Any text as SQL: classified in both dialects, and translated through a
/// schema mapping with renames, a dropped and a computed column. The cached
/// classification must be the text's own: the text, and the text with its
/// digits and quoted letters changed (other literal values, so often the
/// same cache key), each classified through the cache after the other must
/// get what they get uncached.
pub fn sql(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let cut = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let first = String::from_utf8_lossy(&data[..cut]);
    let second = String::from_utf8_lossy(data.get(cut + 1..).unwrap_or_default());
    for dialect in [SqlDialect::Postgres, SqlDialect::Mysql] {
        let _ = classify_uncached(dialect, &text);
        for (a, b) in [
            (first.to_string(), second.to_string()),
            (text.to_string(), other_literals(&text)),
        ] {
            if let Err(e) = cache_agrees(dialect, &a, &b) {
                panic!("{e}");
            }
        }
        let mapping = turnout_config::Mapping {
            after_finalize: Default::default(),
            tables: vec![turnout_config::TableMapping {
                old: "users".into(),
                new: Some("accounts".into()),
                columns: [("name".to_string(), "full_name".to_string())]
                    .into_iter()
                    .collect(),
                drop: vec!["legacy".into()],
                computed: [("domain".to_string(), "lower(email)".to_string())]
                    .into_iter()
                    .collect(),
            }],
        };
        if let Ok(m) = crate::mapping::SchemaMap::new(&mapping, dialect) {
            let _ = m.translate(&text);
            let _ = m.translate_prepared(&text);
        }
    }
}

/// `sql` with its digits changed and letters inside single quotes changed:
/// the same statement with other literal values, where the lexing agrees.
pub fn other_literals(sql: &str) -> String {
    let mut quoted = false;
    sql.chars()
        .map(|c| match c {
            '\'' => {
                quoted = !quoted;
                c
            }
            '0'..='8' => ((c as u8) + 1) as char,
            '9' => '0',
            'a'..='y' if quoted => ((c as u8) + 1) as char,
            _ => c,
        })
        .collect()
}

/// Classifies `a` then `b` through one cache; each answer must be the one
/// the text gets uncached (the parser's complaint aside, which may quote a
/// literal).
pub fn cache_agrees(dialect: SqlDialect, a: &str, b: &str) -> Result<(), String> {
    let cache = crate::engine::Classifier::new(dialect, 16);
    for text in [a, b] {
        let mut cached = (*cache.classify(text)).clone();
        let mut own = classify_uncached(dialect, text);
        cached.parse_error = None;
        own.parse_error = None;
        if cached != own {
            return Err(format!(
                "{dialect:?}: the cache answered {cached:?} for {text:?}, which classifies as {own:?} (after {a:?})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every input a fuzz run ever crashed on (`fuzz/regressions/<target>/`)
    /// goes through its target again without a panic.
    #[test]
    fn crashes_found_by_fuzzing_stay_fixed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        let mut seen = 0;
        for (target, run) in [
            ("pg_frontend", super::pg_frontend as fn(&[u8])),
            ("mysql_packets", super::mysql),
            ("sql", super::sql),
        ] {
            let Ok(dir) = std::fs::read_dir(root.join(target)) else {
                continue;
            };
            for f in dir.flatten() {
                run(&std::fs::read(f.path()).unwrap());
                seen += 1;
            }
        }
        assert!(
            seen > 0,
            "no regression inputs found under {}",
            root.display()
        );
    }
}
