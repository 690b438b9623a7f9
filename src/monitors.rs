// SPDX-License-Identifier: GPL-2.0-or-later
//! The monitors on QEMU's `mon_list`, and monitor-add.
//!
//! Threads: [`MonitorList`] may be used in any thread (it is a lock
//! guard, so it stays in the thread that took it); [`add`] runs in the
//! main loop thread with the BQL, outside coroutine context.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::bindings as sys;
use crate::errors::MonitorError;
use crate::qapi_error::{with_local_err, QmpError};
use crate::qemu::ChardevRef;
use crate::removed::RemovedMonitor;

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
    pub fn unlink_id(&self, id: &CStr) -> Result<RemovedMonitor, QmpError> {
        let name = || id.to_string_lossy().into_owned();
        let mon = self.find(id).ok_or_else(|| MonitorError::NoSuchMonitor(name()))?;
        if !mon.is_qmp() {
            return Err(MonitorError::NotQmp(name()).into());
        }
        Ok(self.unlink(mon))
    }

    /// Removal step 1: mark the QMP monitor dead and take it off
    /// `mon_list`.  From here on no event broadcast and no dispatcher
    /// pop reaches it, since both walk `mon_list` under this lock.
    pub fn unlink(&self, mon: MonitorRef<'_>) -> RemovedMonitor {
        let ptr = mon.ptr.as_ptr();
        // SAFETY: ptr is on mon_list and we hold monitor_lock, which
        // protects both the list and the dead flag.
        unsafe {
            (*ptr).dead = true;
            sys::qmh_mon_list_remove(ptr);
        }
        // SAFETY: a QMP monitor (callers check, or found it by the serial
        // of one), now off mon_list and dead; only this makes its owner.
        unsafe { RemovedMonitor::from_raw(mon.ptr) }
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
        // SAFETY: set before the monitor was published; immutable.
        unsafe { (*self.raw()).dynamic }
    }

    pub fn serial(&self) -> u64 {
        // SAFETY: set before the monitor joined mon_list; immutable.
        unsafe { (*self.raw()).serial }
    }

    /// The close action of a QMP monitor, None for HMP.
    pub fn close_action(&self) -> Option<sys::MonitorQMPCloseAction> {
        // SAFETY: set before the monitor was published; immutable.
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
    if close_action == sys::MonitorQMPCloseAction_MONITOR_QMP_CLOSE_ACTION_DELETE && chr.is_defunct() {
        return Err(MonitorError::ChardevDefunct(name(chardev)).into());
    }
    // Only this thread creates monitors at runtime, so the checks above
    // still hold.  monitor_init_qmp_full returns with the monitor on
    // mon_list and its handlers installed, also for I/O-thread monitors.
    with_local_err(|errp| {
        // SAFETY: chr is live, id a C string, errp a fresh slot.
        unsafe { sys::monitor_init_qmp_full(chr.as_ptr(), pretty, id.as_ptr(), true, close_action, errp) }
    })?;
    Ok(())
}
