// SPDX-License-Identifier: GPL-2.0-or-later
//! The `MonitorInfoList` that query-monitors returns.  QAPI frees it
//! with `g_free`, so every byte of it comes from `g_malloc`.

use std::{
    ffi::{c_char, CStr},
    mem::size_of,
};

use foreign_types::{foreign_type, ForeignType};

use crate::qemu::{strlist::StrList, sys, Monitor, MonitorList};

foreign_type! {
    /// A non-empty list owned by us until `into_ptr` hands it to QAPI.
    pub unsafe type InfoList {
        type CType = sys::MonitorInfoList;
        fn drop = sys::qapi_free_MonitorInfoList;
    }
}

/// `size_of::<T>()` zeroed bytes from `g_malloc0`, which aborts on OOM.
fn g_new0<T>() -> *mut T {
    // SAFETY: g_malloc0 returns a zeroed, suitably aligned allocation.
    unsafe { glib_sys::g_malloc0(size_of::<T>()).cast() }
}

fn info(list: &MonitorList, m: &Monitor) -> *mut sys::MonitorInfo {
    let info = g_new0::<sys::MonitorInfo>();
    // SAFETY: info is a fresh, zeroed MonitorInfo we own.
    unsafe {
        (*info).id = g_strdup(m.id());
        (*info).mode = m.mode();
        (*info).chardev = g_strdup(m.chardev().label());
        (*info).dynamic = m.is_dynamic(list);
        if let Some(action) = m.close_action() {
            (*info).has_close_action = true;
            (*info).close_action = action;
        }
        if let Some((allow, deny)) = m.command_lists() {
            (*info).has_allow_commands = allow.is_some();
            (*info).allow_commands = allow.map_or(std::ptr::null_mut(), StrList::to_qapi);
            (*info).has_deny_commands = !deny.is_empty();
            (*info).deny_commands = deny.to_qapi();
        }
    }
    info
}

/// Every live monitor, in creation order.
pub fn query() -> Option<InfoList> {
    let list = MonitorList::lock();
    let mut mons: Vec<&Monitor> = list.iter().collect();
    // Built by prepending, so walk newest first.
    mons.sort_unstable_by_key(|m| std::cmp::Reverse(m.serial()));
    mons.iter().fold(None, |tail: Option<InfoList>, m| {
        let node = g_new0::<sys::MonitorInfoList>();
        // SAFETY: node is fresh and zeroed; it takes over the tail.
        unsafe {
            (*node).value = info(&list, m);
            (*node).next = tail.map_or(std::ptr::null_mut(), ForeignType::into_ptr);
            Some(InfoList::from_ptr(node))
        }
    })
}

/// `s` copied into `g_malloc`'d memory, for QAPI to `g_free`.
fn g_strdup(s: &CStr) -> *mut c_char {
    // SAFETY: s is a valid C string; g_strdup copies it.
    unsafe { glib_sys::g_strdup(s.as_ptr()) }
}
