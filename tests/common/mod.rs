//! Shared pieces of the integration tests: a QEMU process started from
//! build/bin with a manager QMP monitor, and a line-based QMP client over
//! real Unix sockets (or any fd, for ptys and socketpairs).
//!
//! Every wait is bounded, so that a hang fails the test with a message
//! saying what was awaited instead of blocking the suite: QMP reads and
//! writes (`IO_TIMEOUT` per read or write, see `Qmp::set_timeout`),
//! connects, process exits (`wait_timeout`), thread joins
//! (`join_timeout`) and polling loops (`wait_until`).
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
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

/// How long one QMP read or write may wait for its fd (and a connect
/// for a full backlog) before the test fails.  Only a hang gets near it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits up to `timeout` for `events` on `fd` with poll(2), which works
/// on every kind of fd (SO_RCVTIMEO does not apply to ptys and pipes).
/// Err(TimedOut) if nothing came.
fn poll_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            0 => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("fd {fd} idle for {timeout:?}")))
            }
            n if n > 0 => return Ok(()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// A connection's fd whose reads and writes wait at most `timeout` for
/// it to become ready (then fail with TimedOut).
struct TimedFd {
    file: File,
    timeout: Duration,
}

impl Read for TimedFd {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        poll_fd(self.file.as_raw_fd(), libc::POLLIN, self.timeout)?;
        self.file.read(buf)
    }
}

impl Write for TimedFd {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        poll_fd(self.file.as_raw_fd(), libc::POLLOUT, self.timeout)?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `text`, cut to a length that fits in a panic message.
fn brief(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// A read or write that waited too long: TimedOut from `poll_fd`, or
/// EAGAIN from SO_SNDTIMEO (the fds are blocking, so nothing else
/// gives EAGAIN).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

/// One connect(2) to a Unix socket, non-blocking so that a full backlog
/// (the listener is not accepting) is EAGAIN instead of a wait without
/// end; the stream returned is blocking.
fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscall; the fd is checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = owned(fd);
    // SAFETY: sockaddr_un is plain data; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "socket path too long"));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes; fd is ours.
    if unsafe { libc::connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl on our own fd.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        assert!(flags >= 0 && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0);
    }
    Ok(UnixStream::from(fd))
}

/// A QMP connection.  Events are kept aside in `events`.  Every read
/// and write waits at most `IO_TIMEOUT` (see `set_timeout`), then
/// panics saying what it waited for.
pub struct Qmp {
    reader: BufReader<TimedFd>,
    writer: TimedFd,
    pub events: Vec<Value>,
}

impl Qmp {
    pub fn from_fd(fd: OwnedFd) -> Self {
        let file = File::from(fd);
        let writer = TimedFd { file: file.try_clone().expect("dup"), timeout: IO_TIMEOUT };
        let mut qmp = Qmp { writer, reader: BufReader::new(TimedFd { file, timeout: IO_TIMEOUT }), events: Vec::new() };
        qmp.set_timeout(IO_TIMEOUT);
        qmp
    }

    /// How long each read or write may wait.  On a socket it is also
    /// SO_SNDTIMEO, which bounds the writes of `writer_clone` handles
    /// and of `send_with_fd`.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.reader.get_mut().timeout = timeout;
        self.writer.timeout = timeout;
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: plain syscall on our own fd with a valid timeval; it
        // fails with ENOTSOCK on ptys and pipes, which poll covers.
        unsafe {
            libc::setsockopt(
                self.raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
    }

    fn timeout(&self) -> Duration {
        self.writer.timeout
    }

    /// The panic of a wait that timed out.
    fn timed_out(&self, what: &str) -> ! {
        panic!("timed out after {:?} waiting for {what} (QMP connection on fd {})", self.timeout(), self.raw_fd())
    }

    pub fn connect(path: &Path) -> Self {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match connect_unix(path) {
                Ok(s) => return Self::from_fd(s.into()),
                Err(e) if Instant::now() > deadline => {
                    panic!("timed out after {IO_TIMEOUT:?} connecting to {}: {e}", path.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.writer.file.as_raw_fd()
    }

    /// Next message, or None at EOF.
    pub fn recv(&mut self) -> Option<Value> {
        self.recv_for(&|| "a QMP message".to_owned())
    }

    /// `recv`, where `what` says what is awaited, for the timeout panic.
    fn recv_for(&mut self, what: &dyn Fn() -> String) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))),
            Err(e) if is_timeout(&e) => self.timed_out(&what()),
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Next message that is not an event.
    pub fn recv_reply(&mut self) -> Option<Value> {
        self.recv_reply_for(&|| "a QMP reply".to_owned())
    }

    /// `recv_reply`, where `what` says what is awaited (for the panic
    /// on a timeout).
    pub fn recv_reply_awaiting(&mut self, what: &str) -> Option<Value> {
        self.recv_reply_for(&|| what.to_owned())
    }

    fn recv_reply_for(&mut self, what: &dyn Fn() -> String) -> Option<Value> {
        loop {
            let msg = self.recv_for(what)?;
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
        self.send_bytes(text.as_bytes());
    }

    /// Writes `bytes` as they are (they need not be UTF-8).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        match self.writer.write_all(bytes) {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {
                self.timed_out(&format!("QEMU to read {}", brief(&String::from_utf8_lossy(bytes))))
            }
            Err(e) => panic!("write: {e}"),
        }
    }

    /// Sends `msg` and returns its reply.
    pub fn call(&mut self, msg: Value) -> Value {
        self.send(&msg);
        self.recv_reply_for(&|| format!("the reply to {}", brief(&msg.to_string())))
            .unwrap_or_else(|| panic!("EOF instead of a reply to {msg}"))
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
        let greeting = self.recv_for(&|| "the QMP greeting".to_owned()).expect("greeting");
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
        if let Some(msg) = self.recv_reply_for(&|| "the end of the connection".to_owned()) {
            panic!("expected EOF, got {msg}");
        }
    }

    /// Sends a message with `fd` attached (SCM_RIGHTS), as getfd needs.
    pub fn send_with_fd(&mut self, msg: &Value, fd: RawFd) {
        if let Err(e) = poll_fd(self.raw_fd(), libc::POLLOUT, self.timeout()) {
            if is_timeout(&e) {
                self.timed_out(&format!("room to send {msg} with an fd"));
            }
            panic!("poll: {e}");
        }
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
        let mut child = Command::new(bin_dir().join(bin))
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        // A QEMU that never answers is killed, not left behind.
        let mgr = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut mgr = Qmp::connect(sock);
            mgr.handshake(&[]);
            mgr
        }));
        match mgr {
            Ok(mgr) => Qemu { child, dir, mgr },
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

/// Waits for QEMU to exit; kills it and panics after `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    wait_child(child, limit, "QEMU")
}

/// Waits for `child` (`what`) to exit; kills it and panics after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `is_finished` (of a thread) holds; panics after `limit`
/// saying that `what` did not finish.  Polls with a short backoff, so
/// that the many joins of the stress tests cost little.
fn wait_finished(limit: Duration, what: &str, is_finished: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_micros(50);
    while !is_finished() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what} to finish");
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// `handle.join()`, waiting at most `limit` for the thread (`what`) to
/// finish; panics if it does not.  A timed-out thread is left running:
/// it ends when the test's QEMU is killed.
pub fn join_timeout<T>(handle: std::thread::JoinHandle<T>, limit: Duration, what: &str) -> std::thread::Result<T> {
    wait_finished(limit, what, || handle.is_finished());
    handle.join()
}

/// `join_timeout` for a thread of a `std::thread::scope`.  (The scope
/// still joins a thread that timed out when it ends: the thread must
/// end by itself, as every wait in it is bounded.)
pub fn join_scoped_timeout<T>(
    handle: std::thread::ScopedJoinHandle<'_, T>,
    limit: Duration,
    what: &str,
) -> std::thread::Result<T> {
    wait_finished(limit, what, || handle.is_finished());
    handle.join()
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
    /// Only a full backlog is waited for (at most `IO_TIMEOUT`), as a
    /// blocking connect would.
    pub fn try_connect(path: &Path) -> std::io::Result<Self> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match connect_unix(path) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        panic!("timed out after {IO_TIMEOUT:?} waiting for {} to accept a connection", path.display());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return Ok(Self::from_fd(r?.into())),
            }
        }
    }

    /// A second handle on the connection's socket, for a writer thread.
    /// Its writes are bounded by SO_SNDTIMEO (see `set_timeout`): one
    /// that times out fails with WouldBlock.
    pub fn writer_clone(&self) -> File {
        self.writer.file.try_clone().expect("dup")
    }

    /// Write errors are returned (QEMU may be gone), but a write that
    /// times out still panics: that is a hang, not an end.
    pub fn try_send_raw(&mut self, text: &str) -> std::io::Result<()> {
        match self.writer.write_all(text.as_bytes()) {
            Err(e) if is_timeout(&e) => self.timed_out(&format!("QEMU to read {}", brief(text))),
            r => r,
        }
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
            Err(e) if is_timeout(&e) => self.timed_out("a QMP message or the end of the connection"),
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
                Err(e) if is_timeout(&e) => self.timed_out("QEMU to close the connection"),
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}
