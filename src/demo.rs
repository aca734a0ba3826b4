//! `turnout demo`: a real expand/contract cutover on throwaway servers. Two
//! PostgreSQL clusters (or, with `--mysql`, two MariaDB servers): `old` with
//! the application's schema and rows, `new` with the changed schema (a table
//! and a column renamed, a column dropped, a computed column added), and
//! turnout in front in phase `mirror` with the `[mapping]` between them.
//! The runbook (`turnout plan`) then walks mirror, backfill, verify and the
//! flips end to end.

use std::path::Path;
use std::process::ExitCode;
use turnout_instances::{free_port, MariaDbInstance, PgInstance, PgOptions, TempDir};

/// The demo's schemas (and old's rows), shared with deploy/compose.yaml.
const PG_OLD: &str = include_str!("../deploy/demo/postgres-old.sql");
const PG_NEW: &str = include_str!("../deploy/demo/postgres-new.sql");

const MY_OLD: &str = include_str!("../deploy/demo/mariadb-old.sql");
const MY_NEW: &str = include_str!("../deploy/demo/mariadb-new.sql");

/// The throwaway servers, removed on drop.
enum Servers {
    Pg(PgInstance, PgInstance),
    My(MariaDbInstance, MariaDbInstance),
}

impl Servers {
    fn ports(&self) -> (u16, u16) {
        match self {
            Servers::Pg(o, n) => (o.port, n.port),
            Servers::My(o, n) => (o.port, n.port),
        }
    }
}

pub async fn run(port: Option<u16>, mysql: bool, traffic: bool) -> ExitCode {
    match run_inner(port, mysql, traffic).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnout demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start_servers(mysql: bool) -> Result<Servers, turnout_instances::InstanceError> {
    if mysql {
        // A row-based binary log on both: old's feeds the mirror (and new's
        // feeds old after the writes flip).
        let old = MariaDbInstance::start_opts(None, true)?;
        let new = MariaDbInstance::start_opts(None, true)?;
        for (inst, schema) in [(&old, MY_OLD), (&new, MY_NEW)] {
            inst.create_database("app", "app", "app")?;
            inst.sql("app", schema)?;
        }
        Ok(Servers::My(old, new))
    } else {
        // wal_level = logical: old's log feeds the mirror (and new's feeds
        // old after the writes flip).
        let logical = PgOptions {
            logical: true,
            ..PgOptions::default()
        };
        let old = PgInstance::start(logical.clone())?;
        let new = PgInstance::start(logical)?;
        // The same files deploy/compose.yaml loads (old's has its rows).
        for (inst, schema) in [(&old, PG_OLD), (&new, PG_NEW)] {
            inst.create_database("app", "app", "app")?;
            inst.psql_as("app", "app", "app", schema)?;
        }
        Ok(Servers::Pg(old, new))
    }
}

/// The demo's config: the one deploy/compose.yaml runs turnout with, moved
/// to this machine's throwaway servers, ports and temporary folder (and to
/// the MySQL protocol with `--mysql`).
const CONFIG: &str = include_str!("../deploy/demo/turnout.toml");

fn config_text(mysql: bool, listen: u16, metrics: u16, old: u16, new: u16, dir: &Path) -> String {
    let dir = dir.display().to_string();
    let mut text = CONFIG
        .replace("0.0.0.0:6432", &format!("127.0.0.1:{listen}"))
        .replace("0.0.0.0:9930", &format!("127.0.0.1:{metrics}"))
        .replace(
            "host = \"old\"\nport = 5432",
            &format!("host = \"127.0.0.1\"\nport = {old}"),
        )
        .replace(
            "host = \"new\"\nport = 5432",
            &format!("host = \"127.0.0.1\"\nport = {new}"),
        )
        .replace("/var/lib/turnout", &dir)
        .replace("/run/turnout", &dir);
    {
        // The throwaway servers' superuser reads the log and applies it
        // (in the containers, app is the superuser).
        let replication = if mysql {
            "replication_user = \"root\"\nreplication_password = \"root-pw\"\n"
        } else {
            "replication_user = \"postgres\"\nreplication_password = \"postgres\"\n"
        };
        for next in ["[backends.new]", "[[users]]"] {
            text = text.replace(
                &format!("password = \"app\"\n\n{next}"),
                &format!("password = \"app\"\n{replication}\n{next}"),
            );
        }
    }
    if mysql {
        text = text
            .replace("protocol = \"postgres\"", "protocol = \"mysql\"")
            .replace(
                "lower(split_part(email, '@', 2))",
                "lower(substring_index(email, '@', -1))",
            );
    }
    text
}

async fn run_inner(
    port: Option<u16>,
    mysql: bool,
    traffic: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let kind = if mysql {
        "MariaDB servers"
    } else {
        "PostgreSQL clusters"
    };
    println!("Starting two throwaway {kind} (old and new)...");
    let servers = tokio::task::spawn_blocking(move || start_servers(mysql)).await??;
    let (old, new) = servers.ports();

    let dir = TempDir::new("turnout-demo")?;
    let listen_port = match port {
        Some(p) => p,
        None => free_port()?,
    };
    let metrics_port = free_port()?;
    let config_path = dir.path().join("turnout.toml");
    std::fs::write(
        &config_path,
        config_text(mysql, listen_port, metrics_port, old, new, dir.path()),
    )?;
    let config = turnout_config::load(&config_path)?;
    // The commands as this very binary runs them (after `cargo run` too).
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "turnout".into());
    let config = {
        let c = config;
        let shown = config_path.display();
        let (client, direct_new, insert) = if mysql {
            (
                format!("mariadb -h 127.0.0.1 -P {listen_port} -u app -papp app"),
                format!("mariadb -h 127.0.0.1 -P {new} -u app -papp app"),
                "-e \"INSERT INTO customers (name, email) VALUES ('Ann', 'ann@example.com')\"",
            )
        } else {
            (
                format!("psql postgres://app:app@127.0.0.1:{listen_port}/app"),
                format!("psql postgres://app:app@127.0.0.1:{new}/app"),
                "-c \"INSERT INTO customers (name, email) VALUES ('Ann', 'ann@example.com')\"",
            )
        };
        let (select_new, app_read) = if mysql {
            (
                "-e 'SELECT * FROM clients'",
                "-e 'SELECT id, name FROM customers WHERE id = 1'",
            )
        } else {
            (
                "-c 'SELECT * FROM clients'",
                "-c 'SELECT id, name FROM customers WHERE id = 1'",
            )
        };
        let ctl = format!("{exe} ctl --config {shown}");
        let app = if traffic {
            "A small application (--traffic) runs through turnout meanwhile: reads by key,
which turnout compares on new (the flip guards want 20), and writes, all
with old's names."
                .to_string()
        } else {
            format!(
                "Reads are compared on new only when the application makes them (the flip
guards want 20): run `{exe} demo --traffic` for a small application, or read
by key yourself, e.g. {client} {app_read}"
            )
        };
        println!(
            "
turnout is starting in phase mirror: writes go to old, and what old commits
reaches new from old's own log, in commit order (`ctl status` names the source).
old has the application's schema and rows; new has the changed schema and
no rows yet: customers is clients there, name is full_name, legacy_code is
gone and email_domain is computed. The [mapping] in the config says so, and
turnout translates every mirrored write and compared read through it.

  old:      127.0.0.1:{old}  (seeded: customers, orders)
  new:      127.0.0.1:{new}  (changed schema, empty)
  turnout:  127.0.0.1:{listen_port}  user app, password app, database app
  config:   {shown}
  metrics:  http://127.0.0.1:{metrics_port}/metrics

{app}

Try:
  {client} {insert}
  {direct_new} {select_new}
  {exe} plan --config {shown}        # the runbook: every step below, with its checks
  {ctl} status
  {ctl} backfill start
  {ctl} verify start
  {ctl} verify status --watch
  {ctl} ack                          # after a clean verify: reads compared before the backfill differed by design
  {exe} report --config {shown}      # can I flip?
  {ctl} flip reads
  {ctl} flip writes
  {ctl} finalize --yes
  {client} {app_read}    # the application, after finalize

mapping.after_finalize = \"translate\": after finalize turnout keeps translating
the application's old names for new; without it, finalize refuses while the
application still uses them.

Press Ctrl-C (or send SIGTERM) to stop; both servers and their files are removed."
        );
        c
    };
    let counts = std::sync::Arc::new(crate::traffic::Counts::default());
    let app =
        traffic.then(|| tokio::spawn(crate::traffic::run(mysql, listen_port, counts.clone())));
    let code = crate::run(config, config_path.clone()).await;
    if let Some(app) = app {
        app.abort();
        use std::sync::atomic::Ordering;
        println!(
            "\nThe application ran {} statement(s) through turnout; {} session(s) failed.",
            counts.ran.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed)
        );
    }
    // Ctrl-C and SIGTERM are how a demo ends: no error.
    let failed = code != ExitCode::SUCCESS && code != ExitCode::from(130);
    if failed {
        eprintln!("turnout demo: turnout stopped with an error");
    }
    println!("\nStopping: removing the throwaway servers...");
    tokio::task::spawn_blocking(move || drop(servers)).await?;
    drop(dir);
    println!("Done.");
    if failed {
        return Err("turnout stopped with an error".into());
    }
    Ok(())
}
