// SPDX-License-Identifier: GPL-2.0-or-later
//! docs/contract.md, monitor-remove: "a command of that monitor that is already
//! running finishes, and its response is discarded", and the requests
//! it had queued are dropped.  Deterministic: the command is parked in
//! the QMP dispatcher until the test lets it go.
//!
//! How a command is parked: `block_resize` is a coroutine command, run
//! by the dispatcher coroutine itself.  On a qcow2 image over blkdebug,
//! growing the image grows the L1 table, which passes blkdebug's
//! `l1_grow_alloc_table` event; a breakpoint there (qemu-io's `break`)
//! suspends the request, and with it the dispatcher, until qemu-io's
//! `resume`.  The main loop runs on meanwhile.
//!
//! Who removes the monitor: not a QMP monitor.  The dispatcher is one
//! coroutine for all QMP monitors, so while it is parked in one
//! monitor's command no other QMP command runs, the manager's
//! monitor-remove neither (the test checks that the manager gets no
//! answer meanwhile).  HMP commands run in the main loop outside it:
//! HMP's `object_del` removes a monitor-qmp object, which the manager
//! here has made with object-add (every monitor is an object, one from
//! monitor-add too).  The other
//! way a monitor goes while nobody can send a command is its client
//! leaving a one-shot session (close-action=delete).  (The qtest's way
//! to block the dispatcher, a blockdev-add that opens a fifo, blocks
//! the whole main loop, HMP included.)

mod common;

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{bin_dir, wait_child, Qemu, Qmp, IO_TIMEOUT};
use serde_json::json;

/// A client of an HMP monitor: a line in, the output up to the next
/// prompt out.  Every read waits at most `IO_TIMEOUT`.
struct Hmp {
    sock: UnixStream,
}

impl Hmp {
    const PROMPT: &'static str = "(qemu) ";

    fn connect(path: &Path) -> Self {
        let deadline = Instant::now() + IO_TIMEOUT;
        let sock = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    panic!("connecting to {}: {e}", path.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        sock.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut hmp = Hmp { sock };
        hmp.until_prompt("the HMP banner");
        hmp
    }

    /// Reads up to and including the next prompt; returns what came
    /// before it.
    fn until_prompt(&mut self, what: &str) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(Self::PROMPT.as_bytes()) {
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("HMP closed while waiting for {what}"),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "waiting for {what} (at most {IO_TIMEOUT:?}): {e}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
        out.truncate(out.len() - Self::PROMPT.len());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Runs `line`; returns its output without the echoed command line.
    fn cmd(&mut self, line: &str) -> String {
        self.sock
            .write_all(format!("{line}\n").as_bytes())
            .expect("HMP write");
        let out = self.until_prompt(&format!("the end of HMP's {line:?}"));
        // The echo: the line as typed (with escape sequences), "\r\n".
        match out.split_once("\r\n") {
            Some((_, rest)) => rest.trim().to_owned(),
            None => String::new(),
        }
    }

    /// Runs `line`, which must print nothing.
    fn ok(&mut self, line: &str) {
        let out = self.cmd(line);
        assert!(out.is_empty(), "HMP {line:?}: {out:?}");
    }
}

/// A 1 MiB qcow2 image: one L1 entry, so growing it grows the L1 table.
fn small_qcow2(path: &Path) {
    let mut child = Command::new(bin_dir().join("qemu-img"))
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg("1M")
        .stdin(Stdio::null())
        .spawn()
        .expect("qemu-img");
    let status = wait_child(&mut child, Duration::from_secs(60), "qemu-img create");
    assert!(status.success(), "qemu-img create: {status}");
}

/// The virtual size of drive `drv0`'s image.
fn drive_size(qemu: &mut Qemu) -> u64 {
    let blocks = qemu.mgr.ok("query-block", json!({}));
    blocks
        .as_array()
        .expect("list")
        .iter()
        .find(|b| b["device"] == "drv0")
        .and_then(|b| b["inserted"]["image"]["virtual-size"].as_u64())
        .unwrap_or_else(|| panic!("drv0's size in {blocks}"))
}

/// Waits until the dispatcher is parked in block_resize: the manager
/// sends query-name until one gets no answer for a second (the
/// dispatcher runs one command at a time, for every QMP monitor), and
/// returns that one's id.  Only then does HMP's `wait_break` follow: it
/// polls the block layer's context, not the one the dispatcher runs
/// in, so if it started before the dispatcher took block_resize it
/// would wait for nothing until its client's timeout.
fn wait_parked(qemu: &mut Qemu, ctx: &str) -> String {
    for n in 0..30 {
        let id = format!("behind-{n}");
        qemu.mgr.send(&json!({"execute": "query-name", "id": id}));
        if !qemu.mgr.readable_within(Duration::from_secs(1)) {
            return id;
        }
        assert_eq!(
            qemu.mgr
                .recv_reply_awaiting("the manager's query-name before the park"),
            Some(json!({"return": {}, "id": id})),
            "{ctx}"
        );
    }
    panic!("{ctx}: the dispatcher answered the manager for 30 rounds: block_resize never parked");
}

/// How the monitor whose command is parked goes.
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// A monitor-qmp object (object-add), deleted with HMP's object_del.
    ObjectDel,
    /// A one-shot monitor (monitor-add, close-action=delete) whose
    /// client half-closes its connection (shutdown SHUT_WR): QEMU sees
    /// the client leave and removes monitor and chardev, while the
    /// client can still read whatever comes.  (docs/contract.md, close-action: it
    /// must hold "when the client vanishes mid-command".)
    ClientLeaves,
}

/// A monitor's client parks block_resize in the dispatcher and queues
/// `stop` behind it; the monitor is removed (see [`Removal`]); the
/// command is let go.  The resize is done (it ran to its end), its
/// reply never reaches the client, `stop` never ran, and the client
/// sees the end of its connection after its negotiation reply: on a
/// message boundary, with nothing else.
///
#[test]
fn a_running_command_finishes_and_its_reply_is_dropped() {
    let img_dir = common::temp_dir();
    let img = img_dir.join("disk.qcow2");
    small_qcow2(&img);
    let drive = format!(
        "if=none,id=drv0,format=qcow2,file.driver=blkdebug,file.image.driver=file,\
         file.image.filename={}",
        img.display()
    );
    let mut qemu = Qemu::start(&[
        "-chardev",
        "socket,id=hmp-chr,path=@DIR@/hmp.sock,server=on,wait=off",
        "-mon",
        "chardev=hmp-chr,mode=readline,id=hmp",
        "-drive",
        &drive,
    ]);
    let mut hmp = Hmp::connect(&qemu.sock("hmp"));
    let chardevs_before = qemu.chardev_labels();
    let objects_before = qemu.objects();
    // Each round grows the L1 table: 1 MiB -> 8 GiB -> 64 GiB is 1, 16,
    // 128 entries of 512 MiB each.
    let mut size: u64 = 1 << 20;
    for how in [Removal::ObjectDel, Removal::ClientLeaves] {
        let ctx = format!("{how:?}");
        let (id, chr) = (format!("{how:?}").to_lowercase(), format!("{how:?}-chr"));
        qemu.add_socket_chardev(&chr);
        match how {
            Removal::ObjectDel => qemu.mgr.ok(
                "object-add",
                json!({"qom-type": "monitor-qmp", "id": id, "chardev": chr}),
            ),
            Removal::ClientLeaves => qemu.mgr.ok(
                "monitor-add",
                json!({"id": id, "chardev": chr, "close-action": "delete"}),
            ),
        };
        let mut client = Qmp::connect(&qemu.sock(&chr));
        // With OOB on, the monitor reads on while a request runs (up to
        // a full queue), so QEMU sees a client leave mid-command; with
        // it off, it reads nothing until the command is done.
        client.handshake(&["oob"]);

        // Park the command, with another request queued behind it.
        hmp.ok("qemu-io drv0 \"break l1_grow_alloc_table park\"");
        let new_size = size * 8192;
        client.send_raw(&format!(
            "{}\n{}\n",
            json!({"execute": "block_resize", "id": "parked",
                   "arguments": {"device": "drv0", "size": new_size}}),
            json!({"execute": "stop", "id": "queued"})
        ));
        let behind = wait_parked(&mut qemu, &ctx);
        hmp.ok("qemu-io drv0 \"wait_break park\"");

        // The monitor goes while its command runs.
        match how {
            Removal::ObjectDel => {
                hmp.ok(&format!("object_del {id}"));
                // Nothing for the client while its command runs: the
                // end comes once the dispatcher is done with the monitor.
                assert!(
                    !client.readable_within(Duration::from_millis(100)),
                    "{ctx}: the client heard something before its command finished"
                );
            }
            Removal::ClientLeaves => {
                // SAFETY: plain syscall on the client's own fd.
                assert_eq!(unsafe { libc::shutdown(client.raw_fd(), libc::SHUT_WR) }, 0);
                // QEMU sees the client leave and closes the connection
                // at once, while the command is still parked: nothing
                // but the end, on a message boundary.
                client.expect_eof();
            }
        }

        // Let the command finish.
        hmp.ok("qemu-io drv0 \"resume park\"");
        assert_eq!(
            qemu.mgr
                .recv_reply_awaiting("the manager's query-name behind the parked command"),
            Some(json!({"return": {}, "id": behind})),
            "{ctx}"
        );
        // Its reply never comes, the queued stop never ran: the client
        // sees the end of the connection, on a message boundary.
        if let Removal::ObjectDel = how {
            client.expect_eof();
        }
        assert!(client.events.is_empty(), "{ctx}: {:?}", client.events);
        // The command ran to its end: the image has the new size.
        assert_eq!(drive_size(&mut qemu), new_size, "{ctx}");
        size = new_size;
        assert_eq!(
            qemu.mgr.ok("query-status", json!({}))["status"],
            "running",
            "{ctx}: the stop queued behind the parked command ran"
        );
        assert!(qemu.mgr.events.is_empty(), "{ctx}: {:?}", qemu.mgr.events);
        assert_eq!(qemu.ids(), ["compat_monitor0", "hmp"], "{ctx}");
        assert_eq!(qemu.objects(), objects_before, "{ctx}");
        match how {
            // The chardev stays, free for the manager to remove.
            Removal::ObjectDel => qemu.mgr.ok("chardev-remove", json!({"id": chr})),
            // A one-shot session's goes with it.
            Removal::ClientLeaves => {
                common::wait_until("the one-shot chardev to go", || {
                    qemu.chardev_labels() == chardevs_before
                });
                json!({})
            }
        };
        assert_eq!(qemu.chardev_labels(), chardevs_before, "{ctx}");
    }
    drop(hmp);
    assert!(qemu.quit().success());
    let _ = std::fs::remove_dir_all(&img_dir);
}
