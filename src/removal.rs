//! Which removal steps run where.  The five steps of SPEC.md
//! ("Ordering rules of removal") always run in the same order; what
//! differs is whether the monitor removes itself.  Its client must then
//! still get the reply, so the connection stays open on the monitor's
//! own context and the QMP dispatcher releases the monitor afterwards.

/// Where the chardev's handlers go when they are detached (step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachTo {
    /// Keep the context the monitor ran in, so the reply can be flushed.
    OwnContext,
    /// Back to the main loop, where a chardev without frontend lives.
    MainLoop,
}

/// What `monitor-remove` does after unlinking the monitor (step 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub detach_to: DetachTo,
    /// Drop the client now (otherwise: after the reply is written).
    pub disconnect_now: bool,
    /// Free the monitor now (otherwise: the dispatcher's release hook).
    pub free_now: bool,
}

impl Plan {
    pub fn new(self_removal: bool) -> Self {
        if self_removal {
            Plan { detach_to: DetachTo::OwnContext, disconnect_now: false, free_now: false }
        } else {
            Plan { detach_to: DetachTo::MainLoop, disconnect_now: true, free_now: true }
        }
    }
}

/// What the dispatcher's release hook does once the reply of a
/// self-removal is written: the part of `Plan` that was deferred.
pub const AFTER_REPLY: Plan =
    Plan { detach_to: DetachTo::MainLoop, disconnect_now: true, free_now: true };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_another_monitor_finishes_at_once() {
        assert_eq!(Plan::new(false), AFTER_REPLY);
    }

    #[test]
    fn self_removal_keeps_the_connection_for_the_reply() {
        let p = Plan::new(true);
        assert_eq!(p.detach_to, DetachTo::OwnContext);
        assert!(!p.disconnect_now && !p.free_now);
    }
}
