//! What the security review found, MariaDB side: no client can make a write
//! skip the mirror (a classification cache no text can poison, comments
//! MariaDB runs, the server's own answer as the ground truth).

mod common;

use common::block_on;
use common::mysql::*;
use mysql_async::prelude::*;

fn url(s: &MySetup) -> String {
    format!("mysql://app:{MY_PASSWORD}@127.0.0.1:{}/app", s.proxy.port)
}

/// Another session's writes: a text statement and prepared ones, one in a
/// transaction.
fn victims(s: &MySetup, ids: [i32; 3]) {
    s.sql_ok(&format!("DELETE FROM t WHERE id = {}", ids[0]));
    block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url(s)).unwrap())
            .await
            .unwrap();
        c.exec_drop("UPDATE t SET v = v + 1 WHERE id = ?", (ids[1],))
            .await
            .unwrap();
        let mut tx = c
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .unwrap();
        tx.exec_drop("DELETE FROM t WHERE id = ?", (ids[2],))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        c.disconnect().await.unwrap();
    });
}

#[test]
fn a_poisoned_classification_cache_cannot_drop_writes() {
    let s = MySetup::start("mirror", "");
    s.sql_ok("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)");
    let rows: Vec<String> = (1..=40).map(|i| format!("({i}, {i})")).collect();
    s.sql_ok(&format!("INSERT INTO t VALUES {}", rows.join(",")));
    // `SELECT 1` is cached as a read; `--1` is no comment in MariaDB, so
    // the UPDATE after it runs; `/*M! ... */` and `/*! ... */` run too.
    let poison = [
        "SELECT 1",
        "SELECT 1 --1; UPDATE t SET v = v + 1 WHERE id = 1",
        "/*M!100000 UPDATE t SET v = v + 1 WHERE id = 2 */",
        "/*! UPDATE t SET v = v + 1 WHERE id = 3 */",
    ];
    block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url(&s)).unwrap())
            .await
            .unwrap();
        for p in poison {
            c.query_drop(p).await.unwrap();
        }
        c.disconnect().await.unwrap();
    });
    assert_eq!(
        s.old.sql("app", "SELECT v FROM t WHERE id = 1").unwrap(),
        "2"
    );
    victims(&s, [4, 5, 6]);
    s.assert_identical("t", "id");

    // A flood of 10 050 distinct shapes, then the writes again.
    block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url(&s)).unwrap())
            .await
            .unwrap();
        for i in 0..10_050 {
            c.query_drop(format!("SELECT 1 AS c{i}")).await.unwrap();
        }
        for p in poison {
            c.query_drop(p).await.unwrap();
        }
        c.disconnect().await.unwrap();
    });
    victims(&s, [7, 8, 9]);
    s.assert_identical("t", "id");
    assert_eq!(s.new.sql("app", "SELECT COUNT(*) FROM t").unwrap(), "36");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn a_statement_taken_for_a_read_that_the_server_says_wrote_rows_is_recorded() {
    let s = MySetup::start("mirror", "");
    s.sql_ok("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)");
    s.sql_ok("INSERT INTO t VALUES (1, 1), (2, 2), (5, 5), (6, 6)");
    // old's global sql_mode turns backslash escapes off, which turnout does
    // not see (a session that changes sql_mode itself makes it mirror any
    // text with a backslash): the parser reads one string, old runs an
    // UPDATE after a shorter one.
    s.old
        .sql("app", "SET GLOBAL sql_mode = 'NO_BACKSLASH_ESCAPES'")
        .unwrap();
    let text = "SELECT 'a\\' ; UPDATE t SET v = 99 WHERE id = 5; -- '";
    block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url(&s)).unwrap())
            .await
            .unwrap();
        c.query_drop(text).await.unwrap();
        c.disconnect().await.unwrap();
    });
    s.old.sql("app", "SET GLOBAL sql_mode = DEFAULT").unwrap();
    assert_eq!(
        s.old.sql("app", "SELECT v FROM t WHERE id = 5").unwrap(),
        "99"
    );
    let records = s.divergences();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("\"kind\":\"unmirrored_write\""),
        "{records:?}"
    );
    assert!(records[0].contains("1 affected row"), "{records:?}");
    assert!(records[0].contains("\"side\":\"new\""), "{records:?}");

    // A session that changes sql_mode itself: texts with a backslash are
    // mirrored from then on.
    block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url(&s)).unwrap())
            .await
            .unwrap();
        c.query_drop("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
            .await
            .unwrap();
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
    assert_eq!(s.divergences().len(), 1, "{:?}", s.divergences());
}

#[test]
fn a_command_over_the_message_size_limit_gets_error_1153_in_every_phase() {
    for phase in ["passthrough", "mirror"] {
        let mut s = MySetup::start(phase, "");
        // The limit at 1 MiB: turnout started again with it.
        restart_with_limits(&mut s, "max_message_size = 1048576");
        let big = format!("SELECT LENGTH('{}')", "x".repeat(3 << 20));
        block_on(async {
            let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url(&s)).unwrap())
                .await
                .unwrap();
            match c.query_drop(&big).await {
                Err(mysql_async::Error::Server(e)) => {
                    assert_eq!(e.code, 1153, "{phase}: {e}");
                    assert!(e.message.contains("max_message_size"), "{phase}: {e}");
                }
                other => panic!("{phase}: {other:?}"),
            }
            // Others are served as before.
            let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url(&s)).unwrap())
                .await
                .unwrap();
            let n: Option<i64> = c
                .query_first("SELECT LENGTH(REPEAT('y', 1000))")
                .await
                .unwrap();
            assert_eq!(n, Some(1000));
            c.disconnect().await.unwrap();
        });
    }
}

#[test]
fn an_unknown_user_is_answered_as_a_wrong_password_is() {
    let s = MySetup::start("passthrough", "");
    let wrong = s.mariadb("app", "not-it", "SELECT 1", &[]);
    let ghost = s.mariadb("nobody", "not-it", "SELECT 1", &[]);
    assert!(!wrong.status.success() && !ghost.status.success());
    let text = |o: &std::process::Output, user: &str| {
        String::from_utf8_lossy(&o.stderr).replace(user, "USER")
    };
    assert_eq!(text(&wrong, "app"), text(&ghost, "nobody"));
    assert!(
        text(&ghost, "nobody").contains("1045"),
        "{}",
        text(&ghost, "nobody")
    );
}

#[test]
fn kill_by_a_backend_thread_id_is_refused_in_every_spelling() {
    let s = MySetup::start("mirror", "");
    // A session whose statement must not be cut.
    let (held, thread) = s.sleeping("app", MY_PASSWORD);
    for sql in [
        format!("/* x */ KILL QUERY {thread}"),
        format!("/*!100000 KILL {thread} */"),
        format!("SELECT 1; KILL QUERY {thread}"),
        format!("KILL HARD QUERY {thread}"),
        format!("PREPARE k FROM 'KILL QUERY {thread}'"),
        format!("EXECUTE IMMEDIATE 'KILL {thread}'"),
    ] {
        let out = s.mariadb("app", MY_PASSWORD, &sql, &[]);
        assert!(!out.status.success(), "{sql} was carried out");
    }
    let out = held.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "the statement was cut"
    );
}

#[test]
fn clients_past_the_connection_limit_get_error_1040_and_a_slow_login_is_cut() {
    let mut s = MySetup::start("mirror", "");
    // At most 3 clients: turnout started again with the limit.
    restart_with_limits(&mut s, "max_client_connections = 3");
    let port = s.proxy.port;
    block_on(async {
        let opts = || mysql_async::Opts::from_url(&url(&s)).unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(mysql_async::Conn::new(opts()).await.unwrap());
        }
        match mysql_async::Conn::new(opts()).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1040, "{e}");
                assert!(e.message.contains("max_client_connections"), "{e}");
            }
            Err(other) => panic!("not refused with 1040: {other:?}"),
            Ok(_) => panic!("a fourth client was served past max_client_connections = 3"),
        }
        // The held sessions are served as before, and once one leaves a
        // new client is.
        for c in &mut held {
            let n: Option<i64> = c.query_first("SELECT 1").await.unwrap();
            assert_eq!(n, Some(1));
        }
        held.pop().unwrap().disconnect().await.unwrap();
        let mut later = None;
        for _ in 0..50 {
            if let Ok(c) = mysql_async::Conn::new(opts()).await {
                later = Some(c);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut c = later.expect("a client once a session left");
        let n: Option<i64> = c.query_first("SELECT 2").await.unwrap();
        assert_eq!(n, Some(2));
        drop(c);
        drop(held);
    });
    // A client that connects and never answers the greeting is cut at
    // limits.auth_timeout_ms (3 s), not held.
    let started = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match std::io::Read::read(&mut slow, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let waited = started.elapsed();
    assert!(total > 0, "no greeting");
    assert!(
        waited < std::time::Duration::from_secs(15),
        "a silent client was held for {waited:?}"
    );
    println!("a silent client was cut after {waited:?}");
}

/// turnout started again with `limits` added to its `[limits]` section.
fn restart_with_limits(s: &mut MySetup, limits: &str) {
    let config = s.proxy.config.clone();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "auth_timeout_ms = 3000",
        &format!("auth_timeout_ms = 3000\n{limits}"),
    );
    std::fs::write(&config, text).unwrap();
    s.proxy.kill();
    let port = s.proxy.port;
    s.proxy = common::spawn_proxy(&config, s.dir.path().join("turnout2.log"), port);
}
