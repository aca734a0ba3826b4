//! One client connection for the chaos workloads and the checker, on either
//! engine: tokio-postgres (extended protocol, parameters bound) or
//! mysql_async (server-side prepared statements). Every value is an i64;
//! statements are written with `$1`-style placeholders and rewritten to `?`
//! for MySQL.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MariaDb,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mariadb",
        }
    }
}

/// Where a connection goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub engine: Engine,
    pub port: u16,
    pub user: String,
    pub password: String,
}

pub enum Db {
    Pg(tokio_postgres::Client),
    My(mysql_async::Conn),
}

/// How long one statement may take before the client gives up on it.
pub const STATEMENT_LIMIT: Duration = Duration::from_secs(30);

impl Db {
    pub async fn connect(t: &Target) -> Result<Db, String> {
        let connecting = async {
            match t.engine {
                Engine::Postgres => {
                    let url = format!(
                        "host=127.0.0.1 port={} dbname=app user={} password={} connect_timeout=5",
                        t.port, t.user, t.password
                    );
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .map_err(|e| full(&e))?;
                    tokio::spawn(conn);
                    Ok(Db::Pg(client))
                }
                Engine::MariaDb => {
                    let opts = mysql_async::OptsBuilder::default()
                        .ip_or_hostname("127.0.0.1")
                        .tcp_port(t.port)
                        .user(Some(t.user.clone()))
                        .pass(Some(t.password.clone()))
                        .db_name(Some("app"))
                        .prefer_socket(false);
                    mysql_async::Conn::new(opts)
                        .await
                        .map(Db::My)
                        .map_err(|e| e.to_string())
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Ok(r) => r,
            Err(_) => Err("connect: no answer in 10 s".into()),
        }
    }

    /// A statement without a result: rows affected.
    pub async fn exec(&mut self, sql: &str, params: &[i64]) -> Result<u64, String> {
        let run = async {
            match self {
                Db::Pg(c) => {
                    let p = pg_params(params);
                    c.execute(sql, &p).await.map_err(|e| full(&e))
                }
                Db::My(c) => {
                    use mysql_async::prelude::Queryable;
                    c.exec_drop(my_sql(sql), my_params(params))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(c.affected_rows())
                }
            }
        };
        limited(run).await
    }

    /// A statement's rows, every column an i64 (NULL as None).
    pub async fn rows(
        &mut self,
        sql: &str,
        params: &[i64],
    ) -> Result<Vec<Vec<Option<i64>>>, String> {
        let run = async {
            match self {
                Db::Pg(c) => {
                    let p = pg_params(params);
                    let rows = c.query(sql, &p).await.map_err(|e| full(&e))?;
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.try_get::<_, Option<i64>>(i).map_err(|e| full(&e)))
                                .collect()
                        })
                        .collect()
                }
                Db::My(c) => {
                    use mysql_async::prelude::Queryable;
                    let rows: Vec<mysql_async::Row> = c
                        .exec(my_sql(sql), my_params(params))
                        .await
                        .map_err(|e| e.to_string())?;
                    rows.into_iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| match r.get_opt::<Option<i64>, usize>(i) {
                                    Some(Ok(v)) => Ok(v),
                                    Some(Err(e)) => Err(format!("column {i}: {e}")),
                                    None => Ok(None),
                                })
                                .collect()
                        })
                        .collect()
                }
            }
        };
        limited(run).await
    }

    /// One value (the first column of the first row).
    pub async fn value(&mut self, sql: &str, params: &[i64]) -> Result<Option<i64>, String> {
        Ok(self
            .rows(sql, params)
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten()))
    }

    /// A statement in the simple / text protocol (BEGIN, COMMIT, ROLLBACK,
    /// DDL, literal inserts).
    pub async fn simple(&mut self, sql: &str) -> Result<(), String> {
        let run = async {
            match self {
                Db::Pg(c) => c.batch_execute(sql).await.map_err(|e| full(&e)),
                Db::My(c) => {
                    use mysql_async::prelude::Queryable;
                    c.query_drop(sql).await.map_err(|e| e.to_string())
                }
            }
        };
        limited(run).await
    }
}

/// The values bound, as tokio-postgres takes them.
fn pg_params(params: &[i64]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// The values bound, as mysql_async takes them.
fn my_params(params: &[i64]) -> mysql_async::Params {
    mysql_async::Params::Positional(params.iter().map(|v| (*v).into()).collect())
}

async fn limited<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    match tokio::time::timeout(STATEMENT_LIMIT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout: no answer in {STATEMENT_LIMIT:?}")),
    }
}

/// `$1`, `$2`, ... as `?` (the statements here bind in order).
fn my_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// tokio-postgres's error with the server's message (its Display alone
/// says only "db error").
fn full(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", e, db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}
