//! `turnout report`: can I flip? One report from the read-diff report, the
//! divergence log and (when turnout is reachable) its live status, backfill
//! and verify: a headline verdict against the guards' error budget, then
//! tables, then query fingerprints, and a timeline of compared reads and
//! mismatches. As a terminal table, JSON, or one self-contained HTML page.

mod html;
mod lines;
mod text;

use lines::{fingerprint_lines, table_lines};

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use turnout_control::controller::min_compared_reads;
use turnout_control::divergence::{self, Divergence, DivergenceKind};
use turnout_control::readdiff::{self, Aggregate, DiffStatus, ReadDiff};

pub enum Format {
    Table,
    Json,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "table" | "terminal" | "text" | "txt" | "tty" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "html" | "htm" => Ok(Format::Html),
            other => Err(format!(
                "expected table (or terminal, text), json or html, got {other:?}"
            )),
        }
    }
}

/// Where the report's figures come from.
#[derive(Default)]
pub struct Sources {
    /// `sampling.report`.
    pub reads: Option<PathBuf>,
    /// `mirror.divergence_log`.
    pub divergences: Option<PathBuf>,
    /// The config's guards (defaults when no config was given).
    pub limits: Limits,
    /// `admin.socket`: the live status, backfill and verify, when reachable.
    pub socket: Option<PathBuf>,
}

/// The error budget the verdict is judged against (`[guards]`).
pub struct Limits {
    /// `None`: the default (a minimum while reads are sampled).
    pub min_compared_reads: Option<u64>,
    pub max_mismatch_rate: f64,
    pub max_mirror_errors: u64,
    pub backfill_required: bool,
    /// Whether the limits come from a config (else: defaults).
    pub from_config: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_compared_reads: None,
            max_mismatch_rate: 0.0,
            max_mirror_errors: 0,
            backfill_required: true,
            from_config: false,
        }
    }
}

impl Sources {
    /// The sources a config names: its files, guards and admin socket.
    pub fn from_config(c: &turnout_config::Config) -> Sources {
        Sources {
            reads: c.sampling.report.clone(),
            divergences: c.mirror.divergence_log.clone(),
            limits: Limits {
                min_compared_reads: Some(min_compared_reads(
                    c.guards.min_compared_reads,
                    c.sampling.rate > 0.0,
                )),
                max_mismatch_rate: c.guards.max_mismatch_rate,
                max_mirror_errors: c.guards.max_mirror_errors,
                backfill_required: c.backfill.required,
                from_config: true,
            },
            socket: c.admin.socket.clone(),
        }
    }
}

/// One line of a check in the verdict's table.
pub struct Check {
    pub name: &'static str,
    pub value: String,
    pub limit: String,
    /// `None`: not known from these sources.
    pub pass: Option<bool>,
}

/// A query fingerprint's figures and its latest mismatch.
pub struct Line {
    pub fingerprint: String,
    pub tables: Vec<String>,
    pub agg: Aggregate,
    pub latest: Option<ReadDiff>,
}

/// The headings of a fingerprint's figures, as [`Line::cells`] gives them.
pub const LINE_HEADINGS: [&str; 11] = [
    "mismatches",
    "transient",
    "matches",
    "samples",
    "skipped",
    "rate",
    "missing",
    "extra",
    "differing",
    "last mismatch",
    "columns differ",
];

impl Line {
    pub fn rate(&self) -> f64 {
        ratio(self.agg.mismatches, self.agg.samples)
    }

    /// The fingerprint's figures under [`LINE_HEADINGS`].
    pub fn cells(&self) -> [String; 11] {
        let (m, e, d) = self.rows();
        let cols = self
            .latest
            .as_ref()
            .map(differing_columns)
            .unwrap_or_default();
        [
            self.agg.mismatches.to_string(),
            self.agg.transient.to_string(),
            self.agg.matches.to_string(),
            self.agg.samples.to_string(),
            self.agg.skipped.to_string(),
            format!("{:.4}", self.rate()),
            m.to_string(),
            e.to_string(),
            d.to_string(),
            self.agg.last_mismatch.clone().unwrap_or_else(|| "-".into()),
            if cols.is_empty() { "-".into() } else { cols },
        ]
    }

    /// Missing, extra and differing rows in the latest mismatch.
    pub fn rows(&self) -> (usize, usize, usize) {
        self.latest
            .as_ref()
            .map(|r| (r.missing_count, r.extra_count, r.differing_count))
            .unwrap_or_default()
    }
}

/// One table's figures over every source.
#[derive(Default)]
pub struct TableLine {
    pub table: String,
    pub samples: u64,
    pub mismatches: u64,
    pub transient: u64,
    /// Rows in the latest mismatch of each fingerprint reading it.
    pub missing: usize,
    pub extra: usize,
    pub differing: usize,
    /// Divergence records naming it, and the blocking ones among them.
    pub divergences: u64,
    pub blocking: u64,
    /// Verify's figures for it (missing, extra, differing, repaired).
    pub verify: Option<[u64; 4]>,
}

impl TableLine {
    pub fn rate(&self) -> f64 {
        ratio(self.mismatches, self.samples)
    }

    /// What verify found for the table, in words.
    pub fn verify_text(&self) -> String {
        match self.verify {
            Some([0, 0, 0, _]) => "equal".into(),
            Some([m, e, d, rep]) => {
                format!("{m} missing, {e} extra, {d} differing, {rep} repaired")
            }
            None => "-".into(),
        }
    }

    /// Rows verify found different and did not repair, or mismatches or
    /// blocking divergences: the table needs a look.
    pub fn bad(&self) -> bool {
        self.mismatches + self.blocking > 0
            || self.verify.is_some_and(|v| v[0] + v[1] + v[2] > v[3])
    }
}

pub struct Report {
    pub go: bool,
    /// Why not (every reason), empty when `go`.
    pub reasons: Vec<String>,
    /// What the verdict was judged on.
    pub basis: String,
    pub checks: Vec<Check>,
    pub totals: Aggregate,
    pub skipped: BTreeMap<String, u64>,
    pub tables: Vec<TableLine>,
    pub lines: Vec<Line>,
    /// `[unix minute, compared, confirmed, transient]`.
    pub timeline: Vec<[u64; 4]>,
    /// Divergence records per kind, and the latest ones.
    pub kinds: BTreeMap<String, u64>,
    pub latest_divergences: Vec<Divergence>,
    /// Divergence records per unix minute.
    pub divergence_minutes: BTreeMap<u64, u64>,
    /// The live replies, when turnout was reached.
    pub status: Option<Value>,
    pub backfill: Option<Value>,
    pub verify: Option<Value>,
    pub sources: Vec<String>,
    pub unreadable: usize,
    /// When the report was made (RFC 3339, UTC).
    pub generated_at: String,
    /// Where the migration stands, when turnout was reached.
    pub phase: Option<String>,
    /// The last verify, in words (when it ran, and what it found).
    pub last_verify: Option<String>,
}

/// Divergence kinds that count against `guards.max_mirror_errors` in the
/// report: a write that is (or may be) on one side only, or wrote other rows.
fn blocking(kind: DivergenceKind) -> bool {
    !matches!(
        kind,
        DivergenceKind::UnsafeStatement | DivergenceKind::LogStalled
    )
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Unix minute of an RFC 3339 time.
fn minute_of(at: &str) -> Option<u64> {
    humantime::parse_rfc3339(at)
        .or_else(|_| humantime::parse_rfc3339_weak(at))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() / 60)
}

/// Gathers every source into the report.
pub fn build(sources: &Sources) -> Result<Report, String> {
    let mut described = Vec::new();
    let (records, unreadable, summary) = match &sources.reads {
        Some(file) => {
            let (records, unreadable) = readdiff::read_report(file).map_err(|e| e.to_string())?;
            described.push(format!("read-diff report {}", file.display()));
            (records, unreadable, readdiff::read_summary(file))
        }
        None => (Vec::new(), 0, None),
    };
    let lines = fingerprint_lines(&records, summary.as_ref());
    let mut totals = Aggregate::default();
    for l in &lines {
        totals.samples += l.agg.samples;
        totals.matches += l.agg.matches;
        totals.mismatches += l.agg.mismatches;
        totals.transient += l.agg.transient;
        totals.skipped += l.agg.skipped;
    }
    let skipped = summary
        .as_ref()
        .map(|s| s.skipped.clone())
        .unwrap_or_default();
    let mut timeline = summary.map(|s| s.timeline).unwrap_or_default();
    if timeline.is_empty() {
        // Only the records: their mismatches per minute.
        let mut by: BTreeMap<u64, [u64; 4]> = BTreeMap::new();
        for r in &records {
            if let Some(m) = minute_of(&r.at) {
                let b = by.entry(m).or_insert([m, 0, 0, 0]);
                b[1] += 1;
                match r.status {
                    DiffStatus::Confirmed => b[2] += 1,
                    DiffStatus::Transient => b[3] += 1,
                }
            }
        }
        timeline = by.into_values().collect();
    }

    let mut divergences = Vec::new();
    let mut unreadable_divergences = 0;
    if let Some(path) = &sources.divergences {
        match divergence::read_log(path) {
            Ok(c) => {
                divergences = c.records;
                unreadable_divergences = c.unreadable_lines;
                described.push(format!("divergence log {}", path.display()));
            }
            Err(e) if path.exists() => return Err(e.to_string()),
            // No log yet: nothing diverged.
            Err(_) => described.push(format!("divergence log {} (none yet)", path.display())),
        }
    }
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut divergence_minutes: BTreeMap<u64, u64> = BTreeMap::new();
    for d in &divergences {
        *kinds.entry(d.kind.name().to_string()).or_default() += 1;
        if let Some(m) = minute_of(&d.at) {
            *divergence_minutes.entry(m).or_default() += 1;
        }
    }
    let blocking_count = divergences.iter().filter(|d| blocking(d.kind)).count() as u64;

    // Live: what turnout itself says, when it answers.
    let live = sources.socket.as_ref().and_then(|socket| {
        let ask = |c| crate::ctl::ask_within(socket, c, std::time::Duration::from_secs(10)).ok();
        let status = ask("status")?;
        let backfill = ask("backfill status");
        let verify = ask("verify status");
        described.push(format!("turnout's admin socket {}", socket.display()));
        Some((status, backfill, verify))
    });
    let (status, backfill, verify) = match live {
        Some((s, b, v)) => (Some(s), b, v),
        None => (None, None, None),
    };

    let tables = table_lines(&lines, &divergences, verify.as_ref());

    // The checks, and the verdict.
    let limits = &sources.limits;
    // Live, the guard rows show turnout's own figures (its window, past an
    // `ack`), so that a row and the verdict never disagree; the files'
    // totals since they began are said beside them.
    let live_figures = status.as_ref().map(|s| {
        let f = &s["guards"]["figures"];
        let n = |k: &str| f[k].as_u64().unwrap_or(0);
        (
            n("compared"),
            n("mismatches"),
            n("mirror_errors"),
            s["guards"]["window_secs"].as_u64().unwrap_or(0),
        )
    });
    let (compared, mismatches, errors, scope) = match live_figures {
        Some((c, m, e, w)) => (c, m, Some(e), format!(" in the last {w} s, past any ack")),
        None => (
            totals.samples,
            totals.mismatches,
            sources.divergences.as_ref().map(|_| blocking_count),
            String::new(),
        ),
    };
    let in_files = |n: u64| {
        if live_figures.is_some() {
            format!("; {n} in the files in all")
        } else {
            String::new()
        }
    };
    let min = min_compared_reads(limits.min_compared_reads, totals.samples > 0);
    let rate = ratio(mismatches, compared);
    let mut checks = vec![
        Check {
            name: "compared reads",
            value: format!("{compared}{scope}{}", in_files(totals.samples)),
            limit: format!("at least {min}"),
            pass: Some(compared >= min),
        },
        Check {
            name: "confirmed mismatch rate",
            value: format!(
                "{rate:.4} ({mismatches} of {compared} compared{scope}{})",
                in_files(totals.mismatches)
            ),
            limit: format!("at most {}", limits.max_mismatch_rate),
            pass: Some(rate <= limits.max_mismatch_rate),
        },
        Check {
            name: "mirror errors and row-count mismatches",
            value: match errors {
                Some(e) => format!("{e}{scope}{}", in_files(blocking_count)),
                None => "not known (no divergence log)".into(),
            },
            limit: format!("at most {}", limits.max_mirror_errors),
            pass: errors.map(|e| e <= limits.max_mirror_errors),
        },
    ];
    let backfill_state = backfill
        .as_ref()
        .and_then(|b| b["state"].as_str().map(str::to_string));
    checks.push(Check {
        name: "backfill",
        value: backfill_state
            .clone()
            .unwrap_or_else(|| "not known (turnout not reached)".into()),
        limit: if limits.backfill_required {
            "done (backfill.required)".into()
        } else {
            "not required".into()
        },
        pass: if limits.backfill_required {
            backfill_state.as_ref().map(|s| s == "done")
        } else {
            Some(true)
        },
    });
    // From the log: whether the applier applies, and the writers that
    // bypass turnout (their writes are applied too, but they will keep
    // writing to old after a writes flip).
    if let Some(m) = status
        .as_ref()
        .map(|s| &s["mirror_source"])
        .filter(|m| m["source"] == "log")
    {
        let applier = m["applier"].as_str().unwrap_or("?");
        checks.push(Check {
            name: "log applier",
            value: format!(
                "{applier}, {} bytes behind, {} transaction(s) applied{}",
                m["lag_bytes"],
                m["applied_transactions"],
                m["stopped_because"]
                    .as_str()
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default()
            ),
            limit: "applying".into(),
            pass: Some(applier != "stopped"),
        });
        let tables: Vec<String> = m["foreign_tables"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{} ({})",
                    t["table"].as_str().unwrap_or("?"),
                    t["transactions"]
                )
            })
            .collect();
        checks.push(Check {
            name: "writes that bypass turnout",
            value: if tables.is_empty() {
                "none seen in the log".into()
            } else {
                format!(
                    "{} transaction(s): {}",
                    m["foreign_transactions"],
                    tables.join(", ")
                )
            },
            limit: "applied to the mirror; move those writers to turnout before the writes flip"
                .into(),
            pass: Some(true),
        });
    }
    // Records after the last verify began: what it proved predates them.
    let since_verify = verify
        .as_ref()
        .and_then(|v| v["started_at"].as_str())
        .map(|at| {
            divergences
                .iter()
                .filter(|d| blocking(d.kind) && d.at.as_str() > at)
                .count()
        })
        .unwrap_or(0);
    let verify_clean = verify
        .as_ref()
        .map(|v| v["last_clean"] == true && since_verify == 0);
    checks.push(Check {
        name: "verify",
        value: match (&verify, verify_clean) {
            (Some(_), Some(true)) => "both sides equal".into(),
            (Some(v), _) if v["last_clean"] == true => format!(
                "both sides were equal when it began, but {since_verify} divergence record(s) came after: verify again"
            ),
            (Some(v), _) => format!(
                "{} ({} missing, {} extra, {} differing, {} repaired)",
                v["state"].as_str().unwrap_or("?"),
                v["missing"],
                v["extra"],
                v["differing"],
                v["repaired"]
            ),
            (None, _) => "not known (turnout not reached)".into(),
        },
        limit: if limits.backfill_required {
            "both sides equal".into()
        } else {
            "not required".into()
        },
        pass: if limits.backfill_required {
            verify_clean
        } else {
            Some(true)
        },
    });

    let mut reasons: Vec<String> = Vec::new();
    let basis;
    match &status {
        Some(s) => {
            // Exactly what turnout would say of its next flip now.
            match s["next"]["change"].as_str() {
                Some(change) => {
                    basis = format!(
                        "turnout's own judgement of the next flip ({change}) now, over its guards' window of {} s",
                        s["guards"]["window_secs"]
                    );
                    reasons.extend(
                        s["next"]["refusals"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.as_str().map(str::to_string)),
                    );
                }
                None => {
                    basis = format!(
                        "turnout is in phase {}: no flip is left",
                        s["phase"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        None => {
            basis = format!(
                "the report files alone (turnout's admin socket not reached), every figure since the files began, against {}",
                if limits.from_config {
                    "the config's guards"
                } else {
                    "the default guards (pass --config for the config's)"
                }
            );
            for c in &checks {
                match c.pass {
                    Some(false) => reasons.push(format!("{}: {}, {}", c.name, c.value, c.limit)),
                    None if c.name != "mirror errors and row-count mismatches" => {
                        reasons.push(format!("{}: {}", c.name, c.value))
                    }
                    _ => {}
                }
            }
        }
    }
    // The verdict follows from the rows shown: a failing row is a reason
    // even when turnout's own judgement words it differently (or not).
    for c in &checks {
        if c.pass != Some(false) {
            continue;
        }
        let said = |word: &str| {
            reasons
                .iter()
                .any(|r| r.contains(word) || r.starts_with(c.name))
        };
        let covered = match c.name {
            "compared reads" => said("read(s) compared"),
            "confirmed mismatch rate" => said("confirmed mismatch"),
            "mirror errors and row-count mismatches" => said("mirror error"),
            "backfill" => said("backfill"),
            "verify" => said("verify"),
            "log applier" => said("log applier"),
            _ => false,
        };
        if !covered {
            reasons.push(format!("{}: {}, {}", c.name, c.value, c.limit));
        }
    }
    if sources.divergences.is_none() && reasons.is_empty() {
        reasons.push("no divergence log was read (pass --config, or --divergences FILE): mirror errors are not known".into());
    }
    let mut latest_divergences: Vec<Divergence> =
        divergences.iter().rev().take(50).cloned().collect();
    latest_divergences.reverse();
    let phase = status.as_ref().and_then(|s| {
        Some(format!(
            "{} (epoch {})",
            s["phase"].as_str()?,
            s["epoch"].as_u64().unwrap_or(0)
        ))
    });
    let last_verify = verify.as_ref().and_then(|v| {
        let state = v["state"].as_str()?;
        if state == "idle" {
            return Some("none since turnout started".into());
        }
        Some(format!(
            "{state}{}{}",
            v["started_at"]
                .as_str()
                .map(|t| format!(", started {t}"))
                .unwrap_or_default(),
            v["finished_at"]
                .as_str()
                .map(|t| format!(", finished {t}"))
                .unwrap_or_default()
        ))
    });
    Ok(Report {
        generated_at: turnout_control::readdiff::now_rfc3339(),
        phase,
        last_verify,
        go: reasons.is_empty(),
        reasons,
        basis,
        checks,
        totals,
        skipped,
        tables,
        lines,
        timeline,
        kinds,
        latest_divergences,
        divergence_minutes,
        status,
        backfill,
        verify,
        sources: described,
        unreadable: unreadable + unreadable_divergences,
    })
}

/// Builds the report in `format`, and whether its verdict is GO.
pub fn render(
    sources: &Sources,
    format: Format,
    out_path: Option<&Path>,
) -> Result<(String, bool), String> {
    let report = build(sources)?;
    let text = match format {
        Format::Table => text::render(&report),
        Format::Json => {
            serde_json::to_string_pretty(&to_json(&report)).map_err(|e| e.to_string())?
        }
        Format::Html => html::render(&report, out_path),
    };
    Ok((text, report.go))
}

fn to_json(r: &Report) -> Value {
    json!({
        "verdict": if r.go { "go" } else { "no_go" },
        "reasons": r.reasons,
        "basis": r.basis,
        "generated_at": r.generated_at,
        "phase": r.phase,
        "last_verify": r.last_verify,
        "checks": r.checks.iter().map(|c| json!({
            "check": c.name, "value": c.value, "limit": c.limit, "pass": c.pass,
        })).collect::<Vec<_>>(),
        "compared": r.totals.samples,
        "matches": r.totals.matches,
        "mismatches": r.totals.mismatches,
        "transient": r.totals.transient,
        "mismatch_rate": ratio(r.totals.mismatches, r.totals.samples),
        "tables": r.tables.iter().map(|t| json!({
            "table": t.table,
            "samples": t.samples,
            "mismatches": t.mismatches,
            "transient": t.transient,
            "mismatch_rate": t.rate(),
            "missing": t.missing,
            "extra": t.extra,
            "differing": t.differing,
            "divergences": t.divergences,
            "blocking_divergences": t.blocking,
            "verify": t.verify.map(|v| json!({"missing": v[0], "extra": v[1], "differing": v[2], "repaired": v[3]})),
        })).collect::<Vec<_>>(),
        "fingerprints": r.lines.iter().map(|l| {
            let (m, e, d) = l.rows();
            json!({
                "fingerprint": l.fingerprint,
                "tables": l.tables,
                "samples": l.agg.samples,
                "matches": l.agg.matches,
                "mismatches": l.agg.mismatches,
                "transient": l.agg.transient,
                "skipped": l.agg.skipped,
                "mismatch_rate": l.rate(),
                "missing": m,
                "extra": e,
                "differing": d,
                "last_mismatch": l.agg.last_mismatch,
                "latest": l.latest,
            })
        }).collect::<Vec<_>>(),
        "timeline": r.timeline.iter().map(|b| json!({
            "minute": b[0] * 60, "compared": b[1], "confirmed": b[2], "transient": b[3],
        })).collect::<Vec<_>>(),
        "divergences": {
            "by_kind": r.kinds,
            "latest": r.latest_divergences,
        },
        "status": r.status,
        "backfill": r.backfill,
        "verify": r.verify,
        "skipped": r.skipped,
        "sources": r.sources,
        "unreadable_lines": r.unreadable,
    })
}

/// Text of a row's values (`NULL` for NULL).
pub fn row_text(row: &[Option<String>]) -> String {
    row.iter()
        .map(|v| v.as_deref().unwrap_or("NULL"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The columns whose values differ in a record.
pub fn differing_columns(r: &ReadDiff) -> String {
    let mut cols: Vec<&str> = r
        .differing
        .iter()
        .flat_map(|d| d.columns.iter().map(String::as_str))
        .collect();
    cols.sort_unstable();
    cols.dedup();
    cols.join(", ")
}

/// `key=value` of a row's key columns, for finding it.
pub fn key_text(r: &ReadDiff, row: &[Option<String>]) -> String {
    r.key_columns
        .iter()
        .filter_map(|k| {
            let i = r.columns.iter().position(|c| c == k)?;
            Some(format!(
                "{k}={}",
                row.get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "NULL".into())
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
