//! One client session of the MySQL adapter: turnout's own handshake with
//! the client (its connection id, its nonce, the configured users), a
//! handshake with the backend as the configured backend user, then the
//! session's bytes forwarded both ways.

use super::auth;
use super::kill::Registered;
use super::mirror::{End as MirrorEnd, MyMirror};
use super::packet::{err_payload, ok_payload, PacketError, Packets};
pub(super) use crate::backend::mysql::{offered, own_caps};
use crate::backend::transport::BackendTarget;
use crate::shared::Shared;
use crate::stream::Stream;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};
use turnout_control::Side;

/// utf8mb4_general_ci
const COLLATION: u8 = 45;
/// Reported until a backend has told its own version.
const DEFAULT_VERSION: &str = "5.5.5-10.11.0-MariaDB-turnout";

/// What a backend connection of the session is opened with: the client's
/// capabilities, character set and database.
#[derive(Debug, Clone)]
pub struct Legs {
    /// The client's user name (turnout's, not the backend's).
    pub user: String,
    pub caps: CapabilityFlags,
    pub collation: u8,
    pub db: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    /// Told to the client as an ERR packet: code, SQL state, message.
    #[error("{2}")]
    Client(u16, &'static str, String),
    #[error("client: {0}")]
    ClientIo(PacketError),
}

/// Serves one accepted MySQL connection to its end.
pub async fn serve(shared: Arc<Shared>, client: Stream, peer: String, over_limit: bool) {
    let id = shared.mysql.next_id.fetch_add(1, Ordering::Relaxed);
    let mut client = Packets::new(client, shared.max_message);
    if over_limit {
        let e = err_payload(
            1040,
            "08004",
            "Too many connections (limits.max_client_connections)",
        );
        let _ = client.write(0, &e).await;
        return;
    }
    let opened = tokio::time::timeout(shared.auth_timeout, open(&shared, client, id)).await;
    let (client, seq, backend, legs) = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(Refused { client, seq, error })) => {
            match error {
                StartError::ClientIo(e) => {
                    debug!(%peer, error = %e, "client left during the handshake")
                }
                StartError::Client(code, state, msg) => {
                    warn!(%peer, %msg, "session refused");
                    if let Some(mut c) = client {
                        let _ = c.write(seq, &err_payload(code, state, &msg)).await;
                    }
                }
            }
            return;
        }
        Err(_) => {
            debug!(%peer, "client did not finish the handshake in time");
            return;
        }
    };
    run_session(&shared, client, seq, backend, legs, &peer, id).await;
    shared.mysql.sessions.remove(&id);
}

/// After the handshakes: forwarding (passthrough) or the mirror engine.
async fn run_session(
    shared: &Arc<Shared>,
    mut client: Packets,
    seq: u8,
    backend: Packets,
    legs: Legs,
    peer: &str,
    id: u32,
) {
    if client.write(seq, &ok_payload()).await.is_err() {
        return;
    }
    let phase = shared.coord.routing.snapshot().phase;
    // Finalized with `mapping.after_finalize = "translate"`: statements
    // still go through the mapping (to new alone).
    let translating = phase == turnout_control::Phase::Finalized
        && shared.live().mapping.translates_after_finalize();
    let Some(mirror_side) = phase.mirror().or(translating.then_some(Side::Old)) else {
        debug!(%peer, id, "mysql session started");
        let _counted =
            crate::shared::coordination::PassthroughGuard::new(&shared.coord.passthrough_sessions);
        match forward(shared, client, backend, &legs.user).await {
            Ok(()) => debug!(%peer, id, "mysql session ended"),
            Err(e) => debug!(%peer, id, error = %e, "mysql session ended"),
        }
        return;
    };
    let target = &shared.session_target(mirror_side, &legs.user);
    let (caps, collation, db) = (legs.caps, legs.collation, legs.db.as_deref());
    let connected = if translating {
        Err("finalized".to_string())
    } else {
        connect(shared, target, caps, collation, db)
            .await
            .map_err(|e| e.to_string())
    };
    let mirror = match connected {
        Err(_) if translating => None,
        Ok(m) => Some(m),
        Err(e) => {
            // Writes will try again, and record or fail per mirror.on_error.
            warn!(%peer, side = %mirror_side, error = %e, "mirror not connected");
            None
        }
    };
    debug!(%peer, id, %phase, "mirrored mysql session started");
    let end = MyMirror::new(shared, client, backend, mirror, mirror_side, legs, id)
        .run()
        .await;
    match end {
        MirrorEnd::Quit => debug!(%peer, id, "mysql session ended"),
        MirrorEnd::ClientGone(e) => debug!(%peer, id, error = %e, "client connection lost"),
        MirrorEnd::AuthorityLost(e) => warn!(%peer, id, error = %e, "backend connection lost"),
    }
}

/// Passthrough: the backend's bytes go to the client as they come; the
/// client's go to the backend packet by packet, so that a `KILL` naming
/// one of turnout's connection ids is carried out by turnout. A large
/// packet streams through without being held whole.
async fn forward(
    shared: &Shared,
    client: Packets,
    backend: Packets,
    user: &str,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    /// Packets up to this size are looked at whole; larger ones stream.
    const LOOK: usize = 4096;
    let Packets {
        stream: client_stream,
        buf: mut pending,
        ..
    } = client;
    let Packets {
        stream: backend_stream,
        buf: backend_early,
        ..
    } = backend;
    let (mut cr, mut cw) = tokio::io::split(client_stream);
    let (mut br, mut bw) = tokio::io::split(backend_stream);
    if !backend_early.is_empty() {
        cw.write_all(&backend_early).await?;
    }
    let mut from_backend = vec![0u8; 32 * 1024];
    // Bytes of a large packet still to pass through unlooked-at.
    let mut streaming = 0usize;
    // Bytes of the client's command so far (a command of 16 MiB or more
    // comes in several packets).
    let mut command = 0usize;
    loop {
        // What of the client's bytes can go now.
        loop {
            if streaming > 0 {
                let n = streaming.min(pending.len());
                if n == 0 {
                    break;
                }
                bw.write_all(&pending.split_to(n)).await?;
                bw.flush().await?;
                streaming -= n;
                continue;
            }
            if pending.len() < 4 {
                break;
            }
            let len = usize::from(pending[0])
                | usize::from(pending[1]) << 8
                | usize::from(pending[2]) << 16;
            if command + len > shared.max_message {
                // As a server over its max_allowed_packet: an ERR, then the
                // connection ends.
                let e = super::packet::too_large_payload(shared.max_message);
                cw.write_all(&super::packet::encode(pending[3].wrapping_add(1), &e).0)
                    .await?;
                cw.flush().await?;
                cw.shutdown().await?;
                super::packet::drain(&mut cr, 64 << 20).await;
                return Ok(());
            }
            command = if len == 0xFF_FFFF { command + len } else { 0 };
            // A statement (COM_QUERY, COM_STMT_PREPARE) is looked at whole
            // whatever its size (up to the limit above), so that no KILL
            // hides behind padding; other large packets stream.
            let statement = pending.len() > 4 && matches!(pending[4], 0x03 | 0x16);
            if len > LOOK && !(statement && len < 0xFF_FFFF) {
                streaming = 4 + len;
                continue;
            }
            if pending.len() < 4 + len {
                break;
            }
            let packet = pending.split_to(4 + len);
            let kill = (packet[3] == 0
                && matches!(packet.get(4), Some(&(0x03 | 0x16)))
                && super::kill::may_be_kill(&packet[5..]))
            .then(|| super::kill::parse(&String::from_utf8_lossy(&packet[5..])))
            .flatten();
            match kill {
                Some(_) if packet[4] == 0x16 => {
                    let answer = super::kill::prepare_refused();
                    cw.write_all(&super::packet::encode(1, &answer).0).await?;
                    cw.flush().await?;
                }
                Some(k) => {
                    let answer = super::kill::run(shared, user, k).await;
                    cw.write_all(&super::packet::encode(1, &answer).0).await?;
                    cw.flush().await?;
                }
                None => {
                    bw.write_all(&packet).await?;
                    bw.flush().await?;
                }
            }
        }
        tokio::select! {
            n = cr.read_buf(&mut pending) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            n = br.read(&mut from_backend) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                cw.write_all(&from_backend[..n]).await?;
                cw.flush().await?;
            }
        }
    }
}

/// A handshake that failed: the client (when it can still be told), the
/// sequence number for the ERR packet, and why.
struct Refused {
    client: Option<Packets>,
    seq: u8,
    error: StartError,
}

fn refused(client: Packets, seq: u8, error: StartError) -> Refused {
    Refused {
        client: Some(client),
        seq,
        error,
    }
}

/// The handshake with the client (TLS when it asks, authentication), then
/// with the backend. Returns the client, the sequence number of its OK
/// packet, and the backend connection.
async fn open(
    shared: &Shared,
    mut client: Packets,
    id: u32,
) -> Result<(Packets, u8, Packets, Legs), Refused> {
    let nonce = auth::nonce();
    let version: String =
        Option::clone(&shared.mysql.version.load()).unwrap_or_else(|| DEFAULT_VERSION.to_string());
    let mut scramble_2 = nonce[8..].to_vec();
    scramble_2.push(0);
    let mut caps = offered();
    if shared.tls.is_some() && matches!(client.stream, Stream::Plain(_)) {
        caps |= CapabilityFlags::CLIENT_SSL;
    }
    let hello = HandshakePacket::new(
        10,
        version.into_bytes(),
        id,
        nonce[..8].try_into().unwrap_or_default(),
        Some(scramble_2),
        caps,
        COLLATION,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(auth::NATIVE),
    );
    let mut out = Vec::new();
    hello.serialize(&mut out);
    if let Err(e) = client.write(0, &out).await {
        return Err(refused(client, 0, StartError::ClientIo(e)));
    }
    let (mut seq, mut payload) = match client.read_unbuffered().await {
        Ok(p) => p,
        Err(e) => return Err(refused(client, 0, StartError::ClientIo(e))),
    };
    // An SSLRequest: the first 32 bytes of a handshake response, with
    // CLIENT_SSL, then the TLS handshake, then the full response.
    let ssl = payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]])
            & CapabilityFlags::CLIENT_SSL.bits()
            != 0;
    if ssl {
        let max = shared.max_message;
        let (
            Some(tls),
            Packets {
                stream: Stream::Plain(tcp),
                ..
            },
        ) = (shared.tls.clone(), client)
        else {
            return Err(Refused {
                client: None,
                seq: 0,
                error: StartError::ClientIo(PacketError::Closed),
            });
        };
        let accepted = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await;
        client = match accepted {
            Ok(t) => Packets::new(Stream::Server(Box::new(t)), max),
            Err(e) => {
                return Err(Refused {
                    client: None,
                    seq: 0,
                    error: StartError::ClientIo(PacketError::Io(e)),
                })
            }
        };
        (seq, payload) = match client.read().await {
            Ok(p) => p,
            Err(e) => return Err(refused(client, 0, StartError::ClientIo(e))),
        };
    } else if shared.tls_required && matches!(client.stream, Stream::Plain(_)) {
        let msg =
            "Connections using insecure transport are prohibited (turnout: listen.tls.required)";
        return Err(refused(
            client,
            seq.wrapping_add(1),
            StartError::Client(3159, "HY000", msg.into()),
        ));
    }
    match start(shared, &mut client, id, &nonce, seq, &payload).await {
        Ok((seq, backend, legs)) => Ok((client, seq, backend, legs)),
        Err((seq, error)) => Err(refused(client, seq, error)),
    }
}

/// Authenticates the client from its handshake response (sequence `seq`)
/// and connects the backend. `Err` carries the sequence number for the
/// ERR packet.
async fn start(
    shared: &Shared,
    client: &mut Packets,
    id: u32,
    nonce: &[u8; 20],
    seq: u8,
    payload: &[u8],
) -> Result<(u8, Packets, Legs), (u8, StartError)> {
    let mut seq = seq.wrapping_add(1);
    let response: HandshakeResponse<'_> = ParseBuf(payload).parse(()).map_err(|e| {
        (
            seq,
            StartError::Client(
                1043,
                "08S01",
                format!("turnout: bad handshake response: {e}"),
            ),
        )
    })?;
    let caps = response.capabilities();
    if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err((
            seq,
            StartError::Client(
                1043,
                "08S01",
                "turnout: clients older than protocol 4.1 are not supported".into(),
            ),
        ));
    }
    let user = String::from_utf8_lossy(response.user()).into_owned();
    let db = response
        .db_name()
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let users = shared.live().mysql_users.clone();
    let mut plugin = response
        .auth_plugin()
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_else(|| auth::NATIVE.to_vec());
    let mut answer = response.scramble_buf().to_vec();
    // A client whose plugin is not the one announced may send no answer
    // and wait to be switched to its own.
    // An unknown user is answered as a user of the announced method would
    // be (switched to it when the client used another), so the replies do
    // not tell unknown users from wrong passwords.
    let wanted = match users.get(&user) {
        Some(c) => (c.accepts(&plugin) && !answer.is_empty(), c.switch_to()),
        None => (plugin == auth::NATIVE && !answer.is_empty(), auth::NATIVE),
    };
    if let (false, switch_to) = wanted {
        // Another method than the one turnout checks for this user: switch.
        let mut switch = Vec::new();
        AuthSwitchRequest::new(switch_to, [&nonce[..], &[0]].concat()).serialize(&mut switch);
        client
            .write(seq, &switch)
            .await
            .map_err(|e| (seq, StartError::ClientIo(e)))?;
        let (s, data) = client
            .read()
            .await
            .map_err(|e| (seq, StartError::ClientIo(e)))?;
        seq = s.wrapping_add(1);
        plugin = switch_to.to_vec();
        answer = data;
    }
    debug!(%user, plugin = %String::from_utf8_lossy(&plugin), answer_len = answer.len(), "mysql client answer");
    if !users.check(&user, &plugin, nonce, &answer) {
        return Err((
            seq,
            StartError::Client(
                1045,
                "28000",
                format!("Access denied for user '{user}' (turnout: wrong user or password)"),
            ),
        ));
    }
    if plugin == auth::CACHING_SHA2 {
        // fast_auth_success, then the OK.
        seq = client
            .write(seq, &[0x01, 0x03])
            .await
            .map_err(|e| (seq, StartError::ClientIo(e)))?;
    }
    if let Some(d) = db.as_deref() {
        // A database neither side is configured with is refused, clearly.
        if let Err(msg) = shared.databases().for_side(Side::Old, d) {
            return Err((seq, StartError::Client(1049, "42000", msg)));
        }
    }
    let authority = shared.coord.routing.snapshot().phase.authority();
    let target = &shared.session_target(authority, &user);
    let (backend, thread) = connect(shared, target, caps, response.collation(), db.as_deref())
        .await
        .map_err(|e| {
            (
                seq,
                StartError::Client(
                    1105,
                    "HY000",
                    format!("turnout: backend {authority} ({}): {e}", target.address()),
                ),
            )
        })?;
    info!(%user, id, side = %authority, plugin = %String::from_utf8_lossy(&plugin), "mysql client authenticated");
    shared.mysql.sessions.insert(
        id,
        Registered {
            user: user.clone(),
            side: authority,
            thread,
        },
    );
    let legs = Legs {
        user,
        caps,
        collation: response.collation(),
        db,
    };
    Ok((seq, backend, legs))
}

/// Connects and authenticates to a MySQL backend as its configured user,
/// with the capabilities the client and the backend share, in the
/// client's database as this side calls it; notes the server's version.
pub(super) async fn connect(
    shared: &Shared,
    target: &BackendTarget,
    client_caps: CapabilityFlags,
    collation: u8,
    db: Option<&str>,
) -> Result<(Packets, u32), String> {
    let db = match db {
        Some(d) => shared.databases().for_side(target.side, d)?,
        None => target.database.clone(),
    };
    let (conn, thread, version) =
        crate::backend::mysql::connect(target, client_caps, collation, &db).await?;
    shared.note_mysql_version(version);
    Ok((conn, thread))
}

/// A new connection to `side` for the session of `legs`, with the
/// session's settings (`replay`: `USE`, `SET ...`) applied in that side's
/// database names; the connection and its backend thread.
pub(super) async fn connect_replayed(
    shared: &Shared,
    side: Side,
    legs: &Legs,
    replay: &[Vec<u8>],
) -> Result<(Packets, u32), String> {
    let target = shared.session_target(side, &legs.user);
    let (mut conn, thread) = connect(
        shared,
        &target,
        legs.caps,
        legs.collation,
        legs.db.as_deref(),
    )
    .await?;
    let databases = shared.databases();
    for p in replay {
        let mapped = databases.packet_for(side, p).ok().flatten();
        let p = mapped.as_deref().unwrap_or(p);
        conn.write(0, p).await.map_err(|e| e.to_string())?;
        super::response::read(&mut conn, super::response::Expect::Result)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((conn, thread))
}
