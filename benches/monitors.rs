//! Benchmarks of runtime QMP monitors (`cargo bench --bench monitors`),
//! with their own harness: six measurements, one table.
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

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{owned, send_fd, temp_dir, Qemu, Qmp};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Repetition counts

struct Reps {
    /// Round trips per side, hot path and patch overhead.
    hot: usize,
    /// Fresh sessions per variant.
    session: usize,
    /// Round trips per side through the relay.
    proxy: usize,
    /// Add/remove cycles of the churn test, and the early checkpoint.
    churn: usize,
    churn_early: usize,
    /// Monitor counts of the scale test, and its rounds of measurements.
    scale: Vec<usize>,
    scale_rounds: usize,
    /// QEMU processes (or groups of them) the hot path and the patch
    /// overhead are spread over.
    instances: usize,
}

impl Reps {
    fn new(quick: bool) -> Self {
        if quick {
            Reps { hot: 1000, session: 60, proxy: 1000, churn: 400, churn_early: 100,
                   scale: vec![1, 10, 100, 1000], scale_rounds: 5, instances: 3 }
        } else {
            Reps { hot: 20_000, session: 1000, proxy: 10_000, churn: 10_000, churn_early: 100,
                   scale: vec![1, 10, 100, 1000], scale_rounds: 60, instances: 10 }
        }
    }
}

const WARMUP: usize = 300;

// ---------------------------------------------------------------------------
// A lean QMP client for the timed paths: raw lines, no JSON parsing.

const QUERY_NAME: &[u8] = b"{\"execute\":\"query-name\"}\n";
const CAPS: &[u8] = b"{\"execute\":\"qmp_capabilities\"}\n";

struct Raw {
    f: File,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Raw {
    fn new(fd: OwnedFd) -> Self {
        Raw { f: File::from(fd), buf: vec![0; 1 << 16], pos: 0, end: 0 }
    }

    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        Self::new(s.into())
    }

    /// Connects, retrying while the listener is not there yet.
    fn connect_retry(path: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return Self::new(s.into()),
                Err(e) if Instant::now() > deadline => panic!("connect {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn fd(&self) -> i32 {
        self.f.as_raw_fd()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.f.write_all(bytes).expect("write");
    }

    fn line_range(&mut self) -> (usize, usize) {
        loop {
            if let Some(i) = self.buf[self.pos..self.end].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                self.pos += i + 1;
                return (start, start + i);
            }
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.f.read(&mut self.buf[self.end..]) {
                Ok(0) => panic!("EOF on a QMP connection"),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next line, without its newline.
    fn line(&mut self) -> &[u8] {
        let (s, e) = self.line_range();
        &self.buf[s..e]
    }

    /// The next line that is not an event.
    fn reply(&mut self) -> &[u8] {
        loop {
            let (s, e) = self.line_range();
            if !self.buf[s..e].starts_with(b"{\"timestamp\"") {
                return &self.buf[s..e];
            }
        }
    }

    /// Sends a command (one line of JSON) that must succeed; returns the reply.
    fn ok(&mut self, cmd: &str) -> String {
        self.send(cmd.as_bytes());
        self.send(b"\n");
        self.check_ok(cmd)
    }

    fn check_ok(&mut self, what: &str) -> String {
        let r = String::from_utf8_lossy(self.reply()).into_owned();
        assert!(r.starts_with("{\"return\""), "{what} failed: {r}");
        r
    }

    fn ok_json(&mut self, v: Value) -> String {
        self.ok(&v.to_string())
    }

    /// Greeting, qmp_capabilities.
    fn handshake(&mut self) {
        let g = self.line();
        assert!(g.starts_with(b"{\"QMP\""), "not a greeting: {}", String::from_utf8_lossy(g));
        self.send(CAPS);
        self.check_ok("qmp_capabilities");
    }

    fn query_name(&mut self) {
        self.send(QUERY_NAME);
        self.check_reply_ok();
    }

    fn check_reply_ok(&mut self) {
        let r = self.reply();
        assert!(r.starts_with(b"{\"return\""), "query-name: {}", String::from_utf8_lossy(r));
    }
}

// ---------------------------------------------------------------------------
// QEMU processes

/// A QEMU (patched or not) with a manager monitor, spoken to through `mgr`.
struct Proc {
    q: Qemu,
    mgr: Raw,
}

fn patched_bin() -> PathBuf {
    common::bin_dir().join("qemu-system-x86_64")
}

fn baseline_bin() -> PathBuf {
    std::env::var_os("QEMU_BASELINE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/baseline/bin/qemu-system-x86_64"))
}

impl Proc {
    /// Starts `bin` with `-qmp` on DIR/mgr.sock and `extra` (@DIR@ replaced).
    fn launch(bin: &Path, extra: &[String]) -> Proc {
        let dir = temp_dir();
        let sock = dir.join("mgr.sock");
        let mut args: Vec<String> =
            ["-M", "none", "-accel", "qtest", "-display", "none", "-qmp"].iter().map(|s| s.to_string()).collect();
        args.push(format!("unix:{},server=on,wait=off", sock.display()));
        args.extend(extra.iter().map(|s| s.replace("@DIR@", &dir.display().to_string())));
        let log = File::create(dir.join("qemu.log")).expect("log");
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        let log = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
                        panic!("{} exited ({st}) at start:\n{log}", bin.display());
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("connect {}: {e}", sock.display());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let mut mgr = Raw::new(stream.into());
        mgr.handshake();
        // The Qemu wrapper gets a second handle on the same connection; it is
        // only used to send `quit`.
        // SAFETY: dup of an fd we own.
        let dup = owned(unsafe { libc::dup(mgr.fd()) });
        let q = Qemu { child, dir, mgr: Qmp::from_fd(dup) };
        Proc { q, mgr }
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.q.sock(name)
    }

    fn add_socket_chardev_cmd(&self, id: &str) -> String {
        json!({"execute": "chardev-add", "arguments": {"id": id, "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": self.sock(id)}}, "server": true, "wait": false}}}})
        .to_string()
    }

    fn add_socket_chardev(&mut self, id: &str) {
        let cmd = self.add_socket_chardev_cmd(id);
        self.mgr.ok(&cmd);
    }

    fn monitor_add(&mut self, id: &str, chardev: &str) {
        self.mgr.ok_json(json!({"execute": "monitor-add", "arguments": {"id": id, "chardev": chardev}}));
    }

    /// A field of /proc/PID/status in KiB ("VmRSS", "RssAnon").
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.q.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Resident anonymous memory: heap and stacks, without the pages of
    /// the binary and libraries, which differ between processes by a few
    /// hundred KiB depending on which code ran.
    fn anon_kib(&self) -> u64 {
        self.status_kib("RssAnon")
    }

    fn fd_count(&self) -> usize {
        self.q.fds().len()
    }

    /// The pty of a pty chardev, from query-chardev.
    fn pty_of(&mut self, label: &str) -> String {
        let r = self.mgr.ok(r#"{"execute":"query-chardev"}"#);
        let v: Value = serde_json::from_str(&r).expect("JSON");
        let c = v["return"].as_array().expect("list").iter().find(|c| c["label"] == label).expect("chardev");
        c["filename"].as_str().expect("filename").strip_prefix("pty:").expect("pty:").to_owned()
    }

    fn quit(self) {
        let Proc { q, mgr } = self;
        let pid = q.pid();
        let status = q.quit();
        drop(mgr);
        if !status.success() {
            eprintln!("warning: QEMU {pid} exited with {status}");
        }
    }
}

/// Opens the pty of a pty chardev in raw mode (no echo, no line editing).
fn open_pty(path: &str) -> Raw {
    let c = std::ffi::CString::new(path).expect("path");
    // SAFETY: plain libc calls on a fresh fd.
    unsafe {
        let fd = owned(libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC));
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t), 0);
        Raw::new(fd)
    }
}

fn cli_socket_monitor(id: &str) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id={id},path=@DIR@/{id}.sock,server=on,wait=off"),
        "-mon".into(),
        format!("chardev={id},mode=control"),
    ]
}

fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur as u64
    }
}

// ---------------------------------------------------------------------------
// Statistics

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("NaN"));
    s
}

fn quantile_sorted(s: &[f64], q: f64) -> f64 {
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn median(v: &[f64]) -> f64 {
    quantile_sorted(&sorted(v), 0.5)
}

fn fast_median(v: &mut [f64]) -> f64 {
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, |a, b| a.partial_cmp(b).expect("NaN")).1
}

/// Ratio of medians a/b and its bootstrap 95% interval.
fn ratio_ci(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let r = median(a) / median(b);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ta, mut tb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    let mut rs = Vec::new();
    for _ in 0..400 {
        for x in ta.iter_mut() {
            *x = a[(next() % a.len() as u64) as usize];
        }
        for x in tb.iter_mut() {
            *x = b[(next() % b.len() as u64) as usize];
        }
        rs.push(fast_median(&mut ta) / fast_median(&mut tb));
    }
    let rs = sorted(&rs);
    (r, quantile_sorted(&rs, 0.025), quantile_sorted(&rs, 0.975))
}

/// Median of per-process ratios and a distribution-free interval for it:
/// order statistics j and K+1-j with j the largest such that
/// P(Binomial(K, 1/2) < j) <= 2.5% (for K=10: the 2nd and 9th of 10, 97.9%).
/// Robust to one process that the machine's other load disturbed.
fn median_ci(ratios: &[f64]) -> (f64, f64, f64) {
    let s = sorted(ratios);
    let k = s.len();
    let (mut j, mut below) = (0usize, 0.0f64);
    let mut coef = 1.0f64; // C(k, i)
    for i in 0..k {
        below += coef / 2f64.powi(k as i32);
        if below > 0.025 {
            break;
        }
        j = i + 1;
        coef = coef * (k - i) as f64 / (i + 1) as f64;
    }
    let j = j.max(1);
    (quantile_sorted(&s, 0.5), s[j - 1], s[k - j])
}

fn fmt_time(us: f64) -> String {
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

fn fmt_ratio((r, lo, hi): (f64, f64, f64)) -> String {
    format!("{r:.3} ({lo:.3}–{hi:.3})")
}

/// Runs `rounds` rounds over `n` measured operations after a warm-up and
/// returns one sample list per operation.  The order changes every round
/// (forward and backward from a rotating start: all 6 orders of 3), so that
/// every operation is as often first, middle and last: the position in a
/// round shifts a round trip by a few per cent on this machine.
fn interleave(n: usize, rounds: usize, warmup: usize, mut op: impl FnMut(usize)) -> Vec<Vec<f64>> {
    interleave_timed(n, rounds, warmup, |i| {
        let t = Instant::now();
        op(i);
        us(t.elapsed())
    })
}

/// As interleave(), but `op` measures itself and returns microseconds.
fn interleave_timed(n: usize, rounds: usize, warmup: usize, mut op: impl FnMut(usize) -> f64) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(rounds); n];
    for r in 0..warmup + rounds {
        let start = (r / 2) % n;
        for k in 0..n {
            let i = if r % 2 == 0 { (start + k) % n } else { (start + n - k) % n };
            let dt = op(i);
            if r >= warmup {
                out[i].push(dt);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Report

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
type Sample = (String, Vec<f64>);

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    /// Box-plot panels: title, then (label, samples in µs) per box.
    groups: Vec<(String, Vec<Sample>)>,
    scale: Vec<ScalePoint>,
    notes: Vec<String>,
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

fn verdict(ok: bool) -> String {
    if ok { "yes".into() } else { "**no**".into() }
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn row(&mut self, id: &str, what: &str, value: String, reference: String, ratio: String, target: &str, holds: String) {
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
    fn compare(&mut self, id: &str, what: &str, a: &[f64], b: &[f64], target: Option<f64>) {
        let rc = ratio_ci(a, b);
        let (t, h) = target_verdict(rc, target);
        self.row(id, what, fmt_time(median(a)), fmt_time(median(b)), fmt_ratio(rc), &t, h);
    }

    /// The same over several processes: one ratio of medians per process,
    /// their median and its interval; the process is the unit.
    fn compare_instances(&mut self, id: &str, what: &str, a: &[Vec<f64>], b: &[Vec<f64>], target: Option<f64>) {
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| median(a) / median(b)).collect();
        let rc = median_ci(&ratios);
        let (t, h) = target_verdict(rc, target);
        self.row(id, what, fmt_time(median(&a.concat())), fmt_time(median(&b.concat())), fmt_ratio(rc), &t, h);
        self.notes.push(format!(
            "{id}: ratio per process: {}",
            ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", ")
        ));
    }
}

/// Figures of the scale test for one N.  Index 0: dynamic monitors
/// (patched), 1: command-line monitors (patched), 2: command-line monitors
/// (unpatched, when the baseline binary is there).
struct ScalePoint {
    n: usize,
    base_kib: u64,
    rss_kib: Vec<u64>,
    event: Vec<Vec<f64>>,
    query: Vec<Vec<f64>>,
    name: Vec<Vec<f64>>,
    setup_s: Vec<f64>,
}

// ---------------------------------------------------------------------------
// 1. Hot path: dynamic vs command-line monitor on the same kind of chardev

fn hot_path(rep: &Reps, report: &mut Report) {
    // Monitors in creation order: two command-line monitors of each kind,
    // then the dynamic ones.  A monitor created later is a little slower
    // whichever way it was created (the second of two command-line pty
    // monitors by ~4% here), so the dynamic monitor is compared with the
    // command-line monitor of its kind created last, and the second
    // command-line monitor with the first shows the size of the order effect.
    const CLI_SOCK: usize = 0;
    const CLI_SOCK2: usize = 1;
    const CLI_PTY: usize = 2;
    const CLI_PTY2: usize = 3;
    const DYN_PTY: usize = 4;
    const DYN_SOCK: usize = 5;
    let mut runs: Vec<Vec<Vec<f64>>> = Vec::new();
    for _ in 0..rep.instances {
        let mut extra = cli_socket_monitor("cli_sock");
        extra.extend(cli_socket_monitor("cli_sock2"));
        for id in ["cli_pty", "cli_pty2"] {
            extra.extend(["-chardev".into(), format!("pty,id={id}"), "-mon".into(), format!("chardev={id},mode=control")]);
        }
        let mut p = Proc::launch(&patched_bin(), &extra);
        let r = p.mgr.ok(r#"{"execute":"chardev-add","arguments":{"id":"dyn_pty","backend":{"type":"pty","data":{}}}}"#);
        let v: Value = serde_json::from_str(&r).expect("JSON");
        let dyn_pty = v["return"]["pty"].as_str().expect("pty").to_owned();
        p.monitor_add("dyn_pty", "dyn_pty");
        p.add_socket_chardev("dyn_sock");
        p.monitor_add("dyn_sock", "dyn_sock");
        let (cli_pty, cli_pty2) = (p.pty_of("cli_pty"), p.pty_of("cli_pty2"));
        let mut clients = vec![
            Raw::connect_retry(&p.sock("cli_sock")),
            Raw::connect_retry(&p.sock("cli_sock2")),
            open_pty(&cli_pty),
            open_pty(&cli_pty2),
            open_pty(&dyn_pty),
            Raw::connect_retry(&p.sock("dyn_sock")),
        ];
        for c in clients.iter_mut() {
            c.handshake();
        }
        runs.push(interleave(clients.len(), rep.hot / rep.instances, WARMUP, |i| clients[i].query_name()));
        drop(clients);
        p.quit();
    }
    let col = |k: usize| runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
    report.compare_instances("1a", "query-name round trip, socket (I/O thread): dynamic vs command-line monitor",
                             &col(DYN_SOCK), &col(CLI_SOCK2), Some(1.03));
    report.compare_instances("1a control", "the same, 2nd vs 1st command-line socket monitor (order effect)",
                             &col(CLI_SOCK2), &col(CLI_SOCK), None);
    report.compare_instances("1b", "query-name round trip, pty (I/O thread): dynamic vs command-line monitor",
                             &col(DYN_PTY), &col(CLI_PTY2), Some(1.03));
    report.compare_instances("1b control", "the same, 2nd vs 1st command-line pty monitor (order effect)",
                             &col(CLI_PTY2), &col(CLI_PTY), None);
    // The order effect in unpatched QEMU: two command-line pty monitors.
    let base = baseline_bin();
    if base.exists() {
        let mut runs = Vec::new();
        for _ in 0..rep.instances {
            let mut extra = Vec::new();
            for id in ["cli_pty", "cli_pty2"] {
                extra.extend(["-chardev".into(), format!("pty,id={id}"), "-mon".into(), format!("chardev={id},mode=control")]);
            }
            let mut p = Proc::launch(&base, &extra);
            let mut clients = vec![open_pty(&p.pty_of("cli_pty")), open_pty(&p.pty_of("cli_pty2"))];
            for c in clients.iter_mut() {
                c.handshake();
            }
            runs.push(interleave(2, rep.hot / rep.instances / 2, WARMUP, |i| clients[i].query_name()));
            drop(clients);
            p.quit();
        }
        let col = |k: usize| runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
        report.compare_instances("1b unpatched", "the same in unpatched QEMU, 2nd vs 1st command-line pty monitor",
                                 &col(1), &col(0), None);
    }
    let vs_first = |d: usize, c: usize| {
        let r: Vec<f64> = col(d).iter().zip(col(c)).map(|(a, b)| median(a) / median(&b)).collect();
        fmt_ratio(median_ci(&r))
    };
    report.notes.push(format!(
        "1: dynamic vs the first command-line monitor of its kind: socket {}, pty {}",
        vs_first(DYN_SOCK, CLI_SOCK),
        vs_first(DYN_PTY, CLI_PTY)
    ));
    report.row("1c", "query-name round trip, main-loop chardev: dynamic vs command-line monitor",
               "n/a".into(), "n/a".into(), "—".into(), "≤ 1.03",
               "not measurable".into());
    report.notes.push(
        "1c: in QEMU 10.2 every chardev with a read handler (socket, pty, file/pipe, serial, stdio, udp, \
         mux, hub) supports a GMainContext, so a QMP monitor on it runs in the monitor I/O thread; the \
         only main-loop chardevs (ringbuf, null, memory, vc without a UI) have no input a client could \
         send a command through. A main-loop monitor's round trip cannot be measured."
            .into(),
    );
    let all = |k: usize| col(k).concat();
    report.groups.push(("1. Hot path: query-name round trip".into(), vec![
        ("socket, command line (1st)".into(), all(CLI_SOCK)),
        ("socket, command line (2nd)".into(), all(CLI_SOCK2)),
        ("socket, monitor-add".into(), all(DYN_SOCK)),
        ("pty, command line (1st)".into(), all(CLI_PTY)),
        ("pty, command line (2nd)".into(), all(CLI_PTY2)),
        ("pty, monitor-add".into(), all(DYN_PTY)),
    ]));
}

// ---------------------------------------------------------------------------
// 2. Patch overhead: patched vs unpatched QEMU, same monitor

fn patch_overhead(rep: &Reps, report: &mut Report) {
    let base = baseline_bin();
    if !base.exists() {
        report.row("2", "query-name round trip, command-line socket monitor: patched vs unpatched QEMU",
                   "—".into(), "—".into(), "—".into(), "≤ 1.02", "not run".into());
        report.notes.push(format!("2: no baseline binary at {} (set QEMU_BASELINE_BIN)", base.display()));
        return;
    }
    // Many groups of processes: two processes of the very same binary differ
    // by several per cent here (thread placement, memory layout), so the
    // process is the unit of comparison.  Each group also has a second
    // unpatched process: unpatched vs unpatched is the noise floor.
    let mut runs = Vec::new();
    for _ in 0..rep.instances {
        let extra = cli_socket_monitor("m");
        let procs = [Proc::launch(&patched_bin(), &extra), Proc::launch(&base, &extra), Proc::launch(&base, &extra)];
        let mut clients: Vec<Raw> = procs.iter().map(|p| Raw::connect_retry(&p.sock("m"))).collect();
        for c in clients.iter_mut() {
            c.handshake();
        }
        runs.push(interleave(3, rep.hot / rep.instances, WARMUP, |i| clients[i].query_name()));
        drop(clients);
        for p in procs {
            p.quit();
        }
    }
    let col = |k: usize| runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
    report.compare_instances("2", "query-name round trip, command-line socket monitor: patched vs unpatched QEMU",
                             &col(0), &col(1), Some(1.02));
    report.compare_instances("2 control", "the same, unpatched vs another unpatched process (noise floor of 2)",
                             &col(2), &col(1), None);
    report.groups.push(("2. Patch overhead: query-name round trip".into(), vec![
        ("unpatched QEMU".into(), col(1).concat()),
        ("patched QEMU".into(), col(0).concat()),
        ("unpatched QEMU, 2nd process".into(), col(2).concat()),
    ]));
}

// ---------------------------------------------------------------------------
// 3. Time to a usable fresh session

fn fresh_session(rep: &Reps, report: &mut Report) {
    const SPARES: usize = 8;
    let mut extra = Vec::new();
    for k in 0..SPARES {
        extra.extend(cli_socket_monitor(&format!("spare{k}")));
    }
    let mut p = Proc::launch(&patched_bin(), &extra);
    let mut serial = 0usize;
    let mut next_name = || {
        serial += 1;
        format!("s{serial}")
    };
    let mut spare = 0usize;
    // 0: spare from the command line; 1: monitor-add on an existing chardev;
    // 2: chardev-add + monitor-add; 3: socketpair + getfd + chardev-add + monitor-add;
    // 4: as 1, but the client connects while monitor-add is in flight.
    const VARIANTS: usize = 5;
    let mut samples = vec![Vec::new(); VARIANTS];
    for r in 0..rep.session + 20 {
        for k in 0..VARIANTS {
            let variant = (r + k) % VARIANTS;
            let name = next_name();
            let dt = match variant {
                0 => {
                    let path = p.sock(&format!("spare{}", spare % SPARES));
                    spare += 1;
                    let t = Instant::now();
                    let mut c = Raw::connect(&path);
                    c.handshake();
                    c.query_name();
                    let dt = t.elapsed();
                    drop(c);
                    dt
                }
                1 | 2 => {
                    let chardev_add = p.add_socket_chardev_cmd(&name);
                    let monitor_add =
                        json!({"execute": "monitor-add", "arguments": {"id": name, "chardev": name}}).to_string();
                    let path = p.sock(&name);
                    // Variant 1 starts the clock after chardev-add, variant 2 before.
                    let mut t = Instant::now();
                    p.mgr.ok(&chardev_add);
                    if variant == 1 {
                        t = Instant::now();
                    }
                    p.mgr.ok(&monitor_add);
                    let mut c = Raw::connect(&path);
                    c.handshake();
                    c.query_name();
                    let dt = t.elapsed();
                    drop(c);
                    p.mgr.ok_json(json!({"execute": "monitor-remove", "arguments": {"id": name}}));
                    p.mgr.ok_json(json!({"execute": "chardev-remove", "arguments": {"id": name}}));
                    let _ = std::fs::remove_file(&path);
                    dt
                }
                4 => {
                    let monitor_add =
                        json!({"execute": "monitor-add", "arguments": {"id": name, "chardev": name}}).to_string();
                    p.add_socket_chardev(&name);
                    let path = p.sock(&name);
                    let t = Instant::now();
                    p.mgr.send(monitor_add.as_bytes());
                    p.mgr.send(b"\n");
                    let mut c = Raw::connect(&path);
                    c.handshake();
                    c.query_name();
                    p.mgr.check_ok("monitor-add");
                    let dt = t.elapsed();
                    drop(c);
                    p.mgr.ok_json(json!({"execute": "monitor-remove", "arguments": {"id": name}}));
                    p.mgr.ok_json(json!({"execute": "chardev-remove", "arguments": {"id": name}}));
                    let _ = std::fs::remove_file(&path);
                    dt
                }
                _ => {
                    let getfd = format!("{{\"execute\":\"getfd\",\"arguments\":{{\"fdname\":\"{name}\"}}}}\n");
                    let chardev_add = json!({"execute": "chardev-add", "arguments": {"id": name, "backend": {
                        "type": "socket", "data": {"addr": {"type": "fd", "data": {"str": name}}, "server": false}}}})
                    .to_string();
                    let monitor_add =
                        json!({"execute": "monitor-add", "arguments": {"id": name, "chardev": name}}).to_string();
                    let t = Instant::now();
                    let mut sv = [0; 2];
                    // SAFETY: socketpair fills the array with two fresh fds.
                    let rc = unsafe {
                        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr())
                    };
                    assert_eq!(rc, 0, "socketpair");
                    let (ours, theirs) = (owned(sv[0]), owned(sv[1]));
                    send_fd(p.mgr.fd(), getfd.as_bytes(), theirs.as_raw_fd());
                    p.mgr.check_ok("getfd");
                    drop(theirs);
                    p.mgr.ok(&chardev_add);
                    p.mgr.ok(&monitor_add);
                    let mut c = Raw::new(ours);
                    c.handshake();
                    c.query_name();
                    let dt = t.elapsed();
                    drop(c);
                    p.mgr.ok_json(json!({"execute": "monitor-remove", "arguments": {"id": name}}));
                    p.mgr.ok_json(json!({"execute": "chardev-remove", "arguments": {"id": name}}));
                    dt
                }
            };
            if r >= 20 {
                samples[variant].push(us(dt));
            }
        }
    }
    // What monitor-add itself costs: its round trip vs a query-name padded
    // with blanks to the same length.  QEMU reads QMP input one byte per
    // poll of the monitor's context, so the length of a command is a good
    // part of its round trip.
    let mut detail = [Vec::new(), Vec::new()];
    let mut pad_len = 0;
    for r in 0..rep.session + 20 {
        let name = format!("t{r}");
        p.add_socket_chardev(&name);
        let monitor_add =
            format!("{}\n", json!({"execute": "monitor-add", "arguments": {"id": name, "chardev": name}}));
        let padded = format!("{{\"execute\":\"query-name\"{}}}\n", " ".repeat(monitor_add.len() - 25));
        assert_eq!(padded.len(), monitor_add.len());
        pad_len = padded.len();
        for k in 0..2 {
            let which = (r + k) % 2;
            let t = Instant::now();
            p.mgr.send(if which == 0 { monitor_add.as_bytes() } else { padded.as_bytes() });
            p.mgr.check_ok("monitor-add / query-name");
            if r >= 20 {
                detail[which].push(us(t.elapsed()));
            }
        }
        p.mgr.ok_json(json!({"execute": "monitor-remove", "arguments": {"id": name}}));
        p.mgr.ok_json(json!({"execute": "chardev-remove", "arguments": {"id": name}}));
        let _ = std::fs::remove_file(p.sock(&name));
    }
    let short = interleave(1, rep.session, 20, |_| {
        p.mgr.send(QUERY_NAME);
        p.mgr.check_ok("query-name");
    });
    report.compare("3a″", &format!("monitor-add round trip on the manager vs query-name padded to the same \
                   {pad_len} bytes"), &detail[0], &detail[1], None);
    let per_byte = (median(&detail[1]) - median(&short[0])) / (pad_len - QUERY_NAME.len()) as f64;
    report.notes.push(format!(
        "3: QEMU reads QMP input one byte per iteration of the monitor's poll loop; here each byte of a \
         request costs {per_byte:.1} µs (query-name: {} for {} bytes, {} padded to {pad_len} bytes, the length \
         of the monitor-add command). The spare-monitor session sends {} bytes in all.",
        fmt_time(median(&short[0])), QUERY_NAME.len(), fmt_time(median(&detail[1])), CAPS.len() + QUERY_NAME.len()
    ));
    report.compare("3a", "fresh session: monitor-add on an existing chardev + connect + greeting + \
                   qmp_capabilities + first reply, vs the same on a spare command-line monitor",
                   &samples[1], &samples[0], Some(1.5));
    report.compare("3a′", "the same, but the client connects while monitor-add is still in flight \
                   (the chardev already listens), vs spare monitor", &samples[4], &samples[0], None);
    report.compare("3b", "fresh session with chardev-add included, vs spare monitor",
                   &samples[2], &samples[0], None);
    report.compare("3c", "fresh session over socketpair + getfd (SCM_RIGHTS) + chardev-add fd + monitor-add, \
                   vs spare monitor", &samples[3], &samples[0], None);
    report.groups.push(("3. Time to a usable fresh session".into(), vec![
        ("spare command-line monitor".into(), samples[0].clone()),
        ("monitor-add".into(), samples[1].clone()),
        ("monitor-add, overlapped".into(), samples[4].clone()),
        ("chardev-add + monitor-add".into(), samples[2].clone()),
        ("socketpair + getfd + ...".into(), samples[3].clone()),
    ]));
    p.quit();
}

// ---------------------------------------------------------------------------
// 4. A plain relay in front of a monitor vs talking to it directly

fn proxy(rep: &Reps, report: &mut Report) {
    let mut extra = cli_socket_monitor("direct");
    extra.extend(cli_socket_monitor("behind"));
    let p = Proc::launch(&patched_bin(), &extra);
    let relay = p.sock("relay");
    /// Kills the relay also when a measurement panics.
    struct Relay(Child);
    impl Drop for Relay {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let socat = Command::new("socat")
        .arg(format!("UNIX-LISTEN:{}", relay.display()))
        .arg(format!("UNIX-CONNECT:{}", p.sock("behind").display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("socat (apt-get install socat)");
    let socat = Relay(socat);
    let mut clients = vec![Raw::connect_retry(&p.sock("direct")), Raw::connect_retry(&relay)];
    for c in clients.iter_mut() {
        c.handshake();
    }
    let s = interleave(2, rep.proxy, WARMUP, |i| clients[i].query_name());
    report.compare("4", "query-name round trip through a socat relay vs direct (both command-line socket monitors)",
                   &s[1], &s[0], None);
    let added = median(&s[1]) - median(&s[0]);
    report.notes.push(format!(
        "4: the relay adds {} per command; it only copies bytes, so an id-rewriting QMP proxy \
         (parse, rewrite, serialise every message) costs at least this much more.",
        fmt_time(added)
    ));
    report.groups.push(("4. Relay (socat) vs direct: query-name round trip".into(), vec![
        ("direct".into(), s[0].clone()),
        ("through socat".into(), s[1].clone()),
    ]));
    drop(clients);
    drop(socat);
    p.quit();
}

// ---------------------------------------------------------------------------
// 5. Churn: full add/remove cycles

fn churn(rep: &Reps, report: &mut Report) {
    let mut p = Proc::launch(&patched_bin(), &[]);
    let mut times = Vec::with_capacity(rep.churn);
    let mut early = (0u64, 0usize);
    let mut checkpoints: Vec<(usize, u64, u64, usize)> = Vec::new();
    let t_all = Instant::now();
    let mut t_after_early = t_all;
    for i in 1..=rep.churn {
        let (c, m) = (format!("c{i}"), format!("m{i}"));
        let chardev_add = p.add_socket_chardev_cmd(&c);
        let path = p.sock(&c);
        let t = Instant::now();
        p.mgr.ok(&chardev_add);
        p.mgr.ok_json(json!({"execute": "monitor-add", "arguments": {"id": m, "chardev": c}}));
        let mut client = Raw::connect(&path);
        client.handshake();
        client.query_name();
        drop(client);
        p.mgr.ok_json(json!({"execute": "monitor-remove", "arguments": {"id": m}}));
        p.mgr.ok_json(json!({"execute": "chardev-remove", "arguments": {"id": c}}));
        times.push(us(t.elapsed()));
        let _ = std::fs::remove_file(&path);
        if i == rep.churn_early || i == rep.churn || i % 2500 == 0 {
            let (rss, fds) = (p.rss_kib(), p.fd_count());
            checkpoints.push((i, rss, p.anon_kib(), fds));
            if i == rep.churn_early {
                early = (rss, fds);
                t_after_early = Instant::now();
            }
        }
    }
    let steady = (rep.churn - rep.churn_early) as f64 / t_after_early.elapsed().as_secs_f64();
    let (rss, fds) = (p.rss_kib(), p.fd_count());
    let drss = rss as i64 - early.0 as i64;
    let dfds = fds as i64 - early.1 as i64;
    report.row("5a", "churn: full cycle (chardev-add, monitor-add, connect, handshake, query-name, \
               disconnect, monitor-remove, chardev-remove)",
               format!("{steady:.0} cycles/s"), format!("median cycle {}", fmt_time(median(&times))),
               "—".into(), "", String::new());
    report.row("5b", &format!("churn: fd count after {} cycles vs after {}", rep.churn, rep.churn_early),
               format!("{fds}"), format!("{}", early.1), format!("{dfds:+}"), "growth 0",
               verdict(dfds <= 0));
    report.row("5c", &format!("churn: VmRSS after {} cycles vs after {}", rep.churn, rep.churn_early),
               format!("{rss} KiB"), format!("{} KiB", early.0), format!("{drss:+} KiB"), "growth < 1024 KiB",
               verdict(drss < 1024));
    report.notes.push(format!(
        "5: checkpoints (cycle: VmRSS, RssAnon, fds): {}",
        checkpoints.iter().map(|(i, r, a, f)| format!("{i}: {r} KiB, {a} KiB, {f}")).collect::<Vec<_>>().join("; ")
    ));
    report.groups.push(("5. Churn: one full add/remove cycle".into(), vec![("cycle".into(), times)]));
    p.quit();
}

// ---------------------------------------------------------------------------
// 6. Scale: N monitors with a client each, dynamic vs command line

/// Time from sending `stop` until every client has the STOP event; then
/// `cont` and the RESUME events are consumed, untimed.
fn event_fanout(p: &mut Proc, clients: &mut [Raw]) -> f64 {
    let t = Instant::now();
    p.mgr.send(b"{\"execute\":\"stop\"}\n");
    for c in clients.iter_mut() {
        let l = c.line();
        assert!(l.windows(6).any(|w| w == b"\"STOP\""), "expected STOP: {}", String::from_utf8_lossy(l));
    }
    let dt = us(t.elapsed());
    p.mgr.check_ok("stop");
    p.mgr.ok("{\"execute\":\"cont\"}");
    for c in clients.iter_mut() {
        let l = c.line();
        assert!(l.windows(8).any(|w| w == b"\"RESUME\""), "expected RESUME: {}", String::from_utf8_lossy(l));
    }
    dt
}

fn scale(rep: &Reps, report: &mut Report, nofile: u64) {
    let base = baseline_bin();
    let kinds = if base.exists() { 3 } else { 2 };
    let needed = rep.scale.iter().sum::<usize>() as u64 * kinds as u64 + 256;
    if needed > nofile {
        report.notes.push(format!("6: skipped, needs {needed} fds and RLIMIT_NOFILE is only {nofile}"));
        return;
    }
    // First every process for every N, all kept running, so that all the
    // figures, also the growth from one N to the next, are measured side
    // by side in the same rounds.
    struct Set {
        n: usize,
        base_kib: u64,
        setup_s: Vec<f64>,
        rss_kib: Vec<u64>,
        procs: Vec<(Proc, Vec<Raw>)>,
    }
    let mut sets = Vec::new();
    for &n in &rep.scale {
        // Dynamic: a fresh QEMU, then N times chardev-add, monitor-add,
        // connect, handshake.
        let mut d = Proc::launch(&patched_bin(), &[]);
        let base_kib = d.anon_kib();
        let t = Instant::now();
        let mut dyn_clients = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("d{i}");
            d.add_socket_chardev(&id);
            d.monitor_add(&id, &id);
            let mut c = Raw::connect(&d.sock(&id));
            c.handshake();
            dyn_clients.push(c);
        }
        let mut setup_s = vec![t.elapsed().as_secs_f64()];
        let mut procs = vec![(d, dyn_clients)];
        // Command line: N times -chardev socket -mon, then connect, handshake.
        let mut extra = Vec::with_capacity(4 * n);
        for i in 0..n {
            extra.extend(cli_socket_monitor(&format!("c{i}")));
        }
        for bin in [patched_bin(), base.clone()].iter().take(kinds - 1) {
            let t = Instant::now();
            let c = Proc::launch(bin, &extra);
            let mut clients: Vec<Raw> = (0..n).map(|i| Raw::connect_retry(&c.sock(&format!("c{i}")))).collect();
            for cl in clients.iter_mut() {
                cl.handshake();
            }
            setup_s.push(t.elapsed().as_secs_f64());
            procs.push((c, clients));
        }
        // Every process is settled: every client had its reply.  Memory is
        // taken before the first query-monitors: one reply of 1000 entries
        // leaves about 5 MB of freed heap resident (the same for
        // query-chardev in unpatched QEMU), which would swamp the monitors.
        for (p, _) in procs.iter_mut() {
            p.mgr.query_name();
        }
        let rss_kib = procs.iter().map(|(p, _)| p.anon_kib()).collect();
        for (p, _) in procs.iter_mut().take(2) {
            let r = p.mgr.ok("{\"execute\":\"query-monitors\"}");
            let v: Value = serde_json::from_str(&r).expect("JSON");
            assert_eq!(v["return"].as_array().expect("list").len(), n + 1, "query-monitors");
        }
        eprintln!("    N={n}: set up in {}", setup_s.iter().map(|s| format!("{s:.2} s")).collect::<Vec<_>>().join(", "));
        sets.push(Set { n, base_kib, setup_s, rss_kib, procs });
    }
    // Then the measurements, interleaved over every process of every N.
    let all: Vec<(usize, usize)> = (0..sets.len()).flat_map(|s| (0..kinds).map(move |k| (s, k))).collect();
    let patched: Vec<(usize, usize)> = (0..sets.len()).flat_map(|s| (0..2).map(move |k| (s, k))).collect();
    let event = interleave_timed(all.len(), rep.scale_rounds, 3, |i| {
        let (p, cl) = &mut sets[all[i].0].procs[all[i].1];
        event_fanout(p, cl)
    });
    let query = interleave(patched.len(), rep.scale_rounds, 3, |i| {
        let m = &mut sets[patched[i].0].procs[patched[i].1].0.mgr;
        m.send(b"{\"execute\":\"query-monitors\"}\n");
        m.check_reply_ok();
    });
    let name = interleave(all.len(), rep.scale_rounds, 3, |i| sets[all[i].0].procs[all[i].1].0.mgr.query_name());
    for (si, set) in sets.into_iter().enumerate() {
        let pick = |v: &Vec<Vec<f64>>, idx: &[(usize, usize)]| {
            idx.iter().zip(v).filter(|((s, _), _)| *s == si).map(|(_, x)| x.clone()).collect::<Vec<_>>()
        };
        report.scale.push(ScalePoint {
            n: set.n,
            base_kib: set.base_kib,
            rss_kib: set.rss_kib,
            event: pick(&event, &all),
            query: pick(&query, &patched),
            name: pick(&name, &all),
            setup_s: set.setup_s,
        });
        for (p, cl) in set.procs {
            drop(cl);
            p.quit();
        }
    }
    scale_rows(report);
}

fn scale_rows(report: &mut Report) {
    let points = std::mem::take(&mut report.scale);
    for sp in &points {
        let n = sp.n;
        let per = |rss: u64| (rss as f64 - sp.base_kib as f64) / n as f64;
        report.row(&format!("6 N={n}"), "memory per monitor with its client (RssAnon above a fresh QEMU, / N): \
                   dynamic vs command line",
                   format!("{:.1} KiB", per(sp.rss_kib[0])), format!("{:.1} KiB", per(sp.rss_kib[1])),
                   "—".into(), "", String::new());
        report.compare(&format!("6 N={n}"), "`stop` until the STOP event reached every client: dynamic vs command line",
                       &sp.event[0], &sp.event[1], None);
        report.compare(&format!("6 N={n}"), "query-monitors round trip: dynamic vs command line",
                       &sp.query[0], &sp.query[1], None);
        report.compare(&format!("6 N={n}"), "query-name round trip on the manager monitor: dynamic vs command line",
                       &sp.name[0], &sp.name[1], None);
    }
    let p100 = points.iter().find(|p| p.n == 100);
    let p1000 = points.iter().find(|p| p.n == 1000);
    if let (Some(a), Some(b)) = (p100, p1000) {
        // Growth from 100 to 1000 monitors: slope of memory, exponent of time.
        let slope = |k: usize| (b.rss_kib[k] as f64 - a.rss_kib[k] as f64) / 900.0;
        report.row("6 slope", "memory (RssAnon) per extra monitor with its client, N=100 → N=1000: dynamic vs command line",
                   format!("{:.1} KiB", slope(0)), format!("{:.1} KiB", slope(1)), "—".into(), "", String::new());
        let expo = |xa: &[f64], xb: &[f64]| (median(xb) / median(xa)).log10();
        for (what, xa, xb) in [
            ("`stop` to every client", &a.event, &b.event),
            ("query-monitors", &a.query, &b.query),
            ("query-name on the manager", &a.name, &b.name),
        ] {
            let (ed, ec) = (expo(&xa[0], &xb[0]), expo(&xa[1], &xb[1]));
            let unpatched = match (xa.get(2), xb.get(2)) {
                (Some(ua), Some(ub)) => format!(" (unpatched: {:.2})", expo(ua, ub)),
                _ => String::new(),
            };
            report.row("6 growth",
                       &format!("{what}: exponent k of t ∝ N^k, N=100 → N=1000: dynamic vs command line"),
                       format!("k = {ed:.2}"), format!("k = {ec:.2}{unpatched}"), "—".into(), "k ≤ 1.2 (linear)",
                       verdict(ed <= 1.2));
        }
        if b.rss_kib.len() > 2 {
            report.row("6 unpatched", "command-line monitors, patched vs unpatched QEMU: memory (RssAnon) per extra \
                       monitor, N=100 → N=1000",
                       format!("{:.1} KiB", slope(1)), format!("{:.1} KiB", slope(2)), "—".into(), "", String::new());
            report.compare("6 unpatched", "N=1000 command-line monitors, patched vs unpatched QEMU: `stop` to every client",
                           &b.event[1], &b.event[2], None);
            report.compare("6 unpatched", "N=1000 command-line monitors, patched vs unpatched QEMU: query-name on the manager",
                           &b.name[1], &b.name[2], None);
        }
    }
    report.notes.push(
        "6: memory is RssAnon (heap and stacks); VmRSS also counts pages of the QEMU binary, which differ \
         between processes by a few hundred KiB. It moves in 4 KiB pages, so the per-monitor figure means \
         little below N=100."
            .into(),
    );
    report.notes.push(format!(
        "6: set-up time of N monitors with their clients, dynamic (chardev-add, monitor-add, connect, handshake, \
         one after the other) / command line (start QEMU, connect, handshake){}: {}",
        if points.first().is_some_and(|p| p.setup_s.len() > 2) { " / command line, unpatched" } else { "" },
        points
            .iter()
            .map(|p| format!("N={}: {}", p.n, p.setup_s.iter().map(|s| format!("{s:.2} s")).collect::<Vec<_>>().join(" / ")))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    for sp in &points {
        let mut items = vec![("command line".into(), sp.event[1].clone()), ("monitor-add".into(), sp.event[0].clone())];
        if sp.event.len() > 2 {
            items.push(("command line, unpatched".into(), sp.event[2].clone()));
        }
        report.groups.push((format!("6. Scale N={}: stop → STOP at every client", sp.n), items));
    }
    report.scale = points;
}

// ---------------------------------------------------------------------------
// Output: table and SVG

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem} RAM, Linux {}", kernel.trim())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn table(report: &Report, header: &str) -> String {
    let mut s = String::new();
    s.push_str(header);
    s.push_str("\n| # | Measurement | Measured (median) | Reference (median) | Ratio (95% CI) | Target | Holds |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in &report.rows {
        let _ = writeln!(s, "| {} | {} | {} | {} | {} | {} | {} |",
                         r.id, r.what, r.value, r.reference, r.ratio, r.target, r.holds);
    }
    if !report.notes.is_empty() {
        s.push('\n');
        for n in &report.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn nice_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

const W: f64 = 960.0;
const LABEL_W: f64 = 280.0;
const PLOT_X0: f64 = 295.0;
const PLOT_X1: f64 = 880.0;
const COLORS: [&str; 6] = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377"];

/// Horizontal box plots: box p25–p75, line at the median, whiskers p5–p95,
/// dots at p1 and p99.
fn svg_box_group(out: &mut String, y0: f64, title: &str, items: &[Sample]) -> f64 {
    let stats: Vec<Vec<f64>> = items
        .iter()
        .map(|(_, v)| {
            let s = sorted(v);
            [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99].iter().map(|&q| quantile_sorted(&s, q)).collect()
        })
        .collect();
    // The axis reaches a little past the highest p95; p99 dots beyond it
    // sit at the edge as open circles.
    let max_us = stats.iter().map(|q| q[5]).fold(0.0, f64::max) * 1.3;
    let (scale, unit) = if max_us >= 5000.0 { (1000.0, "ms") } else { (1.0, "µs") };
    let max = max_us / scale;
    let step = nice_step(max);
    let axis_max = (max / step).ceil() * step;
    let x = |v_us: f64| PLOT_X0 + (v_us / scale) / axis_max * (PLOT_X1 - PLOT_X0);
    let _ = writeln!(out, r#"<text x="10" y="{:.1}" font-weight="bold">{}</text>"#, y0 + 16.0, esc(title));
    let row_h = 26.0;
    let top = y0 + 26.0;
    for (i, ((label, v), q)) in items.iter().zip(&stats).enumerate() {
        let cy = top + row_h * i as f64 + row_h / 2.0;
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(out, r#"<text x="{LABEL_W}" y="{:.1}" text-anchor="end">{} <tspan font-size="9" fill="gray">n={}</tspan></text>"#,
                         cy + 4.0, esc(label), v.len());
        let _ = writeln!(out, r#"<line x1="{:.1}" x2="{:.1}" y1="{cy:.1}" y2="{cy:.1}" stroke="{c}"/>"#, x(q[1]), x(q[5]));
        for &w in &[q[1], q[5]] {
            let _ = writeln!(out, r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{c}"/>"#,
                             x(w), cy - 5.0, cy + 5.0);
        }
        let _ = writeln!(out, r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="16" fill="{c}" fill-opacity="0.35" stroke="{c}"/>"#,
                         x(q[2]), cy - 8.0, (x(q[4]) - x(q[2])).max(0.5));
        let _ = writeln!(out, r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="black" stroke-width="2"/>"#,
                         x(q[3]), cy - 9.0, cy + 9.0);
        for &d in &[q[0], q[6]] {
            if x(d) <= PLOT_X1 {
                let _ = writeln!(out, r#"<circle cx="{:.1}" cy="{cy:.1}" r="2" fill="{c}"/>"#, x(d));
            } else {
                let _ = writeln!(out, r#"<circle cx="{PLOT_X1}" cy="{cy:.1}" r="2.5" fill="none" stroke="{c}"/>"#);
            }
        }
        let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                         x(q[6]).min(PLOT_X1) + 6.0, cy + 4.0, esc(&fmt_time(q[3])));
    }
    let bottom = top + row_h * items.len() as f64;
    let _ = writeln!(out, r#"<line x1="{PLOT_X0}" x2="{PLOT_X1}" y1="{bottom:.1}" y2="{bottom:.1}" stroke="black"/>"#);
    let mut t = 0.0;
    while t <= axis_max + step / 1000.0 {
        let tx = PLOT_X0 + t / axis_max * (PLOT_X1 - PLOT_X0);
        let _ = writeln!(out, r#"<line x1="{tx:.1}" x2="{tx:.1}" y1="{top:.1}" y2="{:.1}" stroke="gainsboro"/>"#, bottom);
        let _ = writeln!(out, r#"<text x="{tx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                         bottom + 13.0, format_tick(t));
        t += step;
    }
    let _ = writeln!(out, r#"<text x="{PLOT_X1}" y="{:.1}" text-anchor="end" font-size="10">{unit}</text>"#, bottom + 26.0);
    bottom + 36.0 - y0
}

fn format_tick(t: f64) -> String {
    if t == t.round() { format!("{t:.0}") } else { format!("{t}") }
}

/// Log-log chart of the scale figures against N.
fn svg_scale(out: &mut String, y0: f64, points: &[ScalePoint]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let h = 260.0;
    let (px0, px1, py0, py1) = (PLOT_X0, PLOT_X1 - 200.0, y0 + 30.0, y0 + 30.0 + h);
    let med = |f: &dyn Fn(&ScalePoint) -> &Vec<f64>| points.iter().map(|p| median(f(p))).collect::<Vec<f64>>();
    let series: [(&str, &str, &str, Vec<f64>); 6] = [
        ("stop→STOP, monitor-add", COLORS[1], "", med(&|p| &p.event[0])),
        ("stop→STOP, command line", COLORS[0], "6,4", med(&|p| &p.event[1])),
        ("query-monitors, monitor-add", COLORS[2], "", med(&|p| &p.query[0])),
        ("query-monitors, command line", COLORS[3], "6,4", med(&|p| &p.query[1])),
        ("query-name, monitor-add", COLORS[4], "", med(&|p| &p.name[0])),
        ("query-name, command line", COLORS[5], "6,4", med(&|p| &p.name[1])),
    ];
    let ns: Vec<f64> = points.iter().map(|p| (p.n as f64).log10()).collect();
    let all: Vec<f64> = series.iter().flat_map(|s| s.3.iter().copied()).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).log10().floor();
    let hi = all.iter().copied().fold(0.0, f64::max).log10().ceil();
    let (nlo, nhi) = (ns[0], ns[ns.len() - 1]);
    let x = |ln: f64| px0 + (ln - nlo) / (nhi - nlo).max(1e-9) * (px1 - px0);
    let y = |v: f64| py1 - (v.log10() - lo) / (hi - lo).max(1e-9) * (py1 - py0);
    let _ = writeln!(out, r#"<text x="10" y="{:.1}" font-weight="bold">6. Scale: median time vs number of monitors N, each with a client (log-log)</text>"#, y0 + 16.0);
    let mut e = lo;
    while e <= hi {
        let v = 10f64.powf(e);
        let _ = writeln!(out, r#"<line x1="{px0}" x2="{px1}" y1="{0:.1}" y2="{0:.1}" stroke="gainsboro"/>"#, y(v));
        let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"#,
                         px0 - 4.0, y(v) + 3.0, esc(&fmt_time(v)));
        e += 1.0;
    }
    for p in points {
        let lx = x((p.n as f64).log10());
        let _ = writeln!(out, r#"<line x1="{lx:.1}" x2="{lx:.1}" y1="{py0:.1}" y2="{py1:.1}" stroke="gainsboro"/>"#);
        let _ = writeln!(out, r#"<text x="{lx:.1}" y="{:.1}" text-anchor="middle" font-size="10">N={}</text>"#, py1 + 13.0, p.n);
    }
    // Dotted reference line of slope 1 (linear growth) through the first point.
    let first = series[0].3[0];
    let _ = writeln!(out, r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="gray" stroke-dasharray="2,3"/>"#,
                     x(nlo), y(first), x(nhi), y(first * 10f64.powf(nhi - nlo)).max(py0));
    for (i, (label, c, dash, vals)) in series.iter().enumerate() {
        let pts: Vec<String> = ns.iter().zip(vals).map(|(&n, &v)| format!("{:.1},{:.1}", x(n), y(v))).collect();
        let _ = writeln!(out, r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                         pts.join(" "));
        for p in &pts {
            let (cx, cy) = p.split_once(',').expect("point");
            let _ = writeln!(out, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{c}"/>"#);
        }
        let ly = py0 + 10.0 + 18.0 * i as f64;
        let _ = writeln!(out, r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                         px1 + 10.0, px1 + 35.0);
        let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#, px1 + 40.0, ly + 3.0, esc(label));
    }
    let ly = py0 + 10.0 + 18.0 * series.len() as f64;
    let _ = writeln!(out, r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="gray" stroke-dasharray="2,3"/>"#,
                     px1 + 10.0, px1 + 35.0);
    let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}" font-size="10">linear growth</text>"#, px1 + 40.0, ly + 3.0);
    py1 + 30.0 - y0
}

fn svg(report: &Report, header: &str) -> String {
    let mut body = String::new();
    let mut y = 50.0;
    for (title, items) in &report.groups {
        y += svg_box_group(&mut body, y, title, items) + 10.0;
    }
    y += svg_scale(&mut body, y, &report.scale);
    let mut out = String::new();
    let _ = writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{:.0}" font-family="sans-serif" font-size="12">"#, y + 20.0);
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="20" font-size="14" font-weight="bold">QMP monitor latency: boxes p25–p75, bar median (value printed), whiskers p5–p95, dots p1/p99 (open: off the axis)</text>"#);
    let _ = writeln!(out, r#"<text x="10" y="38" font-size="11">{}</text>"#, esc(header));
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

// ---------------------------------------------------------------------------

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
    let steps: [Step; 6] = [
        ("1. hot path", &|r| hot_path(&rep, r)),
        ("2. patch overhead", &|r| patch_overhead(&rep, r)),
        ("3. fresh session", &|r| fresh_session(&rep, r)),
        ("4. relay", &|r| proxy(&rep, r)),
        ("5. churn", &|r| churn(&rep, r)),
        ("6. scale", &|r| scale(&rep, r, nofile)),
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
        if quick { " (BENCH_QUICK: too few repetitions to mean anything)" } else { "" }
    );
    let text = table(&report, &header);
    println!("\n{text}");
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("build/bench");
    std::fs::create_dir_all(&out_dir).expect("build/bench");
    std::fs::write(out_dir.join("results.md"), &text).expect("results.md");
    std::fs::write(out_dir.join("latency.svg"), svg(&report, header.trim())).expect("latency.svg");
    println!("wrote {} and {}", out_dir.join("results.md").display(), out_dir.join("latency.svg").display());
}
