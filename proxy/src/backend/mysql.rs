//! Reaching a MySQL or MariaDB backend as a client: the handshake (TLS
//! when configured, `mysql_native_password`), and simple queries of
//! turnout's own with their rows as text.

use super::rows::Rows;
use super::transport::{open_plain, tls_client, BackendTarget};
use super::QueryError;
use crate::stream::Stream;
use crate::wire::my_packet::{err_text, Packets};
use crate::wire::my_response::{self as response, lenenc, Expect};
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse, SslRequest,
};
use mysql_common::proto::MySerialize;
use mysql_common::scramble::scramble_native;
use std::time::Duration;
use turnout_config::BackendTlsMode;

/// What turnout offers clients. Each is something every MySQL and MariaDB
/// server supports, so the session's bytes mean the same on both legs.
/// Not offered: compression, LOCAL INFILE, deprecated EOF, session
/// tracking, query attributes.
pub fn offered() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_NO_SCHEMA
        | CapabilityFlags::CLIENT_ODBC
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
}

/// The capabilities of turnout's own connections (catch-up at a writes
/// flip): no `db.table` quirks (CLIENT_NO_SCHEMA) or client-side modes.
pub fn own_caps() -> CapabilityFlags {
    offered()
        - CapabilityFlags::CLIENT_NO_SCHEMA
        - CapabilityFlags::CLIENT_ODBC
        - CapabilityFlags::CLIENT_IGNORE_SPACE
        - CapabilityFlags::CLIENT_FOUND_ROWS
        - CapabilityFlags::CLIENT_INTERACTIVE
}

/// Connects and authenticates to a MySQL backend as its configured user,
/// with the capabilities the client and the backend share, in database
/// `db`: the connection, the server's thread id for it, and its version.
pub async fn connect(
    target: &BackendTarget,
    client_caps: CapabilityFlags,
    collation: u8,
    db: &str,
) -> Result<(Packets, u32, String), String> {
    let work = async {
        let stream = open_plain(target).await.map_err(|e| e.to_string())?;
        let mut b = Packets::new(stream, 1 << 24);
        let (_, payload) = b.read().await.map_err(|e| e.to_string())?;
        if payload.first() == Some(&0xFF) {
            return Err(err_text(&payload));
        }
        let hello: HandshakePacket<'_> = ParseBuf(&payload)
            .parse(())
            .map_err(|e| format!("bad handshake: {e}"))?;
        let thread = hello.connection_id();
        let version = String::from_utf8_lossy(hello.server_version_ref()).into_owned();
        let mut caps = client_caps & offered() & hello.capabilities();
        // As the response will have them (a database and a plugin named,
        // no attributes): an SSLRequest must announce the same.
        caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        caps -= CapabilityFlags::CLIENT_CONNECT_ATTRS;
        let mut seq = 1;
        if let Some(tls) = &target.tls {
            if hello.capabilities().contains(CapabilityFlags::CLIENT_SSL) {
                // SSLRequest, the TLS handshake, then the response over TLS.
                caps |= CapabilityFlags::CLIENT_SSL;
                let mut ssl = Vec::new();
                SslRequest::new(caps, 1 << 24, collation).serialize(&mut ssl);
                seq = b.write(seq, &ssl).await.map_err(|e| e.to_string())?;
                let Packets {
                    stream: Stream::Plain(tcp),
                    ..
                } = b
                else {
                    return Err("TLS is for TCP connections, not local sockets".into());
                };
                let upgraded = tls_client(target, tls.clone(), tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                b = Packets::new(upgraded, 1 << 24);
            } else if target.tls_mode != BackendTlsMode::Prefer {
                return Err(
                    "the backend does not offer TLS, and backends.*.tls asks for it".into(),
                );
            }
        }
        let nonce = hello.nonce();
        let password = target.password.expose().as_bytes();
        let scrambled = scramble_native(&nonce, password).map(|s| s.to_vec());
        let response = HandshakeResponse::new(
            scrambled,
            (10, 11, 0),
            Some(target.user.as_bytes()),
            Some(db.as_bytes()),
            Some(AuthPlugin::MysqlNativePassword),
            caps,
            None,
            1 << 24,
        );
        let mut out = Vec::new();
        response.serialize(&mut out);
        // The client's character set, not the default.
        if out.len() > 8 {
            out[8] = collation;
        }
        seq = b.write(seq, &out).await.map_err(|e| e.to_string())?;
        loop {
            let (s, reply) = b.read().await.map_err(|e| e.to_string())?;
            match reply.first() {
                Some(0x00) => return Ok((b, thread, version)),
                Some(0xFF) => return Err(err_text(&reply)),
                Some(0xFE) => {
                    let switch: AuthSwitchRequest<'_> = ParseBuf(&reply)
                        .parse(())
                        .map_err(|e| format!("bad auth switch request: {e}"))?;
                    if switch.auth_plugin().as_bytes() != b"mysql_native_password" {
                        return Err(format!(
                            "the backend asks for {}; turnout authenticates to backends with mysql_native_password",
                            String::from_utf8_lossy(switch.auth_plugin().as_bytes())
                        ));
                    }
                    let data = switch.plugin_data();
                    let data = data.strip_suffix(&[0]).unwrap_or(data);
                    let answer = scramble_native(data, password)
                        .map(|s| s.to_vec())
                        .unwrap_or_default();
                    seq = b
                        .write(s.wrapping_add(1), &answer)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                _ => {
                    return Err(format!(
                        "unexpected answer to authentication (packet {seq})"
                    ))
                }
            }
        }
    };
    tokio::time::timeout(target.connect_timeout.max(Duration::from_millis(1)), work)
        .await
        .map_err(|_| format!("no answer within {} ms", target.connect_timeout.as_millis()))?
}

/// utf8mb4_general_ci, for turnout's own connections.
const COLLATION: u8 = 45;

/// A connection of turnout's own to `target` for simple queries (catalog
/// reads, catch-up), in the configured database: the connection and the
/// server's version.
pub async fn open_simple(target: &BackendTarget) -> Result<(Packets, String), QueryError> {
    let (conn, _, version) = connect(target, own_caps(), COLLATION, &target.database)
        .await
        .map_err(|e| QueryError::Login(format!("{}: {e}", target.side)))?;
    Ok((conn, version))
}

/// Runs `sql`; its rows as text (`None` for NULL) with their column names,
/// or its error.
pub async fn rows(conn: &mut Packets, sql: &str) -> Result<Rows, QueryError> {
    let broken = |e: &dyn std::fmt::Display| QueryError::Broken {
        side: None,
        detail: e.to_string(),
    };
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    conn.write(0, &p).await.map_err(|e| broken(&e))?;
    let a = response::read(conn, Expect::Result)
        .await
        .map_err(|e| broken(&e))?;
    if let Some(message) = a.error {
        return Err(QueryError::Refused {
            side: None,
            message,
        });
    }
    // Column count, definitions, EOF, rows, EOF.
    let Some((_, first)) = a.packets.first() else {
        return Ok(Rows::default());
    };
    if first.first() == Some(&0x00) {
        return Ok(Rows::default());
    }
    // A count the answer does not hold is refused, not trusted.
    let columns = lenenc(first)
        .and_then(|(n, _)| usize::try_from(n).ok())
        .unwrap_or(0);
    if columns >= a.packets.len() {
        return Err(QueryError::Malformed(
            "more columns announced than the answer holds".into(),
        ));
    }
    let names = a
        .packets
        .get(1..=columns)
        .unwrap_or_default()
        .iter()
        .map(|(_, def)| super::rows::my_column_name(def))
        .collect();
    let body = a
        .packets
        .get(columns + 2..a.packets.len().saturating_sub(1))
        .unwrap_or_default();
    let data = body.iter().map(|(_, row)| text_row(row, columns)).collect();
    Ok(Rows::new(names, data))
}

fn text_row(mut row: &[u8], columns: usize) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(columns);
    for _ in 0..columns {
        if row.first() == Some(&0xFB) {
            out.push(None);
            row = &row[1..];
            continue;
        }
        let Some((len, n)) = lenenc(row) else { break };
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| n.checked_add(l))
            .map_or(row.len(), |e| e.min(row.len()));
        out.push(Some(String::from_utf8_lossy(&row[n..end]).into_owned()));
        row = &row[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_decode_and_short_ones_do_not_panic() {
        assert_eq!(
            text_row(&[2, b'a', b'b', 0xFB, 1, b'7'], 3),
            vec![Some("ab".into()), None, Some("7".into())]
        );
        assert_eq!(text_row(&[5, b'a'], 2), vec![Some("a".into())]);
    }
}
