// SPDX-License-Identifier: GPL-2.0-or-later
//! The monitors on QEMU's `mon_list`, and monitor-add.
//!
//! Threads: [`MonitorList`] may be used in any thread (it is a lock
//! guard, so it stays in the thread that took it); [`add`] runs in the
//! main loop thread with the BQL, outside coroutine context.

use std::{ffi::CStr, marker::PhantomData, ptr::NonNull};

use crate::{
    bindings as sys,
    chardev::ChardevRef,
    errors::MonitorError,
    monitor::Monitor,
    qapi_error::{with_local_err, QmpError},
    removed::RemovedMonitor,
    threads::MainLoop,
};

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
        MonitorList {
            _not_send: PhantomData,
        }
    }

    /// The live monitors, in `mon_list` order (not creation order: the
    /// dispatcher moves a monitor to the end when it serves it).
    pub fn iter(&self) -> impl Iterator<Item = &Monitor> {
        // SAFETY: we hold monitor_lock.
        let first = unsafe { sys::qmh_mon_list_first() };
        std::iter::successors(NonNull::new(first), |m| {
            // SAFETY: m is on mon_list and we hold monitor_lock.
            NonNull::new(unsafe { sys::qmh_mon_list_next(m.as_ptr()) })
        })
        // SAFETY: a monitor on mon_list is published, and is destroyed
        // only after it left the list, which needs monitor_lock: the
        // borrow of self keeps it.
        .map(|ptr| unsafe { Monitor::from_raw(ptr) })
    }

    pub fn find(&self, id: &CStr) -> Option<&Monitor> {
        self.iter().find(|m| m.id() == id)
    }

    /// Removal step 1 for monitor-remove: see [`Self::unlink`].
    pub fn unlink_id(&self, id: &CStr) -> Result<RemovedMonitor, QmpError> {
        let name = || id.to_string_lossy().into_owned();
        let mon = self
            .find(id)
            .ok_or_else(|| MonitorError::NoSuchMonitor(name()))?;
        if !mon.is_qmp() {
            return Err(MonitorError::NotQmp(name()).into());
        }
        Ok(self.unlink(mon))
    }

    /// Removal step 1: mark the QMP monitor dead and take it off
    /// `mon_list`.  From here on no event broadcast and no dispatcher
    /// pop reaches it, since both walk `mon_list` under this lock.
    pub fn unlink(&self, mon: &Monitor) -> RemovedMonitor {
        let ptr = mon.as_ptr();
        // SAFETY: ptr is on mon_list and we hold monitor_lock, which
        // protects both the list and the dead flag.
        unsafe {
            (*ptr).dead = true;
            sys::qmh_mon_list_remove(ptr);
        }
        // SAFETY: a QMP monitor (callers check, or found it by the serial
        // of one), now off mon_list and dead; only this makes its owner.
        unsafe { RemovedMonitor::from_raw(NonNull::from(mon).cast()) }
    }
}

impl Drop for MonitorList {
    fn drop(&mut self) {
        // SAFETY: lock() took monitor_lock in this thread.
        unsafe { sys::qmh_monitor_unlock() };
    }
}

/// monitor-add: a QMP monitor `id` on chardev `chardev`.
pub fn add(
    ml: MainLoop<'_>,
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
    let chr = ChardevRef::find(ml, chardev)
        .ok_or_else(|| MonitorError::ChardevNotFound(name(chardev)))?;
    if chr.has_frontend() {
        return Err(MonitorError::ChardevInUse(name(chardev)).into());
    }
    if close_action == sys::MonitorQMPCloseAction_MONITOR_QMP_CLOSE_ACTION_DELETE
        && chr.is_defunct()
    {
        return Err(MonitorError::ChardevDefunct(name(chardev)).into());
    }
    // Only this thread creates monitors at runtime, so the checks above
    // still hold.  monitor_init_qmp_full returns with the monitor on
    // mon_list and its handlers installed, also for I/O-thread monitors.
    with_local_err(|errp| {
        // SAFETY: chr is live, id a C string, errp a fresh slot.
        unsafe {
            sys::monitor_init_qmp_full(chr.as_ptr(), pretty, id.as_ptr(), true, close_action, errp)
        }
    })?;
    Ok(())
}
