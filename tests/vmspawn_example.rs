// SPDX-License-Identifier: GPL-2.0-or-later
//! examples/vmspawn_manager, run for real: it boots the test guest and
//! hands three shell clients one-shot sessions at once; each sees the
//! three sessions; when they exit, QEMU removes them by itself.

mod common;

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::{accels, bin_dir, guest_dir, join_timeout, temp_dir, wait_child};

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
fn guest_vmspawn_manager_hands_out_concurrent_one_shot_sessions() {
    // each client waits (bounded) until all three have a session, so
    // that query-monitors shows them side by side, and until all three
    // asked before it leaves
    let client = r#"
        barrier() {
            touch "$BARRIER/$SESSION.$1"; i=0
            while [ "$(ls "$BARRIER" | grep -c "\.$1$")" -lt 3 ] && [ $i -lt 600 ]; do
                sleep 0.1; i=$((i+1))
            done
        }
        read -r greeting
        echo '{"execute": "qmp_capabilities"}'; read -r caps
        barrier up
        echo '{"execute": "query-monitors"}'; read -r monitors
        printf '%s %s\n' "$SESSION" "$monitors" >&2
        barrier asked
    "#;
    for accel in accels() {
        let barrier = temp_dir();
        let out = output_within(
            Command::new(example_binary())
                .args(["--accel", &accel])
                .arg(bin_dir().join("qemu-system-x86_64"))
                .arg(guest_dir())
                .args([client, client, client])
                .env("BARRIER", &barrier),
            Duration::from_secs(300),
            "vmspawn_manager",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{accel}: {stdout}{stderr}");
        for line in [
            "guest   | qmh: ready",
            "manager | every session's monitor and chardev are gone",
            "manager | the guest powered off; QEMU exited",
        ] {
            assert!(stdout.contains(line), "{accel}: no {line:?} in {stdout}");
        }
        let mut seen: Vec<&str> = Vec::new();
        for line in stderr.lines() {
            let (session, reply) = line.split_once(' ').expect("session and reply");
            let reply: serde_json::Value = serde_json::from_str(reply).expect("json");
            let sessions: Vec<_> = reply["return"]
                .as_array()
                .expect("monitors")
                .iter()
                .filter(|m| {
                    m["id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("session-"))
                })
                .map(|m| {
                    (
                        m["id"].clone(),
                        m["dynamic"].clone(),
                        m["close-action"].clone(),
                    )
                })
                .collect();
            assert_eq!(
                sessions,
                (1..=3)
                    .map(|i| (
                        serde_json::json!(format!("session-{i}")),
                        serde_json::json!(true),
                        serde_json::json!("delete")
                    ))
                    .collect::<Vec<_>>(),
                "{accel}: {line}"
            );
            seen.push(session);
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            ["session-1", "session-2", "session-3"],
            "{accel}: {stderr}"
        );
        let _ = std::fs::remove_dir_all(&barrier);
    }
}
