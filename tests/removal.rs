// SPDX-License-Identifier: GPL-2.0-or-later
//! Removals while a client floods its monitor, leaves its replies
//! unread, or reads them slowly: QEMU survives, the client gets whole
//! messages only, a self-removal's client gets everything it is owed,
//! and the chardev is free again at once.  (Issue 10, items 1 to 4.)

mod common;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{wait_until, Qemu, Qmp};
use serde_json::{json, Value};

/// What a removed monitor's connection may take to end: farewell's
/// timeout (5 s, src/farewell.rs) plus slack for a loaded machine.
const CUT_OFF: Duration = Duration::from_secs(15);

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
        .unwrap_or(default)
}

/// Item 1: an OOB client pipelines slow requests without reading, so
/// its queue fills and its monitor suspends; the manager removes the
/// monitor.  This aborted QEMU within a few hundred rounds (the resumed
/// monitor's accept-input bottom half ran in the I/O thread after the
/// monitor was freed).  `QMH_FLOOD_ROUNDS=N` runs more rounds.
#[test]
fn removing_a_flooding_monitor_never_crashes_qemu() {
    let mut qemu = Qemu::start(&[]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _load = Load::start(s, &stop);
        for round in 0..rounds(150) {
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
/// (which has read nothing yet when this is used).
struct ReadFd(std::os::fd::RawFd);

impl std::io::Read for ReadFd {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
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
    let fds_before = qemu.fds().len();
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
    wait_until("QEMU's fds to be back", || qemu.fds().len() == fds_before);
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
