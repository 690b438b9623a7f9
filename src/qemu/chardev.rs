// SPDX-License-Identifier: GPL-2.0-or-later
//! [`Chardev`]: a chardev, borrowed by Rust.

use std::{ffi::CStr, os::fd::BorrowedFd};

use super::{main_loop::MainLoop, opaque::Opaque, sys};

/// A live chardev.
///
/// # Invariants
/// The chardev is not finalized while the reference lives.
#[repr(transparent)]
pub struct Chardev(Opaque<sys::Chardev>);

impl Chardev {
    /// # Safety
    /// `ptr` is a chardev that lives for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut sys::Chardev) -> &'a Self {
        // SAFETY: Chardev is repr(transparent) over Opaque<sys::Chardev>,
        // itself transparent over the C struct; live for 'a per the
        // contract.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The chardev labelled `label`.  Chardevs are created and deleted
    /// in the main loop thread only, so one found there lives as long
    /// as that thread does not return to the main loop: `'a`.
    pub fn find<'a>(_: MainLoop<'a>, label: &CStr) -> Option<&'a Self> {
        // SAFETY: qemu_chr_find only reads the label; main loop thread.
        let chr = unsafe { sys::qemu_chr_find(label.as_ptr()) };
        // SAFETY: a live chardev, for 'a (see above).
        (!chr.is_null()).then(|| unsafe { Self::from_raw(chr) })
    }

    pub fn as_ptr(&self) -> *mut sys::Chardev {
        self.0.as_ptr()
    }

    /// Its label.  QEMU labels every chardev, its internal ones (the
    /// gdbstub's) with a generated "#chrN"; an unlabelled one would be
    /// shown as "".
    pub fn label(&self) -> &CStr {
        // SAFETY: a live chardev.
        let label = unsafe { sys::qmh_chr_label(self.as_ptr()) };
        if label.is_null() {
            c""
        } else {
            // SAFETY: a chardev's label is a C string that lives as long
            // as the chardev.
            unsafe { CStr::from_ptr(label) }
        }
    }

    pub fn has_frontend(&self) -> bool {
        // SAFETY: a live chardev.
        unsafe { sys::qmh_chr_has_frontend(self.as_ptr()) }
    }

    /// A multiplexer (`mux=on`): it takes several frontends, up to its
    /// limit, and QEMU's `qemu_chr_fe_init()` says when it is full.
    pub fn is_mux(&self) -> bool {
        // SAFETY: a live chardev; only its class is read.
        unsafe { sys::qmh_chr_is_mux(self.as_ptr()) }
    }

    /// A socket chardev whose client left and that can get no other one
    /// (not listening, not reconnecting), such as one made from a
    /// socketpair fd whose peer was closed.
    pub fn is_defunct(&self) -> bool {
        // SAFETY: a live chardev.
        unsafe { sys::qmh_chr_socket_defunct(self.as_ptr()) }
    }

    /// The socket of its client, when it is a socket chardev whose
    /// client is connected and written to as it is (no TLS, no
    /// websocket framing).
    ///
    /// # Safety
    /// The caller runs in the thread that runs the chardev's sources,
    /// where the chardev connects and disconnects, and drops the result
    /// before it returns to that thread's loop.
    pub unsafe fn client_socket(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: a live chardev, used in its own thread.
        let fd = unsafe { sys::qmh_chr_socket_fd(self.as_ptr()) };
        // SAFETY: fd is the chardev's open socket, which only this thread
        // could close, and not before the result is dropped.
        (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
    }
}
