// SPDX-License-Identifier: GPL-2.0-or-later
//! [`StrList`]: QAPI's `strList`, borrowed, and new ones for QAPI to
//! own.

use std::{ffi::CStr, marker::PhantomData, mem::size_of};

use super::sys;

/// A `strList` that C keeps alive for `'a`; NULL is the empty list.
#[derive(Clone, Copy)]
pub struct StrList<'a> {
    head: *const sys::strList,
    _life: PhantomData<&'a sys::strList>,
}

impl<'a> StrList<'a> {
    /// # Safety
    /// `head` is NULL or a well-formed `strList` whose nodes and strings
    /// are not changed or freed during `'a`.
    pub unsafe fn from_raw(head: *const sys::strList) -> Self {
        StrList {
            head,
            _life: PhantomData,
        }
    }

    pub fn as_ptr(self) -> *const sys::strList {
        self.head
    }

    pub fn is_empty(self) -> bool {
        self.head.is_null()
    }

    pub fn iter(self) -> impl Iterator<Item = &'a CStr> {
        // SAFETY: every node of the list lives for 'a (from_raw).
        std::iter::successors(unsafe { self.head.as_ref() }, |node| unsafe {
            // SAFETY: as above.
            node.next.as_ref()
        })
        // SAFETY: a strList's values are C strings that live with it.
        .map(|node| unsafe { CStr::from_ptr(node.value) })
    }

    /// A copy in `g_malloc`'d memory, for QAPI to own and free.
    pub fn to_qapi(self) -> *mut sys::strList {
        let names: Vec<&CStr> = self.iter().collect();
        to_qapi(&names)
    }
}

/// `names` as a `strList` in `g_malloc`'d memory, for QAPI to own and
/// free.
pub fn to_qapi<S: AsRef<CStr>>(names: &[S]) -> *mut sys::strList {
    {
        names.iter().rev().fold(std::ptr::null_mut(), |next, name| {
            let name = name.as_ref();
            // SAFETY: g_malloc0 returns a zeroed strList-sized block that
            // QAPI frees with g_free, as it does the g_strdup'd value.
            unsafe {
                let node = glib_sys::g_malloc0(size_of::<sys::strList>()).cast::<sys::strList>();
                (*node).value = glib_sys::g_strdup(name.as_ptr());
                (*node).next = next;
                node
            }
        })
    }
}
