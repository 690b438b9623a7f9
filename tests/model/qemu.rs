// SPDX-License-Identifier: GPL-2.0-or-later
//! The QEMU under test: its command line (a manager -qmp, one -mon
//! control monitor per worker lane, an HMP monitor, a removable -mon
//! QMP monitor and a removable, restricted -object monitor-qmp), the
//! monitors that gives, and what /proc says about it.

use std::{
    fs::File,
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use super::{
    common::{bin_dir, kill_if_running, temp_dir},
    conn::Conn,
    failure::{Failure, Kind, Res},
    state::{Close, Lane, Lists, Mon, Origin, Shared},
};

pub struct Qemu {
    pub child: Child,
    pub dir: PathBuf,
    stderr: PathBuf,
}

fn cli_mon(id: &str, chr: &str, hmp: bool, n: u32) -> Mon {
    Mon {
        id: id.into(),
        chr: chr.into(),
        hmp,
        origin: Origin::CommandLine,
        close: Close::None,
        lists: Lists::default(),
        order: (0, 0, n),
        dying: false,
    }
}

/// The lists of the -object monitor-qmp `obj0`.
fn obj0_lists() -> Lists {
    Lists {
        allow: Some(vec!["query-*".into(), "getfd".into(), "monitor-*".into()]),
        deny: Some(vec!["query-qmp-schema".into()]),
    }
}

/// The monitors every lane may name and the lanes' starting models:
/// lane 0 owns the -mon monitor `cli0` on `cli0chr` and the -object
/// monitor-qmp `obj0` on `obj0chr` (created first: -object monitors
/// come before those of -mon and -qmp).
pub fn initial(workers: u8) -> (Shared, Vec<Lane>) {
    let mut monitors = vec![cli_mon("compat_monitor0", "compat_monitor0", false, 1)];
    for w in 1..=workers {
        monitors.push(cli_mon(
            &format!("ctl{w}"),
            &format!("ctl{w}"),
            false,
            w as u32 + 1,
        ));
    }
    monitors.push(cli_mon("hmp0", "hmpchr", true, workers as u32 + 2));
    let chardevs = monitors.iter().map(|m| m.chr.clone()).collect();
    let mut lanes: Vec<Lane> = (0..=workers).map(Lane::new).collect();
    let mut obj0 = cli_mon("obj0", "obj0chr", false, 0);
    obj0.lists = obj0_lists();
    lanes[0].adopt_monitor(obj0);
    lanes[0].adopt_monitor(cli_mon("cli0", "cli0chr", false, workers as u32 + 3));
    (Shared { monitors, chardevs }, lanes)
}

impl Qemu {
    /// Starts QEMU; returns it with the manager connection and one
    /// control connection per worker, all negotiated.
    pub fn start(workers: u8) -> Res<(Qemu, Conn, Vec<Conn>)> {
        let dir = temp_dir();
        let d = dir.display();
        let mut args: Vec<String> = ["-M", "none", "-accel", "qtest", "-display", "none", "-qmp"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("unix:{d}/mgr.sock,server=on,wait=off"));
        let mut sock = |id: &str, file: &str, mode: &str, mon: &str| {
            args.push("-chardev".into());
            args.push(format!(
                "socket,id={id},path={d}/{file}.sock,server=on,wait=off"
            ));
            args.push("-mon".into());
            args.push(format!("chardev={id},mode={mode},id={mon}"));
        };
        for w in 1..=workers {
            let c = format!("ctl{w}");
            sock(&c, &c, "control", &c);
        }
        sock("hmpchr", "hmp", "readline", "hmp0");
        sock("cli0chr", "cli0chr", "control", "cli0");
        args.push("-chardev".into());
        args.push(format!(
            "socket,id=obj0chr,path={d}/obj0chr.sock,server=on,wait=off"
        ));
        let mut obj0 = serde_json::json!({"qom-type": "monitor-qmp", "id": "obj0",
                                          "chardev": "obj0chr"});
        obj0_lists().add_to(&mut obj0, false);
        args.push("-object".into());
        args.push(obj0.to_string());
        let stderr = dir.join("qemu.stderr");
        let child = Command::new(bin_dir().join("qemu-system-x86_64"))
            .args(&args)
            .stdin(Stdio::null())
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .map_err(|e| Failure::new(Kind::Crash, format!("cannot start QEMU: {e}")))?;
        let mut qemu = Qemu { child, dir, stderr };
        let mgr = qemu.control("mgr")?;
        let ctls = (1..=workers)
            .map(|w| qemu.control(&format!("ctl{w}")))
            .collect::<Res<Vec<_>>>()?;
        Ok((qemu, mgr, ctls))
    }

    fn control(&mut self, name: &str) -> Res<Conn> {
        let path = self.dir.join(format!("{name}.sock"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(self.crashed().unwrap_or_else(|| {
                        Failure::new(Kind::Timeout, format!("connect {name}: {e}"))
                    }))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut conn = Conn::new(stream, format!("control {name}"));
        match conn.recv(super::conn::READ_LIMIT)? {
            super::conn::Incoming::Msg(m) if m.get("QMP").is_some() => {}
            other => {
                return Err(Failure::new(
                    Kind::Greeting,
                    format!("{name}: {other:?} instead of a greeting"),
                ))
            }
        }
        let rsp = conn.call(
            &serde_json::json!({"execute": "qmp_capabilities"}),
            "caps",
            |_| Ok(()),
        )?;
        if rsp.get("return").is_none() {
            return Err(Failure::new(
                Kind::WrongReply,
                format!("{name}: qmp_capabilities: {rsp}"),
            ));
        }
        Ok(conn)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of QEMU's stderr, where aborts and sanitizers write.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A failure if QEMU is not running any more.
    pub fn crashed(&mut self) -> Option<Failure> {
        let status = self.child.try_wait().ok().flatten()?;
        Some(Failure::new(
            Kind::Crash,
            format!("QEMU exited: {status}; stderr:\n{}", self.stderr_tail()),
        ))
    }

    /// QEMU's open fds, as link targets.
    pub fn fds(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The names of the getfd memfds QEMU holds.
    pub fn memfds(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .fds()
            .iter()
            .filter_map(|f| f.strip_prefix("/memfd:"))
            .map(|f| f.trim_end_matches(" (deleted)").to_owned())
            .filter(|f| f.starts_with("qmh-"))
            .collect();
        v.sort();
        v
    }

    /// Waits (bounded) for QEMU to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Res<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(Failure::new(
                    Kind::Exit,
                    format!("QEMU did not exit within {limit:?} of quit"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
