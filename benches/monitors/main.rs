// SPDX-License-Identifier: GPL-2.0-or-later
//! Benchmarks of runtime QMP monitors (`cargo bench --bench monitors`),
//! with their own harness: seven measurements, one table.
//!
//! The machine is shared, so nothing is compared across time: the sides of
//! every comparison run in the same run, one measurement each in turn, the
//! order changing every round so that each side is as often first as last.
//! Figures are medians over many repetitions.  A ratio within one process is
//! a ratio of medians with a bootstrap 95% interval; a ratio that depends on
//! the process (hot path, patched vs unpatched) is measured on 10 processes
//! or groups of processes and given as the median of the per-process ratios
//! with a distribution-free interval (2nd to 9th of 10), next to a control
//! row (the same comparison between two things that should be equal)
//! showing the noise.
//!
//! Prints the table, writes it to build/bench/results.md and the latency
//! distributions to build/bench/latency.svg.
//!
//! Environment: QEMU_BIN_DIR (patched binaries, default build/bin),
//! QEMU_BASELINE_BIN (unpatched qemu-system-x86_64 of the same version,
//! default build/baseline/bin/qemu-system-x86_64; rows that need it are
//! skipped when it is missing), BENCH_QUICK=1 (few repetitions, to try the
//! bench out; the figures then mean nothing).  Needs socat for the relay.

#[path = "../../tests/common/mod.rs"]
mod common;

mod client;
mod plot;
mod qemu;
mod report;
mod stats;

// The measurements, in the order they run.
mod churn;
mod fresh_session;
mod hot_path;
mod input;
mod patch_overhead;
mod relay;
mod scale;

use std::{path::Path, time::Instant};

use qemu::{baseline_bin, patched_bin, raise_nofile};
use report::{loadavg, machine, table, Report};

/// Repetition counts.
pub struct Reps {
    /// Round trips per side, hot path and patch overhead.
    pub hot: usize,
    /// 4 KiB round trips per side, and round trips counted by strace.
    pub big: usize,
    pub syscalls: usize,
    /// Fresh sessions per variant.
    pub session: usize,
    /// Round trips per side through the relay.
    pub proxy: usize,
    /// Add/remove cycles of the churn test, and the early checkpoint.
    pub churn: usize,
    pub churn_early: usize,
    /// Monitor counts of the scale test, and its rounds of measurements.
    pub scale: Vec<usize>,
    pub scale_rounds: usize,
    /// QEMU processes (or groups of them) the hot path and the patch
    /// overhead are spread over.
    pub instances: usize,
}

impl Reps {
    fn new(quick: bool) -> Self {
        if quick {
            Reps {
                hot: 1000,
                big: 30,
                syscalls: 20,
                session: 60,
                proxy: 1000,
                churn: 400,
                churn_early: 100,
                scale: vec![1, 10, 100, 1000],
                scale_rounds: 5,
                instances: 3,
            }
        } else {
            Reps {
                hot: 20_000,
                big: 2000,
                syscalls: 100,
                session: 1000,
                proxy: 10_000,
                churn: 10_000,
                churn_early: 100,
                scale: vec![1, 10, 100, 1000],
                scale_rounds: 60,
                instances: 10,
            }
        }
    }
}

/// Untimed rounds before the timed ones.
pub const WARMUP: usize = 300;

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0");
    let rep = Reps::new(quick);
    let t0 = Instant::now();
    let nofile = raise_nofile();
    let load_before = loadavg();
    let mut report = Report::default();
    eprintln!("patched:  {}", patched_bin().display());
    eprintln!("baseline: {}", baseline_bin().display());
    type Step<'a> = (&'a str, &'a dyn Fn(&mut Report));
    let steps: [Step; 7] = [
        ("1. hot path", &|r| hot_path::run(&rep, r)),
        ("2. patch overhead", &|r| patch_overhead::run(&rep, r)),
        ("3. fresh session", &|r| fresh_session::run(&rep, r)),
        ("4. relay", &|r| relay::run(&rep, r)),
        ("5. churn", &|r| churn::run(&rep, r)),
        ("6. scale", &|r| scale::run(&rep, r, nofile)),
        ("7. input path", &|r| input::run(&rep, r)),
    ];
    for (name, f) in steps {
        let t = Instant::now();
        eprintln!("==> {name}");
        f(&mut report);
        eprintln!("==> {name}: {:.1} s", t.elapsed().as_secs_f64());
    }
    let total = t0.elapsed().as_secs_f64();
    let header = format!(
        "Machine: {}. Load average {} at start, {} at end (shared machine). Run time {:.0} s{}.\n",
        machine(),
        load_before,
        loadavg(),
        total,
        if quick {
            " (BENCH_QUICK: too few repetitions to mean anything)"
        } else {
            ""
        }
    );
    let text = table(&report, &header);
    println!("\n{text}");
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("build/bench");
    std::fs::create_dir_all(&out_dir).expect("build/bench");
    std::fs::write(out_dir.join("results.md"), &text).expect("results.md");
    std::fs::write(
        out_dir.join("latency.svg"),
        plot::svg(&report, header.trim()),
    )
    .expect("latency.svg");
    println!(
        "wrote {} and {}",
        out_dir.join("results.md").display(),
        out_dir.join("latency.svg").display()
    );
}
