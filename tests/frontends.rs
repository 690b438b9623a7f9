// SPDX-License-Identifier: GPL-2.0-or-later
//! Dynamic monitors on chardevs with other frontends or clients around
//! them: a pty whose slave is open before monitor-add greets once
//! (issue 10, item 5), and a mux chardev takes monitors next to its
//! other frontends, up to its limit (issue 20).

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

const FULL: &str = "(maximum is 4)";

fn full(chardev: &str) -> String {
    format!("too many uses of multiplexed chardev '{chardev}' {FULL}")
}

/// Monitors on `chardev`, in creation order.
fn on(qemu: &mut Qemu, chardev: &str) -> Vec<String> {
    qemu.monitors()
        .into_iter()
        .filter(|m| m.2 == chardev)
        .map(|m| m.0)
        .collect()
}

/// A mux chardev (`mux=on`) takes monitors next to its other frontends,
/// at run time as on the command line, up to its limit of 4 frontends;
/// a monitor that goes frees its place and nothing else.
#[test]
fn monitors_join_a_mux_with_command_line_frontends() {
    let mut qemu = Qemu::start(&[
        "-chardev",
        "socket,id=c0,path=@DIR@/c0.sock,server=on,wait=off,mux=on",
        "-mon",
        "chardev=c0,mode=readline,id=hmp0",
        "-mon",
        "chardev=c0,mode=control,id=qmp0",
    ]);
    qemu.monitor_add("x", "c0");
    qemu.monitor_add("y", "c0");
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "z", "chardev": "c0"}),
        &full("c0"),
    );
    assert_eq!(on(&mut qemu, "c0"), ["hmp0", "qmp0", "x", "y"]);
    qemu.monitor_remove("qmp0");
    qemu.monitor_add("z", "c0");
    assert_eq!(on(&mut qemu, "c0"), ["hmp0", "x", "y", "z"]);
    for id in ["x", "y", "z"] {
        qemu.monitor_remove(id);
    }
    assert_eq!(on(&mut qemu, "c0"), ["hmp0"]);
    qemu.mgr.err(
        "chardev-remove",
        json!({"id": "c0"}),
        "Chardev 'c0' is busy",
    );
    assert!(qemu.quit().success());
}

/// The same with a mux made at runtime and a real second frontend (an
/// rng-egd backend object), attached and detached around the monitors.
/// A QMP monitor on a mux runs in the main loop with the mux's other
/// frontends, so it offers no out-of-band execution.
#[test]
fn a_dynamic_mux_takes_monitors_beside_other_frontends() {
    let mut qemu = Qemu::start(&[]);
    qemu.add_socket_chardev("s0");
    qemu.mgr.ok(
        "chardev-add",
        json!({"id": "mx", "backend": {"type": "mux", "data": {"chardev": "s0"}}}),
    );
    qemu.monitor_add("qa", "mx");
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "rng-egd", "id": "rng0", "chardev": "mx"}),
    );
    qemu.monitor_add("qb", "mx");
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "monitor-qmp", "id": "qc", "chardev": "mx"}),
    );
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "qd", "chardev": "mx"}),
        &full("mx"),
    );
    // the frontend leaves, the monitors stay
    qemu.mgr.ok("object-del", json!({"id": "rng0"}));
    assert_eq!(on(&mut qemu, "mx"), ["qa", "qb", "qc"]);
    qemu.monitor_remove("qa");
    qemu.mgr.ok("object-del", json!({"id": "qc"}));
    // qb has the focus: the client talks to it, in the main loop
    let mut client = Qmp::connect(&qemu.sock("s0"));
    assert_eq!(client.handshake(&[]), Vec::<String>::new());
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
