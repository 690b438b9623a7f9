// SPDX-License-Identifier: GPL-2.0-or-later
//! Parking QEMU's dispatcher for real: a `chardev-add` of a file chardev
//! whose "out" is a FIFO blocks QEMU's main loop in open(2) until
//! someone opens the FIFO for reading.  While it is parked no in-band
//! request of any monitor runs; the monitors' I/O thread goes on
//! reading, parsing, queueing, suspending and running exec-oob.
//!
//! The test keeps the FIFO open for reading except while it parks QEMU,
//! so that a late `chardev-add` never blocks.

use std::{
    ffi::CString,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub struct Fifo {
    pub path: PathBuf,
    reader: Option<OwnedFd>,
}

/// Opens `path` for reading without blocking (a FIFO: this lets a
/// writer blocked in open(2) go on).
pub fn open_reader(path: &Path) -> OwnedFd {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: plain syscall; the fd is checked and owned at once.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(
        fd >= 0,
        "open {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Fifo {
    pub fn new(path: PathBuf) -> Self {
        let c = CString::new(path.as_os_str().as_bytes()).expect("path");
        // SAFETY: plain syscall.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
        let reader = Some(open_reader(&path));
        Fifo { path, reader }
    }

    /// Closes the reader: the next open for writing blocks.
    pub fn arm(&mut self) {
        self.reader = None;
    }

    /// Keeps `fd` (a reader opened by an unparking thread) open.
    pub fn keep(&mut self, fd: OwnedFd) {
        self.reader = Some(fd);
    }

    /// Opens a reader now unless one is open.
    pub fn release(&mut self) {
        if self.reader.is_none() {
            self.reader = Some(open_reader(&self.path));
        }
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Waits up to `limit` for QEMU's main thread to block in openat(2)
/// (what /proc/PID/task/PID/syscall says; glibc opens with openat).  False if it did not, or if
/// that file cannot be read here.
pub fn wait_parked(pid: u32, limit: Duration) -> bool {
    let path = format!("/proc/{pid}/task/{pid}/syscall");
    let deadline = Instant::now() + limit;
    loop {
        let Ok(s) = std::fs::read_to_string(&path) else {
            return false;
        };
        let nr: Option<libc::c_long> = s.split_whitespace().next().and_then(|n| n.parse().ok());
        if nr == Some(libc::SYS_openat) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
