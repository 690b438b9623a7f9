// SPDX-License-Identifier: GPL-2.0-or-later
//! [`MainLoop`]: proof of running in the main loop thread with the BQL,
//! outside coroutine context; [`IoThread`]: the monitor I/O thread, to
//! run a closure in and wait; [`MainLoop::later`]: a closure run in a
//! bottom half of the main loop.

use std::{
    ffi::{c_void, CStr},
    marker::PhantomData,
    ptr,
};

use super::sys;

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

    /// Runs `f` later, once, in a bottom half of the main loop's
    /// iohandler context, where the QMP dispatcher's own bottom halves
    /// run: with the proof, so that it may wait for the I/O thread.
    /// May be called from any thread, coroutines included.
    pub fn later(name: &'static CStr, f: impl for<'a> FnOnce(MainLoop<'a>) + Send + 'static) {
        type Job = Box<dyn for<'a> FnOnce(MainLoop<'a>) + Send>;
        unsafe extern "C" fn trampoline(opaque: *mut c_void) {
            // SAFETY: opaque is the Box<Job> leaked below; the bottom
            // half runs once.
            let job = unsafe { Box::from_raw(opaque.cast::<Job>()) };
            // SAFETY: a one-shot bottom half of the iohandler context
            // runs in the main loop thread with the BQL, outside
            // coroutine context.
            unsafe {
                MainLoop::enter(job);
            }
        }
        let job: Box<Job> = Box::new(Box::new(f));
        // SAFETY: trampoline gets the job once and frees it; the job is
        // Send, so it may be scheduled from another thread.
        unsafe {
            sys::aio_bh_schedule_oneshot_full(
                sys::iohandler_get_aio_context(),
                Some(trampoline),
                Box::into_raw(job).cast(),
                name.as_ptr(),
            );
        }
    }
}

/// The monitor I/O thread, which exists for as long as `'a`: borrowed
/// from a monitor that runs there (see `Monitor::io_thread`).
#[derive(Clone, Copy)]
pub struct IoThread<'a> {
    ctx: *mut sys::AioContext,
    _mon: PhantomData<&'a ()>,
}

impl IoThread<'_> {
    /// # Safety
    /// `mon_iothread` exists and lives for `'a` (QEMU never frees it
    /// while a monitor that runs there exists).
    pub unsafe fn new<'a>() -> IoThread<'a> {
        IoThread {
            // SAFETY: per the contract.
            ctx: unsafe { sys::iothread_get_aio_context(sys::mon_iothread) },
            _mon: PhantomData,
        }
    }

    /// Its `GMainContext`, where its monitors' chardevs run.
    pub fn g_main_context(self) -> *mut glib_sys::GMainContext {
        // SAFETY: mon_iothread lives (see new()).
        unsafe { sys::iothread_get_g_main_context(sys::mon_iothread) }
    }

    /// Runs `f` in the I/O thread, waits for it and returns its result.
    /// `f` and its result cross threads, hence `Send`.  Waiting is
    /// allowed in the main loop thread outside coroutine context only
    /// (`aio_wait_bh_oneshot`'s rule), hence `MainLoop`.
    pub fn run<R: Send, F: FnOnce() -> R + Send>(self, _: MainLoop<'_>, f: F) -> R {
        enum Slot<F, R> {
            Call(F),
            Done(R),
            Empty,
        }
        unsafe extern "C" fn trampoline<R, F: FnOnce() -> R>(opaque: *mut c_void) {
            // SAFETY: opaque is the &mut Slot below, which outlives the
            // wait, and only this bottom half touches it meanwhile.
            let slot = unsafe { &mut *opaque.cast::<Slot<F, R>>() };
            if let Slot::Call(f) = std::mem::replace(slot, Slot::Empty) {
                *slot = Slot::Done(f());
            }
            // SAFETY: an annotation; it only records the address.
            unsafe {
                sys::qmh_tsan_happens_before(opaque);
            }
        }
        let mut slot = Slot::Call(f);
        let opaque = ptr::from_mut(&mut slot).cast::<c_void>();
        // SAFETY: the bottom half runs trampoline once with a pointer to
        // `slot`, and aio_wait_bh_oneshot returns only after it ran.
        unsafe {
            sys::aio_wait_bh_oneshot(self.ctx, Some(trampoline::<R, F>), opaque);
        }
        // aio_wait_bh_oneshot orders what the bottom half did before
        // its return with a flag and fences, which ThreadSanitizer
        // cannot follow: tell it (a no-op unless QEMU is configured
        // with --enable-tsan).
        // SAFETY: an annotation; it only records the address.
        unsafe {
            sys::qmh_tsan_happens_after(opaque);
        }
        match slot {
            Slot::Done(r) => r,
            // aio_wait_bh_oneshot runs the bottom half before it returns
            Slot::Call(_) | Slot::Empty => unreachable!("the bottom half did not run"),
        }
    }
}
