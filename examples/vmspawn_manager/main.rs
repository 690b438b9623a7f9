// SPDX-License-Identifier: GPL-2.0-or-later
//! A session manager in the style of systemd-vmspawn's "acquire QMP":
//! it hands a client a fresh, independent raw QMP session on a running
//! QEMU, and cleans up when the client goes away.
//!
//! Usage: vmspawn_manager QMP_SOCKET CLIENT [ARGS...]
//!
//! On the QEMU's launch-time monitor (QMP_SOCKET) it creates a socketpair,
//! passes one end with getfd (SCM_RIGHTS), puts a socket chardev on that
//! fd (chardev-add) and a monitor on the chardev (monitor-add).  CLIENT
//! runs with the other end as its stdin and stdout and speaks QMP there.
//! When it exits, the manager removes the monitor and the chardev.

use std::{
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    process::{Command, ExitCode, Stdio},
};

use serde_json::{json, Value};

mod fdpass;

/// A minimal QMP client: one command at a time, events skipped.
struct Qmp {
    reader: BufReader<UnixStream>,
    sock: UnixStream,
}

impl Qmp {
    fn connect(path: &str) -> std::io::Result<Self> {
        let sock = UnixStream::connect(path)?;
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
    fn execute(&mut self, name: &str, args: Value, fd: Option<&OwnedFd>) -> std::io::Result<Value> {
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

fn run(qmp_path: &str, client: &[String]) -> std::io::Result<i32> {
    let mut qmp = Qmp::connect(qmp_path)?;
    let name = format!("vmspawn-{}", std::process::id());
    let (ours, theirs) = UnixStream::pair()?;
    let theirs = OwnedFd::from(theirs);

    qmp.execute("getfd", json!({"fdname": name}), Some(&theirs))?;
    drop(theirs); // QEMU holds its own copy now
    let backend = json!({"type": "socket", "data": {
        "addr": {"type": "fd", "data": {"str": name}}, "server": false}});
    qmp.execute("chardev-add", json!({"id": name, "backend": backend}), None)?;
    qmp.execute("monitor-add", json!({"id": name, "chardev": name}), None)?;

    let ours = OwnedFd::from(ours);
    // SAFETY: dup() of a descriptor we own returns a fresh one, which
    // the child's stdout takes over.
    let stdout = unsafe { OwnedFd::from_raw_fd(libc::dup(ours.as_raw_fd())) };
    let status = Command::new(&client[0])
        .args(&client[1..])
        .stdin(Stdio::from(ours))
        .stdout(Stdio::from(stdout))
        .status()?;

    // The client is gone: remove what we created for it.
    qmp.execute("monitor-remove", json!({"id": name}), None)?;
    qmp.execute("chardev-remove", json!({"id": name}), None)?;
    Ok(status.code().unwrap_or(1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} QMP_SOCKET CLIENT [ARGS...]", args[0]);
        return ExitCode::from(2);
    }
    match run(&args[1], &args[2..]) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("vmspawn_manager: {e}");
            ExitCode::from(1)
        }
    }
}
