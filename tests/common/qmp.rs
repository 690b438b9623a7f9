// SPDX-License-Identifier: GPL-2.0-or-later
//! A line-based QMP client over any fd (Unix sockets, ptys,
//! socketpairs) whose every read, write and connect is bounded.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::fd::owned;

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
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("fd {fd} idle for {timeout:?}"),
                ))
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
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// A QMP message as JSON.  QEMU accepts values nested up to 1,024
/// deep and echoes a request's id in its reply, so what serde_json's
/// default limit of 128 refuses is parsed again without the limit, on a
/// thread with the stack that takes (a debug build's frames are large).
/// A complete line that is not JSON panics: garbled output is a bug.
fn parse_line(line: &str) -> Value {
    let text = line.trim();
    let parsed = serde_json::from_str(text).or_else(|e| {
        let unbounded = || {
            let mut de = serde_json::Deserializer::from_str(text);
            de.disable_recursion_limit();
            let mut values = de.into_iter::<Value>();
            match (values.next(), values.next()) {
                (Some(Ok(value)), None) => Some(value),
                _ => None,
            }
        };
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn_scoped(s, unbounded)
                .expect("a thread to parse on")
                .join()
                .expect("parsing does not panic")
        })
        .ok_or_else(|| e.to_string())
    });
    parsed.unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// One connect(2) to a Unix socket, non-blocking so that a full backlog
/// (the listener is not accepting) is EAGAIN instead of a wait without
/// end; the stream returned is blocking.
fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscall; the fd is checked and owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = owned(fd);
    // SAFETY: sockaddr_un is plain data; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes; fd is ours.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl on our own fd.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        assert!(
            flags >= 0
                && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
        );
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
        let writer = TimedFd {
            file: file.try_clone().expect("dup"),
            timeout: IO_TIMEOUT,
        };
        let mut qmp = Qmp {
            writer,
            reader: BufReader::new(TimedFd {
                file,
                timeout: IO_TIMEOUT,
            }),
            events: Vec::new(),
        };
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
        panic!(
            "timed out after {:?} waiting for {what} (QMP connection on fd {})",
            self.timeout(),
            self.raw_fd()
        )
    }

    pub fn connect(path: &Path) -> Self {
        Self::connect_while(path, || Ok(()))
    }

    /// `connect`, giving up at once when `alive` says the server is
    /// gone (a QEMU that died at start-up leaves no socket to wait for).
    pub fn connect_while(path: &Path, mut alive: impl FnMut() -> Result<(), String>) -> Self {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match connect_unix(path) {
                Ok(s) => return Self::from_fd(s.into()),
                Err(e) => {
                    if let Err(why) = alive() {
                        panic!("cannot connect to {}: {why}", path.display());
                    }
                    if Instant::now() <= deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    panic!(
                        "timed out after {IO_TIMEOUT:?} connecting to {}: {e}",
                        path.display()
                    )
                }
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
    /// A last line without its newline is half a message (docs/contract.md: a
    /// connection ends on a message boundary): a panic, not a message.
    fn recv_for(&mut self, what: &dyn Fn() -> String) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) if !line.ends_with('\n') => panic!(
                "the connection ended inside a message, while waiting for {}: {}",
                what(),
                brief(&format!("{line:?}"))
            ),
            Ok(_) => Some(parse_line(&line)),
            Err(e) if is_timeout(&e) => self.timed_out(&what()),
            Err(e) => panic!("read: {e}"),
        }
    }

    /// The next line as it came, without its newline, or None at EOF (a
    /// last line without its newline comes as it is).  For the tests
    /// that tell garbage from messages themselves: on unpatched QEMU
    /// (`QMH_BASELINE`) the bug they look for may garble the stream.
    pub fn recv_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) if is_timeout(&e) => self.timed_out("a line"),
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
            Err(e) if is_timeout(&e) => self.timed_out(&format!(
                "QEMU to read {}",
                brief(&String::from_utf8_lossy(bytes))
            )),
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
        let greeting = self
            .recv_for(&|| "the QMP greeting".to_owned())
            .expect("greeting");
        let offered = greeting["QMP"]["capabilities"]
            .as_array()
            .unwrap_or_else(|| panic!("not a greeting: {greeting}"))
            .iter()
            .map(|c| c.as_str().expect("capability").to_owned())
            .collect();
        self.ok("qmp_capabilities", json!({"enable": caps}));
        offered
    }

    /// Waits up to `limit` for event `name` (one already kept aside
    /// counts), takes it out of `events` and returns it.
    pub fn wait_event(&mut self, name: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                return self.events.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {limit:?} waiting for event {name}"
            );
            let saved = self.timeout();
            self.set_timeout(left);
            let msg = self.recv_for(&|| format!("event {name}"));
            self.set_timeout(saved);
            match msg {
                Some(m) if m.get("event").is_some() => self.events.push(m),
                Some(m) => panic!("unexpected reply {m} while waiting for event {name}"),
                None => panic!("EOF while waiting for event {name}"),
            }
        }
    }

    /// The connection ends (on a message boundary) with nothing more to
    /// read: no reply and no event.  For a client whose monitor was
    /// removed while no event was broadcast.
    pub fn expect_eof(&mut self) {
        self.expect_eof_after(&[]);
    }

    /// The end of a removed monitor's connection: nothing more to read
    /// but events from `emitted_before`, then EOF on a message boundary.
    /// Returns the events that came.
    ///
    /// `emitted_before` are the events broadcast before the removal, as
    /// a monitor that outlives it (the manager) saw them before the
    /// removal's reply: an event is one QDict, timestamp included, sent
    /// to every monitor in `mon_list` order under `monitor_lock`, and the
    /// removal takes the monitor off `mon_list` under that lock before
    /// it replies.  So an event that the removed monitor's client gets
    /// and the manager did not see before the reply was sent to a
    /// removed monitor (docs/contract.md, "Events and shutdown"), or is a reply.
    pub fn expect_eof_after(&mut self, emitted_before: &[Value]) -> Vec<Value> {
        let mut got = Vec::new();
        while let Some(msg) = self.recv_for(&|| "the end of the connection".to_owned()) {
            assert!(
                msg.get("event").is_some(),
                "expected EOF, got {}",
                brief(&msg.to_string())
            );
            assert!(
                emitted_before.contains(&msg),
                "an event broadcast after the monitor was removed (or never): {msg}; \
                 the events broadcast before: {emitted_before:?}"
            );
            got.push(msg);
        }
        got
    }

    /// Does anything come within `wait` (bytes already read ahead count)?
    /// For checks that something does not come while it must not: a
    /// false "no" only makes such a check weaker, never fail.
    pub fn readable_within(&mut self, wait: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        match poll_fd(self.raw_fd(), libc::POLLIN, wait) {
            Ok(()) => true,
            Err(e) if is_timeout(&e) => false,
            Err(e) => panic!("poll: {e}"),
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

/// Reads and writes for connections that may go away under them (QEMU
/// removing the monitor, or exiting): the end is a result.
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
                        panic!(
                            "timed out after {IO_TIMEOUT:?} waiting for {} to accept a connection",
                            path.display()
                        );
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
            Ok(_) if buf.last() != Some(&b'\n') => {
                Incoming::Partial(String::from_utf8_lossy(&buf).into_owned())
            }
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                Incoming::Msg(parse_line(&line))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && buf.is_empty() => {
                Incoming::Closed
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Incoming::Partial(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) if is_timeout(&e) => {
                self.timed_out("a QMP message or the end of the connection")
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

    /// Everything the peer sends until it closes (EOF or reset).
    pub fn read_to_close(&mut self) -> Vec<u8> {
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
