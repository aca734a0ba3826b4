//! Randomized cutover schedules with an invariant checker (issue 20).
//!
//! A run starts two throwaway servers and turnout (phase `mirror`, turnout
//! reaching both sides through fault relays), runs the bank, log and
//! register workloads through it, and plays a seeded random schedule of
//! flips, rollbacks, pause/resume, reloads, backfill and verify, mirror
//! delay/stall/cut/reset/kill, authority kill and restart, and turnout
//! SIGKILL and restart. Then it settles (faults cleared, servers up) and
//! checks: the invariants on the final authority, every client error
//! inside an injected fault's window, no acknowledged write lost, turnout's
//! counters equal to its divergence log, and both sides equal (verify, with
//! `--repair` only where the log or a crash explains a difference).
//!
//! The short profile (the seeds kept as regressions) runs
//! with the other tests. The long one runs seeds until
//! `CHAOS_MINUTES` have passed (default 60):
//! `cargo test --test chaos -- --ignored chaos_long --nocapture`.
//! `CHAOS_SEED=<n>` (and `CHAOS_ENGINE=postgres|mariadb`) replays one seed;
//! `CHAOS_SOURCE=log` runs PostgreSQL's through the log source.

#[path = "../common/mod.rs"]
#[allow(unused_imports)]
mod common;

mod check;
mod cluster;
mod db;
mod driver;
mod schedule;
mod workload;

use db::Engine;

/// The short profile: seeds that found a bug (each fixed since), with the
/// seconds of schedule that reach it. The same seed gives the same schedule,
/// and a shorter run plays the start of the longer one's.
const REGRESSIONS: &[(Engine, u64, u64, &str)] = &[
    (
        Engine::Postgres,
        1,
        25,
        "turnout killed while new was down would not start again",
    ),
    (
        Engine::MariaDb,
        2,
        25,
        "INSERT ... RETURNING gave new ids of its own; a reads flip lifted a pause",
    ),
    (
        Engine::Postgres,
        101,
        30,
        "a rollback of writes made old the authority without writes it missed",
    ),
    (
        Engine::MariaDb,
        101,
        30,
        "a rollback of writes made old the authority without writes it missed",
    ),
    (
        Engine::Postgres,
        106,
        15,
        "the first read after a reads flip failed on a mirror connection cut unnoticed",
    ),
    (
        Engine::Postgres,
        105,
        20,
        "a forced writes flip made new the authority without writes it missed, unsaid",
    ),
];

/// The regressions of `engine`, or the one seed `CHAOS_SEED` names (with
/// `CHAOS_ENGINE`, `CHAOS_SECONDS`).
fn short_profile(engine: Engine, logical: bool) {
    if let Ok(seed) = std::env::var("CHAOS_SEED") {
        let wanted = std::env::var("CHAOS_ENGINE").unwrap_or_default();
        if !wanted.is_empty() && wanted != engine.name() {
            return;
        }
        let seed: u64 = seed.parse().expect("CHAOS_SEED is a number");
        let seconds = std::env::var("CHAOS_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        let logical = logical || std::env::var("CHAOS_SOURCE").is_ok_and(|s| s == "log");
        driver::run(engine, seed, seconds, logical).assert_clean();
        return;
    }
    for &(e, seed, seconds, found) in REGRESSIONS {
        if e == engine {
            println!("chaos: regression seed {seed} ({found})");
            driver::run(engine, seed, seconds, logical).assert_clean();
        }
    }
}

#[test]
fn chaos_short_postgres() {
    short_profile(Engine::Postgres, false);
}

/// The PostgreSQL seeds with the mirror fed from old's log.
#[test]
fn chaos_short_postgres_from_the_log() {
    short_profile(Engine::Postgres, true);
}

#[test]
fn chaos_short_mariadb() {
    short_profile(Engine::MariaDb, false);
}

/// The MariaDB seeds with the mirror fed from old's binary log.
#[test]
fn chaos_short_mariadb_from_the_log() {
    short_profile(Engine::MariaDb, true);
}

/// Seeds from `CHAOS_FIRST_SEED` (default: the clock) on, both engines in
/// turn, 60 s each, until `CHAOS_MINUTES` have passed. Every failing seed is
/// printed with its findings; the test fails at the end if any did.
#[test]
#[ignore]
fn chaos_long() {
    let minutes: u64 = std::env::var("CHAOS_MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut seed: u64 = std::env::var("CHAOS_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() % 100_000)
                .unwrap_or(0)
        });
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut runs = 0;
    while started.elapsed().as_secs() < minutes * 60 {
        for engine in [Engine::Postgres, Engine::MariaDb] {
            let logical = std::env::var("CHAOS_SOURCE").is_ok_and(|s| s == "log");
            let report = driver::run(engine, seed, seconds, logical);
            runs += 1;
            if !report.findings.is_empty() {
                println!(
                    "CHAOS FAILED: {} seed {seed}:\n{}",
                    engine.name(),
                    report.findings.join("\n")
                );
                failed.push(format!("{} seed {seed}", engine.name()));
            }
        }
        seed += 1;
    }
    println!(
        "chaos_long: {runs} runs in {:.0} min, {} failed: {failed:?}",
        started.elapsed().as_secs_f64() / 60.0,
        failed.len()
    );
    assert!(failed.is_empty(), "failed: {failed:?}");
}
