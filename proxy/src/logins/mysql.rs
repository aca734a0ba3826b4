//! Client authentication for the MySQL listener: `mysql_native_password`
//! and `caching_sha2_password` (its fast path: turnout always holds the
//! verifier, so no full authentication is ever needed) checked against the
//! configured users.

use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::collections::HashMap;
use turnout_config::{AuthMethod, User};

pub const NATIVE: &[u8] = b"mysql_native_password";
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";

/// What turnout keeps to check one user's password: SHA1(SHA1(password)),
/// as MySQL's `mysql.user` stores it for `mysql_native_password` (`*` and
/// 40 hex digits in the config, or derived from a plain-text password),
/// and SHA256(SHA256(password)) for `caching_sha2_password` (plain text
/// only).
#[derive(Clone)]
pub struct Credential {
    stage2: [u8; 20],
    sha2: Option<[u8; 32]>,
    /// The plugin the user is asked for (`users.auth`), when set.
    preferred: Option<&'static [u8]>,
}

impl Credential {
    /// Whether turnout can check an answer made with `plugin`.
    pub fn accepts(&self, plugin: &[u8]) -> bool {
        match self.preferred {
            Some(p) => p == plugin,
            None => plugin == NATIVE || (plugin == CACHING_SHA2 && self.sha2.is_some()),
        }
    }

    /// The plugin to switch a client to when its first answer will not do.
    pub fn switch_to(&self) -> &'static [u8] {
        self.preferred.unwrap_or(NATIVE)
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[derive(Default)]
pub struct Users {
    by_name: HashMap<String, Credential>,
}

#[derive(Debug, thiserror::Error)]
#[error("users[{index}].password: {message}")]
pub struct UsersError {
    pub index: usize,
    pub message: String,
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

impl Users {
    pub fn from_config(users: &[User]) -> Result<Users, UsersError> {
        let mut by_name = HashMap::new();
        for (index, u) in users.iter().enumerate() {
            let pw = u.password.expose();
            let hashed = pw.starts_with('*') && pw.len() == 41;
            let stage2 = match pw.strip_prefix('*') {
                Some(hex) if hex.len() == 40 => {
                    let mut out = [0u8; 20];
                    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
                        let text = std::str::from_utf8(chunk).unwrap_or("zz");
                        out[i] = u8::from_str_radix(text, 16).map_err(|_| UsersError {
                            index,
                            message: "a MySQL password hash is * and 40 hex digits".into(),
                        })?;
                    }
                    out
                }
                _ if pw.starts_with("SCRAM-SHA-256$") || pw.starts_with("md5") && pw.len() == 35 => {
                    return Err(UsersError {
                        index,
                        message: "a PostgreSQL verifier cannot check MySQL logins: give the password in plain text or as MySQL's *hash".into(),
                    })
                }
                _ => sha1(&[&sha1(&[pw.as_bytes()])]),
            };
            let preferred = match u.auth {
                AuthMethod::MysqlNativePassword => Some(NATIVE),
                AuthMethod::CachingSha2Password => Some(CACHING_SHA2),
                _ => None,
            };
            let sha2 = (!hashed).then(|| sha256(&[&sha256(&[pw.as_bytes()])]));
            if preferred == Some(CACHING_SHA2) && sha2.is_none() {
                return Err(UsersError {
                    index,
                    message: "caching_sha2_password needs the plain password".into(),
                });
            }
            by_name.insert(
                u.name.clone(),
                Credential {
                    stage2,
                    sha2,
                    preferred,
                },
            );
        }
        Ok(Users { by_name })
    }

    pub fn get(&self, user: &str) -> Option<&Credential> {
        self.by_name.get(user)
    }

    /// Checks an answer to `nonce` made with `plugin`. Unknown users and
    /// wrong passwords are alike to the caller.
    pub fn check(&self, user: &str, plugin: &[u8], nonce: &[u8], answer: &[u8]) -> bool {
        match plugin {
            NATIVE => self.check_native(user, nonce, answer),
            CACHING_SHA2 => self.check_sha2(user, nonce, answer),
            _ => false,
        }
    }

    /// `caching_sha2_password`'s fast path: answer = SHA256(pw) XOR
    /// SHA256(SHA256(SHA256(pw)), nonce); SHA256(SHA256(pw)) must match.
    fn check_sha2(&self, user: &str, nonce: &[u8], answer: &[u8]) -> bool {
        let Some(stored) = self.by_name.get(user).and_then(|c| c.sha2) else {
            return false;
        };
        if answer.len() != 32 {
            return false;
        }
        let mask = sha256(&[&stored, nonce]);
        let mut stage1 = [0u8; 32];
        for i in 0..32 {
            stage1[i] = answer[i] ^ mask[i];
        }
        sha256(&[&stage1])
            .iter()
            .zip(stored.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    fn check_native(&self, user: &str, nonce: &[u8], answer: &[u8]) -> bool {
        let Some(c) = self.by_name.get(user) else {
            return false;
        };
        if answer.len() != 20 {
            return false;
        }
        // answer = SHA1(pw) XOR SHA1(nonce, stage2); SHA1(SHA1(pw)) must be stage2.
        let mask = sha1(&[nonce, &c.stage2]);
        let mut stage1 = [0u8; 20];
        for i in 0..20 {
            stage1[i] = answer[i] ^ mask[i];
        }
        let candidate = sha1(&[&stage1]);
        // Constant time.
        candidate
            .iter()
            .zip(c.stage2.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A fresh 20-byte nonce of printable characters, as MySQL servers send.
pub fn nonce() -> [u8; 20] {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut out = [0u8; 20];
    for b in &mut out {
        *b = rng.gen_range(0x21..0x7F);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnout_config::{AuthMethod, Secret};

    fn user(name: &str, pw: &str) -> User {
        User {
            name: name.into(),
            password: Secret::new(pw),
            auth: AuthMethod::default(),
            backend_user: None,
            backend_password: None,
        }
    }

    #[test]
    fn native_answers_check_against_plain_and_hashed_passwords() {
        let n = nonce();
        let answer = mysql_common::scramble::scramble_native(&n, b"s3cret").unwrap();
        // SELECT PASSWORD('s3cret')
        let hash = format!(
            "*{}",
            sha1(&[&sha1(&[b"s3cret"])])
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        );
        let users = Users::from_config(&[user("a", "s3cret"), user("b", &hash)]).unwrap();
        let sha2 = mysql_common::scramble::scramble_sha256(&n, b"s3cret").unwrap();
        assert!(users.check("a", CACHING_SHA2, &n, &sha2));
        assert!(
            !users.check("b", CACHING_SHA2, &n, &sha2),
            "no SHA-256 verifier from a hash"
        );
        assert!(!users.check("a", b"dialog", &n, &answer));
        assert!(users.check_native("a", &n, &answer));
        assert!(users.check_native("b", &n, &answer));
        assert!(!users.check_native("a", &nonce(), &answer));
        assert!(!users.check_native("nobody", &n, &answer));
        assert!(!users.check_native("a", &n, &answer[..19]));
        assert!(
            Users::from_config(&[user("c", "*XYZ")]).is_ok(),
            "not a hash: a password"
        );
        assert!(Users::from_config(&[user("d", &format!("*{}", "G".repeat(40)))]).is_err());
    }
}
