//! The report for a terminal: verdict, checks, timeline sparklines, tables,
//! fingerprints, divergences. Plain text (no colour codes), so it reads the
//! same in a pipe, a file or a ticket.

use super::{key_text, ratio, row_text, Report, LINE_HEADINGS};
use std::fmt::Write as _;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One sparkline of `values` (the last `width` of them), scaled to its max;
/// a zero is a space-like lowest bar only when the max is zero.
pub fn sparkline(values: &[u64], width: usize) -> String {
    let values = &values[values.len().saturating_sub(width)..];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                '·'
            } else {
                BARS[((v * 7).div_ceil(max)) as usize]
            }
        })
        .collect()
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    if r.go {
        let _ = writeln!(
            out,
            "VERDICT: GO. Nothing stands in the way of the next flip."
        );
    } else {
        let _ = writeln!(
            out,
            "VERDICT: NO-GO. {} reason(s) not to flip now:",
            r.reasons.len()
        );
        for reason in &r.reasons {
            let _ = writeln!(out, "  - {}", esc(reason));
        }
    }
    let _ = writeln!(out, "Judged on {}.", esc(&r.basis));
    let _ = writeln!(
        out,
        "Generated {}; phase {}; last verify: {}.",
        r.generated_at,
        esc(r
            .phase
            .as_deref()
            .unwrap_or("not known (turnout not reached)")),
        esc(r
            .last_verify
            .as_deref()
            .unwrap_or("not known (turnout not reached)"))
    );
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<40} {:<44} {:<28} result",
        "check", "value", "budget"
    );
    for c in &r.checks {
        let _ = writeln!(
            out,
            "{:<40} {:<44} {:<28} {}",
            esc(c.name),
            esc(&c.value),
            esc(&c.limit),
            match c.pass {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "unknown",
            }
        );
    }

    if !r.timeline.is_empty() {
        let compared: Vec<u64> = r.timeline.iter().map(|b| b[1]).collect();
        let confirmed: Vec<u64> = r.timeline.iter().map(|b| b[2]).collect();
        let first = r.timeline.len().saturating_sub(60);
        let _ = writeln!(
            out,
            "\ntimeline, per minute (last {} minute(s) with samples):",
            r.timeline.len() - first
        );
        let _ = writeln!(
            out,
            "  compared reads     {}  (max {} a minute)",
            sparkline(&compared, 60),
            compared[first..].iter().max().unwrap_or(&0)
        );
        let _ = writeln!(
            out,
            "  confirmed mismatch {}  ({} in all)",
            sparkline(&confirmed, 60),
            confirmed.iter().sum::<u64>()
        );
    }
    if !r.divergence_minutes.is_empty() {
        let per: Vec<u64> = r.divergence_minutes.values().copied().collect();
        let _ = writeln!(
            out,
            "  divergences        {}  ({} record(s))",
            sparkline(&per, 60),
            per.iter().sum::<u64>()
        );
    }

    let _ = writeln!(out, "\ntables, worst first:");
    let _ = writeln!(
        out,
        "  {:<28} {:>8} {:>10} {:>9} {:>7} {:>7} {:>9} {:>11}  verify",
        "table", "compared", "mismatches", "rate", "missing", "extra", "differing", "divergences"
    );
    for t in &r.tables {
        let _ = writeln!(
            out,
            "  {:<28} {:>8} {:>10} {:>9.4} {:>7} {:>7} {:>9} {:>11}  {}",
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
        out.push_str("  (nothing compared or recorded yet)\n");
    }

    let _ = writeln!(out, "\nfingerprints, worst first:");
    // The figures, then the fingerprint (the last mismatch's time is in
    // the JSON and the HTML).
    let widths = [10, 9, 9, 9, 9, 9, 7, 5, 9, 0, 16];
    let row = |cells: &[String], fingerprint: &str| {
        let mut line = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            match w {
                0 => {}
                16 => line.push_str(&format!(" {cell:<16}")),
                w => line.push_str(&format!("{cell:>w$} ")),
            }
        }
        format!("{line}  {}\n", esc(fingerprint))
    };
    let headings: Vec<String> = LINE_HEADINGS.iter().map(|h| h.to_string()).collect();
    out.push_str(&row(&headings, "fingerprint"));
    for l in &r.lines {
        out.push_str(&row(&l.cells(), &l.fingerprint));
        if let Some(latest) = &l.latest {
            if let Some(row) = latest.missing.first() {
                let _ = writeln!(
                    out,
                    "{:>12}only on {}: {}",
                    "",
                    latest.target,
                    describe_row(latest, row)
                );
            }
            if let Some(row) = latest.extra.first() {
                let _ = writeln!(
                    out,
                    "{:>12}only on {}: {}",
                    "",
                    latest.shadow,
                    describe_row(latest, row)
                );
            }
            if let Some(dr) = latest.differing.first() {
                let _ = writeln!(
                    out,
                    "{:>12}differs ({}): {} {} / {} {}",
                    "",
                    esc(&dr.columns.join(", ")),
                    latest.target,
                    describe_row(latest, &dr.target),
                    latest.shadow,
                    esc(&row_text(&dr.shadow))
                );
            }
            if latest.order_differs {
                let _ = writeln!(out, "{:>12}same rows, in another order", "");
            }
        }
    }
    if r.lines.is_empty() {
        out.push_str("(no samples yet)\n");
    }
    if r.totals.samples > 0 {
        let _ = writeln!(
            out,
            "\n{} read(s) compared: {} matched, {} confirmed mismatch(es) (rate {:.4}), {} transient",
            r.totals.samples,
            r.totals.matches,
            r.totals.mismatches,
            ratio(r.totals.mismatches, r.totals.samples),
            r.totals.transient
        );
    }
    if !r.skipped.is_empty() {
        let parts: Vec<String> = r
            .skipped
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let _ = writeln!(out, "skipped samples: {}", parts.join(", "));
    }
    if !r.kinds.is_empty() {
        let parts: Vec<String> = r.kinds.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "\ndivergences by kind: {}", parts.join(", "));
        for d in r.latest_divergences.iter().rev().take(10) {
            let _ = writeln!(
                out,
                "  {}  {:<22} {:<18} {}{}  {}",
                esc(&d.at),
                d.kind.name(),
                esc(d.table.as_deref().unwrap_or("-")),
                d.key
                    .as_deref()
                    .map(|k| format!("key {}  ", esc(k)))
                    .unwrap_or_default(),
                esc(&d.fingerprint),
                esc(&d.detail)
            );
        }
    }
    if r.unreadable > 0 {
        let _ = writeln!(out, "{} unreadable line(s) in the files read", r.unreadable);
    }
    let _ = writeln!(out, "\nsources: {}", esc(&r.sources.join("; ")));
    out
}

/// A row as `key=… | values`.
fn describe_row(r: &turnout_control::readdiff::ReadDiff, row: &[Option<String>]) -> String {
    let key = key_text(r, row);
    esc(&if key.is_empty() {
        row_text(row)
    } else {
        format!("[{key}] {}", row_text(row))
    })
}

/// A value as a terminal shows it harmlessly: control characters (escape
/// sequences, newlines, carriage returns, C1 codes) and the characters that
/// reorder text on screen (bidirectional overrides) written as `\u{..}`
/// (`\n`, `\r`, `\t` as such), so no value can erase or forge a line.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}
