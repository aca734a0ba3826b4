//! `turnout plan`: reads both catalogs and the config and prints the
//! migration's runbook: the schema difference as DDL, the risks, the
//! phases with the exact `turnout ctl` commands, when to roll back, and
//! what to watch.

use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use turnout_config::{Config, Protocol};
use turnout_control::{Phase, RoutingState, Side};
use turnout_proxy::catalog;
use turnout_proxy::mapping::catalog::{problems, Catalog, Column};

#[derive(Serialize)]
struct Plan {
    config: String,
    protocol: String,
    old: String,
    new: String,
    phase: String,
    /// Where the mirror takes old's writes from, and what to change on
    /// the servers for it.
    mirror_source: String,
    mirror_source_notes: Vec<String>,
    /// DDL that gives `old`'s tables `new`'s shape (through the mapping).
    schema_difference: Vec<String>,
    risks: Vec<String>,
    steps: Vec<Step>,
    watch: Vec<String>,
}

#[derive(Serialize)]
struct Step {
    title: String,
    /// What it does, in words.
    about: String,
    commands: Vec<String>,
    /// When to go on to the next step.
    go_on_when: String,
    /// How to undo it, and when.
    rollback: String,
}

pub fn run(config_path: &Path, format: &str) -> ExitCode {
    if format != "text" && format != "json" {
        eprintln!("turnout plan: --format: expected text or json, got {format:?}");
        return ExitCode::from(2);
    }
    let config = match turnout_config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnout plan: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("turnout plan: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = match rt.block_on(build(&config, config_path)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("turnout plan: {e}");
            return ExitCode::from(2);
        }
    };
    if format == "json" {
        match serde_json::to_string_pretty(&plan) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("turnout plan: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", text(&plan));
    }
    ExitCode::SUCCESS
}

async fn build(config: &Config, config_path: &Path) -> Result<Plan, String> {
    let routing = Arc::new(RoutingState::new(Phase::Passthrough, 0));
    let shared = turnout_proxy::server::Shared::new(
        &config.without_outputs(),
        routing,
        turnout_proxy::adapter_for(config.protocol),
    )
    .map_err(|e| e.to_string())?;
    let (old, new) = tokio::join!(
        catalog::read_all(shared.backends(), Side::Old),
        catalog::read_all(shared.backends(), Side::New)
    );
    let old = old.map_err(|e| format!("reading old's catalog: {e}"))?;
    let new = new.map_err(|e| format!("reading new's catalog: {e}"))?;
    let phase = phase_now(config);
    let path = config_path.display().to_string();
    let shared = Arc::new(shared);
    let (mirror_source, mirror_source_notes) = match shared.adapter.log() {
        Some(log) => log
            .check(&shared, phase.authority())
            .await
            .unwrap_or_else(|e| (format!("mirror source: not available: {e}"), Vec::new())),
        None => ("mirror source: statements".to_string(), Vec::new()),
    };
    Ok(Plan {
        config: path.clone(),
        protocol: match config.protocol {
            Protocol::Postgres => "postgres".into(),
            Protocol::Mysql => "mysql".into(),
        },
        old: backend(&config.backends.old),
        new: backend(&config.backends.new),
        phase: phase.name().into(),
        mirror_source,
        mirror_source_notes,
        schema_difference: difference(config, &old, &new),
        risks: risks(config, &old, &new),
        steps: steps(config, &path, phase),
        watch: watch(config),
    })
}

fn backend(b: &turnout_config::Backend) -> String {
    format!("{}:{}/{}", b.host, b.port, b.database)
}

/// The phase turnout is in (its state file), or starts in.
fn phase_now(config: &Config) -> Phase {
    let saved = config
        .state
        .file
        .as_deref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["phase"].as_str().and_then(|p| p.parse().ok()));
    saved
        .or_else(|| {
            config
                .state
                .initial_phase
                .as_deref()
                .and_then(|p| p.parse().ok())
        })
        .unwrap_or(Phase::Passthrough)
}

fn column_ddl(c: &Column) -> String {
    let mut s = format!("{} {}", c.name, c.data_type);
    if let Some(d) = &c.default {
        s.push_str(&format!(" DEFAULT {d}"));
    }
    if !c.nullable {
        s.push_str(" NOT NULL");
    }
    s
}

/// DDL that gives each of `old`'s tables its shape on `new`.
fn difference(config: &Config, old: &Catalog, new: &Catalog) -> Vec<String> {
    let mysql = config.protocol == Protocol::Mysql;
    let mut out = Vec::new();
    let mut targets = BTreeSet::new();
    let mut names: Vec<&String> = old.tables.keys().collect();
    names.sort();
    for name in names {
        let (old_cols, _) = &old.tables[name];
        let m = config.mapping.tables.iter().find(|t| &t.old == name);
        let new_name = m.map(|t| t.new_name().to_string()).unwrap_or(name.clone());
        targets.insert(new_name.clone());
        let rename = |c: &str| {
            m.and_then(|t| t.columns.get(c))
                .cloned()
                .unwrap_or(c.to_string())
        };
        let dropped = |c: &str| m.is_some_and(|t| t.drop.iter().any(|d| d == c));
        let Some((new_cols, _)) = new.tables.get(&new_name) else {
            let cols: Vec<String> = old_cols
                .iter()
                .filter(|c| !dropped(&c.name))
                .map(|c| {
                    column_ddl(&Column {
                        name: rename(&c.name),
                        ..c.clone()
                    })
                })
                .collect();
            out.push(format!(
                "CREATE TABLE {new_name} ({}); -- only on old",
                cols.join(", ")
            ));
            continue;
        };
        if &new_name != name {
            out.push(format!("ALTER TABLE {name} RENAME TO {new_name};"));
        }
        let mut fed = BTreeSet::new();
        for c in old_cols {
            if dropped(&c.name) {
                out.push(format!("ALTER TABLE {new_name} DROP COLUMN {};", c.name));
                continue;
            }
            let to = rename(&c.name);
            if to != c.name {
                out.push(format!(
                    "ALTER TABLE {new_name} RENAME COLUMN {} TO {to};",
                    c.name
                ));
            }
            match new_cols.iter().find(|n| n.name == to) {
                None => out.push(format!(
                    "-- {name}.{} has no counterpart on {new_name}: rename or drop it in [mapping]",
                    c.name
                )),
                Some(n) => {
                    fed.insert(n.name.clone());
                    if n.data_type != c.data_type {
                        out.push(if mysql {
                            format!("ALTER TABLE {new_name} MODIFY COLUMN {};", column_ddl(n))
                        } else {
                            format!(
                                "ALTER TABLE {new_name} ALTER COLUMN {to} TYPE {};",
                                n.data_type
                            )
                        });
                    }
                }
            }
        }
        for n in new_cols.iter().filter(|n| !fed.contains(&n.name)) {
            out.push(format!(
                "ALTER TABLE {new_name} ADD COLUMN {};",
                column_ddl(n)
            ));
        }
    }
    let mut only_new: Vec<&String> = new
        .tables
        .keys()
        .filter(|t| !targets.contains(*t))
        .collect();
    only_new.sort();
    for t in only_new {
        out.push(format!("-- table {t} exists only on new"));
    }
    if out.is_empty() {
        out.push("-- none: new has old's tables and columns (through the mapping)".into());
    }
    out
}

fn risks(config: &Config, old: &Catalog, new: &Catalog) -> Vec<String> {
    let mut out = problems(&config.mapping, old, new);
    let mut names: Vec<&String> = old.tables.keys().collect();
    names.sort();
    for name in &names {
        let (cols, key) = &old.tables[*name];
        if !key {
            out.push(format!(
                "table {name} has no primary key: rows cannot be told apart for backfill, verify and divergence records"
            ));
        }
        for c in cols {
            let Some(d) = c.default.as_deref() else {
                continue;
            };
            let lower = d.to_lowercase();
            if lower.contains("nextval(") || lower.contains("auto_increment") {
                out.push(format!(
                    "{name}.{} takes ids from a sequence ({d}): turnout copies the authority's ids to the mirror and moves new's sequence past old's at the writes flip",
                    c.name
                ));
            } else if [
                "now()",
                "current_timestamp",
                "random()",
                "gen_random_uuid()",
                "uuid()",
                "clock_timestamp()",
            ]
            .iter()
            .any(|f| lower.contains(f))
            {
                out.push(format!(
                    "{name}.{} defaults to {d}, which differs per run: turnout evaluates it once on the authority and copies the value (statements it cannot pin are recorded as unsafe)",
                    c.name
                ));
            }
        }
    }
    for (table, column, to) in &old.foreign_keys {
        out.push(format!(
            "foreign key {table}.{column} -> {to}: copy {to} before {table} when backfilling; mirrored writes keep the authority's order"
        ));
    }
    let mut large: Vec<(&String, &i64)> = old.rows.iter().filter(|(_, n)| **n >= 100_000).collect();
    large.sort_by(|a, b| b.1.cmp(a.1));
    for (t, n) in large {
        out.push(format!(
            "large table {t}: about {n} rows (estimated): its backfill and verify take time; watch client latency meanwhile"
        ));
    }
    if let Some(path) = &config.mirror.divergence_log {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut unsafe_seen: std::collections::BTreeMap<String, usize> = Default::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["kind"] == "unsafe_statement" {
                *unsafe_seen
                    .entry(v["fingerprint"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
        for (fp, n) in unsafe_seen {
            out.push(format!(
                "statement seen as unsafe {n} time(s) (its effect may differ on the mirror): {fp}"
            ));
        }
    }
    if config.admin.socket.is_none() {
        out.push(
            "admin.socket is not set: the turnout ctl commands below need it (add [admin] socket = \"...\")"
                .into(),
        );
    }
    if config.state.file.is_none() {
        out.push(
            "state.file is not set: a restart of turnout would forget the phase (add [state] file = \"...\")"
                .into(),
        );
    }
    out
}

fn steps(config: &Config, path: &str, phase: Phase) -> Vec<Step> {
    let ctl = |cmd: &str| format!("turnout ctl --config {path} {cmd}");
    let g = &config.guards;
    let guards = format!(
        "turnout ctl status shows no guard failures: at least {} read(s) compared in the last {} s, confirmed mismatch rate at most {}, at most {} mirror error(s)",
        turnout_control::controller::min_compared_reads(
            g.min_compared_reads,
            config.sampling.rate > 0.0
        ),
        g.window_secs,
        g.max_mismatch_rate,
        g.max_mirror_errors
    );
    let mut steps = Vec::new();
    if phase == Phase::Passthrough {
        steps.push(Step {
            title: "Start mirroring".into(),
            about: "Every write goes to old, then in step to new; reads stay on old. No restart: sessions opened in passthrough close at their next idle moment and their clients connect again, mirrored; backfill waits until they are gone.".into(),
            commands: vec![ctl("flip mirror --dry-run"), ctl("flip mirror")],
            go_on_when: "turnout ctl status says phase mirror and no session opened in passthrough is left".into(),
            rollback: format!("none from turnout (sessions opened in mirror cannot go back to passthrough); to undo, stop turnout, remove the state file ([state] file in {path}) and start it again in passthrough"),
        });
    }
    steps.push(Step {
        title: "Mirror and compare".into(),
        about: "Copy the rows that predate mirroring to new (backfill, under a shared row lock per batch, resumable), prove both sides equal (verify by key-range checksums; --repair copies differing rows again), then compare a sample of reads on new and watch the read diffs fall to zero.".into(),
        commands: vec![
            ctl("status"),
            ctl("backfill start"),
            ctl("backfill status --watch"),
            ctl("verify start"),
            ctl("verify status --watch"),
            // Sampling on (the config's rate, or 5 % when it has none).
            ctl(&format!(
                "sample {}",
                if config.sampling.rate > 0.0 {
                    config.sampling.rate
                } else {
                    0.05
                }
            )),
            ctl("diffs"),
            format!("turnout report --config {path}"),
        ],
        go_on_when: format!(
            "turnout report --config {path} says GO: {guards}; backfill done and the last verify found both sides equal{}",
            if config.backfill.required {
                " (the flip checks this: backfill.required)"
            } else {
                ""
            }
        ),
        rollback: "nothing to undo: old stays the authority and the read target (backfill pause stops the copy)".into(),
    });
    steps.push(Step {
        title: "Flip reads".into(),
        about: "Reads go to new at each session's next transaction; writes still go to old first.".into(),
        commands: vec![ctl("flip reads --dry-run"), ctl("flip reads")],
        go_on_when: format!("{guards}; reads on new do not fail (turnout_queries_total by side, the log)"),
        rollback: format!(
            "{} when reads fail or differ on new (with guards.watch_secs set, turnout does this by itself)",
            ctl("rollback")
        ),
    });
    steps.push(Step {
        title: "Flip writes".into(),
        about: format!(
            "A barrier (at most {} ms): new transactions wait, open ones finish, new's sequences move past old's, then new is the authority and old gets the mirrored writes.",
            g.barrier_ms
        ),
        commands: vec![ctl("flip writes --dry-run"), ctl("flip writes")],
        go_on_when: "no divergences recorded and no authority failures on new (turnout_authority_failures_total) for as long as you want the way back open".into(),
        rollback: format!(
            "{} (the same barrier; old's sequences move past new's) when writes fail on new",
            ctl("rollback")
        ),
    });
    steps.push(Step {
        title: "Finalize".into(),
        about: "The point of no return: old gets no more writes and there is no rollback.".into(),
        commands: vec![ctl("finalize --dry-run"), ctl("finalize --yes")],
        go_on_when: if config.mapping.tables.is_empty() {
            "done: point the application at new directly when convenient".into()
        } else if config.mapping.after_finalize == turnout_config::AfterFinalize::Translate {
            "done: turnout keeps translating old's names (mapping.after_finalize = \"translate\"): keep the application on turnout until it writes new's names".into()
        } else {
            "before it: the application writes new's names (finalize refuses while statements with old's names arrived in the last 5 minutes), or set mapping.after_finalize = \"translate\" to keep turnout translating; then point the application at new directly when convenient".into()
        },
        rollback: "none".into(),
    });
    steps
}

fn watch(config: &Config) -> Vec<String> {
    let mut out = vec![
        "turnout_phase, turnout_epoch: where the migration is".into(),
        "turnout_divergences_total, turnout_mirror_errors_total: writes new may lack (divergence log has table and key)".into(),
        "turnout_reads_compared_total by result (match, confirmed_mismatch, transient_mismatch), turnout_samples_skipped_total: shadow reads".into(),
        "turnout_query_seconds by kind and side: latency through turnout".into(),
        "turnout_authority_failures_total by side: the authority's own failures".into(),
        "turnout_flips_total, turnout_guard_refusals_total".into(),
    ];
    match &config.metrics.address {
        Some(a) => out.push(format!("scrape http://{a}/metrics")),
        None => out.push("metrics.address is not set: add it to scrape these".into()),
    }
    out
}

fn text(p: &Plan) -> String {
    let mut s = format!(
        "turnout plan for {}\n{}: old {} -> new {}; phase now: {}\n\n== Schema difference (old -> new) ==\n",
        p.config, p.protocol, p.old, p.new, p.phase
    );
    for l in &p.schema_difference {
        s.push_str(&format!("{l}\n"));
    }
    s.push_str(&format!("\n== Mirror source ==\n{}\n", p.mirror_source));
    for n in &p.mirror_source_notes {
        s.push_str(&format!("- {n}\n"));
    }
    s.push_str("\n== Risks ==\n");
    if p.risks.is_empty() {
        s.push_str("none found\n");
    }
    for r in &p.risks {
        s.push_str(&format!("- {r}\n"));
    }
    s.push_str("\n== Runbook ==\n");
    s.push_str("(`turnout` below is this program: put it on the PATH of the machine turnout runs on, e.g. `install -m 0755 target/release/turnout /usr/local/bin/`, or use its full path; `ctl` talks to the admin socket, so run it there)\n");
    for (i, step) in p.steps.iter().enumerate() {
        s.push_str(&format!("{}. {}\n   {}\n", i + 1, step.title, step.about));
        for c in &step.commands {
            s.push_str(&format!("   $ {c}\n"));
        }
        s.push_str(&format!(
            "   go on when: {}\n   rollback: {}\n\n",
            step.go_on_when, step.rollback
        ));
    }
    s.push_str("== Watch ==\n");
    for w in &p.watch {
        s.push_str(&format!("- {w}\n"));
    }
    s
}
