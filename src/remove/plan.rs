// SPDX-License-Identifier: GPL-2.0-or-later
//! What a removal does once it has taken the monitor off `mon_list`
//! (step 1 of the five in removed.rs's module comment).  Steps 2 to 5
//! always run in the same order; what differs is whether they can all
//! run now, and what happens to the reply in flight and the chardev.

/// Why a monitor is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// monitor-remove, sent to another monitor.
    RemovedByOther,
    /// monitor-remove, sent to the monitor being removed.
    RemovedItself,
    /// The client of a close-action=delete monitor disconnected.
    ClientLeft,
}

/// The reply to the request the dispatcher is running for the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Write it: the removal's own `{"return": {}}`.
    Deliver,
    /// Drop it: its client is gone, or the monitor was removed under it.
    Drop,
}

/// The removal's plan for steps 2 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Nothing else holds the monitor: all steps now.
    Now { chardev_too: bool },
    /// The dispatcher holds one of the monitor's requests: steps 2 to 4
    /// now, keeping the connection on the monitor's own context, and
    /// step 5 when the dispatcher hands the monitor back after `reply`.
    AfterReply { reply: Reply, chardev_too: bool },
}

impl Removal {
    /// `dispatcher_holds`: the dispatcher is running one of the
    /// monitor's requests.  `deletes_on_close`: close-action=delete.
    pub fn plan(cause: Cause, dispatcher_holds: bool, deletes_on_close: bool) -> Self {
        // A one-shot session's chardev goes with it, unless the manager
        // removed the monitor and so asked for that alone.
        let chardev_too = deletes_on_close && cause != Cause::RemovedByOther;
        if !dispatcher_holds {
            return Removal::Now { chardev_too };
        }
        let reply = match cause {
            Cause::RemovedItself => Reply::Deliver,
            Cause::RemovedByOther | Cause::ClientLeft => Reply::Drop,
        };
        Removal::AfterReply { reply, chardev_too }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_by_another_monitor_keeps_the_chardev() {
        for one_shot in [false, true] {
            assert_eq!(
                Removal::plan(Cause::RemovedByOther, false, one_shot),
                Removal::Now { chardev_too: false }
            );
            assert_eq!(
                Removal::plan(Cause::RemovedByOther, true, one_shot),
                Removal::AfterReply {
                    reply: Reply::Drop,
                    chardev_too: false
                }
            );
        }
    }

    #[test]
    fn a_self_removal_delivers_its_reply_and_takes_a_one_shot_chardev() {
        for one_shot in [false, true] {
            assert_eq!(
                Removal::plan(Cause::RemovedItself, true, one_shot),
                Removal::AfterReply {
                    reply: Reply::Deliver,
                    chardev_too: one_shot
                }
            );
        }
    }

    #[test]
    fn a_closed_session_goes_with_its_chardev_after_any_request_in_flight() {
        assert_eq!(
            Removal::plan(Cause::ClientLeft, false, true),
            Removal::Now { chardev_too: true }
        );
        assert_eq!(
            Removal::plan(Cause::ClientLeft, true, true),
            Removal::AfterReply {
                reply: Reply::Drop,
                chardev_too: true
            }
        );
    }
}
