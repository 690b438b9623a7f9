// SPDX-License-Identifier: GPL-2.0-or-later
//! A VM manager in the style of systemd-vmspawn: it boots a guest and,
//! while the guest runs, hands each client a one-shot QMP session of
//! its own ("acquire QMP"), which QEMU tears down when the client goes.
//!
//! Usage: vmspawn_manager [--accel kvm|tcg] QEMU GUEST_DIR CLIENT...
//!
//! QEMU boots GUEST_DIR/vmlinuz and initrd.img (tests/guest/) with its
//! console on a socket, which the manager echoes.  Each CLIENT, a shell
//! command, runs at the same time as the others with its session on
//! stdin and stdout: a socketpair whose QEMU end is passed with getfd,
//! a socket chardev on it (chardev-add), a monitor on that with
//! close-action=delete (monitor-add).  When a client exits, QEMU removes
//! its monitor and chardev by itself; the manager checks that, then
//! powers the guest off.

use std::{
    io::{BufRead, BufReader, Write},
    os::{fd::OwnedFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::json;

mod fdpass;
mod qmp;

use qmp::Qmp;

/// Every wait of the manager is bounded; a distribution kernel boots in
/// seconds under KVM and well within this under TCG.
const BOOT_LIMIT: Duration = Duration::from_secs(240);
const LIMIT: Duration = Duration::from_secs(60);

fn connect_retrying(path: &Path) -> std::io::Result<UnixStream> {
    let deadline = Instant::now() + LIMIT;
    loop {
        match UnixStream::connect(path) {
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            r => return r,
        }
    }
}

/// QEMU with the guest, paused until the console is connected.
fn start_qemu(qemu: &str, accel: &str, guest: &Path, dir: &Path) -> std::io::Result<Child> {
    let sock = |name: &str| format!("path={},server=on,wait=off", dir.join(name).display());
    Command::new(qemu)
        .args(["-M", "pc", "-accel", accel, "-m", "256", "-nodefaults"])
        .args(["-display", "none", "-S", "-name", "vmspawn"])
        .arg("-kernel")
        .arg(guest.join("vmlinuz"))
        .arg("-initrd")
        .arg(guest.join("initrd.img"))
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .args(["-chardev", &format!("socket,id=qmp,{}", sock("qmp.sock"))])
        .args(["-mon", "chardev=qmp,mode=control"])
        .args([
            "-chardev",
            &format!("socket,id=console,{}", sock("console.sock")),
        ])
        .args(["-serial", "chardev:console"])
        .stdin(Stdio::null())
        .spawn()
}

/// Echoes the guest's console; tells `ready` when init is up.
fn echo_console(console: UnixStream, ready: mpsc::Sender<()>) {
    for line in BufReader::new(console).lines() {
        let Ok(line) = line else { return };
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            println!("guest   | {line}");
        }
        if line.starts_with("qmh: ready") {
            let _ = ready.send(());
        }
    }
}

/// A one-shot session: QEMU's end of a socketpair becomes a monitor
/// that goes away with its client.  Returns the client's end.
fn new_session(qmp: &mut Qmp, name: &str) -> std::io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    qmp.execute(
        "getfd",
        json!({"fdname": name}),
        Some(&OwnedFd::from(theirs)),
    )?;
    let backend = json!({"type": "socket", "data": {
        "addr": {"type": "fd", "data": {"str": name}}, "server": false}});
    qmp.execute("chardev-add", json!({"id": name, "backend": backend}), None)?;
    qmp.execute(
        "monitor-add",
        json!({"id": name, "chardev": name, "close-action": "delete"}),
        None,
    )?;
    Ok(ours.into())
}

fn run_client(cmd: &str, name: &str, session: OwnedFd) -> std::io::Result<Child> {
    let stdout = session.try_clone()?;
    Command::new("sh")
        .args(["-c", cmd])
        .env("SESSION", name)
        .stdin(Stdio::from(session))
        .stdout(Stdio::from(stdout))
        .spawn()
}

/// Waits for `child` at most `limit`; kills it after that.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::io::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "{what} did not exit within {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The names of the sessions QEMU still has, as monitors or chardevs.
fn sessions_left(qmp: &mut Qmp) -> std::io::Result<Vec<String>> {
    let mut left = Vec::new();
    for (cmd, key) in [("query-monitors", "id"), ("query-chardev", "label")] {
        for item in qmp
            .execute(cmd, json!({}), None)?
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = item[key].as_str().unwrap_or_default();
            if name.starts_with("session-") {
                left.push(name.to_owned());
            }
        }
    }
    Ok(left)
}

fn run(qemu_bin: &str, accel: &str, guest: &Path, clients: &[String]) -> std::io::Result<bool> {
    let dir = std::env::temp_dir().join(format!("vmspawn-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut qemu = start_qemu(qemu_bin, accel, guest, &dir)?;
    let result = (|| {
        let mut qmp = Qmp::new(connect_retrying(&dir.join("qmp.sock"))?)?;
        let console = connect_retrying(&dir.join("console.sock"))?;
        let mut console_in = console.try_clone()?;
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || echo_console(console, ready_tx));
        qmp.execute("cont", json!({}), None)?;
        println!("manager | booting the guest ({accel})");
        ready
            .recv_timeout(BOOT_LIMIT)
            .map_err(|_| std::io::Error::other("the guest did not boot"))?;

        let mut running = Vec::new();
        for (i, cmd) in clients.iter().enumerate() {
            let name = format!("session-{}", i + 1);
            let session = new_session(&mut qmp, &name)?;
            println!("manager | {name}: a one-shot monitor for client {}", i + 1);
            running.push((name.clone(), run_client(cmd, &name, session)?));
        }
        let mut all_ok = true;
        for (name, child) in &mut running {
            let ok = wait_bounded(child, LIMIT, name)?;
            println!(
                "manager | {name}: client exited{}",
                if ok { "" } else { " with an error" }
            );
            all_ok &= ok;
        }
        // close-action=delete: QEMU removes what each session was
        let deadline = Instant::now() + LIMIT;
        while !sessions_left(&mut qmp)?.is_empty() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("QEMU kept the sessions"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("manager | every session's monitor and chardev are gone");
        console_in.write_all(b"poweroff\n")?;
        all_ok &= wait_bounded(&mut qemu, LIMIT, "QEMU")?;
        println!("manager | the guest powered off; QEMU exited");
        Ok(all_ok)
    })();
    let _ = qemu.kill();
    let _ = qemu.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let accel = if args.first().map(String::as_str) == Some("--accel") && args.len() > 1 {
        let a = args.remove(1);
        args.remove(0);
        a
    } else if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
    {
        "kvm".to_owned()
    } else {
        "tcg".to_owned()
    };
    if args.len() < 3 {
        eprintln!("usage: vmspawn_manager [--accel kvm|tcg] QEMU GUEST_DIR CLIENT...");
        return ExitCode::from(2);
    }
    match run(&args[0], &accel, &PathBuf::from(&args[1]), &args[2..]) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vmspawn_manager: {e}");
            ExitCode::from(1)
        }
    }
}
