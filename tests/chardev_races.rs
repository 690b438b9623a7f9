// SPDX-License-Identifier: GPL-2.0-or-later
//! Socket chardevs that change their connection in the monitor I/O
//! thread while the main loop uses them: a monitor added and removed on
//! every kind of socket chardev, with peers that come and go, and
//! query-chardev while clients connect.  After every round the
//! manager's own connection must answer, and QEMU must not have died.

mod common;

use std::{
    io::ErrorKind,
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{join_timeout, seed, Qemu, Qmp, Rng};
use serde_json::{json, Value};

/// Rounds per chardev kind.  The reconnecting client aborted QEMU
/// within 5 to 110 rounds before its fix (three seeds of three), and
/// the wrong-peer hand-off needs a client to come and go in between.
const ROUNDS: usize = 1000;

/// A Unix socket server that accepts every connection and drops it at
/// once, until the value is dropped: the peer of a reconnecting client
/// chardev that keeps losing its connection.
struct DroppingServer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl DroppingServer {
    fn start(path: &Path) -> Self {
        let listener = UnixListener::bind(path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut accepted = 0;
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        accepted += 1;
                        drop(conn);
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

/// A chardev-add backend of a Unix socket client.
fn client_chardev(id: &str, path: &Path, reconnect_ms: Option<u64>) -> Value {
    let mut data = json!({"addr": {"type": "unix", "data": {"path": path}},
                          "server": false});
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
    for round in 0..common::scaled(ROUNDS) {
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

/// A client socket chardev (with `reconnect_ms`, or without) whose
/// server drops every connection, churned as [`churn`] does.
fn churn_client_socket(test: &str, default_seed: u64, reconnect_ms: Option<u64>, waits: Waits) {
    let mut rng = Rng::new(seed(test, default_seed));
    let mut qemu = Qemu::start(&[]);
    let path = qemu.dir.join("dropper.sock");
    let server = DroppingServer::start(&path);
    churn(
        &mut qemu,
        &mut rng,
        waits,
        |q, chr| {
            q.mgr
                .ok("chardev-add", client_chardev(chr, &path, reconnect_ms));
        },
        |_, _, _| {},
    );
    assert!(server.stop() > 0, "the chardev never connected");
    assert!(qemu.quit().success());
}

/// A client socket with reconnect-ms whose server drops every
/// connection: the chardev reconnects from the monitor I/O thread while
/// the removal moves it to the main loop.  Before the fix the manager's
/// connection got EOF in the middle of monitor-remove (the hand-off
/// took another connection's fd) and QEMU aborted.
#[test]
fn a_reconnecting_client_socket_is_removed_cleanly() {
    churn_client_socket("reconnecting client", 25, Some(20), RECONNECT_WAITS);
}

/// The same without reconnect-ms: one connection, dropped at once.
#[test]
fn a_client_socket_dropped_by_its_server_is_removed_cleanly() {
    churn_client_socket("client socket", 26, None, SHORT_WAITS);
}

/// A listening socket whose clients connect and leave at random around
/// the removal: a client that connects after the removal must never get
/// the bytes owed to an earlier one, nor lose its connection to it.
#[test]
fn a_listening_socket_with_clients_coming_and_going_is_removed_cleanly() {
    let mut rng = Rng::new(seed("listening socket", 27));
    let mut qemu = Qemu::start(&[]);
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
    assert!(qemu.quit().success());
}

/// A socketpair passed with getfd, as systemd-vmspawn does; the client
/// end closes at random around the removal.
#[test]
fn an_fd_socket_is_removed_cleanly() {
    let mut rng = Rng::new(seed("fd socket", 28));
    let mut qemu = Qemu::start(&[]);
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
    assert!(qemu.quit().success());
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
    let mut qemu = Qemu::start(&["-chardev", &chardev, "-mon", "chardev=cli,mode=control"]);
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
        let list = qemu.mgr.ok("query-chardev", json!({}));
        let cli = list
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["label"] == "cli")
            .unwrap_or_else(|| panic!("no chardev cli in {list}"));
        let filename = cli["filename"].as_str().expect("filename");
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
    assert!(qemu.quit().success());
}
