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
    let word = command.split_whitespace().next().unwrap_or_default();
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
