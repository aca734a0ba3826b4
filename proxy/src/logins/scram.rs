//! Server side of SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL speaks it,
//! without channel binding.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported by turnout")]
    ChannelBinding,
    #[error("SCRAM nonce mismatch")]
    Nonce,
    #[error("password authentication failed")]
    BadProof,
    #[error("invalid SCRAM verifier in the config")]
    BadVerifier,
}

/// What the server keeps of a password: PostgreSQL's SCRAM verifier.
#[derive(Clone)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// A secret drawn once per process: salts and mock keys derive from it.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut s);
        s
    })
}

/// The salt of a user name, stable for the process.
fn name_salt(user: &str) -> Vec<u8> {
    hmac(process_secret(), format!("salt:{user}").as_bytes())[..16].to_vec()
}

/// A number drawn from a user name, stable for the process (which
/// challenge an unknown name gets).
pub fn name_draw(user: &str) -> u64 {
    let h = hmac(process_secret(), format!("method:{user}").as_bytes());
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = {
        let mut first = salt.to_vec();
        first.extend_from_slice(&1u32.to_be_bytes());
        hmac(password, &first)
    };
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

impl Verifier {
    /// A verifier for a plain-text password with a fresh random salt.
    /// The verifier an unknown user is given, as PostgreSQL's mock
    /// authentication does: its salt derived from the name and a secret of
    /// this process (the same for every attempt, as a real user's is), its
    /// keys random-looking, and no key derivation done (a real user's
    /// verifier is ready too), so neither the salt nor the time tells an
    /// unknown user from a wrong password.
    pub fn mock(user: &str) -> Verifier {
        let secret = process_secret();
        let salt = name_salt(user);
        Verifier {
            iterations: ITERATIONS,
            salt,
            stored_key: hmac(secret, format!("stored:{user}").as_bytes()),
            server_key: hmac(secret, format!("server:{user}").as_bytes()),
        }
    }

    pub fn from_password(password: &str) -> Verifier {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::derive(password, salt, ITERATIONS)
    }

    /// A verifier for `user`'s plain-text password with the salt an unknown
    /// name of the same spelling would get: the same across reloads (a salt
    /// that changes at a reload for real users alone tells them apart).
    pub fn for_user(user: &str, password: &str) -> Verifier {
        Self::derive(password, name_salt(user), ITERATIONS)
    }

    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> Verifier {
        let salted = salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        Verifier {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Result<Verifier, ScramError> {
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::BadVerifier)?;
        let (iter_salt, keys) = rest.split_once('$').ok_or(ScramError::BadVerifier)?;
        let (iter, salt) = iter_salt.split_once(':').ok_or(ScramError::BadVerifier)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::BadVerifier)?;
        let key = |k: &str| -> Result<[u8; 32], ScramError> {
            B64.decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or(ScramError::BadVerifier)
        };
        Ok(Verifier {
            iterations: iter.parse().map_err(|_| ScramError::BadVerifier)?,
            salt: B64.decode(salt).map_err(|_| ScramError::BadVerifier)?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// One SCRAM exchange in progress.
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Handles the client-first message; returns the state and the server-first message.
pub fn server_first(verifier: &Verifier, client_first: &[u8]) -> Result<Exchange, ScramError> {
    let msg = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let bare = match msg.as_bytes().first() {
        Some(b'n') | Some(b'y') => {
            // gs2 header: "n,," or "y,," (optionally with an authzid we ignore).
            let mut parts = msg.splitn(3, ',');
            let _cb = parts.next();
            let _authzid = parts.next().ok_or(ScramError::Malformed("gs2 header"))?;
            parts.next().ok_or(ScramError::Malformed("gs2 header"))?
        }
        Some(b'p') => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("gs2 header")),
    };
    let client_nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or(ScramError::Malformed("client nonce"))?;
    let mut raw = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut raw);
    let nonce = format!("{client_nonce}{}", B64.encode(raw));
    let server_first = format!(
        "r={nonce},s={},i={}",
        B64.encode(&verifier.salt),
        verifier.iterations
    );
    Ok(Exchange {
        client_first_bare: bare.to_string(),
        server_first,
        nonce,
    })
}

impl Exchange {
    pub fn server_first_message(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message; returns the server-final message.
    pub fn finish(&self, verifier: &Verifier, client_final: &[u8]) -> Result<String, ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client proof"))?;
        let nonce = without_proof
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let binding = without_proof
            .split(',')
            .find_map(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("channel binding"))?;
        if binding != "biws" && binding != "eSws" {
            return Err(ScramError::ChannelBinding);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(ScramError::Malformed("client proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        // Compare without an early exit.
        let diff = stored
            .iter()
            .zip(verifier.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(verifier: &Verifier, password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let ex = server_first(verifier, client.message())?;
        client
            .update(ex.server_first_message().as_bytes())
            .map_err(|_| ScramError::Malformed("client rejected server-first"))?;
        let server_final = ex.finish(verifier, client.message())?;
        client
            .finish(server_final.as_bytes())
            .map_err(|_| ScramError::Malformed("client rejected server-final"))
    }

    #[test]
    fn real_client_authenticates_with_right_password_only() {
        let v = Verifier::from_password("s3cret");
        assert_eq!(run(&v, "s3cret"), Ok(()));
        assert_eq!(run(&v, "wrong"), Err(ScramError::BadProof));
    }

    #[test]
    fn postgres_verifier_string_is_understood() {
        let v = Verifier::derive("pw", b"0123456789abcdef".to_vec(), 4096);
        let text = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            v.iterations,
            B64.encode(&v.salt),
            B64.encode(v.stored_key),
            B64.encode(v.server_key)
        );
        let parsed = Verifier::parse(&text).unwrap();
        assert_eq!(run(&parsed, "pw"), Ok(()));
        assert!(Verifier::parse("SCRAM-SHA-256$x").is_err());
    }

    #[test]
    fn garbage_messages_are_errors_not_panics() {
        let v = Verifier::derive("pw", b"salt".to_vec(), 16);
        for m in [
            &b""[..],
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,,",
            b"\xff\xfe",
            b"x",
        ] {
            assert!(server_first(&v, m).is_err());
        }
        let ex = server_first(&v, b"n,,n=,r=abc").unwrap();
        for m in [&b""[..], b"c=biws,r=zzz,p=AAAA", b"p=", b"\xff"] {
            assert!(ex.finish(&v, m).is_err());
        }
    }
}
