//! The MySQL listener against real MariaDB with the `mariadb` client:
//! turnout's own handshake and users, backend authentication, forwarding.

mod common;

use common::mysql::*;
use common::stderr;

#[test]
fn the_mariadb_client_works_through_turnout_and_bad_logins_are_refused() {
    let s = MySetup::start("passthrough", "");
    assert_eq!(s.sql_ok("SELECT 40 + 2"), "42");
    s.sql_ok("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))");
    s.sql_ok("INSERT INTO t (v) VALUES ('a'), ('b')");
    assert_eq!(s.sql_ok("SELECT GROUP_CONCAT(v ORDER BY id) FROM t"), "a,b");
    // The rows are on old.
    assert_eq!(s.old.sql("app", "SELECT COUNT(*) FROM t").unwrap(), "2");
    // Errors come back as the server sent them.
    let out = s.mariadb("app", MY_PASSWORD, "SELECT * FROM nope", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR 1146 (42S02)") && stderr(&out).contains("nope"),
        "{}",
        stderr(&out)
    );
    // Several statements in one call, and the session's database.
    assert_eq!(
        s.sql_ok("SET @x = 20; SELECT @x + 1; SELECT DATABASE()"),
        "21\napp"
    );
    for (user, password) in [("app", "wrong"), ("nobody", MY_PASSWORD)] {
        let out = s.mariadb(user, password, "SELECT 1", &[]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("ERROR 1045 (28000)") && stderr(&out).contains("Access denied"),
            "{}",
            stderr(&out)
        );
    }
    // Garbage instead of a handshake response: refused, turnout goes on.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    let mut hello = [0u8; 256];
    let _ = raw.read(&mut hello).unwrap();
    raw.write_all(&[5, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(answer.get(4) == Some(&0xFF), "an ERR packet: {answer:?}");
    assert_eq!(s.sql_ok("SELECT 'still here'"), "still here");
}

const SHA2_USER: &str =
    "[[users]]\nname = \"sha2user\"\npassword = \"sha2-pw\"\nauth = \"caching_sha2_password\"\n";

#[test]
fn caching_sha2_password_and_tls_for_clients() {
    let s = MySetup::start_with("passthrough", SHA2_USER, Some(false), "");
    let crt = s.dir.path().join("tls.crt");
    // TLS, verified against turnout's certificate.
    let out = s.mariadb(
        "app",
        MY_PASSWORD,
        "status",
        &[
            &format!("--ssl-ca={}", crt.display()),
            "--ssl-verify-server-cert",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        s.proxy.log_text()
    );
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.contains("Cipher in use is TLS"), "{status}");
    // caching_sha2_password, asked for by the client or switched to by
    // turnout, with and without TLS.
    for extra in [
        vec!["--default-auth=caching_sha2_password"],
        vec![],
        vec!["--ssl"],
    ] {
        let out = s.mariadb("sha2user", "sha2-pw", "SELECT CURRENT_USER()", &extra);
        assert!(
            out.status.success(),
            "{extra:?}: {}\n{}",
            stderr(&out),
            s.proxy.log_text()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app@%");
        let out = s.mariadb("sha2user", "wrong", "SELECT 1", &extra);
        assert!(
            stderr(&out).contains("ERROR 1045 (28000)"),
            "{}",
            stderr(&out)
        );
    }
    let log = s.proxy.log_text();
    let sha2_logins = log
        .lines()
        .filter(|l| l.contains("mysql client authenticated") && l.contains("caching_sha2_password"))
        .count();
    assert_eq!(sha2_logins, 3, "{log}");

    // With TLS required, a plain client is turned away clearly.
    let s = MySetup::start_with("passthrough", "", Some(true), "");
    let out = s.mariadb("app", MY_PASSWORD, "SELECT 1", &["--skip-ssl"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("3159") && stderr(&out).contains("insecure transport"),
        "{}",
        stderr(&out)
    );
    let out = s.mariadb("app", MY_PASSWORD, "SELECT 1", &["--ssl"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn mysql_async_with_prepared_statements_in_phase_mirror() {
    use mysql_async::prelude::*;
    let s = MySetup::start("mirror", SHA2_USER);
    s.sql_ok(
        "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), \
         price DECIMAL(10,2), added DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), note TEXT)",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (user, password) in [("app", MY_PASSWORD), ("sha2user", "sha2-pw")] {
            let url = format!("mysql://{user}:{password}@127.0.0.1:{}/app", s.proxy.port);
            let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            let insert = conn
                .prep("INSERT INTO items (name, price, note) VALUES (?, ?, ?)")
                .await
                .unwrap();
            for i in 0..20 {
                let note: Option<String> = (i % 3 != 0).then(|| "x".repeat(i * 10));
                conn.exec_drop(&insert, (format!("{user}-{i}"), format!("{i}.25"), note))
                    .await
                    .unwrap();
            }
            let mut tx = conn
                .start_transaction(mysql_async::TxOpts::default())
                .await
                .unwrap();
            tx.exec_drop(
                "UPDATE items SET price = price * ? WHERE name LIKE ?",
                (2, format!("{user}-1%")),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            let rows: Vec<(i32, String, String)> = conn
                .exec(
                    "SELECT id, name, CAST(price AS CHAR) FROM items WHERE name = ? OR id < ?",
                    (format!("{user}-12"), 3),
                )
                .await
                .unwrap();
            assert!(
                rows.iter()
                    .any(|r| r.1 == format!("{user}-12") && r.2 == "24.50"),
                "{rows:?}"
            );
            let err = conn.query_drop("SELECT * FROM nope").await.unwrap_err();
            assert!(err.to_string().contains("nope"), "{err}");
            // COM_RESET_CONNECTION: a clean session on both sides, and on.
            conn.query_drop("SET @note = 'kept?'").await.unwrap();
            conn.reset().await.unwrap();
            let note: Option<Option<String>> = conn.query_first("SELECT @note").await.unwrap();
            assert_eq!(note, Some(None));
            conn.exec_drop(
                "INSERT INTO items (name, price) VALUES (?, ?)",
                (format!("{user}-after-reset"), "1.00"),
            )
            .await
            .unwrap();
            conn.disconnect().await.unwrap();
        }
    });
    s.assert_identical("items", "id");
    assert!(s.divergences().is_empty(), "{:?}", s.divergences());
}

#[test]
fn kill_query_by_turnouts_connection_id_reaches_the_backend() {
    use mysql_async::prelude::*;
    for phase in ["passthrough", "mirror"] {
        let s = MySetup::start(phase, "");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let url = format!("mysql://app:{MY_PASSWORD}@127.0.0.1:{}/app", s.proxy.port);
            let opts = mysql_async::Opts::from_url(&url).unwrap();
            let mut sleeper = mysql_async::Conn::new(opts.clone()).await.unwrap();
            let mut killer = mysql_async::Conn::new(opts).await.unwrap();
            let id = sleeper.id();
            assert_ne!(id, killer.id());
            let started = std::time::Instant::now();
            let sleeping = tokio::spawn(async move {
                let r: Result<Option<i64>, _> = sleeper.query_first("SELECT SLEEP(30)").await;
                r
            });
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            killer.query_drop(format!("KILL QUERY {id}")).await.unwrap();
            let slept = sleeping.await.unwrap();
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{phase}: the query was not interrupted: {slept:?}"
            );
            match slept {
                Ok(v) => assert_eq!(v, Some(1), "{phase}: SLEEP reports the interruption"),
                Err(e) => assert!(e.to_string().contains("interrupted"), "{phase}: {e}"),
            }
            let e = killer.query_drop("KILL QUERY 999999").await.unwrap_err();
            assert!(
                e.to_string().contains("Unknown thread id: 999999"),
                "{phase}: {e}"
            );
            // The killer's own session goes on.
            let v: Option<i64> = killer.query_first("SELECT 41 + 1").await.unwrap();
            assert_eq!(v, Some(42));
        });
    }
}

#[test]
fn tls_to_backends_and_sysbench_with_caching_sha2_over_tls() {
    let s = MySetup::start_opts("mirror", SHA2_USER, Some(false), "", true);
    // turnout's own connections to the backends are encrypted.
    let out = s.mariadb(
        "app",
        MY_PASSWORD,
        "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
        &[],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        s.proxy.log_text()
    );
    let cipher = common::stdout(&out);
    assert!(cipher.starts_with("Ssl_cipher\tTLS_"), "{cipher:?}");
    let base = [
        "--db-driver=mysql".to_string(),
        "--mysql-host=127.0.0.1".to_string(),
        format!("--mysql-port={}", s.proxy.port),
        "--mysql-user=sha2user".to_string(),
        "--mysql-password=sha2-pw".to_string(),
        "--mysql-db=app".to_string(),
        "--mysql-ssl=on".to_string(),
        "--tables=1".to_string(),
        "--table-size=1000".to_string(),
    ];
    // sysbench 1.0 reads its TLS files from the working folder by these
    // names; turnout's self-signed certificate serves as all of them.
    let work = s.dir.path().join("sysbench");
    std::fs::create_dir_all(&work).unwrap();
    let (crt, key) = (s.dir.path().join("tls.crt"), s.dir.path().join("tls.key"));
    for (from, to) in [
        (&crt, "cacert.pem"),
        (&crt, "client-cert.pem"),
        (&key, "client-key.pem"),
    ] {
        std::fs::copy(from, work.join(to)).unwrap();
    }
    for step in [
        vec!["oltp_point_select", "prepare"],
        // One thread: MariaDB's client library loads the caching_sha2_password
        // plugin lazily, and threads doing it at once race ("it is already
        // loaded"), whatever the server.
        vec!["oltp_point_select", "run", "--threads=1", "--time=3"],
        vec!["oltp_write_only", "run", "--threads=1", "--time=3"],
    ] {
        let out = std::process::Command::new("sysbench")
            .current_dir(&work)
            .args(&step)
            .args(&base)
            .output()
            .expect("run sysbench");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{step:?}: {text}{}", stderr(&out));
    }
    s.assert_identical("sbtest1", "id");
    let log = s.proxy.log_text();
    assert!(
        log.lines().any(
            |l| l.contains("mysql client authenticated") && l.contains("caching_sha2_password")
        ),
        "{log}"
    );
}
