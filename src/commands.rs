// SPDX-License-Identifier: GPL-2.0-or-later
//! The functions QEMU's C code calls: the QMP command handlers that
//! QAPI's generated marshallers call, the hooks of the dispatcher, of a
//! monitor's `CHR_EVENT_CLOSED` handler and of `monitor_cleanup()`, the
//! complete, `check_delete` and unparent steps of the monitor objects,
//! and the hook that gives a monitor made without an object its object.
//! Each turns C arguments into Rust values, calls plain Rust, and
//! writes the outcome back for C.
//!
//! Thread: the QMP handlers run in the main loop thread with the BQL,
//! outside coroutine context (`qmp_dispatch()` runs a command that is not
//! coroutine-safe in a bottom half), so they may wait for the monitor
//! I/O thread; each hook says where it runs.

use std::{
    ffi::{c_char, CStr},
    ptr::{self, NonNull},
};

use foreign_types::ForeignType;

use crate::{
    add::{filter_of, NewMonitor},
    qemu::{error::QmpError, strlist::StrList, sys, MainLoop, Monitor},
    query, remove,
};
#[cfg(qemu_monitor_objects)]
use crate::{objects, qemu::object::MonitorObject};

// A schema change that alters a handler's C type breaks the build here
// instead of crashing QEMU at run time.
const _: sys::qmh_qmp_monitor_add_fn = Some(qmp_monitor_add);
const _: sys::qmh_qmp_monitor_remove_fn = Some(qmp_monitor_remove);
const _: sys::qmh_qmp_query_monitors_fn = Some(qmp_query_monitors);
const _: sys::qmh_release_removed_fn = Some(monitor_qmp_release_removed);
const _: sys::qmh_closed_fn = Some(monitor_qmp_closed);
const _: sys::qmh_cleanup_removed_fn = Some(monitor_qmp_cleanup_removed);
const _: sys::qmh_command_allowed_fn = Some(monitor_qmp_command_allowed);
#[cfg(qemu_monitor_objects)]
const _: sys::qmh_object_complete_fn = Some(monitor_object_complete);
#[cfg(qemu_monitor_objects)]
const _: sys::qmh_object_check_delete_fn = Some(monitor_object_check_delete);
#[cfg(qemu_monitor_objects)]
const _: sys::qmh_object_unparent_fn = Some(monitor_object_unparent);
#[cfg(qemu_monitor_objects)]
const _: sys::qmh_object_adopt_fn = Some(monitor_object_adopt);

/// # Safety
/// Called by QAPI's marshaller: valid strings, `errp` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn qmp_monitor_add(
    id: *const c_char,
    chardev: *const c_char,
    has_pretty: bool,
    pretty: bool,
    has_close_action: bool,
    close_action: sys::MonitorQMPCloseAction,
    has_allow_commands: bool,
    allow_commands: *mut sys::strList,
    _has_deny_commands: bool,
    deny_commands: *mut sys::strList,
    errp: *mut *mut sys::Error,
) {
    // SAFETY: QAPI passes valid, non-NULL strings for mandatory members.
    let (id, chardev) = unsafe { (arg(id), arg(chardev)) };
    // SAFETY: lists (or NULL) that the marshaller frees after we return.
    let (allow, deny) = unsafe {
        (
            StrList::from_raw(allow_commands),
            StrList::from_raw(deny_commands),
        )
    };
    let close_action = if has_close_action {
        close_action
    } else {
        sys::MonitorQMPCloseAction::MONITOR_QMP_CLOSE_ACTION_NONE
    };
    let new = NewMonitor {
        id,
        chardev,
        pretty: has_pretty && pretty,
        dynamic: true,
        // an empty list (NULL) allows nothing but negotiation
        allow: has_allow_commands.then_some(allow),
        deny,
        object: false,
    };
    // SAFETY: QMP handlers run there (see the module comment).
    let res = unsafe {
        MainLoop::enter(|ml| {
            let serial = new.add_qmp(ml, close_action)?;
            // Every monitor is an object in /objects, as in QEMU 11.1
            #[cfg(qemu_monitor_objects)]
            objects::adopt_serial(ml, serial)?;
            #[cfg(not(qemu_monitor_objects))]
            let _ = serial;
            Ok(())
        })
    };
    // SAFETY: errp comes from the marshaller.
    unsafe {
        QmpError::ok_or_propagate(res, errp, c"qmp_monitor_add");
    }
}

/// # Safety
/// As for `qmp_monitor_add`.
#[no_mangle]
pub unsafe extern "C" fn qmp_monitor_remove(id: *const c_char, errp: *mut *mut sys::Error) {
    // SAFETY: QAPI passes a valid, non-NULL string.
    let id = unsafe { arg(id) };
    // SAFETY: QMP handlers run there (see the module comment).
    let res = unsafe { MainLoop::enter(|ml| remove::remove(ml, id)) };
    // SAFETY: errp comes from the marshaller.
    unsafe {
        QmpError::ok_or_propagate(res, errp, c"qmp_monitor_remove");
    }
}

/// # Safety
/// As for `qmp_monitor_add`.
#[no_mangle]
pub unsafe extern "C" fn qmp_query_monitors(
    _errp: *mut *mut sys::Error,
) -> *mut sys::MonitorInfoList {
    // There is always at least the monitor asking, but an empty list
    // (NULL) is valid QAPI too.
    query::query().map_or(ptr::null_mut(), ForeignType::into_ptr)
}

/// The QMP dispatcher calls this, in its coroutine, once it is done
/// with a request of a monitor that was removed meanwhile.
///
/// # Safety
/// `mon` is the dead monitor a removal left to the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn monitor_qmp_release_removed(mon: *mut sys::Monitor) {
    if let Some(mon) = NonNull::new(mon) {
        // SAFETY: the dispatcher hands back a removed monitor, which
        // lives until the removal releases it, later in the main loop.
        remove::release_after_reply(unsafe { Monitor::from_raw(mon) }.serial());
    }
}

/// The client of a monitor with a close action disconnected.  Called
/// from the `CHR_EVENT_CLOSED` handler, in the thread that runs the
/// chardev: the action runs later, in the main loop.
///
/// # Safety
/// `mon` is a live monitor on `mon_list`.
#[no_mangle]
pub unsafe extern "C" fn monitor_qmp_closed(mon: *mut sys::Monitor) {
    use sys::MonitorQMPCloseAction as A;
    let Some(mon) = NonNull::new(mon) else {
        return;
    };
    // SAFETY: the CHR_EVENT_CLOSED handler runs on a live monitor.
    let mon = unsafe { Monitor::from_raw(mon) };
    match mon.close_action() {
        Some(A::MONITOR_QMP_CLOSE_ACTION_DELETE) => remove::client_closed(mon.serial()),
        Some(
            action @ (A::MONITOR_QMP_CLOSE_ACTION_STOP
            | A::MONITOR_QMP_CLOSE_ACTION_SHUTDOWN
            | A::MONITOR_QMP_CLOSE_ACTION_TERMINATE),
        ) => {
            MainLoop::later(c"monitor_qmp_close_action", move |_| {
                // SAFETY: main loop thread with the BQL, where the
                // actions' commands run.
                unsafe {
                    sys::monitor_run_close_action(action);
                }
            });
        }
        _ => {}
    }
}

/// May the client of the QMP monitor `mon` run the command `name`?
/// Called by the dispatcher (main loop or, for exec-oob, the monitor
/// I/O thread), query-commands and query-qmp-schema.
///
/// # Safety
/// `mon` is a live QMP monitor; `name` a C string.
#[no_mangle]
pub unsafe extern "C" fn monitor_qmp_command_allowed(
    mon: *mut sys::MonitorQMP,
    name: *const c_char,
) -> bool {
    let Some(mon) = NonNull::new(mon.cast::<sys::Monitor>()) else {
        return false;
    };
    // SAFETY: a live QMP monitor, whose `common` Monitor comes first;
    // its lists are immutable (see Monitor::command_lists).
    let mon = unsafe { Monitor::from_raw(mon) };
    // SAFETY: per the contract.
    filter_of(mon).allows(unsafe { arg(name) }.to_bytes())
}

/// `monitor_cleanup()` calls this in the main loop thread, once the
/// dispatcher has stopped and while the monitor I/O thread still runs.
#[no_mangle]
pub extern "C" fn monitor_qmp_cleanup_removed() {
    // SAFETY: monitor_cleanup() runs with the BQL, outside coroutines.
    unsafe {
        MainLoop::enter(remove::release_all_after_reply);
    }
}

/// `complete()` of a monitor-qmp or monitor-hmp object: -object at
/// start-up, object-add at runtime (main loop thread, BQL, outside
/// coroutine context: object-add is not a coroutine command).
///
/// # Safety
/// `uc` is a monitor object being completed; `errp` NULL or valid.
#[cfg(qemu_monitor_objects)]
#[no_mangle]
pub unsafe extern "C" fn monitor_object_complete(
    uc: *mut sys::UserCreatable,
    errp: *mut *mut sys::Error,
) {
    // SAFETY: only monitor objects have this hook (a UserCreatable is
    // its Object); QOM calls it there.
    let res =
        unsafe { MainLoop::enter(|ml| objects::complete(ml, MonitorObject::from_obj(uc.cast()))) };
    // SAFETY: errp comes from QOM.
    unsafe {
        QmpError::ok_or_propagate(res, errp, c"monitor_object_complete");
    }
}

/// `check_delete()` of a monitor object, from object-del (main loop
/// thread, BQL).
///
/// # Safety
/// `uc` is a monitor object in /objects; `errp` NULL or valid.
#[cfg(qemu_monitor_objects)]
#[no_mangle]
pub unsafe extern "C" fn monitor_object_check_delete(
    uc: *mut sys::UserCreatable,
    errp: *mut *mut sys::Error,
) -> bool {
    // SAFETY: only monitor objects have this hook (a UserCreatable is
    // its Object); QOM calls it there, outside coroutine context.
    let res = unsafe {
        MainLoop::enter(|ml| objects::check_delete(ml, MonitorObject::from_obj(uc.cast())))
    };
    // SAFETY: errp comes from QOM.
    unsafe { QmpError::ok_or_propagate(res, errp, c"monitor_object_check_delete") }.is_some()
}

/// `unparent()` of a monitor object: it leaves /objects (object-del,
/// monitor-remove, close-action=delete, a failed `complete()`, exit), in
/// the main loop thread with the BQL, outside coroutine context.
///
/// # Safety
/// `obj` is a monitor object.
#[cfg(qemu_monitor_objects)]
#[no_mangle]
pub unsafe extern "C" fn monitor_object_unparent(obj: *mut sys::Object) {
    // SAFETY: only monitor objects have this hook; QOM calls it there.
    unsafe {
        MainLoop::enter(|ml| objects::unparent(ml, MonitorObject::from_obj(obj)));
    }
}

/// The C string argument `p` of a QAPI command, which QAPI guarantees.
///
/// # Safety
/// `p` is a valid NUL-terminated string that outlives `'a`.
pub unsafe fn arg<'a>(p: *const c_char) -> &'a CStr {
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }
}

/// A monitor made without an object (-mon, -qmp, -monitor, a mux's
/// `mon:`, the gdbstub) gets its object in /objects.  Called by
/// `monitor_init_qmp()` and `monitor_init_hmp()` right after they made
/// the monitor, in the main loop thread with the BQL, outside
/// coroutine context.
///
/// # Safety
/// `mon` is a monitor on `mon_list`; `errp` NULL or valid.
#[cfg(qemu_monitor_objects)]
#[no_mangle]
pub unsafe extern "C" fn monitor_object_adopt(
    mon: *mut sys::Monitor,
    errp: *mut *mut sys::Error,
) -> bool {
    let Some(mon) = NonNull::new(mon) else {
        return false;
    };
    // SAFETY: called there (see above); the monitor is published, and
    // only the main loop, to which we have not returned, removes one.
    let res = unsafe { MainLoop::enter(|ml| objects::adopt(ml, Monitor::from_raw(mon))) };
    // SAFETY: errp comes from the caller.
    unsafe { QmpError::ok_or_propagate(res, errp, c"monitor_object_adopt") }.is_some()
}
