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

use common::{bin_dir, printed_by_qemu, socketpair, wait_timeout, wait_until, Qemu, Qmp};
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
    assert_eq!(
        names,
        [
            "allow-commands",
            "chardev",
            "close-action",
            "deny-commands",
            "pretty"
        ],
        "{props}"
    );
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
    assert_eq!(names, ["chardev", "readline"], "{hmp}");
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

/// The monitor objects in /objects, as "id:type", sorted.
fn monitor_objects(qemu: &mut Qemu) -> Vec<String> {
    let list = qemu.mgr.ok("qom-list", json!({"path": "/objects"}));
    let mut v: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|o| {
            let t = o["type"].as_str()?.strip_prefix("child<monitor-")?;
            Some(format!(
                "{}:monitor-{}",
                o["name"].as_str()?,
                t.strip_suffix('>')?
            ))
        })
        .collect();
    v.sort();
    v
}

fn qom_get(qemu: &mut Qemu, id: &str, prop: &str) -> Value {
    qemu.mgr.ok(
        "qom-get",
        json!({"path": format!("/objects/{id}"), "property": prop}),
    )
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
        [
            "allow-commands",
            "chardev",
            "close-action",
            "deny-commands",
            "pretty",
            "type"
        ]
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
    assert_eq!(names(&props, "name"), ["chardev", "readline", "type"]);
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
    let scalar = |e: &Value| match e["meta-type"].as_str() {
        Some("builtin") => e["json-type"].as_str().expect("json-type").to_owned(),
        Some("enum") => format!("enum{}", e["members"]),
        other => panic!("unexpected member type {other:?}"),
    };
    let type_name = |t: &str| {
        let e = by_name(t);
        match e["meta-type"].as_str() {
            Some("array") => format!(
                "[{}]",
                scalar(by_name(e["element-type"].as_str().expect("element-type")))
            ),
            _ => scalar(e),
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
    let close_action = r#"enum[{"name":"none"},{"name":"delete"},{"name":"stop"},{"name":"shutdown"},{"name":"terminate"}]"#;
    assert_eq!(
        schema_members(&schema, "monitor-qmp"),
        [
            ("chardev".into(), "string".into(), false),
            ("pretty".into(), "boolean".into(), true),
            ("close-action".into(), close_action.into(), true),
            ("allow-commands".into(), "[string]".into(), true),
            ("deny-commands".into(), "[string]".into(), true),
        ]
    );
    assert_eq!(
        schema_members(&schema, "monitor-hmp"),
        [
            ("chardev".into(), "string".into(), false),
            ("readline".into(), "boolean".into(), true),
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
    assert_eq!(monitor_objects(&mut qemu), ["compat_monitor0:monitor-qmp"]);
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
    assert_eq!(
        monitor_objects(&mut qemu),
        [
            "compat_monitor0:monitor-qmp",
            "h1:monitor-hmp",
            "old:monitor-qmp"
        ]
    );
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
    let stderr = printed_by_qemu(&out.stderr);
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
    // the storage daemon's --monitor is an object too
    let objects = monitor_objects(&mut qsd);
    assert_eq!(objects.len(), 3, "{objects:?}");
    qsd.mgr.ok("object-del", json!({"id": "m1"}));
    qsd.mgr.ok("monitor-remove", json!({"id": "m2"}));
    let ids = qsd.ids();
    assert_eq!(
        monitor_objects(&mut qsd),
        [format!("{}:monitor-qmp", ids[0])]
    );
    assert!(qsd.quit().success());
}

/// Every monitor is an object in /objects, however it was made (-qmp,
/// -monitor, -mon, a mux chardev, -object, monitor-add), as in QEMU
/// 11.1: qom-get reads what it was made with, object-del removes a QMP
/// one with 11.1's rules, and /objects and query-monitors never
/// disagree.
#[test]
fn every_monitor_is_an_object() {
    let mut qemu = Qemu::start(&[
        "-monitor",
        "null",
        "-chardev",
        "null,id=c2",
        "-mon",
        "chardev=c2,mode=control,id=old,pretty=on",
        "-chardev",
        "socket,id=mux0,path=@DIR@/mux0.sock,server=on,wait=off,mux=on",
        "-mon",
        "chardev=mux0,mode=readline,id=muxhmp",
        "-mon",
        "chardev=mux0,mode=control,id=muxqmp",
        "-chardev",
        "null,id=c3",
        "-object",
        "monitor-hmp,id=h1,chardev=c3,readline=off",
    ]);
    let all = [
        "compat_monitor0:monitor-qmp",
        "compat_monitor1:monitor-hmp",
        "h1:monitor-hmp",
        "muxhmp:monitor-hmp",
        "muxqmp:monitor-qmp",
        "old:monitor-qmp",
    ];
    assert_eq!(monitor_objects(&mut qemu), all);
    let mut ids = qemu.ids();
    ids.sort();
    assert_eq!(
        ids,
        [
            "compat_monitor0",
            "compat_monitor1",
            "h1",
            "muxhmp",
            "muxqmp",
            "old"
        ]
    );

    for (id, prop, value) in [
        ("compat_monitor0", "pretty", json!(false)),
        ("compat_monitor0", "close-action", json!("none")),
        ("compat_monitor1", "chardev", json!("compat_monitor1")),
        ("compat_monitor1", "readline", json!(true)),
        ("old", "chardev", json!("c2")),
        ("old", "pretty", json!(true)),
        ("muxhmp", "chardev", json!("mux0")),
        ("muxqmp", "chardev", json!("mux0")),
        ("h1", "readline", json!(false)),
    ] {
        assert_eq!(qom_get(&mut qemu, id, prop), value, "{id}.{prop}");
    }
    qemu.mgr.err(
        "qom-set",
        json!({"path": "/objects/old", "property": "pretty", "value": false}),
        "Property 'pretty' can no longer be set",
    );

    // object-del: 11.1's rules, on monitors made any way
    qemu.mgr.err(
        "object-del",
        json!({"id": "compat_monitor0"}),
        "Cannot delete the current QMP monitor",
    );
    for hmp in ["compat_monitor1", "muxhmp", "h1"] {
        qemu.mgr.err(
            "object-del",
            json!({"id": hmp}),
            "Deleting HMP monitors is not supported",
        );
    }
    qemu.mgr.ok("object-del", json!({"id": "old"}));
    // on the mux, only the monitor goes: the chardev keeps its HMP one
    qemu.mgr.ok("object-del", json!({"id": "muxqmp"}));
    qemu.mgr.err(
        "chardev-remove",
        json!({"id": "mux0"}),
        "Chardev 'mux0' is busy",
    );
    // the chardev of a removed -mon monitor can take a new one
    qemu.monitor_add("m1", "c2");
    assert_eq!(qom_get(&mut qemu, "m1", "chardev"), json!("c2"));
    assert_eq!(
        monitor_objects(&mut qemu),
        [
            "compat_monitor0:monitor-qmp",
            "compat_monitor1:monitor-hmp",
            "h1:monitor-hmp",
            "m1:monitor-qmp",
            "muxhmp:monitor-hmp",
        ]
    );
    // monitor-remove takes the object along
    qemu.monitor_remove("m1");
    assert_eq!(
        monitor_objects(&mut qemu),
        [
            "compat_monitor0:monitor-qmp",
            "compat_monitor1:monitor-hmp",
            "h1:monitor-hmp",
            "muxhmp:monitor-hmp",
        ]
    );

    // one namespace: monitors and other objects
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "secret", "id": "s1", "data": "x"}),
    );
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "s1", "chardev": "c2"}),
        "An object with id 's1' already exists",
    );
    qemu.mgr.err(
        "monitor-add",
        json!({"id": "h1", "chardev": "c2"}),
        "Monitor id 'h1' is already in use",
    );
    qemu.mgr.err(
        "object-add",
        json!({"qom-type": "monitor-qmp", "id": "compat_monitor1", "chardev": "c2"}),
        "attempt to add duplicate property 'compat_monitor1' to object (type 'container')",
    );
    let mut ids = qemu.ids();
    ids.sort();
    assert_eq!(ids, ["compat_monitor0", "compat_monitor1", "h1", "muxhmp"]);
    assert!(qemu.quit().success());
}

/// An id generated for a monitor made without one skips names that
/// objects have: the monitor's object goes there.  -qmp and -monitor
/// name their monitor while the command line is parsed, after their
/// chardev, and a taken name is an error.
#[test]
fn generated_ids_skip_object_names() {
    let mut qemu = Qemu::start(&[
        "-object",
        "secret,id=compat_monitor1,data=x",
        "-chardev",
        "null,id=c1",
        "-mon",
        "chardev=c1",
    ]);
    assert_eq!(
        monitor_objects(&mut qemu),
        ["compat_monitor0:monitor-qmp", "compat_monitor2:monitor-hmp"]
    );
    assert_eq!(
        qom_get(&mut qemu, "compat_monitor2", "chardev"),
        json!("c1")
    );
    assert!(qemu.quit().success());

    let out = Command::new(bin_dir().join("qemu-system-x86_64"))
        .args(["-M", "none", "-accel", "qtest", "-display", "none"])
        .args(["-object", "secret,id=compat_monitor0,data=x"])
        .args(["-monitor", "null"])
        .output()
        .expect("qemu-system-x86_64");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        printed_by_qemu(&out.stderr),
        "qemu-system-x86_64: -monitor null: An object with id 'compat_monitor0' already exists\n"
    );
}

/// monitor-hmp has QEMU 11.1's properties: `readline` (default on),
/// and no `pretty`, which QAPI refuses as for any unknown member.
#[test]
fn monitor_hmp_has_readline_and_no_pretty() {
    let mut qemu = Qemu::start(&[]);
    qemu.mgr.ok(
        "chardev-add",
        json!({"id": "c1", "backend": {"type": "null", "data": {}}}),
    );
    for pretty in [true, false] {
        qemu.mgr.err(
            "object-add",
            json!({"qom-type": "monitor-hmp", "id": "h1", "chardev": "c1", "pretty": pretty}),
            "Parameter 'pretty' is unexpected",
        );
    }
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "monitor-hmp", "id": "h1", "chardev": "c1"}),
    );
    assert_eq!(qom_get(&mut qemu, "h1", "readline"), json!(true));
    assert!(qemu.quit().success());

    let out = Command::new(bin_dir().join("qemu-system-x86_64"))
        .args(["-M", "none", "-accel", "qtest", "-display", "none"])
        .args(["-chardev", "null,id=c1", "-object"])
        .arg("monitor-hmp,id=h1,chardev=c1,pretty=off")
        .output()
        .expect("qemu-system-x86_64");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        printed_by_qemu(&out.stderr),
        "qemu-system-x86_64: -object monitor-hmp,id=h1,chardev=c1,pretty=off: Invalid \
         parameter 'pretty'\n"
    );
}

/// What a socket client of a chardev reads, searched for strings.
struct Peer {
    sock: std::os::unix::net::UnixStream,
    /// Not yet matched.
    got: Vec<u8>,
    /// Everything read.
    log: String,
}

impl Peer {
    fn connect(path: &std::path::Path) -> Self {
        let sock = std::os::unix::net::UnixStream::connect(path).expect("connect");
        Peer {
            sock,
            got: Vec::new(),
            log: String::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write");
    }

    /// Reads until `needle` came, then forgets what came up to it;
    /// fails after 30 s.
    fn expect(&mut self, needle: &str) {
        use std::io::Read;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(at) = self
                .got
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                self.got.drain(..at + needle.len());
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "waited 30 s for {needle:?}; got {:?}",
                String::from_utf8_lossy(&self.got)
            );
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = [0; 4096];
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("EOF waiting for {needle:?}"),
                Ok(n) => {
                    self.got.extend_from_slice(&buf[..n]);
                    self.log.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// An HMP monitor with readline=off, as the gdbstub's: no line
/// editing, no prompt, no echo.  Each chunk of input must be a whole
/// NUL-terminated command, as the gdbstub hands them over; a socket
/// delivers a byte at a time, each of which is refused.  With readline
/// (the default), the same input is a command.
#[test]
fn monitor_hmp_without_readline() {
    let mut qemu = Qemu::start(&[
        "-chardev",
        "socket,id=c1,path=@DIR@/c1.sock,server=on,wait=off",
        "-object",
        "monitor-hmp,id=h1,chardev=c1,readline=off",
        "-chardev",
        "socket,id=c2,path=@DIR@/c2.sock,server=on,wait=off",
        "-object",
        "monitor-hmp,id=h2,chardev=c2",
    ]);
    let banner = "monitor - type 'help' for more information\r\n";
    let mut peer = Peer::connect(&qemu.sock("c1"));
    peer.expect(banner);
    peer.send(b"info\r");
    for _ in 0.."info\r".len() {
        peer.expect("corrupted command\r\n");
    }
    // a command after them is answered on the other monitor, and by
    // then any prompt or echo of h1 would have come
    let mut other = Peer::connect(&qemu.sock("c2"));
    other.expect(banner);
    other.expect("(qemu) ");
    other.send(b"info status\r");
    // readline echoes the line as it is typed, redrawing it
    other.expect("info status\u{1b}[K\r\n");
    other.expect("VM status: running\r\n");
    qemu.mgr.ok(
        "human-monitor-command",
        json!({"command-line": "info name"}),
    );
    // "QEMU <version> monitor - ...", and nothing but the refusals
    let (qemu_version, rest) = peer.log.split_once(' ').expect("banner");
    assert_eq!(qemu_version, "QEMU");
    assert_eq!(
        rest.split_once(' ').map(|r| r.1),
        Some(format!("{banner}{}", "corrupted command\r\n".repeat(5)).as_str())
    );
    assert!(qemu.quit().success());
}

/// Monitors join a mux chardev (`mux=on`) that has other frontends, in
/// both spellings, up to the mux's limit; the focus moves between them
/// with C-a c, and a removed monitor leaves the others, the focus
/// going on to the next one.
#[test]
fn monitors_share_a_mux() {
    let mut qemu = Qemu::start(&[
        "-chardev",
        "socket,id=mux0,path=@DIR@/mux0.sock,server=on,wait=off,mux=on",
        "-mon",
        "chardev=mux0,mode=readline,id=hmp0",
    ]);
    let mut peer = Peer::connect(&qemu.sock("mux0"));
    peer.send(b"info status\r");
    peer.expect("VM status: running\r\n");

    // a QMP monitor joins the HMP one, and takes the focus as it comes;
    // with the mux's other frontends in the main loop, it offers no OOB
    qemu.monitor_add("q1", "mux0");
    peer.expect(r#"{"QMP": "#);
    peer.expect(r#""capabilities": []}}"#);
    peer.send(b"{\"execute\": \"qmp_capabilities\"}\n");
    peer.expect("{\"return\": {}}");
    // C-a c: back to the HMP monitor, and again to the QMP one
    peer.send(b"\x01c");
    peer.send(b"info status\r");
    peer.expect("VM status: running\r\n");
    peer.send(b"\x01c");
    peer.send(b"{\"execute\": \"query-name\"}\n");
    peer.expect("{\"return\": {}}");

    // the object spelling joins too, up to the mux's limit of 4
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "monitor-qmp", "id": "q2", "chardev": "mux0"}),
    );
    qemu.mgr.ok(
        "object-add",
        json!({"qom-type": "monitor-hmp", "id": "h2", "chardev": "mux0"}),
    );
    let full = "too many uses of multiplexed chardev 'mux0' (maximum is 4)";
    qemu.mgr
        .err("monitor-add", json!({"id": "q3", "chardev": "mux0"}), full);
    qemu.mgr.err(
        "object-add",
        json!({"qom-type": "monitor-qmp", "id": "q3", "chardev": "mux0"}),
        full,
    );
    qemu.mgr.err(
        "object-add",
        json!({"qom-type": "monitor-hmp", "id": "h3", "chardev": "mux0"}),
        full,
    );
    assert_eq!(
        monitor_objects(&mut qemu),
        [
            "compat_monitor0:monitor-qmp",
            "h2:monitor-hmp",
            "hmp0:monitor-hmp",
            "q1:monitor-qmp",
            "q2:monitor-qmp",
        ]
    );
    let on_mux: Vec<String> = qemu
        .monitors()
        .into_iter()
        .filter(|m| m.2 == "mux0")
        .map(|m| m.0)
        .collect();
    assert_eq!(on_mux, ["hmp0", "q1", "q2", "h2"]);

    // h2 came last and has the focus; removing q2 and q1 leaves it
    qemu.mgr.ok("object-del", json!({"id": "q2"}));
    qemu.monitor_remove("q1");
    peer.send(b"info name\r");
    peer.send(b"info status\r");
    peer.expect("VM status: running\r\n");
    // a freed place takes a new monitor
    qemu.monitor_add("q4", "mux0");
    peer.expect(r#"{"QMP": "#);
    peer.send(b"{\"execute\": \"qmp_capabilities\"}\n");
    peer.expect("{\"return\": {}}");
    // q4 has the focus; when it goes, the next monitor (h2 or hmp0,
    // both HMP) gets it: HMP answers without C-a c
    qemu.monitor_remove("q4");
    peer.send(b"info status\r");
    peer.expect("VM status: running\r\n");
    assert_eq!(
        monitor_objects(&mut qemu),
        [
            "compat_monitor0:monitor-qmp",
            "h2:monitor-hmp",
            "hmp0:monitor-hmp",
        ]
    );
    assert!(qemu.quit().success());
}
