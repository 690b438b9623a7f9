// SPDX-License-Identifier: GPL-2.0-or-later
//! [`MutexGuard`]: a `QemuMutex` held for the length of a borrow.

use super::{opaque::Opaque, sys};

/// Holds a `QemuMutex` until dropped, in the thread that took it.
#[must_use = "the mutex is held only while the guard lives"]
pub struct MutexGuard<'a> {
    mutex: &'a Opaque<sys::QemuMutex>,
}

impl<'a> MutexGuard<'a> {
    /// Waits for `mutex`; one this thread holds already deadlocks.
    pub fn lock(mutex: &'a Opaque<sys::QemuMutex>) -> Self {
        // SAFETY: an initialised QemuMutex that outlives the guard
        // (Opaque::from_raw's contract).
        unsafe {
            sys::qmh_mutex_lock(mutex.as_ptr());
        }
        MutexGuard { mutex }
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: lock() took it in this thread (Opaque is not Sync, so
        // neither the guard nor its borrow can move to another thread).
        unsafe {
            sys::qmh_mutex_unlock(self.mutex.as_ptr());
        }
    }
}
