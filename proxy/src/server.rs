//! The listener: accepts clients, hands each to its protocol adapter, and
//! drains sessions and async queues when it stops. What the sessions share
//! is [`crate::shared`].

use crate::stream::Stream;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tracing::{error, info, warn};
use turnout_config::Config;
use turnout_control::divergence::{Divergence, DivergenceKind};
use turnout_control::{RoutingState, Side};

// The shared state moved below the adapters; its names stay reachable here.
pub use crate::shared::{
    backend_logins_for, mapping_for, mysql_users_for, users_for, CancelKey, CancelTarget, Live,
    MappingRef, MirroredSession, ServerError, Shared,
};

/// How long a stopping server waits for mirrored sessions to finish their
/// transactions, and then for async queues to empty.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// A bound listener, ready to serve.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    /// The local socket and its file, removed when the server stops.
    unix: Option<(UnixListener, PathBuf)>,
    max_clients: usize,
    active: Arc<AtomicUsize>,
    threads: SessionThreads,
}

impl Server {
    /// Binds the listener and prepares TLS and credentials. Must run inside a
    /// tokio runtime.
    pub async fn bind(config: &Config, routing: Arc<RoutingState>) -> Result<Server, ServerError> {
        let shared = Shared::new(config, routing, crate::adapter_for(config.protocol))?;
        // The per-fingerprint summary next to the report, kept current.
        let log = Arc::downgrade(&shared.sampler.log);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(log) = log.upgrade() else { return };
                if let Err(e) = log.write_summary() {
                    warn!(error = %e, "read-diff summary could not be written");
                }
            }
        });
        let listener = TcpListener::bind(&config.listen.address)
            .await
            .map_err(|source| ServerError::Bind {
                address: config.listen.address.clone(),
                source,
            })?;
        let unix = match &config.listen.socket_dir {
            Some(dir) => {
                let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                let path = dir.join(format!(".s.PGSQL.{port}"));
                // A socket file left by a previous run that did not stop cleanly.
                if std::fs::symlink_metadata(&path)
                    .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                    .unwrap_or(false)
                {
                    let _ = std::fs::remove_file(&path);
                }
                let bind_err = |source| ServerError::Bind {
                    address: path.display().to_string(),
                    source,
                };
                let l = UnixListener::bind(&path).map_err(bind_err)?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                )
                .map_err(bind_err)?;
                Some((l, path))
            }
            None => None,
        };
        let active = shared.coord.connections.clone();
        Ok(Server {
            shared: Arc::new(shared),
            listener,
            unix,
            max_clients: config.limits.max_clients(),
            active,
            threads: SessionThreads::start(config.limits.worker_threads)?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Accepts clients until `shutdown` completes.
    /// Serves until `shutdown` resolves, then drains ([`Self::drain`]):
    /// what had to be cut short at the deadline.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Drained {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = self.listener.accept() => a.map(|(tcp, peer)| {
                    let _ = tcp.set_nodelay(true);
                    (Stream::Plain(tcp), peer.to_string())
                }),
                a = accept_unix(&self.unix) => a.map(|s| (Stream::Unix(s), "local".to_string())),
            };
            let (client, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Counted until the session ends, or its hand-over to a
            // session thread fails (the closure is then dropped unrun).
            let (active, before) = Counted::new(&self.active);
            let over_limit = before >= self.max_clients;
            let shared = self.shared.clone();
            self.threads.serve(client, move |client| async move {
                let _active = active;
                let adapter = shared.adapter.clone();
                adapter.serve(shared, client, peer, over_limit).await;
            });
        }
        if let Some((_, path)) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
        info!("listener stopped");
        self.drain().await
    }

    /// Lets mirrored sessions finish the transaction they are in (they close
    /// at its end), then lets async mirror queues empty, each within
    /// [`DRAIN_GRACE`]; what is still queued after that is logged as lost.
    async fn drain(&self) -> Drained {
        let shared = &self.shared;
        shared.coord.stopping.send_replace(true);
        let sessions = wait_for_zero(&shared.coord.mirror_sessions).await;
        if sessions > 0 {
            warn!(sessions, "mirrored sessions still in a transaction after the grace period: closed; their open transactions roll back on both sides");
        }
        let queued = wait_for_zero(shared.queues.pending_counter()).await;
        // From the log: what the authority committed is applied before the
        // applier goes (else the slot keeps it for the next start).
        if let Some(log) = shared.adapter.log() {
            match log.drain(shared, DRAIN_GRACE).await {
                Ok(()) => info!("the log applier applied every commit before stopping"),
                Err(e) => {
                    warn!(error = %e, "turnout stops before the log applier applied every commit; the authority's slot keeps them, and the next start applies them")
                }
            }
        }
        if let Err(e) = shared.sampler.log.write_summary() {
            warn!(error = %e, "read-diff summary could not be written");
        }
        if queued > 0 {
            error!(queued, "async mirror queues not empty after the grace period: those statements are not applied on the mirror");
            shared.records.divergence(Divergence::new(
                DivergenceKind::AsyncOverflow,
                Side::New,
                "(shutdown)",
                &format!("turnout stopped with {queued} statement(s) still queued for the mirror; they were not applied"),
            ));
        }
        Drained {
            sessions_cut: sessions,
            queued_lost: queued,
        }
    }
}

/// What a stop had to cut short at its deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Mirrored sessions still in a transaction (rolled back on both sides).
    pub sessions_cut: usize,
    /// Statements still queued for an async mirror (recorded as divergences).
    pub queued_lost: usize,
}

impl Drained {
    pub fn clean(&self) -> bool {
        self.sessions_cut == 0 && self.queued_lost == 0
    }
}

/// Waits until `count` is 0 or [`DRAIN_GRACE`] has passed; returns it then.
async fn wait_for_zero(count: &AtomicUsize) -> usize {
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    while count.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    count.load(Ordering::Relaxed)
}

async fn accept_unix(
    unix: &Option<(UnixListener, PathBuf)>,
) -> std::io::Result<tokio::net::UnixStream> {
    match unix {
        Some((l, _)) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// The threads client sessions run on: each its own single-threaded event
/// loop (a session's client and backend sockets are registered with, and
/// woken on, the thread that serves it), so forwarding a message costs no
/// hand-over between threads and no work stealing. A new client goes to the
/// thread serving the fewest sessions. Background work (the admin socket,
/// the log applier, the fleet's agent, side jobs) stays on the main runtime.
struct SessionThreads {
    loops: Vec<SessionThread>,
    /// Dropped with the server: each thread then ends its loop.
    _stop: tokio::sync::watch::Sender<bool>,
}

struct SessionThread {
    handle: tokio::runtime::Handle,
    sessions: Arc<AtomicUsize>,
}

impl SessionThreads {
    /// `count` threads; 0: one per core but one (left to the main runtime,
    /// the databases or clients beside turnout), at least one. On a small
    /// machine one event loop serving every session wakes less often than
    /// two each serving half (measured in bench/README.md).
    fn start(count: i64) -> Result<SessionThreads, ServerError> {
        let count = match usize::try_from(count) {
            Ok(n) if n > 0 => n,
            _ => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .saturating_sub(1)
                .max(1),
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut loops = Vec::with_capacity(count);
        for i in 0..count {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ServerError::Threads)?;
            let handle = rt.handle().clone();
            let mut stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("turnout-sessions-{i}"))
                .spawn(move || {
                    // Until the server is dropped (the sender goes).
                    rt.block_on(async move { while stopped.changed().await.is_ok() {} });
                    rt.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(ServerError::Threads)?;
            loops.push(SessionThread {
                handle,
                sessions: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(SessionThreads { loops, _stop: stop })
    }

    /// Runs `session(client)` on the least busy thread. The client's socket
    /// moves to that thread's event loop first.
    fn serve<F, Fut>(&self, client: Stream, session: F)
    where
        F: FnOnce(Stream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .loops
            .iter()
            .min_by_key(|t| t.sessions.load(Ordering::Relaxed))
        else {
            return;
        };
        let moved = match client {
            Stream::Plain(tcp) => tcp.into_std().map(Moved::Tcp),
            Stream::Unix(unix) => unix.into_std().map(Moved::Unix),
            // Accepted sockets are plain; TLS begins inside the session.
            other => {
                tokio::spawn(session(other));
                return;
            }
        };
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "a client's socket could not be handed to a session thread");
                return;
            }
        };
        let (on_thread, _) = Counted::new(&thread.sessions);
        thread.handle.spawn(async move {
            let _on_thread = on_thread;
            let client = match moved {
                Moved::Tcp(s) => tokio::net::TcpStream::from_std(s).map(Stream::Plain),
                Moved::Unix(s) => tokio::net::UnixStream::from_std(s).map(Stream::Unix),
            };
            match client {
                Ok(client) => session(client).await,
                Err(e) => warn!(error = %e, "a client's socket could not join its session thread"),
            }
        });
    }
}

/// One more in a count of sessions until dropped (however the session
/// ends, or when it never starts).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    /// Counts one more; with the count before it.
    fn new(count: &Arc<AtomicUsize>) -> (Counted, usize) {
        let before = count.fetch_add(1, Ordering::Relaxed);
        (Counted(count.clone()), before)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client's socket between two event loops.
enum Moved {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}
