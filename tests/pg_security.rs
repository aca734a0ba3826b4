//! What the security review found, PostgreSQL side: no client can make a
//! write skip the mirror, its own or another session's (a classification
//! cache no text can poison, EXPLAIN ANALYZE forms, large objects, the
//! server's own answer as the ground truth).

mod common;

use common::*;

fn mirrored() -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        ..Options::default()
    })
}

const T: [(&str, &str); 1] = [("t", "id")];

/// Another session's writes, by every protocol: simple, extended
/// (unnamed), prepared (named) and in a transaction.
fn victims(s: &Setup, ids: [i32; 4]) {
    s.run_ok(&[&format!("DELETE FROM t WHERE id = {}", ids[0])]);
    let url = s.app_url();
    block_on(async move {
        let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        assert_eq!(
            c.execute("DELETE FROM t WHERE id = $1", &[&ids[1]])
                .await
                .unwrap(),
            1
        );
        let st = c
            .prepare("UPDATE t SET v = v + 1 WHERE id = $1")
            .await
            .unwrap();
        assert_eq!(c.execute(&st, &[&ids[2]]).await.unwrap(), 1);
        let tx = c.transaction().await.unwrap();
        tx.execute("DELETE FROM t WHERE id = $1", &[&ids[3]])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
}

#[test]
fn a_poisoned_classification_cache_cannot_drop_another_session_s_writes() {
    let s = mirrored();
    s.run_ok(&[
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)",
        "INSERT INTO t SELECT i, i FROM generate_series(1, 40) i",
    ]);
    // The review's poison: a nested comment hides a DELETE (PostgreSQL runs
    // only the SELECT); `$` inside an identifier; both through both
    // protocols.
    let poison = [
        "/* /* */ DELETE FROM t WHERE id = 1 -- */ SELECT 'harmless'",
        "/* /* */ UPDATE t SET v = v + 1 WHERE id = 1 -- */ SELECT 'harmless'",
        "SELECT 1 AS a$b /* $b$ */",
    ];
    for p in poison {
        s.run_ok(&[p]);
    }
    let url = s.app_url();
    block_on(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for p in poison {
            c.query(p, &[]).await.unwrap();
        }
    });
    assert_eq!(
        scalar(&s.direct_url(), "SELECT count(*) FROM t WHERE id = 1"),
        "1"
    );
    victims(&s, [3, 4, 5, 6]);
    assert_sides_identical(&s, &T);

    // A flood of 10 050 distinct shapes, then the writes again.
    let flood: String = (0..10_050)
        .map(|i| format!("SELECT 1 AS c{i};\n"))
        .collect();
    let file = s.dir.path().join("flood.sql");
    std::fs::write(&file, flood).unwrap();
    let out = s.psql(&s.app_url(), &["-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for p in poison {
        s.run_ok(&[p]);
    }
    victims(&s, [7, 8, 9, 10]);
    assert_sides_identical(&s, &T);
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT count(*) FROM t"),
        "34",
        "six rows deleted on new as on old"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn explain_analyze_of_a_write_and_large_object_writes_run_on_both_sides() {
    let s = mirrored();
    s.run_ok(&[
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)",
        "INSERT INTO t SELECT i, i FROM generate_series(1, 10) i",
    ]);
    s.run_ok(&[
        "EXPLAIN ANALYZE UPDATE t SET v = v + 1 WHERE id = 1",
        "EXPLAIN (ANALYZE) UPDATE t SET v = v + 10 WHERE id = 2",
        "EXPLAIN (ANALYZE true, COSTS false) DELETE FROM t WHERE id = 3",
        "EXPLAIN (ANALYZE, BUFFERS) WITH d AS (UPDATE t SET v = v + 100 WHERE id = 4 RETURNING *) SELECT * FROM d",
        "EXPLAIN (ANALYZE on, TIMING off) INSERT INTO t VALUES (11, 11)",
        "EXPLAIN (ANALYZE false) DELETE FROM t WHERE id = 5",
        "SELECT lo_from_bytea(424242, '\\xdeadbeef'::bytea)",
        "SELECT lo_put(424242, 4, '\\x0102'::bytea)",
    ]);
    assert_sides_identical(&s, &T);
    for url in [s.direct_url(), s.direct_new_url()] {
        assert_eq!(
            scalar(&url, "SELECT encode(lo_get(424242), 'hex')"),
            "deadbeef0102"
        );
        assert_eq!(scalar(&url, "SELECT count(*) FROM t"), "10");
    }
    // Large-object functions go as statements (no row images carry them):
    // said, once per shape; nothing else is recorded.
    let records = s.divergences();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.contains("\"kind\":\"unsafe_statement\"") && r.contains("large-object")),
        "{records:?}"
    );
}

#[test]
fn a_backslash_setting_on_one_side_alone_is_given_to_the_other_before_the_text() {
    let s = mirrored();
    s.run_ok(&[
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)",
        "INSERT INTO t SELECT i, i FROM generate_series(1, 10) i",
    ]);
    // old's role default turns backslash escapes on in plain strings (on
    // old alone). The server says so at startup (ParameterStatus): the text
    // is a write, and new's session is given the same setting first, so
    // both sides run the DELETE the parser did not see, and nothing is
    // recorded.
    run_direct_ok(
        &s.direct_url(),
        &["ALTER ROLE app SET standard_conforming_strings = off"],
    );
    let text = "SELECT 'a\\' , ' ; DELETE FROM t WHERE id = 8; --'";
    s.run_ok(&[text]);
    for url in [s.direct_url(), s.direct_new_url()] {
        assert_eq!(scalar(&url, "SELECT count(*) FROM t WHERE id = 8"), "0");
    }
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
    run_direct_ok(
        &s.direct_url(),
        &["ALTER ROLE app RESET standard_conforming_strings"],
    );
    // The session's own change of the setting: texts with a backslash
    // are mirrored from then on, and nothing escapes.
    let out = s.psql(
        &s.app_url(),
        &[
            "-c",
            "SET standard_conforming_strings = off",
            "-c",
            "SELECT 'a\\' , ' ; DELETE FROM t WHERE id = 9; --'",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        scalar(&s.direct_new_url(), "SELECT count(*) FROM t WHERE id = 9"),
        "0"
    );
    assert_eq!(
        scalar(&s.direct_url(), "SELECT count(*) FROM t WHERE id = 9"),
        "0"
    );
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

/// Runs as root only (it needs another OS user to try the socket).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn the_admin_socket_is_its_owner_s_even_under_umask_000_and_checks_the_caller() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        ..Options::default()
    });
    // Started again under umask 000.
    s.proxy.kill();
    let log = std::fs::File::create(s.dir.path().join("umask.log")).unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Killed(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" run --config \"$1\"")
            .arg(turnout_bin())
            .arg(&s.proxy.config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let socket = s.admin_socket();
    eventually("the admin socket is up", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    // No directory left behind beside it.
    let left: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    if running_as_root() {
        // Even with the socket opened to everyone by mistake, another OS
        // user is refused by its uid.
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut other = std::process::Command::new(turnout_bin());
        other.args(["ctl", "--socket"]).arg(&socket).args(["pause"]);
        turnout_harness::as_server_user(&mut other).unwrap();
        let out = other.output().unwrap();
        assert!(!out.status.success(), "another user was let in");
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains("may not use this admin socket"), "{text}");
        // The owner still is let in, and nothing changed.
        let mut own = std::process::Command::new(turnout_bin());
        let out = own
            .args(["ctl", "--socket"])
            .arg(&socket)
            .arg("status")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!stdout(&out).contains("paused"), "{}", stdout(&out));
    }
}

#[test]
fn slow_metrics_connections_never_starve_database_clients() {
    let port = turnout_harness::free_port().unwrap();
    let mut s = Setup::start(Options {
        metrics: Some(port),
        ..Options::default()
    });
    // Started again with few file descriptors (soft and hard), so that
    // connections held by turnout would run out of them.
    s.proxy.kill();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log = s.dir.path().join("slow.log");
    let _child = Killed(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 100 && exec \"$0\" run --config \"$1\"")
            .arg(turnout_bin())
            .arg(&s.proxy.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually("turnout serves again", || {
        s.psql(&s.app_url(), &["-c", "SELECT 1"]).status.success()
    });
    // 150 scrapers that send one byte and then nothing (slowloris): more
    // than turnout has descriptors for.
    let slow: Vec<std::net::TcpStream> = (0..150)
        .filter_map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            std::io::Write::write_all(&mut c, b"G").ok()?;
            Some(c)
        })
        .collect();
    assert!(slow.len() >= 120, "{} slow connections", slow.len());
    // Database clients are served all along.
    for _ in 0..30 {
        let out = s.psql(&s.app_url(), &["-c", "SELECT 1"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    drop(slow);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("Too many open files"), "{text}");
    // And the endpoint answers once the slow ones are cut.
    eventually("metrics answer again", || {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = c.read_to_string(&mut body);
        body.contains("200 OK")
    });
}

#[test]
fn row_values_in_server_errors_stay_out_of_records_and_logs() {
    let s = mirrored();
    s.run_ok(&["CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL)"]);
    run_direct_ok(
        &s.direct_new_url(),
        &["CREATE UNIQUE INDEX u_email ON u (email)"],
    );
    s.run_ok(&[
        "INSERT INTO u VALUES (1, 'alice@example.com')",
        // new refuses it: its DETAIL names the value.
        "INSERT INTO u VALUES (2, 'alice@example.com')",
    ]);
    let records = s.divergences().join("\n");
    assert!(
        records.contains("Key (email)=(<redacted: 17 bytes>)"),
        "{records}"
    );
    let log = s.proxy.log_text();
    for text in [&records, &log] {
        assert!(!text.contains("alice@example.com"), "{text}");
    }
}

#[test]
fn control_characters_from_clients_cannot_forge_log_lines() {
    let s = Setup::start(Options::default());
    let forged = "eve\n2026-11-29T00:00:00Z  INFO flip done: phase writes_new\x1b[2J";
    let url = format!(
        "host=127.0.0.1 port={} dbname=app user='{forged}' password=x connect_timeout=10",
        s.proxy.port
    );
    block_on(async move {
        assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_err());
    });
    eventually("the refusal is logged", || {
        s.proxy.log_text().contains("eve\\n2026")
    });
    let log = s.proxy.log_text();
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-11-29T00:00:00Z")),
        "{log}"
    );
}

#[test]
fn turnout_s_files_are_private_and_a_planted_link_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::start(Options {
        phase: Some("mirror"),
        ddl: Some("both"),
        admin: true,
        sampling: "rate = 1.0\nper_fingerprint_per_sec = 0",
        ..Options::default()
    });
    // Someone placed a link where the state file's temporary file goes.
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, s.dir.path().join("state.json.tmp")).unwrap();
    s.run_ok(&[
        "CREATE TABLE t (id int PRIMARY KEY, v int)",
        "INSERT INTO t VALUES (1, 1)",
        "SELECT v FROM t WHERE id = 1",
    ]);
    run_direct_ok(&s.direct_new_url(), &["DROP TABLE t"]);
    s.run_ok(&["INSERT INTO t VALUES (2, 2)"]);
    s.ctl_ok(&["flip", "reads", "--force"]);
    s.ctl_ok(&["rollback"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    eventually("the read-diff summary is written", || {
        std::fs::read_dir(s.dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("summary"))
    });
    let mut checked = Vec::new();
    for e in std::fs::read_dir(s.dir.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let written_by_turnout = name.ends_with(".jsonl") || name.ends_with(".json");
        if !written_by_turnout {
            continue;
        }
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        checked.push(name);
    }
    for expected in ["state.json", "audit.jsonl", "divergences.jsonl"] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} not in {checked:?}"
        );
    }
}

#[test]
fn startup_parameters_beyond_session_formatting_are_refused() {
    let s = Setup::start(Options::default());
    for options in [
        "-c session_replication_role=replica",
        "-c log_statement=all",
        "-c post_auth_delay=1",
    ] {
        let out = psql(&s.app_url(), &["-c", "SELECT 1"], &[("PGOPTIONS", options)]);
        assert!(!out.status.success(), "{options} was let through");
        assert!(
            stderr(&out).contains("unsupported startup parameter"),
            "{options}: {}",
            stderr(&out)
        );
    }
    let out = psql(
        &s.app_url(),
        &["-c", "SHOW statement_timeout"],
        &[
            ("PGOPTIONS", "-c statement_timeout=5s"),
            ("PGAPPNAME", "mine"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "5s");
}

/// The salt turnout's SCRAM exchange offers `user` (its server-first
/// message); `None` when `user` is challenged with md5.
fn scram_salt(port: u16, user: &str) -> Option<String> {
    common::raw::challenge(port, user).1
}

#[test]
fn an_unknown_user_gets_the_same_salt_every_time_as_a_real_one_does() {
    let s = Setup::start(Options::default());
    let port = s.proxy.port;
    let real = scram_salt(port, "app").expect("app is a SCRAM user");
    assert_eq!(Some(real.clone()), scram_salt(port, "app"));
    // Unknown names challenged with SCRAM (others get md5, as the md5
    // user does: see pg_hardening).
    let ghosts: Vec<(String, String)> = (0..40)
        .filter_map(|i| {
            let name = format!("nobody{i}");
            Some((name.clone(), scram_salt(port, &name)?))
        })
        .take(2)
        .collect();
    assert_eq!(ghosts.len(), 2, "no unknown name was challenged with SCRAM");
    let ghost = &ghosts[0].1;
    assert_eq!(
        Some(ghost.clone()),
        scram_salt(port, &ghosts[0].0),
        "a fresh salt tells the user does not exist"
    );
    assert_ne!(ghost, &ghosts[1].1);
    assert_eq!(
        base64_len(ghost),
        base64_len(&real),
        "salts of one length for both"
    );
}

fn base64_len(s: &str) -> usize {
    s.trim_end_matches('=').len()
}

#[test]
fn users_with_backend_roles_of_their_own_cannot_end_each_other_s_sessions() {
    let s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        ..Options::default()
    });
    for side in [&s.old, s.new.as_ref().unwrap()] {
        for role in ["role_a", "role_b"] {
            side.psql(
                "postgres",
                &format!("CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'; GRANT ALL ON DATABASE app TO {role}"),
            )
            .unwrap();
        }
    }
    // Two users, each with a backend role of its own, added by a reload.
    let mut config = std::fs::read_to_string(&s.proxy.config).unwrap();
    for (user, role) in [("alice", "role_a"), ("bob", "role_b")] {
        config.push_str(&format!(
            "\n[[users]]\nname = \"{user}\"\npassword = \"pw-{user}\"\nbackend_user = \"{role}\"\nbackend_password = \"pw-{role}\"\n"
        ));
    }
    std::fs::write(&s.proxy.config, config).unwrap();
    s.ctl_ok(&["reload"]);
    let alice = s.url("alice", "pw-alice");
    assert_eq!(scalar(&alice, "SELECT current_user"), "role_a");
    // alice's session stays open while bob tries to end it.
    let mut held = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", &alice, "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut pid = String::new();
    eventually("alice's backend is running", || {
        pid = s
            .old
            .psql(
                "postgres",
                "SELECT pid FROM pg_stat_activity WHERE usename = 'role_a' AND query LIKE '%pg_sleep%'",
            )
            .unwrap_or_default();
        !pid.is_empty()
    });
    let out = s.psql(
        &s.url("bob", "pw-bob"),
        &["-c", &format!("SELECT pg_terminate_backend({pid})")],
    );
    assert!(!out.status.success(), "bob ended alice's session");
    assert!(
        stderr(&out).contains("permission denied") || stderr(&out).contains("must be a member"),
        "{}",
        stderr(&out)
    );
    assert!(held.try_wait().unwrap().is_none(), "alice's session ended");
    let _ = held.kill();
    let _ = held.wait();
    // The configured role stays everyone else's.
    assert_eq!(scalar(&s.app_url(), "SELECT current_user"), "app");
}
