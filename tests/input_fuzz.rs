// SPDX-License-Identifier: GPL-2.0-or-later
//! A byte-level fuzzer of QEMU's QMP input path: the chardev read
//! handler, the JSON lexer and streamer, request queueing with and
//! without OOB, suspend/resume, and session ends, on a command-line
//! monitor, a `monitor-add`ed one and an `object-add`ed one.
//!
//! Each round is one client session (input_fuzz/session.rs) with a
//! generated stream (input_fuzz/gen.rs): tagged well-formed requests
//! (unique ids, known outcomes, exec-oob ones when OOB is negotiated)
//! between random bytes, truncated and mutated requests, values that end
//! on a lookahead byte (`1}1}1}...`), deep nesting, huge numbers and
//! strings, control bytes and invalid UTF-8.  The stream is written in
//! writes cut at random points; the session may end mid-message; the
//! dispatcher may be parked by a real blocking command
//! (input_fuzz/park.rs).  Invariants (input_fuzz/check.rs), each with a
//! bounded wait: every tagged request sent in full gets exactly one
//! reply with its id and outcome, in-band ones in order; nothing
//! reaches a client that is not its own; each new client gets the
//! greeting and replies; the manager answers after every round; QEMU's
//! fds are the same after every round; RSS stays bounded, and flat over
//! a tail of small rounds; QEMU quits cleanly at the end.
//!
//! `cargo test --test input_fuzz` runs `input_fuzz`: seeds 1 to 3 of up
//! to 250 rounds, no round started after 45 s but each seed's tail
//! (about 40 s unloaded).  `input_fuzz_long` (#[ignore]d) is the long
//! run; it goes on after a failing seed and reports every failure.
//! Environment:
//! - `QMH_SEED=S`: that seed only (both tests), to replay a failure;
//! - `QMH_FUZZ_ROUNDS=N`: rounds per seed (250, long run 300);
//! - `QMH_FUZZ_SECONDS=T`: the long run's time (300);
//! - `QMH_FUZZ_SEEDS=N`, `QMH_FUZZ_BASE=S`: the long run runs seeds
//!   S..S+N (base from the clock) instead of running for a time;
//! - `QMH_FUZZ_HUGE=BYTES`: the largest huge string (256 KiB, long
//!   run 1 MiB);
//! - `QMH_FUZZ_OOB=on|off`: every session negotiates OOB, or none does
//!   (default: half of them), to look at one mode at a time;
//! - `QMH_FUZZ_GDB=1`: a failure with QEMU still up shows each monitor's
//!   suspend count, queue length, OOB capability and session (gdb);
//! - `QMH_FUZZ_VERBOSE=1`: each round's plan is printed.
//!
//! A failure names its seed, round and session, and saves what the
//! failing session wrote, and what the previous session on the same
//! monitor wrote, under $TMPDIR/qmh-input-fuzz/.

mod common;

#[path = "input_fuzz/check.rs"]
mod check;
#[path = "input_fuzz/gen.rs"]
mod gen;
#[path = "input_fuzz/park.rs"]
mod park;
#[path = "input_fuzz/session.rs"]
mod session;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::{Duration, Instant},
};

use common::Watchdog;
use session::Fuzzer;

/// Rounds before the RSS baseline: the first huge strings and deep
/// nestings move the heap tops of the main and I/O threads' arenas.
const WARMUP: usize = 8;

/// RSS is printed every this many rounds.
const RSS_EVERY: usize = 25;

/// RSS may grow by this much from the end of the warm-up to the end of
/// the run.  Huge input costs QEMU buffers that it keeps at their
/// largest size (a monitor's output GString, glibc's heap tops and
/// dynamic mmap threshold): RSS grows in steps of up to a few MB at
/// record-sized bursts of output and stays flat in between (valgrind
/// finds nothing lost).  Measured here: +19 MB over 400 rounds with
/// 1 MiB strings; the bound catches leaks of that size, the tail
/// below the small ones.
const RSS_BOUND_KB: u64 = 64 * 1024;

/// The tail of each seed's run: rounds with small input only (huge
/// strings and numbers at most `gen::SMALL` bytes, short lookahead
/// runs, shallow nesting), after which RSS may have grown by at most
/// `TAIL_SLACK_KB` since the tail began.
/// With the big buffers at their largest already, small input moves
/// RSS by a few kB (+4 kB over 400 rounds here), while a leak of 16
/// bytes per error reply would add about a MB.
const TAIL_ROUNDS: usize = 40;
const TAIL_SLACK_KB: u64 = 512;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

struct Config {
    rounds: usize,
    /// No round starts after this (the seed's final checks still run).
    deadline: Instant,
    huge: usize,
    /// `QMH_FUZZ_OOB`: sessions negotiate OOB always (on), never (off),
    /// or at random (unset).
    oob: Option<bool>,
}

impl Config {
    fn new(rounds: usize, run_for: Duration, huge: usize) -> Self {
        let oob = match std::env::var("QMH_FUZZ_OOB").as_deref() {
            Ok("on") => Some(true),
            Ok("off") => Some(false),
            Ok("") | Err(_) => None,
            Ok(v) => panic!("QMH_FUZZ_OOB={v}: on or off"),
        };
        Config {
            rounds: env("QMH_FUZZ_ROUNDS").unwrap_or(rounds),
            deadline: Instant::now() + run_for,
            huge: env("QMH_FUZZ_HUGE").unwrap_or(huge),
            oob,
        }
    }
}

struct Failure {
    seed: u64,
    kind: String,
    /// Time from the start of the run to the failure.
    after: Duration,
    report: String,
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// QEMU's exit status if it exits within a second.
fn exited(fz: &mut Fuzzer) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if let Ok(Some(status)) = fz.qemu.child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failure(
    fz: &mut Fuzzer,
    seed: u64,
    round: usize,
    what: &str,
    payload: &(dyn std::any::Any + Send),
    t0: Instant,
    cfg: &Config,
) -> Failure {
    let msg = panic_text(payload);
    let kind = match exited(fz) {
        Some(status) => format!("QEMU died ({status})"),
        None if msg.contains("timed out") => "hang".to_owned(),
        None => what.to_owned(),
    };
    let state = if kind.starts_with("QEMU died") || std::env::var_os("QMH_FUZZ_GDB").is_none() {
        String::new()
    } else {
        monitor_state(fz.qemu.pid())
    };
    fz.release();
    let dir = std::env::temp_dir().join("qmh-input-fuzz");
    let dump = fz.dump(seed, &dir);
    let report = format!(
        "seed {seed}, round {round}: {kind}\n  {msg}\n  while: {}{dump}{state}\n  replay: \
         QMH_SEED={seed} QMH_FUZZ_ROUNDS={} QMH_FUZZ_HUGE={}{} cargo test --release --test \
         input_fuzz -- input_fuzz --exact --nocapture",
        fz.progress,
        cfg.rounds,
        cfg.huge,
        match cfg.oob {
            Some(true) => " QMH_FUZZ_OOB=on",
            Some(false) => " QMH_FUZZ_OOB=off",
            None => "",
        },
    );
    eprintln!("input_fuzz: FAILED {report}");
    Failure {
        seed,
        kind,
        after: t0.elapsed(),
        report,
    }
}

/// With `QMH_FUZZ_GDB` set, a failure where QEMU is still alive (a hang,
/// a wrong reply) shows each monitor's suspend count, queue length,
/// OOB capability and session, read with gdb from the running QEMU.
fn monitor_state(pid: u32) -> String {
    const SCRIPT: &[&str] = &[
        "set pagination off",
        "set $m = mon_list.tqh_first",
        "while $m\n printf \"  monitor %s: suspend_cnt %d, queued %u, oob %d, session %u\\n\", \
         $m->id, $m->suspend_cnt, ((MonitorQMP *)$m)->qmp_requests->length, \
         ((MonitorQMP *)$m)->capab[0], ((MonitorQMP *)$m)->session\n set $m = $m->entry.tqe_next\nend",
    ];
    let script = std::env::temp_dir().join(format!("qmh-input-fuzz-{pid}.gdb"));
    if std::fs::write(&script, SCRIPT.join("\n") + "\n").is_err() {
        return String::new();
    }
    let out = std::process::Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-x"])
        .arg(&script)
        .output();
    let _ = std::fs::remove_file(&script);
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("  monitor "))
                .collect();
            format!("\n  QEMU's monitors (gdb):\n{}", lines.join("\n"))
        }
        Err(e) => format!("\n  (gdb: {e})"),
    }
}

/// Runs one seed: its QEMU, its rounds, the final checks and the quit.
fn run_seed(seed: u64, cfg: &Config, t0: Instant) -> Result<(), Failure> {
    let started = Instant::now();
    let mut fz = Fuzzer::start(seed, cfg.huge, cfg.oob);
    let _wd = Watchdog::arm(
        &format!("input_fuzz seed {seed}"),
        fz.qemu.pid(),
        Duration::from_secs(300 + 5 * cfg.rounds as u64),
    );
    let mut start = fz.qemu.snapshot();
    let mut done = 0;
    let mut rss = vec![];
    let mut tail_rss = None;
    let mut slowest = (Duration::ZERO, 0);
    let tail = TAIL_ROUNDS.min(cfg.rounds / 4);
    let mut round = 0;
    while round < cfg.rounds {
        // Past the deadline, only the tail runs.
        if round + tail < cfg.rounds && round > 0 && Instant::now() > cfg.deadline {
            round = cfg.rounds - tail;
        }
        if round + tail == cfg.rounds {
            fz.set_huge(gen::SMALL);
            tail_rss = Some(fz.qemu.rss_kb());
        }
        let t = Instant::now();
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| fz.round(round))) {
            return Err(failure(&mut fz, seed, round, "violation", &*p, t0, cfg));
        }
        slowest = slowest.max((t.elapsed(), round));
        done += 1;
        round += 1;
        if done == WARMUP {
            start.rss_kb = fz.qemu.rss_kb();
        }
        if done % RSS_EVERY == 0 {
            rss.push(fz.qemu.rss_kb());
        }
    }
    let stats = std::mem::take(&mut fz.stats);
    let mut sessions: Vec<_> = stats.sessions.into_iter().collect();
    sessions.sort();
    let mut kinds: Vec<_> = stats.kinds.into_iter().collect();
    kinds.sort();
    eprintln!(
        "input_fuzz: seed {seed}: {done} rounds in {:.1} s {sessions:?}, {} bytes in {} writes, \
         {} tagged requests, {} replies ({} errors), parked {} times, {} replies cut at the \
         end of input, slowest round {} ({:.1} s); RSS every {RSS_EVERY} rounds (kB): {rss:?}; \
         garbage {kinds:?}",
        started.elapsed().as_secs_f64(),
        stats.bytes,
        stats.writes,
        stats.tags,
        stats.replies,
        stats.errors,
        stats.parked,
        stats.cut_at_input_end,
        slowest.1,
        slowest.0.as_secs_f64(),
    );
    let end = catch_unwind(AssertUnwindSafe(|| {
        fz.progress = "the final checks".to_owned();
        fz.check_fds(Duration::from_secs(30));
        let what = format!("input_fuzz seed {seed}");
        if done < WARMUP {
            start.rss_kb = u64::MAX / 4;
        }
        fz.qemu.check_against(&start, RSS_BOUND_KB, &what);
        if let (Some(before), true) = (tail_rss, tail > 0) {
            let now = fz.qemu.rss_kb();
            eprintln!(
                "{what}: RSS over the {tail} small rounds of the tail: {before} kB, then {now} kB"
            );
            assert!(
                fz.qemu.has_sanitizer() || now <= before + TAIL_SLACK_KB,
                "{what}: RSS grew from {before} kB to {now} kB over the {tail} small rounds \
                 of the tail, more than {TAIL_SLACK_KB} kB"
            );
        }
    }));
    if let Err(p) = end {
        return Err(failure(&mut fz, seed, done, "leak", &*p, t0, cfg));
    }
    let status = fz.qemu.quit();
    if !status.success() {
        return Err(Failure {
            seed,
            kind: "unclean exit".to_owned(),
            after: t0.elapsed(),
            report: format!("seed {seed}: QEMU's quit ended with {status}"),
        });
    }
    Ok(())
}

/// Runs `seeds` until `cfg.deadline`, all of them if `keep_going`, else
/// up to the first failure; panics listing the failures.
fn run(what: &str, seeds: impl Iterator<Item = u64>, cfg: &Config, keep_going: bool) {
    let t0 = Instant::now();
    let mut failures = vec![];
    let mut ran = 0;
    for seed in seeds {
        if ran > 0 && Instant::now() > cfg.deadline {
            break;
        }
        ran += 1;
        // Prints the seed; QMH_SEED, if set, is the only seed here.
        let seed = common::seed(what, seed);
        if let Err(f) = run_seed(seed, cfg, t0) {
            failures.push(f);
            if !keep_going {
                break;
            }
        }
    }
    eprintln!(
        "{what}: {ran} seeds in {:.1} s, {} failed",
        t0.elapsed().as_secs_f64(),
        failures.len()
    );
    if !failures.is_empty() {
        let summary: Vec<String> = failures
            .iter()
            .map(|f| {
                format!(
                    "seed {} ({}, {:.1} s into the run)",
                    f.seed,
                    f.kind,
                    f.after.as_secs_f64()
                )
            })
            .collect();
        let reports: Vec<&str> = failures.iter().map(|f| f.report.as_str()).collect();
        panic!(
            "{what}: {} of {ran} seeds failed: {}\n\n{}",
            failures.len(),
            summary.join(", "),
            reports.join("\n\n")
        );
    }
}

/// The bounded run of `cargo test`: seeds 1 to 3, at most 250 rounds
/// each, no round but the tails' started after 45 s.
#[test]
fn input_fuzz() {
    let secs = common::scaled(45) as u64;
    let cfg = Config::new(250, Duration::from_secs(secs), 256 << 10);
    let seeds: Vec<u64> = match env("QMH_SEED") {
        Some(s) => vec![s],
        None => vec![1, 2, 3],
    };
    run("input_fuzz", seeds.into_iter(), &cfg, false);
}

/// The long run (`QMH_FUZZ_SECONDS`, or `QMH_FUZZ_SEEDS` seeds).
#[test]
#[ignore = "long: QMH_FUZZ_SECONDS / QMH_FUZZ_SEEDS"]
fn input_fuzz_long() {
    let by_count: Option<u64> = env("QMH_FUZZ_SEEDS");
    let secs: u64 = if by_count.is_some() {
        // Seeds, not time, bound the run (the deadline is a backstop).
        7 * 24 * 3600
    } else {
        env("QMH_FUZZ_SECONDS").unwrap_or(300)
    };
    let cfg = Config::new(300, Duration::from_secs(secs), 1 << 20);
    let base: u64 = env("QMH_FUZZ_BASE").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() % 1_000_000 * 1000)
    });
    let seeds: Box<dyn Iterator<Item = u64>> = match (env::<u64>("QMH_SEED"), by_count) {
        (Some(s), _) => Box::new(std::iter::once(s)),
        (None, Some(n)) => Box::new(base..base + n),
        (None, None) => Box::new(base..),
    };
    run("input_fuzz_long", seeds, &cfg, true);
}
