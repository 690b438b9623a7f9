// SPDX-License-Identifier: GPL-2.0-or-later
//! Monitors taken off `mon_list`, and the steps that remove them for
//! good: monitor-remove, close-action=delete, and the release of a
//! monitor the QMP dispatcher held while it was removed.
//!
//! Threads: every function here runs in the main loop thread with the
//! BQL, outside coroutine context, except [`client_closed`] (the thread
//! that runs the monitor's chardev) and [`release_after_reply`] (the
//! dispatcher's coroutine), which only schedule work for the main loop.
//! The steps that touch the chardev's handlers run in the thread that
//! runs them (see [`RemovedMonitor::in_home_context`]).
//!
//! The five steps of a removal, in this order: (1) with monitor_lock
//! held, mark the monitor dead and take it off `mon_list`, so that no
//! event broadcast can write to it once its context changes; (2) cancel
//! a pending `out_watch` while the monitor's context is still right;
//! (3) detach the chardev's handlers, keeping the connection for a
//! reply still owed; (4) drop the requests a read already queued; (5)
//! free the monitor, or leave that to the dispatcher if it is running
//! one of the monitor's requests.

use std::{
    cell::RefCell,
    ffi::{c_void, CStr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr::{self, NonNull},
};

use crate::{
    bindings as sys, farewell,
    monitor::Monitor,
    monitors::MonitorList,
    qapi_error::{with_local_err, QmpError},
    removal::{Cause, Removal, Reply},
    threads::{run_in, MainLoop},
};

/// A QMP monitor that step 1 took off `mon_list` and marked dead.  Only
/// its owner, the holder of this value, can reach it (the dispatcher
/// too while it holds one of its requests, see [`Removal::AfterReply`]).
#[must_use = "a removed monitor must be released, or it leaks"]
pub struct RemovedMonitor {
    mon: NonNull<sys::Monitor>,
}

/// A removal waiting for the dispatcher to hand the monitor back.
struct AfterReply {
    mon: RemovedMonitor,
    chardev_too: bool,
    /// What the removal owes, taken when the monitor was removed.
    owed: Owed,
}

/// What a removed monitor owes its client, and the client it owes it
/// to: both taken at once, in the thread that runs the chardev, so that
/// the bytes can never reach a later client of the same chardev.
#[derive(Default)]
struct Owed {
    output: Vec<u8>,
    /// A duplicate of the client's socket (see [`farewell`]); None if
    /// no plain socket client was connected.
    client: Option<OwnedFd>,
}

thread_local! {
    /// The removals waiting for the dispatcher (main loop thread only).
    static AFTER_REPLY: RefCell<Vec<AfterReply>> = const { RefCell::new(Vec::new()) };
}

/// Where the chardev's handlers go in step 3.
#[derive(Clone, Copy)]
enum DetachTo {
    /// The context the monitor ran in, so that the reply can be flushed.
    OwnContext,
    /// The main loop, where a chardev without frontend lives.
    MainLoop,
}

impl std::ops::Deref for RemovedMonitor {
    type Target = Monitor;

    fn deref(&self) -> &Monitor {
        // SAFETY: a removed monitor lives until destroy() consumes it.
        unsafe { Monitor::from_raw(self.mon) }
    }
}

impl RemovedMonitor {
    /// # Safety
    /// `mon` is a QMP monitor that the caller took off `mon_list` and
    /// marked dead under `monitor_lock`; no other owner exists.
    pub unsafe fn from_raw(mon: NonNull<sys::Monitor>) -> Self {
        RemovedMonitor { mon }
    }

    /// Is the dispatcher running one of this monitor's requests?
    fn dispatcher_holds(&self) -> bool {
        // SAFETY: qmp_dispatcher_mon is used in the main loop thread only.
        unsafe { sys::qmp_dispatcher_mon == self.as_ptr() }
    }

    /// Runs `f` in the thread that runs the chardev's handlers, so that
    /// it cannot race with them: the monitor I/O thread, or this one.
    fn in_home_context<R: Send>(&self, ml: MainLoop<'_>, f: impl FnOnce(&Self) -> R + Send) -> R {
        if !self.uses_io_thread() {
            return f(self);
        }
        /// The monitor, lent to the I/O thread.
        struct Lent<'a>(&'a RemovedMonitor);
        // SAFETY: its owner waits in run_in() while the I/O thread uses
        // the monitor, so one thread at a time uses it; and nothing else
        // reaches a removed monitor (see the type's comment).
        unsafe impl Send for Lent<'_> {}
        impl Lent<'_> {
            fn get(&self) -> &RemovedMonitor {
                self.0
            }
        }
        let lent = Lent(self);
        // SAFETY: mon_iothread exists while an I/O-thread monitor does.
        let ctx = unsafe { sys::iothread_get_aio_context(sys::mon_iothread) };
        run_in(ml, ctx, move || f(lent.get()))
    }

    /// Step 2: takes the output not written yet, and cancels the
    /// out_watch that was writing it.  Home context.
    fn take_output(&self) -> Vec<u8> {
        let m = self.as_ptr();
        let _guard = self.lock();
        // SAFETY: outbuf is a GString protected by mon_lock, which we
        // hold; monitor_drop_output_locked wants the lock and the home
        // context, where we run.
        unsafe {
            let out = &*(*m).outbuf;
            let owed = std::slice::from_raw_parts(out.str.cast::<u8>(), out.len).to_vec();
            sys::monitor_drop_output_locked(m);
            owed
        }
    }

    /// Ends the client's session: the reply in flight is dropped.
    /// Home context.
    fn end_session(&self) {
        if let Some(qmp) = self.qmp() {
            // SAFETY: a QMP monitor, in its home context.
            unsafe { sys::monitor_qmp_end_session(qmp) };
        }
    }

    /// Step 3: detaches the chardev handlers.  Home context.
    fn detach_handlers(&self, to: DetachTo) {
        let ctx = match to {
            // SAFETY: as in in_home_context.
            DetachTo::OwnContext if self.uses_io_thread() => unsafe {
                sys::iothread_get_g_main_context(sys::mon_iothread)
            },
            _ => ptr::null_mut(),
        };
        // SAFETY: the frontend is initialised and we run in its thread.
        unsafe {
            sys::qemu_chr_fe_set_handlers(
                self.frontend(),
                None,
                None,
                None,
                None,
                ptr::null_mut(),
                ctx.cast(),
                true,
            )
        };
    }

    /// Step 4: drops requests a read already parsed into the queue.
    /// Home context: resuming schedules the accept-input bottom half
    /// there, where [`Self::cancel_bottom_halves`] can cancel it.
    fn drain_requests(&self) {
        if let Some(qmp) = self.qmp() {
            // SAFETY: a QMP monitor; the function takes qmp_queue_lock.
            unsafe { sys::monitor_qmp_cleanup_queue_and_resume(qmp) };
        }
    }

    /// Home context, after the output was taken and the last drain:
    /// nothing resumes or flushes the monitor any more, and pending
    /// bottom halves are cancelled in their own thread.
    fn cancel_bottom_halves(&self) {
        // SAFETY: we run in the bottom half's AioContext thread.
        unsafe { sys::monitor_cancel_bottom_halves(self.as_ptr()) };
    }

    /// The socket of the chardev's client, when it is a plain socket.
    /// Home context: there the chardev connects and disconnects.
    fn client_socket(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the frontend is attached, so its chardev is live; we
        // run in the thread that runs its sources.
        let fd = unsafe { sys::qmh_chr_socket_fd(self.chardev()) };
        // SAFETY: fd is the chardev's open socket, which only this
        // thread could close, and it is used before we return to it.
        (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// Step 2 and the client it owes that output to.  Home context.
    fn take_owed(&self) -> Owed {
        Owed {
            output: self.take_output(),
            client: self
                .client_socket()
                .and_then(|fd| fd.try_clone_to_owned().ok()),
        }
    }

    /// Disconnects the chardev's client if it is the one `owed` is
    /// for; a client that connected after the removal took the output
    /// is left alone.  Home context, with the handlers detached (step 3).
    fn disconnect(&self, owed: &Owed) {
        let ours = match (&owed.client, self.client_socket()) {
            (Some(taken), Some(now)) => same_socket(taken.as_fd(), now),
            (Some(_), None) => false,
            (None, _) => true,
        };
        if ours {
            // SAFETY: the frontend is initialised and we run in its thread.
            unsafe { sys::qemu_chr_fe_disconnect(self.frontend()) };
        }
    }

    /// Step 5: frees everything the monitor owns.
    fn destroy(self) {
        let m = self.as_ptr();
        // SAFETY: nothing reaches the monitor any more (see release());
        // a MonitorQMP is g_new0'd with `common` first: m is the block.
        unsafe {
            sys::monitor_data_destroy(m);
            glib_sys::g_free(m.cast());
        }
    }

    /// Steps 2 to 5, as `removal` says.
    pub fn finish(self, ml: MainLoop<'_>, removal: Removal) {
        match removal {
            Removal::Now { chardev_too } => self.release(ml, None, chardev_too),
            Removal::AfterReply { reply, chardev_too } => {
                let owed = self.in_home_context(ml, |m| {
                    let owed = match reply {
                        // The out_watch keeps writing until the reply is
                        // out; the output left then goes to this client.
                        Reply::Deliver => Owed {
                            output: Vec::new(),
                            ..m.take_owed()
                        },
                        Reply::Drop => {
                            let owed = m.take_owed();
                            m.end_session();
                            owed
                        }
                    };
                    m.detach_handlers(DetachTo::OwnContext);
                    m.drain_requests();
                    owed
                });
                AFTER_REPLY.with_borrow_mut(|q| {
                    q.push(AfterReply {
                        mon: self,
                        chardev_too,
                        owed,
                    })
                });
            }
        }
    }

    /// Steps 2 to 5 for a monitor that nothing else holds.  `earlier`
    /// is what [`Self::finish`] took when the monitor was removed: its
    /// client is the one owed the output.
    fn release(self, ml: MainLoop<'_>, earlier: Option<Owed>, chardev_too: bool) {
        let owed = self.in_home_context(ml, move |m| {
            let rest = m.take_owed();
            let owed = match earlier {
                Some(mut owed) => {
                    owed.output.extend(rest.output);
                    owed
                }
                None => rest,
            };
            m.detach_handlers(DetachTo::MainLoop);
            m.drain_requests();
            m.cancel_bottom_halves();
            m.disconnect(&owed);
            owed
        });
        // A plain socket's client gets what it is owed from farewell, so
        // that the chardev is free at once; on other chardevs the output
        // is dropped.
        if let Some(client) = owed.client {
            farewell::start(client, owed.output);
        }
        let chardev = chardev_too.then(|| self.chardev_label().to_owned());
        self.destroy();
        if let Some(label) = chardev {
            remove_chardev(ml, &label);
        }
    }
}

/// chardev-remove, for a one-shot session's chardev.  Failing to remove
/// it is not fatal to anyone: QEMU warns and keeps it.
fn remove_chardev(_: MainLoop<'_>, label: &CStr) {
    let res = with_local_err(|errp| {
        // SAFETY: main loop thread; label is a C string; errp a fresh slot.
        unsafe { sys::qmp_chardev_remove(label.as_ptr(), errp) }
    });
    if let Err(err) = res {
        err.warn();
    }
}

/// A monitor made with -object or object-add leaves /objects with the
/// monitor, so that the two views never disagree.  Right after step 1:
/// the object's own unparent step then finds nothing left to remove.
fn delete_object(ml: MainLoop<'_>, mon: &Monitor) {
    #[cfg(qemu_monitor_objects)]
    crate::objects::delete_object_of(ml, mon);
    #[cfg(not(qemu_monitor_objects))]
    let _ = (ml, mon);
}

/// Steps 2 to 5 for a monitor that monitor-remove or an object's
/// unparent step took off the list.
fn finish_removal(ml: MainLoop<'_>, mon: RemovedMonitor) {
    let cause = if mon.is_current() {
        Cause::RemovedItself
    } else {
        Cause::RemovedByOther
    };
    let removal = Removal::plan(cause, mon.dispatcher_holds(), mon.deletes_on_close());
    mon.finish(ml, removal);
}

/// monitor-remove: the five steps (see the module comment), in order.
pub fn remove(ml: MainLoop<'_>, id: &CStr) -> Result<(), QmpError> {
    let mon = MonitorList::lock().unlink_id(id)?; // step 1
    delete_object(ml, &mon);
    finish_removal(ml, mon); // steps 2-5
    Ok(())
}

/// The unparent step of a monitor-qmp object: removes its monitor, the
/// one with `serial`, if it is still there (object-del, or exit after
/// monitor_cleanup(), when it is not).
#[cfg_attr(not(qemu_monitor_objects), allow(dead_code))]
pub fn remove_serial(ml: MainLoop<'_>, serial: u64) {
    let list = MonitorList::lock();
    let Some(found) = list.find_serial(serial).filter(|m| m.is_qmp()) else {
        return;
    };
    let mon = list.unlink(found); // step 1
    drop(list);
    finish_removal(ml, mon); // steps 2-5
}

/// Runs `f(opaque)` in a bottom half of the main loop's iohandler
/// context, where the dispatcher's own bottom halves run: outside
/// coroutine context, so that it may wait for the I/O thread.
fn in_main_loop_bh(f: unsafe extern "C" fn(*mut c_void), opaque: *mut c_void, name: &'static CStr) {
    // SAFETY: f gets opaque once; the caller hands its ownership over.
    unsafe {
        sys::aio_bh_schedule_oneshot_full(
            sys::iohandler_get_aio_context(),
            Some(f),
            opaque,
            name.as_ptr(),
        )
    };
}

/// A monitor's serial, as a bottom half's opaque pointer: a bottom half
/// that runs late finds by serial whatever is still there to do.
fn serial_opaque(serial: u64) -> *mut c_void {
    serial as usize as *mut c_void
}

fn opaque_serial(opaque: *mut c_void) -> u64 {
    opaque as usize as u64
}

/// Called by the dispatcher, in coroutine context, once it is done with
/// a request of `mon`, which was removed meanwhile.
pub fn release_after_reply(mon: NonNull<sys::Monitor>) {
    unsafe extern "C" fn release_bh(opaque: *mut c_void) {
        let serial = opaque_serial(opaque);
        let found = AFTER_REPLY.with_borrow_mut(|q| {
            let i = q.iter().position(|r| r.mon.serial() == serial)?;
            Some(q.swap_remove(i))
        });
        if let Some(r) = found {
            // SAFETY: a bottom half of the main loop's iohandler context.
            unsafe { MainLoop::enter(|ml| r.mon.release(ml, Some(r.owed), r.chardev_too)) };
        }
    }
    // SAFETY: the dispatcher hands back a removed monitor, which lives
    // until release_bh releases it.
    let serial = unsafe { Monitor::from_raw(mon) }.serial();
    in_main_loop_bh(
        release_bh,
        serial_opaque(serial),
        c"monitor_qmp_release_removed",
    );
}

/// At exit, once the dispatcher has stopped: releases the monitors it
/// did not hand back.
pub fn release_all_after_reply(ml: MainLoop<'_>) {
    for r in AFTER_REPLY.take() {
        r.mon.release(ml, Some(r.owed), r.chardev_too);
    }
}

/// Called from a close-action=delete monitor's CHR_EVENT_CLOSED handler,
/// in the thread that runs its chardev.  Nothing may be freed inside a
/// chardev callback, so the removal runs later in the main loop, and
/// finds the monitor by serial: by then it may be gone already (removed
/// by a command, or by an earlier close), and its id may be reused.
pub fn client_closed(mon: NonNull<sys::Monitor>) {
    unsafe extern "C" fn closed_bh(opaque: *mut c_void) {
        let serial = opaque_serial(opaque);
        let list = MonitorList::lock();
        let Some(found) = list.find_serial(serial) else {
            return;
        };
        let mon = list.unlink(found);
        drop(list);
        let removal = Removal::plan(Cause::ClientLeft, mon.dispatcher_holds(), true);
        // SAFETY: a bottom half of the main loop's iohandler context.
        unsafe {
            MainLoop::enter(|ml| {
                delete_object(ml, &mon);
                mon.finish(ml, removal)
            })
        };
    }
    // SAFETY: the CHR_EVENT_CLOSED handler runs on a live monitor.
    let serial = unsafe { Monitor::from_raw(mon) }.serial();
    in_main_loop_bh(closed_bh, serial_opaque(serial), c"monitor_qmp_closed");
}

/// Are `a` and `b` the same socket (not only the same fd number)?
fn same_socket(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let id = |fd: BorrowedFd<'_>| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fd is open; fstat writes a whole stat on success.
        (unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } == 0).then(|| {
            // SAFETY: fstat succeeded.
            let st = unsafe { st.assume_init() };
            (st.st_dev, st.st_ino)
        })
    };
    matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
}
