// SPDX-License-Identifier: GPL-2.0-or-later
//! What a run can find wrong.  The kind is what shrinking keeps: a
//! smaller step list reproduces a failure if it fails the same way.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QEMU died (signal, abort, sanitizer report) or exited uninvited.
    Crash,
    /// Half a message, non-JSON output, a message not on a line end.
    Garbled,
    /// A wait ran out: QEMU hangs or never sent what it owed.
    Timeout,
    /// A socket error other than the peer going away.
    Io,
    /// The connection closed while a reply was owed.
    MissingReply,
    /// A reply with an id the client never sent, or twice, or out of order.
    StrayReply,
    /// A reply that is not the expected success or error text.
    WrongReply,
    /// Something before the greeting, a second greeting, a bad greeting.
    Greeting,
    /// An event where none may be, or an expected event missing.
    Event,
    /// query-monitors / query-chardev differ from the model.
    State,
    /// An fd left open in QEMU (getfd fds of removed monitors, end count).
    FdLeak,
    /// quit did not end QEMU with status 0.
    Exit,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    /// The same failure, with where it happened in front.
    pub fn context(mut self, what: &str) -> Self {
        self.detail = format!("{what}: {}", self.detail);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?}] {}", self.kind, self.detail)
    }
}

pub type Res<T = ()> = Result<T, Failure>;

/// Observations that are not failures (each text once), printed at the
/// end of the test.
static NOTES: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

pub fn note(text: String) {
    NOTES.lock().unwrap_or_else(|e| e.into_inner()).insert(text);
}

pub fn notes() -> Vec<String> {
    NOTES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Is this kind of failure named in QMH_TOLERATE (comma-separated kind
/// names, e.g. "Garbled,MissingReply")?  Only where a run can go on.
pub fn tolerated(kind: Kind) -> bool {
    std::env::var("QMH_TOLERATE")
        .is_ok_and(|v| v.split(',').any(|k| k.trim() == format!("{kind:?}")))
}
