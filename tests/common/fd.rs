// SPDX-License-Identifier: GPL-2.0-or-later
//! Raw fds: owning what a libc call returned, socketpairs, ptys.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An fd from a libc call that returned one, or a panic.
pub fn owned(fd: RawFd) -> OwnedFd {
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A connected pair of Unix stream sockets.
pub fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut sv = [0; 2];
    // Close on exec: the QEMUs other test threads start must not
    // inherit them.
    // SAFETY: socketpair fills the array with two fresh fds.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    (owned(sv[0]), owned(sv[1]))
}

/// Opens the pty (the slave) of a pty chardev in raw mode.
pub fn open_pty(path: &str) -> OwnedFd {
    let c = std::ffi::CString::new(path).expect("path");
    // SAFETY: plain libc calls on a fresh fd.
    unsafe {
        let fd = owned(libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY));
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t), 0);
        fd
    }
}
