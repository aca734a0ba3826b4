//! Authenticating clients against the configured users (SCRAM-SHA-256, md5).

use super::codec::{self, Severity};
use super::startup::{read_client_frame, SessionError};
pub use crate::logins::pg::{md5_hex, Credential, UserTable, UserTableError};
use crate::logins::scram;
use crate::stream::Stream;
use bytes::Buf;
use rand::RngCore;
use tokio::io::AsyncWriteExt;

fn auth_failed(user: &str) -> SessionError {
    SessionError::Client {
        severity: Severity::Fatal,
        code: "28P01",
        message: format!("password authentication failed for user \"{user}\""),
    }
}

/// Runs the authentication exchange. On success nothing has been sent after
/// the final SASL message: the caller sends AuthenticationOk.
pub async fn authenticate(
    stream: &mut Stream,
    users: &UserTable,
    user: &str,
    max_message: usize,
) -> Result<(), SessionError> {
    // An unknown user goes through a SCRAM exchange that cannot succeed, so a
    // client cannot tell unknown users from wrong passwords.
    let unknown;
    let cred = match users.get(user) {
        Some(c) => c,
        None => {
            unknown = users.unknown(user);
            &unknown
        }
    };
    match cred {
        Credential::Scram(verifier) => {
            stream
                .write_all(&codec::auth_request(10, b"SCRAM-SHA-256\0\0"))
                .await?;
            let body = expect_password_message(stream, max_message).await?;
            let (mechanism, rest) = split_cstr(&body).ok_or_else(malformed)?;
            if mechanism != b"SCRAM-SHA-256" {
                return Err(SessionError::Client {
                    severity: Severity::Fatal,
                    code: "28000",
                    message: format!(
                        "SASL mechanism {:?} is not supported; use SCRAM-SHA-256",
                        String::from_utf8_lossy(mechanism)
                    ),
                });
            }
            let mut rest = rest;
            if rest.len() < 4 {
                return Err(malformed());
            }
            let len = rest.get_i32();
            if len < 0 || len as usize != rest.len() {
                return Err(malformed());
            }
            let exchange = scram::server_first(verifier, rest).map_err(scram_error)?;
            stream
                .write_all(&codec::auth_request(
                    11,
                    exchange.server_first_message().as_bytes(),
                ))
                .await?;
            let body = expect_password_message(stream, max_message).await?;
            let server_final = exchange.finish(verifier, &body).map_err(|e| match e {
                scram::ScramError::BadProof | scram::ScramError::Nonce => auth_failed(user),
                other => scram_error(other),
            })?;
            if users.get(user).is_none() {
                return Err(auth_failed(user));
            }
            stream
                .write_all(&codec::auth_request(12, server_final.as_bytes()))
                .await?;
            Ok(())
        }
        Credential::Md5(inner) => {
            let mut salt = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut salt);
            stream.write_all(&codec::auth_request(5, &salt)).await?;
            let body = expect_password_message(stream, max_message).await?;
            let (given, _) = split_cstr(&body).ok_or_else(malformed)?;
            let mut data = inner.as_bytes().to_vec();
            data.extend_from_slice(&salt);
            let expected = format!("md5{}", md5_hex(&data));
            // An unknown name's exchange never succeeds, whatever is sent.
            if given != expected.as_bytes() || users.get(user).is_none() {
                return Err(auth_failed(user));
            }
            Ok(())
        }
    }
}

fn malformed() -> SessionError {
    SessionError::Client {
        severity: Severity::Fatal,
        code: "08P01",
        message: "malformed authentication message".into(),
    }
}

fn scram_error(e: scram::ScramError) -> SessionError {
    SessionError::Client {
        severity: Severity::Fatal,
        code: "28000",
        message: e.to_string(),
    }
}

fn split_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

async fn expect_password_message(
    stream: &mut Stream,
    max_message: usize,
) -> Result<bytes::Bytes, SessionError> {
    let (tag, body) = read_client_frame(stream, max_message.min(64 * 1024)).await?;
    if tag != b'p' {
        return Err(SessionError::Client {
            severity: Severity::Fatal,
            code: "08P01",
            message: format!(
                "expected a password message, got message type {}",
                codec::tag_name(tag)
            ),
        });
    }
    Ok(body)
}
