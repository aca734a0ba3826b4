//! Backfill and verify over MariaDB: rows that predate mirroring are copied
//! while clients write through turnout, verify proves the sides equal,
//! names rows changed on new and `--repair` fixes them.

mod common;

use common::mysql::*;
use common::wait_job;
use std::time::{Duration, Instant};

#[test]
fn backfill_under_writers_then_verify_and_repair_over_mariadb() {
    use mysql_async::prelude::*;
    let s = MySetup::start("mirror", "");
    let table = "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(64), \
                 made DATETIME(6))";
    s.new.sql("app", table).unwrap();
    s.old.sql("app", table).unwrap();
    // 50k rows written before mirroring began: on old only.
    s.old
        .sql(
            "app",
            "INSERT INTO items SELECT seq, seq % 100, MD5(seq), '2026-01-01 00:00:00' + INTERVAL seq SECOND \
             FROM seq_1_to_50000",
        )
        .unwrap();
    s.old.sql("app", "ANALYZE TABLE items").unwrap();

    // Writers through turnout while the backfill runs.
    let url = format!("mysql://app:{MY_PASSWORD}@127.0.0.1:{}/app", s.proxy.port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async move {
                    let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
                        .await
                        .unwrap();
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let id = (n * 7919 + w * 104_729) % 50_000 + 1;
                        c.exec_drop("UPDATE items SET v = v + 1 WHERE id = ?", (id,))
                            .await
                            .unwrap();
                        c.exec_drop(
                            "INSERT INTO items (id, v, note) VALUES (?, 1, 'new') \
                             ON DUPLICATE KEY UPDATE v = v + 1",
                            (200_000 + w * 100_000 + n,),
                        )
                        .await
                        .unwrap();
                        if n.is_multiple_of(5) {
                            c.exec_drop("DELETE FROM items WHERE id = ?", (id + 1,))
                                .await
                                .unwrap();
                        }
                    }
                    n
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    s.ctl_ok(&["backfill", "start"]);
    let st = wait_job(&s, "backfill", Duration::from_secs(300));
    println!(
        "backfill under writers: {:.1} s, {st}",
        started.elapsed().as_secs_f64()
    );
    let metrics = s.metrics();
    assert!(
        metrics.contains("turnout_backfill_rows_total")
            && metrics.contains("turnout_backfill_progress_ratio 1"),
        "{metrics}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statements: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    println!("writers ran {statements} rounds without an error");

    s.ctl_ok(&["verify", "start"]);
    let v = wait_job(&s, "verify", Duration::from_secs(300));
    println!("verify: {v}");
    assert_eq!(v["last_clean"], true, "{v}");
    s.assert_identical("items", "id");

    // Rows changed on new alone are named, and repaired from old.
    for sql in [
        "UPDATE items SET note = 'changed' WHERE id = 17",
        "DELETE FROM items WHERE id = 50000",
        "INSERT INTO items (id, v) VALUES (9999999, 0)",
    ] {
        s.new.sql("app", sql).unwrap();
    }
    s.ctl_ok(&["verify", "start"]);
    wait_job(&s, "verify", Duration::from_secs(300));
    let (code, report) = common::Admin::admin_any(&s, &["verify", "status"]);
    assert_eq!(code, Some(1), "differences found: exit 1");
    println!("{report}");
    for expected in [
        "differs on new: id=17",
        "extra on new: id=9999999",
        "differences found",
    ] {
        assert!(report.contains(expected), "{expected:?} missing:\n{report}");
    }
    // id 50000 may have been deleted by a writer already: then it is not
    // missing.
    s.ctl_ok(&["verify", "start", "--repair"]);
    wait_job(&s, "verify", Duration::from_secs(300));
    s.ctl_ok(&["verify", "start"]);
    let v = wait_job(&s, "verify", Duration::from_secs(300));
    assert_eq!(v["last_clean"], true, "{v}");
    s.assert_identical("items", "id");
}

/// `flip mirror` over MariaDB: from passthrough without a restart. A
/// passthrough session left open keeps the backfill waiting (its writes
/// are not mirrored); once its client leaves, the backfill copies what
/// predates mirroring and new sessions mirror.
#[test]
fn flip_mirror_from_passthrough_over_mariadb() {
    use mysql_async::prelude::*;
    let s = MySetup::start("passthrough", "");
    let table = "CREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(64))";
    s.new.sql("app", table).unwrap();
    s.old.sql("app", table).unwrap();
    s.sql_ok("INSERT INTO notes VALUES (1, 'in passthrough')");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut open = rt.block_on(s.connect());
    rt.block_on(open.query_drop("SELECT 1")).unwrap();
    let done = s.ctl_ok(&["flip", "mirror"]);
    assert!(
        done.contains("passthrough -> mirror") && done.contains("1 still open"),
        "{done}"
    );
    let out = s.ctl(&["backfill", "start"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("opened in passthrough are still open"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.block_on(open.disconnect()).unwrap();
    s.sql_ok("INSERT INTO notes VALUES (2, 'mirrored')");
    assert_eq!(s.new_sql("SELECT body FROM notes WHERE id = 2"), "mirrored");
    common::eventually("the passthrough session is gone", || {
        s.ctl(&["backfill", "start"]).status.success()
    });
    wait_job(&s, "backfill", Duration::from_secs(60));
    s.assert_identical("notes", "id");
}
