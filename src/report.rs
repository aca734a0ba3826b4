//! `turnout report`: the read-diff report per query fingerprint, worst first,
//! as a terminal table, JSON, or one self-contained HTML page.

use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use turnout_control::readdiff::{self, Aggregate, DiffStatus, ReadDiff};

pub enum Format {
    Table,
    Json,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            other => Err(format!("expected table, json or html, got {other:?}")),
        }
    }
}

/// One fingerprint's line: its counts and its latest mismatch.
struct Line {
    fingerprint: String,
    agg: Aggregate,
    latest: Option<ReadDiff>,
}

/// Builds the report of `file` (a `sampling.report` path) in `format`.
pub fn render(file: &Path, format: Format) -> Result<String, String> {
    let (records, unreadable) = readdiff::read_report(file).map_err(|e| e.to_string())?;
    let summary = readdiff::read_summary(file);
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    match &summary {
        // The running proxy's counts (samples, matches, skips) when it wrote them.
        Some(s) => {
            for (fp, agg) in &s.fingerprints {
                lines.insert(
                    fp.clone(),
                    Line {
                        fingerprint: fp.clone(),
                        agg: agg.clone(),
                        latest: None,
                    },
                );
            }
        }
        // Only the records: count mismatches from them.
        None => {
            for r in &records {
                let l = lines.entry(r.fingerprint.clone()).or_insert_with(|| Line {
                    fingerprint: r.fingerprint.clone(),
                    agg: Aggregate::default(),
                    latest: None,
                });
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
    for r in &records {
        let l = lines.entry(r.fingerprint.clone()).or_insert_with(|| Line {
            fingerprint: r.fingerprint.clone(),
            agg: Aggregate::default(),
            latest: None,
        });
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
    let skipped: BTreeMap<String, u64> = summary.map(|s| s.skipped).unwrap_or_default();
    Ok(match format {
        Format::Table => table(&lines, &skipped, unreadable),
        Format::Json => serde_json::to_string_pretty(&json!({
            "fingerprints": lines.iter().map(|l| json!({
                "fingerprint": l.fingerprint,
                "samples": l.agg.samples,
                "matches": l.agg.matches,
                "mismatches": l.agg.mismatches,
                "transient": l.agg.transient,
                "skipped": l.agg.skipped,
                "last_mismatch": l.agg.last_mismatch,
                "latest": l.latest,
            })).collect::<Vec<_>>(),
            "skipped": skipped,
            "unreadable_lines": unreadable,
        }))
        .map_err(|e| e.to_string())?,
        Format::Html => html(&lines, &skipped, file),
    })
}

fn differing_columns(r: &ReadDiff) -> String {
    let mut cols: Vec<&str> = r
        .differing
        .iter()
        .flat_map(|d| d.columns.iter().map(String::as_str))
        .collect();
    cols.sort_unstable();
    cols.dedup();
    cols.join(", ")
}

fn table(lines: &[Line], skipped: &BTreeMap<String, u64>, unreadable: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10} {:>9} {:>9} {:>9} {:>9}  {:<27}  {:<16}  fingerprint",
        "mismatches",
        "transient",
        "matches",
        "samples",
        "skipped",
        "last mismatch",
        "columns differ"
    );
    for l in lines {
        let cols = l.latest.as_ref().map(differing_columns).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>10} {:>9} {:>9} {:>9} {:>9}  {:<27}  {:<16}  {}",
            l.agg.mismatches,
            l.agg.transient,
            l.agg.matches,
            l.agg.samples,
            l.agg.skipped,
            l.agg.last_mismatch.as_deref().unwrap_or("-"),
            if cols.is_empty() { "-" } else { &cols },
            l.fingerprint
        );
    }
    if lines.is_empty() {
        out.push_str("(no samples yet)\n");
    }
    if !skipped.is_empty() {
        let parts: Vec<String> = skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "skipped samples: {}", parts.join(", "));
    }
    if unreadable > 0 {
        let _ = writeln!(out, "{unreadable} unreadable line(s) in the report file");
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn row_text(row: &[Option<String>]) -> String {
    row.iter()
        .map(|v| v.as_deref().unwrap_or("NULL"))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn html(lines: &[Line], skipped: &BTreeMap<String, u64>, file: &Path) -> String {
    let mut rows = String::new();
    for (i, l) in lines.iter().enumerate() {
        let status = if l.agg.mismatches > 0 {
            "confirmed"
        } else if l.agg.transient > 0 {
            "transient"
        } else {
            "ok"
        };
        let cols = l.latest.as_ref().map(differing_columns).unwrap_or_default();
        let _ = writeln!(
            rows,
            "<tr class=\"{status}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"cols\">{}</td><td><a href=\"#fp{i}\"><code>{}</code></a></td></tr>",
            l.agg.mismatches,
            l.agg.transient,
            l.agg.matches,
            l.agg.samples,
            l.agg.skipped,
            esc(l.agg.last_mismatch.as_deref().unwrap_or("")),
            esc(&cols),
            esc(&l.fingerprint)
        );
    }
    let mut details = String::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(r) = &l.latest else { continue };
        let _ = write!(
            details,
            "<section id=\"fp{i}\"><h3><code>{}</code></h3><p>{} at {}: {} row(s) on {}, {} on {}; {} missing, {} extra, {} differing.</p>",
            esc(&l.fingerprint),
            match r.status {
                DiffStatus::Confirmed => "Confirmed mismatch",
                DiffStatus::Transient => "Transient mismatch",
            },
            esc(&r.at),
            r.rows_target,
            esc(&r.target),
            r.rows_shadow,
            esc(&r.shadow),
            r.missing_count,
            r.extra_count,
            r.differing_count
        );
        if let Some(e) = &r.shadow_error {
            let _ = write!(
                details,
                "<p class=\"err\">{} failed: {}</p>",
                esc(&r.shadow),
                esc(e)
            );
        }
        if let Some(s) = &r.statement {
            let _ = write!(details, "<pre>{}</pre>", esc(s));
        }
        let cols = esc(&r.columns.join(" | "));
        if !r.differing.is_empty() {
            let _ = write!(
                details,
                "<table><tr><th>columns differ</th><th>{} ({cols})</th><th>{} ({cols})</th></tr>",
                esc(&r.target),
                esc(&r.shadow)
            );
            for d in &r.differing {
                let _ = write!(
                    details,
                    "<tr><td class=\"cols\">{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&d.columns.join(", ")),
                    esc(&row_text(&d.target)),
                    esc(&row_text(&d.shadow))
                );
            }
            details.push_str("</table>");
        }
        for (label, rows) in [
            (format!("only on {}", r.target), &r.missing),
            (format!("only on {}", r.shadow), &r.extra),
        ] {
            if rows.is_empty() {
                continue;
            }
            let _ = write!(details, "<p>{} ({cols}):</p><ul>", esc(&label));
            for row in rows {
                let _ = write!(details, "<li><code>{}</code></li>", esc(&row_text(row)));
            }
            details.push_str("</ul>");
        }
        details.push_str("</section>\n");
    }
    let skipped_text = if skipped.is_empty() {
        "none".to_string()
    } else {
        skipped
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>turnout read-diff report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; cursor: pointer; user-select: none; }}
tr.confirmed td:first-child {{ background: #fdd; font-weight: bold; }}
tr.transient td:nth-child(2) {{ background: #ffe9c2; }}
td.cols {{ color: #a00; }}
.err {{ color: #a00; }}
code, pre {{ font: 12px ui-monospace, monospace; }}
</style></head><body>
<h1>turnout read-diff report</h1>
<p>Report file <code>{file}</code>. Fingerprints worst first; click a column heading to sort. Skipped samples: {skipped_text}.</p>
<table id="summary"><thead><tr><th>mismatches</th><th>transient</th><th>matches</th><th>samples</th><th>skipped</th><th>last mismatch</th><th>columns differ</th><th>fingerprint</th></tr></thead>
<tbody>
{rows}</tbody></table>
<h2>Latest mismatch per fingerprint</h2>
{details}
<script>
document.querySelectorAll('#summary th').forEach(function (th, col) {{
  th.addEventListener('click', function () {{
    var body = document.querySelector('#summary tbody');
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.order !== 'asc';
    th.dataset.order = asc ? 'asc' : 'desc';
    rows.sort(function (a, b) {{
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    }});
    rows.forEach(function (r) {{ body.appendChild(r); }});
  }});
}});
document.body.dataset.rendered = 'yes';
</script>
</body></html>
"#,
        file = esc(&file.display().to_string()),
    )
}
