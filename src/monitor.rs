// SPDX-License-Identifier: GPL-2.0-or-later
//! [`Monitor`]: QEMU's C `Monitor`, borrowed by Rust.
//!
//! QEMU shares a monitor between the main loop, the monitor I/O thread
//! and threads that emit events.  The methods here read fields that are
//! immutable once the monitor is published on `mon_list` (set by
//! `monitor_init_qmp_full()` before that), or take the lock that
//! protects them; what a removal does to a monitor is in `removed.rs`.

use std::{ffi::CStr, ptr::NonNull};

use crate::{bindings as sys, opaque::Opaque, sync::MutexGuard};

#[repr(transparent)]
pub struct Monitor(Opaque<sys::Monitor>);

// SAFETY: &Monitor only reads immutable fields or takes QEMU's locks
// (see the module comment), which is how QEMU's C shares monitors
// between threads.
unsafe impl Sync for Monitor {}

impl Monitor {
    /// # Safety
    /// `ptr` is a monitor that `monitor_init_*` published, and that is
    /// not destroyed during `'a`.
    pub unsafe fn from_raw<'a>(ptr: NonNull<sys::Monitor>) -> &'a Self {
        // SAFETY: Monitor is repr(transparent) over Opaque<sys::Monitor>;
        // the monitor lives for 'a per the contract.
        unsafe { ptr.cast::<Self>().as_ref() }
    }

    pub fn as_ptr(&self) -> *mut sys::Monitor {
        self.0.as_ptr()
    }

    pub fn id(&self) -> &CStr {
        // SAFETY: a published monitor has a non-NULL id, immutable and
        // freed only with the monitor.
        unsafe { CStr::from_ptr((*self.as_ptr()).id) }
    }

    pub fn is_qmp(&self) -> bool {
        // SAFETY: set at creation and never changed.
        unsafe { (*self.as_ptr()).is_qmp }
    }

    /// Made at runtime, by monitor-add or object-add.
    pub fn is_dynamic(&self) -> bool {
        // Set before publication, or for an HMP monitor object just
        // after, under monitor_lock (MonitorList::mark_dynamic); the one
        // caller, query-monitors, walks mon_list under that lock.
        // SAFETY: a live monitor; the field is stable under the lock.
        unsafe { (*self.as_ptr()).dynamic }
    }

    /// Is this the monitor of the command being executed?  Takes
    /// `monitor_lock`: not for a caller that holds a `MonitorList`.
    pub fn is_current(&self) -> bool {
        // SAFETY: monitor_cur only reads the current coroutine's monitor.
        unsafe { sys::monitor_cur() == self.as_ptr() }
    }

    /// Its place in creation order, unique for the life of QEMU.
    pub fn serial(&self) -> u64 {
        // SAFETY: set before the monitor was published; immutable.
        unsafe { (*self.as_ptr()).serial }
    }

    /// The close action of a QMP monitor, None for HMP.
    pub fn close_action(&self) -> Option<sys::MonitorQMPCloseAction> {
        self.is_qmp().then(|| {
            // SAFETY: set before the monitor was published; immutable.
            unsafe { (*self.as_ptr()).close_action }
        })
    }

    pub fn deletes_on_close(&self) -> bool {
        self.close_action() == Some(sys::MonitorQMPCloseAction_MONITOR_QMP_CLOSE_ACTION_DELETE)
    }

    pub fn mode(&self) -> sys::MonitorMode {
        if self.is_qmp() {
            sys::MonitorMode_MONITOR_MODE_CONTROL
        } else {
            sys::MonitorMode_MONITOR_MODE_READLINE
        }
    }

    /// Runs its chardev handlers in the monitor I/O thread.
    pub fn uses_io_thread(&self) -> bool {
        // SAFETY: set at creation and never changed.
        unsafe { (*self.as_ptr()).use_io_thread }
    }

    /// The chardev frontend, for the functions that take one.
    pub fn frontend(&self) -> *mut sys::CharFrontend {
        // SAFETY: only the address is taken.
        unsafe { &raw mut (*self.as_ptr()).chr }
    }

    pub fn chardev(&self) -> *mut sys::Chardev {
        // SAFETY: the frontend's chardev is set at creation and stays
        // until the monitor is destroyed.
        unsafe { (*self.as_ptr()).chr.chr }
    }

    /// The label of the monitor's chardev.  QEMU labels every chardev,
    /// its internal ones (the gdbstub's) with a generated "#chrN"; an
    /// unlabelled one would be shown as "".
    pub fn chardev_label(&self) -> &CStr {
        // SAFETY: a live monitor keeps its chardev attached, and a
        // chardev with a frontend cannot be removed.
        let label = unsafe { sys::qmh_chr_label(self.chardev()) };
        if label.is_null() {
            c""
        } else {
            // SAFETY: a chardev's label is a C string that lives as long
            // as the chardev.
            unsafe { CStr::from_ptr(label) }
        }
    }

    /// The QMP monitor this is the `common` part of.
    pub fn qmp(&self) -> Option<*mut sys::MonitorQMP> {
        self.is_qmp().then(|| {
            // SAFETY: qmh_monitor_qmp is container_of on a QMP monitor.
            unsafe { sys::qmh_monitor_qmp(self.as_ptr()) }
        })
    }

    /// Takes `mon_lock`, which protects the output buffer and its watch.
    pub fn lock(&self) -> MutexGuard<'_> {
        // SAFETY: mon_lock is initialised with the monitor and destroyed
        // with it, which the borrow of self outlives.
        let mutex = unsafe { Opaque::from_raw(&raw mut (*self.as_ptr()).mon_lock) };
        MutexGuard::lock(mutex)
    }
}
