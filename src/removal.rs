//! Which removal steps run where.  The five steps of SPEC.md
//! ("Ordering rules of removal") always run in the same order; what
//! differs is who owns the monitor at the time.  When the QMP
//! dispatcher is processing one of the monitor's requests (it is
//! removing itself, or its client left mid-command), the dispatcher
//! still holds the monitor: the connection stays on the monitor's own
//! context for the reply, and the dispatcher releases the monitor after.

/// Where the chardev's handlers go when they are detached (step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachTo {
    /// Keep the context the monitor ran in, so the reply can be flushed.
    OwnContext,
    /// Back to the main loop, where a chardev without frontend lives.
    MainLoop,
}

/// Why a monitor is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// monitor-remove; `own` if the monitor runs it on itself.
    Command { own: bool },
    /// The client of a close-action=delete monitor disconnected;
    /// `in_flight` if the dispatcher is running one of its requests.
    ClientClosed { in_flight: bool },
}

/// What happens after the monitor is unlinked (step 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub detach_to: DetachTo,
    /// Write out what is buffered before detaching (a reply owed).
    pub flush: bool,
    /// Drop the client now (otherwise: once the reply is written).
    pub disconnect_now: bool,
    /// Free the monitor now (otherwise: the dispatcher's release hook).
    pub free_now: bool,
    /// Remove the chardev as well, if the monitor has close-action=delete.
    /// Only a removal by another monitor leaves a one-shot chardev.
    pub chardev_too: bool,
}

impl Plan {
    pub fn new(cause: Cause) -> Self {
        let dispatcher_owns = matches!(
            cause,
            Cause::Command { own: true } | Cause::ClientClosed { in_flight: true }
        );
        if dispatcher_owns {
            Plan {
                detach_to: DetachTo::OwnContext,
                flush: false,
                disconnect_now: false,
                free_now: false,
                chardev_too: false,
            }
        } else {
            Plan { flush: false, chardev_too: cause != Cause::Command { own: false }, ..AFTER_REPLY }
        }
    }
}

/// What the dispatcher's release hook does once the reply is written:
/// the part of a deferred plan that was left out.
pub const AFTER_REPLY: Plan = Plan {
    detach_to: DetachTo::MainLoop,
    flush: true,
    disconnect_now: true,
    free_now: true,
    chardev_too: true,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_by_another_monitor_finishes_at_once_and_keeps_the_chardev() {
        let p = Plan::new(Cause::Command { own: false });
        assert_eq!(p.detach_to, DetachTo::MainLoop);
        assert!(p.disconnect_now && p.free_now);
        assert!(!p.flush && !p.chardev_too);
    }

    #[test]
    fn dispatcher_owned_removals_are_deferred() {
        for cause in [Cause::Command { own: true }, Cause::ClientClosed { in_flight: true }] {
            let p = Plan::new(cause);
            assert_eq!(p.detach_to, DetachTo::OwnContext, "{cause:?}");
            assert!(!p.disconnect_now && !p.free_now && !p.chardev_too, "{cause:?}");
        }
    }

    #[test]
    fn a_closed_idle_session_goes_with_its_chardev() {
        let p = Plan::new(Cause::ClientClosed { in_flight: false });
        assert!(p.free_now && p.disconnect_now && p.chardev_too && !p.flush);
    }
}
