// SPDX-License-Identifier: GPL-2.0-or-later
//! examples/vmspawn_manager.rs, run for real: a shell client speaks QMP
//! on the socketpair end the manager gives it; afterwards the monitor
//! and the chardev are gone.

mod common;

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::{join_timeout, wait_child, Qemu};

fn example_binary() -> PathBuf {
    // cargo builds examples next to the test binaries' deps/ directory
    let exe = std::env::current_exe().expect("test binary");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples/vmspawn_manager")
}

fn read_to_end_in_thread(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        pipe.read_to_end(&mut out).expect("read the output");
        out
    })
}

/// `cmd.output()`, bounded: the command runs in a process group of its
/// own, which is killed (with the client the example started) if it
/// does not exit within `limit`.
fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pgid = child.id() as i32;
    let stdout = read_to_end_in_thread(child.stdout.take().expect("piped"));
    let stderr = read_to_end_in_thread(child.stderr.take().expect("piped"));
    let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_child(&mut child, limit, what)
    }))
    .unwrap_or_else(|panic| {
        // SAFETY: plain syscall; the group is the one started above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        std::panic::resume_unwind(panic)
    });
    // The client exited before the example: nothing holds the pipes.
    let grace = Duration::from_secs(10);
    let stdout =
        join_timeout(stdout, grace, &format!("the end of {what}'s stdout")).expect("stdout reader");
    let stderr =
        join_timeout(stderr, grace, &format!("the end of {what}'s stderr")).expect("stderr reader");
    Output {
        status,
        stdout,
        stderr,
    }
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
    let out = output_within(
        Command::new(example_binary())
            .arg(qemu.dir.join("vmspawn.sock"))
            .args(["sh", "-c", client]),
        Duration::from_secs(60),
        "vmspawn_manager",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = String::from_utf8(out.stderr).expect("utf8");
    let mut lines = seen.lines();
    let greeting: serde_json::Value =
        serde_json::from_str(lines.next().expect("greeting")).expect("json");
    assert_eq!(greeting["QMP"]["capabilities"], serde_json::json!(["oob"]));
    let monitors: serde_json::Value =
        serde_json::from_str(lines.next().expect("monitors")).expect("json");
    let session = &monitors["return"][2];
    assert_eq!(session["dynamic"], true);
    assert!(
        session["id"].as_str().expect("id").starts_with("vmspawn-"),
        "{monitors}"
    );
    // The manager removed the monitor and the chardev after the client left.
    assert_eq!(qemu.ids(), ["compat_monitor0", "compat_monitor1"]);
    assert_eq!(
        qemu.mgr.ok("query-chardev", serde_json::json!({})),
        chardevs_before
    );
    assert!(qemu.quit().success());
}
