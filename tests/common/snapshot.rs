// SPDX-License-Identifier: GPL-2.0-or-later
//! Health snapshots of a QEMU (fds, RSS, monitors, chardevs) and the
//! check that a scenario left it as it found it.

use serde_json::{json, Value};

use super::qemu::Qemu;

/// What must be the same after a scenario as before it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub fds: Vec<(std::os::fd::RawFd, String)>,
    pub rss_kb: u64,
    pub monitors: Value,
    pub chardevs: Vec<String>,
    /// /objects, as "name type" (monitors are objects too), sorted.
    pub objects: Vec<String>,
}

impl Qemu {
    /// VmRSS of QEMU, in kB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Is this QEMU built with a sanitizer?  RSS says nothing about
    /// leaks there: AddressSanitizer's quarantine keeps freed memory
    /// resident on purpose, and ThreadSanitizer's shadow memory and
    /// access history grow with every address and thread it sees.
    pub fn has_sanitizer(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .is_ok_and(|m| m.contains("libasan") || m.contains("libtsan"))
    }

    /// QEMU has not exited and answers on the manager monitor.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait") {
            panic!("QEMU exited: {status}");
        }
        assert_eq!(self.mgr.ok("query-name", json!({})), json!({}));
    }

    pub fn snapshot(&mut self) -> Snapshot {
        let monitors = self.mgr.ok("query-monitors", json!({}));
        let chardevs = self.chardev_labels();
        Snapshot {
            fds: self.fds(),
            rss_kb: self.rss_kb(),
            monitors,
            chardevs,
            objects: self.objects(),
        }
    }

    /// The children of /objects as "name type", sorted.
    pub fn objects(&mut self) -> Vec<String> {
        let list = self.mgr.ok("qom-list", json!({"path": "/objects"}));
        let mut v: Vec<String> = list
            .as_array()
            .expect("list")
            .iter()
            .map(|o| format!("{} {}", o["name"], o["type"]))
            .collect();
        v.sort();
        v
    }

    /// Checks the state against `before`: alive, same monitors,
    /// chardevs and objects, exactly the same fds, numbers and link
    /// targets (waited for: a client's close can still be on its way
    /// through the I/O thread), and RSS grown by at most
    /// `rss_slack_kb` (skipped under ASan).
    pub fn check_against(&mut self, before: &Snapshot, rss_slack_kb: u64, what: &str) {
        self.assert_alive();
        assert_eq!(
            self.mgr.ok("query-monitors", json!({})),
            before.monitors,
            "{what}: monitors changed"
        );
        assert_eq!(
            self.chardev_labels(),
            before.chardevs,
            "{what}: chardevs changed"
        );
        assert_eq!(self.objects(), before.objects, "{what}: /objects changed");
        self.wait_fds(&before.fds, what);
        let rss = self.rss_kb();
        eprintln!(
            "{what}: RSS {} kB before, {rss} kB after ({:+} kB)",
            before.rss_kb,
            rss as i64 - before.rss_kb as i64
        );
        if self.has_sanitizer() {
            eprintln!("{what}: sanitizer build, RSS not checked");
        } else {
            assert!(
                rss <= before.rss_kb + rss_slack_kb,
                "{what}: RSS grew from {} kB to {rss} kB, more than {rss_slack_kb} kB",
                before.rss_kb
            );
        }
    }
}
