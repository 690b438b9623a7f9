// SPDX-License-Identifier: GPL-2.0-or-later
//! Runs the steps of one lane against QEMU: each step's replies are
//! checked against what the model expects, and the model follows what
//! happened.  A lane only touches its own objects, so lanes can run in
//! threads of their own.

use std::{
    collections::BTreeMap,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{
    client::{probe, Client, Flood, Reply, ALREADY_NEGOTIATED, NEGOTIATE_FIRST},
    common::{fd_chardev, socket_chardev},
    conn::Conn,
    failure::{note, Failure, Kind, Res},
    plan::Step,
    state::{origin_of, refused, CState, ChrKind, Close, Expect, Lane, Shared},
};

/// How long a close-action=delete removal may take to show.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(20);

pub struct LaneExec {
    pub model: Lane,
    /// The lane's own control monitor (the manager's for lane 0).
    pub ctl: Conn,
    pub clients: BTreeMap<String, Client>,
    pub dir: PathBuf,
    ctl_seq: u32,
}

/// Control monitors see the events of stop/cont, and no other.
fn ctl_event(ev: &Value) -> Res {
    match ev["event"].as_str() {
        Some("STOP" | "RESUME") => Ok(()),
        _ => Err(Failure::new(
            Kind::Event,
            format!("control monitor: unexpected event {ev}"),
        )),
    }
}

fn wrong(what: String) -> Failure {
    Failure::new(Kind::WrongReply, what)
}

impl LaneExec {
    pub fn new(model: Lane, ctl: Conn, dir: PathBuf) -> Self {
        LaneExec {
            model,
            ctl,
            clients: BTreeMap::new(),
            dir,
            ctl_seq: 0,
        }
    }

    /// A command on the control monitor; returns the whole reply.
    pub fn ctl_call(&mut self, execute: &str, args: Value) -> Res<Value> {
        self.ctl_seq += 1;
        let id = format!("ctl{}-{}", self.model.lane, self.ctl_seq);
        let cmd = json!({"execute": execute, "arguments": args});
        self.ctl.call(&cmd, &id, ctl_event)
    }

    /// A command whose outcome the model predicts (for Expect::OneOf, one
    /// of the alternatives, which the caller tells apart).  Returns its
    /// return value or error text.
    fn ctl_expect(
        &mut self,
        execute: &str,
        args: Value,
        exp: &Expect,
    ) -> Res<Result<Value, String>> {
        let rsp = self.ctl_call(execute, args.clone())?;
        let got = match (rsp.get("return"), rsp["error"]["desc"].as_str()) {
            (Some(v), _) => Ok(v.clone()),
            (None, Some(d)) if rsp["error"]["class"] == "GenericError" => Err(d.to_owned()),
            _ => {
                return Err(wrong(format!(
                    "{execute} {args}: not a success nor a GenericError: {rsp}"
                )))
            }
        };
        let fits = |alt: &Option<String>| match (alt, &got) {
            (None, Ok(_)) => true,
            (Some(d), Err(g)) => d == g,
            _ => false,
        };
        match (exp, &got) {
            (Expect::Ok, Ok(_)) => {}
            (Expect::Err(d), Err(g)) if d == g => {}
            (Expect::OneOf(alts), _) if alts.iter().any(fits) => {}
            _ => {
                return Err(wrong(format!(
                    "{execute} {args}: expected {exp:?}, got {rsp}"
                )))
            }
        }
        Ok(got)
    }

    fn ctl_ok(&mut self, execute: &str, args: Value) -> Res {
        self.ctl_expect(execute, args, &Expect::Ok).map(drop)
    }

    fn sock(&self, chr: &str) -> PathBuf {
        self.dir.join(format!("{chr}.sock"))
    }

    /// Names the step touches that are dying (close-action=delete).
    fn touches_dying(&self, step: &Step) -> bool {
        let m = &self.model;
        let client_dying = |c: &str| m.clients.get(c).is_some_and(|c| m.is_dying_name(&c.chr));
        match step {
            // these race the removal on purpose
            Step::MonitorRemove { .. } | Step::ChardevRemove { .. } => false,
            Step::ChardevAdd { chr } | Step::Connect { chr, .. } => m.is_dying_name(chr),
            Step::MonitorAdd { id, chr, .. } => m.is_dying_name(id) || m.is_dying_name(chr),
            Step::Session { .. } | Step::StopCont { .. } | Step::LeaveAroundAdd { .. } => false,
            Step::FloodRemoved { client, .. } => client_dying(client),
            Step::Negotiate { client, .. }
            | Step::Command { client, .. }
            | Step::Pipeline { client, .. }
            | Step::Drain { client }
            | Step::Getfd { client, .. }
            | Step::SelfRemove { client, .. }
            | Step::Disconnect { client, .. }
            | Step::Garbage { client, .. }
            | Step::Probe { client, .. } => client_dying(client),
        }
    }

    /// Polls this lane's view until its dying monitors and chardevs are
    /// gone, then drops them from the model.
    pub fn settle(&mut self) -> Res {
        let deadline = Instant::now() + SETTLE_LIMIT;
        while self.model.has_dying() {
            let mons = self.ctl_call("query-monitors", json!({}))?;
            let chrs = self.ctl_call("query-chardev", json!({}))?;
            let has = |list: &Value, key: &str, name: &str| {
                list["return"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|e| e[key] == name))
            };
            let left: Vec<String> = self
                .model
                .mons
                .iter()
                .filter(|m| m.dying && has(&mons, "id", &m.id))
                .map(|m| format!("monitor {}", m.id))
                .chain(
                    self.model
                        .chrs
                        .iter()
                        .filter(|(n, c)| c.dying && has(&chrs, "label", n))
                        .map(|(n, _)| format!("chardev {n}")),
                )
                .collect();
            if left.is_empty() {
                self.model.settle();
                break;
            }
            if Instant::now() > deadline {
                return Err(Failure::new(
                    Kind::State,
                    format!(
                        "close-action=delete: {left:?} still there {SETTLE_LIMIT:?} after the \
                         client left"
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    pub fn run(&mut self, round: u32, shared: &Shared, step: &Step) -> Res {
        if std::env::var_os("QMH_TRACE").is_some() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "{:.3} round {round:3} lane {}: {step}",
                t.as_secs_f64() % 1000.0,
                self.model.lane
            );
        }
        if self.touches_dying(step) {
            self.settle()?;
        }
        self.run_step(round, shared, step)
            .map_err(|f| f.context(&format!("round {round} lane {}: {step}", self.model.lane)))
    }

    fn run_step(&mut self, round: u32, shared: &Shared, step: &Step) -> Res {
        match step {
            Step::ChardevAdd { chr } => {
                let exp = self.model.expect_chardev_add(shared, chr);
                let args = socket_chardev(chr, &self.sock(chr));
                if self.ctl_expect("chardev-add", args, &exp)?.is_ok() {
                    self.model.add_chardev(chr, ChrKind::Unix);
                }
            }
            Step::ChardevRemove { chr } => {
                let exp = self.model.expect_chardev_remove(shared, chr);
                let got = self.ctl_expect("chardev-remove", json!({"id": chr}), &exp)?;
                match (&exp, got) {
                    // racing its close-action=delete removal (the only
                    // alternatives: see expect_chardev_remove): before it,
                    // the chardev is still dying; after it, both are gone
                    (Expect::OneOf(_), Err(d)) if d == format!("Chardev '{chr}' not found") => {
                        note("outcome seen: chardev-remove of a dying chardev: not found".into());
                        self.model.remove_chardev(chr);
                    }
                    (Expect::OneOf(_), Err(_)) => {
                        note("outcome seen: chardev-remove of a dying chardev: busy".into());
                    }
                    (_, Ok(_)) => {
                        // its monitor (if dying) is gone too; a client
                        // connected to a chardev without monitor is cut
                        if let Some(client) = self.model.remove_chardev(chr) {
                            self.orphan(&client)?;
                        }
                    }
                    _ => {}
                }
            }
            Step::MonitorAdd {
                id,
                chr,
                close,
                pretty,
                object,
                lists,
            } => {
                let exp = self.model.expect_monitor_add(shared, id, chr, *object);
                let mut args = json!({"id": id, "chardev": chr});
                lists.add_to(&mut args, false);
                if let Some(c) = close {
                    args["close-action"] = json!(c.name());
                }
                if *pretty {
                    args["pretty"] = json!(true);
                }
                let command = if *object {
                    args["qom-type"] = json!("monitor-qmp");
                    "object-add"
                } else {
                    "monitor-add"
                };
                if self.ctl_expect(command, args, &exp)?.is_ok() {
                    self.model.add_monitor(
                        round,
                        id,
                        chr,
                        close.unwrap_or(Close::None),
                        origin_of(*object),
                        lists,
                    );
                    let waiting = self.model.chrs[chr].client.clone();
                    if let Some(c) = waiting.and_then(|c| self.clients.get_mut(&c)) {
                        c.greeting_due = true;
                    }
                }
            }
            Step::MonitorRemove { id, object } => {
                let exp = self.model.expect_monitor_remove(shared, id, *object);
                let (command, gone) = if *object {
                    ("object-del", format!("object '{id}' not found"))
                } else {
                    ("monitor-remove", format!("No monitor with id '{id}'"))
                };
                let got = self.ctl_expect(command, json!({"id": id}), &exp)?;
                match (&exp, got) {
                    // racing its close-action=delete removal, exactly
                    // one of the two wins (see expect_monitor_remove)
                    (Expect::OneOf(_), Err(d)) if d == gone => {
                        note(format!(
                            "outcome seen: {command} of a dying monitor: not found"
                        ));
                        // the close won; the chardev goes too
                        self.model.drop_monitor(id);
                    }
                    (Expect::OneOf(_), Ok(_)) => {
                        note(format!(
                            "outcome seen: {command} of a dying monitor: removed"
                        ));
                        // the manager won: the chardev stays
                        let chr = self.model.mon(id).map(|m| m.chr.clone());
                        self.model.drop_monitor(id);
                        if let Some(c) = chr.and_then(|c| self.model.chrs.get_mut(&c)) {
                            c.dying = false;
                        }
                    }
                    (_, Ok(_)) => {
                        if let Some(client) = self.model.drop_monitor(id) {
                            self.orphan(&client)?;
                        }
                    }
                    _ => {}
                }
            }
            Step::Session { name, client } => self.session(round, name, client)?,
            Step::Connect { client, chr } => self.connect(client, chr)?,
            Step::Negotiate { client, oob } => {
                let Some(state) = self.state(client) else {
                    return Ok(());
                };
                if state == CState::Waiting {
                    return Ok(());
                }
                let reply = self.reply_for(client, "qmp_capabilities", Reply::Return(json!({})));
                let args = if *oob {
                    json!({"enable": ["oob"]})
                } else {
                    json!({})
                };
                self.send_and_drain(client, &[("qmp_capabilities", Some(args), false, reply)])?;
                let c = self.model.client_mut(client).expect("client");
                c.unread = 0;
                if c.state == CState::Negotiating {
                    c.state = CState::Command { oob: *oob };
                }
            }
            Step::Command { client, oob } => {
                let Some(state) = self.state(client) else {
                    return Ok(());
                };
                let req = match (state, oob) {
                    (CState::Waiting, _) => return Ok(()),
                    (_, false) => (
                        "query-name",
                        None,
                        false,
                        self.reply_for(client, "query-name", Reply::Return(json!({}))),
                    ),
                    (CState::Command { oob: true }, true) => (
                        "query-yank",
                        None,
                        true,
                        self.reply_for(client, "query-yank", Reply::List),
                    ),
                    _ => return Ok(()),
                };
                self.send_and_drain(client, &[req])?;
                self.model.client_mut(client).expect("client").unread = 0;
            }
            Step::Pipeline { client, n, oob } => {
                let Some(state) = self.state(client) else {
                    return Ok(());
                };
                let mut reqs = Vec::new();
                for i in 0..*n {
                    let (name, oob, reply) = match (state, oob) {
                        (CState::Waiting, _) => return Ok(()),
                        (CState::Negotiating, _) => ("query-qmp-schema", false, Reply::List),
                        (CState::Command { oob: true }, true) if i % 3 != 2 => {
                            ("query-yank", true, Reply::List)
                        }
                        (CState::Command { .. }, true) => {
                            ("query-name", false, Reply::Return(json!({})))
                        }
                        (CState::Command { .. }, false) => ("query-qmp-schema", false, Reply::List),
                    };
                    reqs.push((name, None, oob, self.reply_for(client, name, reply)));
                }
                self.send(client, &reqs, &[])?;
                self.model.client_mut(client).expect("client").unread += n;
            }
            Step::Drain { client } => {
                let Some(c) = self.clients.get_mut(client) else {
                    return Ok(());
                };
                c.drain()?;
                self.model.client_mut(client).expect("client").unread = 0;
            }
            Step::Getfd { client, fd } => self.getfd(client, fd)?,
            Step::LeaveAroundAdd {
                name,
                early,
                delay_ms,
            } => self.leave_around_add(round, name, *early, *delay_ms)?,
            Step::Garbage {
                client,
                garbage,
                resync,
                read,
            } => {
                if !matches!(
                    self.state(client),
                    Some(CState::Negotiating | CState::Command { .. })
                ) {
                    return Ok(());
                }
                let reply = self.reply_for(client, "query-name", Reply::Return(json!({})));
                let c = self.clients.get_mut(client).expect("client");
                let mut bytes = c.garbage(*garbage, *resync);
                bytes.extend(c.request("query-name", None, false, reply, false).bytes());
                if let Err(e) = c.conn.write_bytes(&bytes) {
                    return Err(Failure::new(
                        Kind::Io,
                        format!("client {client}: write: {e}"),
                    ));
                }
                if *read {
                    c.drain()?;
                    self.model.client_mut(client).expect("client").unread = 0;
                } else {
                    self.model.client_mut(client).expect("client").unread += 1;
                }
            }
            Step::Probe { client, cmd } => {
                if !matches!(
                    self.state(client),
                    Some(CState::Negotiating | CState::Command { .. })
                ) {
                    return Ok(());
                }
                let (name, args, reply) = probe(*cmd);
                let reply = self.reply_for(client, name, reply);
                self.send_and_drain(client, &[(name, args, false, reply)])?;
                self.model.client_mut(client).expect("client").unread = 0;
            }
            Step::FloodRemoved { client, delay_ms } => self.flood_removed(client, *delay_ms)?,
            Step::SelfRemove {
                client,
                before,
                after,
            } => self.self_remove(client, *before, *after)?,
            Step::Disconnect { client, abrupt } => {
                let Some(mut c) = self.clients.remove(client) else {
                    return Ok(());
                };
                if *abrupt {
                    if c.greeting_due {
                        let text = c.request("query-qmp-schema", None, false, Reply::List, true);
                        let _ = c.conn.write(&text);
                    }
                    c.conn.shutdown();
                } else {
                    c.drain()?;
                }
                drop(c);
                let chr = self.model.clients.get(client).map(|c| c.chr.clone());
                self.model.disconnect(client);
                if let Some(chr) = chr {
                    self.wait_hangup(&chr)?;
                }
            }
            Step::StopCont { stop } => {
                self.ctl_ok(if *stop { "stop" } else { "cont" }, json!({}))?;
                let event = match (*stop, self.model.running) {
                    (true, true) => Some("STOP"),
                    (false, false) => Some("RESUME"),
                    _ => None,
                };
                self.model.running = !*stop;
                if let Some(ev) = event {
                    for (name, c) in self.clients.iter_mut() {
                        if matches!(
                            self.model.clients.get(name).map(|c| c.state),
                            Some(CState::Command { .. })
                        ) {
                            c.expect_event(ev);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// QEMU notices a client's hang-up in its own time (the socket
    /// chardev's HUP source runs below the priority of the control
    /// monitor's input): wait until a listening chardev the model keeps
    /// is free again, so that a later `monitor-add` with
    /// close-action=delete meets no client, as the model says.  (When
    /// the two race, the spec lets the new monitor go with the client.)
    fn wait_hangup(&mut self, chr: &str) -> Res {
        if !self
            .model
            .chrs
            .get(chr)
            .is_some_and(|c| c.kind == ChrKind::Unix && !c.dying)
        {
            return Ok(());
        }
        self.wait_connected(chr, false)
    }

    /// Polls the socket chardev's `connected` until it is `want`.
    fn wait_connected(&mut self, chr: &str, want: bool) -> Res {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let path = format!("/chardevs/{chr}");
            let rsp = self.ctl_call("qom-get", json!({"path": path, "property": "connected"}))?;
            match rsp.get("return") {
                Some(Value::Bool(b)) if *b == want => return Ok(()),
                Some(Value::Bool(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => {
                    return Err(Failure::new(
                        Kind::State,
                        format!("{chr}: connected is not {want} after {SETTLE_LIMIT:?}: {rsp}"),
                    ))
                }
            }
        }
    }

    fn state(&self, client: &str) -> Option<CState> {
        self.model.clients.get(client).map(|c| c.state)
    }

    /// The reply to command `name` from `client` (negotiating or in
    /// command mode), `normal` where nothing stands in its way: a
    /// restricted monitor refuses what its lists do not allow (before
    /// anything else, negotiation included); in negotiation only
    /// qmp_capabilities runs; afterwards it is refused.
    fn reply_for(&self, client: &str, name: &str, normal: Reply) -> Reply {
        if !self.model.client_allows(client, name) {
            return Reply::Error(refused(name));
        }
        match (self.state(client), name == "qmp_capabilities") {
            (Some(CState::Negotiating), true) => Reply::Return(json!({})),
            (Some(CState::Negotiating), false) => Reply::NotFound(NEGOTIATE_FIRST.into()),
            (Some(CState::Command { .. }), true) => Reply::NotFound(ALREADY_NEGOTIATED.into()),
            _ => normal,
        }
    }

    /// Writes requests (owed) and `dropped` ones (replies must not come)
    /// in one write.  A failed write is judged by the reads that follow.
    fn send(
        &mut self,
        client: &str,
        reqs: &[(&str, Option<Value>, bool, Reply)],
        dropped: &[(&str, Option<Value>)],
    ) -> Res {
        let c = self.clients.get_mut(client).expect("client of the model");
        let mut text = String::new();
        for (execute, args, oob, reply) in reqs {
            text.push_str(&c.request(execute, args.clone(), *oob, reply.clone(), false));
        }
        for (execute, args) in dropped {
            text.push_str(&c.request(execute, args.clone(), false, Reply::List, true));
        }
        if let Err(e) = c.conn.write(&text) {
            return Err(Failure::new(
                Kind::Io,
                format!("client {client}: write: {e}"),
            ));
        }
        Ok(())
    }

    fn send_and_drain(&mut self, client: &str, reqs: &[(&str, Option<Value>, bool, Reply)]) -> Res {
        self.send(client, reqs, &[])?;
        self.clients.get_mut(client).expect("client").drain()
    }

    /// The monitor of this client was removed by its lane (or its
    /// chardev): QEMU must close the connection on a message boundary.
    fn orphan(&mut self, client: &str) -> Res {
        if let Some(mut c) = self.clients.remove(client) {
            c.read_to_close(false)?;
        }
        Ok(())
    }

    fn connect(&mut self, client: &str, chr: &str) -> Res {
        if self.clients.contains_key(client) {
            return Ok(());
        }
        match self.model.chrs.get(chr) {
            Some(c) if c.kind != ChrKind::Unix || c.client.is_some() => return Ok(()),
            Some(_) => {}
            None => {
                // removed (or never there): nobody may answer
                return match UnixStream::connect(self.sock(chr)) {
                    Ok(_) => Err(Failure::new(
                        Kind::State,
                        format!("connected to {chr}, a chardev that is gone"),
                    )),
                    Err(_) => Ok(()),
                };
            }
        }
        let stream = UnixStream::connect(self.sock(chr))
            .map_err(|e| Failure::new(Kind::Io, format!("connect to {chr}: {e}")))?;
        self.model.connect(client, chr);
        let due = self.model.chrs[chr].monitor.is_some();
        if !due {
            // no greeting tells when QEMU has accepted; wait_hangup
            // relies on it having done so
            self.wait_connected(chr, true)?;
        }
        let track = self.model.lane == 0;
        self.clients.insert(
            client.to_owned(),
            Client::new(
                Conn::new(stream, format!("client {client}")),
                client,
                due,
                track,
            ),
        );
        Ok(())
    }

    /// A socketpair end passed with getfd and a socket chardev `name`
    /// on it, made on the control monitor; returns the client's end.
    fn socketpair_chardev(&mut self, name: &str) -> Result<OwnedFd, Failure> {
        let (ours, theirs) = super::common::socketpair();
        self.ctl_seq += 1;
        let id = format!("ctl{}-{}", self.model.lane, self.ctl_seq);
        let msg = json!({"execute": "getfd", "arguments": {"fdname": name}, "id": id});
        super::common::send_fd(
            self.ctl.raw_fd(),
            format!("{msg}\n").as_bytes(),
            theirs.as_raw_fd(),
        );
        drop(theirs);
        let rsp = self.ctl.wait_reply(&id, ctl_event)?;
        if rsp.get("return") != Some(&json!({})) {
            return Err(wrong(format!("getfd {name} on the control monitor: {rsp}")));
        }
        self.ctl_ok("chardev-add", fd_chardev(name, name))?;
        self.model.add_chardev(name, ChrKind::Fd);
        Ok(ours)
    }

    /// The systemd-vmspawn flow: a socketpair end passed with getfd,
    /// a socket chardev on it, a one-shot monitor.
    fn session(&mut self, round: u32, name: &str, client: &str) -> Res {
        let ours = self.socketpair_chardev(name)?;
        self.ctl_ok(
            "monitor-add",
            json!({"id": name, "chardev": name, "close-action": "delete"}),
        )?;
        self.model.add_one_shot(round, name);
        self.model.connect(client, name);
        let stream = UnixStream::from(ours);
        let track = self.model.lane == 0;
        self.clients.insert(
            client.to_owned(),
            Client::new(
                Conn::new(stream, format!("client {client}")),
                client,
                true,
                track,
            ),
        );
        Ok(())
    }

    fn getfd(&mut self, client: &str, fd: &str) -> Res {
        if !matches!(self.state(client), Some(CState::Command { .. })) {
            return Ok(());
        }
        let name = std::ffi::CString::new(fd).expect("fd name");
        // SAFETY: plain syscall with a C string.
        let memfd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(
            memfd >= 0,
            "memfd_create: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd.
        let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
        if !self.model.client_allows(client, "getfd") {
            // refused: sent without the fd, which QEMU's socket chardev
            // would keep until the next fd or the end of the connection
            let reply = Reply::Error(refused("getfd"));
            return self.send_and_drain(
                client,
                &[("getfd", Some(json!({"fdname": fd})), false, reply)],
            );
        }
        let c = self.clients.get_mut(client).expect("client");
        let text = c.request(
            "getfd",
            Some(json!({"fdname": fd})),
            false,
            Reply::Return(json!({})),
            false,
        );
        super::common::send_fd(c.conn.raw_fd(), text.as_bytes(), memfd.as_raw_fd());
        drop(memfd);
        let mon = self
            .model
            .client_mon(client)
            .expect("monitor of a command-mode client")
            .id
            .clone();
        self.model.fds.insert(fd.to_owned(), mon);
        c.drain()?;
        self.model.client_mut(client).expect("client").unread = 0;
        Ok(())
    }

    /// A socketpair chardev without monitor whose client leaves around a
    /// monitor-add close-action=delete.  Exactly two outcomes (docs/contract.md,
    /// close-action and monitor-add's errors): the
    /// hang-up came first, and the add is refused with the defunct error
    /// (nothing created, the chardev stays); or the add came first, and
    /// the new monitor is added and then gone with its chardev.
    fn leave_around_add(&mut self, round: u32, name: &str, early: bool, delay_ms: u32) -> Res {
        let ours = self.socketpair_chardev(name)?;
        let pause = || std::thread::sleep(Duration::from_millis(delay_ms as u64));
        let args = json!({"id": name, "chardev": name, "close-action": "delete"});
        let rsp = if early {
            drop(ours);
            pause();
            self.ctl_call("monitor-add", args.clone())?
        } else {
            self.ctl_seq += 1;
            let id = format!("ctl{}-{}", self.model.lane, self.ctl_seq);
            let msg = json!({"execute": "monitor-add", "arguments": args, "id": id});
            self.ctl
                .write(&format!("{msg}\n"))
                .map_err(|e| Failure::new(Kind::Io, format!("monitor-add {name}: {e}")))?;
            pause();
            drop(ours);
            self.ctl.wait_reply(&id, ctl_event)?
        };
        let defunct = format!(
            "Chardev '{name}' has lost its client and cannot get another one; close-action \
             'delete' needs a client"
        );
        if rsp.get("return") == Some(&json!({})) {
            note("outcome seen: monitor-add around its client's leaving added, then gone".into());
            // added, and its client is gone: it goes with its chardev
            self.model.add_one_shot(round, name);
            self.model.start_dying(name);
        } else if rsp["error"]["class"] == "GenericError" && rsp["error"]["desc"] == defunct {
            // refused: the chardev stays, without monitor
            note("outcome seen: monitor-add around its client's leaving refused as defunct".into());
        } else {
            return Err(wrong(format!(
                "monitor-add close-action=delete of {name} around its client's leaving: {rsp}, \
                 where either {{}} or the error {defunct:?} was expected"
            )));
        }
        Ok(())
    }

    fn self_remove(&mut self, client: &str, before: u32, after: u32) -> Res {
        if !matches!(self.state(client), Some(CState::Command { .. })) {
            return Ok(());
        }
        let id = self.model.client_mon(client).expect("monitor").id.clone();
        let name_reply = self.reply_for(client, "query-name", Reply::Return(json!({})));
        let mut reqs: Vec<(&str, Option<Value>, bool, Reply)> = (0..before)
            .map(|_| ("query-name", None, false, name_reply.clone()))
            .collect();
        reqs.push((
            "monitor-remove",
            Some(json!({"id": id})),
            false,
            self.reply_for(client, "monitor-remove", Reply::Return(json!({}))),
        ));
        if !self.model.client_allows(client, "monitor-remove") {
            // refused: the session goes on, and answers what follows
            reqs.extend((0..after).map(|_| ("query-name", None, false, name_reply.clone())));
            return self.send_and_drain(client, &reqs);
        }
        let dropped: Vec<(&str, Option<Value>)> =
            (0..after).map(|_| ("query-name", None)).collect();
        self.send(client, &reqs, &dropped)?;
        let mut c = self.clients.remove(client).expect("client");
        self.model.self_removed(client);
        c.read_to_close(true)
    }

    /// A writer thread floods the client's monitor until the connection
    /// breaks (bounded); the control monitor removes the monitor.
    fn flood_removed(&mut self, client: &str, delay_ms: u32) -> Res {
        if !matches!(self.state(client), Some(CState::Command { .. })) {
            return Ok(());
        }
        let oob = matches!(self.state(client), Some(CState::Command { oob: true }));
        let id = self.model.client_mon(client).expect("monitor").id.clone();
        let refusal = |name: &str| (!self.model.client_allows(client, name)).then(|| refused(name));
        let (yank, name) = (refusal("query-yank"), refusal("query-name"));
        let c = self.clients.get_mut(client).expect("client");
        let prefix = format!("{}-flood-", c.name);
        c.flood = Some(Flood {
            prefix: prefix.clone(),
            yank,
            name,
        });
        let mut out = c.conn.writer();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut batch = String::new();
                for _ in 0..16 {
                    n += 1;
                    if oob && n % 3 != 0 {
                        batch.push_str(&format!(
                            "{{\"exec-oob\": \"query-yank\", \"id\": \"{prefix}{n}y\"}}\n"
                        ));
                    } else {
                        batch.push_str(&format!(
                            "{{\"execute\": \"query-name\", \"id\": \"{prefix}{n}n\"}}\n"
                        ));
                    }
                }
                if out.write_all(batch.as_bytes()).is_err() {
                    break;
                }
            }
            n
        });
        std::thread::sleep(Duration::from_millis(delay_ms as u64));
        let removed = self.ctl_ok("monitor-remove", json!({"id": id}));
        if let Some(client) = self.model.drop_monitor(&id) {
            let mut c = self.clients.remove(&client).expect("client");
            // read concurrently with the writer: QEMU must close
            let read = c.read_to_close(false);
            c.conn.shutdown();
            let _ = writer.join();
            removed?;
            read?;
        }
        Ok(())
    }

    /// Takes every object of the lane down, checking each step: clients
    /// leave cleanly, monitors and chardevs are removed.
    pub fn teardown(&mut self, round: u32, shared: &Shared) -> Res {
        let clients: Vec<String> = self.clients.keys().cloned().collect();
        for client in clients {
            self.run(
                round,
                shared,
                &Step::Disconnect {
                    client,
                    abrupt: false,
                },
            )?;
        }
        self.settle()?;
        let mons: Vec<String> = self
            .model
            .mons
            .iter()
            .filter(|m| !m.hmp)
            .map(|m| m.id.clone())
            .collect();
        for id in mons {
            self.run(round, shared, &Step::MonitorRemove { id, object: false })?;
        }
        self.settle()?;
        let chrs: Vec<String> = self.model.chrs.keys().cloned().collect();
        for chr in chrs {
            self.run(round, shared, &Step::ChardevRemove { chr })?;
        }
        self.settle()
    }
}
