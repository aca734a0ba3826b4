//! What a session sees of itself through turnout while writes are mirrored:
//! its transaction modes, its notifications, its database and its backend's
//! process id, as it would directly.

mod common;

use common::*;
use futures_util::StreamExt;
use std::process::Command;
use tokio_postgres::NoTls;

fn mirrored() -> Setup {
    Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        ..Options::default()
    })
}

/// `BEGIN ... SERIALIZABLE READ ONLY DEFERRABLE` is the client's own block
/// with its modes, by the simple and the extended protocol: not a write
/// wrapped in a read-committed transaction of turnout's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_modes_are_kept() {
    let s = tokio::task::spawn_blocking(mirrored).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&s.app_url(), NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    let show = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    for begin in [
        "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
    ] {
        // Simple protocol.
        client.batch_execute(begin).await.unwrap();
        assert_eq!(show("transaction_isolation").await, "serializable");
        assert_eq!(show("transaction_read_only").await, "on");
        assert_eq!(show("transaction_deferrable").await, "on");
        client.batch_execute("COMMIT").await.unwrap();
        // Extended protocol (Parse/Bind/Execute of the BEGIN).
        client.execute(begin, &[]).await.unwrap();
        assert_eq!(show("transaction_isolation").await, "serializable");
        assert_eq!(show("transaction_read_only").await, "on");
        let refused = client
            .execute("CREATE TEMP TABLE nope (a int)", &[])
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
            "{refused}"
        );
        client.execute("ROLLBACK", &[]).await.unwrap();
    }
    assert!(
        !s.proxy
            .log_text()
            .contains("already a transaction in progress"),
        "{}",
        s.proxy.log_text()
    );
    drop(client);
    let _ = driver.await;
}

/// Notifications reach the client in every phase with a mirror: its own
/// (delivered at commit) and another session's (arriving while it waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_delivered_in_every_phase() {
    let s = tokio::task::spawn_blocking(mirrored).await.unwrap();
    for phase in ["mirror", "reads_new", "writes_new"] {
        if phase != "mirror" {
            let what = if phase == "reads_new" {
                "reads"
            } else {
                "writes"
            };
            let s = &s;
            tokio::task::block_in_place(|| s.ctl_ok(&["flip", what]));
        }
        let (listener, mut conn) = tokio_postgres::connect(&s.app_url(), NoTls).await.unwrap();
        let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = stream.next().await {
                let _ = tx.send(m);
            }
        });
        listener.batch_execute("LISTEN jobs").await.unwrap();
        // Its own NOTIFY, autocommit (turnout wraps it) and in a block.
        listener.batch_execute("NOTIFY jobs, 'own'").await.unwrap();
        assert_eq!(
            next_notification(&mut messages, phase).await.payload(),
            "own"
        );
        listener
            .batch_execute("BEGIN; NOTIFY jobs, 'in a block'; COMMIT")
            .await
            .unwrap();
        assert_eq!(
            next_notification(&mut messages, phase).await.payload(),
            "in a block"
        );
        // Another session's, while this one is idle.
        let (other, conn) = tokio_postgres::connect(&s.app_url(), NoTls).await.unwrap();
        let other_driver = tokio::spawn(conn);
        other
            .execute("SELECT pg_notify('jobs', $1)", &[&phase])
            .await
            .unwrap();
        let n = next_notification(&mut messages, phase).await;
        assert_eq!(n.payload(), phase);
        println!("phase {phase}: notifications delivered");
        drop(other);
        let _ = other_driver.await;
        drop(listener);
        let _ = driver.await;
    }
}

/// A database turnout does not serve is refused as PostgreSQL refuses an
/// unknown one; the configured one is served.
#[test]
fn an_unknown_database_is_refused_with_3d000() {
    let s = mirrored();
    let url = format!(
        "host=127.0.0.1 port={} dbname=nosuchdb user=app password={APP_PASSWORD}",
        s.proxy.port
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt
        .block_on(tokio_postgres::connect(&url, NoTls))
        .err()
        .expect("nosuchdb refused");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME),
        "{refused}"
    );
    let out = psql(&url, &["-c", "SELECT 1"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("database \"nosuchdb\" does not exist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(scalar(&s.app_url(), "SELECT current_database()"), "app");
}

/// The process id a driver is told is the authority's backend's own.
#[test]
fn the_backend_pid_the_driver_reports_is_the_real_one() {
    let s = mirrored();
    let script = "import psycopg, sys\n\
                  with psycopg.connect(sys.argv[1]) as c:\n\
                  \x20   pid = c.execute('SELECT pg_backend_pid()').fetchone()[0]\n\
                  \x20   print(c.info.backend_pid, pid)\n";
    let out = Command::new("python3")
        .args(["-c", script, &s.app_url()])
        .output()
        .expect("python3 with psycopg (.ci/run installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let (told, real) = text.split_once(' ').expect("two pids");
    assert_eq!(told, real, "{text}");
    // And a cancel with that key still reaches the backend through turnout.
    let script = "import psycopg, sys, threading\n\
                  with psycopg.connect(sys.argv[1]) as c:\n\
                  \x20   threading.Timer(0.5, c.cancel).start()\n\
                  \x20   try:\n\
                  \x20       c.execute('SELECT pg_sleep(20)')\n\
                  \x20   except psycopg.errors.QueryCanceled:\n\
                  \x20       print('cancelled')\n";
    let out = Command::new("python3")
        .args(["-c", script, &s.app_url()])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "cancelled", "{}", stderr(&out));
}
