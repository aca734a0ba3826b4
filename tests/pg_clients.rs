//! Real PostgreSQL clients (psql, pgbench, tokio-postgres) through turnout in
//! phase passthrough, with SCRAM and md5, with and without TLS.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::process::Command;
use tokio_postgres::NoTls;

#[test]
fn psql_queries_errors_notices_and_copy() {
    let s = Setup::start(Options::default());
    let url = s.app_url();

    let out = s.psql(&url, &["-c", "SELECT 40 + 2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42");

    // Errors are relayed verbatim, SQLSTATE included.
    let out = s.psql(&url, &["-v", "VERBOSITY=verbose", "-c", "SELECT 1/0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR:  22012: division by zero"),
        "{}",
        stderr(&out)
    );

    // Notices reach the client.
    let out = s.psql(
        &url,
        &[
            "-c",
            "DO $$ BEGIN RAISE NOTICE 'hello from the backend'; END $$",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("NOTICE:  hello from the backend"));

    // COPY FROM STDIN and COPY TO STDOUT, via psql's \copy.
    let csv = s.dir.path().join("rows.csv");
    let rows: String = (1..=5000).map(|i| format!("{i},name {i}\n")).collect();
    std::fs::write(&csv, rows).unwrap();
    let out = s.psql(
        &url,
        &[
            "-c",
            "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "-c",
            &format!("\\copy items FROM '{}' WITH (FORMAT csv)", csv.display()),
            "-c",
            "SELECT count(*), sum(id) FROM items",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "5000|12502500");
    let back = s.dir.path().join("back.csv");
    let out = s.psql(
        &url,
        &[
            "-c",
            &format!(
                "\\copy (SELECT * FROM items ORDER BY id) TO '{}' WITH (FORMAT csv)",
                back.display()
            ),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        std::fs::read_to_string(&csv).unwrap()
    );

    // The rows are on the old backend, where passthrough sends everything.
    let out = psql(&s.direct_url(), &["-c", "SELECT count(*) FROM items"], &[]);
    assert_eq!(stdout(&out), "5000");
}

#[test]
fn wrong_password_and_unknown_user_are_refused_clearly() {
    let s = Setup::start(Options::default());
    for url in [s.url("app", "nope"), s.url("ghost", "nope")] {
        let out = s.psql(&url, &["-c", "SELECT 1"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("password authentication failed"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn md5_authentication_works() {
    let s = Setup::start(Options::default());
    let out = s.psql(
        &s.url("md5user", MD5_PASSWORD),
        &["-c", "SELECT current_user"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The backend session runs as the configured backend user.
    assert_eq!(stdout(&out), "app");
    let out = s.psql(&s.url("md5user", "wrong"), &["-c", "SELECT 1"]);
    assert!(stderr(&out).contains("password authentication failed"));
}

fn pgbench(url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new("pgbench");
    c.args(args).arg(url);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn history_rows(s: &Setup) -> u64 {
    stdout(&psql(
        &s.direct_url(),
        &["-c", "SELECT count(*) FROM pgbench_history"],
        &[],
    ))
    .parse()
    .expect("count")
}

fn pgbench_all_modes(s: &Setup, env: &[(&str, &str)]) {
    let url = s.app_url();
    let (ok, text) = pgbench(&url, &["-i", "-s", "1", "-q"], env);
    assert!(ok, "pgbench -i failed:\n{text}");
    for mode in ["simple", "extended", "prepared"] {
        let (ok, text) = pgbench(&url, &["-M", mode, "-c", "4", "-j", "2", "-t", "100"], env);
        assert!(ok, "pgbench -M {mode} failed:\n{text}");
        assert!(
            text.contains("number of transactions actually processed: 400/400"),
            "{text}"
        );
        assert!(text.contains("number of failed transactions: 0"), "{text}");
        // pgbench empties pgbench_history before a run; each TPC-B transaction
        // then writes one row, on old.
        assert_eq!(history_rows(s), 400, "mode {mode}");
    }
}

#[test]
fn pgbench_simple_extended_prepared() {
    let s = Setup::start(Options::default());
    pgbench_all_modes(&s, &[]);
}

#[test]
fn tls_to_clients_and_to_the_backend() {
    let s = Setup::start(Options {
        client_tls: true,
        client_tls_required: true,
        backend_tls: true,
        ..Options::default()
    });
    let url = s.app_url();
    let out = psql(
        &url,
        &[
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
        &[("PGSSLMODE", "require")],
    );
    assert!(
        out.status.success(),
        "{}\nturnout's log:\n{}",
        stderr(&out),
        s.proxy.log_text()
    );
    // turnout's own connection to the backend is encrypted (verify-full).
    assert_eq!(stdout(&out), "t");

    // turnout refuses clients that do not ask for TLS when it is required.
    let out = psql(&url, &["-c", "SELECT 1"], &[("PGSSLMODE", "disable")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("turnout requires TLS"),
        "{}",
        stderr(&out)
    );

    pgbench_all_modes(&s, &[("PGSSLMODE", "require")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_over_tls() {
    let s = tokio::task::spawn_blocking(|| {
        Setup::start(Options {
            client_tls: true,
            ..Options::default()
        })
    })
    .await
    .unwrap();
    let (crt, _) = s.cert.clone().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&crt).unwrap();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let url =
        format!("{} sslmode=require", s.url("app", APP_PASSWORD)).replace("127.0.0.1", "localhost");
    let (client, conn) = tokio_postgres::connect(&url, tls)
        .await
        .expect("connect over TLS");
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_binary_params_transactions_errors_copy_notify() {
    let s = tokio::task::spawn_blocking(|| Setup::start(Options::default()))
        .await
        .unwrap();
    let (mut client, mut conn) = tokio_postgres::connect(&s.app_url(), NoTls)
        .await
        .expect("connect");
    let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(m) => {
                    let _ = tx.send(m);
                }
                Err(e) => panic!("connection error: {e}"),
            }
        }
    });

    client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, payload bytea, note text, at timestamptz)",
        )
        .await
        .unwrap();
    // Binary parameters and results through the extended protocol.
    let stmt = client
        .prepare("INSERT INTO t VALUES ($1, $2, $3, now()) RETURNING id, payload")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..=255u8).collect();
    let row = client
        .query_one(&stmt, &[&7i64, &blob, &"seven"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 7);
    assert_eq!(row.get::<_, Vec<u8>>(1), blob);

    // A rolled-back transaction leaves nothing; a committed one stays.
    let t = client.transaction().await.unwrap();
    t.execute("INSERT INTO t (id, note) VALUES (8, 'gone')", &[])
        .await
        .unwrap();
    t.rollback().await.unwrap();
    let t = client.transaction().await.unwrap();
    t.execute("INSERT INTO t (id, note) VALUES (9, 'kept')", &[])
        .await
        .unwrap();
    t.commit().await.unwrap();
    let ids: Vec<i64> = client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![7, 9]);

    // An error inside a transaction is the server's, and the session recovers.
    let err = client
        .execute("INSERT INTO t (id) VALUES (7)", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "23505");
    assert!(db.message().contains("duplicate key"));
    assert_eq!(
        client
            .query_one("SELECT 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // COPY in and out.
    let sink = client
        .copy_in("COPY t (id, note) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    let mut sink = Box::pin(sink);
    let data: String = (100..1100).map(|i| format!("{i},row {i}\n")).collect();
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let copied = sink.as_mut().finish().await.unwrap();
    assert_eq!(copied, 1000);
    let out = client
        .copy_out("COPY (SELECT id FROM t WHERE id >= 100 ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = out.collect().await;
    let text: String = chunks
        .into_iter()
        .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(text.lines().count(), 1000);

    // LISTEN/NOTIFY: the notification comes back through turnout.
    client.batch_execute("LISTEN turnout_test").await.unwrap();
    client
        .batch_execute("NOTIFY turnout_test, 'ping'")
        .await
        .unwrap();
    let got = next_notification(&mut messages, "passthrough").await;
    assert_eq!(got.channel(), "turnout_test");
    assert_eq!(got.payload(), "ping");
    drop(client);
    let _ = driver.await;
}

#[test]
fn unix_sockets_to_clients_and_to_the_backend() {
    let s = Setup::start(Options {
        unix_sockets: true,
        ..Options::default()
    });
    // psql -h <folder> finds turnout's socket as it would PostgreSQL's.
    let url = format!(
        "host={} port={} dbname=app user=app password={APP_PASSWORD}",
        s.dir.path().display(),
        s.proxy.port
    );
    let out = psql(
        &url,
        &["-c", "SELECT inet_server_addr() IS NULL, current_user"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // NULL server address: the backend session is on its Unix socket.
    assert_eq!(stdout(&out), "t|app");
    let (ok, text) = pgbench(&url, &["-i", "-s", "1", "-q"], &[]);
    assert!(ok, "{text}");
    let (ok, text) = pgbench(&url, &["-S", "-M", "prepared", "-c", "4", "-t", "200"], &[]);
    assert!(ok, "{text}");
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    // TCP clients reach the same backend.
    let out = s.psql(
        &s.app_url(),
        &["-c", "SELECT count(*) FROM pgbench_branches"],
    );
    assert_eq!(stdout(&out), "1");
}

#[test]
fn backend_md5_and_trust_authentication() {
    for method in ["md5", "trust"] {
        let s = Setup::start(Options {
            backend_auth: Some(method),
            ..Options::default()
        });
        // The backend really asks for this method on TCP...
        let hba = s
            .old
            .psql(
                "postgres",
                "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1",
            )
            .unwrap();
        assert_eq!(hba, method);
        // ...and turnout logs in with it.
        let out = s.psql(
            &s.app_url(),
            &["-c", "SELECT 'logged in as ' || current_user"],
        );
        assert!(out.status.success(), "{method}: {}", stderr(&out));
        assert_eq!(stdout(&out), "logged in as app");
        println!("backend {method}: {}", stdout(&out));
    }
}
