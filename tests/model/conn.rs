// SPDX-License-Identifier: GPL-2.0-or-later
//! A QMP connection for the model tester: every read has a deadline,
//! output is split into JSON messages by their braces (so `pretty`
//! monitors work too), and anything that is not a whole message on a
//! message boundary is reported, never panicked on.

use std::{
    io::{ErrorKind, Read, Write},
    os::{
        fd::{AsRawFd, RawFd},
        unix::net::UnixStream,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use super::failure::{Failure, Kind};

/// How long a single expected message may take (query-qmp-schema under
/// ASan included).  Only a hang or a lost reply gets near it.
pub const READ_LIMIT: Duration = Duration::from_secs(30);

/// What one read found.
#[derive(Debug)]
pub enum Incoming {
    Msg(Value),
    /// The peer closed (EOF, or a reset once all data was read).
    Closed,
}

/// The state of the brace scanner over `buf[..scanned]`.
#[derive(Default)]
struct Scan {
    scanned: usize,
    depth: usize,
    in_str: bool,
    escape: bool,
    start: Option<usize>,
}

pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    scan: Scan,
    closed: bool,
    /// Names this connection in failure messages.
    pub label: String,
}

impl Conn {
    pub fn new(stream: UnixStream, label: impl Into<String>) -> Self {
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("SO_SNDTIMEO");
        Conn {
            stream,
            buf: Vec::new(),
            scan: Scan::default(),
            closed: false,
            label: label.into(),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Writes all of `text`.  An error is returned, not judged: whether
    /// the peer may have gone is the caller's business.
    pub fn write(&mut self, text: &str) -> std::io::Result<()> {
        self.stream.write_all(text.as_bytes())
    }

    /// Writes all of `bytes` (which need not be UTF-8), as `write`.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// A second handle on the socket, for a writer thread.
    pub fn writer(&self) -> UnixStream {
        self.stream.try_clone().expect("dup")
    }

    /// shutdown(2) both ways, then the fd is closed when dropped.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// A message taken off the front of `buf`, if a whole one is there.
    fn take_message(&mut self) -> Result<Option<Value>, Failure> {
        let s = &mut self.scan;
        while s.scanned < self.buf.len() {
            let b = self.buf[s.scanned];
            s.scanned += 1;
            if s.start.is_none() {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' => {
                        s.start = Some(s.scanned - 1);
                        s.depth = 1;
                        continue;
                    }
                    _ => {
                        let text = String::from_utf8_lossy(&self.buf[s.scanned - 1..]).into_owned();
                        return Err(Failure::new(
                            Kind::Garbled,
                            format!(
                                "{}: output does not start a JSON object: {:?}",
                                self.label,
                                cut(&text)
                            ),
                        ));
                    }
                }
            }
            if s.in_str {
                if s.escape {
                    s.escape = false;
                } else if b == b'\\' {
                    s.escape = true;
                } else if b == b'"' {
                    s.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => s.in_str = true,
                b'{' | b'[' => s.depth += 1,
                b'}' | b']' => s.depth -= 1,
                _ => {}
            }
            if s.depth == 0 {
                // QEMU ends every message with "\r\n" ("\n" when
                // pretty): wait for it.
                let rest = &self.buf[s.scanned..];
                let eol = match rest {
                    [b'\n', ..] => Some(1),
                    [b'\r', b'\n', ..] => Some(2),
                    [] | [b'\r'] => None,
                    _ => {
                        let text =
                            String::from_utf8_lossy(&self.buf[s.start.unwrap()..]).into_owned();
                        return Err(Failure::new(
                            Kind::Garbled,
                            format!(
                                "{}: a message not followed by a line end: {:?}",
                                self.label,
                                cut(&text)
                            ),
                        ));
                    }
                };
                let Some(eol) = eol else {
                    s.scanned -= 1;
                    s.depth = 1;
                    return Ok(None);
                };
                let start = s.start.take().unwrap();
                let end = s.scanned;
                let parsed = serde_json::from_slice::<Value>(&self.buf[start..end]);
                let msg = parsed.map_err(|e| {
                    let text = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
                    Failure::new(
                        Kind::Garbled,
                        format!("{}: not JSON ({e}): {:?}", self.label, cut(&text)),
                    )
                })?;
                self.buf.drain(..end + eol);
                *s = Scan::default();
                return Ok(Some(msg));
            }
        }
        Ok(None)
    }

    /// The next message, or the close, within `limit`.  A timeout and
    /// a connection that ends inside a message are failures.
    pub fn recv(&mut self, limit: Duration) -> Result<Incoming, Failure> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(msg) = self.take_message()? {
                return Ok(Incoming::Msg(msg));
            }
            if self.closed {
                if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(Incoming::Closed);
                }
                let text = String::from_utf8_lossy(&self.buf).into_owned();
                return Err(Failure::new(
                    Kind::Garbled,
                    format!(
                        "{}: the connection ended inside a message: {:?}",
                        self.label,
                        cut(&text)
                    ),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::new(
                    Kind::Timeout,
                    format!("{}: nothing read for {limit:?}", self.label),
                ));
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .expect("SO_RCVTIMEO");
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // On AF_UNIX, QEMU closing with our input unread resets us.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => self.closed = true,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(Failure::new(Kind::Io, format!("{}: read: {e}", self.label))),
            }
        }
    }

    /// Sends `cmd` with `id` and returns its reply; events are passed
    /// to `on_event`.  For the control connections, which own no other
    /// requests.
    pub fn call(
        &mut self,
        cmd: &Value,
        id: &str,
        on_event: impl FnMut(&Value) -> Result<(), Failure>,
    ) -> Result<Value, Failure> {
        let mut msg = cmd.clone();
        msg["id"] = Value::from(id);
        self.write(&format!("{msg}\n"))
            .map_err(|e| Failure::new(Kind::Io, format!("{}: write {msg}: {e}", self.label)))?;
        self.wait_reply(id, on_event)
    }

    /// Reads up to the reply with `id`; events go to `on_event`.
    pub fn wait_reply(
        &mut self,
        id: &str,
        mut on_event: impl FnMut(&Value) -> Result<(), Failure>,
    ) -> Result<Value, Failure> {
        let msg = id;
        loop {
            match self.recv(READ_LIMIT)? {
                Incoming::Closed => {
                    return Err(Failure::new(
                        Kind::MissingReply,
                        format!("{}: closed instead of replying to {msg}", self.label),
                    ))
                }
                Incoming::Msg(m) if m.get("event").is_some() => on_event(&m)?,
                Incoming::Msg(m) => {
                    if m.get("id") != Some(&Value::from(id)) {
                        return Err(Failure::new(
                            Kind::StrayReply,
                            format!(
                                "{}: reply {m} while waiting for the reply to {msg}",
                                self.label
                            ),
                        ));
                    }
                    return Ok(m);
                }
            }
        }
    }
}

/// A long text cut for a message.
pub fn cut(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
        None => text.to_owned(),
    }
}
