// SPDX-License-Identifier: GPL-2.0-or-later
//! The monitor-qmp and monitor-hmp objects: QEMU 11.1's spelling of
//! runtime monitors (`-object`, `object-add`, `object-del`, `/objects`)
//! over the same monitors as monitor-add.  An object's id is its
//! monitor's id; its complete step makes the monitor as monitor-add
//! does ([`NewMonitor`]), its unparent step removes it as monitor-remove
//! does, and a monitor that goes another way (monitor-remove,
//! close-action=delete) takes its object along (in [`crate::remove`]).
//!
//! Threads: everything here runs in the main loop thread with the BQL,
//! where QOM calls the steps and where monitors are removed.

use crate::{
    add::NewMonitor,
    errors::MonitorError,
    qemu::{error::QmpError, object::MonitorObject, sys, MainLoop, MonitorList},
    remove,
};

/// The complete step: makes the monitor, as monitor-add does.
pub fn complete(ml: MainLoop<'_>, obj: &MonitorObject) -> Result<(), QmpError> {
    let id = obj.id().ok_or(MonitorError::Missing("id"))?;
    let chardev = obj.chardev().ok_or(MonitorError::Missing("chardev"))?;
    let (allow, deny) = obj.command_lists();
    let new = NewMonitor {
        id: &id,
        chardev,
        allow,
        deny,
        pretty: obj.pretty(),
        // object-add runs in a monitor; -object runs before any does
        // SAFETY: monitor_cur only reads the current coroutine's monitor.
        dynamic: !unsafe { sys::monitor_cur() }.is_null(),
    };
    let serial = if obj.is_qmp() {
        new.add_qmp(ml, obj.close_action())?
    } else {
        new.add_hmp(ml)?
    };
    obj.set_created(serial);
    Ok(())
}

/// The `check_delete` step of object-del: QEMU 11.1's rules, which
/// refuse HMP monitors and the monitor running the command.
pub fn check_delete(_: MainLoop<'_>, obj: &MonitorObject) -> Result<(), QmpError> {
    if !obj.is_qmp() {
        return Err(MonitorError::HmpNotDeletable.into());
    }
    let current = obj.serial().is_some_and(|serial| {
        let list = MonitorList::lock();
        list.find_serial(serial).is_some_and(|m| list.is_current(m))
    });
    if current {
        return Err(MonitorError::CurrentNotDeletable.into());
    }
    Ok(())
}

/// The unparent step: the object leaves /objects, its QMP monitor
/// goes too.  HMP monitors are never removed at runtime: an HMP
/// object leaves only when its complete step failed, or at exit,
/// after `monitor_cleanup()` freed every monitor.
pub fn unparent(ml: MainLoop<'_>, obj: &MonitorObject) {
    if let Some(serial) = obj.serial().filter(|_| obj.is_qmp()) {
        remove::remove_serial(ml, serial);
    }
}
