// SPDX-License-Identifier: GPL-2.0-or-later
//! The random plan: a pure function of the seed.  It walks its own copy
//! of the model with the nominal outcome of every step, so the same
//! seed always gives the same plan, whatever races decide at run time.
//! A removal that races a close-action=delete removal has two outcomes:
//! the generator forgets both objects (the executor knows the truth).

use super::{
    client::{GARBAGE, PROBES, RESYNC},
    common::Rng,
    plan::{Item, Plan, Step},
    state::{origin_of, CState, ChrKind, Close, Expect, Lane, Lists, Shared},
};

/// Patterns for allow-commands: names and prefixes of the commands the
/// clients send (query-name, query-yank, query-qmp-schema, getfd,
/// monitor-remove, the probes), and some that match none or all.
const ALLOW: &[&str] = &[
    "query-*",
    "query-name",
    "query-yank",
    "query-qmp-*",
    "query-n*",
    "getfd",
    "monitor-*",
    "monitor-remove",
    "human-monitor-command",
    "human-*",
    "x-*",
    "*",
    "qmp_capabilities",
    "stop",
];

/// Patterns for deny-commands.
const DENY: &[&str] = &[
    "query-qmp-schema",
    "query-yank",
    "query-name",
    "query-v*",
    "getfd",
    "monitor-remove",
    "human-monitor-command",
    "qmp_capabilities",
    "x-nosuch",
    "*",
];

struct Gen<'a> {
    rng: Rng,
    shared: &'a Shared,
    lane: Lane,
    /// name counter of the lane
    n: u32,
    /// chardevs that existed and were removed (connecting must fail)
    gone: Vec<String>,
}

impl Gen<'_> {
    fn name(&mut self, kind: char) -> String {
        self.n += 1;
        format!("l{}{kind}{}", self.lane.lane, self.n)
    }

    fn clients_where(&self, f: impl Fn(CState, u32) -> bool) -> Vec<String> {
        self.lane
            .clients
            .iter()
            .filter(|(n, c)| f(c.state, c.unread) && !self.client_dying(n))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn client_dying(&self, client: &str) -> bool {
        self.lane
            .clients
            .get(client)
            .is_some_and(|c| self.lane.is_dying_name(&c.chr))
    }

    /// Live chardevs of the lane; `with_monitor` picks busy or free ones.
    fn chardevs(&self, with_monitor: bool, unix_only: bool) -> Vec<String> {
        self.lane
            .chrs
            .iter()
            .filter(|(_, c)| {
                !c.dying
                    && c.monitor.is_some() == with_monitor
                    && (!unix_only || c.kind == ChrKind::Unix)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn live_monitors(&self) -> Vec<String> {
        self.lane
            .mons
            .iter()
            .filter(|m| !m.dying)
            .map(|m| m.id.clone())
            .collect()
    }

    fn pick_of(&mut self, v: &[String]) -> Option<String> {
        (!v.is_empty()).then(|| self.rng.pick(v).clone())
    }

    fn stable_id(&mut self) -> String {
        let ids: Vec<String> = self.shared.monitors.iter().map(|m| m.id.clone()).collect();
        self.rng.pick(&ids).clone()
    }

    fn stable_chardev(&mut self) -> String {
        let c = self.shared.chardevs.clone();
        self.rng.pick(&c).clone()
    }

    /// One step for the lane, from its current state.
    fn step(&mut self) -> Step {
        // (weight, generator) pairs; a generator may decline (None).
        type G<'b, 'c> = fn(&mut Gen<'b>) -> Option<Step>;
        let table: &[(usize, G)] = &[
            (3, Self::chardev_add),
            (2, Self::chardev_remove),
            (6, Self::monitor_add),
            (2, Self::monitor_add_invalid),
            (3, Self::monitor_remove),
            (2, Self::session),
            (5, Self::connect),
            (5, Self::negotiate),
            (4, Self::command),
            (2, Self::pipeline),
            (2, Self::drain),
            (2, Self::getfd),
            (2, Self::self_remove),
            (3, Self::disconnect),
            (1, Self::stop_cont),
            (1, Self::flood_removed),
            (1, Self::leave_around_add),
            (3, Self::garbage),
            (3, Self::probe),
        ];
        let total: usize = table.iter().map(|t| t.0).sum();
        loop {
            let mut r = self.rng.below(total);
            let mut pick = table[0].1;
            for (w, g) in table {
                if r < *w {
                    pick = *g;
                    break;
                }
                r -= w;
            }
            if let Some(s) = pick(self) {
                return s;
            }
        }
    }

    fn chardev_add(&mut self) -> Option<Step> {
        let live = self.lane.chrs.len();
        if live >= 5 && self.rng.chance(3, 4) {
            return None;
        }
        if self.rng.chance(1, 12) {
            // a duplicate
            let all: Vec<String> = self.lane.chrs.keys().cloned().collect();
            let chr = self.pick_of(&all).unwrap_or_else(|| self.stable_chardev());
            return Some(Step::ChardevAdd { chr });
        }
        Some(Step::ChardevAdd {
            chr: self.name('c'),
        })
    }

    fn chardev_remove(&mut self) -> Option<Step> {
        let chr = match self.rng.below(12) {
            0..=4 => self.pick_of(&self.chardevs(false, false))?,
            5..=7 => self.pick_of(&self.chardevs(true, false))?,
            8 => format!("l{}nochr", self.lane.lane),
            // racing its own close-action=delete removal
            9 | 10 => {
                let dying: Vec<String> = (self.lane.chrs.iter())
                    .filter(|(_, c)| c.dying)
                    .map(|(n, _)| n.clone())
                    .collect();
                self.pick_of(&dying)?
            }
            _ => self.stable_chardev(),
        };
        Some(Step::ChardevRemove { chr })
    }

    fn close_action(&mut self) -> Option<Close> {
        match self.rng.below(3) {
            0 => None,
            1 => Some(Close::None),
            _ => Some(Close::Delete),
        }
    }

    fn patterns(&mut self, pool: &[&str]) -> Vec<String> {
        (0..self.rng.range(0, 3))
            .map(|_| self.rng.pick(pool).to_string())
            .collect()
    }

    /// Mostly none; else an allow list, a deny list or both (possibly
    /// empty).
    fn lists(&mut self) -> Lists {
        if self.rng.chance(3, 5) {
            return Lists::default();
        }
        let (allow, deny) = match self.rng.below(3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        Lists {
            allow: allow.then(|| self.patterns(ALLOW)),
            deny: deny.then(|| self.patterns(DENY)),
        }
    }

    fn monitor_add(&mut self) -> Option<Step> {
        let chr = self.pick_of(&self.chardevs(false, true))?;
        let close = self.close_action();
        // sometimes the id of a command-line monitor that was removed:
        // made at run time, it is dynamic whatever its id
        let reuse = ["cli0", "obj0"]
            .into_iter()
            .find(|id| self.lane.lane == 0 && self.lane.mon(id).is_none());
        let id = match reuse {
            Some(id) if self.rng.chance(1, 4) => id.to_owned(),
            _ => self.name('m'),
        };
        Some(Step::MonitorAdd {
            id,
            chr,
            close,
            pretty: self.rng.chance(1, 4),
            object: self.rng.chance(1, 3),
            lists: self.lists(),
        })
    }

    fn monitor_add_invalid(&mut self) -> Option<Step> {
        let close = self.close_action();
        let (id, chr) = match self.rng.below(4) {
            0 => {
                let bad = ["", "1mon", "a b", "mon/x", "-x", "\u{e9}t\u{e9}", "x@y"];
                let id = self.rng.pick(&bad).to_string();
                let chr = self
                    .pick_of(&self.chardevs(false, true))
                    .unwrap_or_else(|| "nochr".into());
                (id, chr)
            }
            1 => {
                let id = self
                    .pick_of(&self.live_monitors())
                    .unwrap_or_else(|| self.stable_id());
                let chr = self
                    .pick_of(&self.chardevs(false, true))
                    .unwrap_or_else(|| "nochr".into());
                (id, chr)
            }
            2 => (self.name('x'), format!("l{}nochr", self.lane.lane)),
            _ => {
                let chr = self
                    .pick_of(&self.chardevs(true, false))
                    .unwrap_or_else(|| self.stable_chardev());
                (self.name('x'), chr)
            }
        };
        Some(Step::MonitorAdd {
            id,
            chr,
            close,
            pretty: false,
            object: self.rng.chance(1, 3),
            lists: self.lists(),
        })
    }

    fn monitor_remove(&mut self) -> Option<Step> {
        let dying: Vec<String> = self
            .lane
            .mons
            .iter()
            .filter(|m| m.dying)
            .map(|m| m.id.clone())
            .collect();
        let id = match self.rng.below(10) {
            0..=5 => self.pick_of(&self.live_monitors())?,
            // racing its own close-action=delete removal
            6 | 7 => self.pick_of(&dying)?,
            8 => "hmp0".to_owned(),
            _ => format!("l{}nomon", self.lane.lane),
        };
        Some(Step::MonitorRemove {
            id,
            object: self.rng.chance(1, 3),
        })
    }

    fn session(&mut self) -> Option<Step> {
        if self.lane.chrs.len() >= 6 {
            return None;
        }
        Some(Step::Session {
            name: self.name('s'),
            client: self.name('k'),
        })
    }

    fn connect(&mut self) -> Option<Step> {
        if self.rng.chance(1, 15) && !self.gone.is_empty() {
            let chr = self.gone[self.rng.below(self.gone.len())].clone();
            return Some(Step::Connect {
                client: self.name('k'),
                chr,
            });
        }
        let free: Vec<String> = self
            .lane
            .chrs
            .iter()
            .filter(|(_, c)| !c.dying && c.client.is_none() && c.kind == ChrKind::Unix)
            .map(|(n, _)| n.clone())
            .collect();
        let with_mon: Vec<String> = free
            .iter()
            .filter(|c| self.lane.chrs[*c].monitor.is_some())
            .cloned()
            .collect();
        let chr = if !with_mon.is_empty() && self.rng.chance(2, 3) {
            self.pick_of(&with_mon)?
        } else {
            self.pick_of(&free)?
        };
        Some(Step::Connect {
            client: self.name('k'),
            chr,
        })
    }

    fn negotiate(&mut self) -> Option<Step> {
        let negotiating = self.clients_where(|s, _| s == CState::Negotiating);
        let client = if !negotiating.is_empty() && self.rng.chance(9, 10) {
            self.pick_of(&negotiating)?
        } else {
            self.pick_of(&self.clients_where(|s, _| matches!(s, CState::Command { .. })))?
        };
        Some(Step::Negotiate {
            client,
            oob: self.rng.chance(1, 2),
        })
    }

    fn command_mode(&self, oob_only: bool) -> Vec<String> {
        self.clients_where(|s, _| matches!(s, CState::Command { oob } if oob || !oob_only))
    }

    fn command(&mut self) -> Option<Step> {
        if self.rng.chance(1, 8) {
            let client = self.pick_of(&self.clients_where(|s, _| s == CState::Negotiating))?;
            return Some(Step::Command { client, oob: false });
        }
        let client = self.pick_of(&self.command_mode(false))?;
        let oob = matches!(
            self.lane.clients[&client].state,
            CState::Command { oob: true }
        ) && self.rng.chance(1, 2);
        Some(Step::Command { client, oob })
    }

    fn pipeline(&mut self) -> Option<Step> {
        let client = self.pick_of(&self.clients_where(|s, u| s != CState::Waiting && u < 30))?;
        let oob = matches!(
            self.lane.clients[&client].state,
            CState::Command { oob: true }
        ) && self.rng.chance(1, 2);
        let n = if oob {
            self.rng.range(5, 60)
        } else {
            self.rng.range(1, 12)
        } as u32;
        Some(Step::Pipeline { client, n, oob })
    }

    fn drain(&mut self) -> Option<Step> {
        let client = self.pick_of(&self.clients_where(|s, u| s != CState::Waiting && u > 0))?;
        Some(Step::Drain { client })
    }

    fn getfd(&mut self) -> Option<Step> {
        let client = self.pick_of(&self.command_mode(false))?;
        self.n += 1;
        Some(Step::Getfd {
            client,
            fd: format!("qmh-l{}f{}", self.lane.lane, self.n),
        })
    }

    fn self_remove(&mut self) -> Option<Step> {
        // mostly with replies still unread (owed before the removal's own)
        let unread = self.clients_where(|s, u| matches!(s, CState::Command { .. }) && u > 0);
        let client = match self.pick_of(&unread) {
            Some(c) if self.rng.chance(2, 3) => c,
            _ => self.pick_of(&self.command_mode(false))?,
        };
        Some(Step::SelfRemove {
            client,
            before: self.rng.range(0, 3) as u32,
            after: self.rng.range(0, 3) as u32,
        })
    }

    fn disconnect(&mut self) -> Option<Step> {
        let all: Vec<String> = self.clients_where(|_, _| true);
        let client = self.pick_of(&all)?;
        Some(Step::Disconnect {
            client,
            abrupt: self.rng.chance(1, 2),
        })
    }

    fn flood_removed(&mut self) -> Option<Step> {
        let client = self.pick_of(&self.command_mode(false))?;
        Some(Step::FloodRemoved {
            client,
            delay_ms: *self.rng.pick(&[0, 1, 5, 20, 100]),
        })
    }

    fn leave_around_add(&mut self) -> Option<Step> {
        if self.lane.chrs.len() >= 6 {
            return None;
        }
        Some(Step::LeaveAroundAdd {
            name: self.name('s'),
            early: self.rng.chance(1, 2),
            delay_ms: *self.rng.pick(&[0, 0, 1, 2, 5]),
        })
    }

    fn talking(&self) -> Vec<String> {
        self.clients_where(|s, _| matches!(s, CState::Negotiating | CState::Command { .. }))
    }

    fn garbage(&mut self) -> Option<Step> {
        let client = self.pick_of(&self.talking())?;
        Some(Step::Garbage {
            client,
            garbage: self.rng.below(GARBAGE.len()),
            resync: self.rng.below(RESYNC.len()),
            read: self.rng.chance(2, 3),
        })
    }

    fn probe(&mut self) -> Option<Step> {
        let client = self.pick_of(&self.talking())?;
        Some(Step::Probe {
            client,
            cmd: self.rng.below(PROBES),
        })
    }

    fn stop_cont(&mut self) -> Option<Step> {
        (self.lane.lane == 0).then(|| Step::StopCont {
            stop: self.rng.chance(1, 2),
        })
    }

    /// The model after `step`, with nominal outcomes.
    fn apply(&mut self, round: u32, step: &Step) {
        let l = &mut self.lane;
        match step {
            Step::ChardevAdd { chr } => {
                if l.expect_chardev_add(self.shared, chr) == Expect::Ok {
                    l.add_chardev(chr, ChrKind::Unix);
                }
            }
            Step::ChardevRemove { chr } => match l.expect_chardev_remove(self.shared, chr) {
                Expect::Ok => {
                    l.remove_chardev(chr);
                    self.gone.push(chr.clone());
                }
                Expect::OneOf(_) => l.settle(),
                Expect::Err(_) => {}
            },
            Step::MonitorAdd {
                id,
                chr,
                close,
                object,
                lists,
                ..
            } => {
                if l.expect_monitor_add(self.shared, id, chr, *object) == Expect::Ok {
                    l.add_monitor(
                        round,
                        id,
                        chr,
                        close.unwrap_or(Close::None),
                        origin_of(*object),
                        lists,
                    );
                }
            }
            Step::MonitorRemove { id, object } => {
                match l.expect_monitor_remove(self.shared, id, *object) {
                    Expect::Ok => {
                        l.drop_monitor(id);
                    }
                    Expect::OneOf(_) => l.settle(),
                    Expect::Err(_) => {}
                }
            }
            Step::Session { name, client } => {
                l.add_chardev(name, ChrKind::Fd);
                l.add_one_shot(round, name);
                l.connect(client, name);
            }
            Step::Connect { client, chr } => {
                if l.chrs.get(chr).is_some_and(|c| c.client.is_none()) {
                    l.connect(client, chr);
                }
            }
            Step::Negotiate { client, oob } => {
                if let Some(c) = l.client_mut(client) {
                    if c.state == CState::Negotiating {
                        c.state = CState::Command { oob: *oob };
                    }
                    c.unread = 0;
                }
            }
            // two outcomes, both leave nothing the plan may use
            Step::LeaveAroundAdd { .. } => {}
            Step::Garbage {
                client,
                read: false,
                ..
            } => {
                if let Some(c) = l.client_mut(client) {
                    c.unread += 1;
                }
            }
            Step::Command { client, .. }
            | Step::Drain { client }
            | Step::Garbage { client, .. }
            | Step::Probe { client, .. } => {
                if let Some(c) = l.client_mut(client) {
                    c.unread = 0;
                }
            }
            Step::Pipeline { client, n, .. } => {
                if let Some(c) = l.client_mut(client) {
                    c.unread += n;
                }
            }
            Step::Getfd { client, fd } => {
                if let Some(m) = l.client_mon(client).map(|m| m.id.clone()) {
                    if l.client_allows(client, "getfd") {
                        l.fds.insert(fd.clone(), m);
                    }
                }
                if let Some(c) = l.client_mut(client) {
                    c.unread = 0;
                }
            }
            Step::SelfRemove { client, .. } => {
                if l.client_allows(client, "monitor-remove") {
                    l.self_removed(client);
                } else if let Some(c) = l.client_mut(client) {
                    c.unread = 0;
                }
            }
            Step::Disconnect { client, .. } => l.disconnect(client),
            Step::StopCont { stop } => l.running = !*stop,
            Step::FloodRemoved { client, .. } => {
                if let Some(m) = l.client_mon(client).map(|m| m.id.clone()) {
                    l.drop_monitor(&m);
                }
            }
        }
    }
}

/// Rounds of 1 to 3 steps per lane until about `steps` steps.
pub fn plan(seed: u64, steps: usize, shared: &Shared, lanes: &[Lane]) -> Plan {
    let mut gens: Vec<Gen> = lanes
        .iter()
        .map(|l| Gen {
            rng: Rng::new(seed ^ (0x5851_F42D_4C95_7F2D_u64.wrapping_mul(l.lane as u64 + 1))),
            shared,
            lane: l.clone(),
            n: 0,
            gone: Vec::new(),
        })
        .collect();
    let mut plan = Vec::new();
    let mut round = 0;
    while plan.len() < steps {
        round += 1;
        for g in &mut gens {
            for _ in 0..g.rng.range(1, 3) {
                let step = g.step();
                g.apply(round, &step);
                plan.push(Item {
                    round,
                    lane: g.lane.lane,
                    step,
                });
            }
        }
        for g in &mut gens {
            g.lane.settle();
        }
    }
    plan
}
