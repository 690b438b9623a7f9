// SPDX-License-Identifier: GPL-2.0-or-later
//! Monitors taken off `mon_list`, and the steps that remove them for
//! good: monitor-remove, close-action=delete, an object's unparent step,
//! and the release of a monitor the QMP dispatcher held while it was
//! removed.
//!
//! Threads: every function here runs in the main loop thread with the
//! BQL, outside coroutine context (a [`MainLoop`] argument), except
//! [`client_closed`] and [`release_after_reply`], which may run in any
//! thread and only schedule work for the main loop.  The steps that
//! touch the chardev run in the thread that runs its sources, through
//! [`Home`], which only [`RemovedMonitor::at_home`] hands out.
//!
//! The five steps of a removal, in this order: (1) with `monitor_lock`
//! held, mark the monitor dead and take it off `mon_list`, so that no
//! event broadcast can write to it once its context changes; (2) take
//! the output owed and cancel a pending `out_watch` while the monitor's
//! context is still right; (3) detach the chardev's handlers, keeping
//! the connection for a reply still owed; (4) drop the requests a read
//! already queued; (5) free the monitor, or leave that to the
//! dispatcher if it is running one of the monitor's requests.

use std::{
    cell::RefCell,
    ffi::CStr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr::{self, NonNull},
};

use super::{
    farewell,
    plan::{Cause, Removal, Reply},
};
use crate::{
    errors::MonitorError,
    qemu::{
        error::{with_local_err, QmpError},
        sys, MainLoop, Monitor, MonitorList,
    },
};

/// A QMP monitor that step 1 took off `mon_list` and marked dead.
///
/// # Invariants
/// Only its owner, the holder of this value, reaches the monitor (the
/// dispatcher too while it holds one of its requests, see
/// [`Removal::AfterReply`]); it lives until [`Self::destroy`].
#[must_use = "a removed monitor must be released, or it leaks"]
pub struct RemovedMonitor {
    mon: NonNull<sys::Monitor>,
    /// It is the monitor of the command that removed it.
    removed_itself: bool,
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
    /// The removals waiting for the dispatcher; see [`after_reply`].
    static AFTER_REPLY: RefCell<Vec<AfterReply>> = const { RefCell::new(Vec::new()) };
}

/// The removals waiting for the dispatcher, which live in the main loop
/// thread: the proof says that this is the thread.
fn after_reply<R>(_: MainLoop<'_>, f: impl FnOnce(&mut Vec<AfterReply>) -> R) -> R {
    AFTER_REPLY.with_borrow_mut(f)
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

/// Removal step 1: `mon` is marked dead and taken off the list; the
/// caller owns it from here on.
fn unlink(list: &MonitorList, mon: &Monitor) -> RemovedMonitor {
    let removed_itself = list.is_current(mon);
    RemovedMonitor {
        mon: list.unlink(mon),
        removed_itself,
    }
}

/// Step 1 for monitor-remove: the QMP monitor `id`.
fn unlink_id(list: &MonitorList, id: &CStr) -> Result<RemovedMonitor, QmpError> {
    let name = || id.to_string_lossy().into_owned();
    let mon = list
        .find(id)
        .ok_or_else(|| MonitorError::NoSuchMonitor(name()))?;
    if !mon.is_qmp() {
        return Err(MonitorError::NotQmp(name()).into());
    }
    Ok(unlink(list, mon))
}

/// The steps that must run in the thread that runs the chardev's
/// sources: the monitor I/O thread, or the main loop thread.
mod home {
    use super::{MainLoop, RemovedMonitor};

    /// Proof that the code holding it runs in the thread that runs the
    /// removed monitor's chardev, where it cannot race with the
    /// chardev's handlers and sources.
    pub struct Home<'a>(&'a RemovedMonitor);

    impl RemovedMonitor {
        /// Runs `f` in the thread that runs the chardev's sources, and
        /// waits for it.
        pub(super) fn at_home<R: Send>(
            &self,
            ml: MainLoop<'_>,
            f: impl FnOnce(&Home<'_>) -> R + Send,
        ) -> R {
            let Some(io_thread) = self.io_thread() else {
                return f(&Home(self));
            };
            /// The monitor, lent to the I/O thread.
            struct Lent<'a>(&'a RemovedMonitor);
            // SAFETY: its owner waits in IoThread::run() while the I/O
            // thread uses the monitor, so one thread at a time uses it;
            // and nothing else reaches a removed monitor (see the type).
            unsafe impl Send for Lent<'_> {}
            impl Lent<'_> {
                fn get(&self) -> &RemovedMonitor {
                    self.0
                }
            }
            let lent = Lent(self);
            io_thread.run(ml, move || f(&Home(lent.get())))
        }
    }

    impl std::ops::Deref for Home<'_> {
        type Target = RemovedMonitor;

        fn deref(&self) -> &RemovedMonitor {
            self.0
        }
    }
}
use home::Home;

impl Home<'_> {
    /// Step 2: takes the output not written yet, and cancels the
    /// `out_watch` that was writing it.
    fn take_output(&self) -> Vec<u8> {
        let m = self.as_ptr();
        let _guard = self.lock();
        // SAFETY: outbuf is a GString protected by mon_lock, which we
        // hold; monitor_drop_output_locked wants the lock and the home
        // thread, where we run.
        unsafe {
            let out = &*(*m).outbuf;
            let owed = std::slice::from_raw_parts(out.str.cast::<u8>(), out.len).to_vec();
            sys::monitor_drop_output_locked(m);
            owed
        }
    }

    /// Ends the client's session: the reply in flight is dropped.
    fn end_session(&self) {
        if let Some(qmp) = self.qmp() {
            // SAFETY: a QMP monitor, in its home thread.
            unsafe {
                sys::monitor_qmp_end_session(qmp);
            }
        }
    }

    /// Step 3: detaches the chardev handlers.
    fn detach_handlers(&self, to: DetachTo) {
        let ctx = match (to, self.io_thread()) {
            (DetachTo::OwnContext, Some(io_thread)) => io_thread.g_main_context(),
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
            );
        }
    }

    /// Step 4: drops requests a read already parsed into the queue.
    /// Resuming schedules the accept-input bottom half in this thread,
    /// where [`Self::cancel_bottom_halves`] can cancel it.
    fn drain_requests(&self) {
        if let Some(qmp) = self.qmp() {
            // SAFETY: a QMP monitor; the function takes qmp_queue_lock.
            unsafe {
                sys::monitor_qmp_cleanup_queue_and_resume(qmp);
            }
        }
    }

    /// After the output was taken and the last drain: nothing resumes
    /// or flushes the monitor any more, and pending bottom halves are
    /// cancelled in their own thread.
    fn cancel_bottom_halves(&self) {
        // SAFETY: we run in the bottom halves' AioContext thread.
        unsafe {
            sys::monitor_cancel_bottom_halves(self.as_ptr());
        }
    }

    /// The socket of the chardev's client, when it is a plain socket.
    fn client_socket(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: we run in the thread that runs the chardev's sources,
        // and the result lives no longer than this borrow of it.
        unsafe { self.chardev().client_socket() }
    }

    /// A duplicate of the socket of the chardev's client, the one the
    /// removal owes the output.
    fn take_client(&self) -> Option<OwnedFd> {
        self.client_socket()
            .and_then(|fd| fd.try_clone_to_owned().ok())
    }

    /// Step 2 and the client it owes that output to.
    fn take_owed(&self) -> Owed {
        Owed {
            output: self.take_output(),
            client: self.take_client(),
        }
    }

    /// Disconnects the chardev's client if it is the one `owed` is
    /// for; a client that connected after the removal took the output
    /// is left alone.  With the handlers detached (step 3).
    fn disconnect(&self, owed: &Owed) {
        let ours = match (&owed.client, self.client_socket()) {
            (Some(taken), Some(now)) => same_socket(taken.as_fd(), now),
            (Some(_), None) => false,
            (None, _) => true,
        };
        if ours {
            // SAFETY: the frontend is initialised and we run in its thread.
            unsafe {
                sys::qemu_chr_fe_disconnect(self.frontend());
            }
        }
    }
}

impl RemovedMonitor {
    /// Is the dispatcher running one of this monitor's requests?
    fn dispatcher_holds(&self, _: MainLoop<'_>) -> bool {
        // SAFETY: qmp_dispatcher_mon is used in the main loop thread only.
        unsafe { sys::qmp_dispatcher_mon == self.as_ptr() }
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
    fn finish(self, ml: MainLoop<'_>, removal: Removal) {
        match removal {
            Removal::Now { chardev_too } => self.release(ml, None, chardev_too),
            Removal::AfterReply { reply, chardev_too } => {
                let owed = self.at_home(ml, |m| {
                    let owed = match reply {
                        // The out_watch keeps writing until the reply is
                        // out; the output left then goes to this client.
                        Reply::Deliver => Owed {
                            output: Vec::new(),
                            client: m.take_client(),
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
                after_reply(ml, |q| {
                    q.push(AfterReply {
                        mon: self,
                        chardev_too,
                        owed,
                    });
                });
            }
        }
    }

    /// Steps 2 to 5 for a monitor that nothing else holds.  `earlier`
    /// is what [`Self::finish`] took when the monitor was removed: its
    /// client is the one owed the output.
    fn release(self, ml: MainLoop<'_>, earlier: Option<Owed>, chardev_too: bool) {
        let owed = self.at_home(ml, move |m| {
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
        let chardev = chardev_too.then(|| self.chardev().label().to_owned());
        self.destroy();
        if let Some(label) = chardev {
            remove_chardev(ml, &label);
        }
    }

    /// Steps 2 to 5 for a monitor that monitor-remove or an object's
    /// unparent step took off the list.
    fn finish_removal(self, ml: MainLoop<'_>) {
        let cause = if self.removed_itself {
            Cause::RemovedItself
        } else {
            Cause::RemovedByOther
        };
        let removal = Removal::plan(cause, self.dispatcher_holds(ml), self.deletes_on_close());
        self.finish(ml, removal);
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
/// monitor, as object-del would, so that the two views never disagree
/// (a -object's options go too).  Right after step 1: the object's own
/// unparent step then finds nothing left to remove.  Another kind of
/// object with the same id (ids of monitor-add monitors are not QOM
/// ids) stays.
fn delete_object_of(ml: MainLoop<'_>, mon: &Monitor) {
    #[cfg(qemu_monitor_objects)]
    {
        use crate::qemu::object::{self, MonitorObject};
        let ours =
            MonitorObject::find(ml, mon.id()).is_some_and(|obj| obj.serial() == Some(mon.serial()));
        if let Err(err) = ours.then(|| object::delete(ml, mon.id())).transpose() {
            err.warn();
        }
    }
    #[cfg(not(qemu_monitor_objects))]
    let _ = (ml, mon);
}

/// monitor-remove: the five steps (see the module comment), in order.
pub fn remove(ml: MainLoop<'_>, id: &CStr) -> Result<(), QmpError> {
    let mon = unlink_id(&MonitorList::lock(), id)?; // step 1
    delete_object_of(ml, &mon);
    mon.finish_removal(ml); // steps 2-5
    Ok(())
}

/// The unparent step of a monitor-qmp object: removes its monitor, the
/// one with `serial`, if it is still there (object-del, or exit after
/// `monitor_cleanup()`, when it is not).
#[cfg_attr(not(qemu_monitor_objects), allow(dead_code))]
pub fn remove_serial(ml: MainLoop<'_>, serial: u64) {
    let list = MonitorList::lock();
    let Some(found) = list.find_serial(serial).filter(|m| m.is_qmp()) else {
        return;
    };
    let mon = unlink(&list, found); // step 1
    drop(list);
    mon.finish_removal(ml); // steps 2-5
}

/// The dispatcher is done with a request of the monitor with `serial`,
/// which was removed meanwhile: release it in the main loop.  The
/// dispatcher calls this in its coroutine.
pub fn release_after_reply(serial: u64) {
    MainLoop::later(c"monitor_qmp_release_removed", move |ml| {
        let found = after_reply(ml, |q| {
            let i = q.iter().position(|r| r.mon.serial() == serial)?;
            Some(q.swap_remove(i))
        });
        if let Some(r) = found {
            r.mon.release(ml, Some(r.owed), r.chardev_too);
        }
    });
}

/// At exit, once the dispatcher has stopped: releases the monitors it
/// did not hand back.
pub fn release_all_after_reply(ml: MainLoop<'_>) {
    for r in after_reply(ml, std::mem::take) {
        r.mon.release(ml, Some(r.owed), r.chardev_too);
    }
}

/// The client of the close-action=delete monitor with `serial` has
/// disconnected.  Called from its `CHR_EVENT_CLOSED` handler, in the
/// thread that runs its chardev.  Nothing may be freed inside a chardev
/// callback, so the removal runs later in the main loop, and finds the
/// monitor by serial: by then it may be gone already (removed by a
/// command, or by an earlier close), and its id may be reused.
pub fn client_closed(serial: u64) {
    MainLoop::later(c"monitor_qmp_closed", move |ml| {
        let list = MonitorList::lock();
        let Some(found) = list.find_serial(serial) else {
            return;
        };
        let mon = unlink(&list, found);
        drop(list);
        let removal = Removal::plan(Cause::ClientLeft, mon.dispatcher_holds(ml), true);
        delete_object_of(ml, &mon);
        mon.finish(ml, removal);
    });
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
