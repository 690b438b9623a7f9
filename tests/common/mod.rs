// SPDX-License-Identifier: GPL-2.0-or-later
//! Shared pieces of the integration tests: a QEMU process started from
//! build/bin with a manager QMP monitor, and a line-based QMP client over
//! real Unix sockets (or any fd, for ptys and socketpairs).
//!
//! Every wait is bounded, so that a hang fails the test with a message
//! saying what was awaited instead of blocking the suite: QMP reads and
//! writes (`IO_TIMEOUT` per read or write, see `Qmp::set_timeout`),
//! connects, process exits (`wait_timeout`), thread joins
//! (`join_timeout`) and polling loops (`wait_until`).
//!
//! Each test binary uses a subset of what is here.
#![allow(dead_code, unused_imports)]

mod fd;
mod guest;
mod qemu;
mod qmp;
mod rng;
mod scale;
mod snapshot;
mod tls;
mod wait;
mod watchdog;

pub use fd::{open_pty, owned, socketpair};
pub use guest::{accels, guest_dir, Console, Guest, BOOT_LIMIT, GUEST_LIMIT};
pub use qemu::{
    bin_dir, expect_bug, fd_chardev, kill_if_running, on_baseline, printed_by_qemu, socket_chardev,
    temp_dir, KillOnDrop, Qemu,
};
pub use qmp::{send_fd, Incoming, Qmp, IO_TIMEOUT};
pub use rng::{seed, Rng};
pub use scale::scaled;
pub use snapshot::Snapshot;
pub use tls::{make_certs, Endpoint};
pub use wait::{join_scoped_timeout, join_timeout, wait_child, wait_timeout, wait_until};
pub use watchdog::Watchdog;
