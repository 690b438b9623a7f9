// SPDX-License-Identifier: GPL-2.0-or-later
//! End-to-end tests of monitor-add, monitor-remove and query-monitors
//! against the patched QEMU in build/bin, over real sockets and ptys:
//! what the C qtest reaches poorly (threads, OOB, events, fd passing,
//! the systemd-vmspawn flow, exit with dynamic monitors attached).

mod common;

use std::os::fd::AsRawFd;

use common::{open_pty, owned, Qemu, Qmp};
use serde_json::json;

#[test]
fn socket_monitor_runs_in_io_thread_with_oob() {
    let mut qemu = Qemu::start(&[]);
    qemu.add_socket_chardev("c1");
    qemu.monitor_add("m1", "c1");
    let mut client = Qmp::connect(&qemu.sock("c1"));
    assert_eq!(client.handshake(&["oob"]), ["oob"]);
    // query-yank allows OOB: it runs in the I/O thread right away.
    let rsp = client.call(json!({"exec-oob": "query-yank", "id": "oob-1"}));
    assert_eq!(rsp["id"], "oob-1");
    assert!(rsp["return"].is_array(), "{rsp}");
    // A command that does not allow OOB is refused, as on any monitor.
    let rsp = client.call(json!({"exec-oob": "query-name", "id": 2}));
    assert_eq!(
        rsp["error"]["desc"],
        "The command query-name does not support OOB"
    );
    qemu.monitor_remove("m1");
    client.expect_eof();
    assert!(qemu.quit().success());
}

#[test]
fn pty_monitor_talks_to_a_terminal_client() {
    let mut qemu = Qemu::start(&[]);
    let ret = qemu.mgr.ok(
        "chardev-add",
        json!({"id": "p1", "backend": {"type": "pty", "data": {}}}),
    );
    let pty = ret["pty"].as_str().expect("pty path").to_owned();
    qemu.monitor_add("m1", "p1");
    let mut client = Qmp::from_fd(open_pty(&pty));
    // Every chardev that can switch contexts runs in the I/O thread.
    assert_eq!(client.handshake(&[]), ["oob"]);
    assert_eq!(client.ok("query-name", json!({})), json!({}));
    assert_eq!(
        qemu.monitors().last().cloned(),
        Some(("m1".into(), "control".into(), "p1".into(), true))
    );
    qemu.monitor_remove("m1");
    qemu.mgr.ok("chardev-remove", json!({"id": "p1"}));
    assert!(qemu.quit().success());
}

#[test]
fn ringbuf_monitor_runs_in_main_loop() {
    let mut qemu = Qemu::start(&[]);
    qemu.mgr.ok(
        "chardev-add",
        json!({"id": "r1", "backend": {"type": "ringbuf", "data": {"size": 4096}}}),
    );
    qemu.monitor_add("m1", "r1");
    // The greeting went into the ring buffer: no OOB off the I/O thread.
    let out = qemu
        .mgr
        .ok("ringbuf-read", json!({"device": "r1", "size": 4096}));
    let greeting: serde_json::Value =
        serde_json::from_str(out.as_str().expect("text").trim()).expect("JSON");
    assert_eq!(greeting["QMP"]["capabilities"], json!([]));
    qemu.monitor_remove("m1");
    qemu.mgr.err(
        "monitor-remove",
        json!({"id": "m1"}),
        "No monitor with id 'm1'",
    );
    qemu.mgr.ok("chardev-remove", json!({"id": "r1"}));
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    assert!(qemu.quit().success());
}

#[test]
fn self_removal_answers_earlier_requests_then_closes() {
    let mut qemu = Qemu::start(&[]);
    let mut client = qemu.dynamic_client("m1", &[]);
    // One write: the request before the removal is answered, the
    // removal too, and the one after it is dropped with the connection.
    client.send_raw(concat!(
        r#"{"execute": "query-name", "id": 1}"#,
        "\n",
        r#"{"execute": "monitor-remove", "arguments": {"id": "m1"}, "id": 2}"#,
        "\n",
        r#"{"execute": "query-status", "id": 3}"#,
        "\n",
    ));
    assert_eq!(
        client.recv_reply_awaiting("reply 1").expect("reply 1"),
        json!({"return": {}, "id": 1})
    );
    assert_eq!(
        client.recv_reply_awaiting("reply 2").expect("reply 2"),
        json!({"return": {}, "id": 2})
    );
    client.expect_eof();
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    assert!(qemu.quit().success());
}

#[test]
fn events_reach_dynamic_monitors_until_removed() {
    let mut qemu = Qemu::start(&[]);
    let mut a = qemu.dynamic_client("a", &[]);
    let mut b = qemu.dynamic_client("b", &[]);
    qemu.mgr.ok("stop", json!({}));
    // A command round trip orders the event before the reply.
    for c in [&mut a, &mut b] {
        c.ok("query-name", json!({}));
        let names: Vec<_> = c.events.iter().map(|e| e["event"].clone()).collect();
        assert_eq!(names, [json!("STOP")]);
    }
    qemu.monitor_remove("b");
    qemu.mgr.ok("cont", json!({}));
    a.ok("query-name", json!({}));
    assert_eq!(a.events.last().expect("event")["event"], "RESUME");
    b.expect_eof();
    assert_eq!(
        b.events.len(),
        1,
        "b got events after removal: {:?}",
        b.events
    );
    assert!(qemu.quit().success());
}

#[test]
fn getfd_fds_are_closed_with_their_monitor() {
    let mut qemu = Qemu::start(&[]);
    qemu.add_socket_chardev("m1-chr");
    qemu.monitor_add("m1", "m1-chr");
    // Before the client: the chardev's listening socket is in it.
    let without_client = qemu.fds();
    let mut client = Qmp::connect(&qemu.sock("m1-chr"));
    client.handshake(&[]);
    let mut fds = [0; 2];
    // SAFETY: pipe fills the array with two fresh fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (owned(fds[0]), owned(fds[1]));
    let before = qemu.fds();
    client.send_with_fd(
        &json!({"execute": "getfd", "arguments": {"fdname": "f1"}}),
        wr.as_raw_fd(),
    );
    assert_eq!(
        client
            .recv_reply_awaiting("the reply to getfd")
            .expect("getfd reply"),
        json!({"return": {}})
    );
    let pipe = std::fs::read_link(format!("/proc/self/fd/{}", wr.as_raw_fd())).expect("link");
    let pipe = pipe.display().to_string();
    // Exactly one fd more: the pipe's end.
    let held: Vec<_> = qemu
        .fds()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(
        held.iter().map(|f| f.1.as_str()).collect::<Vec<_>>(),
        [pipe.as_str()],
        "{held:?}"
    );
    assert!(before.iter().all(|f| qemu.fds().contains(f)));
    qemu.monitor_remove("m1");
    client.expect_eof();
    assert!(
        qemu.fds().iter().all(|f| f.1 != pipe),
        "the getfd fd outlived its monitor"
    );
    // QEMU closes its end of the connection once the client closed its
    // own (src/farewell.rs); then the fds are those before the client
    // came (the chardev still listens).
    drop(client);
    qemu.wait_fds(&without_client, "the connection closed");
    drop((rd, wr));
    assert!(qemu.quit().success());
}

#[test]
fn vmspawn_flow_over_socketpair() {
    let mut qemu = Qemu::start(&[]);
    let ours = qemu.add_socketpair_chardev("vmspawn0");
    qemu.monitor_add("vmspawn0", "vmspawn0");
    let mut client = Qmp::from_fd(ours);
    assert_eq!(client.handshake(&[]), ["oob"]);
    assert_eq!(client.ok("query-status", json!({}))["status"], "running");
    qemu.monitor_remove("vmspawn0");
    qemu.mgr.ok("chardev-remove", json!({"id": "vmspawn0"}));
    client.expect_eof();
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    assert!(qemu.quit().success());
}

#[test]
fn quit_with_dynamic_monitors_attached() {
    let mut qemu = Qemu::start(&[]);
    let mut a = qemu.dynamic_client("a", &["oob"]);
    let mut b = qemu.dynamic_client("b", &[]);
    qemu.add_socket_chardev("idle");
    qemu.monitor_add("c", "idle");
    assert_eq!(qemu.ids(), ["compat_monitor0", "a", "b", "c"]);
    let (status, events) = qemu.quit_with_events();
    assert!(status.success(), "{status}");
    // Both are in command mode until the exit tears them down: each
    // gets what the manager got, SHUTDOWN, and nothing else.
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "SHUTDOWN", "{events:?}");
    assert_eq!(a.expect_eof_after(&events), events);
    assert_eq!(b.expect_eof_after(&events), events);
}

#[test]
fn storage_daemon_has_the_commands() {
    let mut qsd = Qemu::start_storage_daemon(&[]);
    assert_eq!(
        qsd.monitors(),
        [(
            "compat_monitor0".into(),
            "control".into(),
            "mgr".into(),
            false
        )]
    );
    let mut client = qsd.dynamic_client("m1", &[]);
    assert_eq!(
        client
            .ok("query-monitors", json!({}))
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    qsd.monitor_remove("m1");
    client.expect_eof();
    assert!(qsd.quit().success());
}
