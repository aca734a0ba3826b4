//! `turnout ctl`: the admin socket's client, printing replies for people.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    raw_json: bool,
    command: &str,
) -> ExitCode {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match turnout_config::load(&c) {
            Ok(cfg) => match cfg.admin.socket {
                Some(s) => s,
                None => {
                    eprintln!("turnout ctl: {} has no admin.socket", c.display());
                    return ExitCode::from(2);
                }
            },
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
    let words: Vec<&str> = command.split_whitespace().collect();
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
            eprintln!("turnout ctl: {}: {e}", socket.display());
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
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
            return if state == "failed" {
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
    if command.starts_with("verify") {
        return format!(
            "verify {state}: {} rows compared, {} missing, {} extra, {} differing, {} repaired",
            r["rows"], r["missing"], r["extra"], r["differing"], r["repaired"]
        );
    }
    let percent = r["percent"].as_f64().unwrap_or(0.0);
    let filled = ((percent / 100.0) * 30.0).round().clamp(0.0, 30.0) as usize;
    let eta = match r["eta_secs"].as_f64() {
        Some(s) => format!(", ETA {}m{:02}s", (s as u64) / 60, (s as u64) % 60),
        None => String::new(),
    };
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
    let mut stream = UnixStream::connect(socket)?;
    // A writes flip may hold its barrier up to guards.barrier_ms (10 min at most).
    stream.set_read_timeout(Some(Duration::from_secs(660)))?;
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
            "phase       {} (epoch {})\nreads from  {}\nwrites to   {} first\nhistory     {}\nsessions    {} mirrored, {} in a transaction{}\ndivergences {} (mirror errors {})\nasync queue {} statement(s)\n",
            r["phase"].as_str().unwrap_or("?"),
            r["epoch"],
            r["read_target"].as_str().unwrap_or("?"),
            r["authority"].as_str().unwrap_or("?"),
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
        match r["sampling"].as_object() {
            Some(s) => out.push_str(&format!(
                "sampling    {} compared: {} matched, {} mismatched (confirmed), {} transient\n",
                s["samples"], s["matches"], s["mismatches"], s["transient"]
            )),
            None => out.push_str("sampling    off\n"),
        }
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
            } else if r["missing"].as_u64().unwrap_or(0)
                + r["extra"].as_u64().unwrap_or(0)
                + r["differing"].as_u64().unwrap_or(0)
                > r["repaired"].as_u64().unwrap_or(0)
            {
                "differences found\n"
            } else {
                "not proven equal (see above)\n"
            });
        }
        return out;
    }
    if matches!(words.as_slice(), ["backfill" | "verify", ..]) {
        return format!("done: {}\n", r["done"].as_str().unwrap_or("?"));
    }
    let word = words.first().copied().unwrap_or_default();
    if word == "pause" || word == "resume" || word == "reload" {
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
