// SPDX-License-Identifier: GPL-2.0-or-later
//! Making new monitors: monitor-add and the monitor objects' complete
//! step.
//!
//! Thread: the main loop thread with the BQL, outside coroutine context
//! (the [`MainLoop`] arguments).

use std::{ffi::CStr, ptr::NonNull};

use crate::{
    errors::MonitorError,
    qemu::{
        chardev::Chardev,
        error::{with_local_err, QmpError},
        strlist::StrList,
        sys, MainLoop, Monitor, MonitorList,
    },
    restrict::CommandFilter,
};

/// The filter of a restricted session from its two lists.
pub fn command_filter<'a>(allow: Option<StrList<'a>>, deny: StrList<'a>) -> CommandFilter<'a> {
    CommandFilter::new(
        allow.map(|a| a.iter().map(CStr::to_bytes)),
        deny.iter().map(CStr::to_bytes),
    )
}

/// What the client of `mon` may run: everything on an HMP monitor.
pub fn filter_of(mon: &Monitor) -> CommandFilter<'_> {
    mon.command_lists()
        .map(|(allow, deny)| command_filter(allow, deny))
        .unwrap_or_default()
}

/// The command a close action stands for, for the rule that a
/// restricted monitor cannot give a new monitor more rights.
fn close_action_command(action: sys::MonitorQMPCloseAction) -> Option<&'static [u8]> {
    use sys::MonitorQMPCloseAction as A;
    match action {
        A::MONITOR_QMP_CLOSE_ACTION_STOP => Some(b"stop"),
        A::MONITOR_QMP_CLOSE_ACTION_SHUTDOWN => Some(b"system_powerdown"),
        A::MONITOR_QMP_CLOSE_ACTION_TERMINATE => Some(b"quit"),
        _ => None,
    }
}

/// What a new monitor is made of: its options, whether it is made
/// at runtime (monitor-add, object-add) rather than at start-up, and
/// which spelling asks for it.
pub struct NewMonitor<'s> {
    pub id: &'s CStr,
    pub chardev: &'s CStr,
    pub pretty: bool,
    pub dynamic: bool,
    /// `allow-commands` (None: not given) and `deny-commands`.
    pub allow: Option<StrList<'s>>,
    pub deny: StrList<'s>,
    /// The complete step of a monitor object (QEMU 11.1's spelling),
    /// whose checks and errors are 11.1's; otherwise monitor-add.
    pub object: bool,
}

impl NewMonitor<'_> {
    /// The checks every new monitor passes, QMP or HMP, before anything
    /// is created: a well-formed id no monitor or object has, a chardev
    /// that exists and has no frontend, or is a mux.  Only the main
    /// loop thread creates monitors at runtime, so they still hold when
    /// the caller creates the monitor, before it returns to the main
    /// loop.
    ///
    /// A mux chardev (`mux=on`) takes several frontends, a monitor among
    /// them, up to its limit, as for `-mon`: `qemu_chr_fe_init()` says
    /// when it is full.  On the object path it also refuses a chardev
    /// in use, with 11.1's words.
    fn claim_chardev<'a>(&self, ml: MainLoop<'a>) -> Result<&'a Chardev, QmpError> {
        let name = |s: &CStr| s.to_string_lossy().into_owned();
        // An object's id was checked by QOM when it entered /objects:
        // well formed, and the name of no other object, which every
        // monitor has.  monitor-add's checks and messages are QEMU's,
        // shared with -mon.
        if !self.object {
            // SAFETY: id is a C string; errp a fresh slot.
            with_local_err(|errp| unsafe { sys::monitor_check_new_id(self.id.as_ptr(), errp) })?;
        }
        let Some(chr) = Chardev::find(ml, self.chardev) else {
            return Err(if self.object {
                MonitorError::ObjectChardevNotFound(name(self.chardev))
            } else {
                MonitorError::ChardevNotFound(name(self.chardev))
            }
            .into());
        };
        if !self.object && !chr.is_mux() && chr.has_frontend() {
            return Err(MonitorError::ChardevInUse(name(self.chardev)).into());
        }
        Ok(chr)
    }

    /// No way up: a monitor made from a restricted session runs nothing
    /// the session cannot run, and has no close action that runs a
    /// command the session cannot run.  `close_action` None: an HMP
    /// monitor, which can run everything.
    fn check_rights(
        &self,
        close_action: Option<sys::MonitorQMPCloseAction>,
    ) -> Result<(), QmpError> {
        let list = MonitorList::lock();
        let Some(creator) = list.current() else {
            return Ok(()); // the command line, or a bottom half
        };
        let outer = filter_of(creator);
        let within = match close_action {
            None => !outer.is_restricted(),
            Some(action) => {
                command_filter(self.allow, self.deny).within(&outer)
                    && close_action_command(action).is_none_or(|c| outer.allows(c))
            }
        };
        if within {
            Ok(())
        } else {
            Err(MonitorError::MoreRights(self.id.to_string_lossy().into_owned()).into())
        }
    }

    /// monitor-add, and `complete()` of a monitor-qmp object: a QMP
    /// monitor.  Returns its serial.
    pub fn add_qmp(
        &self,
        ml: MainLoop<'_>,
        close_action: sys::MonitorQMPCloseAction,
    ) -> Result<u64, QmpError> {
        // SAFETY: only reads a constant of this program.
        if !unsafe { sys::monitor_close_action_supported(close_action) } {
            return Err(MonitorError::CloseActionUnsupported.into());
        }
        self.check_rights(Some(close_action))?;
        let chr = self.claim_chardev(ml)?;
        if close_action == sys::MonitorQMPCloseAction::MONITOR_QMP_CLOSE_ACTION_DELETE
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
                    self.allow.is_some(),
                    self.allow.map_or(std::ptr::null(), StrList::as_ptr),
                    self.deny.as_ptr(),
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

    /// `complete()` of a monitor-hmp object: an HMP monitor, with
    /// readline as `-mon mode=readline` makes it, or without, as the
    /// gdbstub's.  Returns its serial.
    #[cfg(qemu_monitor_objects)]
    pub fn add_hmp(&self, ml: MainLoop<'_>, readline: bool) -> Result<u64, QmpError> {
        self.check_rights(None)?;
        let chr = self.claim_chardev(ml)?;
        let mon = with_local_err(|errp| {
            // SAFETY: chr is live, id a C string, errp a fresh slot.
            unsafe { sys::monitor_init_hmp_full(chr.as_ptr(), readline, self.id.as_ptr(), errp) }
        })?;
        // It returns NULL only with an error set.
        let mon = NonNull::new(mon).ok_or_else(|| {
            MonitorError::ChardevInUse(self.chardev.to_string_lossy().into_owned())
        })?;
        // SAFETY: just published on mon_list, and HMP monitors are never
        // removed at runtime.
        let mon = unsafe { Monitor::from_raw(mon) };
        if self.dynamic {
            crate::qemu::MonitorList::lock().mark_dynamic(mon);
        }
        Ok(mon.serial())
    }
}
