//! `turnout demo`: two throwaway PostgreSQL clusters and turnout in front.

use std::process::ExitCode;
use turnout_harness::{free_port, PgInstance, PgOptions, TempDir};

const SCHEMA: &str = "
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
";

const SEED: &str = "
INSERT INTO customers (name, email)
    SELECT 'customer ' || i, 'customer' || i || '@example.com' FROM generate_series(1, 100) i;
INSERT INTO orders (customer_id, amount_cents)
    SELECT 1 + (i % 100), (i * 137) % 10000 FROM generate_series(1, 1000) i;
";

pub async fn run(port: Option<u16>) -> ExitCode {
    match run_inner(port).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnout demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(port: Option<u16>) -> Result<(), Box<dyn std::error::Error>> {
    println!("Starting two throwaway PostgreSQL clusters (old and new)...");
    let (old, new) = tokio::task::spawn_blocking(|| -> Result<_, turnout_harness::HarnessError> {
        let old = PgInstance::start(PgOptions::default())?;
        let new = PgInstance::start(PgOptions::default())?;
        for inst in [&old, &new] {
            inst.create_database("app", "app", "app")?;
            inst.psql_as("app", "app", "app", SCHEMA)?;
        }
        old.psql_as("app", "app", "app", SEED)?;
        Ok((old, new))
    })
    .await??;

    let dir = TempDir::new("turnout-demo")?;
    let listen_port = match port {
        Some(p) => p,
        None => free_port()?,
    };
    let config_text = format!(
        r#"# turnout demo config
[listen]
address = "127.0.0.1:{listen_port}"

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

[sampling]
report = "{dir}/read-diffs.jsonl"

[state]
initial_phase = "mirror"
file = "{dir}/state.json"

[admin]
socket = "{dir}/admin.sock"
audit_log = "{dir}/audit.jsonl"
"#,
        old = old.port,
        new = new.port,
        dir = dir.path().display(),
    );
    let config_path = dir.path().join("turnout.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = turnout_config::load(&config_path)?;
    println!(
        "
turnout is starting in phase mirror: writes go to old and, in step, to new.
new has the schema and no rows yet (rows that predate mirroring need a
backfill, which comes later); old is seeded.

  old:      postgres://app:app@127.0.0.1:{old}/app   (seeded: customers, orders)
  new:      postgres://app:app@127.0.0.1:{new}/app   (same schema, empty)
  turnout:  postgres://app:app@127.0.0.1:{listen_port}/app
  config:   {config}

Try:
  psql postgres://app:app@127.0.0.1:{listen_port}/app -c \"INSERT INTO customers (name, email) VALUES ('Ann', 'ann@example.com')\"
  psql postgres://app:app@127.0.0.1:{new}/app -c 'SELECT * FROM customers'
  turnout plan --config {config}
  turnout ctl --config {config} status

Press Ctrl-C (or send SIGTERM) to stop; both clusters and their files are removed.",
        old = old.port,
        new = new.port,
        config = config_path.display(),
    );
    let code = crate::run(config, config_path.clone()).await;
    if code != ExitCode::SUCCESS {
        eprintln!("turnout demo: turnout stopped with an error");
    }
    println!("\nStopping: removing the throwaway clusters...");
    tokio::task::spawn_blocking(move || {
        drop(old);
        drop(new);
    })
    .await?;
    drop(dir);
    println!("Done.");
    Ok(())
}
