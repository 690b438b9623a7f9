// SPDX-License-Identifier: GPL-2.0-or-later
//! The monitor-qmp and monitor-hmp objects: QEMU 11.1's spelling of
//! runtime monitors (`-object`, `object-add`, `object-del`, `/objects`)
//! over the same monitors as monitor-add.  An object's id is its
//! monitor's id; its complete step makes the monitor as monitor-add
//! does ([`NewMonitor`]), its unparent step removes it as monitor-remove
//! does, and a monitor that goes another way (monitor-remove,
//! close-action=delete) takes its object along ([`delete_object_of`]).
//!
//! Threads: everything here runs in the main loop thread with the BQL,
//! where QOM calls the steps and where monitors are removed.

use std::{
    ffi::{c_char, CStr, CString},
    marker::PhantomData,
    ptr::NonNull,
};

use crate::{
    bindings as sys,
    errors::MonitorError,
    monitor::Monitor,
    monitors::{MonitorList, NewMonitor},
    qapi_error::{with_local_err, QmpError},
    removed,
    threads::MainLoop,
};

/// A monitor object, borrowed for `'a`: the length of a QOM callback,
/// or, for one found in /objects, until this thread deletes it (only
/// the main loop thread deletes objects).
#[derive(Clone, Copy)]
pub struct MonitorObject<'a>(
    NonNull<sys::MonitorObject>,
    PhantomData<&'a sys::MonitorObject>,
);

impl<'a> MonitorObject<'a> {
    /// # Safety
    /// `uc` is a monitor object that lives for `'a` (a UserCreatable is
    /// its Object).
    pub unsafe fn from_uc(uc: *mut sys::UserCreatable) -> Self {
        // SAFETY: per the contract.
        unsafe { Self::from_obj(uc.cast()) }
    }

    /// # Safety
    /// `obj` is a live monitor object, for `'a`.
    pub unsafe fn from_obj(obj: *mut sys::Object) -> Self {
        // SAFETY: MonitorObject starts with its Object (QOM's rule for
        // instance structs); non-NULL per the contract.
        MonitorObject(unsafe { NonNull::new_unchecked(obj.cast()) }, PhantomData)
    }

    /// The monitor object `/objects/<id>`, if there is one.
    fn find(_: MainLoop<'a>, id: &CStr) -> Option<Self> {
        // SAFETY: both only read QOM's tree, in the main loop thread.
        let obj = unsafe {
            let found =
                sys::object_resolve_path_component(sys::object_get_objects_root(), id.as_ptr());
            if found.is_null() {
                return None;
            }
            sys::object_dynamic_cast(found, sys::TYPE_MONITOR_OBJECT.as_ptr().cast())
        };
        // SAFETY: a monitor object in /objects stays until this thread
        // deletes it, after its last use of the value (delete_object_of).
        (!obj.is_null()).then(|| unsafe { Self::from_obj(obj.cast()) })
    }

    fn as_ptr(self) -> *mut sys::MonitorObject {
        self.0.as_ptr()
    }

    fn is_qmp(self) -> bool {
        // SAFETY: only reads the object's class.
        !unsafe {
            sys::object_dynamic_cast(self.as_ptr().cast(), sys::TYPE_MONITOR_QMP.as_ptr().cast())
        }
        .is_null()
    }

    /// Its name in /objects, which is its monitor's id.
    fn id(self) -> Option<CString> {
        // SAFETY: returns the name of the object's property in its
        // parent, which QOM owns, or NULL for an object without parent.
        let id = unsafe { sys::object_get_canonical_path_component(self.as_ptr().cast()) };
        // SAFETY: a C string that lives while the object has its parent,
        // which it keeps during this call; we copy it.
        (!id.is_null()).then(|| unsafe { CStr::from_ptr(id) }.to_owned())
    }

    fn chardev(self) -> Option<&'a CStr> {
        // SAFETY: a C string or NULL, which its setter alone changes,
        // and not once the monitor exists.
        let chardev: *const c_char = unsafe { (*self.as_ptr()).chardev };
        // SAFETY: as above; the object outlives 'a.
        (!chardev.is_null()).then(|| unsafe { CStr::from_ptr(chardev) })
    }

    /// The serial of the monitor its complete step made.
    fn serial(self) -> Option<u64> {
        // SAFETY: main loop thread, where the fields are written.
        unsafe { (*self.as_ptr()).created.then_some((*self.as_ptr()).serial) }
    }

    /// The complete step: makes the monitor, as monitor-add does.
    pub fn complete(self, ml: MainLoop<'_>) -> Result<(), QmpError> {
        let id = self.id().ok_or(MonitorError::Missing("id"))?;
        let chardev = self.chardev().ok_or(MonitorError::Missing("chardev"))?;
        let o = self.as_ptr();
        let new = NewMonitor {
            id: &id,
            chardev,
            // SAFETY: main loop thread, where the setters run.
            pretty: unsafe { (*o).pretty },
            // object-add runs in a monitor; -object runs before any does
            // SAFETY: monitor_cur only reads the current coroutine's monitor.
            dynamic: !unsafe { sys::monitor_cur() }.is_null(),
        };
        let serial = if self.is_qmp() {
            // SAFETY: as for pretty.
            new.add_qmp(ml, unsafe { (*o).close_action })?
        } else {
            new.add_hmp(ml)?
        };
        // SAFETY: main loop thread; from here on the setters refuse.
        unsafe {
            (*o).serial = serial;
            (*o).created = true;
        }
        Ok(())
    }

    /// The check_delete step of object-del: QEMU 11.1's rules, which
    /// refuse HMP monitors and the monitor running the command.
    pub fn check_delete(self) -> Result<(), QmpError> {
        if !self.is_qmp() {
            return Err(MonitorError::HmpNotDeletable.into());
        }
        // SAFETY: monitor_cur only reads the current coroutine's monitor.
        // It takes monitor_lock, hence before MonitorList::lock().
        let running = unsafe { sys::monitor_cur() };
        let current = self.serial().is_some_and(|serial| {
            MonitorList::lock()
                .find_serial(serial)
                .is_some_and(|m| m.as_ptr() == running)
        });
        if current {
            return Err(MonitorError::CurrentNotDeletable.into());
        }
        Ok(())
    }

    /// The unparent step: the object leaves /objects, its QMP monitor
    /// goes too.  HMP monitors are never removed at runtime: an HMP
    /// object leaves only when its complete step failed, or at exit,
    /// after monitor_cleanup() freed every monitor.
    pub fn unparent(self, ml: MainLoop<'_>) {
        if let Some(serial) = self.serial().filter(|_| self.is_qmp()) {
            removed::remove_serial(ml, serial);
        }
    }
}

/// The object of `mon`, just taken off `mon_list`, leaves /objects: as
/// object-del would, so a -object's options go too.  Another kind of
/// object with the same id (ids of monitor-add monitors are not QOM
/// ids) stays.
pub fn delete_object_of(ml: MainLoop<'_>, mon: &Monitor) {
    let Some(obj) = MonitorObject::find(ml, mon.id()) else {
        return;
    };
    if obj.serial() != Some(mon.serial()) {
        return;
    }
    let res = with_local_err(|errp| {
        // SAFETY: main loop thread; the id is a C string; errp a fresh
        // slot.  check_delete finds no monitor (it is off mon_list) and
        // unparent nothing left to remove.
        unsafe { sys::user_creatable_del(mon.id().as_ptr(), errp) }
    });
    if let Err(err) = res {
        err.warn();
    }
}
