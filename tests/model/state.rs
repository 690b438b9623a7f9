// SPDX-License-Identifier: GPL-2.0-or-later
//! The model: what QEMU should hold after each step.  Each lane (the
//! manager thread or a worker thread) owns its chardevs, monitors,
//! clients and getfd fds, named with the lane's prefix, so that lanes
//! running at the same time have well-defined outcomes; the monitors
//! every lane may name (the control monitors and the HMP monitor) never
//! change.  The generator and the executor update the same model; the
//! executor with what it observed, where a race allows two outcomes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    None,
    Delete,
}

impl Close {
    pub fn name(self) -> &'static str {
        match self {
            Close::None => "none",
            Close::Delete => "delete",
        }
    }
}

/// How a monitor was made.  docs/contract.md: `dynamic` is true for monitors
/// created at run time (monitor-add, object-add), false for those of the
/// command line (-mon, -qmp, -object); the model derives it from this
/// and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    MonitorAdd,
    ObjectAdd,
}

/// How a run-time step made its monitor: object-add or monitor-add.
pub fn origin_of(object: bool) -> Origin {
    if object {
        Origin::ObjectAdd
    } else {
        Origin::MonitorAdd
    }
}

/// A monitor's allow-commands (None: not given) and deny-commands (None:
/// not given; an empty list is the same as none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lists {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// The error a restricted monitor answers a refused command with.
pub fn refused(name: &str) -> String {
    format!("The command '{name}' is not allowed on this monitor")
}

/// A pattern: a command name, or a prefix followed by `*`.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Lists {
    fn deny(&self) -> &[String] {
        self.deny.as_deref().unwrap_or_default()
    }

    pub fn restricted(&self) -> bool {
        self.allow.is_some() || !self.deny().is_empty()
    }

    /// May the client run `name`?  docs/contract.md: qmp_capabilities always;
    /// human-monitor-command only if allow-commands names it; deny wins.
    pub fn allows(&self, name: &str) -> bool {
        if name == "qmp_capabilities" || !self.restricted() {
            return true;
        }
        let allowed = match &self.allow {
            None => name != "human-monitor-command",
            Some(a) if name == "human-monitor-command" => a.iter().any(|p| p == name),
            Some(a) => a.iter().any(|p| pattern_matches(p, name)),
        };
        allowed && !self.deny().iter().any(|p| pattern_matches(p, name))
    }

    /// The members of monitor-add / object-add (and of query-monitors).
    pub fn add_to(&self, args: &mut Value, for_query: bool) {
        if let Some(a) = &self.allow {
            args["allow-commands"] = json!(a);
        }
        match &self.deny {
            Some(d) if !(for_query && d.is_empty()) => args["deny-commands"] = json!(d),
            _ => {}
        }
    }
}

/// Creation order: (round, lane, sequence in the lane).  Monitors of
/// different lanes created in the same round have no defined order.
pub type Order = (u32, u8, u32);

#[derive(Debug, Clone)]
pub struct Mon {
    pub id: String,
    pub chr: String,
    pub hmp: bool,
    pub origin: Origin,
    pub close: Close,
    pub lists: Lists,
    pub order: Order,
    /// close-action=delete fired (client left, or it removed itself):
    /// it goes away by itself, at a time QEMU picks.
    pub dying: bool,
}

impl Mon {
    /// The query-monitors entry.
    pub fn info(&self) -> Value {
        let mut v = json!({"id": self.id, "mode": if self.hmp { "readline" } else { "control" },
                           "chardev": self.chr,
                           "dynamic": self.origin != Origin::CommandLine});
        if !self.hmp {
            v["close-action"] = json!(self.close.name());
            self.lists.add_to(&mut v, true);
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChrKind {
    /// A listening Unix socket, dir/LABEL.sock.
    Unix,
    /// A socketpair end passed with getfd (a one-shot session).
    Fd,
}

#[derive(Debug, Clone)]
pub struct Chr {
    pub kind: ChrKind,
    pub monitor: Option<String>,
    pub client: Option<String>,
    /// Its one-shot monitor is going, and it goes with it.
    pub dying: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CState {
    /// Connected to a chardev that has no monitor: nothing to read.
    Waiting,
    /// The monitor is in capability negotiation mode.
    Negotiating,
    Command {
        oob: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Client {
    pub chr: String,
    pub state: CState,
    /// Requests sent and not yet read (pipelined).
    pub unread: u32,
}

/// What a command should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Err(String),
    /// A step racing a close-action=delete removal: exactly one of these
    /// outcomes (None: success, Some: the error text), and nothing else.
    OneOf(Vec<Option<String>>),
}

/// The monitors and chardevs no lane changes, as QEMU reports them at
/// start minus the lanes' own.
#[derive(Debug, Clone)]
pub struct Shared {
    pub monitors: Vec<Mon>,
    pub chardevs: Vec<String>,
}

impl Shared {
    pub fn monitor(&self, id: &str) -> Option<&Mon> {
        self.monitors.iter().find(|m| m.id == id)
    }
}

#[derive(Debug, Clone)]
pub struct Lane {
    pub lane: u8,
    pub mons: Vec<Mon>,
    pub chrs: BTreeMap<String, Chr>,
    pub clients: BTreeMap<String, Client>,
    /// getfd fd names (memfd names) -> the monitor holding them.
    pub fds: BTreeMap<String, String>,
    /// The VM's run state (lane 0 runs stop/cont).
    pub running: bool,
    seq: u32,
}

pub fn invalid_id(id: &str) -> String {
    format!(
        "Invalid monitor id '{id}': an id must start with a letter and contain only letters, \
         digits, '-', '.' and '_'"
    )
}

/// QEMU's id_wellformed().
pub fn well_formed(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

impl Lane {
    pub fn new(lane: u8) -> Self {
        Lane {
            lane,
            mons: Vec::new(),
            chrs: BTreeMap::new(),
            clients: BTreeMap::new(),
            fds: BTreeMap::new(),
            running: true,
            seq: 0,
        }
    }

    pub fn mon(&self, id: &str) -> Option<&Mon> {
        self.mons.iter().find(|m| m.id == id)
    }

    fn mon_mut(&mut self, id: &str) -> Option<&mut Mon> {
        self.mons.iter_mut().find(|m| m.id == id)
    }

    /// The monitor a client talks to, if its chardev has one.
    pub fn client_mon(&self, client: &str) -> Option<&Mon> {
        let c = self.clients.get(client)?;
        self.mon(self.chrs.get(&c.chr)?.monitor.as_deref()?)
    }

    /// Something is dying: steps must wait for it (or race it).
    pub fn has_dying(&self) -> bool {
        self.mons.iter().any(|m| m.dying) || self.chrs.values().any(|c| c.dying)
    }

    pub fn is_dying_name(&self, name: &str) -> bool {
        self.mon(name).is_some_and(|m| m.dying) || self.chrs.get(name).is_some_and(|c| c.dying)
    }

    // ----- expected outcomes --------------------------------------------

    pub fn expect_chardev_add(&self, shared: &Shared, chr: &str) -> Expect {
        if self.chrs.contains_key(chr) || shared.chardevs.iter().any(|c| c == chr) {
            Expect::Err(format!("Chardev with id '{chr}' already exists"))
        } else {
            Expect::Ok
        }
    }

    pub fn expect_chardev_remove(&self, shared: &Shared, chr: &str) -> Expect {
        if shared.chardevs.iter().any(|c| c == chr) {
            // the stable chardevs all have a monitor
            return Expect::Err(format!("Chardev '{chr}' is busy"));
        }
        match self.chrs.get(chr) {
            None => Expect::Err(format!("Chardev '{chr}' not found")),
            // before the close-action's removal, or after it: the monitor
            // and its chardev go in one main-loop callback, so never a
            // success (which would mean a chardev left without monitor)
            Some(c) if c.dying => Expect::OneOf(vec![
                Some(format!("Chardev '{chr}' is busy")),
                Some(format!("Chardev '{chr}' not found")),
            ]),
            Some(c) if c.monitor.is_some() => Expect::Err(format!("Chardev '{chr}' is busy")),
            Some(_) => Expect::Ok,
        }
    }

    /// monitor-add, or object-add of a monitor-qmp (`object`): QOM
    /// checks the id's form and adds the object to /objects, where every
    /// monitor has one, before the monitor's own checks run, which then
    /// speak QEMU 11.1's words.
    pub fn expect_monitor_add(&self, shared: &Shared, id: &str, chr: &str, object: bool) -> Expect {
        if !well_formed(id) {
            return Expect::Err(if object {
                "Parameter 'id' expects an identifier".into()
            } else {
                invalid_id(id)
            });
        }
        if self.mon(id).is_some() || shared.monitor(id).is_some() {
            return Expect::Err(if object {
                format!("attempt to add duplicate property '{id}' to object (type 'container')")
            } else {
                format!("Monitor id '{id}' is already in use")
            });
        }
        let in_use = if object {
            format!("chardev '{chr}' is already in use")
        } else {
            format!("Chardev '{chr}' is already in use by another frontend")
        };
        if shared.chardevs.iter().any(|c| c == chr) {
            return Expect::Err(in_use);
        }
        match self.chrs.get(chr) {
            None if object => Expect::Err(format!("chardev \"{chr}\" not found")),
            None => Expect::Err(format!("Chardev '{chr}' not found")),
            Some(c) if c.monitor.is_some() => Expect::Err(in_use),
            Some(_) => Expect::Ok,
        }
    }

    /// monitor-remove, or object-del (`object`), which finds every
    /// monitor in /objects and refuses HMP ones, as QEMU 11.1 does.
    pub fn expect_monitor_remove(&self, shared: &Shared, id: &str, object: bool) -> Expect {
        const HMP: &str = "Deleting HMP monitors is not supported";
        if object {
            if let Some(m) = shared.monitor(id) {
                return if m.hmp {
                    Expect::Err(HMP.into())
                } else {
                    unreachable!("lanes never delete the control monitors")
                };
            }
            return match self.mon(id) {
                None => Expect::Err(format!("object '{id}' not found")),
                // the close of a one-shot session removes it, or the
                // manager first (the chardev stays)
                Some(m) if m.dying => {
                    Expect::OneOf(vec![None, Some(format!("object '{id}' not found"))])
                }
                Some(m) if m.hmp => Expect::Err(HMP.into()),
                Some(_) => Expect::Ok,
            };
        }
        if let Some(m) = shared.monitor(id) {
            return if m.hmp {
                Expect::Err(format!(
                    "Monitor '{id}' is an HMP monitor; only QMP monitors can be removed"
                ))
            } else {
                unreachable!("lanes never remove the control monitors")
            };
        }
        match self.mon(id) {
            None => Expect::Err(format!("No monitor with id '{id}'")),
            // the manager first (the chardev stays), or the close
            Some(m) if m.dying => {
                Expect::OneOf(vec![None, Some(format!("No monitor with id '{id}'"))])
            }
            Some(m) if m.hmp => Expect::Err(format!(
                "Monitor '{id}' is an HMP monitor; only QMP monitors can be removed"
            )),
            Some(_) => Expect::Ok,
        }
    }

    // ----- updates ---------------------------------------------------------

    pub fn add_chardev(&mut self, chr: &str, kind: ChrKind) {
        self.chrs.insert(
            chr.to_owned(),
            Chr {
                kind,
                monitor: None,
                client: None,
                dying: false,
            },
        );
    }

    /// The chardev is gone; returns the client that was connected to it.
    pub fn remove_chardev(&mut self, chr: &str) -> Option<String> {
        let c = self.chrs.remove(chr)?;
        if let Some(m) = &c.monitor {
            self.drop_monitor(&m.clone());
        }
        let client = c.client?;
        self.clients.remove(&client);
        Some(client)
    }

    /// The one-shot monitor of the systemd-vmspawn flow: monitor-add
    /// close-action=delete on the socketpair chardev of the same name.
    pub fn add_one_shot(&mut self, round: u32, name: &str) {
        self.add_monitor(
            round,
            name,
            name,
            Close::Delete,
            Origin::MonitorAdd,
            &Lists::default(),
        );
    }

    /// A new QMP monitor, made by monitor-add or object-add: either way
    /// it is an object in /objects, as every monitor is.
    pub fn add_monitor(
        &mut self,
        round: u32,
        id: &str,
        chr: &str,
        close: Close,
        origin: Origin,
        lists: &Lists,
    ) {
        self.seq += 1;
        let order = (round, self.lane, self.seq);
        self.mons.push(Mon {
            id: id.to_owned(),
            chr: chr.to_owned(),
            hmp: false,
            origin,
            close,
            lists: lists.clone(),
            order,
            dying: false,
        });
        let c = self.chrs.get_mut(chr).expect("chardev of a new monitor");
        c.monitor = Some(id.to_owned());
        if let Some(cl) = &c.client {
            self.clients.get_mut(cl).expect("client").state = CState::Negotiating;
        }
    }

    /// A monitor from the command line that this lane owns.
    pub fn adopt_monitor(&mut self, mon: Mon) {
        self.chrs.insert(
            mon.chr.clone(),
            Chr {
                kind: ChrKind::Unix,
                monitor: Some(mon.id.clone()),
                client: None,
                dying: false,
            },
        );
        self.mons.push(mon);
    }

    /// The monitor is gone, its chardev stays.  Returns the client that
    /// was connected to it (now disconnected by QEMU) and forgets it.
    pub fn drop_monitor(&mut self, id: &str) -> Option<String> {
        let pos = self.mons.iter().position(|m| m.id == id)?;
        let m = self.mons.remove(pos);
        self.fds.retain(|_, owner| owner != id);
        let c = self.chrs.get_mut(&m.chr)?;
        c.monitor = None;
        let client = c.client.take()?;
        self.clients.remove(&client);
        Some(client)
    }

    /// close-action=delete fired for monitor `id`.
    pub fn start_dying(&mut self, id: &str) {
        let m = self.mon_mut(id).expect("dying monitor");
        m.dying = true;
        let chr = m.chr.clone();
        if let Some(c) = self.chrs.get_mut(&chr) {
            c.dying = true;
        }
    }

    /// Whatever was dying is gone.
    pub fn settle(&mut self) {
        let dying: Vec<String> = self
            .mons
            .iter()
            .filter(|m| m.dying)
            .map(|m| m.id.clone())
            .collect();
        for id in dying {
            self.drop_monitor(&id);
        }
        let dying: Vec<String> = self
            .chrs
            .iter()
            .filter(|(_, c)| c.dying)
            .map(|(k, _)| k.clone())
            .collect();
        for chr in dying {
            self.remove_chardev(&chr);
        }
    }

    pub fn connect(&mut self, client: &str, chr: &str) {
        let c = self.chrs.get_mut(chr).expect("chardev of a new client");
        c.client = Some(client.to_owned());
        let state = if c.monitor.is_some() {
            CState::Negotiating
        } else {
            CState::Waiting
        };
        self.clients.insert(
            client.to_owned(),
            Client {
                chr: chr.to_owned(),
                state,
                unread: 0,
            },
        );
    }

    /// The client left.  A close-action=delete monitor starts dying.
    pub fn disconnect(&mut self, client: &str) {
        let Some(c) = self.clients.remove(client) else {
            return;
        };
        let Some(chr) = self.chrs.get_mut(&c.chr) else {
            return;
        };
        chr.client = None;
        let Some(mon) = chr.monitor.clone() else {
            return;
        };
        if self.mon(&mon).is_some_and(|m| m.close == Close::Delete) {
            self.start_dying(&mon);
        }
    }

    /// The client removed its own monitor: it is disconnected, and a
    /// one-shot monitor takes its chardev along.
    pub fn self_removed(&mut self, client: &str) {
        let Some(m) = self.client_mon(client).cloned() else {
            return;
        };
        self.drop_monitor(&m.id);
        if m.close == Close::Delete {
            if let Some(c) = self.chrs.get_mut(&m.chr) {
                c.dying = true;
            }
        }
    }

    /// The monitor's lists of the client's monitor allow `name`.
    pub fn client_allows(&self, client: &str, name: &str) -> bool {
        self.client_mon(client).is_none_or(|m| m.lists.allows(name))
    }

    pub fn client_mut(&mut self, client: &str) -> Option<&mut Client> {
        self.clients.get_mut(client)
    }
}
