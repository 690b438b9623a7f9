// SPDX-License-Identifier: GPL-2.0-or-later
//! Errors on their way to QEMU's `Error **`: any Rust error, with the
//! place in the Rust source that raised it (as QEMU's own Rust
//! `util::Error` records it), or an `Error` a QEMU function returned,
//! handed on as it is.

use std::{
    ffi::{c_int, CStr, CString},
    panic::Location,
    ptr::{self, NonNull},
    sync::{Mutex, PoisonError},
};

use foreign_types::{foreign_type, ForeignType};

use super::sys;

foreign_type! {
    /// An `Error *` that QEMU created and we own until we hand it on.
    pub unsafe type QemuError {
        type CType = sys::Error;
        fn drop = sys::error_free;
    }
}

/// Any error a command reports.
pub struct QmpError {
    kind: Kind,
    location: &'static Location<'static>,
}

enum Kind {
    /// A Rust error: its message.
    Rust(String),
    Qemu(QemuError),
}

impl<E: std::error::Error> From<E> for QmpError {
    #[track_caller]
    fn from(e: E) -> Self {
        QmpError {
            kind: Kind::Rust(e.to_string()),
            location: Location::caller(),
        }
    }
}

impl QmpError {
    /// Hands the outcome of a command to C: the value, or the error
    /// written to `errp` (which may be NULL, as QAPI allows).  `func`
    /// names the command's C function, for `error_abort`'s message.
    ///
    /// # Safety
    /// `errp` is NULL or a valid `Error **`.
    pub unsafe fn ok_or_propagate<T>(
        res: Result<T, Self>,
        errp: *mut *mut sys::Error,
        func: &'static CStr,
    ) -> Option<T> {
        match res {
            Ok(v) => Some(v),
            Err(err) => {
                // SAFETY: per the contract.
                unsafe {
                    err.propagate(errp, func);
                }
                None
            }
        }
    }

    /// # Safety
    /// As for [`Self::ok_or_propagate`].
    unsafe fn propagate(self, errp: *mut *mut sys::Error, func: &'static CStr) {
        if errp.is_null() {
            return;
        }
        // SAFETY: errp is a valid Error ** per the contract.
        assert!(unsafe { (*errp).is_null() }, "an error is set already");
        match self.kind {
            // SAFETY: errp is valid; error_propagate takes the Error over.
            Kind::Qemu(err) => unsafe { sys::error_propagate(errp, err.into_ptr()) },
            Kind::Rust(msg) => {
                // Ids come from C strings, so a message has no NUL; be safe anyway.
                let msg = CString::new(msg.replace('\0', "")).unwrap_or_default();
                let line = c_int::try_from(self.location.line()).unwrap_or(c_int::MAX);
                // SAFETY: errp is valid; the strings are C strings, and the
                // Error keeps only src and func, which live for good.
                unsafe {
                    sys::error_setg_internal(
                        errp,
                        source_file(self.location.file()).as_ptr(),
                        line,
                        func.as_ptr(),
                        c"%s".as_ptr(),
                        msg.as_ptr(),
                    );
                }
            }
        }
    }
}

impl QmpError {
    /// Reports the error as a warning, for work nobody waits for (a
    /// one-shot session's clean-up): QEMU warns and goes on.
    pub fn warn(self) {
        let mut err: *mut sys::Error = ptr::null_mut();
        // SAFETY: err is a fresh, NULL slot.
        unsafe {
            self.propagate(&mut err, c"warn");
        }
        if !err.is_null() {
            // SAFETY: warn_report_err takes ownership of the error.
            unsafe {
                sys::warn_report_err(err);
            }
        }
    }
}

/// Calls `f` with a fresh `Error *` slot and turns a set error into `Err`.
#[track_caller]
pub fn with_local_err<T>(f: impl FnOnce(*mut *mut sys::Error) -> T) -> Result<T, QmpError> {
    let mut err: *mut sys::Error = ptr::null_mut();
    let v = f(&mut err);
    match NonNull::new(err) {
        None => Ok(v),
        Some(e) => Err(QmpError {
            // SAFETY: f's C callee set err to an Error it allocated and gave us.
            kind: Kind::Qemu(unsafe { QemuError::from_ptr(e.as_ptr()) }),
            location: Location::caller(),
        }),
    }
}

/// `file` as a C string that lives as long as QEMU: an `Error` keeps a
/// pointer to its source file.  One allocation per source file, ever.
fn source_file(file: &'static str) -> &'static CStr {
    static FILES: Mutex<Vec<&'static CStr>> = Mutex::new(Vec::new());
    let mut files = FILES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = files.iter().find(|f| f.to_bytes() == file.as_bytes()) {
        return known;
    }
    let new: &'static CStr = Box::leak(CString::new(file).unwrap_or_default().into_boxed_c_str());
    files.push(new);
    new
}
