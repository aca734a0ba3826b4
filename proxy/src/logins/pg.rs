//! PostgreSQL clients' logins: each configured user's SCRAM-SHA-256
//! verifier or md5 hash, computed once from the config.

use super::scram::Verifier;
use md5::{Digest, Md5};
use std::collections::HashMap;
use turnout_config::{AuthMethod, User};

/// What turnout keeps to check one user's password.
#[derive(Clone)]
pub enum Credential {
    Scram(Verifier),
    /// `md5(password || user)` in hex, as PostgreSQL stores it.
    Md5(String),
}

/// Configured users by name, with their verifiers computed once.
#[derive(Clone, Default)]
pub struct UserTable {
    users: HashMap<String, Credential>,
    /// How many of them use md5 (the share unknown names are given).
    md5: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("users[{index}].password: {message}")]
pub struct UserTableError {
    pub index: usize,
    pub message: String,
}

pub fn md5_hex(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl UserTable {
    pub fn from_config(users: &[User]) -> Result<Self, UserTableError> {
        let mut table = HashMap::new();
        for (index, u) in users.iter().enumerate() {
            let pw = u.password.expose();
            let cred = match u.auth {
                AuthMethod::ScramSha256 if pw.starts_with("SCRAM-SHA-256$") => {
                    Credential::Scram(Verifier::parse(pw).map_err(|e| UserTableError {
                        index,
                        message: e.to_string(),
                    })?)
                }
                AuthMethod::ScramSha256 => Credential::Scram(Verifier::for_user(&u.name, pw)),
                AuthMethod::Md5 if pw.len() == 35 && pw.starts_with("md5") => {
                    Credential::Md5(pw[3..].to_ascii_lowercase())
                }
                AuthMethod::Md5 => {
                    let mut data = pw.as_bytes().to_vec();
                    data.extend_from_slice(u.name.as_bytes());
                    Credential::Md5(md5_hex(&data))
                }
                AuthMethod::MysqlNativePassword | AuthMethod::CachingSha2Password => {
                    return Err(UserTableError {
                        index,
                        message: "mysql_native_password and caching_sha2_password are for protocol = \"mysql\"".into(),
                    })
                }
            };
            table.insert(u.name.clone(), cred);
        }
        let md5 = table
            .values()
            .filter(|c| matches!(c, Credential::Md5(_)))
            .count() as u64;
        Ok(UserTable { users: table, md5 })
    }

    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.users.get(name)
    }

    /// What an unknown name is challenged with: md5 or SCRAM, drawn from
    /// the name (the same each time) in the proportion the configured
    /// users have, so the challenge does not tell a name turnout knows from
    /// one it does not. Its exchange cannot succeed.
    pub fn unknown(&self, name: &str) -> Credential {
        let all = self.users.len() as u64;
        if self.md5 > 0 && super::scram::name_draw(name) % all < self.md5 {
            // A hash no password gives (not hex).
            Credential::Md5("-".repeat(32))
        } else {
            Credential::Scram(Verifier::mock(name))
        }
    }
}
