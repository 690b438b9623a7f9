// SPDX-License-Identifier: GPL-2.0-or-later
//! [`run_in`]: a closure run in another thread's AioContext, waited for.

use std::ffi::c_void;
use std::ptr;

use crate::bindings as sys;

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
