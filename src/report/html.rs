//! The report as one self-contained HTML page (no network: styles, script
//! and the timeline chart, an inline SVG, are in the page), laid out for a
//! 1280 px wide screen.

use super::{key_text, ratio, row_text, Report, LINE_HEADINGS};
use std::fmt::Write as _;
use std::path::Path;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The timeline as an inline SVG: compared reads per minute as grey bars,
/// confirmed mismatches as red bars over them, divergence records as orange
/// ticks, on one time axis.
fn chart(r: &Report) -> String {
    let (w, h, left, bottom, top) = (1160.0_f64, 220.0_f64, 56.0_f64, 28.0_f64, 12.0_f64);
    let mut minutes: Vec<u64> = r.timeline.iter().map(|b| b[0]).collect();
    minutes.extend(r.divergence_minutes.keys().copied());
    let (Some(&first), Some(&last)) = (minutes.iter().min(), minutes.iter().max()) else {
        return "<p class=\"muted\">No reads compared and no divergences recorded yet: nothing to chart.</p>".into();
    };
    let span = (last - first + 1) as f64;
    let plot_w = w - left - 8.0;
    let plot_h = h - bottom - top;
    let bar = (plot_w / span).clamp(1.0, 24.0);
    let max = r.timeline.iter().map(|b| b[1]).max().unwrap_or(0).max(1) as f64;
    let x = |m: u64| left + (m - first) as f64 * plot_w / span;
    let y = |v: f64| top + plot_h - v / max * plot_h;
    let mut svg = format!(
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"compared reads and mismatches per minute\">"
    );
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\" class=\"axis\"/><line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" class=\"axis\"/>",
        b = top + plot_h,
        r = w - 8.0
    );
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" class=\"lbl\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" class=\"lbl\" text-anchor=\"end\">0</text>",
        left - 6.0,
        top + 10.0,
        max as u64,
        left - 6.0,
        top + plot_h
    );
    for b in &r.timeline {
        let _ = write!(
            svg,
            "<rect class=\"compared\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{} compared</title></rect>",
            x(b[0]),
            y(b[1] as f64),
            (bar - 1.0).max(1.0),
            top + plot_h - y(b[1] as f64),
            b[1]
        );
        if b[2] > 0 {
            let _ = write!(
                svg,
                "<rect class=\"mismatch\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{} confirmed mismatch(es)</title></rect>",
                x(b[0]),
                y(b[2] as f64).min(top + plot_h - 3.0),
                (bar - 1.0).max(1.0),
                (top + plot_h - y(b[2] as f64)).max(3.0),
                b[2]
            );
        }
    }
    for (&m, &n) in &r.divergence_minutes {
        let _ = write!(
            svg,
            "<rect class=\"divergence\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\"><title>{n} divergence record(s)</title></rect>",
            x(m),
            top + plot_h + 2.0,
            (bar - 1.0).max(2.0)
        );
    }
    let label = |m: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(m * 60),
        )
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
    };
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{}\" class=\"lbl\">{} UTC</text><text x=\"{}\" y=\"{}\" class=\"lbl\" text-anchor=\"end\">{} UTC</text></svg>",
        h - 4.0,
        label(first),
        w - 8.0,
        h - 4.0,
        label(last)
    );
    svg.push_str(
        "<p class=\"legend\"><span class=\"sw compared\"></span>compared reads per minute <span class=\"sw mismatch\"></span>confirmed mismatches <span class=\"sw divergence\"></span>divergence records (mirror)</p>",
    );
    svg
}

pub fn render(r: &Report, out_path: Option<&Path>) -> String {
    let mut body = String::new();
    // The verdict first: can I flip?
    let (class, word) = if r.go {
        ("go", "GO")
    } else {
        ("no-go", "NO-GO")
    };
    let _ = write!(
        body,
        "<section id=\"verdict\" class=\"verdict {class}\" data-verdict=\"{class}\"><h2>Verdict: {word}</h2>"
    );
    if r.go {
        body.push_str("<p>Nothing stands in the way of the next flip.</p>");
    } else {
        let _ = write!(
            body,
            "<p>{} reason(s) not to flip now:</p><ul class=\"reasons\">",
            r.reasons.len()
        );
        for reason in &r.reasons {
            let _ = write!(body, "<li>{}</li>", esc(reason));
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<p class=\"muted\">Judged on {}.</p><p class=\"muted\" id=\"generated\">Generated {}; phase {}; last verify: {}.</p></section>",
        esc(&r.basis),
        esc(&r.generated_at),
        esc(r.phase.as_deref().unwrap_or("not known (turnout not reached)")),
        esc(r.last_verify.as_deref().unwrap_or("not known (turnout not reached)"))
    );

    body.push_str("<h2>Error budget</h2><table id=\"checks\"><thead><tr><th>check</th><th>value</th><th>budget</th><th>result</th></tr></thead><tbody>");
    for c in &r.checks {
        let (cls, txt) = match c.pass {
            Some(true) => ("pass", "pass"),
            Some(false) => ("fail", "FAIL"),
            None => ("unknown", "not known"),
        };
        let _ = write!(
            body,
            "<tr class=\"{cls}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"result\">{txt}</td></tr>",
            esc(c.name),
            esc(&c.value),
            esc(&c.limit)
        );
    }
    body.push_str("</tbody></table>");

    body.push_str("<h2>Timeline</h2>");
    body.push_str(&chart(r));

    body.push_str("<h2>Tables</h2><table id=\"tables\" class=\"sortable\"><thead><tr><th>table</th><th>compared</th><th>confirmed mismatches</th><th>mismatch rate</th><th>missing</th><th>extra</th><th>differing</th><th>divergences</th><th>verify</th></tr></thead><tbody>");
    for t in &r.tables {
        let _ = write!(
            body,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if t.bad() { "confirmed" } else { "ok" },
            esc(&t.table),
            t.samples,
            t.mismatches,
            t.rate(),
            t.missing,
            t.extra,
            t.differing,
            t.divergences,
            esc(&t.verify_text())
        );
    }
    if r.tables.is_empty() {
        body.push_str(
            "<tr><td colspan=\"9\" class=\"muted\">nothing compared or recorded yet</td></tr>",
        );
    }
    body.push_str("</tbody></table>");

    body.push_str("<h2>Query fingerprints</h2><p class=\"muted\">Worst first; click a column heading to sort. Row counts are those of the latest mismatch.</p><table id=\"summary\" class=\"sortable\"><thead><tr>");
    for h in LINE_HEADINGS {
        let _ = write!(body, "<th>{h}</th>");
    }
    body.push_str("<th>fingerprint</th></tr></thead><tbody>");
    for (i, l) in r.lines.iter().enumerate() {
        let status = if l.agg.mismatches > 0 {
            "confirmed"
        } else if l.agg.transient > 0 {
            "transient"
        } else {
            "ok"
        };
        let _ = write!(body, "<tr class=\"{status}\">");
        for (h, cell) in LINE_HEADINGS.iter().zip(l.cells()) {
            let class = if *h == "columns differ" {
                " class=\"cols\""
            } else {
                ""
            };
            let _ = write!(body, "<td{class}>{}</td>", esc(&cell));
        }
        let _ = write!(
            body,
            "<td class=\"fp\"><a href=\"#fp{i}\"><code>{}</code></a></td></tr>",
            esc(&l.fingerprint)
        );
    }
    body.push_str("</tbody></table>");

    body.push_str("<h2>Latest mismatch per fingerprint</h2>");
    for (i, l) in r.lines.iter().enumerate() {
        let Some(rec) = &l.latest else { continue };
        let _ = write!(
            body,
            "<section id=\"fp{i}\" class=\"detail\"><h3><code>{}</code></h3><p>{} at {}: {} row(s) on {}, {} on {}; {} missing, {} extra, {} differing{}. Rows matched by {}.</p>",
            esc(&l.fingerprint),
            match rec.status {
                turnout_control::readdiff::DiffStatus::Confirmed => "Confirmed mismatch",
                turnout_control::readdiff::DiffStatus::Transient => "Transient mismatch",
            },
            esc(&rec.at),
            rec.rows_target,
            esc(&rec.target),
            rec.rows_shadow,
            esc(&rec.shadow),
            rec.missing_count,
            rec.extra_count,
            rec.differing_count,
            if rec.order_differs { "; same rows in another order" } else { "" },
            if rec.key_columns.is_empty() {
                "whole rows".to_string()
            } else {
                format!("key {}", esc(&rec.key_columns.join(", ")))
            }
        );
        if rec.values_hashed {
            body.push_str("<p class=\"muted\">Values other than keys are shown as keyed hashes (#…): equal hashes are equal values (sampling.log_values = true shows values).</p>");
        }
        if let Some(e) = &rec.shadow_error {
            let _ = write!(
                body,
                "<p class=\"err\">{} failed: {}</p>",
                esc(&rec.shadow),
                esc(e)
            );
        }
        if let Some(s) = &rec.statement {
            let _ = write!(body, "<pre>{}</pre>", esc(s));
        }
        let cols = esc(&rec.columns.join(" | "));
        if !rec.differing.is_empty() {
            let _ = write!(
                body,
                "<table class=\"rows\"><tr><th>key</th><th>columns differ</th><th>{} ({cols})</th><th>{} ({cols})</th></tr>",
                esc(&rec.target),
                esc(&rec.shadow)
            );
            for dr in &rec.differing {
                let _ = write!(
                    body,
                    "<tr><td class=\"key\">{}</td><td class=\"cols\">{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&key_text(rec, &dr.target)),
                    esc(&dr.columns.join(", ")),
                    esc(&row_text(&dr.target)),
                    esc(&row_text(&dr.shadow))
                );
            }
            body.push_str("</table>");
        }
        for (label, rows) in [
            (format!("only on {}", rec.target), &rec.missing),
            (format!("only on {}", rec.shadow), &rec.extra),
        ] {
            if rows.is_empty() {
                continue;
            }
            let _ = write!(body, "<p>{} ({cols}):</p><ul>", esc(&label));
            for row in rows {
                let key = key_text(rec, row);
                let _ = write!(
                    body,
                    "<li>{}<code>{}</code></li>",
                    if key.is_empty() {
                        String::new()
                    } else {
                        format!("<span class=\"key\">{}</span> ", esc(&key))
                    },
                    esc(&row_text(row))
                );
            }
            body.push_str("</ul>");
        }
        body.push_str("</section>\n");
    }

    body.push_str("<h2>Mirror divergences</h2>");
    if r.kinds.is_empty() {
        body.push_str("<p class=\"muted\">No divergence recorded.</p>");
    } else {
        let parts: Vec<String> = r
            .kinds
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let _ = write!(
            body,
            "<p>By kind: {}. The latest {}:</p><table id=\"divergences\"><thead><tr><th>at</th><th>kind</th><th>side</th><th>table</th><th>key</th><th>fingerprint</th><th>detail</th></tr></thead><tbody>",
            parts.join(", "),
            r.latest_divergences.len()
        );
        for d in r.latest_divergences.iter().rev() {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"key\">{}</td><td class=\"fp\"><code>{}</code></td><td>{}</td></tr>",
                esc(&d.at),
                esc(d.kind.name()),
                esc(&d.side),
                esc(d.table.as_deref().unwrap_or("-")),
                esc(d.key.as_deref().unwrap_or("")),
                esc(&d.fingerprint),
                esc(&d.detail)
            );
        }
        body.push_str("</tbody></table>");
    }

    let skipped = if r.skipped.is_empty() {
        "none".to_string()
    } else {
        r.skipped
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        body,
        "<p class=\"muted\">{} read(s) compared: {} matched, {} confirmed mismatch(es) (rate {:.4}), {} transient. Skipped samples: {skipped}.{}</p>",
        r.totals.samples,
        r.totals.matches,
        r.totals.mismatches,
        ratio(r.totals.mismatches, r.totals.samples),
        r.totals.transient,
        if r.unreadable > 0 {
            format!(" {} unreadable line(s) in the files read.", r.unreadable)
        } else {
            String::new()
        }
    );
    let _ = write!(
        body,
        "<p class=\"muted\">Sources: {}.{}</p>",
        esc(&r.sources.join("; ")),
        out_path
            .map(|p| format!(" Written to {}.", esc(&p.display().to_string())))
            .unwrap_or_default()
    );

    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>turnout report: {word}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 1.5em 2em; max-width: 1200px; color: #222; }}
h1 {{ margin: 0 0 .3em; }}
h2 {{ margin: 1.4em 0 .4em; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; width: 100%; table-layout: auto; }}
th, td {{ border: 1px solid #ccc; padding: .3em .5em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
table.sortable th {{ cursor: pointer; user-select: none; }}
td.fp, td.fp code {{ overflow-wrap: anywhere; }}
.verdict {{ border-radius: 6px; padding: .6em 1.2em; margin: .8em 0 1em; }}
.verdict h2 {{ margin: .2em 0; font-size: 2em; }}
.verdict.go {{ background: #e3f6e3; border: 2px solid #2a8a2a; }}
.verdict.no-go {{ background: #fde4e4; border: 2px solid #b22; }}
tr.fail td.result {{ background: #fdd; font-weight: bold; }}
tr.pass td.result {{ background: #e3f6e3; }}
tr.unknown td.result {{ background: #f4f0d8; }}
tr.confirmed td:first-child {{ background: #fdd; font-weight: bold; }}
tr.transient td:nth-child(2) {{ background: #ffe9c2; }}
td.cols {{ color: #a00; }}
.key {{ font-family: ui-monospace, monospace; color: #035; }}
.err {{ color: #a00; }}
.muted {{ color: #666; }}
code, pre {{ font: 12px ui-monospace, monospace; }}
svg {{ max-width: 100%; height: auto; }}
svg .axis {{ stroke: #888; stroke-width: 1; }}
svg .lbl {{ font: 11px system-ui, sans-serif; fill: #555; }}
svg .compared, .sw.compared {{ fill: #b8c4d0; background: #b8c4d0; }}
svg .mismatch, .sw.mismatch {{ fill: #c22; background: #c22; }}
svg .divergence, .sw.divergence {{ fill: #e80; background: #e80; }}
.sw {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 14px; vertical-align: -1px; }}
.legend {{ margin: 0 0 1em; }}
</style></head><body>
<h1>turnout report</h1>
{body}
<script>
document.querySelectorAll('table.sortable').forEach(function (table) {{
  table.querySelectorAll('th').forEach(function (th, col) {{
    th.addEventListener('click', function () {{
      var tbody = table.tBodies[0];
      var rows = Array.prototype.slice.call(tbody.rows);
      var asc = th.dataset.order !== 'asc';
      th.dataset.order = asc ? 'asc' : 'desc';
      rows.sort(function (a, b) {{
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      }});
      rows.forEach(function (r) {{ tbody.appendChild(r); }});
    }});
  }});
}});
document.body.dataset.rendered = 'yes';
</script>
</body></html>
"#
    )
}
