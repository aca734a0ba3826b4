//! `--lean-only`: the comparison of issue 32 in one run. `pgbench -S`
//! (simple and prepared) over TCP against PostgreSQL directly, through
//! pgbouncer (session pooling), through turnout in passthrough, and through
//! turnout in phase `mirror` (the engine's path) with no sampling and with
//! 1 % of reads sampled; every proxy's CPU per transaction from `/proc`,
//! targets alternating. `--baseline BIN` adds another turnout binary in
//! passthrough beside this one (a change's cost, before and after).

use super::{compare, start_baseline, start_pgbouncer, start_sampled, start_turnout, target, Args};
use turnout_instances::{PgInstance, TempDir};

pub fn bench(args: &Args, dir: &TempDir, old: &PgInstance) -> Result<(), String> {
    eprintln!("starting PostgreSQL (new) for the engine's path...");
    let new = super::bench_instance(args.scale, 200, args.fsync)?;
    let sampled =
        |name: &str, rate: &str| start_sampled(dir.path(), name, old.port, new.port, rate);
    let (p, p_port, _) = start_turnout(dir.path(), "lean-passthrough", "127.0.0.1", old.port)?;
    let (m0, m0_port, _) = sampled("lean-mirror-0", "0.0")?;
    let (m1, m1_port, _) = sampled("lean-mirror-1", "0.01")?;
    let bouncer = start_pgbouncer(&dir.path().join("lean-b"), "127.0.0.1", old.port)?;
    let mut targets = vec![
        target("direct tcp", "127.0.0.1", old.port, 0),
        target("turnout passthrough", "127.0.0.1", p_port, 0).with_pid(p.0.id()),
    ];
    match &bouncer {
        Some((b, port, _)) => {
            targets.push(target("pgbouncer", "127.0.0.1", *port, 0).with_pid(b.0.id()))
        }
        None => eprintln!("pgbouncer not installed (apt-get install pgbouncer): skipped"),
    }
    let engine = targets.len();
    targets.push(target("mirror, no sampling", "127.0.0.1", m0_port, 1).with_pid(m0.0.id()));
    targets.push(target("mirror, 1% sampled", "127.0.0.1", m1_port, engine).with_pid(m1.0.id()));
    let _baseline = match &args.baseline {
        Some(bin) => {
            let ports = (old.port, old.port);
            let (child, port) =
                start_baseline(bin, dir.path(), "lean-baseline", ports, "passthrough", "")?;
            targets.push(
                target("baseline binary: passthrough", "127.0.0.1", port, 1).with_pid(child.0.id()),
            );
            Some(child)
        }
        None => None,
    };
    println!(
        "pgbench -S -c {} -j 2, {} s per run, {} rounds, scale {}, targets alternating; ratios against the baseline named",
        args.clients, args.seconds, args.rounds, args.scale
    );
    compare(&targets, &["-S"], args)
}
