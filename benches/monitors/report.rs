// SPDX-License-Identifier: GPL-2.0-or-later
//! The report: rows of the table with their verdicts, notes, the samples
//! the plot shows, and the table as Markdown.

use std::fmt::Write as _;

use crate::stats::{median, median_ci, ratio_ci};

struct Row {
    id: String,
    what: String,
    value: String,
    reference: String,
    ratio: String,
    target: String,
    holds: String,
}

/// A labelled list of samples, in microseconds.
pub type Sample = (String, Vec<f64>);

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    /// Box-plot panels: title, then (label, samples in µs) per box.
    pub groups: Vec<(String, Vec<Sample>)>,
    pub scale: Vec<ScalePoint>,
    pub notes: Vec<String>,
}

/// Figures of the scale test for one N.  Index 0: dynamic monitors
/// (patched), 1: command-line monitors (patched), 2: command-line monitors
/// (unpatched, when the baseline binary is there).
pub struct ScalePoint {
    pub n: usize,
    pub base_kib: u64,
    pub rss_kib: Vec<u64>,
    pub event: Vec<Vec<f64>>,
    pub query: Vec<Vec<f64>>,
    pub name: Vec<Vec<f64>>,
    pub setup_s: Vec<f64>,
}

/// "yes" when the whole interval is within the target, "yes, within
/// noise" when only the estimate is, "no" otherwise.
fn target_verdict((r, _lo, hi): (f64, f64, f64), target: Option<f64>) -> (String, String) {
    match target {
        Some(t) if hi <= t => (format!("≤ {t:.2}"), "yes".into()),
        Some(t) if r <= t => (format!("≤ {t:.2}"), "yes, within noise".into()),
        Some(t) => (format!("≤ {t:.2}"), "**no**".into()),
        None => (String::new(), String::new()),
    }
}

pub fn verdict(ok: bool) -> String {
    if ok {
        "yes".into()
    } else {
        "**no**".into()
    }
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn row(
        &mut self,
        id: &str,
        what: &str,
        value: String,
        reference: String,
        ratio: String,
        target: &str,
        holds: String,
    ) {
        self.rows.push(Row {
            id: id.into(),
            what: what.into(),
            value,
            reference,
            ratio,
            target: target.into(),
            holds,
        });
    }

    /// A row comparing two latency distributions of one process against a
    /// ratio target.
    pub fn compare(&mut self, id: &str, what: &str, a: &[f64], b: &[f64], target: Option<f64>) {
        let rc = ratio_ci(a, b);
        let (t, h) = target_verdict(rc, target);
        self.row(
            id,
            what,
            fmt_time(median(a)),
            fmt_time(median(b)),
            fmt_ratio(rc),
            &t,
            h,
        );
    }

    /// The same over several processes: one ratio of medians per process,
    /// their median and its interval; the process is the unit.
    pub fn compare_instances(
        &mut self,
        id: &str,
        what: &str,
        a: &[Vec<f64>],
        b: &[Vec<f64>],
        target: Option<f64>,
    ) {
        let ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(a, b)| median(a) / median(b))
            .collect();
        let rc = median_ci(&ratios);
        let (t, h) = target_verdict(rc, target);
        self.row(
            id,
            what,
            fmt_time(median(&a.concat())),
            fmt_time(median(&b.concat())),
            fmt_ratio(rc),
            &t,
            h,
        );
        self.notes.push(format!(
            "{id}: ratio per process: {}",
            ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

pub fn fmt_time(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

pub fn fmt_ratio((r, lo, hi): (f64, f64, f64)) -> String {
    format!("{r:.3} ({lo:.3}–{hi:.3})")
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem} RAM, Linux {}", kernel.trim())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn table(report: &Report, header: &str) -> String {
    let mut s = String::new();
    s.push_str(header);
    s.push_str(
        "\n| # | Measurement | Measured (median) | Reference (median) | Ratio (95% CI) | Target | \
         Holds |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in &report.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id, r.what, r.value, r.reference, r.ratio, r.target, r.holds
        );
    }
    if !report.notes.is_empty() {
        s.push('\n');
        for n in &report.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
