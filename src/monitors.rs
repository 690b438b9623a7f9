//! The monitors on QEMU's `mon_list`, and the steps that create, list
//! and remove them.
//!
//! Threads: everything here runs in the main loop thread with the BQL
//! (QMP command handlers run there, outside coroutine context), except
//! the closures given to [`RemovedMonitor::in_home_context`], which run
//! in the monitor I/O thread when the monitor's chardev lives there.

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::bindings as sys;
use crate::errors::MonitorError;
use crate::qemu::{run_in, with_local_err, ChardevRef, MutexGuard, QmpError};
use crate::removal::{Cause, DetachTo, Plan, AFTER_REPLY};

/// Holds `monitor_lock`, which protects `mon_list` and the `id`,
/// `serial`, `dynamic` and `dead` fields of the monitors on it.
pub struct MonitorList {
    // The lock must be released by the thread that took it.
    _not_send: PhantomData<*mut ()>,
}

impl MonitorList {
    pub fn lock() -> Self {
        // SAFETY: monitor_lock is initialised at startup, before any QMP
        // command can run, and no caller holds it already.
        unsafe { sys::qmh_monitor_lock() };
        MonitorList { _not_send: PhantomData }
    }

    /// The live monitors, in `mon_list` order (not creation order: the
    /// dispatcher moves a monitor to the end when it serves it).
    pub fn iter(&self) -> impl Iterator<Item = MonitorRef<'_>> {
        // SAFETY: we hold monitor_lock.
        let first = unsafe { sys::qmh_mon_list_first() };
        std::iter::successors(NonNull::new(first), |m| {
            // SAFETY: m is on mon_list and we hold monitor_lock.
            NonNull::new(unsafe { sys::qmh_mon_list_next(m.as_ptr()) })
        })
        .map(|ptr| MonitorRef { ptr, _list: PhantomData })
    }

    pub fn find(&self, id: &CStr) -> Option<MonitorRef<'_>> {
        self.iter().find(|m| m.id() == id)
    }

    /// Removal step 1 for monitor-remove: see [`Self::unlink`].
    pub fn unlink_id(&self, id: &CStr) -> Result<RemovedMonitor, MonitorError> {
        let name = || id.to_string_lossy().into_owned();
        let mon = self.find(id).ok_or_else(|| MonitorError::NoSuchMonitor(name()))?;
        if !mon.is_qmp() {
            return Err(MonitorError::NotQmp(name()));
        }
        Ok(self.unlink(mon))
    }

    /// Removal step 1: mark the QMP monitor dead and take it off
    /// `mon_list`.  From here on no event broadcast and no dispatcher
    /// pop reaches it, since both walk `mon_list` under this lock.
    fn unlink(&self, mon: MonitorRef<'_>) -> RemovedMonitor {
        let ptr = mon.ptr.as_ptr();
        // SAFETY: ptr is on mon_list and we hold monitor_lock, which
        // protects both the list and the dead flag.
        unsafe {
            (*ptr).dead = true;
            sys::qmh_mon_list_remove(ptr);
        }
        RemovedMonitor { mon: mon.ptr }
    }

    /// Records what monitor-add asked for on the monitor it created.
    pub fn mark_dynamic(&self, mon: NonNull<sys::Monitor>, close_action: sys::MonitorQMPCloseAction) {
        if let Some(m) = self.iter().find(|m| m.ptr == mon) {
            // SAFETY: m is on mon_list and we hold monitor_lock.
            unsafe {
                (*m.ptr.as_ptr()).dynamic = true;
                (*m.ptr.as_ptr()).close_action = close_action;
            }
        }
    }
}

impl Drop for MonitorList {
    fn drop(&mut self) {
        // SAFETY: lock() took monitor_lock in this thread.
        unsafe { sys::qmh_monitor_unlock() };
    }
}

/// A monitor on `mon_list`, valid while the list is locked.
#[derive(Clone, Copy)]
pub struct MonitorRef<'a> {
    ptr: NonNull<sys::Monitor>,
    _list: PhantomData<&'a MonitorList>,
}

impl<'a> MonitorRef<'a> {
    fn raw(&self) -> *mut sys::Monitor {
        self.ptr.as_ptr()
    }

    pub fn id(&self) -> &'a CStr {
        // SAFETY: every monitor on mon_list has a non-NULL id, immutable
        // while it is on the list, which the borrow of MonitorList keeps.
        unsafe { CStr::from_ptr((*self.raw()).id) }
    }

    pub fn is_qmp(&self) -> bool {
        // SAFETY: is_qmp is set at creation and never changes.
        unsafe { (*self.raw()).is_qmp }
    }

    pub fn is_dynamic(&self) -> bool {
        // SAFETY: written only under monitor_lock, which we hold.
        unsafe { (*self.raw()).dynamic }
    }

    pub fn serial(&self) -> u64 {
        // SAFETY: set before the monitor joined mon_list; immutable.
        unsafe { (*self.raw()).serial }
    }

    /// The close action of a QMP monitor, None for HMP.
    pub fn close_action(&self) -> Option<sys::MonitorQMPCloseAction> {
        // SAFETY: written only under monitor_lock, which we hold.
        self.is_qmp().then(|| unsafe { (*self.raw()).close_action })
    }

    pub fn mode(&self) -> sys::MonitorMode {
        if self.is_qmp() {
            sys::MonitorMode_MONITOR_MODE_CONTROL
        } else {
            sys::MonitorMode_MONITOR_MODE_READLINE
        }
    }

    /// The label of the monitor's chardev ("" for an unnamed one, such
    /// as the gdbstub's internal chardev).
    pub fn chardev_label(&self) -> &'a CStr {
        // SAFETY: a monitor on mon_list keeps its chardev attached; the
        // chardev cannot be removed while it has a frontend.
        let label = unsafe { sys::qmh_chr_label((*self.raw()).chr.chr) };
        if label.is_null() {
            c""
        } else {
            // SAFETY: a chardev's label is a C string that lives as long
            // as the chardev.
            unsafe { CStr::from_ptr(label) }
        }
    }
}

/// A QMP monitor taken off `mon_list` by monitor-remove.  Only its owner
/// can reach it: monitor-remove, or, when the monitor removed itself, the
/// QMP dispatcher, which hands it back through the release hook.
pub struct RemovedMonitor {
    mon: NonNull<sys::Monitor>,
}

impl RemovedMonitor {
    fn raw(&self) -> *mut sys::Monitor {
        self.mon.as_ptr()
    }

    /// Is the dispatcher processing one of this monitor's requests?
    /// Then it holds the monitor until the reply is written.
    fn dispatcher_owns(&self) -> bool {
        // SAFETY: qmp_dispatcher_mon is only used in the main loop thread,
        // which is this one.
        unsafe { sys::qmp_dispatcher_mon == self.raw() }
    }

    fn deletes_on_close(&self) -> bool {
        // SAFETY: set by monitor-add before any removal; then immutable.
        unsafe { (*self.raw()).close_action == sys::MonitorQMPCloseAction_MONITOR_QMP_CLOSE_ACTION_DELETE }
    }

    fn uses_io_thread(&self) -> bool {
        // SAFETY: set at creation and never changes.
        unsafe { (*self.raw()).use_io_thread }
    }

    /// Runs `f` in the thread that runs the chardev's handlers, so that
    /// it cannot race with them: the monitor I/O thread, or this one.
    fn in_home_context(&self, f: impl FnOnce(&Self)) {
        if self.uses_io_thread() {
            // SAFETY: mon_iothread exists while an I/O-thread monitor does.
            let ctx = unsafe { sys::iothread_get_aio_context(sys::mon_iothread) };
            // The main thread waits in run_in and does not touch the
            // monitor meanwhile, so lending it to the I/O thread is safe.
            run_in(ctx, || f(self));
        } else {
            f(self);
        }
    }

    /// Step 2: cancel a pending out_watch, on the chardev's context,
    /// which is still the one the watch was attached to.
    fn cancel_out_watch(&self) {
        let m = self.raw();
        // SAFETY: mon_lock lives as long as the monitor; not held here.
        let _guard = unsafe { MutexGuard::lock(&raw mut (*m).mon_lock) };
        // SAFETY: out_watch is protected by mon_lock, which we hold, and
        // the chardev stays attached until monitor_data_destroy.
        unsafe {
            let tag = (*m).out_watch;
            if tag != 0 {
                let ctx = sys::qmh_chr_gcontext((*m).chr.chr);
                let src = glib_sys::g_main_context_find_source_by_id(ctx.cast(), tag);
                if !src.is_null() {
                    glib_sys::g_source_destroy(src);
                }
                (*m).out_watch = 0;
            }
        }
    }

    /// Step 3: detach the chardev handlers.
    fn detach_handlers(&self, to: DetachTo) {
        let ctx = match to {
            // SAFETY: as in in_home_context.
            DetachTo::OwnContext if self.uses_io_thread() => unsafe {
                sys::iothread_get_g_main_context(sys::mon_iothread)
            },
            _ => ptr::null_mut(),
        };
        // SAFETY: the frontend is initialised; we run in its home thread.
        unsafe {
            sys::qemu_chr_fe_set_handlers(
                &raw mut (*self.raw()).chr,
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

    fn flush(&self) {
        // SAFETY: a live monitor; monitor_flush takes mon_lock itself.
        unsafe { sys::monitor_flush(self.raw()) };
    }

    /// Drops the client.  Input the monitor never read (at least the
    /// newline after the last command, which a suspended monitor leaves
    /// in the socket) is read and discarded first: closing a socket with
    /// unread input resets the connection, and over TCP a reset can
    /// destroy the reply the client was still owed.
    fn disconnect(&self) {
        const DRAIN_MAX: usize = 1 << 20;
        // SAFETY: the handlers are detached and back on the main loop,
        // so this thread alone uses the chardev and its channel.
        unsafe {
            let chr = &raw mut (*self.raw()).chr;
            let ioc = sys::qmh_chr_socket_channel((*chr).chr);
            let mut buf = [0u8; 4096];
            let mut drained = 0;
            while !ioc.is_null() && drained < DRAIN_MAX {
                // Non-blocking: stops at QIO_CHANNEL_ERR_BLOCK, EOF or error.
                let n = sys::qio_channel_read(ioc, buf.as_mut_ptr().cast(), buf.len(), ptr::null_mut());
                if n <= 0 {
                    break;
                }
                drained += n.unsigned_abs();
            }
            sys::qemu_chr_fe_disconnect(chr);
        }
    }

    /// Step 4: drop requests a read already parsed into the queue.
    fn drain_requests(&self) {
        // SAFETY: a QMP monitor; the function takes qmp_queue_lock.
        unsafe { sys::monitor_qmp_cleanup_queue_and_resume(sys::qmh_monitor_qmp(self.raw())) };
    }

    /// Step 5, now: free everything the monitor owns.
    fn destroy(self) {
        let m = self.raw();
        // SAFETY: nothing else can reach the monitor (off mon_list, no
        // handlers, no out_watch, empty queue); a MonitorQMP was
        // g_new0'd with `common` first, so m is the allocation.
        unsafe {
            sys::monitor_data_destroy(m);
            glib_sys::g_free(m.cast());
        }
    }

    /// Step 5, deferred: the dispatcher holds the request being answered
    /// and calls `monitor_qmp_release_removed` after the reply.  Nothing
    /// to do here: dropping a RemovedMonitor frees nothing.
    fn leave_to_dispatcher(self) {}

    /// Steps 2 to 5, as `plan` says.
    fn finish(self, plan: Plan) {
        self.in_home_context(|m| {
            if plan.flush {
                m.flush();
            }
            m.cancel_out_watch();
            m.detach_handlers(plan.detach_to);
        });
        if plan.disconnect_now {
            self.disconnect();
        }
        self.drain_requests();
        if !plan.free_now {
            return self.leave_to_dispatcher();
        }
        // The label goes with the monitor's frontend: keep a copy.
        let chardev = (plan.chardev_too && self.deletes_on_close()).then(|| self.chardev_label());
        self.destroy();
        if let Some(label) = chardev {
            remove_chardev(&label);
        }
    }

    fn chardev_label(&self) -> CString {
        // SAFETY: the frontend is still attached, so its chardev is live.
        let label = unsafe { sys::qmh_chr_label((*self.raw()).chr.chr) };
        if label.is_null() {
            CString::default()
        } else {
            // SAFETY: a chardev's label is a valid C string.
            unsafe { CStr::from_ptr(label) }.to_owned()
        }
    }
}

/// chardev-remove, for a one-shot session's chardev.  Failing to remove
/// it is not fatal to anyone: QEMU warns and keeps it.
fn remove_chardev(label: &CStr) {
    let res = with_local_err(|errp| {
        // SAFETY: main loop thread; label is a C string; errp a fresh slot.
        unsafe { sys::qmp_chardev_remove(label.as_ptr(), errp) }
    });
    if let Err(QmpError::Qemu(err)) = res {
        use foreign_types::ForeignType;
        // SAFETY: warn_report_err takes ownership of the error.
        unsafe { sys::warn_report_err(err.into_ptr()) };
    }
}

/// monitor-add: a QMP monitor `id` on chardev `chardev`.
pub fn add(
    id: &CStr,
    chardev: &CStr,
    pretty: bool,
    close_action: sys::MonitorQMPCloseAction,
) -> Result<(), QmpError> {
    let name = |s: &CStr| s.to_string_lossy().into_owned();
    // SAFETY: id_wellformed only reads the string.
    if !unsafe { sys::id_wellformed(id.as_ptr()) } {
        return Err(MonitorError::InvalidId(name(id)).into());
    }
    if MonitorList::lock().find(id).is_some() {
        return Err(MonitorError::IdInUse(name(id)).into());
    }
    let chr = ChardevRef::find(chardev).ok_or_else(|| MonitorError::ChardevNotFound(name(chardev)))?;
    if chr.has_frontend() {
        return Err(MonitorError::ChardevInUse(name(chardev)).into());
    }
    // Only this thread creates monitors at runtime, so the checks above
    // still hold.  monitor_init_qmp returns with the monitor on mon_list
    // and its handlers installed, also for I/O-thread monitors.
    let mon = with_local_err(|errp| {
        // SAFETY: chr is live, id a C string, errp a fresh slot.
        unsafe { sys::monitor_init_qmp(chr.as_ptr(), pretty, id.as_ptr(), errp) }
    })?;
    if let Some(mon) = NonNull::new(mon) {
        MonitorList::lock().mark_dynamic(mon, close_action);
    }
    Ok(())
}

/// monitor-remove: the five steps of SPEC.md, in order.
pub fn remove(id: &CStr) -> Result<(), MonitorError> {
    let mon = MonitorList::lock().unlink_id(id)?; // step 1
    let plan = Plan::new(Cause::Command { own: mon.dispatcher_owns() });
    mon.finish(plan); // steps 2-5
    Ok(())
}

/// Runs `f(opaque)` in a bottom half of the main loop's iohandler
/// context, where the dispatcher's own bottom halves run: outside
/// coroutine context, so that it may wait for the I/O thread.
fn in_main_loop_bh(f: unsafe extern "C" fn(*mut c_void), opaque: *mut c_void, name: &'static CStr) {
    // SAFETY: f gets opaque once; the caller hands its ownership over.
    unsafe {
        sys::aio_bh_schedule_oneshot_full(sys::iohandler_get_aio_context(), Some(f), opaque, name.as_ptr())
    };
}

/// Called by the dispatcher, in coroutine context, once it wrote the
/// reply of a request whose monitor was removed meanwhile.
pub fn release_after_reply(mon: NonNull<sys::Monitor>) {
    unsafe extern "C" fn release_bh(opaque: *mut c_void) {
        if let Some(mon) = NonNull::new(opaque.cast::<sys::Monitor>()) {
            RemovedMonitor { mon }.finish(AFTER_REPLY);
        }
    }
    // The monitor is dead and off mon_list: the bottom half owns it now.
    in_main_loop_bh(release_bh, mon.as_ptr().cast(), c"monitor_qmp_release_removed");
}

/// Called from a close-action=delete monitor's CHR_EVENT_CLOSED handler,
/// in the thread that runs its chardev.  Nothing may be freed inside a
/// chardev callback, so the removal runs later in the main loop, and
/// finds the monitor by serial: by then it may be gone already (removed
/// by a command, or by an earlier close), and its id may be reused.
pub fn client_closed(mon: NonNull<sys::Monitor>) {
    unsafe extern "C" fn closed_bh(opaque: *mut c_void) {
        // SAFETY: opaque is the Box made below, handed over once.
        let serial = *unsafe { Box::from_raw(opaque.cast::<u64>()) };
        let list = MonitorList::lock();
        let Some(found) = list.iter().find(|m| m.serial() == serial) else { return };
        let mon = list.unlink(found);
        drop(list);
        let plan = Plan::new(Cause::ClientClosed { in_flight: mon.dispatcher_owns() });
        mon.finish(plan);
    }
    // SAFETY: serial is immutable once the monitor is on mon_list.
    let serial = unsafe { (*mon.as_ptr()).serial };
    let opaque = Box::into_raw(Box::new(serial)).cast();
    in_main_loop_bh(closed_bh, opaque, c"monitor_qmp_closed");
}
