// SPDX-License-Identifier: GPL-2.0-or-later
//! Restricted sessions (docs/contract.md, "Restricted sessions"): a
//! monitor with allow-commands / deny-commands runs what its lists say
//! and nothing else, in band and out of band; introspection shows only
//! that; no route leads to a monitor with more rights; and the close
//! actions beyond delete (stop, shutdown, terminate).

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{wait_child, Qemu, Qmp};
use serde_json::{json, Value};

/// A restricted monitor `id` on a new socket chardev, and its client
/// in command mode with `caps`.
fn restricted(qemu: &mut Qemu, id: &str, lists: Value, caps: &[&str]) -> Qmp {
    let chardev = format!("{id}-chr");
    qemu.add_socket_chardev(&chardev);
    let mut args = json!({"id": id, "chardev": chardev});
    args.as_object_mut()
        .expect("object")
        .extend(lists.as_object().expect("lists").clone());
    qemu.mgr.ok("monitor-add", args);
    let mut client = Qmp::connect(&qemu.sock(&chardev));
    client.handshake(caps);
    client
}

fn refused(name: &str) -> String {
    format!("The command '{name}' is not allowed on this monitor")
}

/// The names query-commands lists on `client`.
fn commands(client: &mut Qmp) -> BTreeSet<String> {
    client
        .ok("query-commands", json!({}))
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The command names query-qmp-schema lists on `client`.
fn schema_commands(client: &mut Qmp) -> BTreeSet<String> {
    client
        .ok("query-qmp-schema", json!({}))
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["meta-type"] == "command")
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect()
}

/// Every command QEMU has, tried on a monitor that allows `query-*`:
/// each one outside the list is refused with its name, each one inside
/// runs (it may fail on its arguments, never as "not allowed").
#[test]
fn every_command_is_refused_or_run_as_the_list_says() {
    let mut qemu = Qemu::start(&[]);
    let all = commands(&mut qemu.mgr);
    let mut client = restricted(&mut qemu, "r", json!({"allow-commands": ["query-*"]}), &[]);
    let allowed: BTreeSet<String> = all
        .iter()
        .filter(|c| c.starts_with("query-") || *c == "qmp_capabilities")
        .cloned()
        .collect();
    assert_eq!(commands(&mut client), allowed);
    assert_eq!(schema_commands(&mut client), allowed);
    for name in &all {
        if name == "qmp_capabilities" {
            continue; // in command mode it fails for a reason of its own
        }
        let rsp = client.call(json!({"execute": name, "id": name}));
        assert_eq!(rsp["id"], json!(name), "{rsp}");
        let desc = rsp["error"]["desc"].as_str().unwrap_or("");
        if allowed.contains(name) {
            assert_ne!(desc, refused(name), "{name} must run");
        } else {
            assert_eq!(rsp["error"]["class"], "GenericError", "{name}: {rsp}");
            assert_eq!(desc, refused(name), "{name}: {rsp}");
        }
    }
    // the session goes on, and QEMU's other monitors are unrestricted
    assert_eq!(client.ok("query-name", json!({})), json!({}));
    assert_eq!(commands(&mut qemu.mgr), all);
    assert!(qemu.quit().success());
}

/// deny-commands alone, patterns, and an empty allow list, which
/// leaves only capabilities negotiation.
#[test]
fn deny_lists_and_an_empty_allow_list() {
    let mut qemu = Qemu::start(&[]);
    let mut client = restricted(
        &mut qemu,
        "d",
        json!({"deny-commands": ["quit", "migrate*"]}),
        &[],
    );
    client.err("quit", json!({}), &refused("quit"));
    client.err(
        "migrate-incoming",
        json!({"uri": "x"}),
        &refused("migrate-incoming"),
    );
    assert_eq!(client.ok("query-name", json!({})), json!({}));
    let listed = commands(&mut client);
    assert!(!listed.contains("quit") && !listed.contains("migrate"));
    assert!(listed.contains("stop") && listed.contains("qmp_capabilities"));
    // only by name: human-monitor-command can run anything
    client.err(
        "human-monitor-command",
        json!({"command-line": "info status"}),
        &refused("human-monitor-command"),
    );

    // negotiation only: restricted() negotiated, nothing else runs
    let mut none = restricted(&mut qemu, "e", json!({"allow-commands": []}), &[]);
    none.err("query-name", json!({}), &refused("query-name"));
    none.err("query-commands", json!({}), &refused("query-commands"));
    let monitors = qemu.mgr.ok("query-monitors", json!({}));
    let e = monitors
        .as_array()
        .expect("list")
        .iter()
        .find(|m| m["id"] == "e")
        .expect("monitor e");
    assert_eq!(e["allow-commands"], json!([]), "{e}");
    let d = monitors
        .as_array()
        .expect("list")
        .iter()
        .find(|m| m["id"] == "d")
        .expect("monitor d");
    assert_eq!(d.get("allow-commands"), None, "{d}");
    assert_eq!(d["deny-commands"], json!(["quit", "migrate*"]), "{d}");
    assert!(qemu.quit().success());
}

/// Named, human-monitor-command runs, and then anything can run
/// through it: docs/contract.md says so.
#[test]
fn human_monitor_command_runs_only_where_named() {
    let mut qemu = Qemu::start(&[]);
    let mut client = restricted(
        &mut qemu,
        "h",
        json!({"allow-commands": ["human-monitor-command"]}),
        &[],
    );
    let out = client.ok(
        "human-monitor-command",
        json!({"command-line": "info name"}),
    );
    assert_eq!(out, json!(""));
    assert!(qemu.quit().success());
}

/// exec-oob goes through the same check.
#[test]
fn out_of_band_commands_are_checked_too() {
    let mut qemu = Qemu::start(&[]);
    let mut client = restricted(
        &mut qemu,
        "o",
        json!({"allow-commands": ["query-*", "migrate-pause"]}),
        &["oob"],
    );
    let rsp = client.call(json!({"exec-oob": "x-oob-nothing", "id": 1}));
    assert_eq!(rsp["error"]["desc"], refused("x-oob-nothing"), "{rsp}");
    let rsp = client.call(json!({"exec-oob": "yank", "id": 2, "arguments": {"instances": []}}));
    assert_eq!(
        rsp,
        json!({"id": 2, "error": {"class": "GenericError", "desc": refused("yank")}})
    );
    // allowed: it runs (and fails, no migration is running)
    let rsp = client.call(json!({"exec-oob": "migrate-pause", "id": 3}));
    assert_eq!(rsp["id"], 3, "{rsp}");
    assert_ne!(rsp["error"]["desc"], refused("migrate-pause"), "{rsp}");
    assert!(qemu.quit().success());
}

/// No route leads up: monitor-add, object-add of either monitor type,
/// close actions that run commands the session may not run, and
/// changing an object's lists afterwards.
#[test]
fn a_restricted_session_cannot_give_itself_more_rights() {
    let mut qemu = Qemu::start(&[]);
    let mut client = restricted(
        &mut qemu,
        "r",
        json!({"allow-commands": ["query-*", "monitor-add", "object-add", "chardev-add", "qom-set"]}),
        &[],
    );
    for c in ["c1", "c2", "c3"] {
        let path = qemu.sock(c);
        client.ok("chardev-add", common::socket_chardev(c, &path));
    }
    let more =
        |id: &str| format!("Monitor '{id}' would be allowed more than this monitor is allowed");
    client.err(
        "monitor-add",
        json!({"id": "m", "chardev": "c1"}),
        &more("m"),
    );
    client.err(
        "monitor-add",
        json!({"id": "m", "chardev": "c1", "deny-commands": ["quit"]}),
        &more("m"),
    );
    client.err(
        "monitor-add",
        json!({"id": "m", "chardev": "c1", "allow-commands": ["query-*", "stop"]}),
        &more("m"),
    );
    client.err(
        "monitor-add",
        json!({"id": "m", "chardev": "c1", "allow-commands": ["human-monitor-command"]}),
        &more("m"),
    );
    for action in ["stop", "shutdown", "terminate"] {
        client.err(
            "monitor-add",
            json!({"id": "m", "chardev": "c1", "allow-commands": ["query-name"],
                   "close-action": action}),
            &more("m"),
        );
    }
    client.err(
        "object-add",
        json!({"qom-type": "monitor-qmp", "id": "o", "chardev": "c2"}),
        &more("o"),
    );
    client.err(
        "object-add",
        json!({"qom-type": "monitor-hmp", "id": "o", "chardev": "c2"}),
        &more("o"),
    );
    // narrower is fine, in both spellings
    client.ok(
        "monitor-add",
        json!({"id": "m", "chardev": "c1", "allow-commands": ["query-status"],
               "close-action": "delete"}),
    );
    client.ok(
        "object-add",
        json!({"qom-type": "monitor-qmp", "id": "o", "chardev": "c2",
               "allow-commands": ["query-name"]}),
    );
    // the lists are fixed once the monitor exists, whoever asks
    let fixed = "Property 'allow-commands' can no longer be set";
    client.err(
        "qom-set",
        json!({"path": "/objects/o", "property": "allow-commands", "value": ["*"]}),
        fixed,
    );
    qemu.mgr.err(
        "qom-set",
        json!({"path": "/objects/o", "property": "allow-commands", "value": ["*"]}),
        fixed,
    );
    assert_eq!(
        qemu.mgr.ok(
            "qom-get",
            json!({"path": "/objects/o", "property": "allow-commands"})
        ),
        json!(["query-name"])
    );
    assert!(qemu.quit().success());
}

/// The close actions beyond delete run once per client that leaves,
/// and the monitor stays for the next client.
#[test]
fn close_actions_stop_shutdown_terminate() {
    let mut qemu = Qemu::start(&[]);
    for (id, action, event) in [("s", "stop", "STOP"), ("p", "shutdown", "POWERDOWN")] {
        let chardev = format!("{id}-chr");
        qemu.add_socket_chardev(&chardev);
        qemu.mgr.ok(
            "monitor-add",
            json!({"id": id, "chardev": chardev, "close-action": action}),
        );
        for _ in 0..2 {
            let mut client = Qmp::connect(&qemu.sock(&chardev));
            client.handshake(&[]);
            drop(client);
            qemu.mgr.wait_event(event, Duration::from_secs(30));
            if action == "stop" {
                let status = qemu.mgr.ok("query-status", json!({}));
                assert_eq!(status["status"], "paused", "{status}");
                qemu.mgr.ok("cont", json!({}));
                qemu.mgr.wait_event("RESUME", Duration::from_secs(30));
            }
        }
    }
    qemu.add_socket_chardev("t-chr");
    qemu.mgr.ok(
        "monitor-add",
        json!({"id": "t", "chardev": "t-chr", "close-action": "terminate"}),
    );
    let client = Qmp::connect(&qemu.sock("t-chr"));
    drop(client);
    let status = wait_child(
        &mut qemu.child,
        Duration::from_secs(30),
        "QEMU to terminate",
    );
    assert!(status.success(), "{status}");
}

/// qemu-storage-daemon has no guest to stop or power off.
#[test]
fn the_storage_daemon_refuses_guest_close_actions() {
    let mut qsd = Qemu::start_storage_daemon(&[]);
    qsd.add_socket_chardev("c");
    for action in ["stop", "shutdown", "terminate"] {
        qsd.mgr.err(
            "monitor-add",
            json!({"id": "m", "chardev": "c", "close-action": action}),
            "This close-action needs a guest, which this program does not have",
        );
    }
    qsd.mgr.ok(
        "monitor-add",
        json!({"id": "m", "chardev": "c", "allow-commands": ["query-*"]}),
    );
    assert!(qsd.quit().success());
}
