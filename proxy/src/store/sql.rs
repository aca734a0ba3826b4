//! The fleet's store as tables in a database: `turnout.fleet` (one row:
//! the record, with a version every swap checks and bumps) and
//! `turnout.fleet_members` (one row per instance, alive while its
//! `expires_at`, on the database's own clock, is ahead). PostgreSQL keeps
//! them in a schema `turnout`, MySQL in a database `turnout`.

use super::{hex, unhex, Member, Record, Store, StoreError, StoreFuture, Version};
use crate::backend::transport::BackendTarget;
use crate::backend::{mysql, pg, QueryError};
use crate::wire::my_packet::Packets;
use crate::wire::pg_framed::Framed;
use std::time::Duration;
use turnout_config::Protocol;
use turnout_control::Side;

enum Conn {
    Pg(Framed),
    My(Packets),
}

pub struct SqlStore {
    protocol: Protocol,
    target: BackendTarget,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// Ticks at each NOTIFY of another instance (PostgreSQL; started at
    /// the first `changes`).
    changed: tokio::sync::watch::Sender<u64>,
    listening: std::sync::Once,
}

/// The longest one statement of the store may take.
const STATEMENT: Duration = Duration::from_secs(2);

impl SqlStore {
    pub fn new(protocol: Protocol, target: BackendTarget) -> SqlStore {
        SqlStore {
            protocol,
            target,
            conn: tokio::sync::Mutex::new(None),
            changed: tokio::sync::watch::channel(0).0,
            listening: std::sync::Once::new(),
        }
    }

    /// PostgreSQL: a connection of its own LISTENs for the instances'
    /// NOTIFY after each change, ticking `changed`.
    fn listen(&self) {
        if self.protocol != Protocol::Postgres {
            return;
        }
        let (target, changed) = (self.target.clone(), self.changed.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(mut conn) = pg::open_simple(&target).await {
                    if pg::run(&mut conn, "LISTEN turnout_fleet", Side::Old)
                        .await
                        .is_ok()
                    {
                        changed.send_modify(|n| *n += 1);
                        while let Ok(f) = conn.read().await {
                            if f.tag == b'A' {
                                changed.send_modify(|n| *n += 1);
                            }
                        }
                    }
                }
                if changed.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// What follows a change so that listeners hear of it.
    fn tell(&self) -> Option<String> {
        (self.protocol == Protocol::Postgres).then(|| "NOTIFY turnout_fleet".to_string())
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Unreachable {
            store: self.describe(),
            detail: detail.to_string(),
        }
    }

    fn schema(&self) -> &'static [&'static str] {
        match self.protocol {
            Protocol::Postgres => &[
                "CREATE SCHEMA IF NOT EXISTS turnout",
                "CREATE TABLE IF NOT EXISTS turnout.fleet (id int PRIMARY KEY, version bigint NOT NULL, record text NOT NULL)",
                "CREATE TABLE IF NOT EXISTS turnout.fleet_members (instance text PRIMARY KEY, expires_at timestamptz NOT NULL, member text NOT NULL)",
                "CREATE TABLE IF NOT EXISTS turnout.fleet_leaders (role text PRIMARY KEY, instance text NOT NULL, expires_at timestamptz NOT NULL)",
            ],
            Protocol::Mysql => &[
                "CREATE DATABASE IF NOT EXISTS turnout",
                "CREATE TABLE IF NOT EXISTS turnout.fleet (id INT PRIMARY KEY, version BIGINT NOT NULL, record LONGTEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS turnout.fleet_members (instance VARCHAR(200) PRIMARY KEY, expires_at DATETIME(6) NOT NULL, member LONGTEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS turnout.fleet_leaders (role VARCHAR(64) PRIMARY KEY, instance VARCHAR(200) NOT NULL, expires_at DATETIME(6) NOT NULL)",
            ],
        }
    }

    /// Runs `sqls` in order on the store's connection (opened, and its
    /// tables made, when there is none): the last one's rows.
    async fn run(&self, sqls: &[String]) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let mut conn = self.open().await?;
            for sql in self.schema() {
                // Instances starting at once may race to create them: one
                // more try sees them made.
                if let Err(e) = query(&mut conn, sql).await {
                    query(&mut conn, sql).await.map_err(|again| match again {
                        // The login may not make them: no retry helps.
                        QueryError::Refused { message, .. } => StoreError::Invalid {
                            store: self.describe(),
                            detail: format!("{sql}: {message} (the store's login needs to make and use the `turnout` schema or database)"),
                        },
                        _ => self.unreachable(format!("{sql}: {e}")),
                    })?;
                }
            }
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(self.unreachable("no connection"));
        };
        let mut last = Vec::new();
        for sql in sqls {
            match query(conn, sql).await {
                Ok(rows) => last = rows,
                Err(e) => {
                    let broken = !matches!(e, QueryError::Refused { .. });
                    if broken {
                        *guard = None;
                    }
                    return Err(self.unreachable(e));
                }
            }
        }
        Ok(last)
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        let opened = tokio::time::timeout(STATEMENT, async {
            match self.protocol {
                Protocol::Postgres => pg::open_simple(&self.target).await.map(Conn::Pg),
                Protocol::Mysql => mysql::open_simple(&self.target)
                    .await
                    .map(|(c, _)| Conn::My(c)),
            }
        })
        .await;
        match opened {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => Err(self.unreachable("no answer within 2 s")),
        }
    }

    fn now(&self) -> &'static str {
        match self.protocol {
            Protocol::Postgres => "clock_timestamp()",
            Protocol::Mysql => "NOW(6)",
        }
    }

    fn later(&self, lease: Duration) -> String {
        match self.protocol {
            Protocol::Postgres => format!(
                "clock_timestamp() + interval '{} milliseconds'",
                lease.as_millis()
            ),
            Protocol::Mysql => format!(
                "DATE_ADD(NOW(6), INTERVAL {} MICROSECOND)",
                lease.as_micros()
            ),
        }
    }
}

async fn query(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<Option<String>>>, QueryError> {
    let ran = tokio::time::timeout(STATEMENT, async {
        match conn {
            Conn::Pg(c) => pg::run(c, sql, Side::Old).await,
            Conn::My(c) => mysql::rows(c, sql).await,
        }
    })
    .await
    .map_err(|_| QueryError::Broken {
        side: None,
        detail: format!("no answer within {} s", STATEMENT.as_secs()),
    })??;
    Ok(ran.into_data())
}

fn decode<T: serde::de::DeserializeOwned>(text: Option<&str>) -> Option<T> {
    serde_json::from_slice(&unhex(text?)?).ok()
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    hex(&serde_json::to_vec(value).unwrap_or_default())
}

/// `s` as a quoted literal: it holds hex digits and names only (quotes
/// doubled all the same).
fn lit(s: &str) -> String {
    pg::literal(s)
}

impl Store for SqlStore {
    fn describe(&self) -> String {
        let kind = match self.protocol {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        };
        format!(
            "{kind}://{}/{}",
            self.target.address(),
            self.target.database
        )
    }

    fn read(&self) -> StoreFuture<'_, Option<(Record, i64)>> {
        Box::pin(async move {
            let rows = self
                .run(&["SELECT version, record FROM turnout.fleet WHERE id = 1".into()])
                .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let version = row
                .first()
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<i64>().ok());
            let record = decode::<Record>(row.get(1).and_then(|v| v.as_deref()));
            match (version, record) {
                (Some(v), Some(r)) => Ok(Some((r, v))),
                _ => Err(StoreError::Invalid {
                    store: self.describe(),
                    detail: "turnout.fleet holds a row turnout cannot read".into(),
                }),
            }
        })
    }

    fn swap<'a>(&'a self, expected: Version, next: &'a Record) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let text = encode(next);
            let write = match (expected, self.protocol) {
                (None, Protocol::Postgres) => format!(
                    "INSERT INTO turnout.fleet VALUES (1, 1, {}) ON CONFLICT (id) DO NOTHING",
                    lit(&text)
                ),
                (None, Protocol::Mysql) => format!(
                    "INSERT IGNORE INTO turnout.fleet VALUES (1, 1, {})",
                    lit(&text)
                ),
                (Some(v), _) => format!(
                    "UPDATE turnout.fleet SET version = {}, record = {} WHERE id = 1 AND version = {v}",
                    v + 1,
                    lit(&text)
                ),
            };
            // Whether the row is now this swap's: its record (with this
            // writer's nonce) at the next version.
            let mut sqls = vec![write];
            sqls.extend(self.tell());
            sqls.push("SELECT version, record FROM turnout.fleet WHERE id = 1".into());
            let rows = self.run(&sqls).await?;
            let want = expected.map_or(1, |v| v + 1).to_string();
            Ok(rows.first().is_some_and(|r| {
                r.first().and_then(|v| v.as_deref()) == Some(want.as_str())
                    && r.get(1).and_then(|v| v.as_deref()) == Some(text.as_str())
            }))
        })
    }

    fn heartbeat<'a>(&'a self, member: &'a Member, lease: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (i, until, m) = (
                lit(&member.instance),
                self.later(lease),
                lit(&encode(member)),
            );
            let sql = match self.protocol {
                Protocol::Postgres => format!(
                    "INSERT INTO turnout.fleet_members VALUES ({i}, {until}, {m}) ON CONFLICT (instance) DO UPDATE SET expires_at = EXCLUDED.expires_at, member = EXCLUDED.member"
                ),
                Protocol::Mysql => format!(
                    "INSERT INTO turnout.fleet_members VALUES ({i}, {until}, {m}) ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at), member = VALUES(member)"
                ),
            };
            let mut sqls = vec![sql];
            sqls.extend(self.tell());
            self.run(&sqls).await.map(|_| ())
        })
    }

    fn members(&self) -> StoreFuture<'_, Vec<Member>> {
        Box::pin(async move {
            let rows = self
                .run(&[format!(
                    "SELECT member FROM turnout.fleet_members WHERE expires_at > {} ORDER BY instance",
                    self.now()
                )])
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| decode::<Member>(r.first().and_then(|v| v.as_deref())))
                .collect())
        })
    }

    fn lead<'a>(
        &'a self,
        role: &'a str,
        instance: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let (r, i, until, now) = (lit(role), lit(instance), self.later(lease), self.now());
            let take = match self.protocol {
                Protocol::Postgres => format!(
                    "INSERT INTO turnout.fleet_leaders AS l VALUES ({r}, {i}, {until}) ON CONFLICT (role) DO UPDATE SET instance = EXCLUDED.instance, expires_at = EXCLUDED.expires_at WHERE l.instance = EXCLUDED.instance OR l.expires_at < {now}"
                ),
                // (Assignments see the ones before them: the expiry is
                // taken first, and the name follows it.)
                Protocol::Mysql => format!(
                    "INSERT INTO turnout.fleet_leaders VALUES ({r}, {i}, {until}) ON DUPLICATE KEY UPDATE expires_at = IF(instance = VALUES(instance) OR expires_at < {now}, VALUES(expires_at), expires_at), instance = IF(expires_at = VALUES(expires_at), VALUES(instance), instance)"
                ),
            };
            let rows = self
                .run(&[
                    take,
                    format!(
                        "SELECT instance FROM turnout.fleet_leaders WHERE role = {r} AND expires_at > {now}"
                    ),
                ])
                .await?;
            Ok(rows.first().and_then(|row| row.first().cloned().flatten()))
        })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.listening.call_once(|| self.listen());
        self.changed.subscribe()
    }

    fn leave<'a>(&'a self, instance: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.run(&[format!(
                "DELETE FROM turnout.fleet_members WHERE instance = {}",
                lit(instance)
            )])
            .await
            .map(|_| ())
        })
    }
}
