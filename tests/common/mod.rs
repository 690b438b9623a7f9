//! Shared pieces of the integration tests: a QEMU process started from
//! build/bin with a manager QMP monitor, and a line-based QMP client over
//! real Unix sockets (or any fd, for ptys and socketpairs).
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Directory of the patched binaries (the Makefile passes QEMU_BIN_DIR).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("QEMU_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/bin"))
}

/// A QMP connection.  Events are kept aside in `events`.
pub struct Qmp {
    reader: BufReader<File>,
    writer: File,
    pub events: Vec<Value>,
}

impl Qmp {
    pub fn from_fd(fd: OwnedFd) -> Self {
        let file = File::from(fd);
        Qmp { writer: file.try_clone().expect("dup"), reader: BufReader::new(file), events: Vec::new() }
    }

    pub fn connect(path: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return Self::from_fd(s.into()),
                Err(e) if Instant::now() > deadline => panic!("connect {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.writer.as_raw_fd()
    }

    /// Next message, or None at EOF.
    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))),
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Next message that is not an event.
    pub fn recv_reply(&mut self) -> Option<Value> {
        loop {
            let msg = self.recv()?;
            if msg.get("event").is_some() {
                self.events.push(msg);
            } else {
                return Some(msg);
            }
        }
    }

    pub fn send(&mut self, msg: &Value) {
        self.send_raw(&format!("{msg}\n"));
    }

    pub fn send_raw(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("write");
    }

    /// Sends `msg` and returns its reply.
    pub fn call(&mut self, msg: Value) -> Value {
        self.send(&msg);
        self.recv_reply().unwrap_or_else(|| panic!("EOF instead of a reply to {msg}"))
    }

    /// Runs a command that must succeed; returns its "return" value.
    pub fn ok(&mut self, execute: &str, arguments: Value) -> Value {
        let rsp = self.call(json!({"execute": execute, "arguments": arguments}));
        match rsp.get("return") {
            Some(v) => v.clone(),
            None => panic!("{execute} {arguments} failed: {rsp}"),
        }
    }

    /// Runs a command that must fail with a GenericError saying `desc`.
    pub fn err(&mut self, execute: &str, arguments: Value, desc: &str) {
        let rsp = self.call(json!({"execute": execute, "arguments": arguments}));
        assert_eq!(rsp["error"]["class"], "GenericError", "{rsp}");
        assert_eq!(rsp["error"]["desc"], desc, "{rsp}");
    }

    /// Reads the greeting, negotiates `caps`, and returns the greeting's
    /// capabilities.
    pub fn handshake(&mut self, caps: &[&str]) -> Vec<String> {
        let greeting = self.recv().expect("greeting");
        let offered = greeting["QMP"]["capabilities"]
            .as_array()
            .unwrap_or_else(|| panic!("not a greeting: {greeting}"))
            .iter()
            .map(|c| c.as_str().expect("capability").to_owned())
            .collect();
        self.ok("qmp_capabilities", json!({"enable": caps}));
        offered
    }

    /// The connection is closed with nothing more to read but events.
    pub fn expect_eof(&mut self) {
        if let Some(msg) = self.recv_reply() {
            panic!("expected EOF, got {msg}");
        }
    }

    /// Sends a message with `fd` attached (SCM_RIGHTS), as getfd needs.
    pub fn send_with_fd(&mut self, msg: &Value, fd: RawFd) {
        send_fd(self.raw_fd(), format!("{msg}\n").as_bytes(), fd);
    }
}

#[path = "../../examples/vmspawn_manager/fdpass.rs"]
mod fdpass;

/// sendmsg with one fd in an SCM_RIGHTS control message; panics on failure.
pub fn send_fd(sock: RawFd, bytes: &[u8], fd: RawFd) {
    fdpass::send_with_fd(sock, bytes, fd).expect("sendmsg with SCM_RIGHTS");
}

/// A patched QEMU with a manager monitor ("-qmp", id compat_monitor0).
pub struct Qemu {
    pub child: Child,
    pub dir: PathBuf,
    pub mgr: Qmp,
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
        Self::start_binary("qemu-system-x86_64", &["-M", "none", "-accel", "qtest", "-display", "none"], "-qmp", extra)
    }

    pub fn start_storage_daemon(extra: &[&str]) -> Self {
        let dir = temp_dir();
        let sock = dir.join("mgr.sock");
        let chardev = format!("socket,id=mgr,path={},server=on,wait=off", sock.display());
        let mut args = vec!["--chardev".to_owned(), chardev, "--monitor".into(), "chardev=mgr".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn("qemu-storage-daemon", &args, dir, &sock)
    }

    fn start_binary(bin: &str, base: &[&str], qmp_opt: &str, extra: &[&str]) -> Self {
        let dir = temp_dir();
        let sock = dir.join("mgr.sock");
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.push(qmp_opt.into());
        args.push(format!("unix:{},server=on,wait=off", sock.display()));
        args.extend(extra.iter().map(|s| s.replace("@DIR@", &dir.display().to_string())));
        Self::spawn(bin, &args, dir, &sock)
    }

    fn spawn(bin: &str, args: &[String], dir: PathBuf, sock: &Path) -> Self {
        let child = Command::new(bin_dir().join(bin))
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut mgr = Qmp::connect(sock);
        mgr.handshake(&[]);
        Qemu { child, dir, mgr }
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
        self.mgr.ok(
            "chardev-add",
            json!({"id": id, "backend": {"type": "socket", "data": {
                "addr": {"type": "unix", "data": {"path": path}},
                "server": true, "wait": false}}}),
        );
    }

    pub fn monitor_add(&mut self, id: &str, chardev: &str) {
        self.mgr.ok("monitor-add", json!({"id": id, "chardev": chardev}));
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
                let s = |k: &str| m[k].as_str().unwrap_or_else(|| panic!("{k} in {m}")).to_owned();
                (s("id"), s("mode"), s("chardev"), m["dynamic"].as_bool().expect("dynamic"))
            })
            .collect()
    }

    pub fn ids(&mut self) -> Vec<String> {
        self.monitors().into_iter().map(|m| m.0).collect()
    }

    /// QEMU's open fds, as link targets (e.g. "pipe:[123]").
    pub fn fds(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        v.sort();
        v
    }

    /// Sends quit and waits for QEMU to exit.
    pub fn quit(mut self) -> ExitStatus {
        self.mgr.send(&json!({"execute": "quit"}));
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        let _ = std::fs::remove_dir_all(&self.dir);
        status
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("QEMU did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An fd from a libc call that returned one, or a panic.
pub fn owned(fd: RawFd) -> OwnedFd {
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// ---------------------------------------------------------------------
// Reliability helpers (tests/stress.rs, tests/bad_input.rs): a seeded
// PRNG, a QMP reader that tolerates the connection going away, health
// snapshots (fds, RSS, monitors, chardevs) and a watchdog for hangs.
// ---------------------------------------------------------------------

/// xorshift64* (Vigna), seeded through splitmix64 so that nearby seeds
/// give unrelated streams.  Deterministic: a failure names its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        ((self.next_u64() >> 11) % n as u64) as usize
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability num/den.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The seed of a randomised test: `QMH_SEED` if set (to replay a
/// failure), else `default`.  Printed so that a failure can be replayed.
pub fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("QMH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    eprintln!("{test}: seed {seed} (replay with QMH_SEED={seed})");
    seed
}

/// What a lenient read found.
#[derive(Debug)]
pub enum Incoming {
    Msg(Value),
    /// EOF, or ECONNRESET once everything sent before it was read (on
    /// AF_UNIX, closing a socket with unread input resets the peer).
    Closed,
    /// Bytes without a final newline, then the end: a reply cut short.
    Partial(String),
}

impl Qmp {
    /// One connection attempt (no retry), for sockets that may be gone.
    pub fn try_connect(path: &Path) -> std::io::Result<Self> {
        Ok(Self::from_fd(UnixStream::connect(path)?.into()))
    }

    /// A second handle on the connection's socket, for a writer thread.
    pub fn writer_clone(&self) -> File {
        self.writer.try_clone().expect("dup")
    }

    pub fn try_send_raw(&mut self, text: &str) -> std::io::Result<()> {
        self.writer.write_all(text.as_bytes())
    }

    /// Next message; the end of the connection is a result, not a panic.
    /// A complete line that is not JSON still panics: garbled output is
    /// a bug.
    pub fn recv_lenient(&mut self) -> Incoming {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => Incoming::Closed,
            Ok(_) if buf.last() != Some(&b'\n') => Incoming::Partial(String::from_utf8_lossy(&buf).into_owned()),
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                Incoming::Msg(serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && buf.is_empty() => Incoming::Closed,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Incoming::Partial(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Like `recv_reply`, but None also on a reset or a cut reply.
    pub fn try_recv_reply(&mut self) -> Option<Value> {
        loop {
            match self.recv_lenient() {
                Incoming::Msg(m) if m.get("event").is_some() => self.events.push(m),
                Incoming::Msg(m) => return Some(m),
                Incoming::Closed | Incoming::Partial(_) => return None,
            }
        }
    }

    /// shutdown(2) both ways: the peer sees the connection end at once,
    /// whatever other handles on the socket exist.
    pub fn shutdown(&self) {
        // SAFETY: plain syscall on our own fd.
        unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_RDWR) };
    }
}

/// chardev-add arguments of a listening Unix socket chardev.
pub fn socket_chardev(id: &str, path: &Path) -> Value {
    json!({"id": id, "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": path}},
        "server": true, "wait": false}}})
}

/// Polls until `cond` holds; the deadline only catches hangs.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What must be the same after a scenario as before it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub fds: Vec<String>,
    pub rss_kb: u64,
    pub monitors: Value,
    pub chardevs: Vec<String>,
}

impl Qemu {
    /// VmRSS of QEMU, in kB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Is this QEMU built with AddressSanitizer?  Its quarantine keeps
    /// freed memory resident on purpose, so RSS says nothing there.
    pub fn has_asan(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).map_or(false, |m| m.contains("libasan"))
    }

    /// Labels of all chardevs, sorted.
    pub fn chardev_labels(&mut self) -> Vec<String> {
        let list = self.mgr.ok("query-chardev", json!({}));
        let mut v: Vec<String> =
            list.as_array().expect("list").iter().map(|c| c["label"].as_str().expect("label").to_owned()).collect();
        v.sort();
        v
    }

    /// QEMU has not exited and answers on the manager monitor.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait") {
            panic!("QEMU exited: {status}");
        }
        assert_eq!(self.mgr.ok("query-name", json!({})), json!({}));
    }

    pub fn snapshot(&mut self) -> Snapshot {
        let monitors = self.mgr.ok("query-monitors", json!({}));
        let chardevs = self.chardev_labels();
        Snapshot { fds: self.fds(), rss_kb: self.rss_kb(), monitors, chardevs }
    }

    /// Checks the state against `before`: alive, same monitors and
    /// chardevs, exactly the same number of fds (waited for: a client's
    /// close can still be on its way through the I/O thread), and RSS
    /// grown by at most `rss_slack_kb` (skipped under ASan).
    pub fn check_against(&mut self, before: &Snapshot, rss_slack_kb: u64, what: &str) {
        self.assert_alive();
        assert_eq!(self.mgr.ok("query-monitors", json!({})), before.monitors, "{what}: monitors changed");
        assert_eq!(self.chardev_labels(), before.chardevs, "{what}: chardevs changed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let fds = self.fds();
            if fds.len() == before.fds.len() {
                break;
            }
            if Instant::now() > deadline {
                let gone: Vec<_> = before.fds.iter().filter(|f| !fds.contains(f)).collect();
                let new: Vec<_> = fds.iter().filter(|f| !before.fds.contains(f)).collect();
                panic!("{what}: {} fds before, {} after; gone {gone:?}, new {new:?}", before.fds.len(), fds.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let rss = self.rss_kb();
        eprintln!(
            "{what}: RSS {} kB before, {rss} kB after ({:+} kB)",
            before.rss_kb,
            rss as i64 - before.rss_kb as i64
        );
        if self.has_asan() {
            eprintln!("{what}: ASan build, RSS not checked");
        } else {
            assert!(
                rss <= before.rss_kb + rss_slack_kb,
                "{what}: RSS grew from {} kB to {rss} kB, more than {rss_slack_kb} kB",
                before.rss_kb
            );
        }
    }
}

/// Kills QEMU if a scenario runs longer than `limit`, so that a hang
/// fails the test (every blocked read then sees EOF) instead of
/// blocking the suite.  Disarmed when dropped.
pub struct Watchdog {
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn arm(what: &str, pid: u32, limit: Duration) -> Self {
        let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let d = done.clone();
        let what = what.to_owned();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*d;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = cv.wait_timeout_while(guard, limit, |done| !*done).unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
            eprintln!("WATCHDOG: {what} still running after {limit:?}: QEMU {pid} hangs?");
            for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
                let p = task.path();
                let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default().trim().to_owned();
                eprintln!(
                    "WATCHDOG:   thread {:?} {} wchan={}",
                    p.file_name().unwrap_or_default(),
                    read("comm"),
                    read("wchan")
                );
            }
            // SAFETY: plain syscall; pid is our child (not yet reaped:
            // the Qemu that owns it is still in use).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let (guard, _) =
                cv.wait_timeout_while(guard, Duration::from_secs(60), |done| !*done).unwrap_or_else(|e| e.into_inner());
            if !*guard {
                eprintln!("WATCHDOG: {what} still stuck 60 s after killing QEMU; aborting");
                std::process::abort();
            }
        });
        Watchdog { done, thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Qmp {
    /// Everything the peer sends until it closes (EOF or reset).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}
