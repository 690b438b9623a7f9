// SPDX-License-Identifier: GPL-2.0-or-later
//! The QEMU processes under test: started with a manager monitor, queried
//! through /proc, quit at the end.

use std::{
    fs::File,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    client::Raw,
    common::{self, owned, socket_chardev, temp_dir, Qemu, Qmp},
};

/// A QEMU (patched or not) with a manager monitor, spoken to through `mgr`.
pub struct Proc {
    pub q: Qemu,
    pub mgr: Raw,
}

pub fn patched_bin() -> PathBuf {
    common::bin_dir().join("qemu-system-x86_64")
}

pub fn baseline_bin() -> PathBuf {
    std::env::var_os("QEMU_BASELINE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("build/baseline/bin/qemu-system-x86_64")
        })
}

impl Proc {
    /// Starts `bin` with `-qmp` on DIR/mgr.sock and `extra` (@DIR@ replaced).
    pub fn launch(bin: &Path, extra: &[String]) -> Proc {
        let dir = temp_dir();
        let sock = dir.join("mgr.sock");
        let mut args: Vec<String> = ["-M", "none", "-accel", "qtest", "-display", "none", "-qmp"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("unix:{},server=on,wait=off", sock.display()));
        args.extend(
            extra
                .iter()
                .map(|s| s.replace("@DIR@", &dir.display().to_string())),
        );
        let log = File::create(dir.join("qemu.log")).expect("log");
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        let log = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
                        panic!("{} exited ({st}) at start:\n{log}", bin.display());
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("connect {}: {e}", sock.display());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let mut mgr = Raw::new(stream.into());
        mgr.handshake();
        // The Qemu wrapper gets a second handle on the same connection; it is
        // only used to send `quit`.
        // SAFETY: dup of an fd we own.
        let dup = owned(unsafe { libc::dup(mgr.fd()) });
        let q = Qemu {
            child,
            dir,
            mgr: Qmp::from_fd(dup),
            stderr: None,
        };
        Proc { q, mgr }
    }

    pub fn sock(&self, name: &str) -> PathBuf {
        self.q.sock(name)
    }

    pub fn add_socket_chardev_cmd(&self, id: &str) -> String {
        json!({"execute": "chardev-add", "arguments": socket_chardev(id, &self.sock(id))})
            .to_string()
    }

    pub fn add_socket_chardev(&mut self, id: &str) {
        let cmd = self.add_socket_chardev_cmd(id);
        self.mgr.ok(&cmd);
    }

    pub fn monitor_add(&mut self, id: &str, chardev: &str) {
        self.mgr.ok_json(
            json!({"execute": "monitor-add", "arguments": {"id": id, "chardev": chardev}}),
        );
    }

    /// A field of /proc/PID/status in KiB ("VmRSS", "RssAnon").
    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.q.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Resident anonymous memory: heap and stacks, without the pages of
    /// the binary and libraries, which differ between processes by a few
    /// hundred KiB depending on which code ran.
    pub fn anon_kib(&self) -> u64 {
        self.status_kib("RssAnon")
    }

    pub fn fd_count(&self) -> usize {
        self.q.fds().len()
    }

    /// The pty of a pty chardev, from query-chardev.
    pub fn pty_of(&mut self, label: &str) -> String {
        let r = self.mgr.ok(r#"{"execute":"query-chardev"}"#);
        let v: Value = serde_json::from_str(&r).expect("JSON");
        let c = v["return"]
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["label"] == label)
            .expect("chardev");
        c["filename"]
            .as_str()
            .expect("filename")
            .strip_prefix("pty:")
            .expect("pty:")
            .to_owned()
    }

    pub fn quit(self) {
        let Proc { q, mgr } = self;
        let pid = q.pid();
        let status = q.quit();
        drop(mgr);
        if !status.success() {
            eprintln!("warning: QEMU {pid} exited with {status}");
        }
    }
}

/// Opens the pty of a pty chardev in raw mode (no echo, no line editing).
pub fn open_pty(path: &str) -> Raw {
    Raw::new(common::open_pty(path))
}

pub fn cli_socket_monitor(id: &str) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id={id},path=@DIR@/{id}.sock,server=on,wait=off"),
        "-mon".into(),
        format!("chardev={id},mode=control"),
    ]
}

pub fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur as u64
    }
}
