// SPDX-License-Identifier: GPL-2.0-or-later
//! Small safe wrappers over the C pieces of QEMU the commands use: a
//! `QemuMutex` guard, chardev lookups, and running a closure in another
//! thread's AioContext.

use std::ffi::{c_char, c_void, CStr};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::bindings as sys;

/// The C string argument `p` of a QAPI command, which QAPI guarantees.
///
/// # Safety
/// `p` is a valid NUL-terminated string that outlives `'a`.
pub unsafe fn arg<'a>(p: *const c_char) -> &'a CStr {
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }
}

/// Holds a `QemuMutex` until dropped.
pub struct MutexGuard<'a> {
    mutex: *mut sys::QemuMutex,
    _lifetime: PhantomData<&'a sys::QemuMutex>,
}

impl MutexGuard<'_> {
    /// # Safety
    /// `mutex` is an initialised `QemuMutex` that outlives the guard and
    /// is not held by this thread.
    pub unsafe fn lock(mutex: *mut sys::QemuMutex) -> Self {
        // SAFETY: per the contract.
        unsafe { sys::qmh_mutex_lock(mutex) };
        MutexGuard { mutex, _lifetime: PhantomData }
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: we locked it in lock() and have not unlocked it since.
        unsafe { sys::qmh_mutex_unlock(self.mutex) };
    }
}

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

/// Runs `f` in the thread that owns `ctx`, waits for it and returns its
/// result.  `f` and its result cross threads, hence `Send`.  Must be
/// called from the main loop thread outside coroutine context
/// (aio_wait_bh_oneshot's rule).
pub fn run_in<R: Send, F: FnOnce() -> R + Send>(ctx: *mut sys::AioContext, f: F) -> R {
    enum Slot<F, R> {
        Call(F),
        Done(R),
        Empty,
    }
    unsafe extern "C" fn trampoline<R, F: FnOnce() -> R>(opaque: *mut c_void) {
        // SAFETY: opaque is the &mut Slot below, which outlives the wait,
        // and only this bottom half touches it meanwhile.
        let slot = unsafe { &mut *opaque.cast::<Slot<F, R>>() };
        if let Slot::Call(f) = std::mem::replace(slot, Slot::Empty) {
            *slot = Slot::Done(f());
        }
    }
    let mut slot = Slot::Call(f);
    let opaque = ptr::from_mut(&mut slot).cast::<c_void>();
    // SAFETY: the bottom half runs trampoline once with a pointer to
    // `slot`, and aio_wait_bh_oneshot returns only after it ran.
    unsafe { sys::aio_wait_bh_oneshot(ctx, Some(trampoline::<R, F>), opaque) };
    match slot {
        Slot::Done(r) => r,
        // aio_wait_bh_oneshot runs the bottom half before it returns
        Slot::Call(_) | Slot::Empty => unreachable!("run_in: the bottom half did not run"),
    }
}

/// `s` copied into g_malloc'd memory, for QAPI to g_free.
pub fn g_strdup(s: &CStr) -> *mut c_char {
    // SAFETY: s is a valid C string; g_strdup copies it.
    unsafe { glib_sys::g_strdup(s.as_ptr()) }
}
