//! Issue 30, MariaDB side: a sampled read with side effects runs once (the
//! shadow and its re-checks run read-only), and clients with backend
//! logins of their own cannot end each other's sessions by any path, a
//! procedure's `KILL` included.

mod common;

use common::mysql::*;

#[test]
fn a_sampled_read_with_side_effects_runs_once_and_its_write_is_recorded() {
    let s = MySetup::start_with(
        "mirror",
        "",
        None,
        "rate = 1.0\nper_fingerprint_per_sec = 0\nrecheck_delay_ms = 20",
    );
    s.sql_ok("CREATE TABLE counter (id INT PRIMARY KEY, n INT NOT NULL)");
    s.sql_ok("INSERT INTO counter VALUES (1, 0)");
    // Made on each side directly, behind a view: no statement text through
    // turnout names the function.
    for m in [&s.old, &s.new] {
        m.sql(
            "app",
            "DELIMITER //\nCREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA \
             BEGIN UPDATE counter SET n = n + 1 WHERE id = 1; RETURN 1; END//",
        )
        .unwrap();
        m.sql("app", "CREATE VIEW bumped AS SELECT bump() AS b")
            .unwrap();
    }
    let out = s.mariadb("app", MY_PASSWORD, "SELECT b FROM bumped", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = || {
        let mut p = s.dir.path().join("read-diffs.jsonl").into_os_string();
        p.push(".summary.json");
        std::fs::read_to_string(p).unwrap_or_default()
    };
    common::eventually("the sample is counted as not read-only", || {
        summary().contains("not_read_only")
    });
    let n = |m: &turnout_instances::MariaDbInstance| m.sql("app", "SELECT n FROM counter").unwrap();
    // Once, where the client's read ran (old, the authority in mirror).
    assert_eq!(n(&s.old), "1", "the client's read ran once on old");
    assert_eq!(n(&s.new), "0", "the shadow read ran the function on new");
    // The client's read wrote on old alone: found by its shadow, recorded.
    let records = s.divergences();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("\"kind\":\"unmirrored_write\""),
        "{records:?}"
    );
}

#[test]
fn users_with_backend_logins_of_their_own_cannot_kill_each_other_through_a_procedure() {
    let s = MySetup::start("mirror", "");
    for m in [&s.old, &s.new] {
        for (user, pw) in [("role_a", "pw-a"), ("role_b", "pw-b")] {
            m.sql(
                "app",
                &format!(
                    "CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}'; \
                     GRANT ALL ON app.* TO '{user}'@'%'"
                ),
            )
            .unwrap();
        }
    }
    let config = s.dir.path().join("turnout.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (user, role, pw) in [("alice", "role_a", "pw-a"), ("bob", "role_b", "pw-b")] {
        text.push_str(&format!(
            "\n[[users]]\nname = \"{user}\"\npassword = \"pw-{user}\"\n\
             backend_user = \"{role}\"\nbackend_password = \"{pw}\"\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    s.ctl_ok(&["reload"]);
    let (held, thread) = s.sleeping("alice", "pw-alice");
    // bob sees no one else's thread, and a procedure's KILL is refused by
    // the server: alice's thread is not bob's backend login's.
    let seen = s.mariadb(
        "bob",
        "pw-bob",
        "SELECT count(*) FROM information_schema.processlist WHERE user <> 'role_b'",
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&seen.stdout).trim(), "0");
    let out = s.mariadb(
        "bob",
        "pw-bob",
        &format!("CREATE PROCEDURE k(i BIGINT) KILL i; CALL k({thread})"),
        &[],
    );
    assert!(
        !out.status.success(),
        "bob's procedure killed alice's thread"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not owner of thread") || err.contains("Unknown thread"),
        "{err}"
    );
    let out = held.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "alice's statement was cut"
    );
}

#[test]
fn sql_mode_set_by_a_text_turnout_cannot_read_makes_backslash_texts_writes() {
    use mysql_async::prelude::*;
    let s = MySetup::start("mirror", "");
    s.sql_ok("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)");
    s.sql_ok("INSERT INTO t VALUES (6, 6)");
    let url = format!("mysql://app:{MY_PASSWORD}@127.0.0.1:{}/app", s.proxy.port);
    common::block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
            .await
            .unwrap();
        // The setting's name built from pieces: no text names `sql_mode`.
        c.query_drop("SET @s = CONCAT('SET SESSION sql', '_mode = ''NO_BACKSLASH_ESCAPES''')")
            .await
            .unwrap();
        c.query_drop("PREPARE p FROM @s").await.unwrap();
        c.query_drop("EXECUTE p").await.unwrap();
        c.query_drop("SELECT 'a\\' ; UPDATE t SET v = 77 WHERE id = 6; -- '")
            .await
            .unwrap();
        c.disconnect().await.unwrap();
    });
    for side in [&s.old, &s.new] {
        assert_eq!(
            side.sql("app", "SELECT v FROM t WHERE id = 6").unwrap(),
            "77"
        );
    }
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}
