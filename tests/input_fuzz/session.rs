// SPDX-License-Identifier: GPL-2.0-or-later
//! One seed's QEMU and its rounds.  A round is one client session on
//! one of three monitors, each on its own listening socket chardev: a
//! command-line one (`-chardev socket` + `-mon mode=control`), a
//! dynamic one (`chardev-add` + `monitor-add`) and one made with QEMU
//! 11.1's spelling (`object-add monitor-qmp`).
//!
//! A session: connect, check the greeting, negotiate (with or without
//! OOB; sometimes after garbage, sometimes pipelined with the rest),
//! then a generated stream written in randomly cut writes, with QEMU's
//! dispatcher parked now and then (see park.rs).  It ends in one of
//! four ways: all replies read (`Complete`); closed right after writing
//! a random prefix, maybe mid-message (`Close`); a random prefix, then
//! shutdown(SHUT_WR) and everything read up to QEMU's close
//! (`HalfClose`: QEMU may cut the last reply there, a documented
//! limitation that is counted, not failed); or closed during
//! negotiation (`EarlyClose`).  After
//! every round the manager must answer and QEMU's fds must be those it
//! had before the first round.

use std::{
    collections::HashMap,
    fs::File,
    io::Write,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    check::{cut, Check},
    gen::{escaped, split, Gen, Stream},
    park::{open_reader, wait_parked, Fifo},
};
use crate::common::{join_timeout, Incoming, Qemu, Qmp, Rng};

/// How long a fuzzing client waits for each message.  QEMU answers in
/// milliseconds (a parked dispatcher is released within 300 ms); only a
/// wedged monitor gets near it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// Streams stop growing at about this size.
const MAX_STREAM: usize = 3 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Complete,
    Close,
    HalfClose,
    EarlyClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Park {
    No,
    /// The manager's chardev-add blocks the main loop.
    Manager,
    /// The session's own first request does.
    Own,
}

#[derive(Debug)]
struct Plan {
    mon: usize,
    oob: bool,
    /// Garbage and refused requests before qmp_capabilities.
    pre: usize,
    /// qmp_capabilities and the rest in one stream (OOB off only).
    pipeline: bool,
    park: Park,
    unpark_ms: u64,
    segments: usize,
    end: End,
    /// Complete: a partial request after the last reply, then the close.
    trailing: bool,
    /// The close is a shutdown(SHUT_RDWR) rather than a close(2).
    shutdown: bool,
}

/// What one session wrote, kept for the report of a failure.
pub struct Record {
    pub session: u64,
    pub round: usize,
    pub mon: &'static str,
    pub plan: String,
    pub bytes: Vec<u8>,
}

struct Mon {
    id: &'static str,
    sock: PathBuf,
    last: Option<Record>,
}

#[derive(Default, Debug)]
pub struct Stats {
    pub sessions: HashMap<&'static str, usize>,
    pub bytes: usize,
    pub writes: usize,
    pub tags: usize,
    pub replies: usize,
    pub errors: usize,
    pub parked: usize,
    pub kinds: HashMap<&'static str, usize>,
    /// Half-closed sessions whose last reply QEMU cut at the end of
    /// input: the documented limitation (docs/contract.md), which
    /// released QEMU has too.
    pub cut_at_input_end: usize,
}

pub struct Fuzzer {
    pub qemu: Qemu,
    seed: u64,
    /// The round's generator: each round's plan and bytes depend on the
    /// seed and the round number only.
    rng: Rng,
    mons: Vec<Mon>,
    fifo: Fifo,
    session: u64,
    /// Tag keys and garbage ids of finished sessions.
    foreign: HashMap<String, (u64, &'static str)>,
    /// The session running now.
    current: Option<Record>,
    /// What the round is doing, for the report of a failure.
    pub progress: String,
    pub base_fds: Vec<(std::os::fd::RawFd, String)>,
    pub stats: Stats,
    huge: usize,
    /// Sessions negotiate OOB: always, never, or at random (None).
    oob: Option<bool>,
    /// Print each round's plan (`QMH_FUZZ_VERBOSE`).
    verbose: bool,
}

/// Shuts the connection down when dropped during a panic, so that the
/// writer thread's blocked write fails at once; a session that ends
/// normally disarms it and closes the connection its own way.
struct Hangup(Option<File>);

impl Hangup {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Hangup {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            // SAFETY: plain syscall on our own fd.
            unsafe { libc::shutdown(f.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// Writes `bytes[..limit]` in the writes `cuts` gives, pausing
/// `pauses[i]` µs after write i; then shutdown(SHUT_WR) if `half_close`.
/// Each write is bounded by the socket's SO_SNDTIMEO.
fn spawn_writer(
    mut file: File,
    bytes: Arc<Vec<u8>>,
    cuts: Vec<usize>,
    limit: usize,
    pauses: Vec<u64>,
    half_close: bool,
) -> JoinHandle<std::io::Result<usize>> {
    std::thread::spawn(move || {
        let mut at = 0;
        let mut writes = 0;
        for (i, &end) in cuts.iter().enumerate() {
            let end = end.min(limit);
            if end > at {
                file.write_all(&bytes[at..end])?;
                writes += 1;
                at = end;
                if pauses[i] > 0 {
                    std::thread::sleep(Duration::from_micros(pauses[i]));
                }
            }
            if at == limit {
                break;
            }
        }
        if half_close {
            // SAFETY: plain syscall on our own fd.
            unsafe { libc::shutdown(file.as_raw_fd(), libc::SHUT_WR) };
        }
        Ok(writes)
    })
}

impl Fuzzer {
    pub fn start(seed: u64, huge: usize, oob: Option<bool>) -> Self {
        let mut qemu = Qemu::start(&[
            "-chardev",
            "socket,id=cli-chr,path=@DIR@/cli-chr.sock,server=on,wait=off",
            "-mon",
            "chardev=cli-chr,mode=control,id=cli",
        ]);
        qemu.add_socket_chardev("dyn-chr");
        qemu.monitor_add("dyn", "dyn-chr");
        qemu.add_socket_chardev("obj-chr");
        qemu.mgr.ok(
            "object-add",
            json!({"qom-type": "monitor-qmp", "id": "obj", "chardev": "obj-chr"}),
        );
        let mons = ["cli", "dyn", "obj"]
            .into_iter()
            .map(|id| Mon {
                id,
                sock: qemu.sock(&format!("{id}-chr")),
                last: None,
            })
            .collect();
        let fifo = Fifo::new(qemu.dir.join("park.fifo"));
        let base_fds = qemu.fds();
        Fuzzer {
            qemu,
            seed,
            rng: Rng::new(seed),
            mons,
            fifo,
            session: 0,
            foreign: HashMap::new(),
            current: None,
            progress: "starting".to_owned(),
            base_fds,
            stats: Stats::default(),
            huge,
            oob,
            verbose: std::env::var_os("QMH_FUZZ_VERBOSE").is_some(),
        }
    }

    fn plan(&mut self) -> Plan {
        let rng = &mut self.rng;
        let mon = rng.below(self.mons.len());
        let oob = self.oob.unwrap_or_else(|| rng.chance(1, 2));
        let end = match rng.below(10) {
            0..=4 => End::Complete,
            5 | 6 => End::Close,
            7 | 8 => End::HalfClose,
            _ => End::EarlyClose,
        };
        let park = match (end, rng.below(20)) {
            (End::EarlyClose, _) => Park::No,
            (_, 0..=4) => Park::Manager,
            (End::Complete, 5..=7) => Park::Own,
            _ => Park::No,
        };
        Plan {
            mon,
            oob,
            pre: if rng.chance(1, 4) { rng.range(1, 4) } else { 0 },
            pipeline: !oob && end != End::EarlyClose && rng.chance(1, 3),
            park,
            unpark_ms: *rng.pick(&[0, 1, 5, 20, 100, 300]),
            segments: rng.range(1, 30),
            end,
            trailing: rng.chance(1, 4),
            shutdown: rng.chance(1, 2),
        }
    }

    /// Negotiation, after `pre` pieces of garbage and refused requests.
    fn phase_a(&mut self, s: u64, plan: &Plan) -> Stream {
        let mut g = Gen::new(&mut self.rng, s, 'a', plan.oob, false, self.huge);
        for _ in 0..plan.pre {
            if g.rng.chance(1, 3) {
                g.tagged();
            } else {
                g.garbage();
            }
        }
        g.negotiation();
        g.finish()
    }

    /// The fuzz stream proper, ending with a tagged in-band request.
    fn phase_b(&mut self, s: u64, plan: &Plan) -> Stream {
        let fifo = self.fifo.path.display().to_string();
        let mut g = Gen::new(&mut self.rng, s, 'b', plan.oob, true, self.huge);
        if plan.park == Park::Own {
            g.parking(&format!("park{s}"), &fifo);
        }
        for _ in 0..plan.segments {
            match g.rng.below(20) {
                0..=8 => {
                    g.garbage();
                }
                9..=16 => g.tagged(),
                _ if plan.oob => g.tagged_oob(),
                _ => g.tagged(),
            }
            if g.size() > MAX_STREAM {
                break;
            }
        }
        g.tagged();
        g.finish()
    }

    /// Runs round `round`; panics on the first violation.
    pub fn round(&mut self, round: usize) {
        self.rng = Rng::new(self.seed.rotate_left(24) ^ round as u64);
        let plan = self.plan();
        self.session += 1;
        let s = self.session;
        let mon_id = self.mons[plan.mon].id;
        let sock = self.mons[plan.mon].sock.clone();
        let a = self.phase_a(s, &plan);
        let b = if plan.end == End::EarlyClose {
            Stream::default()
        } else {
            self.phase_b(s, &plan)
        };
        // The phases as written: [A, B], [A+B] or [A] alone.
        let phases: Vec<Stream> = if plan.end == End::EarlyClose {
            vec![a]
        } else if plan.pipeline {
            vec![concat(a, b)]
        } else {
            vec![a, b]
        };
        let last_len = phases.last().map_or(0, |p| p.bytes.len());
        let marks = phases.last().map_or(&[][..], |p| &p.marks[..]);
        let limit = match plan.end {
            End::Complete => last_len,
            _ if !marks.is_empty() && self.rng.chance(1, 2) => *self.rng.pick(marks),
            _ => self.rng.range(0, last_len),
        };
        let desc = format!("{plan:?}, cut at {limit} of {last_len} bytes");
        if self.verbose {
            eprintln!("input_fuzz: round {round}, session {s} on {mon_id}: {desc}");
        }
        let mut written: Vec<u8> = vec![];
        for (i, p) in phases.iter().enumerate() {
            let upto = if i + 1 == phases.len() {
                limit
            } else {
                p.bytes.len()
            };
            written.extend_from_slice(&p.bytes[..upto]);
        }
        self.current = Some(Record {
            session: s,
            round,
            mon: mon_id,
            plan: desc,
            bytes: written,
        });

        self.progress = format!("connecting to monitor {mon_id}");
        let mut conn = Qmp::connect(&sock);
        conn.set_timeout(REPLY_TIMEOUT);
        let mut hangup = Hangup(Some(conn.writer_clone()));
        self.progress = format!("waiting for the greeting of monitor {mon_id}");
        match conn.recv_lenient() {
            Incoming::Msg(m) => {
                let caps = &m["QMP"]["capabilities"];
                assert!(
                    caps.as_array().is_some_and(|c| c.contains(&json!("oob"))),
                    "the first message is not a greeting offering oob: {}",
                    cut(&m)
                );
            }
            other => panic!("no greeting: {other:?}"),
        }
        let foreign = std::mem::take(&mut self.foreign);
        let mut check = Check::new(s, &foreign);
        let mut unparker: Option<JoinHandle<OwnedFd>> = None;
        for (i, p) in phases.iter().enumerate() {
            let last = i + 1 == phases.len();
            let upto = if last { limit } else { p.bytes.len() };
            let end = if last { plan.end } else { End::Complete };
            check.add(&p.tags, upto);
            if last && plan.park != Park::No {
                unparker = Some(self.park(s, &plan));
            }
            let cuts = split(&mut self.rng, &p.bytes);
            let pauses: Vec<u64> = cuts
                .iter()
                .map(|_| {
                    if self.rng.chance(1, 4) {
                        self.rng.below(2000) as u64
                    } else {
                        0
                    }
                })
                .collect();
            self.stats.writes += cuts.iter().filter(|&&c| c <= upto).count();
            self.stats.bytes += upto;
            let half =
                matches!(end, End::HalfClose) || (end == End::EarlyClose && self.rng.chance(1, 2));
            let writer = spawn_writer(
                conn.writer_clone(),
                Arc::new(p.bytes.clone()),
                cuts,
                upto,
                pauses,
                half,
            );
            match end {
                End::Complete => {
                    while !check.complete() {
                        self.progress = format!(
                            "session {s} on monitor {mon_id} reading replies: {}",
                            check.pending()
                        );
                        match conn.recv_lenient() {
                            Incoming::Msg(m) => {
                                check.message(&m).unwrap_or_else(|e| panic!("{e}"));
                            }
                            other => {
                                panic!("the connection ended ({other:?}) with {}", check.pending())
                            }
                        }
                    }
                }
                _ if half => {
                    loop {
                        self.progress = format!(
                            "session {s} on monitor {mon_id} after shutdown(SHUT_WR): \
                             reading up to QEMU's close"
                        );
                        match conn.recv_lenient() {
                            Incoming::Msg(m) => {
                                check.message(&m).unwrap_or_else(|e| panic!("{e}"));
                            }
                            Incoming::Closed => break,
                            // QEMU's socket chardev disconnects at the end
                            // of input with output still pending: replies
                            // that came whole were checked above
                            Incoming::Partial(_) => {
                                self.stats.cut_at_input_end += 1;
                                break;
                            }
                        }
                    }
                    check
                        .oob_before_last_answer()
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                _ => {}
            }
            self.progress = format!("session {s} on monitor {mon_id}: joining the writer");
            match join_timeout(writer, Duration::from_secs(60), "the writer") {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("writing to monitor {mon_id} failed: {e}"),
                Err(_) => panic!("the writer thread panicked"),
            }
        }
        self.stats.tags += phases.iter().map(|p| p.tags.len()).sum::<usize>();
        self.stats.replies += check.replies;
        self.stats.errors += check.errors;
        for p in &phases {
            for k in &p.kinds {
                *self.stats.kinds.entry(k).or_default() += 1;
            }
        }
        *self
            .stats
            .sessions
            .entry(match plan.end {
                End::Complete => "complete",
                End::Close => "close",
                End::HalfClose => "half-close",
                End::EarlyClose => "early close",
            })
            .or_default() += 1;
        drop(check);
        self.foreign = foreign;

        // The end of the session.
        if plan.end == End::Complete && plan.trailing {
            let partial = b"{\"execute\": \"query-name\", \"id\": \"trailing\", \"argu";
            let n = self.rng.range(1, partial.len());
            conn.send_bytes(&partial[..n]);
        }
        hangup.disarm();
        if plan.shutdown {
            conn.shutdown();
        }
        drop(conn);
        if let Some(h) = unparker {
            self.progress = format!("round {round}: joining the unparking thread");
            let fd = join_timeout(h, Duration::from_secs(30), "the unparking thread")
                .expect("the unparking thread panicked");
            self.fifo.keep(fd);
        }
        self.progress = format!("round {round}: ending the park");
        match plan.park {
            Park::No => {}
            Park::Manager => {
                let rsp = self
                    .qemu
                    .mgr
                    .recv_reply_awaiting("the reply to the parking chardev-add")
                    .expect("the manager's connection ended");
                assert_eq!(rsp, json!({"return": {}}), "the parking chardev-add");
                self.qemu
                    .mgr
                    .ok("chardev-remove", json!({"id": format!("park{s}")}));
            }
            Park::Own => {
                self.qemu
                    .mgr
                    .ok("chardev-remove", json!({"id": format!("park{s}")}));
            }
        }
        for p in &phases {
            for t in &p.tags {
                self.foreign.insert(t.key.clone(), (s, mon_id));
            }
            for g in &p.garbage_ids {
                self.foreign.insert(g.clone(), (s, mon_id));
            }
        }
        self.mons[plan.mon].last = self.current.take();

        self.progress = format!("round {round}: the manager after the session");
        self.qemu.assert_alive();
        self.progress = format!("round {round}: QEMU's fds after the session");
        self.check_fds(Duration::from_secs(10));
    }

    /// Parks QEMU's dispatcher for `plan` and returns the thread that
    /// lets it go on after `plan.unpark_ms`, returning the FIFO's reader.
    fn park(&mut self, s: u64, plan: &Plan) -> JoinHandle<OwnedFd> {
        self.stats.parked += 1;
        self.fifo.arm();
        let pid = self.qemu.pid();
        if plan.park == Park::Manager {
            let fifo = self.fifo.path.display().to_string();
            self.qemu
                .mgr
                .send(&json!({"execute": "chardev-add", "arguments": {
                "id": format!("park{s}"),
                "backend": {"type": "file", "data": {"out": fifo}}}}));
            wait_parked(pid, Duration::from_secs(5));
        }
        let path = self.fifo.path.clone();
        let own = plan.park == Park::Own;
        let delay = Duration::from_millis(plan.unpark_ms);
        std::thread::spawn(move || {
            if own {
                wait_parked(pid, Duration::from_secs(5));
            }
            std::thread::sleep(delay);
            open_reader(&path)
        })
    }

    /// QEMU's fds are those it had before the first round (waited for
    /// up to `limit`: a client's close goes through the I/O thread).
    pub fn check_fds(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let fds = self.qemu.fds();
            if fds == self.base_fds {
                return;
            }
            if Instant::now() > deadline {
                let gone: Vec<_> = self.base_fds.iter().filter(|f| !fds.contains(f)).collect();
                let new: Vec<_> = fds.iter().filter(|f| !self.base_fds.contains(f)).collect();
                panic!(
                    "QEMU's fds differ from before the first round ({} then, {} now): \
                     gone {gone:?}, new {new:?}",
                    self.base_fds.len(),
                    fds.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The size limit of huge strings and numbers from now on.
    pub fn set_huge(&mut self, huge: usize) {
        self.huge = huge;
    }

    /// Releases a parked QEMU (after a failure).
    pub fn release(&mut self) {
        self.fifo.release();
    }

    /// Writes the session that failed and the previous session of the
    /// same monitor to files; returns a description for the report.
    pub fn dump(&mut self, seed: u64, dir: &std::path::Path) -> String {
        let Some(cur) = self.current.take() else {
            return String::new();
        };
        let _ = std::fs::create_dir_all(dir);
        let mut out = String::new();
        let mut write = |what: &str, r: &Record| {
            let path = dir.join(format!(
                "seed{seed}-round{}-session{}-{}.bin",
                r.round, r.session, r.mon
            ));
            let saved = match std::fs::write(&path, &r.bytes) {
                Ok(()) => format!("saved in {}", path.display()),
                Err(e) => format!("not saved: {e}"),
            };
            out.push_str(&format!(
                "\n  {what}: round {}, session {} on monitor {}: {}\n    {} bytes written ({saved}):\n    {}",
                r.round,
                r.session,
                r.mon,
                r.plan,
                r.bytes.len(),
                escaped(&r.bytes, 600)
            ));
        };
        write("failing session", &cur);
        if let Some(prev) = self
            .mons
            .iter()
            .find(|m| m.id == cur.mon)
            .and_then(|m| m.last.as_ref())
        {
            write("previous session on that monitor", prev);
        }
        out
    }
}

fn concat(mut a: Stream, b: Stream) -> Stream {
    let off = a.bytes.len();
    a.bytes.extend_from_slice(&b.bytes);
    a.tags.extend(b.tags.into_iter().map(|mut t| {
        t.end += off;
        t
    }));
    a.garbage_ids.extend(b.garbage_ids);
    a.kinds.extend(b.kinds);
    a.marks.extend(b.marks.into_iter().map(|m| m + off));
    a
}
