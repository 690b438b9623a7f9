// SPDX-License-Identifier: GPL-2.0-or-later
//! [`ChardevRef`]: a chardev looked up by label, and what monitor-add
//! asks of it.

use std::{ffi::CStr, marker::PhantomData, ptr::NonNull};

use crate::{bindings as sys, threads::MainLoop};

/// A chardev, found by its label.  Chardevs are created and deleted in
/// the main loop thread only, so one found there lives as long as that
/// thread does not return to the main loop: `'a`, the [`MainLoop`]
/// proof's lifetime.
#[derive(Clone, Copy)]
pub struct ChardevRef<'a>(NonNull<sys::Chardev>, PhantomData<&'a sys::Chardev>);

impl<'a> ChardevRef<'a> {
    pub fn find(_: MainLoop<'a>, label: &CStr) -> Option<Self> {
        // SAFETY: qemu_chr_find only reads the label; main loop thread.
        NonNull::new(unsafe { sys::qemu_chr_find(label.as_ptr()) })
            .map(|chr| ChardevRef(chr, PhantomData))
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
