// SPDX-License-Identifier: GPL-2.0-or-later
//! The byte streams: tagged well-formed requests, each with a unique
//! id and a known outcome, between random and grammar-mutated garbage.
//!
//! QEMU's JSON lexer (qobject/json-lexer.c) leaves error recovery, and
//! its streamer (json-streamer.c) drops every token it holds, at an
//! ASCII control byte other than `\t`, `\r`, `\n`, or at 0xfe / 0xff:
//! in every lexer state such a byte is a lexical error (after a number
//! or keyword it ends the token first), and the error resets the
//! streamer's brace and bracket counts.  So one of those bytes before
//! a tagged request puts the parser back into its start state whatever
//! garbage came before (a newline does not: inside an open object it is
//! whitespace, and the request after it is swallowed; checked by
//! experiment on 10.2).  The price is one error reply per resync.

use serde_json::{json, Value};

use crate::common::Rng;

/// What a tagged request must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Return,
    /// An error of this class.
    Error(&'static str),
}

/// A tagged request in a stream.
#[derive(Clone, Debug)]
pub struct Tag {
    /// The unique key inside the id (see `tag_key`).
    pub key: String,
    /// The "id" member as sent: the reply must echo exactly this.
    pub id: Value,
    /// Sent with exec-oob: its reply may overtake in-band replies.
    pub oob: bool,
    pub want: Want,
    /// The command, for messages.
    pub what: &'static str,
    /// Offset just after the request's last byte in the stream.
    pub end: usize,
}

/// The bytes of one phase of a session, and what they ask for.
#[derive(Default, Clone)]
pub struct Stream {
    pub bytes: Vec<u8>,
    pub tags: Vec<Tag>,
    /// Ids put into garbage (which may or may not reach QEMU intact):
    /// a reply carrying one of them is for this session only.
    pub garbage_ids: Vec<String>,
    /// Names of the garbage generators used, for the statistics.
    pub kinds: Vec<&'static str>,
    /// Offsets where a session that ends early likes to end: after the
    /// first, a middle and the last value of a lookahead run, where the
    /// last byte fed the parser two tokens at once.
    pub marks: Vec<usize>,
}

/// The key of a tag or garbage id as sent: a string, or the "fz" member
/// of an object, or the first element of an array.
pub fn tag_key(id: &Value) -> Option<&str> {
    match id {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("fz")?.as_str(),
        Value::Array(a) => a.first()?.as_str(),
        _ => None,
    }
}

/// Bytes that put QEMU's JSON parser back into its start state (see the
/// module comment).  Each costs one error reply.
const RESYNC: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x07, 0x08, 0x0b, 0x0c, 0x0e, 0x1b, 0x1f, 0xfe, 0xff,
];

/// In-band tagged requests after negotiation: (command, arguments, outcome).
/// Side-effect free, so that what runs is known.
const COMMANDS: &[(&str, Option<&str>, Want)] = &[
    ("query-name", None, Want::Return),
    ("query-version", None, Want::Return),
    ("query-status", None, Want::Return),
    ("query-monitors", None, Want::Return),
    ("query-chardev", None, Want::Return),
    ("qom-list", Some(r#"{"path": "/"}"#), Want::Return),
    (
        "human-monitor-command",
        Some(r#"{"command-line": "info version"}"#),
        Want::Return,
    ),
    (
        "query-name",
        Some(r#"{"bogus": 1}"#),
        Want::Error("GenericError"),
    ),
    (
        "qom-list",
        Some(r#"{"path": 7}"#),
        Want::Error("GenericError"),
    ),
    (
        "qmh-fuzz-no-such-command",
        None,
        Want::Error("CommandNotFound"),
    ),
    ("qmp_capabilities", None, Want::Error("CommandNotFound")),
];

/// exec-oob tagged requests (OOB negotiated): run at once in the
/// monitor's I/O thread.  Only the migration and yank commands allow
/// OOB in 10.2; `query-yank` and a `yank` of nothing succeed.
const OOB_COMMANDS: &[(&str, Option<&str>, Want)] = &[
    ("query-yank", None, Want::Return),
    ("yank", Some(r#"{"instances": []}"#), Want::Return),
    (
        "yank",
        Some(r#"{"instances": [{"type": "chardev", "id": "qmh-fuzz-none"}]}"#),
        Want::Error("DeviceNotFound"),
    ),
    ("migrate-pause", None, Want::Error("GenericError")),
    ("qmp_capabilities", None, Want::Error("GenericError")),
    ("query-name", None, Want::Error("GenericError")),
    (
        "qmh-fuzz-no-such-command",
        None,
        Want::Error("CommandNotFound"),
    ),
];

/// Harmless requests that garbage is made from (`@ID@` is replaced by a
/// garbage id).  No command in them, or one or two bytes away from
/// them, changes anything in QEMU.
const TEMPLATES: &[&str] = &[
    r#"{"execute": "query-name", "id": "@ID@"}"#,
    r#"{"execute": "query-version"}"#,
    r#"{"execute": "query-status", "id": "@ID@"}"#,
    r#"{"execute": "qom-list", "arguments": {"path": "/machine"}, "id": "@ID@"}"#,
    r#"{"execute": "query-name", "arguments": {"x": [1, 2.5, -3e7, true, false, null, "s", {"k": []}]}, "id": "@ID@"}"#,
    r#"{'execute': 'query-status', 'id': '@ID@'}"#,
    r#"{"id": {"fz": "@ID@", "n": [1, 2]}, "execute": "query-name"}"#,
    r#"{"execute": "query-name", "arguments": {"s": "a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"}, "id": "@ID@"}"#,
];
/// Templates only sent after negotiation.
const TEMPLATES_NEGOTIATED: &[&str] =
    &[r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "@ID@"}"#];
/// Templates only sent with OOB negotiated.
const TEMPLATES_OOB: &[&str] = &[
    r#"{"exec-oob": "migrate-pause", "id": "@ID@"}"#,
    r#"{"exec-oob": "query-yank", "id": "@ID@"}"#,
    r#"{"exec-oob": "query-name", "id": "@ID@"}"#,
    r#"{"exec-oob": "qmp_capabilities"}"#,
];

/// JSON values that end on a lookahead byte (the lexer only knows the
/// token is complete when it sees the next byte), and what may follow.
const LOOKAHEAD_VALUES: &[&str] = &[
    "1", "0", "-1", "12345", "1.5", "1e5", "-0.0e-1", "true", "false", "null", "tru", "x",
];
const LOOKAHEAD_NEXT: &[&[u8]] = &[
    b"}", b"]", b",", b":", b"{", b"[", b"\"", b"'", b"x", b" ", b"\x01", b"\xff", b"\xc3",
];
const LOOKAHEAD_COUNTS: &[usize] = &[1, 2, 3, 7, 8, 9, 16, 100, 500, 1000, 2000, 3000];

/// Bytes that are not valid in QMP input or not valid UTF-8.
const BAD_BYTES: &[&[u8]] = &[
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\x7f",
    b"\x80",
    b"\xbf",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"\xf5",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
];

/// JSON-ish tokens the mutator inserts.
const TOKENS: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "'", "\\", "1", "-", "1e999", "true", "null", "\"x\"",
    "\\u", "\\ud800", "\\u0000", " ", "\n",
];
/// Bytes the mutator writes over others.
const SPECIAL: &[u8] = b"\"\\{}[],: \n\t\r\x00\x01\xff\xc3'1e-";

/// Byte sizes of huge strings and numbers.
const HUGE_SIZES: &[usize] = &[300, 4096, 65_536, 262_144, 1 << 20];

/// With huge strings at most this long, the generator makes small
/// input only: also short lookahead runs and shallow nesting, whose
/// bursts of error replies stay below a few tens of kB.
pub const SMALL: usize = 4096;

pub struct Gen<'a> {
    pub rng: &'a mut Rng,
    session: u64,
    /// Tells the keys of a session's phases apart.
    phase: char,
    /// OOB is (or will be) negotiated in this phase.
    oob: bool,
    /// The phase is after capabilities negotiation.
    negotiated: bool,
    /// Size limit of one huge string or number.
    huge: usize,
    n: usize,
    out: Stream,
    /// The parser is known to be in its start state after what came so
    /// far (at the start, and after a complete tagged request).
    clean: bool,
}

impl<'a> Gen<'a> {
    pub fn new(
        rng: &'a mut Rng,
        session: u64,
        phase: char,
        oob: bool,
        negotiated: bool,
        huge: usize,
    ) -> Self {
        Gen {
            rng,
            session,
            phase,
            oob,
            negotiated,
            huge,
            n: 0,
            out: Stream::default(),
            clean: true,
        }
    }

    pub fn finish(self) -> Stream {
        self.out
    }

    /// Bytes so far.
    pub fn size(&self) -> usize {
        self.out.bytes.len()
    }

    fn nonce(&mut self) -> String {
        format!("{:08x}", self.rng.next_u64() as u32)
    }

    /// A fresh key: `PREFIX:SESSION:PHASE N:NONCE`.
    fn key(&mut self, prefix: &str) -> String {
        self.n += 1;
        let nonce = self.nonce();
        format!("{prefix}:{}:{}{}:{nonce}", self.session, self.phase, self.n)
    }

    fn push(&mut self, bytes: &[u8]) {
        self.out.bytes.extend_from_slice(bytes);
    }

    /// A resync byte, unless the parser is known to be clean (and
    /// sometimes even then).
    fn resync(&mut self) {
        if !self.clean || self.rng.chance(1, 8) {
            let b = *self.rng.pick(RESYNC);
            self.push(&[b]);
        }
    }

    /// The id of a tagged request: the key as a string, or inside an
    /// object or array (QMP echoes any JSON value).
    fn tag_id(&mut self, key: &str) -> Value {
        match self.rng.below(8) {
            0 => json!({"fz": key, "n": self.n, "deep": [[[{"a": null}]]]}),
            1 => json!([key, self.n, -1.5, true]),
            2 => json!({"fz": key, "pad": "p".repeat(self.rng.range(100, 5000))}),
            _ => json!(key),
        }
    }

    /// Writes a request with `members` in random order and spacing.
    fn request_text(&mut self, members: &mut [(String, String)]) -> Vec<u8> {
        let n = members.len();
        for i in (1..n).rev() {
            let j = self.rng.below(i + 1);
            members.swap(i, j);
        }
        let spaces: &[&str] = &["", " ", "\n", "\t", "\r\n", "  \n  "];
        let sp = *self.rng.pick(spaces);
        let mut s = String::from("{");
        s.push_str(sp);
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                s.push(',');
                s.push_str(sp);
            }
            s.push_str(&format!("\"{k}\"{sp}:{sp}{v}"));
        }
        s.push_str(sp);
        s.push('}');
        s.into_bytes()
    }

    fn finish_tag(&mut self, key: String, id: Value, oob: bool, want: Want, what: &'static str) {
        self.out.tags.push(Tag {
            key,
            id,
            oob,
            want,
            what,
            end: self.out.bytes.len(),
        });
        if self.rng.chance(1, 2) {
            let eol = *self.rng.pick(&["\n", "\r\n", " "]);
            self.push(eol.as_bytes());
        }
        self.clean = true;
    }

    /// A tagged in-band request, after a resync if needed.
    pub fn tagged(&mut self) {
        self.resync();
        let key = self.key("t");
        let id = self.tag_id(&key);
        let (what, args, want) = if self.negotiated {
            *self.rng.pick(COMMANDS)
        } else {
            // Before negotiation every command but qmp_capabilities
            // is refused.
            let (what, args, _) = *self.rng.pick(&COMMANDS[..COMMANDS.len() - 1]);
            (what, args, Want::Error("CommandNotFound"))
        };
        let mut members = vec![
            ("execute".to_owned(), json!(what).to_string()),
            ("id".to_owned(), id.to_string()),
        ];
        if let Some(a) = args {
            members.push(("arguments".to_owned(), a.to_owned()));
        }
        let text = self.request_text(&mut members);
        self.push(&text);
        self.finish_tag(key, id, false, want, what);
    }

    /// A tagged exec-oob request (OOB negotiated only).
    pub fn tagged_oob(&mut self) {
        assert!(self.oob && self.negotiated);
        self.resync();
        let key = self.key("t");
        let id = self.tag_id(&key);
        let (what, args, want) = *self.rng.pick(OOB_COMMANDS);
        let mut members = vec![
            ("exec-oob".to_owned(), json!(what).to_string()),
            ("id".to_owned(), id.to_string()),
        ];
        if let Some(a) = args {
            members.push(("arguments".to_owned(), a.to_owned()));
        }
        let text = self.request_text(&mut members);
        self.push(&text);
        self.finish_tag(key, id, true, want, what);
    }

    /// The tagged qmp_capabilities of the session.
    pub fn negotiation(&mut self) {
        self.resync();
        let key = self.key("t");
        let id = self.tag_id(&key);
        let enable = if self.oob { json!(["oob"]) } else { json!([]) };
        let mut members = vec![
            ("execute".to_owned(), "\"qmp_capabilities\"".to_owned()),
            ("id".to_owned(), id.to_string()),
        ];
        if self.oob || self.rng.chance(1, 2) {
            members.push((
                "arguments".to_owned(),
                json!({ "enable": enable }).to_string(),
            ));
        }
        let text = self.request_text(&mut members);
        self.push(&text);
        self.finish_tag(key, id, false, Want::Return, "qmp_capabilities");
        self.negotiated = true;
    }

    /// A chardev-add that blocks QEMU's main loop in open(2) until a
    /// reader opens `fifo` (see `Park`), as a tagged in-band request.
    pub fn parking(&mut self, chardev: &str, fifo: &str) {
        self.resync();
        let key = self.key("t");
        let id = json!(key);
        let args = json!({"id": chardev, "backend": {"type": "file", "data": {"out": fifo}}});
        let mut members = vec![
            ("execute".to_owned(), "\"chardev-add\"".to_owned()),
            ("arguments".to_owned(), args.to_string()),
            ("id".to_owned(), id.to_string()),
        ];
        let text = self.request_text(&mut members);
        self.push(&text);
        self.finish_tag(key, id, false, Want::Return, "chardev-add");
    }

    /// A garbage id, remembered for the foreign-reply check.
    fn garbage_id(&mut self) -> String {
        let id = self.key("g");
        self.out.garbage_ids.push(id.clone());
        id
    }

    fn template(&mut self) -> Vec<u8> {
        let mut pool: Vec<&str> = TEMPLATES.to_vec();
        if self.negotiated {
            pool.extend_from_slice(TEMPLATES_NEGOTIATED);
        }
        if self.oob && self.negotiated {
            pool.extend_from_slice(TEMPLATES_OOB);
        }
        let t = *self.rng.pick(&pool);
        let id = self.garbage_id();
        t.replace("@ID@", &id).into_bytes()
    }

    fn huge_len(&mut self) -> usize {
        let sizes: Vec<usize> = HUGE_SIZES
            .iter()
            .copied()
            .filter(|&s| s <= self.huge)
            .collect();
        let max = *self.rng.pick(&sizes);
        self.rng.range(max / 2, max)
    }

    /// One piece of garbage; returns the generator's name.
    pub fn garbage(&mut self) -> &'static str {
        let kind = match self.rng.below(14) {
            0 => self.random_bytes(),
            1 | 2 => self.lookahead_run(),
            3 => self.truncated(),
            4 | 5 => self.mutated(),
            6 => self.nesting(),
            7 => self.huge_number(),
            8 => self.huge_string(),
            9 => self.bad_bytes(),
            10 => self.wrong_qmp(),
            11 => self.structural(),
            12 => self.untagged(),
            _ => self.bad_escapes(),
        };
        self.out.kinds.push(kind);
        self.clean = false;
        kind
    }

    fn random_bytes(&mut self) -> &'static str {
        const JSONISH: &[u8] = b"{}[]:,\"'\\ 0123456789-+.eEtruefalsnx\n\t\r";
        let len = self.rng.range(1, 48);
        for _ in 0..len {
            let b = if self.rng.chance(1, 2) {
                *self.rng.pick(JSONISH)
            } else {
                self.rng.below(256) as u8
            };
            self.push(&[b]);
        }
        "random bytes"
    }

    /// A value ending on a lookahead byte, then a byte that ends it, many
    /// times over (`1}1}1}...`), sometimes inside an open array or object.
    fn lookahead_run(&mut self) -> &'static str {
        let value = *self.rng.pick(LOOKAHEAD_VALUES);
        let next = *self.rng.pick(LOOKAHEAD_NEXT);
        let mut count = *self.rng.pick(LOOKAHEAD_COUNTS);
        if self.huge <= SMALL {
            count = count.min(16);
        }
        match self.rng.below(4) {
            0 => self.push(b"["),
            1 => self.push(b"{\"a\":"),
            _ => {}
        }
        let middle = self.rng.below(count);
        for i in 0..count {
            self.push(value.as_bytes());
            self.push(next);
            if i == 0 || i == middle || i + 1 == count {
                let at = self.out.bytes.len();
                self.out.marks.push(at);
            }
        }
        "lookahead run"
    }

    fn truncated(&mut self) -> &'static str {
        let t = self.template();
        let cut = self.rng.range(1, t.len() - 1);
        self.push(&t[..cut]);
        "truncated request"
    }

    fn mutated(&mut self) -> &'static str {
        let mut t = self.template();
        for _ in 0..self.rng.range(1, 4) {
            if t.is_empty() {
                break;
            }
            let at = self.rng.below(t.len());
            match self.rng.below(6) {
                0 => t[at] = self.rng.below(256) as u8,
                1 => t[at] = *self.rng.pick(SPECIAL),
                2 => {
                    let end = (at + self.rng.range(1, 8)).min(t.len());
                    t.drain(at..end);
                }
                3 => {
                    let end = (at + self.rng.range(1, 16)).min(t.len());
                    let dup = t[at..end].to_vec();
                    t.splice(at..at, dup);
                }
                4 => {
                    let tok = self.rng.pick(TOKENS).as_bytes().to_vec();
                    t.splice(at..at, tok);
                }
                _ => t.truncate(at),
            }
        }
        self.push(&t);
        "mutated request"
    }

    /// Nesting up to beyond QEMU's limit (1024), closed or not.
    fn nesting(&mut self) -> &'static str {
        let mut depth = *self
            .rng
            .pick(&[10, 100, 1000, 1023, 1024, 1025, 2000, 5000]);
        if self.huge <= SMALL {
            depth = depth.min(100);
        }
        let (open, close): (&[u8], &[u8]) = if self.rng.chance(1, 2) {
            (b"[", b"]")
        } else {
            (b"{\"a\":", b"}")
        };
        let wrap = self.rng.chance(1, 2);
        if wrap {
            self.push(b"{\"execute\": \"query-name\", \"arguments\": {\"x\": ");
        }
        for _ in 0..depth {
            self.push(open);
        }
        if self.rng.chance(1, 2) {
            self.push(b"1");
        }
        let closes = match self.rng.below(3) {
            0 => depth,
            1 => self.rng.below(depth + 1),
            _ => depth + self.rng.range(1, 5),
        };
        for _ in 0..closes {
            self.push(close);
        }
        if wrap {
            self.push(b"}}");
        }
        "deep nesting"
    }

    fn digits(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        s.push(char::from(b'1' + self.rng.below(9) as u8));
        for _ in 1..n {
            s.push(char::from(b'0' + self.rng.below(10) as u8));
        }
        s
    }

    fn huge_number(&mut self) -> &'static str {
        let n = self.huge_len().min(1 << 16);
        let digits = self.digits(n);
        let number = match self.rng.below(5) {
            0 => format!("-{digits}"),
            1 => format!("0.{digits}e-{}", self.digits(6)),
            2 => format!("{digits}e{}", self.digits(5)),
            3 => format!("1e{digits}"),
            _ => digits,
        };
        if self.rng.chance(1, 2) {
            self.push(number.as_bytes());
        } else {
            let id = self.garbage_id();
            let text = format!(
                "{{\"execute\": \"query-name\", \"arguments\": {{\"n\": {number}}}, \"id\": \"{id}\"}}"
            );
            self.push(text.as_bytes());
        }
        "huge number"
    }

    fn huge_string(&mut self) -> &'static str {
        let n = self.huge_len();
        let unit = *self
            .rng
            .pick(&["a", "é", "😀", "\\n", "\\u00e9", "\\\"", " "]);
        let body = unit.repeat(n / unit.len());
        let id = self.garbage_id();
        let text = match self.rng.below(4) {
            0 => format!("\"{body}\""),
            1 => format!("{{\"execute\": \"query-name\", \"arguments\": {{\"s\": \"{body}\"}}, \"id\": \"{id}\"}}"),
            2 => format!("{{\"execute\": \"{body}\", \"id\": \"{id}\"}}"),
            // A huge id: the error reply echoes it.
            _ => format!("{{\"execute\": \"qmh-fuzz-no-such-command\", \"id\": \"{id}{body}\"}}"),
        };
        let text = text.into_bytes();
        // Sometimes unterminated.
        let cut = if self.rng.chance(1, 4) {
            self.rng.range(1, text.len())
        } else {
            text.len()
        };
        self.push(&text[..cut]);
        "huge string"
    }

    /// Control bytes and invalid UTF-8, bare or inside strings.
    fn bad_bytes(&mut self) -> &'static str {
        let bad = *self.rng.pick(BAD_BYTES);
        match self.rng.below(3) {
            0 => self.push(bad),
            1 => {
                let id = self.garbage_id();
                self.push(format!("{{\"execute\": \"query-name\", \"id\": \"{id}").as_bytes());
                self.push(bad);
                self.push(b"\"}");
            }
            _ => {
                self.push(b"{\"execute\": \"query-");
                self.push(bad);
                self.push(b"name\"}");
            }
        }
        "bad bytes"
    }

    /// Valid JSON that is not a valid QMP request.
    fn wrong_qmp(&mut self) -> &'static str {
        const WRONG: &[&str] = &[
            "[]",
            "\"query-name\"",
            "42",
            "null",
            "{}",
            "{\"execute\": 1}",
            "{\"execute\": \"query-name\", \"exec-oob\": \"query-name\", \"id\": \"@ID@\"}",
            "{\"execute\": \"query-name\", \"arguments\": [], \"id\": \"@ID@\"}",
            "{\"execute\": \"query-name\", \"foo\": 1}",
            "{\"execute\": \"query-name\", \"execute\": \"query-name\"}",
            "{\"id\": \"@ID@\"}",
            "{\"arguments\": {}, \"id\": \"@ID@\"}",
            "{\"execute\": \"\", \"id\": \"@ID@\"}",
            "{\"execute\": \"query-name\", \"id\": \"@ID@\", \"control\": {}}",
        ];
        let t = *self.rng.pick(WRONG);
        let id = self.garbage_id();
        self.push(t.replace("@ID@", &id).as_bytes());
        "wrong QMP"
    }

    fn structural(&mut self) -> &'static str {
        for _ in 0..self.rng.range(1, 6) {
            let b = *self.rng.pick(b"}],:{[");
            self.push(&[b]);
        }
        "structural"
    }

    /// Well-formed requests without a tag (their replies are allowed
    /// anywhere, like errors).
    fn untagged(&mut self) -> &'static str {
        if !self.clean {
            let b = *self.rng.pick(RESYNC);
            self.push(&[b]);
        }
        for _ in 0..self.rng.range(1, 4) {
            let t = self.template();
            self.push(&t);
            self.push(b"\n");
        }
        "untagged requests"
    }

    fn bad_escapes(&mut self) -> &'static str {
        const ESC: &[&str] = &[
            "\\x41",
            "\\u12",
            "\\ud800",
            "\\udc00",
            "\\ud800\\u0041",
            "\\u0000",
            "\\",
            "\\U0041",
            "\\u00",
        ];
        let e = *self.rng.pick(ESC);
        let id = self.garbage_id();
        self.push(
            format!("{{\"execute\": \"query-name\", \"arguments\": {{\"s\": \"a{e}b\"}}, \"id\": \"{id}\"}}")
                .as_bytes(),
        );
        "bad escapes"
    }
}

/// Write boundaries for `bytes`: the ends of the writes, ascending, the
/// last one `bytes.len()`.  Sometimes all in one write, sometimes many
/// small ones, sometimes cut right after a byte that ends on lookahead
/// (a digit or letter followed by what ends it).
pub fn split(rng: &mut Rng, bytes: &[u8]) -> Vec<usize> {
    let len = bytes.len();
    if len == 0 {
        return vec![];
    }
    let mut cuts: Vec<usize> = match rng.below(5) {
        0 => vec![],
        1 if len <= 8192 => {
            let mut v = vec![];
            let mut at = 0;
            while at < len {
                at += rng.range(1, 16);
                v.push(at.min(len));
            }
            v
        }
        2 => {
            // After lookahead-ending bytes.
            let spots: Vec<usize> = (1..len)
                .filter(|&i| {
                    bytes[i - 1].is_ascii_alphanumeric() && !bytes[i].is_ascii_alphanumeric()
                })
                .collect();
            if spots.is_empty() {
                vec![]
            } else {
                (0..rng.range(1, 20)).map(|_| *rng.pick(&spots)).collect()
            }
        }
        _ => (0..rng.range(1, 30)).map(|_| rng.range(1, len)).collect(),
    };
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// `bytes` in a form fit for a message: printable ASCII as is, the rest
/// as \xNN, cut after `max` bytes.
pub fn escaped(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            b'\n' => s.push_str("\\n"),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}
