// SPDX-License-Identifier: GPL-2.0-or-later
//! Shrinking a failing plan, within a time budget: first the steps
//! after the failing round go, then delta debugging (ddmin) removes
//! chunks of steps while the run still fails the same way (same kind).
//! Single-threaded replay is preferred when it reproduces the failure:
//! it is deterministic, and its step order is the printed order.

use std::time::{Duration, Instant};

use super::{
    failure::{Failure, Kind},
    plan::Item,
    runner::run,
};

pub struct Shrunk {
    pub plan: Vec<Item>,
    pub failure: Failure,
    pub threaded: bool,
    pub runs: usize,
    /// The budget ran out before ddmin finished.
    pub partial: bool,
}

/// The round a failure names ("round N lane" or "after round N").
fn failing_round(f: &Failure) -> Option<u32> {
    let d = &f.detail;
    let i = d.find("round ")? + "round ".len();
    d[i..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

struct Tester {
    kind: Kind,
    workers: u8,
    threaded: bool,
    /// Runs per candidate: a race may need a few to show again.
    tries: usize,
    deadline: Instant,
    runs: usize,
    last: Option<Failure>,
}

impl Tester {
    /// Does `plan` fail the same way (in one of `tries` runs)?
    fn fails(&mut self, plan: &[Item]) -> bool {
        for _ in 0..self.tries {
            if Instant::now() > self.deadline {
                return false;
            }
            self.runs += 1;
            if let Err(f) = run(plan, self.workers, self.threaded) {
                if f.kind == self.kind {
                    self.last = Some(f);
                    return true;
                }
            }
        }
        false
    }
}

pub fn shrink(
    plan: &[Item],
    failure: &Failure,
    workers: u8,
    threaded: bool,
    budget: Duration,
) -> Shrunk {
    let mut t = Tester {
        kind: failure.kind,
        workers,
        threaded: false,
        tries: 3,
        deadline: Instant::now() + budget,
        runs: 0,
        last: None,
    };
    // The steps after the failing round never ran.
    let mut cur: Vec<Item> = match failing_round(failure) {
        Some(r) => plan.iter().filter(|i| i.round <= r).cloned().collect(),
        None => plan.to_vec(),
    };
    // Single-threaded if that reproduces it, else as it ran; a race may
    // take a few runs: later candidates get twice as many as it took.
    for mode in [false, true] {
        if mode && !threaded {
            break;
        }
        t.threaded = mode;
        let before = t.runs;
        if t.fails(&cur) {
            t.tries = ((t.runs - before) * 2).min(4);
            break;
        }
    }
    if t.last.is_none() {
        return Shrunk {
            plan: cur,
            failure: failure.clone(),
            threaded,
            runs: t.runs,
            partial: true,
        };
    }
    // ddmin: remove one of n chunks at a time
    let mut n = 2usize;
    let mut partial = false;
    while cur.len() >= 2 {
        if Instant::now() > t.deadline {
            partial = true;
            break;
        }
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..cur.len()).step_by(chunk) {
            let candidate: Vec<Item> = cur
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < start || *i >= start + chunk)
                .map(|(_, it)| it.clone())
                .collect();
            if t.fails(&candidate) {
                cur = candidate;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    if Instant::now() > t.deadline {
        partial = true;
    }
    let failure = t.last.take().unwrap_or_else(|| failure.clone());
    Shrunk {
        plan: cur,
        failure,
        threaded: t.threaded,
        runs: t.runs,
        partial,
    }
}
