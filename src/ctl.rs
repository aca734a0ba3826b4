//! `turnout ctl`: the admin socket's client, printing replies for people.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The admin commands, for `turnout ctl --help`.
pub const COMMANDS: &str = "\
Admin commands (changes take --dry-run: what would happen, changing nothing):
  status                         phase, epoch, sessions, divergences, guards, and every
                                 reason the next flip would be refused for
  diffs                          read-diff figures per query fingerprint, worst first
  flip mirror                    passthrough -> mirror: writes mirrored to new from now on;
                                 sessions opened before close at their next idle moment
  flip reads [--force]           mirror -> reads_new: reads served by new (guarded)
  flip writes [--force]          reads_new -> writes_new: new becomes the authority (guarded)
  finalize [--force] [--yes]     writes_new -> finalized: no way back; asks to type the
                                 phase unless --yes
  rollback [--force]             back to the phase before (refused only while old lacks writes
                                 it missed as the mirror)
  ack                            acknowledge the mirror errors and mismatches the guards
                                 counted, once a verify found both sides equal (audited)
  pause | resume                 hold new transactions / let them go on
  sample RATE                    change the fraction of reads compared (0.0-1.0)
  reload                         read the config again (users, rules, sampling, guards)
  backfill start [TABLE]         copy the rows that predate mirroring (also pause, resume);
                                 a table old does not have is refused before anything starts
  backfill status [TABLE] [--watch]
  verify start [TABLE] [--repair]  compare both sides by key ranges (--repair fixes the mirror)
  verify status [TABLE] [--watch]

Exit codes: 0 done; 1 refused, a job that failed, or a verify that found differences;
2 no admin socket, or a usage error.";

pub fn run(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    raw_json: bool,
    command: &str,
) -> ExitCode {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        // Only admin.socket is read: a config with errors elsewhere (being
        // fixed for a reload) still finds the socket.
        (None, Some(c)) => match turnout_config::admin_socket(&c) {
            Ok(Some(s)) => s,
            Ok(None) => {
                eprintln!("turnout ctl: {} has no admin.socket", c.display());
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("turnout ctl: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("turnout ctl: say where the admin socket is: --socket PATH or --config FILE");
            return ExitCode::from(2);
        }
    };
    let mut words: Vec<&str> = command.split_whitespace().collect();
    let yes = words.contains(&"--yes");
    words.retain(|w| *w != "--yes");
    let is_finalize = words.contains(&"finalize");
    if yes && !is_finalize {
        eprintln!("turnout ctl: --yes only goes with finalize");
        return ExitCode::from(2);
    }
    let command = &words.join(" ");
    // A command turnout cannot take is a usage error (exit 2); it still
    // goes to turnout, which audits refused changes.
    let plain: Vec<&str> = words.iter().copied().filter(|w| *w != "--watch").collect();
    let usage_error = turnout_control::command::Command::parse(&plain.join(" ")).is_err();
    if is_finalize && !yes && !words.contains(&"--dry-run") {
        // The guards first: nothing to confirm when finalize is refused.
        match ask(&socket, &format!("{command} --dry-run")) {
            Ok(r) if !r["ok"].as_bool().unwrap_or(false) => {
                eprintln!(
                    "refused: {}",
                    r["error"].as_str().unwrap_or("no reason given")
                );
                return ExitCode::FAILURE;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!(
                    "turnout ctl: {} (finalize then asks to confirm: --yes where no one types)",
                    unreachable(&socket, &e)
                );
                return ExitCode::from(2);
            }
        }
        if let Err(code) = confirm_finalize() {
            return code;
        }
    }
    if words.contains(&"--watch") {
        let rest: Vec<&str> = words.iter().copied().filter(|w| *w != "--watch").collect();
        if !matches!(rest.as_slice(), ["backfill" | "verify", "status", ..]) {
            eprintln!("turnout ctl: --watch goes with backfill status and verify status");
            return ExitCode::from(2);
        }
        return watch(&socket, &rest.join(" "));
    }
    let reply = match ask(&socket, command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("turnout ctl: {}", unreachable(&socket, &e));
            return ExitCode::from(2);
        }
    };
    let ok = reply["ok"].as_bool().unwrap_or(false);
    if raw_json {
        println!("{reply}");
    } else if !ok {
        eprintln!(
            "refused: {}",
            reply["error"].as_str().unwrap_or("no reason given")
        );
    } else {
        print!("{}", human(command, &reply));
    }
    if !ok && usage_error {
        ExitCode::from(2)
    } else if ok && !job_failed(command, &reply) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why the admin socket did not answer, in words an operator acts on.
fn unreachable(socket: &std::path::Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "no turnout answers on {} ({e}): is turnout running with this admin.socket?",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{}: {e}: run as the user turnout runs as (the socket is its own)",
            socket.display()
        ),
        _ => format!("{}: {e}", socket.display()),
    }
}

/// `finalize` is the point of no return: in a terminal the operator types
/// the phase to confirm; elsewhere `--yes` must say so.
fn confirm_finalize() -> Result<(), ExitCode> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        eprintln!("turnout ctl: finalize is the point of no return (old gets no more writes, no rollback): add --yes to confirm");
        return Err(ExitCode::from(2));
    }
    eprint!("finalize: old gets no more writes and there is no rollback from here.\nType \"finalized\" to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if answer.trim() == "finalized" {
        Ok(())
    } else {
        eprintln!("not confirmed: nothing done");
        Err(ExitCode::FAILURE)
    }
}

/// A status reply that reports a failed job, or a verify that found
/// differences: the command succeeded, what it reports did not.
fn job_failed(command: &str, r: &Value) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    if !matches!(words.as_slice(), ["backfill" | "verify", "status", ..]) {
        return false;
    }
    r["state"] == "failed" || (words[0] == "verify" && r["state"] == "done" && differences_left(r))
}

/// Rows a verify found different and did not repair.
fn differences_left(r: &Value) -> bool {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    n("missing") + n("extra") + n("differing") > n("repaired")
}

/// `backfill status --watch` (and verify's): the progress, again every
/// second, until the job is no longer running.
fn watch(socket: &PathBuf, command: &str) -> ExitCode {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let reply = match ask(socket, command) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("\nturnout ctl: {}: {e}", socket.display());
                return ExitCode::from(2);
            }
        };
        if !reply["ok"].as_bool().unwrap_or(false) {
            eprintln!("refused: {}", reply["error"].as_str().unwrap_or("?"));
            return ExitCode::FAILURE;
        }
        let line = progress_line(command, &reply);
        if tty {
            print!("\r\x1b[2K{line}");
        } else {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
        let state = reply["state"].as_str().unwrap_or("?");
        if state != "running" && state != "paused" {
            if tty {
                println!();
            }
            print!("{}", human(command, &reply));
            return if job_failed(command, &reply) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One line of a job's progress: a bar for the backfill, counts for verify.
fn progress_line(command: &str, r: &Value) -> String {
    let state = r["state"].as_str().unwrap_or("?");
    let percent = r["percent"].as_f64().unwrap_or(0.0);
    let eta = match r["eta_secs"].as_f64() {
        Some(s) => format!(", ETA {}m{:02}s", (s as u64) / 60, (s as u64) % 60),
        None => String::new(),
    };
    if command.starts_with("verify") {
        return format!(
            "verify {state}: {percent:.1}% {} / {} rows compared, {} rows/s{eta}: {} missing, {} extra, {} differing, {} repaired",
            r["rows"], r["expected"], r["rate_per_sec"], r["missing"], r["extra"], r["differing"], r["repaired"]
        );
    }
    let filled = ((percent / 100.0) * 30.0).round().clamp(0.0, 30.0) as usize;
    format!(
        "backfill {state} [{}{}] {percent:.1}% {} / ~{} rows, {} rows/s{eta}{}",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        r["rows"],
        r["estimated"],
        r["rate_per_sec"],
        if r["throttled"].as_bool().unwrap_or(false) {
            " (throttled: clients slower)"
        } else {
            ""
        }
    )
}

fn ask(socket: &PathBuf, command: &str) -> std::io::Result<Value> {
    // A writes flip may hold its barrier up to guards.barrier_ms (10 min at most).
    ask_within(socket, command, Duration::from_secs(660))
}

/// [`ask`] with an answer expected within `limit` (a status for a report:
/// a turnout that does not answer is reported as not reached).
pub(crate) fn ask_within(
    socket: &PathBuf,
    command: &str,
    limit: Duration,
) -> std::io::Result<Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn human(command: &str, r: &Value) -> String {
    if command.trim() == "status" {
        let history: Vec<&str> = r["history"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = format!(
            "phase       {} (epoch {})\nreads from  {}\nwrites to   {}\nhistory     {}\nsessions    {} mirrored, {} in a transaction{}\ndivergences {} (mirror errors {})\nasync queue {} statement(s)\n",
            r["phase"].as_str().unwrap_or("?"),
            r["epoch"],
            r["read_target"].as_str().unwrap_or("?"),
            match r["phase"].as_str() {
                // No mirror in these phases: the authority alone.
                Some("passthrough" | "finalized") => {
                    format!("{} only", r["authority"].as_str().unwrap_or("?"))
                }
                _ => format!(
                    "{} first, then {}",
                    r["authority"].as_str().unwrap_or("?"),
                    if r["authority"] == "old" { "new" } else { "old" }
                ),
            },
            if history.is_empty() {
                "-".to_string()
            } else {
                history.join(" -> ")
            },
            r["sessions"]["mirrored"],
            r["sessions"]["in_transaction"],
            if r["paused"].as_bool().unwrap_or(false) {
                " (PAUSED: new transactions held)"
            } else {
                ""
            },
            r["divergences"],
            r["mirror_errors"],
            r["async_pending"],
        );
        let m = &r["mirror_source"];
        if m["source"] == "log" {
            out.push_str(&format!(
                "source      the log of {} (applier {}; {} transaction(s) applied, {} bytes behind; {} from writers that bypass turnout)\n",
                m["log_of"].as_str().unwrap_or("?"),
                m["applier"].as_str().unwrap_or("?"),
                m["applied_transactions"],
                m["lag_bytes"],
                m["foreign_transactions"],
            ));
            if let Some(why) = m["stopped_because"].as_str() {
                out.push_str(&format!("              stopped: {why}\n"));
            }
        } else if let Some(why) = m["why"].as_str().filter(|w| !w.is_empty()) {
            out.push_str(&format!(
                "source      {}\n",
                why.trim_start_matches("mirror source: ")
            ));
        }
        let failures: Vec<&str> = r["guards"]["failures"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let f = &r["guards"]["figures"];
        out.push_str(&format!(
            "guards      {} (last {} s: {} compared, {} mismatched, {} mirror errors)\n",
            if failures.is_empty() {
                "pass".to_string()
            } else {
                format!("refuse: {}", failures.join("; "))
            },
            r["guards"]["window_secs"],
            f["compared"],
            f["mismatches"],
            f["mirror_errors"]
        ));
        // Exactly what the next flip would say.
        match r["next"]["change"].as_str() {
            Some(change) => {
                let refusals: Vec<&str> = r["next"]["refusals"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if refusals.is_empty() {
                    out.push_str(&format!("next        {change}: ready (no guard refuses it)\n"));
                } else {
                    out.push_str(&format!(
                        "next        {change}: refused now, for {} reason(s):\n",
                        refusals.len()
                    ));
                    for reason in refusals {
                        out.push_str(&format!("              - {reason}\n"));
                    }
                }
            }
            None if r["phase"] == "finalized" => out.push_str(
                "next        none: FINALIZED. new is the only database; old gets no more writes and there is no rollback\n",
            ),
            None => {}
        }
        match r["sampling"].as_object() {
            Some(s) => out.push_str(&format!(
                "sampling    {} compared: {} matched, {} mismatched (confirmed), {} transient\n",
                s["samples"], s["matches"], s["mismatches"], s["transient"]
            )),
            None => out.push_str("sampling    off\n"),
        }
        fleet(&mut out, &r["fleet"]);
        return out;
    }
    if command.trim() == "diffs" {
        let mut out = format!(
            "sampling rate {}\n{:>10} {:>9} {:>9} {:>9}  fingerprint\n",
            r["rate"], "mismatches", "transient", "matches", "samples"
        );
        for f in r["fingerprints"].as_array().into_iter().flatten() {
            let n = |k: &str| f[k].as_u64().unwrap_or(0);
            out.push_str(&format!(
                "{:>10} {:>9} {:>9} {:>9}  {}\n",
                n("mismatches"),
                n("transient"),
                n("matches"),
                n("samples"),
                f["fingerprint"].as_str().unwrap_or("?")
            ));
        }
        return out;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    if matches!(words.as_slice(), ["backfill" | "verify", "status", ..]) {
        let mut out = format!("{}\n", progress_line(command, r));
        if let Some(e) = r["error"].as_str() {
            out.push_str(&format!("error: {e}\n"));
        }
        for t in r["tables"].as_array().into_iter().flatten() {
            let name = t["table"].as_str().unwrap_or("?");
            if words[0] == "backfill" {
                out.push_str(&format!(
                    "  {name}: {} rows{}{}\n",
                    t["rows"],
                    if t["done"].as_bool().unwrap_or(false) {
                        ", done"
                    } else {
                        ""
                    },
                    t["skipped"]
                        .as_str()
                        .map(|s| format!(" (skipped: {s})"))
                        .unwrap_or_default()
                ));
            } else {
                out.push_str(&format!(
                    "  {name}: {} rows in {} ranges, {} missing, {} extra, {} differing, {} repaired\n",
                    t["rows"], t["ranges"], t["missing"], t["extra"], t["differing"], t["repaired"]
                ));
                if let Some(why) = t["skipped"].as_str() {
                    out.push_str(&format!("    not verified: {why}\n"));
                }
                for row in t["rows_named"].as_array().into_iter().flatten() {
                    out.push_str(&format!("    {}\n", row.as_str().unwrap_or("?")));
                }
            }
        }
        if words[0] == "verify" && r["state"] == "done" {
            out.push_str(if r["last_clean"].as_bool().unwrap_or(false) {
                "both sides equal\n"
            } else if differences_left(r) {
                "differences found\n"
            } else {
                "not proven equal (see above)\n"
            });
        }
        return out;
    }
    if matches!(words.as_slice(), ["backfill" | "verify", ..]) {
        let done = r["done"].as_str().unwrap_or("?");
        return if r["dry_run"] == true {
            format!("{done}\n")
        } else {
            format!("done: {done}\n")
        };
    }
    let word = words.first().copied().unwrap_or_default();
    if word == "ack" {
        let a = &r["acknowledged"];
        return format!(
            "{}: {} mirror error(s) and {} confirmed mismatch(es) no longer count against the next flip\n",
            if r["dry_run"].as_bool().unwrap_or(false) {
                "dry run: would acknowledge"
            } else {
                "acknowledged"
            },
            a["mirror_errors"],
            a["mismatches"]
        );
    }
    if word == "reload" {
        let list = |k: &str| -> Vec<String> {
            r[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        let (changed, restart) = (list("changed"), list("needs_restart"));
        let mut out = if r["dry_run"].as_bool().unwrap_or(false) {
            "dry run: would reload\n".to_string()
        } else {
            "done: reload\n".to_string()
        };
        out.push_str(&if changed.is_empty() {
            "  applied live: nothing changed\n".to_string()
        } else {
            format!("  applied live: {}\n", changed.join(", "))
        });
        if !restart.is_empty() {
            out.push_str(&format!(
                "  WARNING: changed but not applied until turnout restarts: {}\n",
                restart.join(", ")
            ));
        }
        return out;
    }
    if word == "pause" || word == "resume" {
        return if r["dry_run"].as_bool().unwrap_or(false) {
            format!("dry run: would {word}\n")
        } else {
            format!("done: {word}\n")
        };
    }
    if command.trim().starts_with("sample") {
        let verb = if r["dry_run"].as_bool().unwrap_or(false) {
            "dry run: would change"
        } else {
            "done:"
        };
        return format!("{verb} sampling rate {} -> {}\n", r["from"], r["to"]);
    }
    let verb = if r["dry_run"].as_bool().unwrap_or(false) {
        "dry run: would go"
    } else {
        "done:"
    };
    let adopted = match r["adopted_ms"].as_f64() {
        Some(ms) if r["sessions_behind"].as_u64() == Some(0) => {
            format!("; every session on the new routing after {ms:.1} ms")
        }
        Some(_) => format!(
            "; {} session(s) still in a transaction on the old routing",
            r["sessions_behind"]
        ),
        None => String::new(),
    };
    let mut out = format!(
        "{verb} {} -> {} (epoch {}){adopted}\n",
        r["from"].as_str().unwrap_or("?"),
        r["to"].as_str().unwrap_or("?"),
        r["epoch"]
    );
    for note in r["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", note.as_str().unwrap_or("?")));
    }
    out
}

/// `status`'s fleet lines: the store, the change under way, each live
/// instance.
fn fleet(out: &mut String, f: &Value) {
    if f.is_null() {
        return;
    }
    out.push_str(&format!(
        "fleet       {} as {} (lease {} ms)\n",
        f["store"].as_str().unwrap_or("?"),
        f["instance"].as_str().unwrap_or("?"),
        f["lease_ms"]
    ));
    if let Some(p) = f["record"]["prepared"].as_object() {
        out.push_str(&format!(
            "              under way: `{}` by {} (epoch {})\n",
            p["command"].as_str().unwrap_or("?"),
            p["coordinator"].as_str().unwrap_or("?"),
            p["epoch"]
        ));
    }
    match f["members"].as_array() {
        Some(members) => {
            for m in members {
                out.push_str(&format!(
                    "              {} {} (epoch {}), {} connection(s), version {}{}\n",
                    m["instance"].as_str().unwrap_or("?"),
                    m["phase"].as_str().unwrap_or("?"),
                    m["epoch"],
                    m["sessions"],
                    m["version"].as_str().unwrap_or("?"),
                    if m["holding"].as_bool().unwrap_or(false) {
                        ", holding new transactions"
                    } else {
                        ""
                    }
                ));
            }
        }
        None => out.push_str(&format!(
            "              members unknown: {}\n",
            f["members"]["error"].as_str().unwrap_or("?")
        )),
    }
}
