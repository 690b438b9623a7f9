// SPDX-License-Identifier: GPL-2.0-or-later
//! The monitors on QEMU's `mon_list`, and making new ones: monitor-add
//! and the monitor objects' complete().
//!
//! Threads: [`MonitorList`] may be used in any thread (it is a lock
//! guard, so it stays in the thread that took it); [`NewMonitor`]'s
//! methods run in the main loop thread with the BQL, outside coroutine
//! context (their [`MainLoop`] argument).

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

    pub fn find_serial(&self, serial: u64) -> Option<&Monitor> {
        self.iter().find(|m| m.serial() == serial)
    }

    /// Records that `mon` was made at runtime, for a creator that could
    /// not say so before publishing it (monitor_init_hmp()).
    #[cfg_attr(not(qemu_monitor_objects), allow(dead_code))]
    pub fn mark_dynamic(&self, mon: &Monitor) {
        // SAFETY: mon is on mon_list and we hold monitor_lock, which
        // protects the dynamic flag.
        unsafe { (*mon.as_ptr()).dynamic = true };
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

/// What a new monitor is made of: its options, and whether it is made
/// at runtime (monitor-add, object-add) rather than at start-up.
pub struct NewMonitor<'s> {
    pub id: &'s CStr,
    pub chardev: &'s CStr,
    pub pretty: bool,
    pub dynamic: bool,
}

impl NewMonitor<'_> {
    /// The checks every new monitor passes, QMP or HMP, before anything
    /// is created: a well-formed id no monitor has, a chardev that
    /// exists and has no frontend.  Only the main loop thread creates
    /// monitors at runtime, so they still hold when the caller creates
    /// the monitor, before it returns to the main loop.
    fn claim_chardev<'a>(&self, ml: MainLoop<'a>) -> Result<ChardevRef<'a>, QmpError> {
        let name = |s: &CStr| s.to_string_lossy().into_owned();
        // The id checks and their messages are QEMU's, shared with -mon.
        // SAFETY: id is a C string; errp a fresh slot.
        with_local_err(|errp| unsafe { sys::monitor_check_new_id(self.id.as_ptr(), errp) })?;
        let chr = ChardevRef::find(ml, self.chardev)
            .ok_or_else(|| MonitorError::ChardevNotFound(name(self.chardev)))?;
        if chr.has_frontend() {
            return Err(MonitorError::ChardevInUse(name(self.chardev)).into());
        }
        Ok(chr)
    }

    /// monitor-add, and complete() of a monitor-qmp object: a QMP
    /// monitor.  Returns its serial.
    pub fn add_qmp(
        &self,
        ml: MainLoop<'_>,
        close_action: sys::MonitorQMPCloseAction,
    ) -> Result<u64, QmpError> {
        let chr = self.claim_chardev(ml)?;
        if close_action == sys::MonitorQMPCloseAction_MONITOR_QMP_CLOSE_ACTION_DELETE
            && chr.is_defunct()
        {
            let label = self.chardev.to_string_lossy().into_owned();
            return Err(MonitorError::ChardevDefunct(label).into());
        }
        // monitor_init_qmp_full returns with the monitor on mon_list and
        // its handlers installed, also for I/O-thread monitors.
        let mon = with_local_err(|errp| {
            // SAFETY: chr is live, id a C string, errp a fresh slot.
            unsafe {
                sys::monitor_init_qmp_full(
                    chr.as_ptr(),
                    self.pretty,
                    self.id.as_ptr(),
                    self.dynamic,
                    close_action,
                    errp,
                )
            }
        })?;
        // It returns NULL only with an error set, when attaching to the
        // chardev failed: the chardev got a frontend.
        let mon = NonNull::new(mon).ok_or_else(|| {
            MonitorError::ChardevInUse(self.chardev.to_string_lossy().into_owned())
        })?;
        // SAFETY: just published, and only a main loop bottom half can
        // remove it, which cannot run before we return.
        Ok(unsafe { Monitor::from_raw(mon) }.serial())
    }

    /// complete() of a monitor-hmp object: an HMP monitor with readline,
    /// as `-mon mode=readline` makes.  Returns its serial.
    #[cfg_attr(not(qemu_monitor_objects), allow(dead_code))]
    pub fn add_hmp(&self, ml: MainLoop<'_>) -> Result<u64, QmpError> {
        if self.pretty {
            return Err(MonitorError::PrettyHmp.into());
        }
        let chr = self.claim_chardev(ml)?;
        with_local_err(|errp| {
            // SAFETY: chr is live, id a C string, errp a fresh slot.
            unsafe { sys::monitor_init_hmp(chr.as_ptr(), true, self.id.as_ptr(), errp) }
        })?;
        let list = MonitorList::lock();
        // monitor_init_hmp returns with the monitor on mon_list, and HMP
        // monitors are never removed at runtime.
        let mon = list
            .find(self.id)
            .ok_or_else(|| MonitorError::NoSuchMonitor(self.id.to_string_lossy().into_owned()))?;
        if self.dynamic {
            list.mark_dynamic(mon);
        }
        Ok(mon.serial())
    }
}
