// SPDX-License-Identifier: GPL-2.0-or-later
//! close-action=delete: one-shot sessions that remove their monitor and
//! chardev when the client disconnects, and the races around that.

mod common;

use std::os::fd::OwnedFd;

use common::{wait_until, Qemu, Qmp};
use serde_json::json;

fn add_one_shot(qemu: &mut Qemu, id: &str, chardev: &str) {
    qemu.mgr.ok(
        "monitor-add",
        json!({"id": id, "chardev": chardev, "close-action": "delete"}),
    );
}

#[test]
fn disconnect_removes_monitor_and_chardev() {
    let mut qemu = Qemu::start(&[]);
    let chardevs_before = qemu.chardev_labels();
    qemu.add_socket_chardev("c1");
    add_one_shot(&mut qemu, "m1", "c1");
    let list = qemu.mgr.ok("query-monitors", json!({}));
    assert_eq!(
        list[1],
        json!({"id": "m1", "mode": "control", "chardev": "c1", "dynamic": true, "close-action": "delete"})
    );
    assert_eq!(list[0]["close-action"], "none");
    let mut client = Qmp::connect(&qemu.sock("c1"));
    client.handshake(&[]);
    drop(client);
    wait_until("m1 to go", || qemu.ids() == ["compat_monitor0"]);
    wait_until("c1 to go", || qemu.chardev_labels() == chardevs_before);
    qemu.mgr.err(
        "monitor-remove",
        json!({"id": "m1"}),
        "No monitor with id 'm1'",
    );
    assert!(qemu.quit().success());
}

#[test]
fn removal_by_manager_keeps_the_chardev() {
    let mut qemu = Qemu::start(&[]);
    qemu.add_socket_chardev("c1");
    add_one_shot(&mut qemu, "m1", "c1");
    let mut client = Qmp::connect(&qemu.sock("c1"));
    client.handshake(&[]);
    qemu.monitor_remove("m1");
    client.expect_eof();
    // Give a (wrongly delivered) close event time to act, then check.
    qemu.mgr.ok("query-name", json!({}));
    assert!(qemu.chardev_labels().contains(&"c1".to_owned()));
    qemu.mgr.ok("chardev-remove", json!({"id": "c1"}));
    assert!(qemu.quit().success());
}

#[test]
fn self_removal_of_a_one_shot_session_takes_the_chardev() {
    let mut qemu = Qemu::start(&[]);
    let before = qemu.chardev_labels();
    qemu.add_socket_chardev("c1");
    add_one_shot(&mut qemu, "m1", "c1");
    let mut client = Qmp::connect(&qemu.sock("c1"));
    client.handshake(&[]);
    assert_eq!(client.ok("monitor-remove", json!({"id": "m1"})), json!({}));
    client.expect_eof();
    wait_until("c1 to go", || qemu.chardev_labels() == before);
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    assert!(qemu.quit().success());
}

/// A socketpair end passed with getfd, a socket chardev on it, a
/// one-shot monitor: the systemd-vmspawn flow.  Returns our end.
fn vmspawn_session(qemu: &mut Qemu, name: &str) -> OwnedFd {
    let ours = qemu.add_socketpair_chardev(name);
    add_one_shot(qemu, name, name);
    ours
}

#[test]
fn vmspawn_one_shot_sessions_leave_nothing_behind() {
    let mut qemu = Qemu::start(&[]);
    let fds_before = qemu.fds().len();
    let chardevs_before = qemu.chardev_labels();
    for round in 0..200 {
        let name = format!("vmspawn{round}");
        let mut client = Qmp::from_fd(vmspawn_session(&mut qemu, &name));
        client.handshake(&[]);
        if round % 2 == 0 {
            assert_eq!(client.ok("query-name", json!({})), json!({}));
        } else {
            // Leave mid-command: the reply has nowhere to go.
            client.send(&json!({"execute": "query-status"}));
        }
        drop(client);
    }
    wait_until("all sessions to go", || qemu.ids() == ["compat_monitor0"]);
    wait_until("all chardevs to go", || {
        qemu.chardev_labels() == chardevs_before
    });
    wait_until("fds back to the start", || qemu.fds().len() == fds_before);
    assert!(qemu.quit().success());
}

#[test]
fn close_racing_an_explicit_removal_removes_once() {
    let mut qemu = Qemu::start(&[]);
    for round in 0..100 {
        let name = format!("s{round}");
        let client = Qmp::from_fd(vmspawn_session(&mut qemu, &name));
        // The client leaves while the manager removes the monitor.
        drop(client);
        let rsp = qemu
            .mgr
            .call(json!({"execute": "monitor-remove", "arguments": {"id": name}}));
        if rsp.get("return").is_some() {
            // The manager won: the chardev is the manager's to remove.
            qemu.mgr.ok("chardev-remove", json!({"id": name}));
        } else {
            assert_eq!(
                rsp["error"]["desc"],
                format!("No monitor with id '{name}'"),
                "{rsp}"
            );
            wait_until("the one-shot chardev to go", || {
                !qemu.chardev_labels().contains(&name)
            });
        }
    }
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    assert!(qemu.quit().success());
}

#[test]
fn events_during_deletion_and_quit_with_sessions_attached() {
    let mut qemu = Qemu::start(&[]);
    let mut keep = Vec::new();
    for round in 0..50 {
        let mut client = Qmp::from_fd(vmspawn_session(&mut qemu, &format!("e{round}")));
        client.handshake(&[]);
        qemu.mgr
            .ok(if round % 2 == 0 { "stop" } else { "cont" }, json!({}));
        if round % 5 == 0 {
            keep.push(client); // still connected at quit
        }
    }
    assert!(qemu.quit().success());
    for mut c in keep {
        c.expect_eof();
    }
}
