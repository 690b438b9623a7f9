// SPDX-License-Identifier: GPL-2.0-or-later
//! A minimal QMP client: one command at a time, events skipped, every
//! read bounded.

use std::{
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    time::Duration,
};

use serde_json::{json, Value};

use crate::fdpass;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    sock: UnixStream,
}

impl Qmp {
    /// Reads the greeting and leaves negotiation mode.
    pub fn new(sock: UnixStream) -> std::io::Result<Self> {
        sock.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(sock.try_clone()?),
            sock,
        };
        qmp.recv()?; // greeting
        qmp.execute("qmp_capabilities", json!({}), None)?;
        Ok(qmp)
    }

    fn recv(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed the monitor",
            ));
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    /// Runs a command, with `fd` attached if given; returns its "return".
    pub fn execute(
        &mut self,
        name: &str,
        args: Value,
        fd: Option<&OwnedFd>,
    ) -> std::io::Result<Value> {
        let msg = format!("{}\n", json!({"execute": name, "arguments": args}));
        match fd {
            Some(fd) => {
                fdpass::send_with_fd(self.sock.as_raw_fd(), msg.as_bytes(), fd.as_raw_fd())?
            }
            None => self.sock.write_all(msg.as_bytes())?,
        }
        loop {
            let rsp = self.recv()?;
            if let Some(ret) = rsp.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = rsp.get("error") {
                return Err(std::io::Error::other(format!("{name}: {}", err["desc"])));
            }
        }
    }
}
