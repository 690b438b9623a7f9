// SPDX-License-Identifier: GPL-2.0-or-later
//! [`ChardevRef`]: a chardev looked up by label, and what monitor-add
//! asks of it.

use std::ffi::CStr;
use std::ptr::NonNull;

use crate::bindings as sys;

/// A chardev, found by its label.  Chardevs are created and deleted in
/// the main loop thread only, where the commands run.
#[derive(Clone, Copy)]
pub struct ChardevRef(NonNull<sys::Chardev>);

impl ChardevRef {
    pub fn find(label: &CStr) -> Option<Self> {
        // SAFETY: qemu_chr_find only reads the label; main loop thread.
        NonNull::new(unsafe { sys::qemu_chr_find(label.as_ptr()) }).map(ChardevRef)
    }

    pub fn as_ptr(self) -> *mut sys::Chardev {
        self.0.as_ptr()
    }

    pub fn has_frontend(self) -> bool {
        // SAFETY: a live chardev (see the type's comment).
        unsafe { sys::qmh_chr_has_frontend(self.as_ptr()) }
    }

    /// A socket chardev whose client left and that can get no other one
    /// (not listening, not reconnecting), such as one made from a
    /// socketpair fd whose peer was closed.
    pub fn is_defunct(self) -> bool {
        // SAFETY: a live chardev (see the type's comment).
        unsafe { sys::qmh_chr_socket_defunct(self.as_ptr()) }
    }
}
