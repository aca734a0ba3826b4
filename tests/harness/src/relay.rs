//! A fault-injecting TCP relay for the tests: put between turnout and a
//! backend, it passes bytes through until told to delay them, stall them,
//! cut every connection (FIN), reset them (RST) or refuse new ones.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does to traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass as they come.
    Pass,
    /// Each chunk waits this long before it is passed on.
    Delay(Duration),
    /// Nothing passes (connections stay open) until told otherwise.
    Stall,
    /// New connections are closed at once; open ones go on.
    Refuse,
}

struct State {
    fault: Fault,
    /// Both ends of every open connection.
    conns: Vec<(TcpStream, TcpStream)>,
}

/// A relay on 127.0.0.1 in front of `127.0.0.1:target`.
pub struct FaultRelay {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultRelay {
    pub fn start(target: u16) -> std::io::Result<FaultRelay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            fault: Fault::Pass,
            conns: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if sp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                if lock(&st).fault == Fault::Refuse {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    lock(&st).conns.push((c, s));
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    if let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) {
                        let st = st.clone();
                        std::thread::spawn(move || pump(from, to, st));
                    }
                }
            }
        });
        Ok(FaultRelay { port, state, stop })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set(&self, fault: Fault) {
        lock(&self.state).fault = fault;
    }

    /// Closes every open connection both ways (FIN); the relay goes on
    /// accepting new ones.
    pub fn cut(&self) -> usize {
        let conns = std::mem::take(&mut lock(&self.state).conns);
        for (c, s) in &conns {
            let _ = c.shutdown(Shutdown::Both);
            let _ = s.shutdown(Shutdown::Both);
        }
        conns.len()
    }

    /// Resets every open connection (RST to both peers).
    pub fn reset(&self) -> usize {
        let conns = std::mem::take(&mut lock(&self.state).conns);
        let n = conns.len();
        for (c, s) in &conns {
            for stream in [c, s] {
                let sock = socket2::SockRef::from(stream);
                let _ = sock.set_linger(Some(Duration::ZERO));
                let _ = stream.shutdown(Shutdown::Read);
            }
        }
        // Dropping the last handles with a zero linger sends the RST.
        drop(conns);
        n
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            let fault = lock(&state).fault;
            match fault {
                Fault::Stall => std::thread::sleep(Duration::from_millis(20)),
                Fault::Delay(d) => {
                    std::thread::sleep(d);
                    break;
                }
                Fault::Pass | Fault::Refuse => break,
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
