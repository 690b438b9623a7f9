// SPDX-License-Identifier: GPL-2.0-or-later
//! A seeded, model-based random tester of monitor-add, monitor-remove
//! and query-monitors (close-action included), and of their QEMU 11.1
//! spelling (object-add of a monitor-qmp, object-del), over real
//! sockets.
//!
//! A seed gives a plan: rounds of random steps for the manager lane and
//! two worker lanes (monitor-add/-remove with valid and invalid
//! arguments, chardev-add/-remove, clients that connect, negotiate with
//! or without OOB, pipeline requests and leave them unread, remove their
//! own monitor, getfd, leave cleanly or mid-command, one-shot sessions on
//! socketpairs, stop/cont).  The lanes of a round run in threads of
//! their own, each on objects it owns; at every sync point
//! query-monitors, query-chardev, the monitor objects in /objects (one
//! for every monitor, however it was made)
//! and the getfd fds QEMU holds must match the model, and every reply
//! a client read is checked (see model/client.rs).  A failing plan is shrunk and printed.
//!
//! Besides well-formed requests, clients send malformed input (partial
//! lines, garbage bytes), each followed by a byte that resets QEMU's JSON
//! parser, and expect each error reply exactly (model/client.rs,
//! GARBAGE); monitors may be restricted (allow-commands /
//! deny-commands, the -object monitor `obj0` too), and every request of
//! their clients is predicted allowed or "not allowed".  A step that
//! races QEMU (a close-action=delete removal against chardev-remove,
//! monitor-remove or object-del; a client leaving around monitor-add
//! close-action=delete) accepts exactly the outcomes listed next to it
//! in model/state.rs and model/exec.rs; which ones were seen is printed
//! at the end ("outcome seen").
//!
//! `cargo test --test model` runs seeds 1 to 20 of about 500 steps
//! (about 60 s on 2 cores).  More: `make fuzz SEEDS=N` (the `#[ignore]`d
//! `model_fuzz`).  Environment:
//! - `QMH_SEED=S`: run that seed only (both tests), to replay a failure;
//! - `QMH_SEEDS=N`: `model_random_steps` runs seeds 1 to N;
//! - `QMH_STEPS=N`: steps per seed;
//! - `QMH_SINGLE=1`: run the lanes one after the other, not in threads;
//! - `QMH_SHRINK_SECS=T`: time budget for shrinking one failure;
//! - `QMH_TOLERATE=Kind,...`: failures of these kinds (e.g. `Garbled`) on a
//!   connection that ends anyway become notes, to look past a known bug; never
//!   set by the Makefile;
//! - `QMH_FUZZ_SEEDS=N`, `QMH_FUZZ_BASE=S`: `model_fuzz`'s seeds S..S+N (the
//!   base defaults to the clock), `QMH_FUZZ_STEPS` their length;
//!   `QMH_FUZZ_SECONDS=T`: no seed started after T seconds (and, without
//!   `QMH_FUZZ_SEEDS`, as many seeds as fit).

mod common;

#[path = "model/client.rs"]
mod client;
#[path = "model/conn.rs"]
mod conn;
#[path = "model/exec.rs"]
mod exec;
#[path = "model/failure.rs"]
mod failure;
#[path = "model/gen.rs"]
mod gen;
#[path = "model/plan.rs"]
mod plan;
#[path = "model/qemu.rs"]
mod qemu;
#[path = "model/runner.rs"]
mod runner;
#[path = "model/shrink.rs"]
mod shrink;
#[path = "model/state.rs"]
mod state;

use std::time::{Duration, Instant};

/// Worker lanes besides the manager's.
const WORKERS: u8 = 2;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A seed that failed: what, and the shrunk plan.
struct Found {
    seed: u64,
    report: String,
    kind: failure::Kind,
}

fn run_seed(seed: u64, steps: usize, shrink_budget: Duration) -> Result<String, Found> {
    let threaded = env::<u32>("QMH_SINGLE").unwrap_or(0) == 0;
    let (shared, lanes) = qemu::initial(WORKERS);
    let plan = gen::plan(seed, steps, &shared, &lanes);
    let t0 = Instant::now();
    match runner::run(&plan, WORKERS, threaded) {
        Ok(stats) => Ok(format!(
            "seed {seed}: {} steps in {} rounds passed in {:.1} s",
            stats.steps,
            stats.rounds,
            t0.elapsed().as_secs_f64()
        )),
        Err(f) => {
            eprintln!(
                "seed {seed}: FAILED after {:.1} s: {f}",
                t0.elapsed().as_secs_f64()
            );
            eprintln!(
                "seed {seed}: shrinking {} steps (budget {shrink_budget:?})",
                plan.len()
            );
            let s = shrink::shrink(&plan, &f, WORKERS, threaded, shrink_budget);
            let report = format!(
                "seed {seed} (replay: QMH_SEED={seed} QMH_STEPS={steps}): {f}\n  minimal \
                 sequence{} ({} of {} steps, {} runs, {}):\n{}  which fails with: {}",
                if s.partial { " found so far" } else { "" },
                s.plan.len(),
                plan.len(),
                s.runs,
                if s.threaded {
                    "lanes in threads"
                } else {
                    "lanes one after the other"
                },
                plan::show(&s.plan),
                s.failure,
            );
            eprintln!("{report}");
            Err(Found {
                seed,
                report,
                kind: f.kind,
            })
        }
    }
}

/// Runs `seeds` in order, none started after `until` if given.
fn run_seeds(
    what: &str,
    seeds: &[u64],
    steps: usize,
    shrink_budget: Duration,
    until: Option<Instant>,
) {
    match (seeds, until) {
        ([first, ..], Some(_)) => eprintln!(
            "{what}: seeds from {first} until the time is up, {steps} steps each \
             (replay one with QMH_SEED=<seed>)"
        ),
        _ => eprintln!(
            "{what}: seeds {seeds:?}, {steps} steps each (replay one with QMH_SEED=<seed>)"
        ),
    }
    let t0 = Instant::now();
    let mut found = Vec::new();
    let mut ran = 0;
    for &seed in seeds {
        if until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        ran += 1;
        eprintln!("{what}: seed {seed}");
        match run_seed(seed, steps, shrink_budget) {
            Ok(line) => eprintln!("{what}: {line}"),
            Err(f) => found.push(f),
        }
    }
    eprintln!(
        "{what}: {} seeds in {:.1} s, {} failed",
        ran,
        t0.elapsed().as_secs_f64(),
        found.len()
    );
    for n in failure::notes() {
        eprintln!("{what}: note: {n}");
    }
    if !found.is_empty() {
        let kinds: Vec<String> = found
            .iter()
            .map(|f| format!("seed {} ({:?})", f.seed, f.kind))
            .collect();
        let reports: Vec<&str> = found.iter().map(|f| f.report.as_str()).collect();
        panic!(
            "{what}: {} of {} seeds failed: {}\n\n{}",
            found.len(),
            ran,
            kinds.join(", "),
            reports.join("\n\n")
        );
    }
}

/// The bounded run of `cargo test`: fixed seeds 1 to 20 of about 500
/// steps (QMH_SEEDS, QMH_STEPS).
#[test]
fn model_random_steps() {
    let steps = env("QMH_STEPS").unwrap_or(500);
    let seeds: Vec<u64> = match env("QMH_SEED") {
        Some(s) => vec![s],
        None => (1..=env("QMH_SEEDS").unwrap_or(common::scaled(20) as u64)).collect(),
    };
    let budget = Duration::from_secs(env("QMH_SHRINK_SECS").unwrap_or(15));
    run_seeds("model_random_steps", &seeds, steps, budget, None);
}

/// `make fuzz SEEDS=N`: N seeds from a clock-chosen base, longer plans;
/// `make fuzz FUZZ_SECONDS=T`: seeds until T seconds have passed.
#[test]
#[ignore]
fn model_fuzz() {
    let until = env::<u64>("QMH_FUZZ_SECONDS").map(|t| Instant::now() + Duration::from_secs(t));
    let steps = env("QMH_STEPS")
        .or_else(|| env("QMH_FUZZ_STEPS"))
        .unwrap_or(1000);
    let seeds: Vec<u64> = match env::<u64>("QMH_SEED") {
        Some(s) => vec![s],
        None => {
            // with a time limit and no number, as many as fit
            let n: u64 =
                env("QMH_FUZZ_SEEDS").unwrap_or(if until.is_some() { 100_000 } else { 10 });
            let base = env("QMH_FUZZ_BASE").unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() % 1_000_000 * 1000)
            });
            (base..base + n).collect()
        }
    };
    let budget = Duration::from_secs(env("QMH_SHRINK_SECS").unwrap_or(120));
    run_seeds("model_fuzz", &seeds, steps, budget, until);
}
