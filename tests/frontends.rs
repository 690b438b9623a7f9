// SPDX-License-Identifier: GPL-2.0-or-later
//! Dynamic monitors on chardevs with other frontends or clients around
//! them: a pty whose slave is open before monitor-add greets once, and
//! a mux chardev with any frontend attached is in use.  (Issue 10,
//! items 5 and 12.)

mod common;

use common::{open_pty, Qemu, Qmp};
use serde_json::json;

fn add_pty(qemu: &mut Qemu, id: &str) -> String {
    let ret = qemu.mgr.ok(
        "chardev-add",
        json!({"id": id, "backend": {"type": "pty", "data": {}}}),
    );
    ret["pty"].as_str().expect("pty path").to_owned()
}

/// Item 5: the client opens the pty before monitor-add.  It got two
/// greetings (the pty's own CHR_EVENT_OPENED and the replay for a
/// backend found open), so the reply to its first command came after
/// the second one.  Exactly one greeting, then replies: `handshake`
/// reads one greeting, and `ok` fails if the next message is another.
#[test]
fn a_pty_opened_before_monitor_add_gets_one_greeting() {
    let mut qemu = Qemu::start(&[]);
    for round in 0..10 {
        let id = format!("p{round}");
        let path = add_pty(&mut qemu, &id);
        let mut client = Qmp::from_fd(open_pty(&path));
        qemu.monitor_add("m", &id);
        client.handshake(&[]);
        assert_eq!(
            client.ok("query-name", json!({})),
            json!({}),
            "round {round}"
        );
        // Removed and added again while the client holds the slave open:
        // the new monitor finds the backend open and greets once.
        qemu.monitor_remove("m");
        qemu.monitor_add("m", &id);
        client.handshake(&[]);
        assert_eq!(
            client.ok("query-name", json!({})),
            json!({}),
            "round {round}"
        );
        qemu.monitor_remove("m");
        drop(client);
        qemu.mgr.ok("chardev-remove", json!({"id": id}));
    }
    assert!(qemu.quit().success());
}

const IN_USE: &str = "is already in use by another frontend";

fn in_use(chardev: &str) -> String {
    format!("Chardev '{chardev}' {IN_USE}")
}

/// Item 12: a mux chardev is in use while any frontend is attached,
/// whichever has the focus.  The check used to read the focused
/// frontend only: once the focused one left, monitor-add attached a QMP
/// monitor next to an HMP monitor (moving the mux into the I/O thread).
#[test]
fn a_mux_with_a_command_line_frontend_is_in_use() {
    let mut qemu = Qemu::start(&[
        "-chardev",
        "socket,id=c0,path=@DIR@/c0.sock,server=on,wait=off,mux=on",
        "-mon",
        "chardev=c0,mode=readline,id=hmp0",
        "-mon",
        "chardev=c0,mode=control,id=qmp0",
    ]);
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "x", "chardev": "c0"}),
        &in_use("c0"),
    );
    qemu.monitor_remove("qmp0");
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "x", "chardev": "c0"}),
        &in_use("c0"),
    );
    let on_c0: Vec<_> = qemu
        .monitors()
        .into_iter()
        .filter(|m| m.2 == "c0")
        .map(|m| m.0)
        .collect();
    assert_eq!(on_c0, ["hmp0"]);
    assert!(qemu.quit().success());
}

/// The same with a mux made at runtime and a real second frontend (an
/// rng-egd backend object), attached and detached around the monitors.
#[test]
fn a_dynamic_mux_takes_one_monitor_and_no_other_frontend_beside_it() {
    let mut qemu = Qemu::start(&[]);
    qemu.add_socket_chardev("s0");
    qemu.mgr.ok(
        "chardev-add",
        json!({"id": "mx", "backend": {"type": "mux", "data": {"chardev": "s0"}}}),
    );
    qemu.monitor_add("qa", "mx");
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "qb", "chardev": "mx"}),
        &in_use("mx"),
    );
    // A real frontend beside the monitor takes the focus; when it leaves,
    // the monitor is still there.
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "rng-egd", "id": "rng0", "chardev": "mx"}),
    );
    qemu.mgr.ok("object-del", json!({"id": "rng0"}));
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "qb", "chardev": "mx"}),
        &in_use("mx"),
    );
    qemu.monitor_remove("qa");
    // The frontend alone makes the mux busy too.
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "rng-egd", "id": "rng0", "chardev": "mx"}),
    );
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "qb", "chardev": "mx"}),
        &in_use("mx"),
    );
    qemu.mgr.ok("object-del", json!({"id": "rng0"}));
    qemu.monitor_add("qb", "mx");
    let mut client = Qmp::connect(&qemu.sock("s0"));
    client.handshake(&[]);
    assert_eq!(client.ok("query-name", json!({})), json!({}));
    // The connection belongs to the mux's backend, which may get other
    // frontends: removing the monitor detaches it from the mux only.
    qemu.monitor_remove("qb");
    drop(client);
    qemu.mgr.ok("chardev-remove", json!({"id": "mx"}));
    qemu.mgr.ok("chardev-remove", json!({"id": "s0"}));
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    assert!(qemu.quit().success());
}
