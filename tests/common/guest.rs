// SPDX-License-Identifier: GPL-2.0-or-later
//! The test guest (tests/guest/: Debian's kernel and a busybox
//! initramfs) booted on the product build, and its serial console,
//! which answers the commands of tests/guest/init.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::json;

use super::qemu::Qemu;

/// How long a boot may take: a distribution kernel under TCG on a
/// loaded 2-core machine takes seconds; only a hang gets near this.
pub const BOOT_LIMIT: Duration = Duration::from_secs(240);
/// How long the guest may take to answer a console command or to
/// react to a device_del (ACPI hot-unplug) under TCG.
pub const GUEST_LIMIT: Duration = Duration::from_secs(60);

/// The guest's kernel and initramfs (the Makefile's `guest` target,
/// passed as QMH_GUEST_DIR).
pub fn guest_dir() -> PathBuf {
    let dir = PathBuf::from(std::env::var_os("QMH_GUEST_DIR").expect(
        "QMH_GUEST_DIR is not set: the guest tests run on the product build, from `make \
         check-guest` (or set it to build/guest after `make guest`)",
    ));
    assert!(
        dir.join("vmlinuz").exists(),
        "no guest in {}",
        dir.display()
    );
    dir
}

/// The accelerators to boot with: QMH_ACCELS (comma-separated) if set,
/// else KVM where /dev/kvm opens, and TCG always.
pub fn accels() -> Vec<String> {
    if let Ok(list) = std::env::var("QMH_ACCELS") {
        return list.split(',').map(str::to_owned).collect();
    }
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let mut v = Vec::new();
    if kvm {
        v.push("kvm".to_owned());
    }
    v.push("tcg".to_owned());
    v
}

/// A running guest: its QEMU (manager monitor included) and console.
pub struct Guest {
    pub qemu: Qemu,
    pub console: Console,
    pub accel: String,
    /// The kernel's boot id, printed by init when it is ready.
    pub boot_id: String,
}

impl Guest {
    /// Boots the guest under `accel` with the serial console on a
    /// socket; `extra` is added to QEMU's arguments (`@DIR@` is the
    /// test's directory).  Returns once the guest's init is ready.
    pub fn boot(accel: &str, extra: &[&str]) -> Self {
        let mut guest = Self::start(
            accel,
            "socket,id=ser0,path=@DIR@/ser0.sock,server=on,wait=off",
            extra,
        );
        guest.wait_ready();
        guest
    }

    /// Starts QEMU with the serial port on chardev `serial` (`-serial
    /// chardev:ser0` unless `serial` starts with "mon:"), connects the
    /// console and lets the guest run; does not wait for the boot.
    pub fn start(accel: &str, serial: &str, extra: &[&str]) -> Self {
        let dir = guest_dir();
        let kernel = dir.join("vmlinuz").display().to_string();
        let initrd = dir.join("initrd.img").display().to_string();
        let mut args: Vec<&str> = vec![
            "-M",
            "pc",
            "-accel",
            accel,
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-kernel",
            &kernel,
            "-initrd",
            &initrd,
            "-append",
            "console=ttyS0 quiet panic=-1",
            "-S",
        ];
        let (chardev, serial_arg);
        if let Some(mux) = serial.strip_prefix("mon:") {
            serial_arg = format!("mon:{mux}");
            args.extend(["-serial", &serial_arg]);
        } else {
            chardev = serial.to_owned();
            args.extend(["-chardev", &chardev, "-serial", "chardev:ser0"]);
        }
        args.extend_from_slice(extra);
        let mut qemu = Qemu::start_machine(&[], &args);
        let console = Console::connect(qemu.sock("ser0"));
        qemu.mgr.ok("cont", json!({}));
        Guest {
            qemu,
            console,
            accel: accel.to_owned(),
            boot_id: String::new(),
        }
    }

    /// Waits for init's "ready" line, and records the boot id.
    pub fn wait_ready(&mut self) {
        let line = self.console.line_with("qmh: ready ", BOOT_LIMIT);
        self.boot_id = line["qmh: ready ".len()..].to_owned();
    }

    /// The console round trip: the guest runs and reads its console.
    pub fn echo(&mut self, word: &str) {
        self.console.send(&format!("echo {word}"));
        self.console
            .line_with(&format!("qmh: echo {word}"), GUEST_LIMIT);
    }

    /// The vendor:device ids of the PCI devices the guest sees.
    pub fn pci(&mut self) -> Vec<String> {
        self.console.send("pci");
        let line = self.console.line_with("qmh: pci", GUEST_LIMIT);
        line.split_whitespace().skip(2).map(str::to_owned).collect()
    }

    /// Polls the guest's PCI list until `cond` holds.
    pub fn wait_pci(&mut self, what: &str, cond: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + GUEST_LIMIT;
        loop {
            let pci = self.pci();
            if cond(&pci) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "guest: timed out waiting for {what}: {pci:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The guest noticed nothing: same boot, running, console answers.
    pub fn assert_undisturbed(&mut self, word: &str) {
        self.echo(word);
        assert!(
            !self
                .console
                .log
                .iter()
                .any(|l| l.starts_with("qmh: ready ")),
            "the guest rebooted: {:?}",
            self.console.log
        );
        let status = self.qemu.mgr.ok("query-status", json!({}));
        assert_eq!(status["status"], "running", "{status}");
    }
}

/// The guest's serial console: lines out, commands in.
pub struct Console {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Lines read and not asked for (kernel messages, late answers).
    pub log: Vec<String>,
}

impl Console {
    pub fn connect(path: PathBuf) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "console {}: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let writer = stream.try_clone().expect("dup");
        writer
            .set_write_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Console {
            reader: BufReader::new(stream),
            writer,
            log: Vec::new(),
        }
    }

    /// The underlying socket, for bytes that are not a command line
    /// (the mux's escape sequences).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("console write");
    }

    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// The next line that starts with `prefix`; other lines go to `log`.
    pub fn line_with(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        // a read that times out keeps what it got of the line in `buf`
        let mut buf = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "console: timed out after {limit:?} waiting for {prefix:?}; got {:?}",
                self.log
            );
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("timeout");
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => panic!("console closed waiting for {prefix:?}; got {:?}", self.log),
                Ok(_) if buf.last() != Some(&b'\n') => {
                    panic!("console closed waiting for {prefix:?}; got {:?}", self.log)
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("console read: {e}"),
            }
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            buf.clear();
            // the mux and the HMP monitor print without a line start
            if let Some(at) = line.find(prefix) {
                return line[at..].to_owned();
            }
            self.log.push(line);
        }
    }
}
