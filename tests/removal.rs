// SPDX-License-Identifier: GPL-2.0-or-later
//! Removals while a client floods its monitor, leaves its replies
//! unread, or reads them slowly: QEMU survives, the client gets whole
//! messages only, a self-removal's client gets everything it is owed,
//! and the chardev is free again at once.  (Issue 10, items 1 to 4.)

mod common;

use std::{
    os::fd::RawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{wait_until, Qemu, Qmp, IO_TIMEOUT};
use serde_json::{json, Value};

/// How long a removed monitor's client may take no byte before its
/// connection is cut.
const IDLE_BOUND: Duration = qemu_monitor_hotplug::remove::farewell::TIMEOUT;

/// What a removed monitor's connection may take to end once its client
/// stops reading: [`IDLE_BOUND`] plus slack for a loaded machine.
const CUT_OFF: Duration = Duration::from_secs(15);

/// The pace of issue 24's slow reader: 64 KiB every 200 ms.
const SLOW_CHUNK: usize = 64 * 1024;
const SLOW_PAUSE: Duration = Duration::from_millis(200);

/// The messages of a byte stream that must end on a message boundary:
/// every line is one JSON value, and nothing follows the last newline.
fn whole_messages(stream: &[u8], what: &str) -> Vec<Value> {
    let text = String::from_utf8_lossy(stream);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what}: the connection ended inside a message: ...{:?}",
        &text[text.len().saturating_sub(120)..]
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l.trim())
                .unwrap_or_else(|e| panic!("{what}: half a message {l:.120?}: {e}"))
        })
        .collect()
}

/// Two threads that keep both cores busy while they live.
struct Load<'a> {
    stop: &'a AtomicBool,
}

impl<'a> Load<'a> {
    fn start(scope: &'a std::thread::Scope<'a, '_>, stop: &'a AtomicBool) -> Self {
        for _ in 0..2 {
            scope.spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            });
        }
        Load { stop }
    }
}

impl Drop for Load<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn rounds(default: usize) -> usize {
    std::env::var("QMH_FLOOD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| common::scaled(default))
}

/// Item 1: an OOB client pipelines slow requests without reading, so
/// its queue fills and its monitor suspends; the manager removes the
/// monitor.  This aborted QEMU within a few hundred rounds (the resumed
/// monitor's accept-input bottom half ran in the I/O thread after the
/// monitor was freed).  The code before that fix was not rebuilt to
/// measure it (a full QEMU build), so the size comes from that note:
/// an abort every 100 to 300 rounds, which 150 rounds caught in only
/// 39% to 78% of runs, and 1,000 in 96.5% to all (about 105 s here).
/// `QMH_FLOOD_ROUNDS=N` runs another number of rounds.
#[test]
fn removing_a_flooding_monitor_never_crashes_qemu() {
    let mut qemu = Qemu::start(&[]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _load = Load::start(s, &stop);
        for round in 0..rounds(1000) {
            let mut client = qemu.dynamic_client("flood", &["oob"]);
            for i in 0..12 {
                client.send(&json!({"execute": "query-qmp-schema", "id": i}));
            }
            // Let the queue fill up and the dispatcher get going, by a
            // varying amount, so that the removal meets every stage.
            std::thread::sleep(Duration::from_micros(((round * 397) % 3000) as u64));
            qemu.monitor_remove("flood");
            if round % 2 == 0 {
                // A client that reads: whole replies, then the end.
                let replies = whole_messages(&client.read_to_close(), "flooding client");
                for (i, r) in replies.iter().enumerate() {
                    assert_eq!(
                        r["id"],
                        json!(i),
                        "round {round}: replies in order, no others: {r:.200}"
                    );
                }
            }
            drop(client);
            qemu.mgr.ok("chardev-remove", json!({"id": "flood-chr"}));
        }
    });
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    assert!(qemu.quit().success());
}

/// Item 2: a client sends a request with a large reply and its own
/// monitor-remove, and reads only afterwards: it gets the whole reply,
/// then the removal's `{"return": {}}`, then the end of the connection.
#[test]
fn a_self_removal_delivers_everything_owed_before_closing() {
    let mut qemu = Qemu::start(&[]);
    for round in 0..5 {
        let mut client = qemu.dynamic_client("self", &[]);
        client.send_raw(
            "{\"execute\": \"query-qmp-schema\", \"id\": \"schema\"}\n{\"execute\": \
             \"monitor-remove\", \"arguments\": {\"id\": \"self\"}, \"id\": \"bye\"}\n",
        );
        std::thread::sleep(Duration::from_millis(300));
        let replies = whole_messages(&client.read_to_close(), "self-removing client");
        let ids: Vec<&Value> = replies.iter().map(|r| &r["id"]).collect();
        assert_eq!(ids, [&json!("schema"), &json!("bye")], "round {round}");
        assert!(
            replies[0]["return"]
                .as_array()
                .is_some_and(|a| a.len() > 100),
            "round {round}"
        );
        assert_eq!(replies[1]["return"], json!({}), "round {round}");
        wait_until("the monitor to go", || qemu.ids() == ["compat_monitor0"]);
        qemu.mgr.ok("chardev-remove", json!({"id": "self-chr"}));
    }
    assert!(qemu.quit().success());
}

/// A client of monitor `id` that asks for at least `bytes` of
/// query-qmp-schema replies (ids 0, 1, ...), then removes its own
/// monitor (id "bye"), and reads nothing: once the monitor is gone from
/// query-monitors, all of it is owed.  Returns the client and the
/// number of schemas asked for.
fn self_removal_owing(qemu: &mut Qemu, id: &str, bytes: usize) -> (Qmp, usize) {
    // serde's compact JSON is shorter than QEMU's: the wire has more.
    let schema = qemu.mgr.ok("query-qmp-schema", json!({})).to_string().len();
    let n = bytes.div_ceil(schema);
    let mut client = qemu.dynamic_client(id, &[]);
    let mut text = String::new();
    for i in 0..n {
        text += &format!("{{\"execute\": \"query-qmp-schema\", \"id\": {i}}}\n");
    }
    text += &format!(
        "{{\"execute\": \"monitor-remove\", \"arguments\": {{\"id\": \"{id}\"}}, \"id\": \"bye\"}}\n"
    );
    client.send_raw(&text);
    wait_until("the monitor to go", || !qemu.ids().iter().any(|m| m == id));
    (client, n)
}

/// Waits up to `limit` for `events` on `fd` (POLLHUP and POLLERR are
/// always reported); the revents, or 0 if nothing came.
fn poll_once(fd: RawFd, events: libc::c_short, limit: Duration) -> libc::c_short {
    let deadline = Instant::now() + limit;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            n if n > 0 => return pfd.revents,
            0 => return 0,
            _ => {
                let e = std::io::Error::last_os_error();
                assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
            }
        }
    }
}

/// Reads at most `chunk` bytes of what `fd` has, waiting up to
/// `IO_TIMEOUT` for the first.  None at the end of the connection
/// (EOF, or a reset once everything before it was read).
fn read_chunk(fd: RawFd, chunk: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; chunk];
    let mut got = 0;
    while got < chunk {
        let wait = if got == 0 { IO_TIMEOUT } else { Duration::ZERO };
        if poll_once(fd, libc::POLLIN, wait) == 0 {
            assert!(got > 0, "nothing to read for {IO_TIMEOUT:?}");
            break;
        }
        // SAFETY: out[got..] is a valid writable buffer; fd is open.
        let n = unsafe { libc::read(fd, out[got..].as_mut_ptr().cast(), chunk - got) };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ECONNRESET) => break,
                _ => panic!("read: {}", std::io::Error::last_os_error()),
            },
        }
    }
    out.truncate(got);
    (got > 0).then_some(out)
}

/// Issue 24: a client that removes its own monitor while it is owed
/// about 2 MB and then reads 64 KiB every 200 ms (more than
/// [`IDLE_BOUND`] in all) gets every reply, whole and in order, the
/// removal's `{"return": {}}` last, then the end of the connection.
/// It was cut off 5 s after the removal, inside a reply.
#[test]
fn a_slow_reader_gets_everything_owed_however_long_it_takes() {
    let mut qemu = Qemu::start(&[]);
    let fds_before = qemu.fds();
    let (client, n) = self_removal_owing(&mut qemu, "slow", 2_000_000);
    let t0 = Instant::now();
    let mut stream = Vec::new();
    while let Some(chunk) = read_chunk(client.raw_fd(), SLOW_CHUNK) {
        stream.extend(chunk);
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "still reading after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(SLOW_PAUSE);
    }
    let took = t0.elapsed();
    let replies = whole_messages(&stream, "slow reader");
    let ids: Vec<Value> = replies.iter().map(|r| r["id"].clone()).collect();
    let mut want: Vec<Value> = (0..n).map(|i| json!(i)).collect();
    want.push(json!("bye"));
    assert_eq!(
        ids,
        want,
        "every reply, in order ({} bytes in {took:?})",
        stream.len()
    );
    for r in &replies[..n] {
        assert!(
            r["return"].as_array().is_some_and(|a| a.len() > 100),
            "a whole schema: {r:.200}"
        );
    }
    assert_eq!(replies[n], json!({"return": {}, "id": "bye"}));
    // It means something only if reading took longer than the bound.
    assert!(
        stream.len() >= 2_000_000 && took > IDLE_BOUND,
        "{} bytes in {took:?}",
        stream.len()
    );
    drop(client);
    qemu.mgr.ok("chardev-remove", json!({"id": "slow-chr"}));
    wait_until("QEMU's fds to be back", || qemu.fds() == fds_before);
    assert!(qemu.quit().success());
}

/// A client that reads slowly for longer than [`IDLE_BOUND`], then
/// stops, is cut off once it has taken no byte for about the bound:
/// not while it reads, and not long after it stopped.
#[test]
fn a_reader_that_stops_is_cut_off_a_bound_after_its_last_byte() {
    let mut qemu = Qemu::start(&[]);
    let fds_before = qemu.fds();
    let (mut client, _) = self_removal_owing(&mut qemu, "stops", 4_000_000);
    let fd = client.raw_fd();
    let t0 = Instant::now();
    let mut taken = 0;
    let last_read = loop {
        let chunk = read_chunk(fd, SLOW_CHUNK).unwrap_or_else(|| {
            panic!(
                "cut off after {:?} while reading ({taken} bytes)",
                t0.elapsed()
            )
        });
        taken += chunk.len();
        if t0.elapsed() > IDLE_BOUND + Duration::from_secs(2) {
            break Instant::now();
        }
        std::thread::sleep(SLOW_PAUSE);
    };
    // QEMU closing its end, with data still unread here, is POLLHUP.
    let revents = poll_once(fd, 0, CUT_OFF);
    let idle = last_read.elapsed();
    assert!(
        revents & libc::POLLHUP != 0,
        "not cut off {idle:?} after the last read"
    );
    assert!(
        idle > IDLE_BOUND - Duration::from_secs(1),
        "cut off only {idle:?} after the last read"
    );
    client.set_timeout(Duration::from_secs(5));
    let rest = client.read_to_close();
    assert!(
        !String::from_utf8_lossy(&rest).contains("\"bye\""),
        "cut off, yet the removal's reply came"
    );
    drop(client);
    qemu.mgr.ok("chardev-remove", json!({"id": "stops-chr"}));
    wait_until("QEMU's fds to be back", || qemu.fds() == fds_before);
    assert!(qemu.quit().success());
}

/// Item 3: removal by another monitor while a reading client is in the
/// middle of large replies: the connection ends on a message boundary.
#[test]
fn removal_by_the_manager_ends_on_a_message_boundary() {
    let mut qemu = Qemu::start(&[]);
    for round in 0..20 {
        let mut client = qemu.dynamic_client("slow", &[]);
        for i in 0..4 {
            client.send(&json!({"execute": "query-qmp-schema", "id": i}));
        }
        // Read a little of the first reply, so that QEMU is in the middle
        // of writing one when the manager removes the monitor.
        let mut head = [0u8; 1000];
        std::io::Read::read_exact(&mut ReadFd(client.raw_fd()), &mut head)
            .expect("start of a reply");
        std::thread::sleep(Duration::from_millis(((round * 7) % 40) as u64));
        qemu.monitor_remove("slow");
        let mut stream = head.to_vec();
        stream.extend(client.read_to_close());
        let replies = whole_messages(&stream, "slow reader");
        assert!(
            !replies.is_empty(),
            "round {round}: the reply in progress is finished"
        );
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r["id"], json!(i), "round {round}");
        }
        // The chardev is free at once, whatever the old connection does.
        qemu.mgr.ok("chardev-remove", json!({"id": "slow-chr"}));
    }
    assert!(qemu.quit().success());
}

/// Reads straight from a client's socket, past its buffered reader
/// (which has read nothing yet when this is used); each read waits at
/// most `IO_TIMEOUT`.
struct ReadFd(RawFd);

impl std::io::Read for ReadFd {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if poll_once(self.0, libc::POLLIN, IO_TIMEOUT) == 0 {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        // SAFETY: buf is a valid writable buffer; the fd is open.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    }
}

/// A client that never reads loses what it was owed after a bounded
/// time, and its monitor's chardev can be reused at once.
#[test]
fn a_client_that_never_reads_is_cut_off_and_the_chardev_is_free_at_once() {
    let mut qemu = Qemu::start(&[]);
    let fds_before = qemu.fds();
    let mut client = qemu.dynamic_client("deaf", &[]);
    for i in 0..20 {
        client.send(&json!({"execute": "query-qmp-schema", "id": i}));
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    qemu.monitor_remove("deaf");
    // Reused right away: a new monitor and a new client on it.
    qemu.monitor_add("again", "deaf-chr");
    let mut next = Qmp::connect(&qemu.sock("deaf-chr"));
    next.handshake(&[]);
    assert_eq!(next.ok("query-name", json!({})), json!({}));
    // Not reading for longer than the bound loses the rest: the old
    // connection is closed with most of the 20 schemas never sent.
    std::thread::sleep(Duration::from_secs(6));
    client.set_timeout(Duration::from_secs(5));
    let got = client.read_to_close();
    assert!(
        got.len() < 10 * 200_000,
        "cut off, yet {} bytes came",
        got.len()
    );
    assert!(t0.elapsed() < CUT_OFF, "cut off after {:?}", t0.elapsed());
    qemu.monitor_remove("again");
    next.expect_eof();
    drop(next);
    qemu.mgr.ok("chardev-remove", json!({"id": "deaf-chr"}));
    // QEMU closes its end once the client closed its own.
    wait_until("QEMU's fds to be back", || qemu.fds() == fds_before);
    assert!(qemu.quit().success());
}

fn chardev_filename(qemu: &mut Qemu, label: &str) -> Option<String> {
    let list = qemu.mgr.ok("query-chardev", json!({}));
    list.as_array()?
        .iter()
        .find(|c| c["label"] == label)
        .map(|c| c["filename"].as_str().unwrap_or("").to_owned())
}

/// Item 4: close-action=delete on a chardev whose client is gone.  A
/// client that left before monitor-add (its chardev noticed) makes
/// monitor-add refuse; one that leaves in any window around monitor-add
/// takes the one-shot monitor and its chardev along.  Never a leak.
#[test]
fn a_one_shot_session_whose_client_already_left_is_refused_or_removed() {
    let mut qemu = Qemu::start(&[]);
    let fds_before = qemu.fds();
    // The chardev has seen its client leave: refused, with a clear error.
    drop(qemu.add_socketpair_chardev("gone"));
    wait_until("the chardev to notice", || {
        chardev_filename(&mut qemu, "gone").is_some_and(|f| f.starts_with("disconnected"))
    });
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "m", "chardev": "gone", "close-action": "delete"}),
        "Chardev 'gone' has lost its client and cannot get another one; close-action 'delete' \
         needs a client",
    );
    qemu.mgr.ok("chardev-remove", json!({"id": "gone"}));
    // The client leaves around monitor-add, at varying moments.
    for round in 0..40 {
        let name = format!("race{round}");
        let ours = qemu.add_socketpair_chardev(&name);
        if round % 2 == 0 {
            drop(ours);
            std::thread::sleep(Duration::from_micros(((round * 131) % 500) as u64));
            let rsp = qemu.mgr.call(json!({"execute": "monitor-add",
                "arguments": {"id": name, "chardev": name, "close-action": "delete"}}));
            if rsp.get("error").is_some() {
                assert_eq!(
                    rsp["error"]["desc"],
                    format!(
                        "Chardev '{name}' has lost its client and cannot get another one; \
                         close-action 'delete' needs a client"
                    )
                );
                qemu.mgr.ok("chardev-remove", json!({"id": name}));
            }
        } else {
            qemu.mgr.ok(
                "monitor-add",
                json!({"id": name, "chardev": name, "close-action": "delete"}),
            );
            drop(ours);
        }
        wait_until("the session to go", || {
            !qemu.ids().contains(&name) && chardev_filename(&mut qemu, &name).is_none()
        });
    }
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    qemu.wait_fds(&fds_before, "QEMU's fds to be back");
    assert!(qemu.quit().success());
}

/// A client that is owed nothing sees the end of its connection at
/// once, not after the bound for slow readers.
#[test]
fn an_idle_client_sees_the_end_at_once() {
    let mut qemu = Qemu::start(&[]);
    for round in 0..10 {
        let mut client = qemu.dynamic_client("idle", &[]);
        let t0 = Instant::now();
        qemu.monitor_remove("idle");
        client.expect_eof();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "round {round}: EOF after {:?}",
            t0.elapsed()
        );
        qemu.mgr.ok("chardev-remove", json!({"id": "idle-chr"}));
    }
    assert!(qemu.quit().success());
}
