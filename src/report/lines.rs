//! The report's per-fingerprint and per-table lines, from the read-diff
//! records (or their summary), the divergence log and the last verify.

use super::{blocking, Line, TableLine};
use serde_json::Value;
use std::collections::BTreeMap;
use turnout_control::divergence::Divergence;
use turnout_control::readdiff::{self, Aggregate, DiffStatus, ReadDiff};

/// Per fingerprint: the summary's counts (or the records' when there is no
/// summary) and its latest mismatch, worst first.
pub(super) fn fingerprint_lines(
    records: &[ReadDiff],
    summary: Option<&readdiff::Summary>,
) -> Vec<Line> {
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    fn line<'a>(lines: &'a mut BTreeMap<String, Line>, fp: &str) -> &'a mut Line {
        lines.entry(fp.to_string()).or_insert_with(|| Line {
            fingerprint: fp.to_string(),
            tables: turnout_proxy::engine::fingerprint::tables_of(fp),
            agg: Aggregate::default(),
            latest: None,
        })
    }
    match summary {
        Some(s) => {
            for (fp, agg) in &s.fingerprints {
                line(&mut lines, fp).agg = agg.clone();
            }
        }
        None => {
            for r in records {
                let l = line(&mut lines, &r.fingerprint);
                l.agg.samples += 1;
                match r.status {
                    DiffStatus::Confirmed => {
                        l.agg.mismatches += 1;
                        l.agg.last_mismatch = Some(r.at.clone());
                    }
                    DiffStatus::Transient => l.agg.transient += 1,
                }
            }
        }
    }
    for r in records {
        let l = line(&mut lines, &r.fingerprint);
        // The latest confirmed mismatch, else the latest transient one.
        let better = match &l.latest {
            None => true,
            Some(prev) => r.status == DiffStatus::Confirmed || prev.status == DiffStatus::Transient,
        };
        if better {
            l.latest = Some(r.clone());
        }
    }
    let mut lines: Vec<Line> = lines.into_values().collect();
    lines.sort_by(|a, b| {
        (b.agg.mismatches, b.agg.transient, b.agg.samples)
            .cmp(&(a.agg.mismatches, a.agg.transient, a.agg.samples))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    lines
}

/// Per table: the reads of it, the divergences naming it, verify's figures.
pub(super) fn table_lines(
    lines: &[Line],
    divergences: &[Divergence],
    verify: Option<&Value>,
) -> Vec<TableLine> {
    let mut by: BTreeMap<String, TableLine> = BTreeMap::new();
    fn entry<'a>(by: &'a mut BTreeMap<String, TableLine>, t: &str) -> &'a mut TableLine {
        by.entry(t.to_string()).or_insert_with(|| TableLine {
            table: t.to_string(),
            ..TableLine::default()
        })
    }
    for l in lines {
        let (m, e, d) = l.rows();
        let names = if l.tables.is_empty() {
            vec!["(not parsed)".to_string()]
        } else {
            l.tables.clone()
        };
        for t in names {
            let tl = entry(&mut by, &t);
            tl.samples += l.agg.samples;
            tl.mismatches += l.agg.mismatches;
            tl.transient += l.agg.transient;
            tl.missing += m;
            tl.extra += e;
            tl.differing += d;
        }
    }
    for d in divergences {
        let tl = entry(&mut by, d.table.as_deref().unwrap_or("(no table named)"));
        tl.divergences += 1;
        if blocking(d.kind) {
            tl.blocking += 1;
        }
    }
    if let Some(v) = verify {
        for t in v["tables"].as_array().into_iter().flatten() {
            let Some(name) = t["table"].as_str() else {
                continue;
            };
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            entry(&mut by, name).verify =
                Some([n("missing"), n("extra"), n("differing"), n("repaired")]);
        }
    }
    let mut tables: Vec<TableLine> = by.into_values().collect();
    tables.sort_by(|a, b| {
        let bad = |t: &TableLine| {
            let v = t
                .verify
                .map_or(0, |v| (v[0] + v[1] + v[2]).saturating_sub(v[3]));
            (t.mismatches + t.blocking + v, t.transient, t.samples)
        };
        bad(b).cmp(&bad(a)).then_with(|| a.table.cmp(&b.table))
    });
    tables
}
