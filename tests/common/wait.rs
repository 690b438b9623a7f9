// SPDX-License-Identifier: GPL-2.0-or-later
//! Bounded waits: for a process to exit, a thread to finish, a
//! condition to hold.  Each panics saying what it waited for.

use std::{
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

/// Polls until `cond` holds; the deadline only catches hangs.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for QEMU to exit; kills it and panics after `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    wait_child(child, limit, "QEMU")
}

/// Waits for `child` (`what`) to exit; kills it and panics after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `is_finished` (of a thread) holds; panics after `limit`
/// saying that `what` did not finish.  Polls with a short backoff, so
/// that the many joins of the stress tests cost little.
fn wait_finished(limit: Duration, what: &str, is_finished: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_micros(50);
    while !is_finished() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what} to finish"
        );
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// `handle.join()`, waiting at most `limit` for the thread (`what`) to
/// finish; panics if it does not.  A timed-out thread is left running:
/// it ends when the test's QEMU is killed.
pub fn join_timeout<T>(
    handle: std::thread::JoinHandle<T>,
    limit: Duration,
    what: &str,
) -> std::thread::Result<T> {
    wait_finished(limit, what, || handle.is_finished());
    handle.join()
}

/// `join_timeout` for a thread of a `std::thread::scope`.  (The scope
/// still joins a thread that timed out when it ends: the thread must
/// end by itself, as every wait in it is bounded.)
pub fn join_scoped_timeout<T>(
    handle: std::thread::ScopedJoinHandle<'_, T>,
    limit: Duration,
    what: &str,
) -> std::thread::Result<T> {
    wait_finished(limit, what, || handle.is_finished());
    handle.join()
}
