//! examples/vmspawn_manager.rs, run for real: a shell client speaks QMP
//! on the socketpair end the manager gives it; afterwards the monitor
//! and the chardev are gone.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Qemu;

fn example_binary() -> PathBuf {
    // cargo builds examples next to the test binaries' deps/ directory
    let exe = std::env::current_exe().expect("test binary");
    exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("examples/vmspawn_manager")
}

#[test]
fn manager_hands_out_a_session_and_cleans_up() {
    // A monitor takes one client at a time: the example gets its own.
    let mut qemu = Qemu::start(&["-qmp", "unix:@DIR@/vmspawn.sock,server=on,wait=off"]);
    let chardevs_before = qemu.mgr.ok("query-chardev", serde_json::json!({}));
    let client = r#"
        read -r greeting
        echo '{"execute": "qmp_capabilities"}'; read -r caps
        echo '{"execute": "query-monitors"}'; read -r monitors
        printf '%s\n%s\n' "$greeting" "$monitors" >&2
    "#;
    let out = Command::new(example_binary())
        .arg(qemu.dir.join("vmspawn.sock"))
        .args(["sh", "-c", client])
        .output()
        .expect("run vmspawn_manager");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = String::from_utf8(out.stderr).expect("utf8");
    let mut lines = seen.lines();
    let greeting: serde_json::Value = serde_json::from_str(lines.next().expect("greeting")).expect("json");
    assert_eq!(greeting["QMP"]["capabilities"], serde_json::json!(["oob"]));
    let monitors: serde_json::Value = serde_json::from_str(lines.next().expect("monitors")).expect("json");
    let session = &monitors["return"][2];
    assert_eq!(session["dynamic"], true);
    assert!(session["id"].as_str().expect("id").starts_with("vmspawn-"), "{monitors}");
    // The manager removed the monitor and the chardev after the client left.
    assert_eq!(qemu.ids(), ["compat_monitor0", "compat_monitor1"]);
    assert_eq!(qemu.mgr.ok("query-chardev", serde_json::json!({})), chardevs_before);
    assert!(qemu.quit().success());
}
