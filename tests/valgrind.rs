// SPDX-License-Identifier: GPL-2.0-or-later
//! The churn scenario under valgrind memcheck, through both spellings
//! (monitor-add/-remove and object-add monitor-qmp/object-del): no
//! memory error, and no byte definitely or indirectly lost, with only
//! QEMU's known one-off start-up allocations suppressed
//! (tests/valgrind/qemu.supp says why for each).  Slow, so it is #[ignore]d; `make check-valgrind` runs it.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{socket_chardev, temp_dir, wait_timeout, wait_until, KillOnDrop, Qmp};
use serde_json::json;

const CYCLES: usize = 400;

/// Per read or write of a QMP connection: QEMU runs some 20 to 50 times
/// slower under memcheck than without.
const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// Requests per batch written at once (QEMU reads them in chunks).
const BATCH: usize = 50;

/// `n` query-name requests, to be sent in one write.
fn batch(n: usize) -> String {
    "{\"execute\": \"query-name\"}".repeat(n)
}

/// A connection with the long timeout.
fn connect(path: &Path) -> Qmp {
    let mut q = Qmp::connect(path);
    q.set_timeout(IO_TIMEOUT);
    q
}

/// "definitely lost: 1,234 bytes in 5 blocks" -> 1234
fn lost(log: &str, kind: &str) -> u64 {
    if log.contains("no leaks are possible") {
        return 0;
    }
    let line = log
        .lines()
        .find(|l| l.contains(&format!("{kind} lost:")))
        .unwrap_or_else(|| panic!("no '{kind} lost' in the valgrind log:\n{log}"));
    let after = line.split(&format!("{kind} lost:")).nth(1).expect("count");
    after
        .split_whitespace()
        .next()
        .expect("bytes")
        .replace(',', "")
        .parse()
        .expect("number")
}

#[test]
#[ignore = "slow: run by make check-valgrind"]
fn churn_leaks_nothing() {
    let dir = temp_dir();
    let supp = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/valgrind/qemu.supp");
    let log = dir.join("valgrind.log");
    let mgr_sock = dir.join("mgr.sock");
    let mut child = KillOnDrop(
        Command::new("valgrind")
            .args([
                "--tool=memcheck",
                "--leak-check=full",
                "--show-leak-kinds=definite,indirect",
            ])
            .arg(format!("--suppressions={supp}"))
            .arg(format!("--log-file={}", log.display()))
            .arg(common::bin_dir().join("qemu-system-x86_64"))
            .args(["-M", "none", "-accel", "qtest", "-display", "none", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", mgr_sock.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("valgrind is installed (make deps)"),
    );
    let mut mgr = connect(&mgr_sock);
    mgr.handshake(&[]);

    for i in 0..CYCLES {
        // A request with a duplicate key: its value leaked in QEMU's JSON
        // parser (qemu-patches 0001).
        mgr.send_raw("{\"execute\": \"query-status\", \"execute\": {\"a\": [1, \"b\"]}}\n");
        let rsp = mgr.recv_reply().expect("reply to a duplicate key");
        assert_eq!(
            rsp["error"]["desc"], "JSON parse error, duplicate key",
            "{rsp}"
        );
        let (id, path) = (format!("m{i}"), dir.join(format!("c{i}.sock")));
        let main_loop = i % 4 == 3;
        let chardev = if main_loop {
            json!({"id": id, "backend": {"type": "ringbuf", "data": {"size": 1024}}})
        } else {
            socket_chardev(&id, &path)
        };
        mgr.ok("chardev-add", chardev);
        let close_action = if i % 4 == 2 { "delete" } else { "none" };
        // Every other run of four cycles in QEMU 11.1's spelling: the
        // monitor is made by object-add monitor-qmp, and the manager
        // removes it by object-del.
        let via_object = i % 8 >= 4;
        if via_object {
            mgr.ok(
                "object-add",
                json!({"qom-type": "monitor-qmp", "id": id, "chardev": id,
                       "close-action": close_action}),
            );
        } else {
            mgr.ok(
                "monitor-add",
                json!({"id": id, "chardev": id, "close-action": close_action}),
            );
        }
        let remove = if via_object {
            ("object-del", json!({"id": id}))
        } else {
            ("monitor-remove", json!({"id": id}))
        };
        if main_loop {
            mgr.ok(remove.0, remove.1);
            mgr.ok("chardev-remove", json!({"id": id}));
            continue;
        }
        let mut client = connect(&path);
        client.handshake(&["oob"]);
        client.ok("query-name", json!({}));
        match i % 4 {
            0 => {
                // removed by the manager, with an unclaimed getfd fd
                let (keep, give) = std::os::unix::net::UnixStream::pair().expect("socketpair");
                client.send_with_fd(
                    &json!({"execute": "getfd", "arguments": {"fdname": "f"}}),
                    {
                        use std::os::fd::AsRawFd;
                        give.as_raw_fd()
                    },
                );
                client
                    .recv_reply_awaiting("the reply to getfd")
                    .expect("getfd reply");
                drop((keep, give));
                // and with a batch being read: what is still unparsed
                // goes with the monitor (qemu-patches 0022)
                client.send_raw(&batch(BATCH));
                mgr.ok(remove.0, remove.1);
                while client.recv_reply().is_some() {}
                mgr.ok("chardev-remove", json!({"id": id}));
            }
            1 => {
                // removes itself in the middle of a batch (monitor-remove
                // also for an object: object-del refuses the caller)
                let mut requests = batch(10);
                requests.push_str(
                    &json!({"execute": "monitor-remove", "arguments": {"id": id}}).to_string(),
                );
                requests.push_str(&batch(BATCH));
                client.send_raw(&requests);
                for _ in 0..11 {
                    let rsp = client.recv_reply().expect("a reply before the removal's");
                    assert!(rsp.get("return").is_some(), "{rsp}");
                }
                client.expect_eof();
                mgr.ok("chardev-remove", json!({"id": id}));
            }
            _ => {
                // one-shot session: the client leaves mid-command, and
                // mid-batch
                client.send(&json!({"execute": "query-status"}));
                client.send_raw(&batch(BATCH));
                drop(client);
                wait_until(&format!("one-shot monitor {id} to go"), || {
                    mgr.ok("query-monitors", json!({}))
                        .as_array()
                        .expect("list")
                        .len()
                        <= 1
                });
            }
        }
    }
    // Leave some dynamic monitors attached for the exit path.
    for i in 0..3 {
        let id = format!("exit{i}");
        mgr.ok(
            "chardev-add",
            socket_chardev(&id, &dir.join(format!("{id}.sock"))),
        );
        if i == 2 {
            mgr.ok(
                "object-add",
                json!({"qom-type": "monitor-qmp", "id": id, "chardev": id}),
            );
        } else {
            mgr.ok("monitor-add", json!({"id": id, "chardev": id}));
        }
    }
    // Quit while removals are under way: a self-removal whose client
    // does not read its large replies, and a one-shot session whose
    // client just left.  What they still hold is freed at exit.
    let mut pending = Vec::new();
    for (i, close_action) in ["none", "delete"].into_iter().enumerate() {
        let id = format!("late{i}");
        let path = dir.join(format!("{id}.sock"));
        mgr.ok("chardev-add", socket_chardev(&id, &path));
        mgr.ok(
            "monitor-add",
            json!({"id": id, "chardev": id, "close-action": close_action}),
        );
        let mut client = connect(&path);
        client.handshake(&[]);
        client.send(&json!({"execute": "query-qmp-schema"}));
        client.send(&json!({"execute": "query-qmp-schema"}));
        if close_action == "none" {
            client.send(&json!({"execute": "monitor-remove", "arguments": {"id": id}}));
            pending.push(client);
        }
    }
    mgr.send(&json!({"execute": "quit"}));
    let status = wait_timeout(&mut child.0, Duration::from_secs(600));
    drop(pending);
    assert!(status.success(), "QEMU under valgrind: {status}");

    let log = std::fs::read_to_string(&log).expect("valgrind log");
    // Make sure the log is memcheck's report on this QEMU run.
    assert!(
        log.contains("Command: ") && log.contains("qemu-system-x86_64"),
        "{log}"
    );
    assert!(log.contains("HEAP SUMMARY"), "{log}");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("total heap usage"))
            .collect::<String>()
    );
    assert!(
        log.contains("ERROR SUMMARY: 0 errors"),
        "memcheck errors:\n{log}"
    );
    assert_eq!(
        (lost(&log, "definitely"), lost(&log, "indirectly")),
        (0, 0),
        "leaks:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
