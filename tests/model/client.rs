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
    /// A return value that is an object.
    Object,
    /// A return value that is a string.
    Str,
    /// A CommandNotFound error with this text.
    NotFound(String),
    /// A GenericError with this text.
    Error(String),
}

/// How long a removed monitor's connection may stay open once the
/// client got everything it was owed: QEMU must close it (docs/contract.md:
/// the client is disconnected), and this is the bound of that wait.
const EOF_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Malformed input for the clients to send: (bytes, the error replies
/// they get before the resync byte, the partial token the lexer holds
/// when the resync byte comes).  QEMU's lexer (qobject/json-lexer.c)
/// needs the byte after a number or keyword to end it; its streamer
/// (json-streamer.c) parses each top-level value as soon as it is
/// complete (a closing `}` or `]` with nothing open is a value on its
/// own), and keeps the tokens of an object or array still open.
pub const GARBAGE: &[(&[u8], &[&str], &str)] = &[
    (
        b"1}",
        &[NOT_OBJECT, "JSON parse error, expecting value"],
        "",
    ),
    (b"{\"execute\":", &[], ""),
    (b"{\"execute\": \"query-name\"", &[], ""),
    (b"{\"execute\": \"qu", &[], "\"qu"),
    (b"\xff", &["JSON parse error, stray '\u{fffd}'"], ""),
    (b"]", &["JSON parse error, expecting value"], ""),
    (b"}", &["JSON parse error, expecting value"], ""),
    (b"1", &[NOT_OBJECT], ""),
    (b"[1, {\"execute\": \"query-name\"}]", &[NOT_OBJECT], ""),
    (b"\"abc\"", &[NOT_OBJECT], ""),
    (b"nul", &["JSON parse error, invalid keyword 'nul'"], ""),
];

const NOT_OBJECT: &str = "QMP input must be a JSON object";

/// Bytes that put QEMU's JSON parser back into its start state whatever
/// came before (the lexer's error recovery ends at an ASCII control byte
/// other than \t \r \n, and at 0xfe / 0xff; in its start state each is
/// a lexical error, which empties the streamer), as tests/input_fuzz
/// resynchronises: (the byte, how QEMU's error text shows it).  Each
/// gets one error reply, "stray" with the partial token before it.
pub const RESYNC: &[(u8, &str)] = &[
    (0x00, ""),
    (0x01, "\u{1}"),
    (0x1b, "\u{1b}"),
    (0xfe, "\u{fffd}"),
    (0xff, "\u{fffd}"),
];

/// The error replies GARBAGE[g] then RESYNC[r] get, in order.
pub fn garbage_errors(g: usize, r: usize) -> Vec<String> {
    let (_, errors, pending) = GARBAGE[g];
    let mut v: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    v.push(format!(
        "JSON parse error, stray '{pending}{}'",
        RESYNC[r].1
    ));
    v
}

/// The probe commands: (command, arguments, the reply in command mode on
/// a monitor that allows it).
pub fn probe(i: usize) -> (&'static str, Option<Value>, Reply) {
    match i % PROBES {
        0 => ("query-name", None, Reply::Return(json!({}))),
        1 => ("query-version", None, Reply::Object),
        2 => (
            "human-monitor-command",
            Some(json!({"command-line": "info version"})),
            Reply::Str,
        ),
        3 => (
            "x-nosuch",
            None,
            Reply::NotFound("The command x-nosuch has not been found".into()),
        ),
        4 => ("query-status", None, Reply::Object),
        _ => ("query-commands", None, Reply::List),
    }
}

pub const PROBES: usize = 6;

/// What a flood's requests must get: None a success, Some an error text.
#[derive(Debug, Clone)]
pub struct Flood {
    pub prefix: String,
    /// exec-oob query-yank (ids ending in `y`)
    pub yank: Option<String>,
    /// query-name (ids ending in `n`)
    pub name: Option<String>,
}

pub const NEGOTIATE_FIRST: &str = "Expecting capabilities negotiation with 'qmp_capabilities'";
pub const ALREADY_NEGOTIATED: &str =
    "Capabilities negotiation is already complete, command ignored";

#[derive(Debug)]
struct Owed {
    /// None: an error reply without id (to malformed input)
    id: Option<String>,
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
    /// their replies must be as it says, each at most once.
    pub flood: Option<Flood>,
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
                id: Some(id),
                reply,
                oob,
                n: self.next,
                caps: execute == "qmp_capabilities",
            });
        }
        format!("{msg}\n")
    }

    /// The bytes of GARBAGE[g] and RESYNC[r], their error replies
    /// registered as owed (in band, without id).
    pub fn garbage(&mut self, g: usize, r: usize) -> Vec<u8> {
        for e in garbage_errors(g, r) {
            self.owed.push_back(Owed {
                id: None,
                reply: Reply::Error(e),
                oob: false,
                n: self.next + 1,
                caps: false,
            });
        }
        let mut bytes = GARBAGE[g].0.to_vec();
        bytes.push(RESYNC[r].0);
        bytes
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
        if msg.get("id").is_none() {
            return self.absorb_anonymous(msg);
        }
        let Some(id) = msg.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(self.fail(
                Kind::StrayReply,
                format!("a reply without the id it was sent with: {msg}"),
            ));
        };
        if let Some(f) = self.flood.as_ref().filter(|f| id.starts_with(&f.prefix)) {
            let want = if id.ends_with('y') { &f.yank } else { &f.name };
            let ok = match want {
                None => msg.get("return").is_some(),
                Some(desc) => {
                    msg["error"]["class"] == "GenericError" && msg["error"]["desc"] == *desc
                }
            };
            if !ok {
                return Err(self.fail(
                    Kind::WrongReply,
                    format!(
                        "flood request {id}: {} where {} was expected",
                        cut_msg(&msg),
                        want.as_deref().unwrap_or("a success")
                    ),
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
        let Some(pos) = self
            .owed
            .iter()
            .position(|o| o.id.as_deref() == Some(id.as_str()))
        else {
            return Err(self.fail(
                Kind::StrayReply,
                format!("a reply to a request it never sent: {msg}"),
            ));
        };
        let o = &self.owed[pos];
        if !o.oob {
            if let Some(first) = self.owed.iter().find(|o| !o.oob) {
                if first.id.as_deref() != Some(id.as_str()) {
                    return Err(self.fail(
                        Kind::StrayReply,
                        format!(
                            "in-band reply {id} before the reply {}: {}",
                            first.what(),
                            cut_msg(&msg)
                        ),
                    ));
                }
            }
        }
        if !o.reply.fits(&msg) {
            return Err(self.fail(
                Kind::WrongReply,
                format!("reply {} where {:?} was expected", cut_msg(&msg), o.reply),
            ));
        }
        self.check_fence(o.n, &msg)?;
        if o.caps {
            self.command_mode = true;
        }
        self.answered.insert(id);
        self.owed.remove(pos);
        Ok(())
    }

    /// An error reply without id: the first in-band reply owed must be
    /// one to malformed input, with this text.
    fn absorb_anonymous(&mut self, msg: Value) -> Res {
        let Some(pos) = self.owed.iter().position(|o| !o.oob) else {
            return Err(self.fail(
                Kind::StrayReply,
                format!("a reply without id, none owed: {msg}"),
            ));
        };
        let o = &self.owed[pos];
        if o.id.is_some() {
            return Err(self.fail(
                Kind::StrayReply,
                format!(
                    "a reply without id where the reply {} was due: {msg}",
                    o.what()
                ),
            ));
        }
        if !o.reply.fits(&msg) {
            return Err(self.fail(
                Kind::WrongReply,
                format!("reply {} where {:?} was expected", cut_msg(&msg), o.reply),
            ));
        }
        self.check_fence(o.n, &msg)?;
        self.owed.remove(pos);
        Ok(())
    }

    /// An expected event must come before the reply to request `n`, if
    /// that was sent after the event was emitted.
    fn check_fence(&self, n: u32, msg: &Value) -> Res {
        if let Some(exp) = &self.expected_events {
            if let Some((name, fence)) = exp.front() {
                if n >= *fence {
                    return Err(self.fail(
                        Kind::Event,
                        format!(
                            "no {name} event before the reply to a request sent after it was \
                             emitted: {}",
                            cut_msg(msg)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads until the greeting (if due) and every owed reply are in.
    pub fn drain(&mut self) -> Res {
        while self.owes() {
            match self.conn.recv(READ_LIMIT)? {
                Incoming::Msg(m) => self.absorb(m)?,
                Incoming::Closed => {
                    let what = match self.owed.front() {
                        Some(o) => format!("the reply {}", o.what()),
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
            // Once nothing is owed, the end must come: QEMU that waits
            // for the client to close first fails (bounded wait).
            let quiet = !self.owes();
            let limit = if quiet { EOF_LIMIT } else { READ_LIMIT };
            let got = self.conn.recv(limit);
            if quiet && matches!(&got, Err(f) if f.kind == Kind::Timeout) {
                return Err(self.fail(
                    Kind::Timeout,
                    format!(
                        "owed nothing, got no EOF within {EOF_LIMIT:?} of {} (QEMU must \
                         disconnect a removed monitor's client)",
                        if complete {
                            "its monitor's self-removal"
                        } else {
                            "its monitor's removal"
                        }
                    ),
                ));
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
                        "its monitor removed itself and closed without the reply {} ({} owed)",
                        o.what(),
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

impl Owed {
    fn what(&self) -> String {
        match &self.id {
            Some(id) => format!("to {id}"),
            None => format!("{:?} to malformed input", self.reply),
        }
    }
}

impl Reply {
    /// Does `msg` answer as this says?
    fn fits(&self, msg: &Value) -> bool {
        let err = |class: &str, desc: &str| {
            msg.get("return").is_none()
                && msg["error"]["class"] == class
                && msg["error"]["desc"] == desc
        };
        match self {
            Reply::Return(v) => msg.get("return") == Some(v),
            Reply::List => msg.get("return").is_some_and(Value::is_array),
            Reply::Object => msg.get("return").is_some_and(Value::is_object),
            Reply::Str => msg.get("return").is_some_and(Value::is_string),
            Reply::NotFound(desc) => err("CommandNotFound", desc),
            Reply::Error(desc) => err("GenericError", desc),
        }
    }
}

fn cut_msg(msg: &Value) -> String {
    super::conn::cut(&msg.to_string())
}
