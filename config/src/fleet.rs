//! `[fleet]`: several turnout instances that move as one, through a store
//! they share (etcd, or a table in a database).

use crate::{Backend, Backends, Protocol, Secret};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// `etcd://host:port[,host:port]/prefix`, `postgres://user:password@host:port/db`,
    /// `mysql://...`; unset: a table on old's server, reached as `backends.old`.
    #[serde(default)]
    pub store: Option<String>,
    /// This instance's name in the fleet: a name, or `${NAME}` (an
    /// environment variable, e.g. a pod's name from the downward API).
    /// Default: `$HOSTNAME:<listener port>` when HOSTNAME is set (a pod's
    /// name in Kubernetes), else the listener's address.
    #[serde(default)]
    pub instance: Option<String>,
    /// How long an instance's membership lasts without a renewal.
    #[serde(default = "lease_ms")]
    pub lease_ms: u64,
}

fn lease_ms() -> u64 {
    3000
}

/// Where the fleet's state is kept.
#[derive(Debug, Clone)]
pub enum FleetStore {
    /// An etcd cluster: its client endpoints and the key prefix.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// Tables in a database (schema `turnout` on PostgreSQL, database
    /// `turnout` on MySQL) reached with this login.
    Sql { protocol: Protocol, login: Backend },
}

impl Fleet {
    /// This instance's name (see `instance`); `Err` names what is wrong.
    pub fn instance_name(&self, listen: &str) -> Result<String, String> {
        let name = match self.instance.as_deref() {
            Some(text) => Secret::resolve(text)?.expose().to_string(),
            None => match std::env::var("HOSTNAME") {
                Ok(host) if !host.trim().is_empty() => {
                    let port = listen.rsplit_once(':').map_or("", |(_, p)| p);
                    format!("{}:{port}", host.trim())
                }
                _ => listen.to_string(),
            },
        };
        if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!(
                "expected a name of 1-200 characters without '/' or control characters, got {name:?}"
            ));
        }
        Ok(name)
    }

    /// The store the config names; `Err` says what is wrong with `store`.
    pub fn store_of(&self, protocol: Protocol, backends: &Backends) -> Result<FleetStore, String> {
        let old = &backends.old;
        let Some(url) = self.store.as_deref().map(str::trim) else {
            return Ok(FleetStore::Sql {
                protocol,
                login: old.clone(),
            });
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("expected etcd://host:port/prefix, postgres://... or mysql://..., got {url:?}")
        })?;
        match scheme {
            "etcd" => {
                let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "turnout"));
                let endpoints: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| {
                        host_port(h)
                            .map(|(host, port)| format!("http://{host}:{port}"))
                            .ok_or_else(|| format!("expected host:port in {url:?}, got {h:?}"))
                    })
                    .collect::<Result<_, _>>()?;
                if endpoints.is_empty() {
                    return Err(format!("no etcd endpoint in {url:?}"));
                }
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() || prefix.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(format!(
                        "expected a key prefix after the endpoints (etcd://host:port/turnout), got {url:?}"
                    ));
                }
                Ok(FleetStore::Etcd {
                    endpoints,
                    prefix: prefix.to_string(),
                })
            }
            "postgres" | "postgresql" | "mysql" | "mariadb" => {
                let protocol = if scheme.starts_with("postgres") {
                    Protocol::Postgres
                } else {
                    Protocol::Mysql
                };
                let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
                let (userinfo, hostport) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, authority),
                };
                let (host, port) = host_port(hostport)
                    .ok_or_else(|| format!("expected host:port in {url:?}, got {hostport:?}"))?;
                let mut login = old.clone();
                login.host = host;
                login.port = port;
                login.tls = crate::BackendTlsMode::Disable;
                login.ca = None;
                if !database.is_empty() {
                    login.database = database.to_string();
                }
                if let Some(u) = userinfo {
                    let (user, password) = u.split_once(':').unwrap_or((u, ""));
                    if user.is_empty() {
                        return Err(format!("empty user name in {url:?}"));
                    }
                    login.user = user.to_string();
                    login.password = Secret::new(password);
                }
                Ok(FleetStore::Sql { protocol, login })
            }
            other => Err(format!(
                "unknown store {other:?}: expected etcd://, postgres:// or mysql://"
            )),
        }
    }
}

fn host_port(s: &str) -> Option<(String, i64)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: i64 = port.parse().ok()?;
    (!host.is_empty() && (1..=65535).contains(&port)).then(|| (host.to_string(), port))
}
