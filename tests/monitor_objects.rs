// SPDX-License-Identifier: GPL-2.0-or-later
//! QEMU 11.1's spelling of runtime monitors, the monitor-qmp and
//! monitor-hmp objects: what a tool written for 11.1 probes (the schema,
//! the QOM types and properties, `-object help`) and starts QEMU with
//! (`-object` on an inherited socket, the JSON form), on the system
//! emulator and the storage daemon.

mod common;

use std::{
    io::Write,
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::Duration,
};

use common::{bin_dir, socketpair, wait_timeout, wait_until, Qemu, Qmp};
use serde_json::{json, Value};

/// Runs the system emulator with `args` and returns its stdout.
fn run(args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("qemu-system-x86_64"))
        .args(args)
        .output()
        .expect("qemu-system-x86_64");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn object_help_lists_the_types_and_their_properties() {
    let types = run(&["-object", "help"]);
    let listed: Vec<&str> = types
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("monitor"))
        .collect();
    assert_eq!(listed, ["monitor-hmp", "monitor-qmp"], "{types}");

    let props = run(&["-object", "monitor-qmp,help"]);
    let names: Vec<&str> = props
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split('=').next())
        .collect();
    assert_eq!(names, ["chardev", "close-action", "pretty"], "{props}");
    assert!(
        props.contains("close-action=<MonitorQMPCloseAction>"),
        "{props}"
    );
    let hmp = run(&["-object", "monitor-hmp,help"]);
    let names: Vec<&str> = hmp
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split('=').next())
        .collect();
    assert_eq!(names, ["chardev", "pretty"], "{hmp}");
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e[key].as_str().expect("name").to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn qom_lists_the_types_and_their_properties() {
    let mut qemu = Qemu::start(&[]);
    let types = qemu
        .mgr
        .ok("qom-list-types", json!({"implements": "monitor"}));
    assert_eq!(names(&types, "name"), ["monitor-hmp", "monitor-qmp"]);
    let all = qemu.mgr.ok(
        "qom-list-types",
        json!({"implements": "monitor", "abstract": true}),
    );
    assert_eq!(
        names(&all, "name"),
        ["monitor", "monitor-hmp", "monitor-qmp"]
    );
    let user_creatable = qemu
        .mgr
        .ok("qom-list-types", json!({"implements": "user-creatable"}));
    let uc = names(&user_creatable, "name");
    assert!(uc.contains(&"monitor-qmp".to_owned()), "{uc:?}");
    assert!(uc.contains(&"monitor-hmp".to_owned()), "{uc:?}");

    let props = qemu
        .mgr
        .ok("qom-list-properties", json!({"typename": "monitor-qmp"}));
    assert_eq!(
        names(&props, "name"),
        ["chardev", "close-action", "pretty", "type"]
    );
    let close = props
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["name"] == "close-action")
        .expect("close-action");
    assert_eq!(close["type"], "MonitorQMPCloseAction");
    let props = qemu
        .mgr
        .ok("qom-list-properties", json!({"typename": "monitor-hmp"}));
    assert_eq!(names(&props, "name"), ["chardev", "pretty", "type"]);
    assert!(qemu.quit().success());
}

/// The members of `object-add`'s argument for qom-type `qom_type`, as
/// (name, type as the schema spells it, optional), found the way
/// libvirt probes the schema: by following names, not numbers.
fn schema_members(schema: &Value, qom_type: &str) -> Vec<(String, String, bool)> {
    let entities = schema.as_array().expect("schema");
    let by_name = |name: &str| {
        entities
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in the schema"))
    };
    let add = entities
        .iter()
        .find(|e| e["meta-type"] == "command" && e["name"] == "object-add")
        .expect("object-add");
    let union = by_name(add["arg-type"].as_str().expect("arg-type"));
    let variant = union["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["case"] == qom_type)
        .unwrap_or_else(|| panic!("no {qom_type} case in ObjectOptions"));
    let props = by_name(variant["type"].as_str().expect("type"));
    let type_name = |t: &str| {
        let e = by_name(t);
        match e["meta-type"].as_str() {
            Some("builtin") => e["json-type"].as_str().expect("json-type").to_owned(),
            Some("enum") => format!("enum{}", e["members"]),
            other => panic!("unexpected member type {other:?}"),
        }
    };
    props["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name").to_owned(),
                type_name(m["type"].as_str().expect("type")),
                m.get("default").is_some(),
            )
        })
        .collect()
}

#[test]
fn the_schema_has_the_object_types_with_their_properties() {
    let mut qemu = Qemu::start(&[]);
    let schema = qemu.mgr.ok("query-qmp-schema", json!({}));
    let close_action = r#"enum[{"name":"none"},{"name":"delete"}]"#;
    assert_eq!(
        schema_members(&schema, "monitor-qmp"),
        [
            ("chardev".into(), "string".into(), false),
            ("pretty".into(), "boolean".into(), true),
            ("close-action".into(), close_action.into(), true),
        ]
    );
    assert_eq!(
        schema_members(&schema, "monitor-hmp"),
        [
            ("chardev".into(), "string".into(), false),
            ("pretty".into(), "boolean".into(), true),
        ]
    );
    assert!(qemu.quit().success());
}

/// The fd form of a socket chardev, as a manager that passes one end
/// of a socketpair at start-up uses it, with a one-shot monitor object.
#[test]
fn object_on_an_inherited_socket_with_close_action_delete() {
    let (ours, theirs) = socketpair();
    let fd = theirs.as_raw_fd();
    let chardev = format!("socket,id=s1,fd={fd}");
    let mut qemu = Qemu::start_inheriting(
        &[
            "-chardev",
            &chardev,
            "-object",
            "monitor-qmp,id=m1,chardev=s1,close-action=delete",
        ],
        &[fd],
    );
    drop(theirs);
    let objects = qemu.mgr.ok("qom-list", json!({"path": "/objects"}));
    assert!(
        objects
            .as_array()
            .expect("list")
            .contains(&json!({"name": "m1", "type": "child<monitor-qmp>"})),
        "{objects}"
    );
    let list = qemu.mgr.ok("query-monitors", json!({}));
    assert_eq!(
        list[0],
        json!({"id": "m1", "mode": "control", "chardev": "s1", "dynamic": false,
               "close-action": "delete"})
    );
    let mut client = Qmp::from_fd(ours);
    assert_eq!(client.handshake(&["oob"]), ["oob"]);
    assert_eq!(client.ok("query-name", json!({})), json!({}));
    drop(client);
    wait_until("m1 and s1 to go with the client", || {
        !qemu.chardev_labels().contains(&"s1".to_owned())
    });
    assert_eq!(qemu.ids(), ["compat_monitor0"]);
    let objects = qemu.mgr.ok("qom-list", json!({"path": "/objects"}));
    assert!(!objects.to_string().contains("monitor-qmp"), "{objects}");
    assert!(qemu.quit().success());
}

/// The JSON form of -object, with every property, next to `-mon`,
/// which keeps working without a deprecation warning.
#[test]
fn json_object_form_and_mon_together() {
    let json_obj = json!({"qom-type": "monitor-qmp", "id": "j1", "chardev": "c1",
                          "pretty": true, "close-action": "none"})
    .to_string();
    let mut qemu = Qemu::start(&[
        "-chardev",
        "socket,id=c1,path=@DIR@/c1.sock,server=on,wait=off",
        "-object",
        &json_obj,
        "-chardev",
        "null,id=c2",
        "-mon",
        "chardev=c2,mode=control,id=old",
        "-chardev",
        "null,id=c3",
        "-object",
        "monitor-hmp,id=h1,chardev=c3",
    ]);
    let list = qemu.mgr.ok("query-monitors", json!({}));
    let summary: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|m| format!("{}:{}:{}", m["id"], m["mode"], m["chardev"]))
        .collect();
    assert_eq!(
        summary,
        [
            r#""j1":"control":"c1""#,
            r#""h1":"readline":"c3""#,
            r#""compat_monitor0":"control":"compat_monitor0""#,
            r#""old":"control":"c2""#,
        ]
    );
    for (prop, value) in [
        ("pretty", json!(true)),
        ("close-action", json!("none")),
        ("chardev", json!("c1")),
    ] {
        assert_eq!(
            qemu.mgr
                .ok("qom-get", json!({"path": "/objects/j1", "property": prop})),
            value
        );
    }
    qemu.mgr.ok("object-del", json!({"id": "j1"}));
    assert_eq!(qemu.ids(), ["h1", "compat_monitor0", "old"]);
    assert!(qemu.quit().success());
}

/// `-mon` is not deprecated on 10.x: a QEMU whose QMP monitor comes from
/// `-mon` (on stdio here) runs, answers and quits without a word on
/// stderr.
#[test]
fn mon_gives_no_deprecation_warning() {
    let mut child = Command::new(bin_dir().join("qemu-system-x86_64"))
        .args(["-M", "none", "-accel", "qtest", "-display", "none"])
        .args([
            "-chardev",
            "stdio,id=s",
            "-mon",
            "chardev=s,mode=control,id=cli",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-monitors\"}\n\
              {\"execute\": \"quit\"}\n",
        )
        .expect("write");
    wait_timeout(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""id": "cli""#), "{stdout}");
    // On the sanitizer build, ASan adds notes of its own ("==PID==...")
    let stderr: Vec<&str> = std::str::from_utf8(&out.stderr)
        .expect("utf8")
        .lines()
        .filter(|l| !l.starts_with("=="))
        .collect();
    assert!(stderr.is_empty(), "{stderr:?}");
}

#[test]
fn storage_daemon_has_monitor_qmp_objects() {
    let mut qsd = Qemu::start_storage_daemon(&[
        "--chardev",
        "null,id=c1",
        "--object",
        "monitor-qmp,id=m1,chardev=c1",
    ]);
    let types = qsd
        .mgr
        .ok("qom-list-types", json!({"implements": "monitor"}));
    assert_eq!(names(&types, "name"), ["monitor-qmp"]);
    qsd.mgr.ok(
        "chardev-add",
        json!({"id": "c2", "backend": {"type": "null", "data": {}}}),
    );
    qsd.mgr.ok(
        "object-add",
        json!({"qom-type": "monitor-qmp", "id": "m2", "chardev": "c2"}),
    );
    let list = qsd.mgr.ok("query-monitors", json!({}));
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3, "{list}");
    assert!(ids.contains(&"m1") && ids.contains(&"m2"), "{list}");
    // No HMP in the storage daemon, so no monitor-hmp type, although
    // the schema it shares with the system emulator names it
    qsd.mgr.err(
        "object-add",
        json!({"qom-type": "monitor-hmp", "id": "h1", "chardev": "c2"}),
        "invalid object type: monitor-hmp",
    );
    qsd.mgr.ok("object-del", json!({"id": "m1"}));
    qsd.mgr.ok("monitor-remove", json!({"id": "m2"}));
    let objects = qsd.mgr.ok("qom-list", json!({"path": "/objects"}));
    assert!(!objects.to_string().contains("monitor-qmp"), "{objects}");
    assert!(qsd.quit().success());
}
