// SPDX-License-Identifier: GPL-2.0-or-later
//! Socket chardevs that change their connection in the monitor I/O
//! thread while the main loop uses them: a monitor added and removed on
//! every kind of socket chardev, with peers that come and go, and
//! query-chardev while clients connect.  After every round the
//! manager's own connection must answer, and QEMU must not have died;
//! at the end it must exit cleanly having printed nothing (no GLib
//! warning either).

mod common;

use std::{
    io::{ErrorKind, Write},
    net::{TcpListener, TcpStream},
    os::{
        fd::OwnedFd,
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{join_timeout, seed, Endpoint, Qemu, Qmp, Rng};
use serde_json::{json, Value};

/// Rounds per chardev kind, on every build (`QMH_SCALE` does not apply;
/// `QMH_CHARDEV_ROUNDS=N` for another number).  The reconnecting client
/// aborted QEMU within 5 to 110 rounds before its fix (three seeds of
/// three), and the wrong-peer hand-off needs a client to come and go in
/// between.
const ROUNDS: usize = 1000;

fn rounds() -> usize {
    std::env::var("QMH_CHARDEV_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}

/// Where a [`DroppingServer`] listens.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Listener::Unix(l) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        }
    }

    fn accept(&self) -> std::io::Result<OwnedFd> {
        match self {
            Listener::Unix(l) => l.accept().map(|(c, _)| c.into()),
            Listener::Tcp(l) => l.accept().map(|(c, _)| c.into()),
        }
    }
}

/// A socket server that accepts every connection and drops it, at
/// once or after up to `hold`, until the value is dropped: the peer of
/// a reconnecting client chardev that keeps losing its connection.  A
/// connection held a while keeps a TLS client's handshake in flight.
struct DroppingServer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl DroppingServer {
    fn start(listener: Listener, hold: Duration, seed: u64) -> Self {
        listener.set_nonblocking().expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut held: Vec<(OwnedFd, Instant)> = Vec::new();
            let mut accepted = 0;
            while !flag.load(Ordering::Relaxed) {
                held.retain(|(_, until)| Instant::now() < *until);
                match listener.accept() {
                    Ok(conn) => {
                        accepted += 1;
                        let us = rng.below(hold.as_micros() as usize + 1) as u64;
                        held.push((conn, Instant::now() + Duration::from_micros(us)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            accepted
        });
        DroppingServer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("running");
        join_timeout(thread, Duration::from_secs(10), "the dropping server")
            .expect("the dropping server")
    }
}

/// The manager's connection answers: QEMU is up and its main loop runs.
fn manager_alive(qemu: &mut Qemu, round: usize) {
    let rsp = qemu.mgr.call(json!({"execute": "query-name", "id": round}));
    assert_eq!(rsp, json!({"return": {}, "id": round}), "round {round}");
}

/// Where a client chardev connects to.
#[derive(Clone)]
enum Peer {
    Unix(PathBuf),
    /// A TCP port on 127.0.0.1, spoken to with TLS credentials `creds`.
    Tls {
        port: u16,
        creds: &'static str,
    },
}

/// A chardev-add backend of a socket client.
fn client_chardev(id: &str, peer: &Peer, reconnect_ms: Option<u64>) -> Value {
    let mut data = match peer {
        Peer::Unix(path) => json!({"addr": {"type": "unix", "data": {"path": path}},
                                   "server": false}),
        Peer::Tls { port, creds } => {
            json!({"addr": {"type": "inet",
                            "data": {"host": "127.0.0.1", "port": port.to_string()}},
                   "server": false, "tls-creds": creds})
        }
    };
    if let Some(ms) = reconnect_ms {
        data["reconnect-ms"] = json!(ms);
    }
    json!({"id": id, "backend": {"type": "socket", "data": data}})
}

/// The longest random waits of a round, in microseconds.
#[derive(Clone, Copy)]
struct Waits {
    before_remove_us: usize,
    before_chardev_remove_us: usize,
}

/// Long enough for a 20 ms reconnect to happen in between, or not.
const RECONNECT_WAITS: Waits = Waits {
    before_remove_us: 20_000,
    before_chardev_remove_us: 10_000,
};

/// Enough for a client to connect or leave in between, or not.
const SHORT_WAITS: Waits = Waits {
    before_remove_us: 3_000,
    before_chardev_remove_us: 2_000,
};

/// Add a monitor, wait, remove it, wait, remove the chardev: `add`
/// makes the chardev of the given id, `between` may connect a client
/// meanwhile.  Each round has a chardev id of its own: a chardev whose
/// connect is in flight outlives chardev-remove until the connect
/// ends, and until then its id's yank instance is taken (QEMU's own
/// behaviour, monitors or not).
fn churn(
    qemu: &mut Qemu,
    rng: &mut Rng,
    waits: Waits,
    add: impl Fn(&mut Qemu, &str),
    mut between: impl FnMut(&mut Qemu, &str, &mut Rng),
) {
    for round in 0..rounds() {
        let chr = format!("c{round}");
        add(qemu, &chr);
        qemu.monitor_add("m", &chr);
        between(qemu, &chr, rng);
        thread::sleep(Duration::from_micros(
            rng.below(waits.before_remove_us) as u64
        ));
        qemu.monitor_remove("m");
        thread::sleep(Duration::from_micros(
            rng.below(waits.before_chardev_remove_us) as u64,
        ));
        qemu.mgr.ok("chardev-remove", json!({"id": chr}));
        manager_alive(qemu, round);
    }
}

/// A QEMU whose socket chardevs log each TLS handshake they move to
/// another context (trace point `chr_socket_tls_handshake_move`) to
/// `log`, so that a test can tell that its churn caught handshakes in
/// flight, not only chardevs before or after one.
fn start_tls_traced(log: &Path) -> Qemu {
    let log = log.display().to_string();
    Qemu::start_quiet(&["-trace", "chr_socket_tls_handshake_move", "-D", &log])
}

/// How many TLS handshakes the QEMU of [`start_tls_traced`] moved.
fn moved_handshakes(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("chr_socket_tls_handshake_move"))
        .count()
}

/// How a client chardev's server behaves.
struct Server {
    tls: bool,
    reconnect_ms: Option<u64>,
    hold: Duration,
}

/// A client socket chardev whose server drops every connection,
/// churned as [`churn`] does.
fn churn_client_socket(test: &str, default_seed: u64, server: Server, waits: Waits) {
    let seed = seed(test, default_seed);
    let mut rng = Rng::new(seed);
    let trace = common::temp_dir().join("trace.log");
    let mut qemu = if server.tls {
        start_tls_traced(&trace)
    } else {
        Qemu::start_quiet(&[])
    };
    let (listener, peer) = if server.tls {
        qemu.add_tls_creds("tls0", Endpoint::Client);
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("port").port();
        (
            Listener::Tcp(l),
            Peer::Tls {
                port,
                creds: "tls0",
            },
        )
    } else {
        let path = qemu.dir.join("dropper.sock");
        let l = UnixListener::bind(&path).expect("bind");
        (Listener::Unix(l), Peer::Unix(path))
    };
    let dropper = DroppingServer::start(listener, server.hold, seed);
    churn(
        &mut qemu,
        &mut rng,
        waits,
        |q, chr| {
            let backend = client_chardev(chr, &peer, server.reconnect_ms);
            q.mgr.ok("chardev-add", backend);
        },
        |_, _, _| {},
    );
    assert!(dropper.stop() > 0, "the chardev never connected");
    qemu.quit_quietly();
    if server.tls {
        let moved = moved_handshakes(&trace);
        assert!(moved > 0, "no removal found a TLS handshake in flight");
        eprintln!("{test}: {moved} TLS handshakes moved");
    }
}

/// A client socket with reconnect-ms whose server drops every
/// connection: the chardev reconnects from the monitor I/O thread while
/// the removal moves it to the main loop.  Before the fix the manager's
/// connection got EOF in the middle of monitor-remove (the hand-off
/// took another connection's fd) and QEMU aborted.
#[test]
fn a_reconnecting_client_socket_is_removed_cleanly() {
    let server = Server {
        tls: false,
        reconnect_ms: Some(20),
        hold: Duration::ZERO,
    };
    churn_client_socket("reconnecting client", 25, server, RECONNECT_WAITS);
}

/// The same without reconnect-ms: one connection, dropped at once.
#[test]
fn a_client_socket_dropped_by_its_server_is_removed_cleanly() {
    let server = Server {
        tls: false,
        reconnect_ms: None,
        hold: Duration::ZERO,
    };
    churn_client_socket("client socket", 26, server, SHORT_WAITS);
}

/// A TLS client socket with reconnect-ms whose server holds each
/// connection up to 5 ms without answering the TLS client hello, then
/// drops it: the removal finds the chardev reconnecting, connecting or
/// in the middle of its TLS handshake, which it must move to the main
/// loop with the rest.
#[test]
fn a_reconnecting_tls_client_socket_is_removed_cleanly() {
    let server = Server {
        tls: true,
        reconnect_ms: Some(20),
        hold: Duration::from_millis(5),
    };
    churn_client_socket("reconnecting tls client", 29, server, RECONNECT_WAITS);
}

/// A listening socket whose clients connect and leave at random around
/// the removal: a client that connects after the removal must never get
/// the bytes owed to an earlier one, nor lose its connection to it.
#[test]
fn a_listening_socket_with_clients_coming_and_going_is_removed_cleanly() {
    let mut rng = Rng::new(seed("listening socket", 27));
    let mut qemu = Qemu::start_quiet(&[]);
    let held = std::cell::RefCell::new(Vec::new());
    churn(
        &mut qemu,
        &mut rng,
        SHORT_WAITS,
        |q, chr| q.add_socket_chardev(chr),
        |q, chr, rng| {
            if rng.chance(1, 2) {
                held.borrow_mut().clear();
            }
            if rng.chance(1, 2) {
                let mut client = Qmp::connect(&q.sock(chr));
                if rng.chance(1, 2) {
                    client.handshake(&[]);
                    client.send(&json!({"execute": "query-name", "id": "x"}));
                }
                // leaves now, or later in this round or the next
                if rng.chance(1, 2) {
                    held.borrow_mut().push(client);
                }
            }
            if rng.chance(1, 4) {
                // a second client, accepted only once the first is gone
                if let Ok(conn) = UnixStream::connect(q.sock(chr)) {
                    held.borrow_mut().push(Qmp::from_fd(conn.into()));
                }
            }
        },
    );
    qemu.quit_quietly();
}

/// The TCP port of listening chardev `id`, from its query-chardev
/// filename ("disconnected:tcp:127.0.0.1:PORT,server=on").
fn listening_port(qemu: &mut Qemu, id: &str) -> u16 {
    let filename = qemu.chardev_filename(id);
    let port = filename
        .split(&[':', ','][..])
        .nth(3)
        .and_then(|p| p.parse().ok());
    port.unwrap_or_else(|| panic!("no port in {filename:?}"))
}

/// A listening TLS socket whose clients connect and, at random, leave
/// at once, send part of a TLS client hello, send garbage, or stay:
/// monitor-add and the removal find the chardev listening, or in a TLS
/// handshake with one of them, which they must move into the I/O thread
/// and back to the main loop with the rest.  The trace must show that
/// handshakes were moved.
#[test]
fn a_listening_tls_socket_with_clients_in_handshake_is_removed_cleanly() {
    let seed = seed("listening tls socket", 30);
    let mut rng = Rng::new(seed);
    let trace = common::temp_dir().join("trace.log");
    let mut qemu = start_tls_traced(&trace);
    qemu.add_tls_creds("tls0", Endpoint::Server);
    let held = std::cell::RefCell::new(Vec::new());
    // a client now and then before monitor-add, whose handshake the
    // monitor then moves into the I/O thread; the others after it
    let early = std::cell::RefCell::new(Rng::new(seed ^ 1));
    let client = |q: &mut Qemu, chr: &str, rng: &mut Rng| {
        if rng.chance(1, 2) {
            held.borrow_mut().clear();
        }
        if rng.chance(3, 4) {
            let port = listening_port(q, chr);
            let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            // a TLS 1.2 record header of a client hello, then less
            // than the length it announces
            let hello: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c];
            match rng.below(3) {
                // the chardev may have dropped it already
                0 => drop(conn.write_all(hello)),
                1 => drop(conn.write_all(b"{\"execute\": \"qmp_capabilities\"}\n")),
                _ => {}
            }
            if rng.chance(1, 2) {
                held.borrow_mut().push(conn);
            }
        }
    };
    churn(
        &mut qemu,
        &mut rng,
        SHORT_WAITS,
        |q, chr| {
            let data = json!({"addr": {"type": "inet",
                                       "data": {"host": "127.0.0.1", "port": "0"}},
                              "server": true, "wait": false, "tls-creds": "tls0"});
            q.mgr.ok(
                "chardev-add",
                json!({"id": chr, "backend": {"type": "socket", "data": data}}),
            );
            let mut rng = early.borrow_mut();
            if rng.chance(1, 3) {
                client(q, chr, &mut rng);
                // the chardev accepts it in the main loop meanwhile
                thread::sleep(Duration::from_micros(rng.below(2000) as u64));
            }
        },
        |q, chr, rng| client(q, chr, rng),
    );
    qemu.quit_quietly();
    let moved = moved_handshakes(&trace);
    assert!(
        moved > 0,
        "no monitor-add or removal found a TLS handshake in flight"
    );
    eprintln!("listening tls socket: {moved} TLS handshakes moved");
}

/// A socketpair passed with getfd, as systemd-vmspawn does; the client
/// end closes at random around the removal.
#[test]
fn an_fd_socket_is_removed_cleanly() {
    let mut rng = Rng::new(seed("fd socket", 28));
    let mut qemu = Qemu::start_quiet(&[]);
    let clients = std::cell::RefCell::new(Vec::new());
    churn(
        &mut qemu,
        &mut rng,
        SHORT_WAITS,
        |q, chr| clients.borrow_mut().push(q.add_socketpair_chardev(chr)),
        |_, _, rng| {
            if rng.chance(1, 2) {
                clients.borrow_mut().clear();
            }
        },
    );
    qemu.quit_quietly();
}

/// query-chardev copies every chardev's filename in the main loop while
/// a -mon monitor's socket chardev connects and disconnects its clients
/// in the I/O thread, which replaces the filename.  Before the fix the
/// AddressSanitizer build reported a heap-use-after-free within a
/// minute (released QEMU too); the normal build rarely notices.
#[test]
fn query_chardev_while_clients_connect() {
    let dir = common::temp_dir();
    let path = dir.join("cli.sock");
    let chardev = format!("socket,id=cli,path={},server=on,wait=off", path.display());
    let mut qemu = Qemu::start_quiet(&["-chardev", &chardev, "-mon", "chardev=cli,mode=control"]);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let connector = thread::spawn(move || {
        let mut n = 0usize;
        while !flag.load(Ordering::Relaxed) {
            if let Ok(conn) = UnixStream::connect(&path) {
                n += 1;
                drop(conn);
            }
        }
        n
    });
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut queries = 0;
    while Instant::now() < deadline {
        let filename = qemu.chardev_filename("cli");
        assert!(
            filename.contains("cli.sock"),
            "filename {filename:?} of query {queries}"
        );
        queries += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let connects =
        join_timeout(connector, Duration::from_secs(10), "the connector").expect("the connector");
    assert!(connects > 100, "only {connects} connections");
    assert!(queries > 100, "only {queries} queries");
    qemu.quit_quietly();
}
