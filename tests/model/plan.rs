// SPDX-License-Identifier: GPL-2.0-or-later
//! The steps and the plan: a list of steps, each tagged with its round
//! and lane.  The lanes of a round run at the same time (one thread
//! each), then a sync point checks QEMU against the model.  A plan is a
//! plain list so that it can be printed and shrunk; the executor skips
//! a step whose client or resource does not exist (any more).

use std::fmt;

use super::{
    client::{probe, GARBAGE, RESYNC},
    state::{Close, Lists},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// chardev-add of a listening Unix socket.
    ChardevAdd {
        chr: String,
    },
    ChardevRemove {
        chr: String,
    },
    /// monitor-add, or with `object` object-add of a monitor-qmp
    /// (QEMU 11.1's spelling), restricted by `lists` if it has any.
    MonitorAdd {
        id: String,
        chr: String,
        close: Option<Close>,
        pretty: bool,
        object: bool,
        lists: Lists,
    },
    /// socketpair + getfd + chardev-add (addr type fd), no monitor; then
    /// our end is closed and monitor-add close-action=delete sent, the
    /// close first (`early`) or right after the request, `delay_ms` apart.
    LeaveAroundAdd {
        name: String,
        early: bool,
        delay_ms: u32,
    },
    /// Malformed input (GARBAGE[garbage]), a byte that resets QEMU's JSON
    /// parser (RESYNC[resync]), then a query-name; read at once if `read`.
    Garbage {
        client: String,
        garbage: usize,
        resync: usize,
        read: bool,
    },
    /// One request of client::probe(cmd), read with its reply.
    Probe {
        client: String,
        cmd: usize,
    },
    /// monitor-remove, or with `object` object-del.
    MonitorRemove {
        id: String,
        object: bool,
    },
    /// socketpair + getfd + chardev-add (addr type fd) + monitor-add
    /// close-action=delete; `client` holds our end.
    Session {
        name: String,
        client: String,
    },
    Connect {
        client: String,
        chr: String,
    },
    /// Reads the greeting (if owed), sends qmp_capabilities.
    Negotiate {
        client: String,
        oob: bool,
    },
    /// One request, read with its reply: query-name, or with `oob` an
    /// exec-oob query-yank.
    Command {
        client: String,
        oob: bool,
    },
    /// `n` requests in one write, left unread: query-qmp-schema (big
    /// replies, more than the 8-request queue suspends the monitor), or
    /// with `oob` a mix of exec-oob query-yank and query-name.
    Pipeline {
        client: String,
        n: u32,
        oob: bool,
    },
    /// Reads everything the client is owed.
    Drain {
        client: String,
    },
    /// getfd of a fresh memfd over the client's own connection.
    Getfd {
        client: String,
        fd: String,
    },
    /// `before` requests, monitor-remove of its own monitor, `after`
    /// requests, in one write.
    SelfRemove {
        client: String,
        before: u32,
        after: u32,
    },
    /// Clean: read what is owed, then close.  Abrupt: send a command
    /// and close at once, with everything unread.
    Disconnect {
        client: String,
        abrupt: bool,
    },
    StopCont {
        stop: bool,
    },
    /// The client floods its monitor (exec-oob query-yank and query-name
    /// from a writer thread, never reading) while its lane's control
    /// monitor removes the monitor after `delay_ms`.
    FloodRemoved {
        client: String,
        delay_ms: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Item {
    pub round: u32,
    pub lane: u8,
    pub step: Step,
}

pub type Plan = Vec<Item>;

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ChardevAdd { chr } => write!(f, "chardev-add {chr}"),
            Step::ChardevRemove { chr } => write!(f, "chardev-remove {chr:?}"),
            Step::MonitorAdd {
                id,
                chr,
                close,
                pretty,
                object,
                lists,
            } => {
                if *object {
                    write!(f, "object-add monitor-qmp id={id:?} chardev={chr:?}")?;
                } else {
                    write!(f, "monitor-add id={id:?} chardev={chr:?}")?;
                }
                if let Some(c) = close {
                    write!(f, " close-action={}", c.name())?;
                }
                if *pretty {
                    write!(f, " pretty")?;
                }
                if let Some(a) = &lists.allow {
                    write!(f, " allow-commands={a:?}")?;
                }
                if let Some(d) = &lists.deny {
                    write!(f, " deny-commands={d:?}")?;
                }
                Ok(())
            }
            Step::LeaveAroundAdd {
                name,
                early,
                delay_ms,
            } => write!(
                f,
                "socketpair chardev {name}; the client leaves {} monitor-add close-action=delete \
                 ({delay_ms} ms apart)",
                if *early { "before" } else { "after" }
            ),
            Step::Garbage {
                client,
                garbage,
                resync,
                read,
            } => write!(
                f,
                "client {client} sends {:?} + {:?} + query-name{}",
                String::from_utf8_lossy(GARBAGE[*garbage].0),
                RESYNC[*resync].0 as char,
                if *read { "" } else { " unread" }
            ),
            Step::Probe { client, cmd } => write!(f, "client {client} {}", probe(*cmd).0),
            Step::MonitorRemove { id, object: false } => write!(f, "monitor-remove {id:?}"),
            Step::MonitorRemove { id, object: true } => write!(f, "object-del {id:?}"),
            Step::Session { name, client } => {
                write!(f, "one-shot session {name} (client {client})")
            }
            Step::Connect { client, chr } => write!(f, "client {client} connects to {chr}"),
            Step::Negotiate { client, oob } => {
                write!(
                    f,
                    "client {client} qmp_capabilities{}",
                    if *oob { " enable=[oob]" } else { "" }
                )
            }
            Step::Command { client, oob } => {
                write!(
                    f,
                    "client {client} {}",
                    if *oob {
                        "exec-oob query-yank"
                    } else {
                        "query-name"
                    }
                )
            }
            Step::Pipeline { client, n, oob } => write!(
                f,
                "client {client} sends {n} x {} unread",
                if *oob {
                    "(query-yank oob | query-name)"
                } else {
                    "query-qmp-schema"
                }
            ),
            Step::Drain { client } => write!(f, "client {client} reads all it is owed"),
            Step::Getfd { client, fd } => write!(f, "client {client} getfd {fd}"),
            Step::SelfRemove {
                client,
                before,
                after,
            } => {
                write!(
                    f,
                    "client {client}: {before} x query-name, monitor-remove itself, {after} x \
                     query-name"
                )
            }
            Step::Disconnect { client, abrupt } => {
                write!(
                    f,
                    "client {client} {}",
                    if *abrupt {
                        "leaves mid-command"
                    } else {
                        "disconnects cleanly"
                    }
                )
            }
            Step::StopCont { stop } => write!(f, "{}", if *stop { "stop" } else { "cont" }),
            Step::FloodRemoved { client, delay_ms } => {
                write!(
                    f,
                    "client {client} floods; its monitor is removed after {delay_ms} ms"
                )
            }
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {:3} lane {}: {}",
            self.round, self.lane, self.step
        )
    }
}

/// The plan as text, one step a line.
pub fn show(plan: &[Item]) -> String {
    plan.iter().map(|i| format!("    {i}\n")).collect()
}
