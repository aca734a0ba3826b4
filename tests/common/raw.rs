//! A bare PostgreSQL frontend for tests that send messages no driver
//! sends (any grouping of the extended protocol, a batch without a Sync).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A bare frontend: whole messages out, whole messages in.
pub struct Raw {
    pub s: TcpStream,
    /// Answered messages sent since the last read (for a Flush that waits).
    pub pending: usize,
    /// The backend failed a message: it skips to the Sync.
    pub errored: bool,
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

/// A Parse message naming `sql` `name`, with no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'P', &b)
}

impl Raw {
    /// A connection that has sent its startup message (`user`, database
    /// `app`) and nothing else.
    pub fn start(port: u16, user: &str) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut body = 196608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", "app")] {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut start = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        start.extend_from_slice(&body);
        s.write_all(&start).unwrap();
        Raw {
            s,
            pending: 0,
            errored: false,
        }
    }

    /// A logged-in connection (md5 or no password).
    pub fn connect(port: u16, user: &str, password: &str) -> Raw {
        let mut raw = Raw::start(port, user);
        loop {
            let (tag, body) = raw.read();
            match tag {
                b'R' => match u32::from_be_bytes(body[..4].try_into().unwrap()) {
                    0 => {}
                    5 => {
                        let salt = body[4..8].try_into().unwrap();
                        let hash = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            password.as_bytes(),
                            salt,
                        );
                        let mut b = Vec::new();
                        cstr(&mut b, &hash);
                        raw.s.write_all(&msg(b'p', &b)).unwrap();
                    }
                    other => panic!("authentication method {other} not handled"),
                },
                b'E' => panic!("login refused: {}", String::from_utf8_lossy(&body)),
                b'Z' => return raw,
                _ => {}
            }
        }
    }

    pub fn read(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        self.s
            .read_exact(&mut head)
            .expect("a reply (a hang or a closed connection is a failure)");
        let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0; len - 4];
        self.s.read_exact(&mut body).unwrap();
        (head[0], body)
    }

    /// Reads what the backend answers up to a ReadyForQuery (`sync`) or to
    /// the answers of the messages sent so far (a Flush), as comparable text.
    pub fn replies(&mut self, sync: bool, out: &mut Vec<String>) {
        loop {
            if !sync && (self.errored || self.pending == 0) {
                return;
            }
            let (tag, body) = self.read();
            if matches!(tag, b'1' | b'2' | b'3' | b'T' | b'n' | b'C' | b'I' | b's') && !self.errored
            {
                self.pending = self.pending.saturating_sub(1);
            }
            match tag {
                b'Z' => {
                    out.push(format!("Z {}", body[0] as char));
                    self.pending = 0;
                    self.errored = false;
                    return;
                }
                b'E' | b'N' => {
                    if tag == b'E' {
                        self.errored = true;
                    }
                    out.push(format!("{} {}", tag as char, field(&body, b'C')));
                }
                b'C' => out.push(format!("C {}", String::from_utf8_lossy(&body))),
                b'D' => out.push(format!("D {:?}", body)),
                // Column names only: table OIDs differ between the runs.
                b'T' => out.push(format!("T {}", row_names(&body))),
                b'S' | b'K' => {}
                other => out.push((other as char).to_string()),
            }
        }
    }
}

pub fn field(body: &[u8], code: u8) -> String {
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&code))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

pub fn row_names(body: &[u8]) -> String {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut names = Vec::new();
    for _ in 0..n {
        let end = at + body[at..].iter().position(|&b| b == 0).unwrap();
        names.push(String::from_utf8_lossy(&body[at..end]).into_owned());
        at = end + 1 + 18;
    }
    names.join(",")
}

/// The authentication request turnout answers a startup of `user` with
/// (5: md5, 10: SCRAM), and the SCRAM salt when it is SCRAM.
pub fn challenge(port: u16, user: &str) -> (u32, Option<String>) {
    let mut raw = Raw::start(port, user);
    let (_, rest) = raw.read();
    let code = u32::from_be_bytes(rest[..4].try_into().unwrap());
    if code != 10 {
        return (code, None);
    }
    let first = b"n,,n=,r=abcdefghijklmnopqrstuvwx";
    let mut m = b"SCRAM-SHA-256\0".to_vec();
    m.extend_from_slice(&(first.len() as u32).to_be_bytes());
    m.extend_from_slice(first);
    raw.s.write_all(&msg(b'p', &m)).unwrap();
    let (_, rest) = raw.read();
    let text = String::from_utf8_lossy(&rest[4..]).into_owned();
    let salt = text
        .split(',')
        .find_map(|p| p.strip_prefix("s="))
        .map(str::to_string);
    (code, salt)
}
