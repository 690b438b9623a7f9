// SPDX-License-Identifier: GPL-2.0-or-later
//! `Opaque<T>`: a C struct that C code may change at any time, as seen
//! from Rust, in the way of QEMU's own `common::Opaque`.  Rust only ever
//! holds shared references to it and reaches its contents through raw
//! pointers, under the rules the C code sets (locks, threads).

use std::{cell::UnsafeCell, marker::PhantomPinned, mem::MaybeUninit};

#[repr(transparent)]
pub struct Opaque<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    // C keeps pointers to it: it must not move.
    _pin: PhantomPinned,
}

impl<T> Opaque<T> {
    /// # Safety
    /// `ptr` points to a `T` that C keeps alive for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut T) -> &'a Self {
        // SAFETY: Opaque<T> is repr(transparent) over T (UnsafeCell and
        // MaybeUninit are too), and the pointee lives for 'a.
        unsafe { &*ptr.cast::<Self>() }
    }

    pub fn as_ptr(&self) -> *mut T {
        UnsafeCell::raw_get(&self.value).cast()
    }
}
