//! Plays a schedule against a cluster while the workloads run, then settles
//! and hands over to the checker.

use super::cluster::Cluster;
use super::db::{Db, Engine};
use super::schedule::{schedule, Action, Event, Step};
use super::workload;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turnout_harness::Fault;

/// How long after a fault ends its effects (reconnects, a restarted
/// server's recovery) may still fail a client.
pub const GRACE_MS: u64 = 10_000;

/// When a fault may have failed clients: from its start to `GRACE_MS` after
/// its end.
#[derive(Debug, Clone)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    /// The faulted side served clients (authority or reads) at its start
    /// or its end, or turnout itself was faulted.
    pub client_facing: bool,
    pub what: String,
}

impl Window {
    pub fn covers(&self, at_ms: u64, run_end_ms: u64) -> bool {
        let end = self.end_ms.unwrap_or(run_end_ms) + GRACE_MS;
        at_ms + 200 >= self.start_ms && at_ms <= end
    }
}

pub struct Report {
    pub engine: Engine,
    pub seed: u64,
    pub findings: Vec<String>,
}

impl Report {
    pub fn assert_clean(&self) {
        assert!(
            self.findings.is_empty(),
            "chaos run {} seed {} found:\n{}\n(replay: CHAOS_SEED={} CHAOS_ENGINE={} cargo test --test chaos -- --nocapture)",
            self.engine.name(),
            self.seed,
            self.findings.join("\n"),
            self.seed,
            self.engine.name()
        );
    }
}

/// What the schedule did, for the checker.
pub struct Played {
    pub windows: Vec<Window>,
    pub turnout_killed: bool,
    pub end_ms: u64,
    /// When every fault had been cleared for a while (RFC 3339, as the
    /// divergence log writes it).
    pub settled_at: String,
}

/// `logical`: the mirror fed from PostgreSQL's log.
pub fn run(engine: Engine, seed: u64, seconds: u64, logical: bool) -> Report {
    let events = schedule(seed, seconds);
    println!(
        "chaos: {} seed {seed}, {seconds} s, {} events{}",
        engine.name(),
        events.len(),
        if logical { ", from the log" } else { "" }
    );
    let mut cluster = Cluster::start(engine, logical);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // New first: from the log, old's rows go to new's tables at once.
    for side in [1, 0] {
        let target = cluster.direct(side);
        rt.block_on(async {
            let mut db = Db::connect(&target).await.expect("connect to a side");
            for sql in workload::schema(engine) {
                db.simple(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        });
    }
    let run = Arc::new(workload::Run {
        target: cluster.through_turnout(),
        started: Instant::now(),
        stop: Default::default(),
        history: Mutex::new(Default::default()),
    });
    let tasks = {
        let _guard = rt.enter();
        workload::start(&run, seed)
    };
    let played = play(&mut cluster, &events, &run);
    settle(&mut cluster);
    // The workloads go on on the settled system: after a moment for
    // sessions to reach the restarted servers, the mirror must miss
    // nothing more.
    std::thread::sleep(Duration::from_secs(2));
    let settled_at = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_secs(3));
    run.stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let end_ms = run.started.elapsed().as_millis() as u64;
    let history = std::mem::take(&mut *run.history.lock().unwrap());
    let findings = super::check::check(
        &mut cluster,
        &rt,
        &history,
        &Played {
            end_ms,
            settled_at,
            ..played
        },
    );
    println!(
        "chaos: {} seed {seed}: {} operations acknowledged, {} client errors, {} divergences recorded, {} findings",
        engine.name(),
        history.acknowledged,
        history.errors.len(),
        cluster.divergences().len(),
        findings.len()
    );
    if !findings.is_empty() {
        let logs = cluster.turnout_logs();
        let tail: Vec<&str> = logs.lines().rev().take(60).collect();
        println!(
            "turnout's log, last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Report {
        engine,
        seed,
        findings,
    }
}

/// The side that serves clients' writes (0 old, 1 new), and whether the
/// other one serves reads, from turnout's status.
fn roles(c: &Cluster) -> (usize, usize) {
    let st = c.status().unwrap_or_default();
    let side = |k: &str| if st[k] == "new" { 1 } else { 0 };
    (side("authority"), side("read_target"))
}

fn play(c: &mut Cluster, events: &[Event], run: &workload::Run) -> Played {
    let mut windows: Vec<Window> = Vec::new();
    // A lasting action's side and window, by its start event.
    let mut open: HashMap<usize, (usize, Option<usize>)> = HashMap::new();
    let mut turnout_killed = false;
    for e in events {
        let now = run.started.elapsed().as_millis() as u64;
        if e.at_ms > now {
            std::thread::sleep(Duration::from_millis(e.at_ms - now));
        }
        let at = run.started.elapsed().as_millis() as u64;
        let (authority, reads) = roles(c);
        let mirror = 1 - authority;
        let facing = |side: usize| side == authority || side == reads;
        let outcome = match (e.step, e.action) {
            (Step::End { of }, action) => {
                let (side, window) = open.remove(&of).unwrap_or((mirror, None));
                let outcome = match action {
                    Action::Pause => ctl(c, &["resume"]),
                    Action::MirrorKill | Action::AuthorityKill => {
                        c.servers[side].restart();
                        "started again".to_string()
                    }
                    _ => {
                        c.relays[side].set(Fault::Pass);
                        "traffic passes".to_string()
                    }
                };
                if let Some(w) = window {
                    windows[w].end_ms = Some(at);
                    windows[w].client_facing |= facing(side);
                }
                outcome
            }
            (Step::Start, action) => {
                let mut window = |side: Option<usize>, lasting: bool| {
                    windows.push(Window {
                        start_ms: at,
                        end_ms: (!lasting).then_some(at),
                        client_facing: side.is_none_or(facing),
                        what: format!("#{} {action}", e.id),
                    });
                    windows.len() - 1
                };
                match action {
                    Action::FlipReads { force } => ctl(c, &with_force(&["flip", "reads"], force)),
                    Action::FlipWrites { force } => ctl(c, &with_force(&["flip", "writes"], force)),
                    Action::Rollback => {
                        if c.status().is_some_and(|s| s["phase"] == "mirror") {
                            // mirror is where the run starts: before it,
                            // writes are not mirrored at all.
                            "skipped: the phase is mirror".into()
                        } else {
                            ctl(c, &["rollback"])
                        }
                    }
                    Action::Pause => {
                        open.insert(e.id, (mirror, None));
                        ctl(c, &["pause"])
                    }
                    Action::Reload => ctl(c, &["reload"]),
                    Action::BackfillStart => ctl(c, &["backfill", "start"]),
                    Action::BackfillPause => ctl(c, &["backfill", "pause"]),
                    Action::BackfillResume => ctl(c, &["backfill", "resume"]),
                    Action::Verify => ctl(c, &["verify", "start"]),
                    Action::MirrorDelay(_) | Action::MirrorStall => {
                        let w = window(Some(mirror), true);
                        open.insert(e.id, (mirror, Some(w)));
                        c.relays[mirror].set(match action {
                            Action::MirrorDelay(ms) => Fault::Delay(Duration::from_millis(ms)),
                            _ => Fault::Stall,
                        });
                        format!("on {}", side_name(mirror))
                    }
                    Action::MirrorCut | Action::MirrorReset => {
                        window(Some(mirror), false);
                        let relay = &c.relays[mirror];
                        let n = match action {
                            Action::MirrorCut => relay.cut(),
                            _ => relay.reset(),
                        };
                        format!("{n} connections to {}", side_name(mirror))
                    }
                    Action::MirrorKill | Action::AuthorityKill => {
                        let side = if action == Action::MirrorKill {
                            mirror
                        } else {
                            authority
                        };
                        let w = window(Some(side), true);
                        open.insert(e.id, (side, Some(w)));
                        c.servers[side].kill();
                        format!("{} killed", side_name(side))
                    }
                    Action::TurnoutKill => {
                        window(None, false);
                        turnout_killed = true;
                        c.restart_turnout();
                        "started again".into()
                    }
                }
            }
        };
        println!("  {e}: {}", first_line(&outcome));
    }
    // What is still open ends with the schedule.
    let at = run.started.elapsed().as_millis() as u64;
    for (_, (_, w)) in open {
        if let Some(w) = w {
            windows[w].end_ms = Some(at);
        }
    }
    Played {
        windows,
        turnout_killed,
        end_ms: at,
        settled_at: String::new(),
    }
}

/// Every fault cleared: relays pass, servers up, turnout resumed.
fn settle(c: &mut Cluster) {
    for r in &c.relays {
        r.set(Fault::Pass);
    }
    for s in c.servers.iter_mut() {
        s.restart();
    }
    if c.status().is_some_and(|s| s["paused"] == true) {
        ctl(c, &["resume"]);
    }
}

fn ctl(c: &Cluster, args: &[&str]) -> String {
    let (code, text) = c.ctl(args);
    format!(
        "exit {}: {text}",
        code.map(|c| c.to_string()).unwrap_or("-".into())
    )
}

fn with_force<'a>(args: &[&'a str], force: bool) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if force {
        v.push("--force");
    }
    v
}

pub fn side_name(side: usize) -> &'static str {
    if side == 0 {
        "old"
    } else {
        "new"
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}
