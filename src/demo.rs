//! `turnout demo`: a real expand/contract cutover on throwaway servers. Two
//! PostgreSQL clusters (or, with `--mysql`, two MariaDB servers): `old` with
//! the application's schema and rows, `new` with the changed schema (a table
//! and a column renamed, a column dropped, a computed column added), and
//! turnout in front in phase `mirror` with the `[mapping]` between them.
//! The runbook (`turnout plan`) then walks mirror, backfill, verify and the
//! flips end to end.

use std::path::Path;
use std::process::ExitCode;
use turnout_harness::{free_port, MariaDbInstance, PgInstance, PgOptions, TempDir};

const PG_OLD: &str = "
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    legacy_code text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
";

/// new: `customers` is `clients`, `name` is `full_name`, `legacy_code` is
/// gone, `email_domain` is new and computed. The foreign key comes back in
/// the contract phase, once the backfill has copied every client.
const PG_NEW: &str = "
CREATE TABLE clients (
    id bigserial PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL UNIQUE,
    email_domain text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
";

const PG_SEED: &str = "
INSERT INTO customers (name, email, legacy_code)
    SELECT 'customer ' || i, 'customer' || i || '@example' || (i % 3) || '.com', 'L' || i
    FROM generate_series(1, 100) i;
INSERT INTO orders (customer_id, amount_cents)
    SELECT 1 + (i % 100), (i * 137) % 10000 FROM generate_series(1, 1000) i;
";

const MY_OLD: &str = "
CREATE TABLE customers (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    name varchar(200) NOT NULL,
    email varchar(200) NOT NULL UNIQUE,
    legacy_code varchar(50),
    created_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE orders (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount_cents int NOT NULL,
    placed_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
);
";

const MY_NEW: &str = "
CREATE TABLE clients (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    full_name varchar(200) NOT NULL,
    email varchar(200) NOT NULL UNIQUE,
    email_domain varchar(200),
    created_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE orders (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount_cents int NOT NULL,
    placed_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
";

const MY_SEED: &str = "
INSERT INTO customers (name, email, legacy_code)
    SELECT CONCAT('customer ', i), CONCAT('customer', i, '@example', i % 3, '.com'), CONCAT('L', i)
    FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100)
          SELECT i FROM s) AS s;
INSERT INTO orders (customer_id, amount_cents)
    SELECT 1 + (i % 100), (i * 137) % 10000
    FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000)
          SELECT i FROM s) AS s;
";

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

pub async fn run(port: Option<u16>, mysql: bool) -> ExitCode {
    match run_inner(port, mysql).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnout demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start_servers(mysql: bool) -> Result<Servers, turnout_harness::HarnessError> {
    if mysql {
        let old = MariaDbInstance::start()?;
        let new = MariaDbInstance::start()?;
        for (inst, schema) in [(&old, MY_OLD), (&new, MY_NEW)] {
            inst.create_database("app", "app", "app")?;
            inst.sql("app", schema)?;
        }
        old.sql("app", MY_SEED)?;
        Ok(Servers::My(old, new))
    } else {
        let old = PgInstance::start(PgOptions::default())?;
        let new = PgInstance::start(PgOptions::default())?;
        for (inst, schema) in [(&old, PG_OLD), (&new, PG_NEW)] {
            inst.create_database("app", "app", "app")?;
            inst.psql_as("app", "app", "app", schema)?;
        }
        old.psql_as("app", "app", "app", PG_SEED)?;
        Ok(Servers::Pg(old, new))
    }
}

fn config_text(mysql: bool, listen: u16, metrics: u16, old: u16, new: u16, dir: &Path) -> String {
    let dir = dir.display();
    let computed = if mysql {
        "lower(substring_index(email, '@', -1))"
    } else {
        "lower(split_part(email, '@', 2))"
    };
    format!(
        r#"# turnout demo config: old has the application's schema, new the changed one.
protocol = "{protocol}"

[listen]
address = "127.0.0.1:{listen}"

[backends.old]
host = "127.0.0.1"
port = {old}
database = "app"
user = "app"
password = "app"

[backends.new]
host = "127.0.0.1"
port = {new}
database = "app"
user = "app"
password = "app"

[[users]]
name = "app"
password = "app"

[mirror]
divergence_log = "{dir}/divergences.jsonl"

# new renames customers to clients and name to full_name, drops legacy_code,
# and adds email_domain, computed from the email.
[[mapping.tables]]
old = "customers"
new = "clients"
drop = ["legacy_code"]
[mapping.tables.columns]
name = "full_name"
[mapping.tables.computed]
email_domain = "{computed}"

[sampling]
rate = 0.5
report = "{dir}/read-diffs.jsonl"

[guards]
# A flip needs this many reads compared on the other side first.
min_compared_reads = 20

[state]
initial_phase = "mirror"
file = "{dir}/state.json"

[admin]
socket = "{dir}/admin.sock"
audit_log = "{dir}/audit.jsonl"

[metrics]
address = "127.0.0.1:{metrics}"
"#,
        protocol = if mysql { "mysql" } else { "postgres" },
    )
}

async fn run_inner(port: Option<u16>, mysql: bool) -> Result<(), Box<dyn std::error::Error>> {
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
        let select_new = if mysql {
            "-e 'SELECT * FROM clients'"
        } else {
            "-c 'SELECT * FROM clients'"
        };
        println!(
            "
turnout is starting in phase mirror: writes go to old and, in step, to new.
old has the application's schema and rows; new has the changed schema and
no rows yet: customers is clients there, name is full_name, legacy_code is
gone and email_domain is computed. The [mapping] in the config says so, and
turnout translates every mirrored write and compared read through it.

  old:      127.0.0.1:{old}  (seeded: customers, orders)
  new:      127.0.0.1:{new}  (changed schema, empty)
  turnout:  127.0.0.1:{listen_port}  user app, password app, database app
  config:   {shown}
  metrics:  http://127.0.0.1:{metrics_port}/metrics

Try:
  {client} {insert}
  {direct_new} {select_new}
  {exe} plan --config {shown}        # the runbook: every step below, with its checks
  {exe} ctl --config {shown} status
  {exe} ctl --config {shown} backfill start
  {exe} ctl --config {shown} verify start
  {exe} report --config {shown}      # can I flip?
  {exe} ctl --config {shown} flip reads

Press Ctrl-C (or send SIGTERM) to stop; both servers and their files are removed."
        );
        c
    };
    let code = crate::run(config, config_path.clone()).await;
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
