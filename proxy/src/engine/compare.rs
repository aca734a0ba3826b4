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
    /// Positions of the columns that are a table's primary key, as the
    /// result's metadata says (empty: unknown, or the key is not selected).
    pub key: Vec<usize>,
}

/// A value of type `type_oid` as the server sent it, in canonical text.
/// `Err` names what cannot be normalized (a binary value of a type turnout
/// does not decode).
pub fn normalize(type_oid: u32, binary: bool, raw: &[u8]) -> Result<String, String> {
    if binary {
        return decode_binary(type_oid, raw).map(|t| canonical(type_oid, &t));
    }
    Ok(canonical(type_oid, &super::text::lossless(raw)))
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
            Ok(super::text::lossless(raw).into_owned())
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
    /// The columns rows were matched by (the primary key the result
    /// carries, else the ORDER BY key); empty: whole rows as a multiset.
    pub key: Vec<String>,
    /// Both sides hold the same rows, in another order (an ordered query
    /// only, judged on its ORDER BY key when the result carries it).
    pub order_differs: bool,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.missing_count == 0
            && self.extra_count == 0
            && self.differing_count == 0
            && !self.order_differs
    }

    fn push_missing(&mut self, row: Vec<Option<String>>) {
        self.missing_count += 1;
        if self.missing.len() < MAX_SAMPLE_ROWS {
            self.missing.push(row);
        }
    }

    fn push_extra(&mut self, row: Vec<Option<String>>) {
        self.extra_count += 1;
        if self.extra.len() < MAX_SAMPLE_ROWS {
            self.extra.push(row);
        }
    }

    fn push_differing(
        &mut self,
        columns: &[String],
        target: Vec<Option<String>>,
        shadow: Vec<Option<String>>,
    ) {
        self.differing_count += 1;
        if self.differing.len() < MAX_SAMPLE_ROWS {
            let cols = (0..columns.len())
                .filter(|&i| target.get(i) != shadow.get(i))
                .map(|i| columns[i].clone())
                .collect();
            self.differing.push(Differing {
                target,
                shadow,
                columns: cols,
            });
        }
    }
}

/// How a query's rows are matched: `order_by` holds the terms of its ORDER
/// BY when each is a column (empty when it has none, or when one is an
/// expression); `ordered` says it has an ORDER BY at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub ordered: bool,
    pub order_by: Vec<OrderTerm>,
}

/// One ORDER BY term that names a result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderTerm {
    /// `ORDER BY id`, `ORDER BY t.id` (the column's name).
    Column(String),
    /// `ORDER BY 2` (counted from 1).
    Position(usize),
}

type Row = Vec<Option<String>>;

/// Compares two results. Rows are matched by key: the primary key when the
/// result carries it (`target.key`), else the ORDER BY key, else the whole
/// row (a multiset). A key seen on both sides with other values is one
/// differing row; a key on one side only is a missing or extra row. Row
/// order counts only for an ordered query, and only when the rows agree:
/// it is then its own kind (`order_differs`). `ignore`: column names left
/// out of the comparison.
pub fn compare(target: &ResultSet, shadow: &ResultSet, shape: &Shape, ignore: &[String]) -> Diff {
    let keep: Vec<usize> = (0..target.columns.len())
        .filter(|&i| !ignore.iter().any(|c| c == &target.columns[i]))
        .collect();
    let project = |row: &Row| -> Row {
        keep.iter()
            .map(|&i| row.get(i).cloned().flatten())
            .collect()
    };
    let columns: Vec<String> = keep.iter().map(|&i| target.columns[i].clone()).collect();
    let t: Vec<Row> = target.rows.iter().map(project).collect();
    let s: Vec<Row> = shadow.rows.iter().map(project).collect();
    // Positions among the compared columns; `None` when one is left out.
    let pk: Option<Vec<usize>> = (!target.key.is_empty())
        .then(|| {
            target
                .key
                .iter()
                .map(|i| keep.iter().position(|k| k == i))
                .collect()
        })
        .flatten();
    let order_key: Option<Vec<usize>> = (!shape.order_by.is_empty())
        .then(|| {
            shape
                .order_by
                .iter()
                .map(|term| {
                    let i = match term {
                        OrderTerm::Position(n) => n.checked_sub(1)?,
                        OrderTerm::Column(name) => {
                            target.columns.iter().position(|c| c == name).or_else(|| {
                                target
                                    .columns
                                    .iter()
                                    .position(|c| c.eq_ignore_ascii_case(name))
                            })?
                        }
                    };
                    keep.iter().position(|&k| k == i)
                })
                .collect()
        })
        .flatten();
    let key: Vec<usize> = pk.or_else(|| order_key.clone()).unwrap_or_default();

    let mut diff = Diff {
        key: key.iter().map(|&i| columns[i].clone()).collect(),
        ..Diff::default()
    };
    // Rows grouped by key value, in the order keys are first seen.
    let key_of = |row: &Row| -> Row { key.iter().map(|&i| row[i].clone()).collect() };
    let mut groups: Vec<(Vec<&Row>, Vec<&Row>)> = Vec::new();
    let mut index: HashMap<Row, usize> = HashMap::new();
    for (side, rows) in [(0, &t), (1, &s)] {
        for r in rows.iter() {
            let g = *index.entry(key_of(r)).or_insert_with(|| {
                groups.push((Vec::new(), Vec::new()));
                groups.len() - 1
            });
            if side == 0 {
                groups[g].0.push(r);
            } else {
                groups[g].1.push(r);
            }
        }
    }
    let mut unpaired_missing: Vec<Row> = Vec::new();
    let mut unpaired_extra: Vec<Row> = Vec::new();
    for (ts, ss) in groups {
        let (missing, extra) = multiset_difference(&ts, &ss);
        if key.is_empty() {
            unpaired_missing = missing;
            unpaired_extra = extra;
            continue;
        }
        // One key, other values: the same row, differing. Several rows under
        // one key (an ORDER BY key that is not unique) pair in order.
        let pairs = missing.len().min(extra.len());
        let mut missing = missing.into_iter();
        let mut extra = extra.into_iter();
        for _ in 0..pairs {
            if let (Some(m), Some(e)) = (missing.next(), extra.next()) {
                diff.push_differing(&columns, m, e);
            }
        }
        missing.for_each(|m| diff.push_missing(m));
        extra.for_each(|e| diff.push_extra(e));
    }
    if key.is_empty() {
        // No key: a missing row and an extra row with the same first column
        // are one row that differs; so are a lone missing row and a lone
        // extra row.
        let lone = unpaired_missing.len() == 1 && unpaired_extra.len() == 1;
        let mut extra_left: Vec<Option<Row>> = unpaired_extra.into_iter().map(Some).collect();
        for m in unpaired_missing {
            let partner = extra_left
                .iter()
                .position(|e| e.as_ref().is_some_and(|e| lone || e.first() == m.first()));
            match partner.and_then(|p| extra_left[p].take()) {
                Some(e) => diff.push_differing(&columns, m, e),
                None => diff.push_missing(m),
            }
        }
        for e in extra_left.into_iter().flatten() {
            diff.push_extra(e);
        }
    }
    if let (true, Some(k)) = (diff.is_empty() && shape.ordered, &order_key) {
        // Same rows: does the order agree? Judged on the ORDER BY key (rows
        // with equal keys may come in any order); when the result does not
        // carry the key, ties cannot be told from a wrong order, so order
        // is not judged.
        let seq = |rows: &[Row]| -> Vec<Row> {
            rows.iter()
                .map(|r| k.iter().map(|&i| r[i].clone()).collect())
                .collect()
        };
        diff.order_differs = seq(&t) != seq(&s);
    }
    diff
}

/// The rows of `t` that `s` lacks and those of `s` that `t` lacks, counting
/// duplicates, each in its side's order.
fn multiset_difference(t: &[&Row], s: &[&Row]) -> (Vec<Row>, Vec<Row>) {
    let mut counts: HashMap<&Row, i64> = HashMap::new();
    for r in t {
        *counts.entry(r).or_default() += 1;
    }
    for r in s {
        *counts.entry(r).or_default() -= 1;
    }
    let mut missing = Vec::new();
    for r in t {
        if let Some(c) = counts.get_mut(*r) {
            if *c > 0 {
                *c -= 1;
                missing.push((*r).clone());
            }
        }
    }
    let mut extra = Vec::new();
    for r in s {
        if let Some(c) = counts.get_mut(*r) {
            if *c < 0 {
                *c += 1;
                extra.push((*r).clone());
            }
        }
    }
    (missing, extra)
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
            key: Vec::new(),
        }
    }

    fn ordered_by(cols: &[&str]) -> Shape {
        Shape {
            ordered: true,
            order_by: cols
                .iter()
                .map(|c| OrderTerm::Column(c.to_string()))
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
        assert!(compare(&a, &b, &Shape::default(), &[]).is_empty());
        let d = compare(&a, &b, &ordered_by(&["id"]), &[]);
        assert!(d.order_differs && d.missing_count + d.differing_count == 0);
        // An ORDER BY key the result does not carry: ties cannot be told
        // from a wrong order, so order is not judged.
        let d = compare(&a, &b, &ordered_by(&[]), &[]);
        assert!(d.is_empty());
        // Ties on the ORDER BY key may come in any order.
        let a = rs(&["k", "v"], &[&["1", "a"], &["1", "b"]]);
        let b = rs(&["k", "v"], &[&["1", "b"], &["1", "a"]]);
        assert!(compare(&a, &b, &ordered_by(&["k"]), &[]).is_empty());
    }

    #[test]
    fn a_changed_row_names_its_columns_and_noise_can_be_ignored() {
        let a = rs(&["id", "v", "at"], &[&["1", "a", "t1"], &["2", "b", "t1"]]);
        let b = rs(
            &["id", "v", "at"],
            &[&["1", "a", "t2"], &["2", "X", "t2"], &["3", "c", "t2"]],
        );
        let d = compare(&a, &b, &Shape::default(), &["at".to_string()]);
        assert_eq!(d.differing_count, 1);
        assert_eq!(d.differing[0].columns, vec!["v".to_string()]);
        assert_eq!(d.extra_count, 1);
        assert_eq!(d.missing_count, 0);
        let d = compare(&a, &b, &Shape::default(), &[]);
        assert_eq!(d.differing_count, 2);
        assert_eq!(
            d.differing[1].columns,
            vec!["v".to_string(), "at".to_string()]
        );
    }

    fn ids(from: u32, to: u32, skip: &[u32]) -> Vec<Vec<String>> {
        (from..=to)
            .filter(|i| !skip.contains(i))
            .map(|i| vec![i.to_string(), (i * 137 % 10000).to_string()])
            .collect()
    }

    fn owned(columns: &[&str], rows: Vec<Vec<String>>) -> ResultSet {
        ResultSet {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .into_iter()
                .map(|r| r.into_iter().map(Some).collect())
                .collect(),
            key: Vec::new(),
        }
    }

    #[test]
    fn rows_missing_from_an_ordered_result_are_missing_not_shifted() {
        let a = owned(&["id", "amount_cents"], ids(1, 50, &[]));
        let b = owned(&["id", "amount_cents"], ids(1, 50, &[7, 20, 33]));
        // Matched by the ORDER BY key.
        let d = compare(&a, &b, &ordered_by(&["id"]), &[]);
        assert_eq!(
            (d.missing_count, d.extra_count, d.differing_count),
            (3, 0, 0)
        );
        assert_eq!(d.key, vec!["id".to_string()]);
        assert_eq!(d.missing[0][0].as_deref(), Some("7"));
        assert!(!d.order_differs);
        // Matched by the primary key the result carries.
        let mut a = a;
        a.key = vec![0];
        let d = compare(&a, &b, &ordered_by(&["amount_cents"]), &[]);
        assert_eq!(
            (d.missing_count, d.extra_count, d.differing_count),
            (3, 0, 0)
        );
        // One changed value under a key: differing, its column named.
        let mut rows = ids(1, 50, &[]);
        rows[9][1] = "0".into();
        let b = owned(&["id", "amount_cents"], rows);
        let d = compare(&a, &b, &Shape::default(), &[]);
        assert_eq!(
            (d.missing_count, d.extra_count, d.differing_count),
            (0, 0, 1)
        );
        assert_eq!(d.differing[0].columns, vec!["amount_cents".to_string()]);
        assert_eq!(d.differing[0].target[0].as_deref(), Some("10"));
    }

    #[test]
    fn a_key_that_is_not_unique_pairs_rows_within_it() {
        let a = rs(&["k", "v"], &[&["1", "a"], &["1", "b"], &["2", "c"]]);
        let b = rs(&["k", "v"], &[&["1", "a"], &["1", "X"], &["3", "c"]]);
        let d = compare(&a, &b, &ordered_by(&["k"]), &[]);
        assert_eq!(
            (d.missing_count, d.extra_count, d.differing_count),
            (1, 1, 1)
        );
        assert_eq!(d.differing[0].target[1].as_deref(), Some("b"));
    }
}
