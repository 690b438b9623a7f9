// SPDX-License-Identifier: GPL-2.0-or-later
//! [`MonitorObject`]: a monitor-qmp or monitor-hmp object (QOM),
//! adding one for a monitor made another way ([`Adopted`]), and
//! deleting one from `/objects`.
//!
//! Thread: only the main loop thread, with the BQL, uses monitor
//! objects: QOM calls their steps there, and their fields are written
//! there.

use std::{
    ffi::{c_char, CStr, CString},
    ptr,
};

use super::{
    error::{with_local_err, QmpError},
    main_loop::MainLoop,
    opaque::Opaque,
    strlist::{self, StrList},
    sys,
};

/// A monitor object.
///
/// # Invariants
/// The object is live while the reference lives: the length of a QOM
/// callback, or, for one found in `/objects`, until this thread deletes
/// it.
#[repr(transparent)]
pub struct MonitorObject(Opaque<sys::MonitorObject>);

impl MonitorObject {
    /// # Safety
    /// `obj` is a live monitor object, for `'a`, and the caller runs in
    /// the main loop thread.
    pub unsafe fn from_obj<'a>(obj: *mut sys::Object) -> &'a Self {
        // SAFETY: MonitorObject starts with its Object (QOM's rule for
        // instance structs), and Self is repr(transparent) over it.
        unsafe { &*obj.cast::<Self>() }
    }

    /// The monitor object `/objects/<id>`, if there is one.
    pub fn find<'a>(_: MainLoop<'a>, id: &CStr) -> Option<&'a Self> {
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
        // deletes it, which the proof's lifetime 'a rules out.
        (!obj.is_null()).then(|| unsafe { Self::from_obj(obj.cast()) })
    }

    fn as_ptr(&self) -> *mut sys::MonitorObject {
        self.0.as_ptr()
    }

    pub fn is_qmp(&self) -> bool {
        // SAFETY: only reads the object's class.
        !unsafe {
            sys::object_dynamic_cast(self.as_ptr().cast(), sys::TYPE_MONITOR_QMP.as_ptr().cast())
        }
        .is_null()
    }

    /// Its name in /objects, which is its monitor's id.
    pub fn id(&self) -> Option<CString> {
        // SAFETY: returns the name of the object's property in its
        // parent, which QOM owns, or NULL for an object without parent.
        let id = unsafe { sys::object_get_canonical_path_component(self.as_ptr().cast()) };
        // SAFETY: a C string that lives while the object has its parent,
        // which it keeps during this call; we copy it.
        (!id.is_null()).then(|| unsafe { CStr::from_ptr(id) }.to_owned())
    }

    pub fn chardev(&self) -> Option<&CStr> {
        // SAFETY: a C string or NULL, which its setter alone changes,
        // and not once the monitor exists.
        let chardev: *const c_char = unsafe { (*self.as_ptr()).chardev };
        // SAFETY: as above; the object outlives the borrow.
        (!chardev.is_null()).then(|| unsafe { CStr::from_ptr(chardev) })
    }

    pub fn pretty(&self) -> bool {
        // SAFETY: main loop thread, where the setters run.
        unsafe { (*self.as_ptr()).pretty }
    }

    /// monitor-hmp's `readline` (default on); monitor-qmp has none.
    pub fn readline(&self) -> bool {
        // SAFETY: main loop thread, where the setters run.
        unsafe { (*self.as_ptr()).readline }
    }

    pub fn close_action(&self) -> sys::MonitorQMPCloseAction {
        // SAFETY: main loop thread, where the setters run.
        unsafe { (*self.as_ptr()).close_action }
    }

    /// `allow-commands` and `deny-commands` (monitor-qmp only), which
    /// their setters leave alone once the monitor exists.
    pub fn command_lists(&self) -> (Option<StrList<'_>>, StrList<'_>) {
        // SAFETY: main loop thread, where the setters run; the lists
        // live as long as the object and are never changed in place.
        unsafe {
            let o = self.as_ptr();
            let allow = StrList::from_raw((*o).allow_commands);
            (
                (*o).has_allow_commands.then_some(allow),
                StrList::from_raw((*o).deny_commands),
            )
        }
    }

    /// The serial of the monitor its complete step made.
    pub fn serial(&self) -> Option<u64> {
        // SAFETY: main loop thread, where the fields are written.
        unsafe { (*self.as_ptr()).created.then_some((*self.as_ptr()).serial) }
    }

    /// Records the monitor its complete step made; from here on the
    /// property setters refuse.
    pub fn set_created(&self, serial: u64) {
        // SAFETY: main loop thread, where the fields are read and written.
        unsafe {
            (*self.as_ptr()).serial = serial;
            (*self.as_ptr()).created = true;
        }
    }
}

/// The object of a monitor that exists already, made without a
/// complete step: its properties read what the monitor was made with.
pub struct Adopted<'s> {
    pub id: &'s CStr,
    pub chardev: &'s CStr,
    pub qmp: bool,
    pub pretty: bool,
    pub readline: bool,
    pub close_action: sys::MonitorQMPCloseAction,
    /// `allow-commands` (None: not given) and `deny-commands`.
    pub allow: Option<Vec<CString>>,
    pub deny: Vec<CString>,
    /// The serial of the monitor.
    pub serial: u64,
}

impl Adopted<'_> {
    /// Adds the object to /objects as `/objects/<id>`: a monitor-qmp or
    /// monitor-hmp object, created, whose setters refuse from the
    /// start.  Fails, adding nothing, when the name is taken.
    pub fn add(&self, _: MainLoop<'_>) -> Result<(), QmpError> {
        let type_name = if self.qmp {
            sys::TYPE_MONITOR_QMP.as_ptr()
        } else {
            sys::TYPE_MONITOR_HMP.as_ptr()
        };
        // SAFETY: main loop thread; a type registered at start-up, whose
        // instance is a MonitorObject.  QOM zeroes the instance first.
        let obj = unsafe { sys::object_new(type_name.cast()) };
        let mo = obj.cast::<sys::MonitorObject>();
        // SAFETY: a fresh object that only this thread knows; the C
        // string goes to its chardev field, which its finalize frees.
        unsafe {
            (*mo).chardev = glib_sys::g_strdup(self.chardev.as_ptr());
            (*mo).pretty = self.pretty;
            (*mo).readline = self.readline;
            (*mo).close_action = self.close_action;
            (*mo).has_allow_commands = self.allow.is_some();
            (*mo).allow_commands = self
                .allow
                .as_deref()
                .map_or(ptr::null_mut(), strlist::to_qapi);
            (*mo).deny_commands = strlist::to_qapi(&self.deny);
            (*mo).serial = self.serial;
            (*mo).created = true;
        }
        let res = with_local_err(|errp| {
            // SAFETY: main loop thread; the id is a C string; errp a
            // fresh slot.  On success /objects holds a reference.
            unsafe {
                sys::object_property_try_add_child(
                    sys::object_get_objects_root(),
                    self.id.as_ptr(),
                    obj,
                    errp,
                )
            }
        });
        // SAFETY: drops object_new()'s reference: the object lives on in
        // /objects, or, not added, is finalized here.
        unsafe {
            sys::object_unref(obj.cast());
        }
        res.map(drop)
    }
}

/// object-del of `/objects/<id>`: the object's unparent step runs, and
/// it leaves /objects, options included.
pub fn delete(_: MainLoop<'_>, id: &CStr) -> Result<(), QmpError> {
    with_local_err(|errp| {
        // SAFETY: main loop thread; the id is a C string; errp a fresh
        // slot.
        unsafe { sys::user_creatable_del(id.as_ptr(), errp) }
    })
    .map(drop)
}
