// SPDX-License-Identifier: GPL-2.0-or-later
//! A client of a monitor as the tester sees it: its connection, the
//! replies it is owed, and the checks on everything it reads (greeting
//! first, replies only to its own requests and in order, events only in
//! command mode and, for the manager lane, exactly the expected ones).

use std::collections::{HashSet, VecDeque};

use serde_json::{json, Value};

use super::{
    conn::{Conn, Incoming, READ_LIMIT},
    failure::{note, tolerated, Failure, Kind, Res},
};

/// What a request must be answered with.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Exactly this return value.
    Return(Value),
    /// A return value that is an array.
    List,
    /// A CommandNotFound error with this text.
    NotFound(&'static str),
}

/// How long a removed monitor's connection may stay open once the
/// client got everything it was owed.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

pub const NEGOTIATE_FIRST: &str = "Expecting capabilities negotiation with 'qmp_capabilities'";
pub const ALREADY_NEGOTIATED: &str =
    "Capabilities negotiation is already complete, command ignored";

#[derive(Debug)]
struct Owed {
    id: String,
    reply: Reply,
    oob: bool,
    /// the request number (for the event fence)
    n: u32,
    /// a qmp_capabilities: command mode once it succeeded
    caps: bool,
}

pub struct Client {
    pub conn: Conn,
    pub name: String,
    /// A monitor is attached, so a greeting is (or was) due.
    pub greeting_due: bool,
    pub greeted: bool,
    /// Command mode as QEMU sees it, when the messages read so far were
    /// written.
    pub command_mode: bool,
    owed: VecDeque<Owed>,
    /// ids sent whose reply must never come (after a self-removal)
    dropped: HashSet<String>,
    answered: HashSet<String>,
    next: u32,
    /// Events the client must see, in order, before the reply to any
    /// request numbered `fence` or later.  None: not tracked (the
    /// events come from another lane).
    pub expected_events: Option<VecDeque<(String, u32)>>,
    /// Requests with ids of this prefix were sent by a flood writer:
    /// their replies must be successes, each at most once.
    pub flood: Option<String>,
}

impl Client {
    pub fn new(conn: Conn, name: &str, greeting_due: bool, track_events: bool) -> Self {
        Client {
            conn,
            name: name.to_owned(),
            greeting_due,
            greeted: false,
            command_mode: false,
            owed: VecDeque::new(),
            dropped: HashSet::new(),
            answered: HashSet::new(),
            next: 0,
            expected_events: track_events.then(VecDeque::new),
            flood: None,
        }
    }

    pub fn owes(&self) -> bool {
        !self.owed.is_empty() || (self.greeting_due && !self.greeted)
    }

    /// The text of a request, registered as owed (or as one whose reply
    /// must not come, when `dropped`).
    pub fn request(
        &mut self,
        execute: &str,
        args: Option<Value>,
        oob: bool,
        reply: Reply,
        dropped: bool,
    ) -> String {
        self.next += 1;
        let id = format!("{}-{}", self.name, self.next);
        let mut msg = if oob {
            json!({"exec-oob": execute})
        } else {
            json!({"execute": execute})
        };
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        msg["id"] = json!(id);
        if dropped {
            self.dropped.insert(id.clone());
        } else {
            self.owed.push_back(Owed {
                id,
                reply,
                oob,
                n: self.next,
                caps: execute == "qmp_capabilities",
            });
        }
        format!("{msg}\n")
    }

    /// The number the next request will get.
    pub fn next_request(&self) -> u32 {
        self.next + 1
    }

    fn fail(&self, kind: Kind, what: String) -> Failure {
        Failure::new(kind, format!("client {}: {what}", self.name))
    }

    /// Checks one message read from the connection.
    fn absorb(&mut self, msg: Value) -> Res {
        if msg.get("QMP").is_some() {
            if !self.greeting_due {
                return Err(self.fail(
                    Kind::Greeting,
                    format!("a greeting on a chardev without monitor: {msg}"),
                ));
            }
            if self.greeted {
                return Err(self.fail(Kind::Greeting, format!("a second greeting: {msg}")));
            }
            if msg["QMP"]["capabilities"] != json!(["oob"]) {
                return Err(self.fail(
                    Kind::Greeting,
                    format!("a socket monitor must offer oob: {msg}"),
                ));
            }
            self.greeted = true;
            return Ok(());
        }
        if !self.greeted {
            return Err(self.fail(
                Kind::Greeting,
                format!("received before the greeting: {msg}"),
            ));
        }
        if let Some(ev) = msg.get("event").and_then(Value::as_str) {
            if !self.command_mode {
                return Err(self.fail(
                    Kind::Event,
                    format!("an event in capability negotiation mode: {msg}"),
                ));
            }
            if ev != "STOP" && ev != "RESUME" {
                return Err(self.fail(Kind::Event, format!("an event nobody caused: {msg}")));
            }
            if let Some(exp) = &mut self.expected_events {
                match exp.pop_front() {
                    Some((name, _)) if name == ev => {}
                    other => {
                        return Err(self.fail(
                            Kind::Event,
                            format!("event {msg} where {other:?} was expected"),
                        ));
                    }
                }
            }
            return Ok(());
        }
        let Some(id) = msg.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(self.fail(
                Kind::StrayReply,
                format!("a reply without the id it was sent with: {msg}"),
            ));
        };
        if self.flood.as_deref().is_some_and(|p| id.starts_with(p)) {
            if msg.get("return").is_none() {
                return Err(self.fail(
                    Kind::WrongReply,
                    format!("a flood request failed: {}", cut_msg(&msg)),
                ));
            }
            if !self.answered.insert(id.clone()) {
                return Err(self.fail(
                    Kind::StrayReply,
                    format!("a second reply to {id}: {}", cut_msg(&msg)),
                ));
            }
            return Ok(());
        }
        if self.dropped.contains(&id) {
            return Err(self.fail(
                Kind::StrayReply,
                format!("a reply to a request sent after its monitor removed itself: {msg}"),
            ));
        }
        if self.answered.contains(&id) {
            return Err(self.fail(Kind::StrayReply, format!("a second reply to {id}: {msg}")));
        }
        let Some(pos) = self.owed.iter().position(|o| o.id == id) else {
            return Err(self.fail(
                Kind::StrayReply,
                format!("a reply to a request it never sent: {msg}"),
            ));
        };
        let o = &self.owed[pos];
        if !o.oob {
            if let Some(first) = self.owed.iter().find(|o| !o.oob) {
                if first.id != id {
                    return Err(self.fail(
                        Kind::StrayReply,
                        format!(
                            "in-band reply {id} before the reply to {}: {}",
                            first.id,
                            cut_msg(&msg)
                        ),
                    ));
                }
            }
        }
        let ok = match &o.reply {
            Reply::Return(v) => msg.get("return") == Some(v),
            Reply::List => msg.get("return").is_some_and(Value::is_array),
            Reply::NotFound(desc) => {
                msg["error"]["class"] == "CommandNotFound" && msg["error"]["desc"] == *desc
            }
        };
        if !ok {
            return Err(self.fail(
                Kind::WrongReply,
                format!("reply {} where {:?} was expected", cut_msg(&msg), o.reply),
            ));
        }
        if let Some(exp) = &self.expected_events {
            if let Some((name, fence)) = exp.front() {
                if o.n >= *fence {
                    return Err(self.fail(
                        Kind::Event,
                        format!(
                            "no {name} event before the reply to a request sent after it was \
                             emitted: {}",
                            cut_msg(&msg)
                        ),
                    ));
                }
            }
        }
        if o.caps {
            self.command_mode = true;
        }
        self.answered.insert(id);
        self.owed.remove(pos);
        Ok(())
    }

    /// Reads until the greeting (if due) and every owed reply are in.
    pub fn drain(&mut self) -> Res {
        while self.owes() {
            match self.conn.recv(READ_LIMIT)? {
                Incoming::Msg(m) => self.absorb(m)?,
                Incoming::Closed => {
                    let what = match self.owed.front() {
                        Some(o) => format!("the reply to {}", o.id),
                        None => "the greeting".to_owned(),
                    };
                    return Err(self.fail(
                        Kind::MissingReply,
                        format!("connection closed before {what}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads until QEMU closes the connection: after its monitor was
    /// removed by someone else (replies may be lost, not garbled), or
    /// after a self-removal (`complete`: nothing owed may be lost).
    pub fn read_to_close(&mut self, complete: bool) -> Res {
        // The connection is over either way, so a run can go on after a
        // failure here that QMH_TOLERATE names (to look past a known bug).
        self.read_to_close_strict(complete).or_else(|f| {
            if tolerated(f.kind) {
                note(format!("tolerated: {f}"));
                Ok(())
            } else {
                Err(f)
            }
        })
    }

    fn read_to_close_strict(&mut self, complete: bool) -> Res {
        loop {
            // Once nothing is owed, the end should come at once; QEMU
            // that waits for the client to close first is noted, and the
            // client closes (waiting longer would only slow the run).
            let quiet = !self.owes();
            let limit = if quiet { QUIET } else { READ_LIMIT };
            let got = self.conn.recv(limit);
            if quiet && matches!(&got, Err(f) if f.kind == Kind::Timeout) {
                note(format!(
                    "after {}, a client owed nothing gets no EOF within {QUIET:?} (QEMU waits for \
                     the client to close)",
                    if complete {
                        "a self-removal"
                    } else {
                        "monitor-remove or chardev-remove"
                    }
                ));
                return Ok(());
            }
            let got = got.map_err(|f| {
                if f.kind == Kind::Timeout {
                    self.fail(
                        Kind::Timeout,
                        format!("not disconnected by the monitor's removal ({})", f.detail),
                    )
                } else {
                    f
                }
            })?;
            match got {
                Incoming::Msg(m) => self.absorb(m)?,
                Incoming::Closed => break,
            }
        }
        if complete {
            if let Some(o) = self.owed.front() {
                return Err(self.fail(
                    Kind::MissingReply,
                    format!(
                        "its monitor removed itself and closed without the reply to {} ({} owed)",
                        o.id,
                        self.owed.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Expects these events (manager lane): before any reply to a
    /// request sent from now on.
    pub fn expect_event(&mut self, name: &str) {
        let fence = self.next_request();
        if let Some(exp) = &mut self.expected_events {
            exp.push_back((name.to_owned(), fence));
        }
    }
}

fn cut_msg(msg: &Value) -> String {
    super::conn::cut(&msg.to_string())
}
