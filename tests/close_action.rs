// SPDX-License-Identifier: GPL-2.0-or-later
//! close-action=delete: one-shot sessions that remove their monitor and
//! chardev when the client disconnects, and the races around that.

mod common;

use std::{os::fd::OwnedFd, time::Duration};

use common::{wait_until, Qemu, Qmp};
use serde_json::{json, Value};

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
    let fds_before = qemu.fds();
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
    qemu.wait_fds(&fds_before, "after 200 one-shot sessions");
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

/// One toggle of the run state by the manager, in one write with a
/// query-monitors before and after it.
struct Toggle {
    /// STOP or RESUME, as the manager got it (timestamp included).
    event: Value,
    /// Listed before the toggle: not removed when it was broadcast.
    before: Vec<String>,
}

fn listed(rsp: Value) -> Vec<String> {
    rsp["return"]
        .as_array()
        .unwrap_or_else(|| panic!("query-monitors: {rsp}"))
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Broadcast events while one-shot sessions are being deleted, and quit
/// with sessions attached.  docs/contract.md ("Events and shutdown"): events reach
/// every live monitor in command mode and never a removed or
/// half-removed one.
///
/// Each round opens a session and negotiates; the manager toggles the
/// run state (STOP or RESUME, to every monitor in command mode) between
/// two query-monitors, in one write, and around that write the previous
/// round's session (unless it is one of the one in five that stay) is
/// half-closed (shutdown SHUT_WR): QEMU sees the client leave and
/// deletes its session while the event goes out, and the client still
/// reads what comes.  A
/// session not listed before a toggle was removed before its event and
/// must not get it.  A session is live and in command mode when its
/// round's toggle goes out: it gets that event (read before the
/// half-close; what a client that left was owed may be dropped).  At
/// quit, a staying session has got exactly the events of the toggles
/// since it negotiated and SHUTDOWN, then EOF.
#[test]
fn events_during_deletion_and_quit_with_sessions_attached() {
    const ROUNDS: usize = 50;
    let mut qemu = Qemu::start(&[]);
    let chardevs_before = qemu.chardev_labels();
    let mut keep = Vec::new();
    let mut leaving: Vec<(usize, String, Qmp)> = Vec::new();
    let mut previous: Option<(usize, String, Qmp)> = None;
    let mut toggles: Vec<Toggle> = Vec::new();
    // Deletions that were done before the toggle, went on during it, or
    // were not done yet after it.
    let mut timing = [0; 3];
    let half_close = |c: &Qmp| {
        // SAFETY: plain syscall on the client's own fd.
        assert_eq!(unsafe { libc::shutdown(c.raw_fd(), libc::SHUT_WR) }, 0);
    };
    for round in 0..ROUNDS {
        let name = format!("e{round}");
        let mut client = Qmp::from_fd(vmspawn_session(&mut qemu, &name));
        client.handshake(&[]);
        // The previous session's client leaves before the manager's
        // write, right after it, or after the first query's reply.
        let when = round % 3;
        if when == 0 {
            previous.iter().for_each(|(_, _, c)| half_close(c));
        }
        let toggle = if round % 2 == 0 { "stop" } else { "cont" };
        qemu.mgr.send_raw(&format!(
            "{}\n{}\n{}\n",
            json!({"execute": "query-monitors"}),
            json!({"execute": toggle}),
            json!({"execute": "query-monitors"})
        ));
        if when == 1 {
            previous.iter().for_each(|(_, _, c)| half_close(c));
        }
        let mut next = |what: &str| {
            qemu.mgr
                .recv_reply_awaiting(what)
                .unwrap_or_else(|| panic!("EOF instead of {what}"))
        };
        let before = listed(next("query-monitors before the toggle"));
        if when == 2 {
            previous.iter().for_each(|(_, _, c)| half_close(c));
        }
        assert_eq!(next("the toggle's reply"), json!({"return": {}}));
        let after = listed(next("query-monitors after the toggle"));
        let events: Vec<Value> = qemu.mgr.events.drain(..).collect();
        assert_eq!(events.len(), 1, "round {round}: {events:?}");
        let event = events.into_iter().next().expect("event");
        let expected = if round % 2 == 0 { "STOP" } else { "RESUME" };
        assert_eq!(event["event"], expected, "round {round}");
        if let Some((r, n, c)) = previous.take() {
            timing[if !before.contains(&n) {
                0
            } else if !after.contains(&n) {
                1
            } else {
                2
            }] += 1;
            leaving.push((r, n, c));
        }
        toggles.push(Toggle { event, before });
        if round % 5 == 0 {
            keep.push((round, client));
        } else {
            // Live and in command mode: it gets the event.
            let got = client.wait_event(expected, Duration::from_secs(30));
            assert_eq!(got, toggles[round].event, "session {name}");
            previous = Some((round, name, client));
        }
    }
    if let Some((r, n, c)) = previous.take() {
        half_close(&c);
        leaving.push((r, n, c));
    }
    eprintln!(
        "events_during_deletion: of {} deletions, {} done before the next event, {} while it was \
         broadcast, {} after",
        leaving.len(),
        timing[0],
        timing[1],
        timing[2]
    );
    let all: Vec<Value> = toggles.iter().map(|t| t.event.clone()).collect();
    for (r, name, mut c) in leaving {
        let got = c.expect_eof_after(&all);
        // In the order sent, each at most once, only while listed.
        let mut last = None;
        for e in &got {
            let t = toggles
                .iter()
                .position(|t| t.event == *e)
                .expect("a toggle's event");
            assert!(
                last.is_none_or(|l| l < t),
                "session {name}: events out of order or twice: {got:?}"
            );
            last = Some(t);
            assert!(
                toggles[t].before.contains(&name),
                "session {name} (round {r}) got the event of toggle {t}, broadcast after it was \
                 removed: {e}"
            );
        }
        assert!(
            got.iter().all(|e| *e != toggles[r].event),
            "session {name}: its own round's event twice"
        );
    }
    let kept: Vec<String> = keep.iter().map(|(r, _)| format!("e{r}")).collect();
    wait_until("the left sessions to go", || {
        qemu.ids()[1..] == kept[..]
            && qemu.chardev_labels().len() == chardevs_before.len() + kept.len()
    });
    let (status, shutdown) = qemu.quit_with_events();
    assert!(status.success(), "{status}");
    assert_eq!(shutdown.len(), 1, "{shutdown:?}");
    assert_eq!(shutdown[0]["event"], "SHUTDOWN");
    let mut allowed = all.clone();
    allowed.extend(shutdown.iter().cloned());
    for (r, mut c) in keep {
        let got = c.expect_eof_after(&allowed);
        let mut expected = all[r..].to_vec();
        expected.extend(shutdown.iter().cloned());
        assert_eq!(
            got, expected,
            "session e{r}, kept from round {r} to the end"
        );
    }
}
