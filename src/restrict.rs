// SPDX-License-Identifier: GPL-2.0-or-later
//! Restricted sessions: which commands a QMP monitor's client may run,
//! from the monitor's `allow-commands` and `deny-commands` lists, and
//! whether a monitor may create another with given lists.  Pure logic
//! on command names as bytes (QAPI names are ASCII; a pattern that is
//! not valid UTF-8 simply matches nothing else).
//!
//! A pattern is a command name, or a prefix followed by `*`.

/// What a monitor's client may run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter<'a> {
    /// The only commands allowed; None: all.
    allow: Option<Vec<&'a [u8]>>,
    /// Commands refused even if allowed.
    deny: Vec<&'a [u8]>,
}

/// Always allowed: without it no session starts.
const NEGOTIATION: &[u8] = b"qmp_capabilities";

/// Allowed only where `allow-commands` names it: it runs any HMP
/// command, and HMP has no lists of its own.
const HMP: &[u8] = b"human-monitor-command";

/// Does `pattern` match the command `name`?
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.strip_suffix(b"*") {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Does every name that `inner` matches match `outer`?
fn covers(outer: &[u8], inner: &[u8]) -> bool {
    match (outer.strip_suffix(b"*"), inner.strip_suffix(b"*")) {
        (Some(o), Some(i)) => i.starts_with(o),
        (_, None) => matches(outer, inner),
        (None, Some(_)) => false,
    }
}

/// Is there a name that both patterns match?
fn overlap(a: &[u8], b: &[u8]) -> bool {
    match (a.strip_suffix(b"*"), b.strip_suffix(b"*")) {
        (Some(p), Some(q)) => p.starts_with(q) || q.starts_with(p),
        (Some(_), None) => matches(a, b),
        (None, _) => matches(b, a),
    }
}

impl<'a> CommandFilter<'a> {
    /// A filter from the two lists as the monitor keeps them (`allow`
    /// None: no list given).
    pub fn new(
        allow: Option<impl IntoIterator<Item = &'a [u8]>>,
        deny: impl IntoIterator<Item = &'a [u8]>,
    ) -> Self {
        CommandFilter {
            allow: allow.map(|a| a.into_iter().collect()),
            deny: deny.into_iter().collect(),
        }
    }

    /// Does the monitor run only some commands?
    pub fn is_restricted(&self) -> bool {
        self.allow.is_some() || !self.deny.is_empty()
    }

    /// May the client run the command `name`?
    pub fn allows(&self, name: &[u8]) -> bool {
        if name == NEGOTIATION || !self.is_restricted() {
            return true;
        }
        let allowed = match &self.allow {
            None => name != HMP,
            Some(_) if name == HMP => self.names(HMP),
            Some(allow) => allow.iter().any(|p| matches(p, name)),
        };
        allowed && !self.deny.iter().any(|p| matches(p, name))
    }

    /// Does the allow list name `name` itself (not by a pattern)?
    fn names(&self, name: &[u8]) -> bool {
        self.allow.iter().flatten().any(|p| *p == name)
    }

    /// Can a monitor with this filter run nothing that a monitor with
    /// `outer` cannot?  Decided on the patterns, not on a list of the
    /// commands that exist: a narrower filter that only a list of
    /// commands would show to be narrower is refused.
    pub fn within(&self, outer: &CommandFilter<'_>) -> bool {
        if !outer.is_restricted() {
            return true;
        }
        let allowed_within = match (&self.allow, &outer.allow) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(inner), Some(outer_allow)) => inner.iter().all(|p| {
                if *p == HMP {
                    outer.allows(HMP)
                } else {
                    outer_allow.iter().any(|o| covers(o, p))
                }
            }),
        };
        let denied_too = outer.deny.iter().all(|d| {
            // qmp_capabilities is allowed whatever the lists say
            *d == NEGOTIATION
                || self.deny.iter().any(|e| covers(e, d))
                || self
                    .allow
                    .as_ref()
                    .is_some_and(|inner| !inner.iter().any(|p| overlap(p, d)))
        });
        allowed_within && denied_too
    }
}

#[cfg(test)]
mod tests {
    // each case rebinds its filters
    #![allow(clippy::shadow_unrelated)]
    use super::*;

    fn filter<'a>(allow: Option<&[&'a str]>, deny: &[&'a str]) -> CommandFilter<'a> {
        CommandFilter::new(
            allow.map(|a| a.iter().map(|s| s.as_bytes()).collect::<Vec<_>>()),
            deny.iter().map(|s| s.as_bytes()),
        )
    }

    #[test]
    fn no_lists_allow_everything() {
        let f = filter(None, &[]);
        assert!(!f.is_restricted());
        for name in ["quit", "human-monitor-command", "query-status"] {
            assert!(f.allows(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn allow_patterns_and_names() {
        let f = filter(Some(&["query-*", "stop"]), &[]);
        assert!(f.allows(b"query-status"));
        assert!(f.allows(b"query-"));
        assert!(f.allows(b"stop"));
        assert!(!f.allows(b"stopx"));
        assert!(!f.allows(b"quit"));
        assert!(!f.allows(b"query"));
        assert!(f.allows(b"qmp_capabilities"));
    }

    #[test]
    fn deny_wins() {
        let f = filter(Some(&["query-*"]), &["query-qmp-*"]);
        assert!(f.allows(b"query-status"));
        assert!(!f.allows(b"query-qmp-schema"));
        let f = filter(None, &["quit", "migrate*"]);
        assert!(f.allows(b"query-status"));
        assert!(!f.allows(b"quit"));
        assert!(!f.allows(b"migrate-incoming"));
        let f = filter(None, &["qmp_capabilities", "*"]);
        assert!(f.allows(b"qmp_capabilities"));
        assert!(!f.allows(b"query-name"));
    }

    #[test]
    fn hmp_only_by_name() {
        assert!(!filter(Some(&["*"]), &[]).allows(b"human-monitor-command"));
        assert!(!filter(Some(&["human-*"]), &[]).allows(b"human-monitor-command"));
        assert!(!filter(None, &["quit"]).allows(b"human-monitor-command"));
        assert!(filter(Some(&["human-monitor-command"]), &[]).allows(b"human-monitor-command"));
        assert!(
            !filter(Some(&["human-monitor-command"]), &["human*"]).allows(b"human-monitor-command")
        );
    }

    #[test]
    fn anything_is_within_an_unrestricted_monitor() {
        let outer = filter(None, &[]);
        assert!(filter(None, &[]).within(&outer));
        assert!(filter(Some(&["quit"]), &[]).within(&outer));
    }

    #[test]
    fn a_restricted_monitor_cannot_create_an_unrestricted_one() {
        let outer = filter(Some(&["query-*", "monitor-add"]), &[]);
        assert!(!filter(None, &[]).within(&outer));
        assert!(!filter(None, &["quit"]).within(&outer));
        let outer = filter(None, &["quit"]);
        assert!(!filter(None, &[]).within(&outer));
    }

    #[test]
    fn narrower_allow_lists_are_within() {
        let outer = filter(Some(&["query-*", "stop"]), &[]);
        assert!(filter(Some(&["query-status"]), &[]).within(&outer));
        assert!(filter(Some(&["query-block*", "stop"]), &[]).within(&outer));
        assert!(!filter(Some(&["query-status", "cont"]), &[]).within(&outer));
        assert!(!filter(Some(&["*"]), &[]).within(&outer));
        assert!(!filter(Some(&["que*"]), &[]).within(&outer));
    }

    #[test]
    fn outer_denials_must_hold_inside() {
        let outer = filter(None, &["quit", "migrate*"]);
        assert!(filter(None, &["quit", "migrate*"]).within(&outer));
        assert!(filter(None, &["quit", "migrate*", "stop"]).within(&outer));
        assert!(filter(None, &["*"]).within(&outer));
        assert!(!filter(None, &["quit"]).within(&outer));
        assert!(filter(Some(&["query-*"]), &[]).within(&outer));
        assert!(!filter(Some(&["mig*"]), &[]).within(&outer));
        assert!(!filter(Some(&["quit"]), &[]).within(&outer));
        let outer = filter(Some(&["query-*"]), &["query-qmp-schema"]);
        assert!(!filter(Some(&["query-*"]), &[]).within(&outer));
        assert!(filter(Some(&["query-status"]), &[]).within(&outer));
    }

    #[test]
    fn hmp_needs_hmp_outside() {
        let outer = filter(Some(&["*"]), &[]);
        assert!(!filter(Some(&["human-monitor-command"]), &[]).within(&outer));
        let outer = filter(Some(&["human-monitor-command", "query-*"]), &[]);
        assert!(filter(Some(&["human-monitor-command"]), &[]).within(&outer));
        // an inner list that names it only by pattern cannot run it
        let outer = filter(Some(&["query-*"]), &[]);
        assert!(filter(Some(&["query-status"]), &["human*"]).within(&outer));
    }
}
