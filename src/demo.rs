//! `turnout demo`: two throwaway PostgreSQL clusters and turnout in front.

use std::process::ExitCode;
use std::sync::Arc;
use turnout_control::{Phase, RoutingState};
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
"#,
        old = old.port,
        new = new.port,
    );
    let config_path = dir.path().join("turnout.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = turnout_config::load(&config_path)?;
    let routing = Arc::new(RoutingState::new(Phase::Passthrough, 0));
    let server = turnout_proxy::Server::bind(&config, routing).await?;
    let addr = server.local_addr()?;

    println!(
        "
turnout is running in phase passthrough.

  old:      postgres://app:app@127.0.0.1:{old}/app   (seeded: customers, orders)
  new:      postgres://app:app@127.0.0.1:{new}/app   (same schema, empty)
  turnout:  postgres://app:app@{addr}/app
  config:   {config}

Try:
  psql postgres://app:app@{addr}/app -c 'SELECT count(*) FROM orders'
  pgbench -i -s 1 postgres://app:app@{addr}/app
  pgbench -S -c 4 -T 10 postgres://app:app@{addr}/app

Press Ctrl-C (or send SIGTERM) to stop; both clusters and their files are removed.",
        old = old.port,
        new = new.port,
        config = config_path.display(),
    );
    server.serve(crate::shutdown_signal()).await;
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
