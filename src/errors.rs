// SPDX-License-Identifier: GPL-2.0-or-later
//! The errors of the three commands and of the monitor-qmp and
//! monitor-hmp objects.  QMP reports each as a plain `GenericError` whose
//! text is the `Display` output below, so the text is the interface:
//! the tests assert it word for word.

use std::fmt;

/// Names longer than this are cut in messages (as QEMU's
/// `monitor_check_new_id()` cuts monitor ids), so that a hostile name does
/// not come back as a huge error.
const ID_SHOWN_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorError {
    ChardevNotFound(String),
    /// A monitor object's chardev does not exist: QEMU 11.1's words.
    ObjectChardevNotFound(String),
    ChardevInUse(String),
    ChardevDefunct(String),
    NoSuchMonitor(String),
    NotQmp(String),
    /// A monitor object without its id or chardev.
    Missing(&'static str),
    /// object-del of an HMP monitor, refused as QEMU 11.1 refuses it.
    HmpNotDeletable,
    /// object-del of the monitor that runs it, refused as QEMU 11.1
    /// refuses it (monitor-remove allows it).
    CurrentNotDeletable,
    /// A restricted session creating a monitor that could do more.
    MoreRights(String),
    /// A close action this program cannot carry out (no guest).
    CloseActionUnsupported,
}

/// `s` as shown in a message: cut at a char boundary if too long.
fn shown(s: &str) -> String {
    match s.char_indices().nth(ID_SHOWN_MAX) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

impl fmt::Display for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChardevNotFound(c) => write!(f, "Chardev '{}' not found", shown(c)),
            Self::ObjectChardevNotFound(c) => write!(f, "chardev \"{}\" not found", shown(c)),
            Self::ChardevInUse(c) => {
                write!(
                    f,
                    "Chardev '{}' is already in use by another frontend",
                    shown(c)
                )
            }
            Self::ChardevDefunct(c) => write!(
                f,
                "Chardev '{}' has lost its client and cannot get another one; close-action \
                 'delete' needs a client",
                shown(c)
            ),
            Self::NoSuchMonitor(id) => write!(f, "No monitor with id '{}'", shown(id)),
            Self::NotQmp(id) => write!(
                f,
                "Monitor '{}' is an HMP monitor; only QMP monitors can be removed",
                shown(id)
            ),
            Self::Missing(what) => write!(f, "Parameter '{what}' is missing"),
            Self::HmpNotDeletable => write!(f, "Deleting HMP monitors is not supported"),
            Self::CurrentNotDeletable => write!(f, "Cannot delete the current QMP monitor"),
            Self::MoreRights(id) => write!(
                f,
                "Monitor '{}' would be allowed more than this monitor is allowed",
                shown(id)
            ),
            Self::CloseActionUnsupported => {
                write!(
                    f,
                    "This close-action needs a guest, which this program does not have"
                )
            }
        }
    }
}

impl std::error::Error for MonitorError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            MonitorError::NoSuchMonitor("x".into()).to_string(),
            "No monitor with id 'x'"
        );
        assert_eq!(
            MonitorError::ChardevNotFound("c".into()).to_string(),
            "Chardev 'c' not found"
        );
    }

    #[test]
    fn long_ids_are_cut_at_char_boundaries() {
        let id = "é".repeat(100);
        let msg = MonitorError::NoSuchMonitor(id).to_string();
        assert_eq!(msg, format!("No monitor with id '{}...'", "é".repeat(64)));
        let exact = "a".repeat(64);
        assert_eq!(
            MonitorError::NoSuchMonitor(exact.clone()).to_string(),
            format!("No monitor with id '{exact}'")
        );
    }
}
