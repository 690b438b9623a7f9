// SPDX-License-Identifier: GPL-2.0-or-later
//! The monitor-qmp and monitor-hmp objects: QEMU 11.1's spelling of
//! runtime monitors (`-object`, `object-add`, `object-del`, `/objects`)
//! over the same monitors as monitor-add.  Every monitor has an object
//! in /objects, named by the monitor's id: an object's complete step
//! makes the monitor as monitor-add does ([`NewMonitor`]), and a
//! monitor made another way (-mon, -qmp, -monitor, a mux's `mon:`, the
//! gdbstub, monitor-add) gets its object right after ([`adopt`]).  The
//! unparent step removes the monitor as monitor-remove does, and a
//! monitor that goes another way (monitor-remove, close-action=delete)
//! takes its object along (in [`crate::remove`]).
//!
//! Threads: everything here runs in the main loop thread with the BQL,
//! where QOM calls the steps and where monitors are removed.

use std::ffi::CStr;

use crate::{
    add::NewMonitor,
    errors::MonitorError,
    qemu::{
        error::QmpError,
        object::{Adopted, MonitorObject},
        sys, MainLoop, Monitor, MonitorList,
    },
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
        object: true,
    };
    let serial = if obj.is_qmp() {
        new.add_qmp(ml, obj.close_action())?
    } else {
        new.add_hmp(ml, obj.readline())?
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

/// Gives `mon`, made without an object, its object in /objects, whose
/// properties read what the monitor was made with.  Fails, adding
/// nothing, when an object has the monitor's id: monitor-add and -mon
/// check that first, and generated ids skip names that are taken.
pub fn adopt(ml: MainLoop<'_>, mon: &Monitor) -> Result<(), QmpError> {
    adopted(mon, mon.id(), mon.chardev().label()).add(ml)
}

fn adopted<'s>(mon: &Monitor, id: &'s CStr, chardev: &'s CStr) -> Adopted<'s> {
    let lists = mon.command_lists();
    Adopted {
        id,
        chardev,
        qmp: mon.is_qmp(),
        pretty: mon.pretty(),
        readline: mon.readline(),
        close_action: mon
            .close_action()
            .unwrap_or(sys::MonitorQMPCloseAction::MONITOR_QMP_CLOSE_ACTION_NONE),
        allow: lists
            .and_then(|(allow, _)| allow)
            .map(|a| a.iter().map(CStr::to_owned).collect()),
        deny: lists.map_or_else(Vec::new, |(_, deny)| {
            deny.iter().map(CStr::to_owned).collect()
        }),
        serial: mon.serial(),
    }
}

/// monitor-add's monitor, the one with `serial`, gets its object; if
/// that fails, the monitor goes again and monitor-add fails.
pub fn adopt_serial(ml: MainLoop<'_>, serial: u64) -> Result<(), QmpError> {
    let (id, chardev, options);
    {
        let list = MonitorList::lock();
        let mon = list
            .find_serial(serial)
            .ok_or_else(|| MonitorError::NoSuchMonitor(serial.to_string()))?;
        id = mon.id().to_owned();
        chardev = mon.chardev().label().to_owned();
        // the object is added without monitor_lock held
        options = adopted(mon, c"", c"");
    }
    let res = Adopted {
        id: &id,
        chardev: &chardev,
        ..options
    }
    .add(ml);
    if res.is_err() {
        remove::remove_serial(ml, serial);
    }
    res
}
