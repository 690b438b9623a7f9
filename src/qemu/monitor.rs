// SPDX-License-Identifier: GPL-2.0-or-later
//! [`Monitor`]: QEMU's C `Monitor`, borrowed by Rust, and
//! [`MonitorList`]: `mon_list`, held under `monitor_lock`.
//!
//! QEMU shares a monitor between the main loop, the monitor I/O thread
//! and threads that emit events.  `&Monitor` reads fields that are
//! immutable once the monitor is published on `mon_list` (set by
//! `monitor_init_qmp_full()` before that), or takes the lock that
//! protects them; fields that `monitor_lock` protects are read through
//! a [`MonitorList`].

use std::{
    ffi::CStr,
    marker::PhantomData,
    ptr::{self, NonNull},
};

use super::{
    chardev::Chardev, main_loop::IoThread, opaque::Opaque, strlist::StrList, sync::MutexGuard, sys,
};

/// A published monitor.
///
/// # Invariants
/// The monitor was published by `monitor_init_*` and is not destroyed
/// while the reference lives.
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

    /// Made at runtime, by monitor-add or object-add.  The flag may be
    /// set after publication (see [`MonitorList::mark_dynamic`]), under
    /// `monitor_lock`, hence `_list`.
    pub fn is_dynamic(&self, _list: &MonitorList) -> bool {
        // SAFETY: a live monitor; the field is written under the lock
        // that _list holds.
        unsafe { (*self.as_ptr()).dynamic }
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

    /// Whether a QMP monitor pretty-prints its output; false for HMP.
    #[cfg_attr(not(qemu_monitor_objects), allow(dead_code))]
    pub fn pretty(&self) -> bool {
        // SAFETY: a QMP monitor's option, set before the monitor was
        // published; immutable.
        self.is_qmp() && unsafe { sys::qmh_monitor_qmp_pretty(self.as_ptr()) }
    }

    /// Whether an HMP monitor edits lines (readline); false for QMP.
    #[cfg_attr(not(qemu_monitor_objects), allow(dead_code))]
    pub fn readline(&self) -> bool {
        // SAFETY: an HMP monitor's option, set before the monitor was
        // published; immutable.
        !self.is_qmp() && unsafe { sys::qmh_monitor_hmp_readline(self.as_ptr()) }
    }

    pub fn deletes_on_close(&self) -> bool {
        self.close_action() == Some(sys::MonitorQMPCloseAction::MONITOR_QMP_CLOSE_ACTION_DELETE)
    }

    pub fn mode(&self) -> sys::MonitorMode {
        if self.is_qmp() {
            sys::MonitorMode::MONITOR_MODE_CONTROL
        } else {
            sys::MonitorMode::MONITOR_MODE_READLINE
        }
    }

    /// The monitor I/O thread, if this monitor's chardev runs there.
    pub fn io_thread(&self) -> Option<IoThread<'_>> {
        // SAFETY: set at creation and never changed.
        let uses_io_thread = unsafe { (*self.as_ptr()).use_io_thread };
        // SAFETY: mon_iothread is created before the first monitor that
        // uses it, and freed only after every monitor (monitor_cleanup).
        uses_io_thread.then(|| unsafe { IoThread::new() })
    }

    /// The chardev frontend, for the functions that take one.
    pub fn frontend(&self) -> *mut sys::CharFrontend {
        // SAFETY: only the address is taken.
        unsafe { &raw mut (*self.as_ptr()).chr }
    }

    /// Its chardev: a live monitor keeps its chardev attached, and a
    /// chardev with a frontend cannot be removed.
    pub fn chardev(&self) -> &Chardev {
        // SAFETY: the frontend's chardev is set at creation and stays,
        // live, until the monitor is destroyed.
        unsafe { Chardev::from_raw((*self.as_ptr()).chr.chr) }
    }

    /// The QMP monitor this is the `common` part of.
    pub fn qmp(&self) -> Option<*mut sys::MonitorQMP> {
        self.is_qmp().then(|| {
            // SAFETY: qmh_monitor_qmp is container_of on a QMP monitor.
            unsafe { sys::qmh_monitor_qmp(self.as_ptr()) }
        })
    }

    /// The `allow-commands` (None if not given) and `deny-commands`
    /// lists of a QMP monitor; None for HMP.
    pub fn command_lists(&self) -> Option<(Option<StrList<'_>>, StrList<'_>)> {
        self.is_qmp().then(|| {
            // SAFETY: a QMP monitor; its lists are set before it is
            // published and freed with it, never changed in between.
            unsafe {
                let has_allow = sys::qmh_monitor_has_allow_commands(self.as_ptr());
                let allow = StrList::from_raw(sys::qmh_monitor_allow_commands(self.as_ptr()));
                let deny = StrList::from_raw(sys::qmh_monitor_deny_commands(self.as_ptr()));
                (has_allow.then_some(allow), deny)
            }
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

/// Holds `monitor_lock`, which protects `mon_list` and the `id`,
/// `serial`, `dynamic` and `dead` fields of the monitors on it.
#[must_use = "the list is locked only while the guard lives"]
pub struct MonitorList {
    /// The monitor of the running QMP command, read before the lock was
    /// taken (`monitor_cur()` takes it too): null outside a command.
    current: *mut sys::Monitor,
    // The lock must be released by the thread that took it.
    _not_send: PhantomData<*mut ()>,
}

impl MonitorList {
    /// Waits for `monitor_lock`; a thread that holds it already (a
    /// second guard) deadlocks, as with every `QemuMutex`.
    pub fn lock() -> Self {
        // SAFETY: monitor_cur only reads the current coroutine's monitor;
        // it takes monitor_lock, which we do not hold yet.
        let current = unsafe { sys::monitor_cur() };
        // SAFETY: monitor_lock is initialised at startup, before any QMP
        // command can run.
        unsafe {
            sys::qmh_monitor_lock();
        }
        MonitorList {
            current,
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

    /// Is `mon` the monitor of the running QMP command?
    pub fn is_current(&self, mon: &Monitor) -> bool {
        ptr::eq(self.current, mon.as_ptr())
    }

    /// The monitor of the running QMP command, if it is on the list.
    pub fn current(&self) -> Option<&Monitor> {
        self.iter().find(|m| self.is_current(m))
    }

    /// Records that `mon` was made at runtime, for a creator that could
    /// not say so before publishing it (`monitor_init_hmp_full()`).
    #[cfg_attr(not(qemu_monitor_objects), allow(dead_code))]
    pub fn mark_dynamic(&self, mon: &Monitor) {
        // SAFETY: mon is on mon_list and we hold monitor_lock, which
        // protects the dynamic flag.
        unsafe {
            (*mon.as_ptr()).dynamic = true;
        }
    }

    /// Marks `mon` dead and takes it off `mon_list`, consuming the
    /// borrow: from here on no event broadcast and no dispatcher pop
    /// reaches it, since both walk `mon_list` under this lock.  The
    /// caller becomes the monitor's one owner (removal step 1).
    pub fn unlink(&self, mon: &Monitor) -> NonNull<sys::Monitor> {
        let ptr = mon.as_ptr();
        // SAFETY: ptr is on mon_list and we hold monitor_lock, which
        // protects both the list and the dead flag.
        unsafe {
            (*ptr).dead = true;
            sys::qmh_mon_list_remove(ptr);
        }
        NonNull::from(mon).cast()
    }
}

impl Drop for MonitorList {
    fn drop(&mut self) {
        // SAFETY: lock() took monitor_lock in this thread.
        unsafe {
            sys::qmh_monitor_unlock();
        }
    }
}
