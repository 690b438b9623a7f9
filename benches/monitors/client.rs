// SPDX-License-Identifier: GPL-2.0-or-later
//! A lean QMP client for the timed paths: raw lines, no JSON parsing.

use std::{
    fs::File,
    io::{Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const QUERY_NAME: &[u8] = b"{\"execute\":\"query-name\"}\n";
pub const CAPS: &[u8] = b"{\"execute\":\"qmp_capabilities\"}\n";

pub struct Raw {
    f: File,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Raw {
    pub fn new(fd: OwnedFd) -> Self {
        Raw {
            f: File::from(fd),
            buf: vec![0; 1 << 16],
            pos: 0,
            end: 0,
        }
    }

    pub fn connect(path: &Path) -> Self {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        Self::new(s.into())
    }

    /// Connects, retrying while the listener is not there yet.
    pub fn connect_retry(path: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return Self::new(s.into()),
                Err(e) if Instant::now() > deadline => panic!("connect {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    pub fn fd(&self) -> i32 {
        self.f.as_raw_fd()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.f.write_all(bytes).expect("write");
    }

    fn line_range(&mut self) -> (usize, usize) {
        loop {
            if let Some(i) = self.buf[self.pos..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let start = self.pos;
                self.pos += i + 1;
                return (start, start + i);
            }
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.f.read(&mut self.buf[self.end..]) {
                Ok(0) => panic!("EOF on a QMP connection"),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next line, without its newline.
    pub fn line(&mut self) -> &[u8] {
        let (s, e) = self.line_range();
        &self.buf[s..e]
    }

    /// The next line that is not an event.
    pub fn reply(&mut self) -> &[u8] {
        loop {
            let (s, e) = self.line_range();
            if !self.buf[s..e].starts_with(b"{\"timestamp\"") {
                return &self.buf[s..e];
            }
        }
    }

    /// Sends a command (one line of JSON) that must succeed; returns the reply.
    pub fn ok(&mut self, cmd: &str) -> String {
        self.send(cmd.as_bytes());
        self.send(b"\n");
        self.check_ok(cmd)
    }

    pub fn check_ok(&mut self, what: &str) -> String {
        let r = String::from_utf8_lossy(self.reply()).into_owned();
        assert!(r.starts_with("{\"return\""), "{what} failed: {r}");
        r
    }

    pub fn ok_json(&mut self, v: Value) -> String {
        self.ok(&v.to_string())
    }

    /// Greeting, qmp_capabilities.  Events before the greeting are
    /// skipped: unpatched QEMU sends one there now and then (the race
    /// qemu-patches 0017 and 0018 fix); the tests check the order, the
    /// benchmarks only time.
    pub fn handshake(&mut self) {
        let g = self.reply();
        assert!(
            g.starts_with(b"{\"QMP\""),
            "not a greeting: {}",
            String::from_utf8_lossy(g)
        );
        self.send(CAPS);
        self.check_ok("qmp_capabilities");
    }

    pub fn query_name(&mut self) {
        self.send(QUERY_NAME);
        self.check_reply_ok();
    }

    pub fn check_reply_ok(&mut self) {
        let r = self.reply();
        assert!(
            r.starts_with(b"{\"return\""),
            "query-name: {}",
            String::from_utf8_lossy(r)
        );
    }
}
