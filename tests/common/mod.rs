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

/// sendmsg with one fd in an SCM_RIGHTS control message.
pub fn send_fd(sock: RawFd, bytes: &[u8], fd: RawFd) {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
    // SAFETY: plain libc calls on buffers that live across the call.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        assert_eq!(libc::sendmsg(sock, &msg, 0), bytes.len() as isize, "sendmsg");
    }
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
