// SPDX-License-Identifier: GPL-2.0-or-later
//! The reply checker of one session: every tagged request gets exactly
//! one reply carrying its id and the expected outcome, in-band replies
//! come in the order their requests were sent, and no reply carries the
//! id of another session's request.  Replies without a tag (errors for
//! garbage, replies to untagged requests) may come anywhere.

use std::collections::HashMap;

use serde_json::Value;

use super::gen::{tag_key, Tag, Want};

pub struct Check<'a> {
    session: u64,
    tags: Vec<Tag>,
    /// Index in `tags` by key.
    by_key: HashMap<String, usize>,
    /// Sent in full: only these may be answered.
    sent: Vec<bool>,
    answered: Vec<bool>,
    /// Keys of earlier sessions' tags and garbage ids -> (session, monitor).
    foreign: &'a HashMap<String, (u64, &'static str)>,
    pub replies: usize,
    pub errors: usize,
    pub events: usize,
}

impl<'a> Check<'a> {
    pub fn new(session: u64, foreign: &'a HashMap<String, (u64, &'static str)>) -> Self {
        Check {
            session,
            tags: vec![],
            by_key: HashMap::new(),
            sent: vec![],
            answered: vec![],
            foreign,
            replies: 0,
            errors: 0,
            events: 0,
        }
    }

    /// Adds the tags of a phase whose bytes were sent up to `limit`.
    pub fn add(&mut self, tags: &[Tag], limit: usize) {
        for t in tags {
            self.by_key.insert(t.key.clone(), self.tags.len());
            self.tags.push(t.clone());
            self.sent.push(t.end <= limit);
            self.answered.push(false);
        }
    }

    /// Every request sent in full has its reply.
    pub fn complete(&self) -> bool {
        self.sent
            .iter()
            .zip(&self.answered)
            .all(|(sent, answered)| !sent || *answered)
    }

    /// The oldest tagged request sent and not answered, for messages.
    pub fn pending(&self) -> String {
        let left: Vec<String> = (0..self.tags.len())
            .filter(|&i| self.sent[i] && !self.answered[i])
            .map(|i| self.describe(i))
            .collect();
        match left.first() {
            Some(first) => format!("{} unanswered, first {first}", left.len()),
            None => "nothing unanswered".to_owned(),
        }
    }

    fn describe(&self, i: usize) -> String {
        let t = &self.tags[i];
        format!(
            "{} {} (id {}, {} of the session's {} tagged requests)",
            if t.oob { "exec-oob" } else { "execute" },
            t.what,
            t.key,
            i + 1,
            self.tags.len()
        )
    }

    /// Checks one message from QEMU (after the greeting).
    pub fn message(&mut self, msg: &Value) -> Result<(), String> {
        let Some(obj) = msg.as_object() else {
            return Err(format!("a message that is not an object: {}", cut(msg)));
        };
        if obj.contains_key("QMP") {
            return Err(format!("a second greeting: {}", cut(msg)));
        }
        if obj.contains_key("event") {
            self.events += 1;
            return Ok(());
        }
        let is_return = obj.contains_key("return");
        let error = obj.get("error");
        if is_return == error.is_some() {
            return Err(format!(
                "a message that is neither a reply nor an event: {}",
                cut(msg)
            ));
        }
        self.replies += 1;
        if error.is_some() {
            self.errors += 1;
        }
        let Some(id) = obj.get("id") else {
            return Ok(());
        };
        let Some(key) = tag_key(id) else {
            return Ok(());
        };
        if let Some((session, mon)) = self.foreign.get(key) {
            return Err(format!(
                "session {} got a reply to a request of session {session} (monitor {mon}): {}",
                self.session,
                cut(msg)
            ));
        }
        let Some(&i) = self.by_key.get(key) else {
            // The id of garbage of this session, or a mutation of one.
            return Ok(());
        };
        let t = &self.tags[i];
        if !self.sent[i] {
            return Err(format!(
                "a reply to {}, which was never sent in full: {}",
                self.describe(i),
                cut(msg)
            ));
        }
        if self.answered[i] {
            return Err(format!(
                "a second reply to {}: {}",
                self.describe(i),
                cut(msg)
            ));
        }
        if id != &t.id {
            return Err(format!(
                "the reply to {} carries id {}, not the id sent {}",
                self.describe(i),
                cut(id),
                cut(&t.id)
            ));
        }
        match (t.want, error) {
            (Want::Return, None) => {}
            (Want::Error(class), Some(e)) if e["class"] == class => {}
            _ => {
                return Err(format!(
                    "the reply to {} should be {:?}: {}",
                    self.describe(i),
                    t.want,
                    cut(msg)
                ))
            }
        }
        if !t.oob {
            // Every in-band request sent before this one is answered.
            if let Some(j) =
                (0..i).find(|&j| !self.tags[j].oob && self.sent[j] && !self.answered[j])
            {
                return Err(format!(
                    "the reply to {} came before the reply to {}: {}",
                    self.describe(i),
                    self.describe(j),
                    cut(msg)
                ));
            }
        }
        self.answered[i] = true;
        Ok(())
    }

    /// After the connection ended: an exec-oob request sent before an
    /// answered in-band one was answered too (it ran when parsed, before
    /// the later request was even read).
    pub fn oob_before_last_answer(&self) -> Result<(), String> {
        let Some(last) = (0..self.tags.len())
            .rev()
            .find(|&i| !self.tags[i].oob && self.answered[i])
        else {
            return Ok(());
        };
        match (0..last).find(|&j| self.tags[j].oob && self.sent[j] && !self.answered[j]) {
            Some(j) => Err(format!(
                "no reply to {}, though {} after it was answered",
                self.describe(j),
                self.describe(last)
            )),
            None => Ok(()),
        }
    }
}

pub fn cut(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((at, _)) => format!("{}... ({} bytes)", &s[..at], s.len()),
        None => s,
    }
}
