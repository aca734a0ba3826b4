//! The checker: what must hold at the end of every chaos run, whatever the
//! schedule did. Each broken invariant is one finding, in words.

use super::cluster::Cluster;
use super::db::{Db, Engine};
use super::driver::{side_name, Played};
use super::workload::{self, History, ACCOUNTS, TOTAL};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub fn check(
    c: &mut Cluster,
    rt: &tokio::runtime::Runtime,
    h: &History,
    p: &Played,
) -> Vec<String> {
    let mut findings = Vec::new();
    let Some(status) = wait_status(c) else {
        return vec!["turnout does not answer `ctl status` after the run".into()];
    };
    for job in ["backfill", "verify"] {
        if let Err(e) = wait_job(c, job, Duration::from_secs(120)) {
            findings.push(e);
        }
    }
    let status = c.status().unwrap_or(status);
    let authority = if status["authority"] == "new" { 1 } else { 0 };
    println!(
        "chaos: settled in phase {} (authority {}), turnout started {} times",
        status["phase"],
        side_name(authority),
        c.starts
    );

    // turnout's counter agrees with its log (since its latest start).
    let records = c.divergences();
    let since_start = records.len() - c.log_lines_before_start;
    if status["divergences"].as_u64() != Some(since_start as u64) {
        findings.push(format!(
            "status counts {} divergences since turnout started, its log holds {since_start}",
            status["divergences"]
        ));
    }
    // Once every fault is cleared, sessions mirror again.
    let late: Vec<String> = records
        .iter()
        .filter(|r| {
            r["at"]
                .as_str()
                .is_some_and(|at| at > p.settled_at.as_str())
        })
        .map(|r| r.to_string())
        .collect();
    if !late.is_empty() {
        findings.push(format!(
            "{} divergences recorded after every fault was cleared ({}), first: {}",
            late.len(),
            p.settled_at,
            late[0]
        ));
    }
    let explained = |table: &str| {
        p.turnout_killed
            || records
                .iter()
                .any(|r| r["table"].is_null() || r["table"] == table)
    };

    // Every client error falls in a window of a fault that could cause it.
    for e in &h.errors {
        if !p
            .windows
            .iter()
            .any(|w| w.client_facing && w.covers(e.at_ms, p.end_ms))
        {
            let near: Vec<&str> = p
                .windows
                .iter()
                .filter(|w| w.covers(e.at_ms, p.end_ms))
                .map(|w| w.what.as_str())
                .collect();
            findings.push(format!(
                "client error no fault accounts for: {} at {:.1}s ({}): {} [faults then, on the mirror only: {near:?}]",
                e.client,
                e.at_ms as f64 / 1000.0,
                e.what,
                e.message
            ));
        }
    }

    // What clients read through turnout.
    for (at, table, text) in &h.anomalies {
        if !explained(table) {
            findings.push(format!(
                "at {:.1}s: {text} (no divergence recorded for {table})",
                *at as f64 / 1000.0
            ));
        }
    }

    // The invariants, on the final authority. A side that missed writes
    // as the mirror is made the authority only by --force overriding that
    // refusal (audited): what it lacks then was the operator's choice.
    let audit = std::fs::read_to_string(c.dir.path().join("audit.jsonl")).unwrap_or_default();
    let forced = audit
        .lines()
        .find(|l| l.contains("--force (overriding:") && l.contains("missed"));
    match rt.block_on(authority_invariants(c, authority, h)) {
        Ok(f) if !f.is_empty() && forced.is_some() => {
            println!(
                "chaos: the authority lacks writes, as a forced change accepted ({}): {}",
                forced.unwrap_or_default(),
                f.join("; ")
            );
        }
        Ok(mut f) => findings.append(&mut f),
        Err(e) => findings.push(format!("reading the authority: {e}")),
    }

    // Both sides equal.
    findings.extend(sides_equal(c, rt, &explained));
    findings
}

fn wait_status(c: &Cluster) -> Option<serde_json::Value> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(s) = c.status() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Waits until `job` (backfill or verify) is not running; its status.
fn wait_job(c: &Cluster, job: &str, limit: Duration) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    loop {
        let (_, text) = c.ctl(&["--json", job, "status"]);
        let st: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{job} status is not JSON ({e}): {text}"))?;
        if st["state"] != "running" {
            return Ok(st);
        }
        if started.elapsed() > limit {
            return Err(format!("{job} still running after {limit:?}: {st}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn authority_invariants(
    c: &Cluster,
    side: usize,
    h: &History,
) -> Result<Vec<String>, String> {
    let mut f = Vec::new();
    let mut db = Db::connect(&c.direct(side)).await?;
    let name = side_name(side);
    let total = db.rows(workload::bank_total_sql(c.engine), &[]).await?;
    if total.first().map(|r| r.as_slice()) != Some(&[Some(TOTAL), Some(ACCOUNTS)]) {
        f.push(format!(
            "bank on {name} (the authority): {total:?}, not {TOTAL} in {ACCOUNTS} accounts"
        ));
    }
    let mut count: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for r in db.rows("SELECT client, seq FROM log", &[]).await? {
        if let [Some(client), Some(seq)] = r.as_slice() {
            *count.entry((*client, *seq)).or_default() += 1;
        }
    }
    let unknown: BTreeSet<&(i64, i64)> = h.log_unknown.iter().collect();
    let mut lost = 0;
    for k in &h.log_acked {
        match count.get(k).copied().unwrap_or(0) {
            1 => {}
            0 => {
                lost += 1;
                if lost <= 5 {
                    f.push(format!(
                        "log insert {k:?} was acknowledged but is not on {name} (the authority)"
                    ));
                }
            }
            n => f.push(format!("log insert {k:?} is on {name} {n} times")),
        }
    }
    if lost > 5 {
        f.push(format!("... {lost} acknowledged log inserts lost in all"));
    }
    let acked: BTreeSet<&(i64, i64)> = h.log_acked.iter().collect();
    for (k, n) in &count {
        if !acked.contains(k) && !unknown.contains(k) {
            f.push(format!(
                "log row {k:?} on {name} was never written by a client"
            ));
        } else if unknown.contains(k) && *n > 1 {
            f.push(format!(
                "log insert {k:?} (outcome unknown) is on {name} {n} times"
            ));
        }
    }
    for (k, r) in &h.registers {
        let v = db.value("SELECT v FROM reg WHERE k = $1", &[*k]).await?;
        let ok = v == Some(r.acked) || v.is_some_and(|v| r.unknown.contains(&v));
        if !ok {
            f.push(format!(
                "register {k} on {name} holds {v:?}; last acknowledged {}, unknown after it {:?}",
                r.acked, r.unknown
            ));
        }
    }
    println!(
        "chaos: on {name}: {} log inserts acknowledged ({} unknown), {} registers checked",
        h.log_acked.len(),
        h.log_unknown.len(),
        h.registers.len()
    );
    Ok(f)
}

/// Every table's rows on `side`, in key order, as text.
async fn contents(
    c: &Cluster,
    side: usize,
) -> Result<BTreeMap<&'static str, Vec<Vec<Option<i64>>>>, String> {
    let mut db = Db::connect(&c.direct(side)).await?;
    let at = match c.engine {
        Engine::Postgres => "(extract(epoch from at) * 1000000)::bigint",
        Engine::MariaDb => "CAST(UNIX_TIMESTAMP(at) * 1000000 AS SIGNED)",
    };
    let mut out = BTreeMap::new();
    out.insert(
        "bank",
        db.rows("SELECT id, balance FROM bank ORDER BY id", &[])
            .await?,
    );
    out.insert(
        "log",
        db.rows(
            &format!("SELECT id, client, seq, {at} FROM log ORDER BY id"),
            &[],
        )
        .await?,
    );
    out.insert(
        "reg",
        db.rows("SELECT k, v, writer FROM reg ORDER BY k", &[])
            .await?,
    );
    Ok(out)
}

/// The tables that differ between the sides, each with its first
/// difference.
fn differing(
    c: &Cluster,
    rt: &tokio::runtime::Runtime,
) -> Result<Vec<(&'static str, String)>, String> {
    let old = rt.block_on(contents(c, 0))?;
    let new = rt.block_on(contents(c, 1))?;
    let mut out = Vec::new();
    for (table, rows) in &old {
        let other = &new[table];
        if rows != other {
            let first = rows
                .iter()
                .zip(other.iter())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("old {a:?} / new {b:?}"))
                .unwrap_or_else(|| format!("{} rows on old, {} on new", rows.len(), other.len()));
            out.push((*table, first));
        }
    }
    Ok(out)
}

fn sides_equal(
    c: &Cluster,
    rt: &tokio::runtime::Runtime,
    explained: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut f = Vec::new();
    let differ = match differing(c, rt) {
        Ok(d) => d,
        Err(e) => return vec![format!("reading both sides: {e}")],
    };
    if std::env::var("CHAOS_KEEP").is_ok() {
        for side in 0..2 {
            if let Ok(rows) = rt.block_on(contents(c, side)) {
                let text: Vec<String> = rows
                    .iter()
                    .flat_map(|(t, rs)| rs.iter().map(move |r| format!("{t} {r:?}")))
                    .collect();
                let _ = std::fs::write(
                    c.dir.path().join(format!("{}.rows", side_name(side))),
                    text.join("\n"),
                );
            }
        }
    }
    for (table, first) in &differ {
        println!("chaos: {table} differs between the sides ({first})");
        if !explained(table) {
            f.push(format!(
                "{table} differs between the sides with no divergence recorded: {first}"
            ));
        }
    }
    if differ.is_empty() {
        // verify (old to new, or new to old in writes_new) must agree.
        if let Err(e) = verify(c, false) {
            f.push(e);
        }
        return f;
    }
    if let Err(e) = verify(c, true).and_then(|_| verify(c, false)) {
        f.push(e);
    }
    match differing(c, rt) {
        Ok(d) if d.is_empty() => {}
        Ok(d) => f.push(format!(
            "after verify --repair the sides still differ: {d:?}"
        )),
        Err(e) => f.push(format!("reading both sides: {e}")),
    }
    f
}

/// `verify start` (with `--repair`): it must finish; without repair it must
/// find both sides equal.
fn verify(c: &Cluster, repair: bool) -> Result<(), String> {
    let args: &[&str] = if repair {
        &["verify", "start", "--repair"]
    } else {
        &["verify", "start"]
    };
    let (code, text) = c.ctl(args);
    if code != Some(0) {
        return Err(format!("{args:?} refused: {text}"));
    }
    let st = wait_job(c, "verify", Duration::from_secs(120))?;
    println!(
        "chaos: {args:?}: {} missing, {} extra, {} differing, {} repaired",
        st["missing"], st["extra"], st["differing"], st["repaired"]
    );
    if st["state"] != "done" {
        return Err(format!("{args:?} did not finish: {st}"));
    }
    if !repair && st["last_clean"] != true {
        return Err(format!(
            "verify found the sides different after the run: {st}"
        ));
    }
    Ok(())
}
