//! The control plane against real PostgreSQL: reads flips and rollbacks
//! through the admin socket while clients run, the phase surviving a
//! restart, and clear refusals.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn setup() -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        ..Options::default()
    })
}

fn value(url: &str) -> String {
    stdout(&psql(
        url,
        &["-c", "SELECT v FROM marker WHERE id = 1"],
        &[],
    ))
}

#[test]
fn reads_flip_and_roll_back_fifty_times_under_pgbench_without_client_errors() {
    let s = setup();
    let url = s.app_url();
    let out = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A row that differs on purpose, to see which side serves reads.
    s.run_ok(&[
        "CREATE TABLE marker (id int PRIMARY KEY, v text)",
        "INSERT INTO marker VALUES (1, 'old')",
    ]);
    run_direct_ok(
        &s.direct_new_url(),
        &["UPDATE marker SET v = 'new' WHERE id = 1"],
    );
    assert_eq!(value(&url), "old");
    println!("{}", s.ctl_ok(&["flip", "reads"]));
    assert_eq!(value(&url), "new");
    // A strict driver (prepared once, bound again) gets exactly its own
    // answers from new too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = pg_client(&url).await;
        let stmt = client
            .prepare("SELECT v FROM marker WHERE id = $1")
            .await
            .unwrap();
        for _ in 0..3 {
            let row = client.query_one(&stmt, &[&1i32]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), "new");
        }
        let row = client
            .query_one("SELECT v FROM marker WHERE id = $1", &[&1i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "new");
    });
    s.ctl_ok(&["rollback"]);
    assert_eq!(value(&url), "old");

    // Writers and readers in every protocol mode while reads flip back and forth.
    let clients: Vec<_> = [
        vec!["-M", "simple"],
        vec!["-M", "extended", "-S"],
        vec!["-M", "prepared"],
        vec!["-M", "prepared", "-S"],
    ]
    .into_iter()
    .map(|mode| {
        Command::new("pgbench")
            .args(["-n", "-c", "2", "-T", "8"])
            .args(mode)
            .arg(&url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    })
    .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..50 {
        s.ctl_ok(&["flip", "reads"]);
        std::thread::sleep(Duration::from_millis(40));
        s.ctl_ok(&["rollback"]);
        std::thread::sleep(Duration::from_millis(40));
    }
    for c in clients {
        let out = c.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench failed:\n{text}");
        assert!(text.contains("number of failed transactions: 0"), "{text}");
    }
    let status = s.ctl_ok(&["status"]);
    println!("{status}");
    assert!(
        status.contains("phase       mirror (epoch 102)"),
        "{status}"
    );
    // The writes were mirrored all along: pgbench's tables are identical.
    assert_sides_identical(&s, &PGBENCH_TABLES);
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn ctl_reports_refuses_clearly_audits_and_the_phase_survives_a_restart() {
    let mut s = setup();
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("phase       mirror (epoch 0)"), "{status}");
    assert!(status.contains("reads from  old"), "{status}");

    // A dry run says what would happen and changes nothing.
    let dry = s.ctl_ok(&["flip", "reads", "--dry-run"]);
    assert!(
        dry.contains("dry run: would go mirror -> reads_new"),
        "{dry}"
    );
    assert!(s
        .ctl_ok(&["status"])
        .contains("phase       mirror (epoch 0)"));

    // Refusals are clear and change nothing.
    for (args, why) in [
        (vec!["rollback"], "nothing to roll back to"),
        (
            vec!["flip", "writes"],
            "flip writes needs phase reads_new; the phase is mirror",
        ),
        (vec!["sideways"], "unknown command"),
    ] {
        let out = s.ctl(&args);
        // A usage error exits 2, a refusal 1.
        let code = if args == ["sideways"] { 2 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
    let out = s.ctl(&["--json", "status"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["phase"], "mirror");

    s.ctl_ok(&["flip", "reads"]);
    // Killed outright, then started again: the phase is kept.
    let config = s.proxy.config.clone();
    s.restart_proxy("turnout2.log");
    let status = s.ctl_ok(&["status"]);
    assert!(
        status.contains("phase       reads_new (epoch 1)"),
        "{status}"
    );
    assert!(status.contains("history     mirror"), "{status}");
    let rolled = s.ctl_ok(&["rollback"]);
    assert!(
        rolled.contains("done: reads_new -> mirror (epoch 2)"),
        "{rolled}"
    );

    // Every mutating command, refused or not, is in the audit log.
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("{audit}");
    assert_eq!(lines.len(), 5, "{audit}");
    assert_eq!(lines[0]["dry_run"], true);
    assert_eq!(lines[1]["outcome"]["ok"], false);
    assert_eq!(lines[2]["command"], "flip writes");
    assert!(lines[3]["caller"].as_str().unwrap().starts_with("uid "));
    assert_eq!(lines[4]["outcome"]["to"], "mirror");

    // A broken state file stops turnout with a clear error, not a guess.
    std::fs::write(s.dir.path().join("state.json"), "{\"phase\": \"sideways\"").unwrap();
    let out = Command::new(turnout_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("state.json") && stderr(&out).contains("fix or remove it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_flag_file_flips_like_the_admin_command_and_bad_content_changes_nothing() {
    let s = setup();
    let flag = s.dir.path().join("phase.flag");
    std::fs::write(&flag, "reads_new\n").unwrap();
    eventually("the flag file flips reads", || s.phase() == "reads_new");
    std::fs::write(&flag, "sideways").unwrap();
    eventually("the bad content is refused in the log", || {
        s.proxy.log_text().contains("flag file refused")
    });
    assert_eq!(s.phase(), "reads_new");
    std::fs::write(&flag, "finalized").unwrap();
    eventually("a phase two steps away is refused", || {
        s.proxy.log_text().matches("flag file refused").count() == 2
    });
    assert_eq!(s.phase(), "reads_new");
    std::fs::write(&flag, "mirror").unwrap();
    eventually("the flag file rolls back", || s.phase() == "mirror");
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    println!("{audit}");
    assert_eq!(audit.lines().count(), 4, "{audit}");
    assert!(
        audit.lines().all(|l| l.contains("\"caller\":\"flag file ")),
        "{audit}"
    );
}

#[test]
fn guards_refuse_a_flip_with_every_reason_and_force_overrides_on_the_record() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        sampling: "rate = 1.0\nper_fingerprint_per_sec = 0\nrecheck_delay_ms = 50\n\
                   [guards]\nmin_compared_reads = 5",
        ..Options::default()
    });
    let url = s.app_url();
    s.run_ok(&[
        "CREATE TABLE marker (id int PRIMARY KEY, v text)",
        "INSERT INTO marker VALUES (1, 'a'), (2, 'b')",
    ]);
    // Too few reads compared yet.
    let out = s.ctl(&["flip", "reads"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only 0 read(s) compared") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    let dry = s.ctl(&["flip", "reads", "--dry-run"]);
    assert_eq!(
        dry.status.code(),
        Some(1),
        "a dry run says the guards refuse"
    );
    for _ in 0..6 {
        let out = s.psql(&url, &["-c", "SELECT v FROM marker WHERE id = 1"]);
        assert!(out.status.success());
    }
    eventually("six reads compared", || {
        s.ctl_ok(&["status"]).contains("6 compared")
    });
    // A confirmed mismatch: a second reason.
    let out = psql(
        &s.direct_new_url(),
        &["-c", "UPDATE marker SET v = 'changed' WHERE id = 2"],
        &[],
    );
    assert!(out.status.success());
    let out = s.psql(&url, &["-c", "SELECT v FROM marker WHERE id = 2"]);
    assert!(out.status.success());
    eventually("the mismatch is confirmed", || {
        s.ctl_ok(&["status"]).contains("1 mismatched")
    });
    let status = s.ctl_ok(&["status"]);
    println!("{status}");
    assert!(
        status.contains("guards      refuse: 1 confirmed mismatch(es) in 7 compared"),
        "{status}"
    );
    let out = s.ctl(&["flip", "reads"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("guards.max_mismatch_rate"),
        "{}",
        stderr(&out)
    );
    // --force overrides, and the audit log says what it overrode.
    let forced = s.ctl_ok(&["flip", "reads", "--force"]);
    assert!(forced.contains("mirror -> reads_new"), "{forced}");
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("flip reads --force (overriding: 1 confirmed mismatch(es)"),
        "{audit}"
    );
    // The guards' figures never hold a rollback back.
    s.ctl_ok(&["rollback"]);
}

/// `GET /metrics` from turnout.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn prometheus_metrics_show_phase_queries_flips_and_refusals() {
    let port = turnout_harness::free_port().unwrap();
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        metrics: Some(port),
        sampling: "rate = 1.0\nper_fingerprint_per_sec = 0\n[guards]\nmin_compared_reads = 1000",
        ..Options::default()
    });
    s.run_ok(&[
        "CREATE TABLE marker (id int PRIMARY KEY, v text)",
        "INSERT INTO marker VALUES (1, 'a')",
        "SELECT v FROM marker WHERE id = 1",
        "SELECT v FROM marker WHERE id = 1",
    ]);
    assert_eq!(s.ctl(&["flip", "reads"]).status.code(), Some(1));
    s.ctl_ok(&["flip", "reads", "--force"]);
    s.run_ok(&["SELECT v FROM marker WHERE id = 1"]);
    eventually("the figures are scraped", || {
        let m = scrape(port);
        m.contains("turnout_phase{phase=\"reads_new\"} 1")
            && m.contains("turnout_reads_compared_total{result=\"match\"} 3")
    });
    let m = scrape(port);
    println!("{m}");
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    for expected in [
        "turnout_epoch 1",
        "turnout_queries_total{kind=\"read\",side=\"old\"} 2",
        "turnout_queries_total{kind=\"read\",side=\"new\"} 1",
        "turnout_queries_total{kind=\"write\",side=\"old\"} 1",
        "turnout_flips_total{to=\"reads_new\"} 1",
        "turnout_guard_refusals_total 1",
        "turnout_query_seconds_bucket{kind=\"read\",side=\"new\"",
        "turnout_mirror_errors_total 0",
    ] {
        assert!(m.contains(expected), "missing {expected}:\n{m}");
    }
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
}

#[test]
fn the_sampling_rate_changes_live_and_diffs_lists_fingerprints() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        sampling: "rate = 0.0\nper_fingerprint_per_sec = 0",
        ..Options::default()
    });
    s.run_ok(&[
        "CREATE TABLE marker (id int PRIMARY KEY, v text)",
        "INSERT INTO marker VALUES (1, 'a')",
        "SELECT v FROM marker WHERE id = 1",
    ]);
    let out = s.ctl(&["sample", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("0.0-1.0"), "{}", stderr(&out));
    let dry = s.ctl_ok(&["sample", "1", "--dry-run"]);
    assert!(
        dry.contains("dry run: would change sampling rate 0.0 -> 1.0"),
        "{dry}"
    );
    let done = s.ctl_ok(&["sample", "1"]);
    assert!(done.contains("done: sampling rate 0.0 -> 1.0"), "{done}");
    s.run_ok(&[
        "SELECT v FROM marker WHERE id = 1",
        "SELECT v FROM marker WHERE id = 1",
    ]);
    eventually("the reads after the change are compared", || {
        s.ctl_ok(&["diffs"])
            .contains("         2  select v from marker where id = ?")
    });
    let diffs = s.ctl_ok(&["diffs"]);
    println!("{diffs}");
    assert!(diffs.starts_with("sampling rate 1.0"), "{diffs}");
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"command\":\"sample ").count(), 3, "{audit}");
}

#[test]
fn reload_changes_users_and_sampling_live_and_refuses_a_broken_config() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        sampling: "rate = 0.0",
        ..Options::default()
    });
    let config = s.proxy.config.clone();
    let original = std::fs::read_to_string(&config).unwrap();
    let with_late = original.replacen(
        "[[users]]",
        "[[users]]\nname = \"late\"\npassword = \"late-pw\"\n\n[[users]]",
        1,
    );
    let edited = with_late.replace("rate = 0.0", "rate = 1.0");
    std::fs::write(&config, &edited).unwrap();
    let late = s.url("late", "late-pw");
    let login = |url: &str| psql(url, &["-c", "SELECT 1"], &[]).status.success();
    assert!(!login(&late), "not reloaded yet");

    let dry = s.ctl(&["reload", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    // The dry run lists what would change.
    assert!(
        stdout(&dry).contains("applied live: users, sampling.rate"),
        "{}",
        stdout(&dry)
    );
    assert!(!login(&late), "a dry run changes nothing");
    let out = s.ctl(&["--json", "reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(login(&late), "the new user logs in after reload");
    assert!(s.ctl_ok(&["diffs"]).starts_with("sampling rate 1.0"));
    // A setting that needs a restart is said, not silently ignored.
    std::fs::write(
        &config,
        edited.replacen("level = \"debug\"", "level = \"info\"", 1),
    )
    .unwrap();
    let said = s.ctl_ok(&["reload"]);
    assert!(
        said.contains("applied live: nothing changed")
            && said.contains("not applied until turnout restarts: log"),
        "{said}"
    );
    std::fs::write(&config, &edited).unwrap();

    // A broken file is refused with its error; the running config stays.
    std::fs::write(&config, edited.replacen("\nport = ", "\nport = 70000 #", 1)).unwrap();
    let out = s.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("config not reloaded") && stderr(&out).contains("expected 1-65535"),
        "{}",
        stderr(&out)
    );
    assert!(login(&late) && login(&s.app_url()));

    // SIGHUP does the same as the command.
    std::fs::write(&config, &original).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &s.proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP reloads", || {
        s.ctl_ok(&["diffs"]).starts_with("sampling rate 0.0")
    });
    assert!(!login(&late), "the user removed from the file is gone");
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(
        audit.matches("\"command\":\"reload\"").count(),
        5,
        "{audit}"
    );
}

#[test]
fn pause_waits_for_open_transactions_and_holds_new_ones_until_resume() {
    let s = setup();
    s.run_ok(&["CREATE TABLE t (id int PRIMARY KEY)"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&s.app_url(), tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    rt.block_on(client.batch_execute("BEGIN; INSERT INTO t VALUES (1)"))
        .unwrap();
    // pause waits for that transaction.
    let socket = s.admin_socket();
    let pause = std::thread::spawn(move || {
        Command::new(turnout_bin())
            .args(["ctl", "--socket"])
            .arg(socket)
            .arg("pause")
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !pause.is_finished(),
        "pause returned with a transaction open"
    );
    rt.block_on(client.batch_execute("INSERT INTO t VALUES (2); COMMIT"))
        .unwrap();
    let out = pause.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("PAUSED"), "{status}");
    // Flips and rollbacks meanwhile leave the operator's pause on (a chaos
    // schedule found a reads flip lifting it).
    for change in [
        &["flip", "reads"][..],
        &["flip", "writes"],
        &["rollback"],
        &["rollback"],
    ] {
        s.ctl_ok(change);
        let status = s.ctl_ok(&["status"]);
        assert!(status.contains("PAUSED"), "after {change:?}: {status}");
    }
    // A new transaction is held, not refused.
    let mut held = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            &s.app_url(),
            "-c",
            "SELECT count(*) FROM t",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        held.try_wait().unwrap().is_none(),
        "a query ran while paused"
    );
    assert!(s.ctl_ok(&["resume"]).contains("done: resume"));
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let out = s.ctl(&["resume"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not paused"));
}

#[test]
fn reads_failing_on_new_after_a_flip_make_turnout_roll_back_by_itself() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        sampling: "rate = 0.0\n[guards]\nwatch_secs = 20\nabort_errors = 1",
        ..Options::default()
    });
    // A table new lacks: reads of it fail once new serves reads.
    run_direct_ok(&s.direct_url(), &["CREATE TABLE only_old (v int)"]);
    s.run_ok(&["SELECT count(*) FROM only_old"]);
    s.ctl_ok(&["flip", "reads"]);
    // Errors the client's own SQL or settings cause count for nothing: a
    // division by zero, a table no side has, its statement timeout.
    fail_three_times_each(
        &s,
        &[
            "SELECT 1/0",
            "SELECT * FROM no_side_has_this",
            "SET statement_timeout = 1\n SELECT pg_sleep(0.2)",
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        s.ctl_ok(&["status"]).contains("phase       reads_new"),
        "client errors rolled the flip back: {}",
        s.ctl_ok(&["status"])
    );
    for _ in 0..2 {
        let out = s.psql(&s.app_url(), &["-c", "SELECT count(*) FROM only_old"]);
        assert!(!out.status.success(), "new should not have the table");
    }
    eventually("turnout rolls back by itself", || {
        s.ctl_ok(&["status"])
            .contains("phase       mirror (epoch 2)")
    });
    s.run_ok(&["SELECT count(*) FROM only_old"]);
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"caller\":\"watch window: 2 read error(s)"),
        "{audit}"
    );
    assert!(s.proxy.log_text().contains("rolled back by itself"));
}

#[test]
fn passwords_never_show_and_the_admin_socket_refuses_other_users() {
    let port = turnout_harness::free_port().unwrap();
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        metrics: Some(port),
        sampling: "rate = 1.0\nper_fingerprint_per_sec = 0\nlog_statements = true",
        mirror_extra: "log_statements = true",
        ..Options::default()
    });
    s.run_ok(&[
        "CREATE TABLE marker (id int PRIMARY KEY, v text)",
        "INSERT INTO marker VALUES (1, 'a')",
        "SELECT v FROM marker WHERE id = 1",
    ]);
    // A diverging row and a failing mirror write, so every log has lines.
    run_direct_ok(
        &s.direct_new_url(),
        &["UPDATE marker SET v = 'b' WHERE id = 1"],
    );
    run_direct_ok(
        &s.direct_new_url(),
        &["CREATE TABLE only_old_side (id int)"],
    );
    s.run_ok(&["SELECT v FROM marker WHERE id = 1"]);
    run_direct_ok(&s.direct_url(), &["CREATE TABLE gone (id int)"]);
    s.run_ok(&["INSERT INTO gone VALUES (1)"]);
    // A wrong password.
    let bad = s.psql(&s.url("app", "not-the-password"), &["-c", "SELECT 1"]);
    assert!(!bad.status.success());
    eventually("the mismatch is recorded", || {
        std::fs::read_to_string(s.read_diffs())
            .unwrap_or_default()
            .contains("confirmed")
    });
    let mut seen = vec![
        stdout(&s.ctl(&["--json", "status"])),
        stdout(&s.ctl(&["--json", "diffs"])),
        scrape(port),
    ];
    for entry in std::fs::read_dir(s.dir.path()).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") || path.is_dir() {
            continue; // the config holds them by design
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            seen.push(format!("{}:\n{text}", path.display()));
        }
    }
    let all = seen.join("\n");
    assert!(
        all.contains("divergence") || all.contains("mirror_error"),
        "logs were written"
    );
    for secret in [APP_PASSWORD, MD5_PASSWORD, "backend-pw"] {
        assert!(!all.contains(secret), "{secret:?} appears in:\n{all}");
    }

    // The admin socket is its owner's (mode 0600): another user is refused.
    let mut as_other = Command::new(turnout_bin());
    as_other
        .args(["ctl", "--socket"])
        .arg(s.admin_socket())
        .arg("status");
    turnout_harness::as_server_user(&mut as_other).unwrap();
    let out = as_other.output().unwrap();
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
    {
        assert!(!out.status.success(), "another user was let in");
        assert!(
            stderr(&out).contains("ermission denied"),
            "{}",
            stderr(&out)
        );
    }
}

/// From passthrough to mirror without a restart: `flip mirror` checks new,
/// then writes are mirrored from the next session on; sessions opened in
/// passthrough end at their next idle moment (a transaction open then
/// finishes first), their clients told to connect again; the backfill
/// waits for them, then copies what predates mirroring.
#[test]
fn flip_mirror_enters_mirroring_from_passthrough_without_a_restart() {
    let s = Setup::start(Options {
        phase: Some("passthrough"),
        admin: true,
        ..Options::default()
    });
    let table = "CREATE TABLE notes (id int PRIMARY KEY, body text)";
    run_direct_ok(&s.direct_new_url(), &[table]);
    run_direct_ok(
        &s.direct_url(),
        &[table, "INSERT INTO notes VALUES (1, 'before')"],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (idle, busy) = rt.block_on(async {
        let idle = pg_client(&s.app_url()).await;
        let busy = pg_client(&s.app_url()).await;
        idle.simple_query("SELECT 1").await.unwrap();
        busy.batch_execute("BEGIN; INSERT INTO notes VALUES (2, 'in passthrough')")
            .await
            .unwrap();
        (idle, busy)
    });
    let dry = s.ctl_ok(&["flip", "mirror", "--dry-run"]);
    assert!(
        dry.contains("passthrough -> mirror")
            && dry.contains("2 session(s) opened in passthrough would close"),
        "{dry}"
    );
    let flip = {
        let socket = s.admin_socket();
        std::thread::spawn(move || {
            Command::new(turnout_bin())
                .args(["ctl", "--socket"])
                .arg(socket)
                .args(["flip", "mirror"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // The open transaction finishes as it would have.
    rt.block_on(async { busy.batch_execute("COMMIT").await.unwrap() });
    let out = flip.join().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 session(s) opened in passthrough closed at their next idle moment"),
        "{text}"
    );
    // Both old sessions were closed between transactions, with a reason.
    rt.block_on(async {
        for c in [&idle, &busy] {
            let e = c.simple_query("SELECT 1").await.unwrap_err();
            assert!(
                e.as_db_error().is_some_and(
                    |d| d.code().code() == "57P01" && d.message().contains("connect again")
                ) || c.is_closed(),
                "{e}"
            );
        }
    });
    assert_eq!(s.phase(), "mirror");
    // New sessions mirror.
    s.run_ok(&["INSERT INTO notes VALUES (3, 'mirrored')"]);
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT body FROM notes WHERE id = 3"),
        "mirrored"
    );
    // What predates mirroring is the backfill's, which may start now.
    s.ctl_ok(&["backfill", "start"]);
    wait_job(&s, "backfill", Duration::from_secs(60));
    s.ctl_ok(&["verify", "start"]);
    let v = wait_job(&s, "verify", Duration::from_secs(60));
    assert_eq!(v["last_clean"], true, "{v}");
    assert_sides_identical(&s, &[("notes", "id")]);
    // No way back to passthrough from turnout.
    let out = s.ctl(&["rollback"]);
    assert_eq!(out.status.code(), Some(1));
}
