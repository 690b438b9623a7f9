// SPDX-License-Identifier: GPL-2.0-or-later
//! A watchdog that kills a hung QEMU.

use std::time::Duration;

/// Kills QEMU if a scenario runs longer than `limit`, so that a hang
/// fails the test (every blocked read then sees EOF) instead of
/// blocking the suite.  Disarmed when dropped.
pub struct Watchdog {
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn arm(what: &str, pid: u32, limit: Duration) -> Self {
        let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let d = done.clone();
        let what = what.to_owned();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*d;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = cv
                .wait_timeout_while(guard, limit, |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
            eprintln!("WATCHDOG: {what} still running after {limit:?}: QEMU {pid} hangs?");
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = task.path();
                let read = |f: &str| {
                    std::fs::read_to_string(p.join(f))
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                };
                eprintln!(
                    "WATCHDOG:   thread {:?} {} wchan={}",
                    p.file_name().unwrap_or_default(),
                    read("comm"),
                    read("wchan")
                );
            }
            // SAFETY: plain syscall; pid is our child (not yet reaped:
            // the Qemu that owns it is still in use).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let (guard, _) = cv
                .wait_timeout_while(guard, Duration::from_secs(60), |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            if !*guard {
                eprintln!("WATCHDOG: {what} still stuck 60 s after killing QEMU; aborting");
                std::process::abort();
            }
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
