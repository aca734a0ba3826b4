//! A fleet of three turnout instances in front of the same two PostgreSQL
//! clusters, sharing their phase through a store (etcd, or a table on
//! old's server): flips and rollbacks from different instances under
//! pgbench load spread over all three, two coordinators at once, an
//! instance frozen during a writes flip, the store stopped under load.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use turnout_harness::EtcdInstance;

struct Fleet {
    s: Setup,
    m: common::fleet::Members,
}

impl std::ops::DerefMut for Fleet {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.m
    }
}

impl std::ops::Deref for Fleet {
    type Target = common::fleet::Members;
    fn deref(&self) -> &Self::Target {
        &self.m
    }
}

impl Fleet {
    /// Old and new with pgbench's tables and `events`, alike, then three
    /// instances in phase `mirror` sharing `store` (empty: old's server).
    fn start(store: &str, lease_ms: u64) -> Fleet {
        Fleet::start_with(store, lease_ms, false)
    }

    /// [`Fleet::start`]; `log`: both clusters can feed the mirror from
    /// their log, and `mirror.source = "log"`.
    fn start_with(store: &str, lease_ms: u64, log: bool) -> Fleet {
        let mut s = Setup::start(Options {
            phase: Some("mirror"),
            ddl: Some("both"),
            admin: true,
            logical: log,
            mirror_extra: if log { "source = \"log\"" } else { "" },
            ..Options::default()
        });
        let out = Command::new("pgbench")
            .args(["-i", "-s", "1", "-q"])
            .arg(s.app_url())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        s.run_ok(&[
            "CREATE TABLE events (id bigserial PRIMARY KEY, src text, at timestamptz DEFAULT clock_timestamp())",
        ]);
        s.proxy.kill();
        let template = std::fs::read_to_string(&s.proxy.config).unwrap();
        let _ = std::fs::remove_file(s.dir.path().join("state.json"));
        let store = if store.is_empty() {
            String::new()
        } else {
            format!("store = \"{store}\"")
        };
        let m = common::fleet::Members::spawn(
            s.dir.path(),
            &template,
            s.proxy.port,
            None,
            &format!("lease_ms = {lease_ms}\n{store}"),
        );
        Fleet { s, m }
    }

    fn url(&self, i: usize) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app user=app password={APP_PASSWORD} connect_timeout=10",
            self.port(i)
        )
    }

    /// pgbench (TPC-B, 2 clients) through each of `instances` for `seconds`.
    fn load(&self, instances: &[usize], seconds: u32) -> Vec<Child> {
        instances
            .iter()
            .map(|&i| {
                Command::new("pgbench")
                    .args(["-n", "-c", "2", "-T", &seconds.to_string()])
                    .arg(self.url(i))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }
}

fn flips_under_load(f: &Fleet) {
    let status = f.status(0);
    assert_eq!(
        status["fleet"]["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    let clients = f.load(&[0, 1, 2], 14);
    let writes = f.flip_round();
    assert!(
        writes.contains("3 live instance(s) acknowledged") && writes.contains("moved on new"),
        "{writes}"
    );
    assert_no_failed_pgbench(clients);
    assert_sides_identical(&f.s, &PGBENCH_TABLES);
    // Every instance took every change; each audit line names its instance.
    let audit = std::fs::read_to_string(f.s.dir.path().join("audit-i2.jsonl")).unwrap();
    assert!(
        audit.contains("\"instance\":\"i2\"") && audit.contains("flip writes"),
        "{audit}"
    );
}

#[test]
fn a_fleet_sharing_a_table_on_old_flips_as_one_under_load() {
    let f = Fleet::start("", 3000);
    flips_under_load(&f);
    // The store is old's schema `turnout`, which no catalog read or
    // backfill of the application's tables sees.
    let rows = scalar(
        &f.s.direct_url(),
        "SELECT count(*) FROM turnout.fleet_members",
    );
    assert_eq!(rows, "3");
}

#[test]
fn a_fleet_sharing_etcd_flips_as_one_under_load() {
    let etcd = EtcdInstance::start().expect("start etcd");
    let f = Fleet::start(&etcd.url("turnout-test"), 3000);
    flips_under_load(&f);
}

#[test]
fn two_coordinators_at_once_make_exactly_one_flip() {
    let etcd = EtcdInstance::start().expect("start etcd");
    let f = Fleet::start(&etcd.url("race"), 3000);
    for round in 0..3 {
        let before = f.status(0)["epoch"].as_u64().unwrap();
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| f.ctl(0, &["flip", "reads"]));
            let b = scope.spawn(|| f.ctl(1, &["flip", "reads"]));
            (a.join().unwrap(), b.join().unwrap())
        });
        let won = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            won,
            1,
            "round {round}: {} / {} // {} / {}",
            stdout(&a),
            stderr(&a),
            stdout(&b),
            stderr(&b)
        );
        let lost = if a.status.success() { &b } else { &a };
        let why = format!("{}{}", stdout(lost), stderr(lost));
        assert!(
            why.contains("not flipped") || why.contains("needs phase mirror"),
            "{why}"
        );
        f.assert_all_at("reads_new");
        assert_eq!(f.status(2)["epoch"].as_u64(), Some(before + 1));
        f.ctl_ok(2, &["rollback"]);
        f.assert_all_at("mirror");
    }
}

/// `kill -<sig> pid`.
fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn a_frozen_instance_is_fenced_and_none_of_its_writes_reach_old_after_the_commit() {
    let f = Fleet::start("", 2000);
    f.ctl_ok(0, &["flip", "reads"]);
    f.assert_all_at("reads_new");
    // A writer through the instance to be frozen, and pgbench through all.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = f.url(2);
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut written = 0;
            let mut failed = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = psql(&url, &["-c", "INSERT INTO events (src) VALUES ('i3')"], &[]);
                if out.status.success() {
                    written += 1;
                } else {
                    failed.push(stderr(&out));
                }
            }
            (written, failed)
        })
    };
    // (The frozen instance's own clients in a transaction when it stops
    // are cut when it resumes: their transactions may straddle the flip.)
    let clients = f.load(&[0, 1], 12);
    std::thread::sleep(Duration::from_secs(2));
    signal("STOP", f.members[2].pid());
    let began = Instant::now();
    let flipped = f.ctl_ok(0, &["flip", "writes"]);
    let committed = scalar(&f.s.direct_new_url(), "SELECT clock_timestamp()");
    println!("{flipped} (in {:?})", began.elapsed());
    // Only the two live instances acknowledged: the frozen one's lease
    // had to end first.
    assert!(
        flipped.contains("2 live instance(s) acknowledged"),
        "{flipped}"
    );
    std::thread::sleep(Duration::from_secs(1));
    signal("CONT", f.members[2].pid());
    f.assert_all_at("writes_new");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (written, failed) = writer.join().unwrap();
    println!(
        "the frozen instance's writer: {written} written, {} failed: {failed:?}",
        failed.len()
    );
    assert!(written > 0);
    // Writes through it after the flip: none may have taken an id from
    // old's sequence (old as the authority) after the commit.
    let old_last = scalar(&f.s.direct_url(), "SELECT last_value FROM events_id_seq");
    let late = scalar(
        &f.s.direct_url(),
        &format!(
            "SELECT count(*) FROM events WHERE id <= {old_last} AND at >= '{committed}'::timestamptz"
        ),
    );
    assert_eq!(
        late, "0",
        "writes reached old as the authority after the commit"
    );
    let after = scalar(
        &f.s.direct_new_url(),
        &format!(
            "SELECT count(*) FROM events WHERE src = 'i3' AND at >= '{committed}'::timestamptz"
        ),
    );
    assert_ne!(
        after, "0",
        "the frozen instance wrote again after it caught up"
    );
    assert_no_failed_pgbench(clients);
    assert_sides_identical(&f.s, &PGBENCH_TABLES);
    assert_sides_identical(&f.s, &[("events", "id")]);
    let log = f.members[2].log_text();
    assert!(log.contains("took the committed phase"), "{log}");
}

#[test]
fn the_store_stopped_under_load_holds_no_flip_and_traffic_resumes() {
    let mut etcd = EtcdInstance::start().expect("start etcd");
    let f = Fleet::start(&etcd.url("outage"), 1500);
    let clients = f.load(&[0, 1, 2], 12);
    std::thread::sleep(Duration::from_secs(2));
    etcd.stop();
    // Within their leases the instances serve; no flip can commit.
    let refused = f.ctl(0, &["flip", "reads"]);
    assert!(!refused.status.success());
    let why = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(why.contains("not flipped"), "{why}");
    std::thread::sleep(Duration::from_secs(3));
    etcd.run().expect("restart etcd");
    assert_no_failed_pgbench(clients);
    for i in 0..3 {
        assert_eq!(
            scalar(&f.url(i), "SELECT count(*) > 0 FROM pgbench_branches"),
            "t"
        );
        let log = f.members[i].log_text();
        assert!(log.contains("cannot read the store"), "{log}");
    }
    f.assert_all_at("mirror");
    f.ctl_ok(1, &["flip", "reads"]);
    f.assert_all_at("reads_new");
    assert_sides_identical(&f.s, &PGBENCH_TABLES);
}

#[test]
fn a_coordinator_killed_mid_flip_leaves_the_fleet_on_the_old_routing() {
    let f = Fleet::start("", 2000);
    f.ctl_ok(0, &["flip", "reads"]);
    f.assert_all_at("reads_new");
    let clients = f.load(&[1], 10);
    std::thread::sleep(Duration::from_secs(1));
    // i3 stands still, so the coordinator (i1) waits for its lease; i1 is
    // killed meanwhile, with the writes flip prepared in the store.
    signal("STOP", f.members[2].pid());
    let socket = f.s.dir.path().join("admin-i1.sock");
    let flip = Command::new(turnout_bin())
        .args(["ctl", "--socket"])
        .arg(&socket)
        .args(["flip", "writes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the flip is prepared in the fleet", || {
        f.status(1)["fleet"]["record"]["prepared"].is_object()
    });
    signal("KILL", f.members[0].pid());
    let _ = flip.wait_with_output();
    signal("CONT", f.members[2].pid());
    // The live instances abort it once its window and a lease passed, and
    // go on as they were.
    eventually("the prepared flip is aborted", || {
        f.status(1)["fleet"]["record"]["prepared"].is_null()
    });
    for i in [1, 2] {
        let st = f.status(i);
        assert_eq!(st["phase"], "reads_new", "{st}");
        assert_eq!(st["epoch"], 1, "{st}");
    }
    assert_no_failed_pgbench(clients);
    let log = f.members[1].log_text() + &f.members[2].log_text();
    assert!(log.contains("did not commit or abort it in time"), "{log}");
    // The fleet can flip again without i1 (its lease ended).
    let again = f.ctl_ok(1, &["flip", "writes"]);
    assert!(again.contains("2 live instance(s) acknowledged"), "{again}");
    assert_sides_identical(&f.s, &PGBENCH_TABLES);
}

/// `deploy/kubernetes/fleet.yaml`, checked without a cluster: it parses,
/// runs three replicas behind one Service with a disruption budget that
/// keeps two, names each instance by its pod, and its config passes
/// `turnout check-config` with the Secret's and the pod's variables.
#[test]
fn the_kubernetes_fleet_manifests_agree_with_turnout() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/fleet.yaml");
    let script = "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let named = |k: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == k && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {k} {name}"))
            .clone()
    };
    let deployment = named("Deployment", "turnout");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&named("Service", "turnout")["spec"]["selector"], labels);
    let pdb = named("PodDisruptionBudget", "turnout");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["env"][0]["name"], "POD_NAME");
    let config = named("ConfigMap", "turnout-config")["data"]["turnout.toml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        config.contains("etcd://turnout-etcd.default.svc:2379/") && config.contains("${POD_NAME}")
    );
    let dir = turnout_harness::TempDir::new("turnout-k8s-fleet").unwrap();
    let file = dir.path().join("turnout.toml");
    std::fs::write(&file, &config).unwrap();
    let secret = named("Secret", "turnout-secrets");
    let check = |pod: Option<&str>| {
        let mut c = Command::new(turnout_bin());
        c.args(["check-config"]).arg(&file);
        for (k, v) in secret["stringData"].as_object().unwrap() {
            c.env(k, v.as_str().unwrap());
        }
        match pod {
            Some(p) => c.env("POD_NAME", p),
            None => c.env_remove("POD_NAME"),
        };
        c.output().unwrap()
    };
    let ok = check(Some("turnout-5d9c-x2k4p"));
    assert!(ok.status.success(), "{}", stderr(&ok));
    let missing = check(None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("fleet.instance") && stderr(&missing).contains("POD_NAME"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn flag_files_pause_resume_a_restart_and_finalize_go_through_the_fleet() {
    let mut f = Fleet::start("", 3000);
    let text = f.ctl_ok(0, &["status"]);
    assert!(
        text.contains("fleet       postgres://") && text.contains("as i1 (lease 3000 ms)"),
        "{text}"
    );
    for name in ["i1", "i2", "i3"] {
        assert!(
            text.contains(&format!("              {name} mirror (epoch 0)")),
            "{text}"
        );
    }
    // A feature-flag system writes the next phase to every instance's flag
    // file at once: one flip happens, the others find the fleet there.
    for name in ["i1", "i2", "i3"] {
        std::fs::write(
            f.s.dir.path().join(format!("phase-{name}.flag")),
            "reads_new\n",
        )
        .unwrap();
    }
    f.assert_all_at("reads_new");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(f.status(2)["epoch"], 1);
    // pause on one instance holds every instance's next transaction;
    // resume on another lets them go.
    f.ctl_ok(0, &["pause"]);
    eventually("i2 holds new transactions", || {
        f.status(1)["paused"] == true
    });
    let held = Command::new("psql")
        .args([
            "-X",
            "-q",
            &f.url(1),
            "-c",
            "INSERT INTO events (src) VALUES ('held')",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        scalar(
            &f.s.direct_url(),
            "SELECT count(*) FROM events WHERE src = 'held'"
        ),
        "0"
    );
    f.ctl_ok(2, &["resume"]);
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        scalar(
            &f.s.direct_new_url(),
            "SELECT count(*) FROM events WHERE src = 'held'"
        ),
        "1"
    );
    // i2 goes away; the fleet flips without it (once its lease ended), and
    // when it comes back it takes the fleet's phase over its state file's.
    f.m.members[1].kill();
    let flipped = f.ctl_ok(0, &["flip", "writes"]);
    assert!(
        flipped.contains("2 live instance(s) acknowledged"),
        "{flipped}"
    );
    let config = f.m.members[1].config.clone();
    let log = f.s.dir.path().join("turnout-i2-again.log");
    let port = f.m.members[1].port;
    let _ = std::fs::remove_file(f.s.dir.path().join("admin-i2.sock"));
    f.m.members[1] = spawn_proxy(&config, log, port);
    let socket = f.s.dir.path().join("admin-i2.sock");
    eventually("i2's admin socket is up again", || socket.exists());
    f.assert_all_at("writes_new");
    let again = f.m.members[1].log_text();
    assert!(again.contains("it takes the fleet's"), "{again}");
    f.ctl_ok(1, &["finalize", "--yes"]);
    f.assert_all_at("finalized");
    let refused = f.ctl(2, &["rollback"]);
    assert!(!refused.status.success());
}

#[test]
fn an_unreachable_store_keeps_an_instance_from_starting_and_says_which() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        ..Options::default()
    });
    let port = turnout_harness::free_port().unwrap();
    let config = std::fs::read_to_string(&s.proxy.config).unwrap()
        + &format!("\n[fleet]\nstore = \"etcd://127.0.0.1:{port}/nowhere\"\nlease_ms = 1000\n");
    let path = s.dir.path().join("fleet.toml");
    std::fs::write(&path, config).unwrap();
    let (code, text) = common::fleet::run_until_exit(&path);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("fleet store etcd://127.0.0.1:{port}/nowhere"))
            && text.contains("does not accept clients"),
        "{text}"
    );
}

/// What each instance says of the mirror's source.
fn sources(f: &Fleet) -> Vec<serde_json::Value> {
    (0..3)
        .map(|i| f.status(i)["mirror_source"].clone())
        .collect()
}

/// The instance leading the applier (the one whose log says so last).
fn leader(f: &Fleet) -> usize {
    (0..3)
        .find(|&i| {
            let log = f.members[i].log_text();
            log.rfind("this instance leads the log applier")
                > log.rfind("this instance follows the log applier")
        })
        .expect("an instance leads the applier")
}

#[test]
fn a_fleet_feeds_the_mirror_from_one_applier_and_flips_under_load() {
    let f = Fleet::start_with("", 3000, true);
    let lead = leader(&f);
    for (i, m) in sources(&f).iter().enumerate() {
        assert_eq!(m["source"], "log", "{m}");
        let why = m["why"].as_str().unwrap_or_default();
        assert_eq!(
            why.contains("this instance follows it"),
            i != lead,
            "{i}: {why}"
        );
    }
    let clients = f.load(&[0, 1, 2], 14);
    std::thread::sleep(Duration::from_secs(2));
    println!("{}", f.ctl_ok(0, &["flip", "reads"]));
    f.assert_all_at("reads_new");
    std::thread::sleep(Duration::from_secs(2));
    // From an instance that does not lead the applier: the leader hands
    // the log over once every instance met the barrier.
    let other = (lead + 1) % 3;
    let writes = f.ctl_ok(other, &["flip", "writes"]);
    println!("{writes}");
    assert!(
        writes.contains("3 live instance(s) acknowledged")
            && writes.contains("log: every commit of old applied to new"),
        "{writes}"
    );
    f.assert_all_at("writes_new");
    std::thread::sleep(Duration::from_secs(2));
    println!("{}", f.ctl_ok(lead, &["rollback"]));
    f.assert_all_at("reads_new");
    std::thread::sleep(Duration::from_secs(2));
    println!("{}", f.ctl_ok((lead + 2) % 3, &["flip", "writes"]));
    f.assert_all_at("writes_new");
    assert_no_failed_pgbench(clients);
    assert_sides_identical_once_applied(&f.s, &PGBENCH_TABLES);
    for (i, m) in sources(&f).iter().enumerate() {
        println!("{i}: {m}");
        assert_eq!(m["source"], "log", "{m}");
        assert_eq!(m["log_of"], "new", "{m}");
        // Every commit through every instance waited until the applier
        // applied it (followers hear of it from the leader).
        assert_eq!(m["commits_not_waited"], 0, "{i}: {m}");
        assert_eq!(m["foreign_transactions"], 0, "{i}: {m}");
    }
    // Finalized from a follower: the leader drops the slot it read.
    f.ctl_ok(other, &["finalize", "--yes"]);
    f.assert_all_at("finalized");
    eventually("the slot on new is dropped", || {
        scalar(
            &f.s.direct_new_url(),
            "SELECT count(*) FROM pg_replication_slots",
        ) == "0"
    });
}

#[test]
fn the_applier_leader_killed_under_load_is_replaced_and_nothing_is_lost_or_applied_twice() {
    let mut f = Fleet::start_with("", 2000, true);
    let lead = leader(&f);
    let others: Vec<usize> = (0..3).filter(|&i| i != lead).collect();
    let clients = f.load(&others, 12);
    std::thread::sleep(Duration::from_secs(3));
    f.m.members[lead].kill();
    eventually("another instance leads the applier", || {
        others.iter().any(|&i| {
            f.members[i]
                .log_text()
                .contains("this instance leads the log applier")
        })
    });
    assert_no_failed_pgbench(clients);
    assert_sides_identical_once_applied(&f.s, &PGBENCH_TABLES);
    let new_lead = *others
        .iter()
        .find(|&&i| {
            f.members[i]
                .log_text()
                .contains("this instance leads the log applier")
        })
        .unwrap();
    let m = f.status(new_lead)["mirror_source"].clone();
    println!("{m}");
    assert_eq!(m["applier"], "applying", "{m}");
    // Flips go on without the dead instance.
    let flipped = f.ctl_ok(others[0], &["flip", "reads"]);
    assert!(
        flipped.contains("2 live instance(s) acknowledged"),
        "{flipped}"
    );
}

#[test]
fn a_frozen_applier_leader_is_replaced_and_follows_when_it_resumes() {
    let f = Fleet::start_with("", 2000, true);
    let lead = leader(&f);
    let others: Vec<usize> = (0..3).filter(|&i| i != lead).collect();
    let clients = f.load(&others, 12);
    std::thread::sleep(Duration::from_secs(2));
    signal("STOP", f.members[lead].pid());
    eventually("another instance leads the applier", || {
        others.iter().any(|&i| {
            f.members[i]
                .log_text()
                .contains("this instance leads the log applier")
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    signal("CONT", f.members[lead].pid());
    eventually("the old leader follows", || {
        let log = f.members[lead].log_text();
        log.rfind("this instance follows the log applier")
            > log.rfind("this instance leads the log applier")
    });
    assert_no_failed_pgbench(clients);
    assert_sides_identical_once_applied(&f.s, &PGBENCH_TABLES);
    let log: String = others.iter().map(|&i| f.members[i].log_text()).collect();
    assert!(log.contains("that stream was ended"), "{log}");
    for i in 0..3 {
        let m = f.status(i)["mirror_source"].clone();
        assert_eq!(m["applier"], "applying", "{i}: {m}");
    }
}
