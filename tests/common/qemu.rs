// SPDX-License-Identifier: GPL-2.0-or-later
//! The QEMU process harness: a patched QEMU from build/bin with a
//! manager QMP monitor, and the chardev-add arguments the tests use.

use std::{
    os::{
        fd::{AsRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use super::{fd::socketpair, qmp::Qmp, wait::wait_timeout};

/// Directory of the patched binaries (the Makefile passes QEMU_BIN_DIR).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("QEMU_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/bin"))
}

/// `QMH_BASELINE=1`: the QEMU under test (QEMU_BIN_DIR) is the baseline
/// build, QEMU without qemu-patches (`make BASELINE=1 LAB=1 build`, in
/// build/baseline/bin).  Only the regression tests of bugs that
/// unpatched QEMU has too are meant to run there, and each must then
/// see its bug (see [`expect_bug`]): proof that it can fail.
pub fn on_baseline() -> bool {
    std::env::var("QMH_BASELINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The verdict of a regression test of a bug that unpatched QEMU has
/// too: `found` holds what showed the bug (a message per occurrence),
/// `tried` says how hard the test looked.  On the patched build nothing
/// may be found; on the baseline ([`on_baseline`]) the bug must show.
pub fn expect_bug(what: &str, tried: &str, found: &[String]) {
    let examples = found.iter().take(5).cloned().collect::<Vec<_>>().join("\n");
    if on_baseline() {
        assert!(
            !found.is_empty(),
            "{what}: QMH_BASELINE is set, yet unpatched QEMU did not show the bug in {tried}"
        );
        eprintln!(
            "{what}: unpatched QEMU shows the bug ({} in {tried}), as expected:\n{examples}",
            found.len()
        );
    } else {
        assert!(
            found.is_empty(),
            "{what}: {} in {tried}, e.g.:\n{examples}",
            found.len()
        );
    }
}

/// A patched QEMU with a manager monitor ("-qmp", id compat_monitor0).
pub struct Qemu {
    pub child: Child,
    pub dir: PathBuf,
    pub mgr: Qmp,
    /// Where QEMU's stderr goes, if not to the test's: see
    /// [`Qemu::start_quiet`].
    pub stderr: Option<PathBuf>,
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub fn temp_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("qmh-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Qemu {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_inheriting(extra, &[])
    }

    /// As [`Self::start`], for a QEMU that must print nothing: its
    /// stderr goes to a file, which [`Self::quit_quietly`] checks.  A
    /// warning, such as GLib's about a source removed from the wrong
    /// context, is a failure there.
    pub fn start_quiet(extra: &[&str]) -> Self {
        let dir = temp_dir();
        let stderr = dir.join("qemu.stderr");
        Self::start_in(
            dir,
            "qemu-system-x86_64",
            &["-M", "none", "-accel", "qtest", "-display", "none"],
            "-qmp",
            extra,
            &[],
            Some(stderr),
        )
    }

    /// As [`Self::start`], with `inherit` open in QEMU under the same
    /// numbers (for `-chardev socket,fd=N`).
    pub fn start_inheriting(extra: &[&str], inherit: &[RawFd]) -> Self {
        Self::start_binary(
            "qemu-system-x86_64",
            &["-M", "none", "-accel", "qtest", "-display", "none"],
            "-qmp",
            extra,
            inherit,
        )
    }

    /// A QEMU with `base` arguments of its own (machine, accelerator)
    /// instead of `-M none -accel qtest`.
    pub fn start_machine(base: &[&str], extra: &[&str]) -> Self {
        Self::start_binary("qemu-system-x86_64", base, "-qmp", extra, &[])
    }

    pub fn start_storage_daemon(extra: &[&str]) -> Self {
        let dir = temp_dir();
        let sock = dir.join("mgr.sock");
        let chardev = format!("socket,id=mgr,path={},server=on,wait=off", sock.display());
        let mut args = vec![
            "--chardev".to_owned(),
            chardev,
            "--monitor".into(),
            "chardev=mgr".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn("qemu-storage-daemon", &args, dir, &sock, &[], None)
    }

    fn start_binary(
        bin: &str,
        base: &[&str],
        qmp_opt: &str,
        extra: &[&str],
        inherit: &[RawFd],
    ) -> Self {
        Self::start_in(temp_dir(), bin, base, qmp_opt, extra, inherit, None)
    }

    fn start_in(
        dir: PathBuf,
        bin: &str,
        base: &[&str],
        qmp_opt: &str,
        extra: &[&str],
        inherit: &[RawFd],
        stderr: Option<PathBuf>,
    ) -> Self {
        let sock = dir.join("mgr.sock");
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.push(qmp_opt.into());
        args.push(format!("unix:{},server=on,wait=off", sock.display()));
        args.extend(
            extra
                .iter()
                .map(|s| s.replace("@DIR@", &dir.display().to_string())),
        );
        Self::spawn(bin, &args, dir, &sock, inherit, stderr)
    }

    fn spawn(
        bin: &str,
        args: &[String],
        dir: PathBuf,
        sock: &Path,
        inherit: &[RawFd],
        stderr: Option<PathBuf>,
    ) -> Self {
        let mut cmd = Command::new(bin_dir().join(bin));
        cmd.args(args).stdin(Stdio::null());
        if let Some(path) = &stderr {
            cmd.stderr(std::fs::File::create(path).expect("QEMU's stderr file"));
        }
        let inherit = inherit.to_vec();
        // Clearing FD_CLOEXEC in the child, not in the parent, keeps
        // the fds out of the QEMUs that other test threads start.
        // SAFETY: the closure runs in the child between fork and exec,
        // and only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        // A QEMU that never answers is killed, not left behind.
        let mgr = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut mgr = Qmp::connect_while(sock, || match child.try_wait() {
                Ok(Some(status)) => Err(format!("{bin} exited at start-up ({status})")),
                _ => Ok(()),
            });
            mgr.handshake(&[]);
            mgr
        }));
        match mgr {
            Ok(mgr) => Qemu {
                child,
                dir,
                mgr,
                stderr,
            },
            Err(panic) => {
                let _ = child.kill();
                let _ = child.wait();
                std::panic::resume_unwind(panic)
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sock(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    /// chardev-add of a listening Unix socket `dir/ID.sock`.
    pub fn add_socket_chardev(&mut self, id: &str) {
        let path = self.sock(id);
        self.mgr.ok("chardev-add", socket_chardev(id, &path));
    }

    /// The systemd-vmspawn way to a chardev: one end of a socketpair
    /// passed with getfd as `name`, and a socket chardev `name` on it.
    /// Returns the other end, the client's.
    pub fn add_socketpair_chardev(&mut self, name: &str) -> OwnedFd {
        let (ours, theirs) = socketpair();
        self.mgr.send_with_fd(
            &json!({"execute": "getfd", "arguments": {"fdname": name}}),
            theirs.as_raw_fd(),
        );
        assert_eq!(
            self.mgr
                .recv_reply_awaiting("the reply to getfd")
                .expect("getfd"),
            json!({"return": {}})
        );
        drop(theirs);
        self.mgr.ok("chardev-add", fd_chardev(name, name));
        ours
    }

    pub fn monitor_add(&mut self, id: &str, chardev: &str) {
        self.mgr
            .ok("monitor-add", json!({"id": id, "chardev": chardev}));
    }

    pub fn monitor_remove(&mut self, id: &str) {
        self.mgr.ok("monitor-remove", json!({"id": id}));
    }

    /// Socket chardev + monitor + connected client in command mode.
    pub fn dynamic_client(&mut self, id: &str, caps: &[&str]) -> Qmp {
        let chardev = format!("{id}-chr");
        self.add_socket_chardev(&chardev);
        self.monitor_add(id, &chardev);
        let mut client = Qmp::connect(&self.sock(&chardev));
        client.handshake(caps);
        client
    }

    /// query-monitors as (id, mode, chardev, dynamic) tuples.
    pub fn monitors(&mut self) -> Vec<(String, String, String, bool)> {
        self.mgr
            .ok("query-monitors", json!({}))
            .as_array()
            .expect("list")
            .iter()
            .map(|m| {
                let s = |k: &str| {
                    m[k].as_str()
                        .unwrap_or_else(|| panic!("{k} in {m}"))
                        .to_owned()
                };
                (
                    s("id"),
                    s("mode"),
                    s("chardev"),
                    m["dynamic"].as_bool().expect("dynamic"),
                )
            })
            .collect()
    }

    pub fn ids(&mut self) -> Vec<String> {
        self.monitors().into_iter().map(|m| m.0).collect()
    }

    /// Labels of all chardevs, sorted.
    pub fn chardev_labels(&mut self) -> Vec<String> {
        let list = self.mgr.ok("query-chardev", json!({}));
        let mut v: Vec<String> = list
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["label"].as_str().expect("label").to_owned())
            .collect();
        v.sort();
        v
    }

    /// The query-chardev filename of chardev `id`.
    pub fn chardev_filename(&mut self, id: &str) -> String {
        let list = self.mgr.ok("query-chardev", json!({}));
        list.as_array()
            .expect("list")
            .iter()
            .find(|c| c["label"] == id)
            .and_then(|c| c["filename"].as_str())
            .unwrap_or_else(|| panic!("no chardev {id} with a filename in {list}"))
            .to_owned()
    }

    /// QEMU's open fds: (number, link target, e.g. "pipe:[123]"), in
    /// order.  Compared as a whole, not by count: an fd closed and
    /// another leaked leave the count as it was, not the set.
    pub fn fds(&self) -> Vec<(RawFd, String)> {
        let mut v: Vec<(RawFd, String)> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                // An fd closed between readdir and readlink is not open.
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.display().to_string()))
            })
            .collect();
        v.sort();
        v
    }

    /// Waits (bounded) until QEMU's fds are exactly `before`: a client's
    /// close can still be on its way through the I/O thread.  Panics
    /// with the difference.
    pub fn wait_fds(&self, before: &[(RawFd, String)], what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let fds = self.fds();
            if fds == before {
                return;
            }
            if std::time::Instant::now() > deadline {
                let gone: Vec<_> = before.iter().filter(|f| !fds.contains(f)).collect();
                let new: Vec<_> = fds.iter().filter(|f| !before.contains(f)).collect();
                panic!(
                    "{what}: QEMU's fds are not those of before: {} before, {} now; \
                     gone {gone:?}, new {new:?}",
                    before.len(),
                    fds.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends quit, reads the manager's connection to its end and waits
    /// for QEMU to exit.  Returns the exit status and every event the
    /// manager got (SHUTDOWN among them): those broadcast before the
    /// monitors were torn down, which their clients may get too (see
    /// `Qmp::expect_eof_after`).
    pub fn quit_with_events(mut self) -> (ExitStatus, Vec<Value>) {
        let rsp = self.mgr.call(json!({"execute": "quit"}));
        assert_eq!(rsp, json!({"return": {}}), "quit");
        if let Some(m) = self.mgr.recv_reply() {
            panic!("a reply after quit's: {m}");
        }
        let events = std::mem::take(&mut self.mgr.events);
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        let _ = std::fs::remove_dir_all(&self.dir);
        (status, events)
    }

    /// Sends quit, waits for QEMU to exit, and checks that it exited
    /// with 0 and printed nothing (a QEMU from [`Self::start_quiet`]).
    pub fn quit_quietly(mut self) {
        let path = self.stderr.clone().expect("a QEMU from start_quiet");
        let status = self.send_quit();
        let printed = printed_by_qemu(&std::fs::read(&path).unwrap_or_default());
        let _ = std::fs::remove_dir_all(&self.dir);
        assert!(
            status.success() && printed.is_empty(),
            "QEMU exited with {status} and printed:\n{printed}"
        );
    }

    /// Sends quit and waits for QEMU to exit.
    pub fn quit(mut self) -> ExitStatus {
        let status = self.send_quit();
        let _ = std::fs::remove_dir_all(&self.dir);
        status
    }

    fn send_quit(&mut self) -> ExitStatus {
        self.mgr.send(&json!({"execute": "quit"}));
        wait_timeout(&mut self.child, Duration::from_secs(60))
    }
}

/// What QEMU wrote to stderr, less the ASan build's note at start-up
/// that coroutines may confuse it: not QEMU's words, and a report ASan
/// makes aborts QEMU instead.
pub fn printed_by_qemu(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.contains("WARNING: ASan doesn't fully support makecontext/swapcontext"))
        .map(|l| format!("{l}\n"))
        .collect()
}

impl Drop for Qemu {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// Kills and reaps `child` unless it has exited already.
pub fn kill_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A process that is killed if the test fails before waiting for its
/// exit (a QEMU started by hand, not through `Qemu`).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_if_running(&mut self.0);
    }
}

/// chardev-add arguments of a listening Unix socket chardev.
pub fn socket_chardev(id: &str, path: &Path) -> Value {
    json!({"id": id, "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": path}},
        "server": true, "wait": false}}})
}

/// chardev-add arguments of a socket chardev (a client) on the fd that
/// getfd stored as `fdname`.
pub fn fd_chardev(id: &str, fdname: &str) -> Value {
    json!({"id": id, "backend": {"type": "socket", "data": {
        "addr": {"type": "fd", "data": {"str": fdname}}, "server": false}}})
}
