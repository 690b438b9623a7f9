// SPDX-License-Identifier: GPL-2.0-or-later
//! [`MainLoop`]: proof of running in the main loop thread with the BQL,
//! outside coroutine context; [`run_in`]: a closure run in another
//! thread's AioContext, waited for.

use std::{ffi::c_void, marker::PhantomData, ptr};

use crate::bindings as sys;

/// Proof that the code holding it runs in the main loop thread with the
/// BQL, outside coroutine context, for `'a`: there chardevs and
/// monitors are created and deleted, and the thread may wait for the
/// monitor I/O thread.  Not `Send`: the proof is about this thread.
#[derive(Clone, Copy)]
pub struct MainLoop<'a>(PhantomData<&'a *mut ()>);

impl MainLoop<'_> {
    /// Runs `f` with the proof; what `f` borrows under it cannot escape.
    ///
    /// # Safety
    /// The caller runs in the main loop thread with the BQL, outside
    /// coroutine context, and does not return to the main loop before
    /// `f` returns.
    pub unsafe fn enter<R>(f: impl for<'a> FnOnce(MainLoop<'a>) -> R) -> R {
        // SAFETY: both only read the calling thread's state.
        debug_assert!(unsafe { sys::bql_locked() && !sys::qemu_in_coroutine() });
        f(MainLoop(PhantomData))
    }
}

/// Runs `f` in the thread that owns `ctx`, waits for it and returns its
/// result.  `f` and its result cross threads, hence `Send`.  Waiting is
/// allowed in the main loop thread outside coroutine context only
/// (aio_wait_bh_oneshot's rule), hence `MainLoop`.
pub fn run_in<R: Send, F: FnOnce() -> R + Send>(
    _: MainLoop<'_>,
    ctx: *mut sys::AioContext,
    f: F,
) -> R {
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
