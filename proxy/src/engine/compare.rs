//! Comparing a read's result on the read target with the shadow's, by value
//! rather than by encoding: values are normalized (numbers, timestamps, text
//! and binary result formats compare equal), rows compared as a multiset, or
//! as a sequence when the query orders them.

use std::collections::HashMap;

/// Differences kept per record, per kind.
pub const MAX_SAMPLE_ROWS: usize = 5;

/// Well-known PostgreSQL type OIDs.
pub(crate) mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const NUMERIC: u32 = 1700;
    pub const TEXT: u32 = 25;
    pub const VARCHAR: u32 = 1043;
    pub const BPCHAR: u32 = 1042;
    pub const NAME: u32 = 19;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const UUID: u32 = 2950;
}

/// One result: column names and rows of normalized values (`None` = NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// A value of type `type_oid` as the server sent it, in canonical text.
/// `Err` names what cannot be normalized (a binary value of a type turnout
/// does not decode).
pub fn normalize(type_oid: u32, binary: bool, raw: &[u8]) -> Result<String, String> {
    if binary {
        return decode_binary(type_oid, raw).map(|t| canonical(type_oid, &t));
    }
    Ok(canonical(type_oid, &String::from_utf8_lossy(raw)))
}

fn canonical(type_oid: u32, text: &str) -> String {
    match type_oid {
        oid::NUMERIC => canonical_number(text),
        oid::FLOAT4 | oid::FLOAT8 => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => canonical_number(&format!("{f}")),
            _ => text.to_string(),
        },
        oid::TIMESTAMP => canonical_timestamp(text),
        oid::TIMESTAMPTZ => canonical_timestamp(&to_utc(text).unwrap_or_else(|| text.to_string())),
        _ => text.to_string(),
    }
}

/// `1.500` and `1.5` are one number; `-0` is `0`.
fn canonical_number(text: &str) -> String {
    let t = text.trim();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return t.to_string();
    }
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if int == "0" && frac.is_empty() {
        return "0".to_string();
    }
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Timestamps as `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]` with trailing zero
/// fractions dropped, so `…:05.120000` and `…:05.12` compare equal.
fn canonical_timestamp(text: &str) -> String {
    let t = text.trim().replacen('T', " ", 1);
    let Some(dot) = t.find('.') else {
        return t;
    };
    let frac_end = t[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| dot + 1 + i)
        .unwrap_or(t.len());
    let frac = t[dot + 1..frac_end].trim_end_matches('0');
    if frac.is_empty() {
        format!("{}{}", &t[..dot], &t[frac_end..])
    } else {
        format!("{}.{}{}", &t[..dot], frac, &t[frac_end..])
    }
}

/// A `timestamptz` as text in any session time zone (`2026-11-24
/// 10:00:00.5+01`), moved to UTC (`2026-11-24 09:00:00.5+00`). `None` when
/// the text is not of that shape (`infinity`, BC dates): compared as is.
fn to_utc(text: &str) -> Option<String> {
    let t = text.trim();
    let (date, rest) = t.split_once([' ', 'T'])?;
    let sign_at = rest.rfind(['+', '-'])?;
    let (time, offset) = rest.split_at(sign_at);
    let num = |s: &str| s.parse::<i64>().ok();
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.split(':');
    let (hh, mm, ss) = (num(h.next()?)?, num(h.next()?)?, num(h.next()?)?);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut o = offset[1..].split(':');
    let oh = num(o.next()?)?;
    let om = o.next().map(num).unwrap_or(Some(0))?;
    let os = o.next().map(num).unwrap_or(Some(0))?;
    let local = days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    let utc = local - sign * (oh * 3600 + om * 60 + os);
    let days = utc.div_euclid(86_400);
    let s = utc.rem_euclid(86_400);
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!(
        "{} {:02}:{:02}:{:02}{frac}+00",
        civil_date(days),
        s / 3600,
        s / 60 % 60,
        s % 60
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn decode_binary(type_oid: u32, raw: &[u8]) -> Result<String, String> {
    let bad = || format!("binary value of type {type_oid} has {} bytes", raw.len());
    let int = |n: usize| -> Result<i64, String> {
        let b = raw.get(..n).filter(|_| raw.len() == n).ok_or_else(bad)?;
        Ok(match n {
            2 => i16::from_be_bytes([b[0], b[1]]) as i64,
            4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => i64::from_be_bytes(b.try_into().map_err(|_| bad())?),
        })
    };
    match type_oid {
        oid::BOOL => match raw {
            [0] => Ok("f".into()),
            [_] => Ok("t".into()),
            _ => Err(bad()),
        },
        oid::INT2 => int(2).map(|v| v.to_string()),
        oid::INT4 => int(4).map(|v| v.to_string()),
        oid::OID => int(4).map(|v| (v as u32).to_string()),
        oid::INT8 => int(8).map(|v| v.to_string()),
        oid::FLOAT4 => {
            let b: [u8; 4] = raw.try_into().map_err(|_| bad())?;
            Ok(format!("{}", f32::from_be_bytes(b) as f64))
        }
        oid::FLOAT8 => {
            let b: [u8; 8] = raw.try_into().map_err(|_| bad())?;
            Ok(format!("{}", f64::from_be_bytes(b)))
        }
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => {
            Ok(String::from_utf8_lossy(raw).into_owned())
        }
        oid::UUID => {
            if raw.len() != 16 {
                return Err(bad());
            }
            let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            Ok(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ))
        }
        oid::NUMERIC => decode_numeric(raw).ok_or_else(bad),
        oid::DATE => {
            let days = int(4)?;
            Ok(civil_date(days + 10_957))
        }
        oid::TIMESTAMP | oid::TIMESTAMPTZ => {
            let micros = int(8)?;
            let secs = micros.div_euclid(1_000_000);
            let frac = micros.rem_euclid(1_000_000);
            let days = secs.div_euclid(86_400) + 10_957;
            let s = secs.rem_euclid(86_400);
            let mut out = format!(
                "{} {:02}:{:02}:{:02}",
                civil_date(days),
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            if frac != 0 {
                out.push_str(&format!(".{frac:06}"));
            }
            if type_oid == oid::TIMESTAMPTZ {
                // Binary timestamptz is UTC; text depends on the session's
                // TimeZone, which the comparison runs with set to UTC.
                out.push_str("+00");
            }
            Ok(out)
        }
        other => Err(format!("binary values of type {other} are not compared")),
    }
}

/// Days since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn decode_numeric(raw: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        let b = raw.get(2 * i..2 * i + 2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i64;
    let sign = word(2)? as u16;
    let dscale = word(3)?.max(0) as usize;
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let digits: Vec<i64> = (0..ndigits)
        .map(|i| word(4 + i).map(i64::from))
        .collect::<Option<_>>()?;
    let mut int = String::new();
    for w in 0..=weight.max(-1) {
        let d = digits.get(w as usize).copied().unwrap_or(0);
        if int.is_empty() {
            if d != 0 {
                int.push_str(&d.to_string());
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        let d = if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{d:04}"));
        i += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// A row present on one side with a counterpart on the other that differs
/// in some columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differing {
    pub target: Vec<Option<String>>,
    pub shadow: Vec<Option<String>>,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Rows the target has and the shadow lacks (first few).
    pub missing: Vec<Vec<Option<String>>>,
    /// Rows the shadow has and the target lacks (first few).
    pub extra: Vec<Vec<Option<String>>>,
    pub differing: Vec<Differing>,
    /// Totals, beyond the samples kept.
    pub missing_count: usize,
    pub extra_count: usize,
    pub differing_count: usize,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.missing_count == 0 && self.extra_count == 0 && self.differing_count == 0
    }
}

/// Compares two results. `ordered`: the query has ORDER BY, so row order
/// counts. `ignore`: column names left out of the comparison.
pub fn compare(target: &ResultSet, shadow: &ResultSet, ordered: bool, ignore: &[String]) -> Diff {
    let keep: Vec<usize> = (0..target.columns.len())
        .filter(|&i| !ignore.iter().any(|c| c == &target.columns[i]))
        .collect();
    let project = |row: &Vec<Option<String>>| -> Vec<Option<String>> {
        keep.iter()
            .map(|&i| row.get(i).cloned().flatten())
            .collect()
    };
    let columns: Vec<String> = keep.iter().map(|&i| target.columns[i].clone()).collect();
    let t: Vec<Vec<Option<String>>> = target.rows.iter().map(project).collect();
    let s: Vec<Vec<Option<String>>> = shadow.rows.iter().map(project).collect();

    let (missing, extra) = if ordered {
        let mut missing = Vec::new();
        let mut extra = Vec::new();
        for i in 0..t.len().max(s.len()) {
            match (t.get(i), s.get(i)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => {
                    missing.extend(a.cloned());
                    extra.extend(b.cloned());
                }
            }
        }
        (missing, extra)
    } else {
        let mut counts: HashMap<&Vec<Option<String>>, i64> = HashMap::new();
        for r in &t {
            *counts.entry(r).or_default() += 1;
        }
        for r in &s {
            *counts.entry(r).or_default() -= 1;
        }
        let mut missing = Vec::new();
        let mut extra = Vec::new();
        for r in &t {
            if let Some(c) = counts.get_mut(r) {
                if *c > 0 {
                    *c -= 1;
                    missing.push(r.clone());
                }
            }
        }
        for r in &s {
            if let Some(c) = counts.get_mut(r) {
                if *c < 0 {
                    *c += 1;
                    extra.push(r.clone());
                }
            }
        }
        (missing, extra)
    };

    // A missing row and an extra row with the same first column are one row
    // that differs; so are a lone missing row and a lone extra row.
    let mut diff = Diff::default();
    let lone = missing.len() == 1 && extra.len() == 1;
    let mut extra_left: Vec<Option<Vec<Option<String>>>> = extra.into_iter().map(Some).collect();
    for m in missing {
        let partner = extra_left
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| lone || e.first() == m.first()));
        match partner.and_then(|p| extra_left[p].take()) {
            Some(e) => {
                diff.differing_count += 1;
                if diff.differing.len() < MAX_SAMPLE_ROWS {
                    let cols = (0..columns.len())
                        .filter(|&i| m.get(i) != e.get(i))
                        .map(|i| columns[i].clone())
                        .collect();
                    diff.differing.push(Differing {
                        target: m,
                        shadow: e,
                        columns: cols,
                    });
                }
            }
            None => {
                diff.missing_count += 1;
                if diff.missing.len() < MAX_SAMPLE_ROWS {
                    diff.missing.push(m);
                }
            }
        }
    }
    for e in extra_left.into_iter().flatten() {
        diff.extra_count += 1;
        if diff.extra.len() < MAX_SAMPLE_ROWS {
            diff.extra.push(e);
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(columns: &[&str], rows: &[&[&str]]) -> ResultSet {
        ResultSet {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| (*v != "NULL").then(|| v.to_string()))
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn text_and_binary_formats_compare_equal() {
        assert_eq!(
            normalize(oid::INT4, true, &42i32.to_be_bytes()).unwrap(),
            normalize(oid::INT4, false, b"42").unwrap()
        );
        assert_eq!(
            normalize(oid::FLOAT8, true, &1.5f64.to_be_bytes()).unwrap(),
            normalize(oid::FLOAT8, false, b"1.50").unwrap()
        );
        assert_eq!(
            normalize(oid::NUMERIC, false, b"0012.3400").unwrap(),
            "12.34"
        );
        // numeric 12.34 in binary: 2 digits, weight 0, +, dscale 2: [12, 3400]
        let bin = [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 0x0d, 0x48];
        assert_eq!(normalize(oid::NUMERIC, true, &bin).unwrap(), "12.34");
        // 2026-11-24 00:00:01.5 UTC
        let micros: i64 = (9824 * 86_400 + 1) * 1_000_000 + 500_000;
        assert_eq!(
            normalize(oid::TIMESTAMPTZ, true, &micros.to_be_bytes()).unwrap(),
            normalize(oid::TIMESTAMPTZ, false, b"2026-11-24 00:00:01.500000+00").unwrap()
        );
        assert_eq!(
            normalize(oid::TIMESTAMPTZ, false, b"2026-11-24 01:30:01.5+01:30").unwrap(),
            "2026-11-24 00:00:01.5+00"
        );
        assert_eq!(
            normalize(oid::TIMESTAMPTZ, false, b"2026-11-23 19:00:00-05").unwrap(),
            "2026-11-24 00:00:00+00"
        );
        assert_eq!(
            normalize(oid::TIMESTAMPTZ, false, b"infinity").unwrap(),
            "infinity"
        );
        assert_eq!(
            normalize(oid::DATE, true, &9824i32.to_be_bytes()).unwrap(),
            "2026-11-24"
        );
        assert!(normalize(4242, true, b"xx").is_err());
        assert!(normalize(oid::INT4, true, b"x").is_err());
    }

    #[test]
    fn multiset_ignores_order_sequence_does_not() {
        let a = rs(&["id", "v"], &[&["1", "a"], &["2", "b"]]);
        let b = rs(&["id", "v"], &[&["2", "b"], &["1", "a"]]);
        assert!(compare(&a, &b, false, &[]).is_empty());
        assert!(!compare(&a, &b, true, &[]).is_empty());
    }

    #[test]
    fn a_changed_row_names_its_columns_and_noise_can_be_ignored() {
        let a = rs(&["id", "v", "at"], &[&["1", "a", "t1"], &["2", "b", "t1"]]);
        let b = rs(
            &["id", "v", "at"],
            &[&["1", "a", "t2"], &["2", "X", "t2"], &["3", "c", "t2"]],
        );
        let d = compare(&a, &b, false, &["at".to_string()]);
        assert_eq!(d.differing_count, 1);
        assert_eq!(d.differing[0].columns, vec!["v".to_string()]);
        assert_eq!(d.extra_count, 1);
        assert_eq!(d.missing_count, 0);
        let d = compare(&a, &b, false, &[]);
        assert_eq!(d.differing_count, 2);
        assert_eq!(
            d.differing[1].columns,
            vec!["v".to_string(), "at".to_string()]
        );
    }
}
