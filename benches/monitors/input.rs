// SPDX-License-Identifier: GPL-2.0-or-later
//! 7. Input path: how QEMU reads a request
//!
//! The round trip of a 4 KiB request, patched vs unpatched QEMU, and the
//! read system calls QEMU makes per request, counted by strace.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{
    client::{Raw, QUERY_NAME},
    qemu::{baseline_bin, cli_socket_monitor, patched_bin, Proc},
    report::{fmt_time, verdict, Report},
    stats::{interleave, median},
    Reps,
};

/// A query-name padded with blanks to `len` bytes, newline included: its
/// reply is as short as query-name's, so the round trip is the request's.
pub fn padded_query_name(len: usize) -> Vec<u8> {
    let head = b"{\"execute\":\"query-name\"";
    let tail = b"}\n";
    assert!(len >= head.len() + tail.len());
    let mut v = head.to_vec();
    v.resize(len - tail.len(), b' ');
    v.extend_from_slice(tail);
    v
}

const BIG: usize = 4096;

pub fn run(rep: &Reps, report: &mut Report) {
    let base = baseline_bin();
    if !base.exists() {
        report.notes.push(format!(
            "7: skipped, no baseline binary at {}",
            base.display()
        ));
        return;
    }
    big_request(rep, report, &base);
    read_calls(rep, report, &base);
}

/// 4 KiB and query-name round trips, one patched and one unpatched
/// process per group.  The unpatched process's two round trips give its
/// cost per input byte and its cost without input (the intercept): the
/// part of a round trip that reading in chunks cannot remove.
fn big_request(rep: &Reps, report: &mut Report, base: &std::path::Path) {
    let big = padded_query_name(BIG);
    let mut runs = Vec::new();
    for _ in 0..rep.instances {
        let extra = cli_socket_monitor("m");
        let procs = [
            Proc::launch(&patched_bin(), &extra),
            Proc::launch(base, &extra),
        ];
        let mut clients: Vec<Raw> = procs
            .iter()
            .map(|p| Raw::connect_retry(&p.sock("m")))
            .collect();
        for c in clients.iter_mut() {
            c.handshake();
        }
        // 0, 1: 4 KiB on patched, unpatched; 2, 3: query-name on them
        runs.push(interleave(4, rep.big / rep.instances, 3, |i| {
            let req = if i < 2 { &big[..] } else { QUERY_NAME };
            clients[i % 2].send(req);
            clients[i % 2].check_reply_ok();
        }));
        drop(clients);
        for p in procs {
            p.quit();
        }
    }
    let col = |k: usize| runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
    report.compare_instances(
        "7a",
        "4 KiB request (query-name padded with blanks) round trip: patched vs unpatched QEMU",
        &col(0),
        &col(1),
        Some(0.05),
    );
    // The request is dispatched at its closing brace: bytes read before.
    let (small_len, big_len) = ((QUERY_NAME.len() - 1) as f64, (BIG - 1) as f64);
    let (t_small, t_big) = (median(&col(3).concat()), median(&col(1).concat()));
    let per_byte = (t_big - t_small) / (big_len - small_len);
    let fixed = t_small - small_len * per_byte;
    report.notes.push(format!(
        "7a: unpatched QEMU, same processes, straight line through query-name {} and 4 KiB \
         {}: {per_byte:.2} µs per input byte and {fixed:.0} µs at zero bytes, {:.2} of its \
         query-name round trip. The fit hides the thread wake-ups a single request pays (the \
         byte loop keeps the I/O thread awake): patched query-name in the same rounds took {} \
         ({:.2} of unpatched).",
        fmt_time(t_small),
        fmt_time(t_big),
        fixed / t_small,
        fmt_time(median(&col(2).concat())),
        median(&col(2).concat()) / t_small,
    ));
    report.groups.push((
        "7a. Input path: 4 KiB request round trip".into(),
        vec![
            ("unpatched QEMU".into(), col(1).concat()),
            ("patched QEMU".into(), col(0).concat()),
        ],
    ));
}

/// strace attached to every thread of a process, counting its read system
/// calls; the summary comes when it is interrupted.  A thread collects
/// strace's stderr, so that no wait on it is unbounded.
struct Strace {
    child: Child,
    stderr: mpsc::Receiver<String>,
    text: String,
}

const READ_CALLS: &str = "read,readv,recvmsg,recvfrom";

impl Strace {
    fn attach(pid: u32, threads: usize) -> Option<Strace> {
        let mut child = Command::new("strace")
            .args(["-f", "-c", "-e"])
            .arg(format!("trace={READ_CALLS}"))
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut err = child.stderr.take()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let mut st = Strace {
            child,
            stderr: rx,
            text: String::new(),
        };
        // "Process N attached" for every thread, then silence until the
        // summary: attached once every thread is, or once strace has been
        // quiet for a while after the first (threads come and go).
        let deadline = Instant::now() + Duration::from_secs(10);
        while st.text.matches("attached").count() < threads {
            let quiet = Duration::from_millis(if st.text.contains("attached") {
                500
            } else {
                10_000
            });
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(quiet);
            match st.stderr.recv_timeout(left) {
                Ok(s) => st.text.push_str(&s),
                Err(mpsc::RecvTimeoutError::Timeout) if st.text.contains("attached") => break,
                Err(_) => {
                    st.stop();
                    return None;
                }
            }
        }
        Some(st)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Detaches and returns (name, calls) of each read call seen.
    fn finish(mut self) -> Vec<(String, u64)> {
        self.stop();
        while let Ok(s) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            self.text.push_str(&s);
        }
        // "% time  seconds  usecs/call  calls  [errors]  syscall"
        self.text
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let name = *w.last()?;
                let calls = w.get(3)?.parse().ok()?;
                READ_CALLS
                    .split(',')
                    .any(|c| c == name)
                    .then(|| (name.to_owned(), calls))
            })
            .collect()
    }
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Read calls per request: (recvmsg on the monitor socket, all read calls).
fn count_reads(p: &mut Proc, req: &[u8], n: usize) -> Option<(f64, f64)> {
    let mut c = Raw::connect_retry(&p.sock("m"));
    c.handshake();
    let pid = p.q.pid();
    let st = Strace::attach(pid, thread_count(pid))?;
    for _ in 0..n {
        c.send(req);
        c.check_reply_ok();
    }
    let calls = st.finish();
    let get = |name: &str| {
        calls
            .iter()
            .filter(|(c, _)| c == name)
            .map(|(_, k)| *k)
            .sum::<u64>()
    };
    let all: u64 = calls.iter().map(|(_, k)| k).sum();
    Some((get("recvmsg") as f64 / n as f64, all as f64 / n as f64))
}

fn read_calls(rep: &Reps, report: &mut Report, base: &std::path::Path) {
    let sizes: [(&str, Vec<u8>); 3] = [
        ("query-name (25 bytes)", QUERY_NAME.to_vec()),
        ("1 KiB request", padded_query_name(1024)),
        ("4 KiB request", padded_query_name(BIG)),
    ];
    for (k, (what, req)) in sizes.iter().enumerate() {
        let mut got = Vec::new();
        for bin in [patched_bin(), base.to_path_buf()] {
            let mut p = Proc::launch(&bin, &cli_socket_monitor("m"));
            got.push(count_reads(&mut p, req, rep.syscalls));
            p.quit();
        }
        let (Some(patched), Some(unpatched)) = (got[0], got[1]) else {
            report
                .notes
                .push("7b: strace could not attach; not measured".into());
            return;
        };
        report.row(
            &format!("7b{}", ["", "′", "″"][k]),
            &format!("read system calls per {what}: on the socket (recvmsg) / all read calls"),
            format!("{:.2} / {:.2}", patched.0, patched.1),
            format!("{:.2} / {:.2}", unpatched.0, unpatched.1),
            String::new(),
            "≤ 2",
            verdict(patched.0 <= 2.0),
        );
    }
    report.notes.push(format!(
        "7b: strace -f -c over {} round trips of one client; /proc/PID/io syscr does not count \
         recvmsg(2), which socket chardevs read with, so it cannot show these. \"All read \
         calls\" adds read(2) of the event notifiers that wake the main loop and the monitor \
         I/O thread.",
        rep.syscalls
    ));
}
