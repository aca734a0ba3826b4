//! `turnout demo --traffic`: the demo's application. One client through
//! turnout, a few statements a second, always written with old's names (as
//! an application written before the cutover is): reads by key of both
//! tables, which turnout compares on new, and writes (orders placed, a
//! customer's name changed). It goes on through every flip and, with
//! `mapping.after_finalize = "translate"`, after finalize too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Statements run and failed, for the demo's last words.
#[derive(Default)]
pub struct Counts {
    pub ran: AtomicU64,
    pub failed: AtomicU64,
}

/// The statements of round `i`.
fn round(i: u64) -> [String; 4] {
    let customer = 1 + i % 100;
    [
        format!("SELECT id, name, email FROM customers WHERE id = {customer}"),
        format!(
            "SELECT id, customer_id, amount_cents FROM orders WHERE id = {}",
            1 + (i * 7) % 1000
        ),
        format!(
            "INSERT INTO orders (customer_id, amount_cents) VALUES ({customer}, {})",
            (i * 31) % 10_000
        ),
        format!(
            "UPDATE customers SET name = 'customer {customer} (seen {i})' WHERE id = {customer}"
        ),
    ]
}

/// Runs until the process ends; failures are said (once a burst) and the
/// client reconnects.
pub async fn run(mysql: bool, port: u16, counts: Arc<Counts>) {
    // The application stops first when the demo is asked to stop: the
    // statement in flight finishes, then the connection closes cleanly
    // (turnout drains meanwhile).
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    work(mysql, port, counts, stop).await
}

async fn work(
    mysql: bool,
    port: u16,
    counts: Arc<Counts>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    // turnout is starting: its port answers first.
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut i = 0u64;
    let mut quiet_until = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let session = if mysql {
            my_session(port, &mut i, &counts, &stop).await
        } else {
            pg_session(port, &mut i, &counts, &stop).await
        };
        if let Err(e) = session {
            // turnout closing sessions because the demo stops is no failure
            // (the signal reaches both at once).
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            counts.failed.fetch_add(1, Ordering::Relaxed);
            if i >= quiet_until {
                eprintln!("demo traffic: {e} (retrying)");
                quiet_until = i + 20;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn pg_session(
    port: u16,
    i: &mut u64,
    counts: &Counts,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let url = format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    while !stop.load(Ordering::Relaxed) {
        for sql in round(*i) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            client.simple_query(&sql).await.map_err(|e| {
                let e = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                format!("{sql}: {e}")
            })?;
            counts.ran.fetch_add(1, Ordering::Relaxed);
        }
        *i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn my_session(
    port: u16,
    i: &mut u64,
    counts: &Counts,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    use mysql_async::prelude::Queryable;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("app"))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        for sql in round(*i) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            conn.query_drop(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            counts.ran.fetch_add(1, Ordering::Relaxed);
        }
        *i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    conn.disconnect().await.map_err(|e| e.to_string())
}
