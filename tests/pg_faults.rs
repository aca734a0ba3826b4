//! Bad input and dead backends: clients get a clear error, turnout and every
//! other session go on.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio_postgres::NoTls;

/// Reads everything the proxy sends until it closes (or 5 s pass).
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn startup(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for s in ["user", user, "database", "app", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("frame header");
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).expect("frame body");
    (head[0], body)
}

/// A raw connection logged in as the md5 user, after its first ReadyForQuery.
fn logged_in(setup: &Setup) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", setup.proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&startup("md5user")).unwrap();
    let (tag, body) = read_frame(&mut s);
    assert_eq!((tag, &body[..4]), (b'R', &5i32.to_be_bytes()[..]));
    let salt = [body[4], body[5], body[6], body[7]];
    let hash =
        postgres_protocol::authentication::md5_hash(b"md5user", MD5_PASSWORD.as_bytes(), salt);
    let mut msg = vec![b'p'];
    msg.extend_from_slice(&((hash.len() + 5) as u32).to_be_bytes());
    msg.extend_from_slice(hash.as_bytes());
    msg.push(0);
    s.write_all(&msg).unwrap();
    loop {
        let (tag, _) = read_frame(&mut s);
        assert_ne!(tag, b'E', "login failed");
        if tag == b'Z' {
            return s;
        }
    }
}

fn error_text(bytes: &[u8]) -> String {
    assert_eq!(
        bytes.first(),
        Some(&b'E'),
        "expected an ErrorResponse, got {bytes:?}"
    );
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_still_serving(s: &mut Setup) {
    assert!(
        s.proxy.is_running(),
        "turnout exited:\n{}",
        s.proxy.log_text()
    );
    let out = s.psql(&s.app_url(), &["-c", "SELECT 'alive'"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alive");
}

#[test]
fn malformed_startup_packets_get_an_error_and_a_closed_connection() {
    let mut s = Setup::start(Options::default());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "startup packet",
        ),
        (
            "a 2 GB length",
            [&0x7fff_ffffu32.to_be_bytes()[..], &[0u8; 8]].concat(),
            "startup packet of 2147483647 bytes",
        ),
        (
            "protocol 9.9",
            [
                &12u32.to_be_bytes()[..],
                &0x0009_0009u32.to_be_bytes(),
                b"\0\0\0\0",
            ]
            .concat(),
            "unsupported frontend protocol 9.9",
        ),
        (
            "no terminator",
            [
                &13u32.to_be_bytes()[..],
                &196_608u32.to_be_bytes(),
                b"user\0",
            ]
            .concat(),
            "invalid startup packet layout",
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut c = TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
        c.write_all(&bytes).unwrap();
        let text = error_text(&read_all(&mut c));
        assert!(text.contains(expected), "{what}: {text}");
        println!("{what}: turnout answered {text:?}");
    }
    // A truncated packet and a silent client: closed by the auth timeout.
    let mut c = TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    c.write_all(&[0, 0, 0, 40, 0, 3]).unwrap();
    assert!(read_all(&mut c).is_empty());
    assert_still_serving(&mut s);
}

#[test]
fn gssenc_request_is_declined_and_startup_goes_on() {
    let s = Setup::start(Options::default());
    let mut c = TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    c.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).unwrap();
    let mut answer = [0u8; 1];
    c.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"N");
    c.write_all(&startup("app")).unwrap();
    let (tag, body) = read_frame(&mut c);
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "SCRAM offered");
}

#[test]
fn malformed_messages_after_login_get_an_error_and_others_go_on() {
    let mut s = Setup::start(Options {
        max_message_size: Some(1 << 20),
        ..Options::default()
    });
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a 2 GB query",
            [&b"Q"[..], &0x7fff_ffffu32.to_be_bytes()].concat(),
            "exceeds the limit of 1048576 bytes",
        ),
        (
            "an unknown message type",
            [&b"z"[..], &4u32.to_be_bytes()].concat(),
            "unexpected message type 'z'",
        ),
        (
            "a password message out of order",
            [&b"p"[..], &9u32.to_be_bytes(), b"pass\0"].concat(),
            "unexpected message type 'p'",
        ),
        (
            "a length below 4",
            [&b"Q"[..], &2u32.to_be_bytes()].concat(),
            "invalid message length 2",
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut c = logged_in(&s);
        c.write_all(&bytes).unwrap();
        let text = error_text(&read_all(&mut c));
        assert!(text.contains(expected), "{what}: {text}");
        println!("{what}: turnout answered {text:?}");
    }
    // A message cut short, then the client vanishes.
    let mut c = logged_in(&s);
    c.write_all(&[b'Q', 0, 0, 0, 100, b'S', b'E']).unwrap();
    drop(c);
    assert_still_serving(&mut s);
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_garbage_never_takes_turnout_down() {
    let mut s = Setup::start(Options::default());
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    for round in 0..120 {
        let mut c = if round % 2 == 0 {
            TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap()
        } else {
            logged_in(&s)
        };
        let len = (rng.next() % 2048) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 4 == 1 && !bytes.is_empty() {
            // Start with a plausible tag so the length path is exercised.
            bytes[0] = b"QPBEDSCHXdcf"[(rng.next() % 12) as usize];
        }
        let _ = c.write_all(&bytes);
        let _ = c.shutdown(std::net::Shutdown::Write);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut sink = [0u8; 4096];
        while let Ok(n) = c.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
    assert_still_serving(&mut s);
    assert!(!s.proxy.log_text().contains("panicked"));
}

#[test]
fn a_dead_backend_is_a_clear_fatal_error_and_turnout_recovers() {
    let mut s = Setup::start(Options::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&s.app_url(), NoTls))
        .unwrap();
    let driver = rt.spawn(conn);
    rt.block_on(client.simple_query("SELECT 1")).unwrap();

    s.old.kill().unwrap();
    // The open session sees an error, not a hang.
    let err = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await
        })
        .expect("answer within 10 s")
        .unwrap_err();
    println!("open session after the backend died: {err}");
    let _ = rt.block_on(driver);

    // A new client gets turnout's FATAL naming the backend.
    let out = s.psql(&s.app_url(), &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("FATAL:  turnout: cannot connect to backend old (127.0.0.1:"),
        "{msg}"
    );
    println!("new client while the backend is down: {msg}");
    assert!(s.proxy.is_running());

    s.old.restart().unwrap();
    assert_still_serving(&mut s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_right_backend() {
    let s = tokio::task::spawn_blocking(|| Setup::start(Options::default()))
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(&s.app_url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let (other, conn2) = tokio_postgres::connect(&s.app_url(), NoTls).await.unwrap();
    tokio::spawn(conn2);
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.expect("send cancel");
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The other session was not cancelled.
    let row = other
        .query_one("SELECT 'untouched'::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "untouched");
}

#[test]
fn connections_over_the_limit_are_refused_with_a_clear_error() {
    let s = Setup::start(Options {
        max_clients: Some(2),
        ..Options::default()
    });
    let a = logged_in(&s);
    let b = logged_in(&s);
    let out = s.psql(&s.app_url(), &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("too many clients"),
        "{}",
        stderr(&out)
    );
    drop((a, b));
    std::thread::sleep(Duration::from_millis(300));
    let out = s.psql(&s.app_url(), &["-c", "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
