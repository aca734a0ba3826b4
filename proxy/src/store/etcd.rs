//! The fleet's store in etcd: `<prefix>/record` (swapped by a transaction
//! that compares its mod revision), `<prefix>/members/<instance>` (put
//! with this instance's lease, so it goes when the lease ends).

use super::{Member, Record, Store, StoreError, StoreFuture, Version};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, WatchOptions,
};
use std::time::Duration;
use tokio::sync::Mutex;

pub struct EtcdStore {
    endpoints: Vec<String>,
    prefix: String,
    client: Mutex<Option<Client>>,
    /// This instance's lease: its id, the keeper and its answers.
    lease: Mutex<Option<(i64, LeaseKeeper, LeaseKeepAliveStream)>>,
    /// Ticks at every change under the prefix (a watch, started at the
    /// first `changes`).
    changed: tokio::sync::watch::Sender<u64>,
    watching: std::sync::Once,
}

/// The longest one request may take.
const REQUEST: Duration = Duration::from_secs(2);

impl EtcdStore {
    pub fn new(endpoints: Vec<String>, prefix: String) -> EtcdStore {
        EtcdStore {
            endpoints,
            prefix,
            client: Mutex::new(None),
            lease: Mutex::new(None),
            changed: tokio::sync::watch::channel(0).0,
            watching: std::sync::Once::new(),
        }
    }

    /// Watches the prefix until the store is dropped, ticking `changed`
    /// at every event (and once after each reconnection).
    fn watch(&self) {
        let (endpoints, prefix) = (self.endpoints.clone(), format!("{}/", self.prefix));
        let changed = self.changed.clone();
        tokio::spawn(async move {
            loop {
                let watched = async {
                    let options = ConnectOptions::new().with_connect_timeout(REQUEST);
                    let mut c = Client::connect(&endpoints, Some(options)).await?;
                    let mut stream = c
                        .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
                        .await?;
                    changed.send_modify(|n| *n += 1);
                    while stream.message().await?.is_some() {
                        changed.send_modify(|n| *n += 1);
                    }
                    Ok::<_, etcd_client::Error>(())
                };
                let _ = watched.await;
                if changed.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Unreachable {
            store: self.describe(),
            detail: detail.to_string(),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// A client (connected on first use; the connection reconnects by
    /// itself).
    async fn client(&self) -> Result<Client, StoreError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST)
            .with_timeout(REQUEST)
            .with_keep_alive(Duration::from_secs(1), REQUEST);
        let c = tokio::time::timeout(REQUEST, Client::connect(&self.endpoints, Some(options)))
            .await
            .map_err(|_| self.unreachable("no answer within 2 s"))?
            .map_err(|e| self.unreachable(e))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// `f` on a client, within [`REQUEST`].
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let c = self.client().await?;
        match tokio::time::timeout(REQUEST, f(c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => Err(self.unreachable("no answer within 2 s")),
        }
    }

    /// This instance's lease, renewed; granted anew when it ended.
    async fn renewed(&self, lease: Duration) -> Result<i64, StoreError> {
        let mut guard = self.lease.lock().await;
        if let Some((id, keeper, stream)) = guard.as_mut() {
            let renewed = tokio::time::timeout(REQUEST, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => return Ok(*id),
                // Ended (or the stream broke): a new one.
                _ => *guard = None,
            }
        }
        let ttl = lease.as_millis().div_ceil(1000).max(1) as i64;
        let id = self
            .with(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        let (keeper, stream) = self
            .with(|mut c| async move { c.lease_keep_alive(id).await })
            .await?;
        *guard = Some((id, keeper, stream));
        Ok(id)
    }
}

fn invalid(store: &EtcdStore, what: &str) -> StoreError {
    StoreError::Invalid {
        store: store.describe(),
        detail: format!("{what} holds a value turnout cannot read"),
    }
}

impl Store for EtcdStore {
    fn describe(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}/{}", hosts.join(","), self.prefix)
    }

    fn read(&self) -> StoreFuture<'_, Option<(Record, i64)>> {
        Box::pin(async move {
            let key = self.key("record");
            let got = self
                .with(|mut c| async move { c.get(key, None).await })
                .await?;
            let Some(kv) = got.kvs().first() else {
                return Ok(None);
            };
            let record: Record =
                serde_json::from_slice(kv.value()).map_err(|_| invalid(self, "record"))?;
            Ok(Some((record, kv.mod_revision())))
        })
    }

    fn swap<'a>(&'a self, expected: Version, next: &'a Record) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = self.key("record");
            let value = serde_json::to_vec(next).unwrap_or_default();
            let compare = match expected {
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
            };
            let txn = Txn::new()
                .when(vec![compare])
                .and_then(vec![TxnOp::put(key, value, None)]);
            let done = self.with(|mut c| async move { c.txn(txn).await }).await?;
            Ok(done.succeeded())
        })
    }

    fn heartbeat<'a>(&'a self, member: &'a Member, lease: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let id = self.renewed(lease).await?;
            let key = self.key(&format!("members/{}", member.instance));
            let value = serde_json::to_vec(member).unwrap_or_default();
            self.with(|mut c| async move {
                c.put(key, value, Some(PutOptions::new().with_lease(id)))
                    .await
            })
            .await
            .map(|_| ())
        })
    }

    fn members(&self) -> StoreFuture<'_, Vec<Member>> {
        Box::pin(async move {
            let key = self.key("members/");
            let got = self
                .with(
                    |mut c| async move { c.get(key, Some(GetOptions::new().with_prefix())).await },
                )
                .await?;
            Ok(got
                .kvs()
                .iter()
                .filter_map(|kv| serde_json::from_slice::<Member>(kv.value()).ok())
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
            // The key lives with this instance's lease: it goes when the
            // lease ends, and the next to ask takes it.
            let id = self.renewed(lease).await?;
            let key = self.key(&format!("leaders/{role}"));
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(
                    key.clone(),
                    instance,
                    Some(PutOptions::new().with_lease(id)),
                )]);
            self.with(|mut c| async move { c.txn(txn).await }).await?;
            let got = self
                .with(|mut c| async move { c.get(key, None).await })
                .await?;
            Ok(got
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
        })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watching.call_once(|| self.watch());
        self.changed.subscribe()
    }

    fn leave<'a>(&'a self, instance: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = self.key(&format!("members/{instance}"));
            self.with(|mut c| async move { c.delete(key, None).await })
                .await?;
            if let Some((id, _, _)) = self.lease.lock().await.take() {
                let _ = self
                    .with(|mut c| async move { c.lease_revoke(id).await })
                    .await;
            }
            Ok(())
        })
    }
}
