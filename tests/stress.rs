// SPDX-License-Identifier: GPL-2.0-or-later
//! Reliability tests: the races of monitor removal (docs/contract.md,
//! "Removal order"), driven many times over real sockets.
//!
//! Every scenario has a fixed number of rounds and no timing assertion:
//! a watchdog only kills QEMU if the scenario hangs.  Each one ends with
//! QEMU alive and answering on its original (manager) monitor, with the
//! same monitors, chardevs and number of open fds as at the start, and
//! with RSS checked against a baseline (see `RSS_SLACK_KB`).
//! docs/testing.md's "Reliability tests" says, for each test, which
//! race it drives and what failure it would show.

mod common;

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    join_scoped_timeout, join_timeout, seed, socket_chardev, wait_timeout, wait_until, Incoming,
    Qemu, Qmp, Rng, Snapshot, Watchdog,
};
use serde_json::{json, Value};

/// Per-scenario limit; only a hang gets near it.
const LIMIT: Duration = Duration::from_secs(600);

/// Limit of the waits for a helper thread within one round.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// RSS may exceed the baseline by this much.  The baseline is taken
/// after a warm-up (`WARMUP` rounds) so that the one-off growth is in
/// it: glibc's arena of the monitor I/O thread, the heap top that malloc
/// keeps after freeing, QEMU's lazily created state.  After the warm-up
/// RSS moved by 0 to 100 kB in these scenarios here.  Against that, a
/// leaked monitor costs about 1 kB and a leaked socket chardev 2.6 kB
/// (measured by adding 1,000 of each), so a monitor leaked per round
/// adds at least 450 kB over the 450 rounds after the warm-up of the
/// shortest scenarios, and 1.9 MB over the 2,000-round ones: 384 kB
/// catches either, with four times the noise as margin.
const RSS_SLACK_KB: u64 = 384;

/// Rounds before the RSS baseline is taken.
const WARMUP: usize = 50;

/// The RSS baseline: the start's fds, monitors and chardevs, with the
/// RSS measured after the warm-up.
fn baseline(start: &Snapshot, warm: &Snapshot) -> Snapshot {
    Snapshot {
        rss_kb: warm.rss_kb,
        ..start.clone()
    }
}

/// The end of every scenario: state back to `base`, then a clean quit.
fn finish(mut qemu: Qemu, wd: Watchdog, base: &Snapshot, what: &str) {
    qemu.check_against(base, RSS_SLACK_KB, what);
    drop(wd);
    let status = qemu.quit();
    assert!(status.success(), "{what}: QEMU exit: {status}");
}

fn chardev_add(q: &mut Qmp, id: &str, path: &Path) {
    q.ok("chardev-add", socket_chardev(id, path));
}

fn report(what: &str, start: Instant, rounds: usize, extra: &str) {
    eprintln!(
        "{what}: {rounds} rounds in {:.1} s {extra}",
        start.elapsed().as_secs_f64()
    );
}

/// Sets the flag when dropped: a thread that panics still stops the
/// loops that wait for it.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------
// 1. Churn
// ---------------------------------------------------------------------

const CHURN_CYCLES: usize = 2000;

/// chardev-add, monitor-add, connect, handshake, a command, disconnect,
/// monitor-remove, chardev-remove: the I/O-thread path, end to end.
#[test]
fn churn_socket_chardev() {
    let t0 = Instant::now();
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm("churn_socket_chardev", qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    let mut warm = None;
    for i in 0..CHURN_CYCLES {
        if i == WARMUP {
            warm = Some(qemu.snapshot());
        }
        let (chr, id) = (format!("c{i}"), format!("m{i}"));
        let path = qemu.sock(&chr);
        chardev_add(&mut qemu.mgr, &chr, &path);
        qemu.monitor_add(&id, &chr);
        let mut client = Qmp::connect(&path);
        let caps: &[&str] = if i % 2 == 0 { &[] } else { &["oob"] };
        assert_eq!(client.handshake(caps), ["oob"], "cycle {i}");
        assert_eq!(client.ok("query-name", json!({})), json!({}), "cycle {i}");
        drop(client);
        qemu.monitor_remove(&id);
        qemu.mgr.ok("chardev-remove", json!({"id": chr}));
    }
    report("churn_socket_chardev", t0, CHURN_CYCLES, "");
    let base = baseline(&start, &warm.expect("warm-up"));
    finish(qemu, wd, &base, "churn_socket_chardev");
}

/// The same on a ringbuf chardev, the one main-loop chardev type: the
/// monitor runs in the main loop; the greeting is read out of the ring.
#[test]
fn churn_ringbuf_chardev() {
    let t0 = Instant::now();
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm("churn_ringbuf_chardev", qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    let mut warm = None;
    for i in 0..CHURN_CYCLES {
        if i == WARMUP {
            warm = Some(qemu.snapshot());
        }
        let (chr, id) = (format!("r{i}"), format!("m{i}"));
        qemu.mgr.ok(
            "chardev-add",
            json!({"id": chr, "backend": {"type": "ringbuf", "data": {"size": 4096}}}),
        );
        qemu.monitor_add(&id, &chr);
        let out = qemu
            .mgr
            .ok("ringbuf-read", json!({"device": chr, "size": 4096}));
        let text = out.as_str().expect("ringbuf text");
        let greeting: Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("cycle {i}: {text:?}: {e}"));
        // Off the I/O thread there is no OOB.
        assert_eq!(greeting["QMP"]["capabilities"], json!([]), "cycle {i}");
        qemu.monitor_remove(&id);
        qemu.mgr.ok("chardev-remove", json!({"id": chr}));
    }
    report("churn_ringbuf_chardev", t0, CHURN_CYCLES, "");
    let base = baseline(&start, &warm.expect("warm-up"));
    finish(qemu, wd, &base, "churn_ringbuf_chardev");
}

/// The same through QEMU 11.1's spelling: object-add monitor-qmp, a
/// client, object-del.  Every fourth cycle is a one-shot session
/// (close-action=delete) whose client's leaving takes monitor, object
/// and chardev; of the others, half are deleted with their client still
/// connected (it sees the end), half after it left.
#[test]
fn churn_monitor_qmp_objects() {
    let what = "churn_monitor_qmp_objects";
    let t0 = Instant::now();
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    let mut warm = None;
    for i in 0..CHURN_CYCLES {
        if i == WARMUP {
            warm = Some(qemu.snapshot());
        }
        let ctx = format!("{what} cycle {i}");
        let (chr, id) = (format!("o{i}"), format!("obj{i}"));
        let path = qemu.sock(&chr);
        chardev_add(&mut qemu.mgr, &chr, &path);
        let one_shot = i % 4 == 3;
        qemu.mgr.ok(
            "object-add",
            json!({"qom-type": "monitor-qmp", "id": id, "chardev": chr,
                   "close-action": if one_shot { "delete" } else { "none" }}),
        );
        let mut client = Qmp::connect(&path);
        let caps: &[&str] = if i % 2 == 0 { &[] } else { &["oob"] };
        assert_eq!(client.handshake(caps), ["oob"], "{ctx}");
        assert_eq!(client.ok("query-name", json!({})), json!({}), "{ctx}");
        if one_shot {
            drop(client);
            wait_until("the one-shot session's chardev to go", || {
                !qemu.chardev_labels().contains(&chr)
            });
            assert!(!qemu.ids().contains(&id), "{ctx}: monitor left behind");
            continue;
        }
        if i % 4 == 0 {
            qemu.mgr.ok("object-del", json!({"id": id}));
            client.expect_eof();
        } else {
            drop(client);
            qemu.mgr.ok("object-del", json!({"id": id}));
        }
        qemu.mgr.ok("chardev-remove", json!({"id": chr}));
    }
    report(what, t0, CHURN_CYCLES, "");
    let base = baseline(&start, &warm.expect("warm-up"));
    finish(qemu, wd, &base, what);
}

// ---------------------------------------------------------------------
// Flooding clients
// ---------------------------------------------------------------------

/// One flood command; `n` is its id.
fn flood_command(rng: &mut Rng, n: usize, oob: bool) -> (String, bool) {
    if oob && rng.chance(1, 3) {
        return (
            format!("{{\"exec-oob\": \"query-yank\", \"id\": {n}}}\n"),
            true,
        );
    }
    let cmd = rng.pick(&["query-name", "query-status", "query-monitors"]);
    (format!("{{\"execute\": \"{cmd}\", \"id\": {n}}}\n"), false)
}

/// Writes commands in random batches until the connection breaks (or
/// an absurd cap); returns, per id, whether it was sent out-of-band.
fn flood_writer(mut out: std::fs::File, oob: bool, seed: u64) -> Vec<bool> {
    const CAP: usize = 1_000_000;
    let mut rng = Rng::new(seed);
    let mut kinds = Vec::new();
    while kinds.len() < CAP {
        let mut batch = String::new();
        let mut batch_kinds = Vec::new();
        for _ in 0..rng.range(1, 16) {
            let (text, is_oob) = flood_command(&mut rng, kinds.len() + batch_kinds.len(), oob);
            batch.push_str(&text);
            batch_kinds.push(is_oob);
        }
        // What a failed write_all got out is unknown: count the batch,
        // replies to it are allowed, not required.
        kinds.extend(batch_kinds);
        if out.write_all(batch.as_bytes()).is_err() {
            break;
        }
    }
    kinds
}

/// Checks the replies a flooding client got: each is a success with an
/// id it sent, none twice, in-band ones in order.
fn check_flood_replies(what: &str, replies: &[Value], kinds: &[bool]) {
    let mut seen = HashSet::new();
    let mut last_inband = None;
    for r in replies {
        assert!(r.get("return").is_some(), "{what}: not a success: {r}");
        let n = r["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: no id: {r}")) as usize;
        assert!(
            n < kinds.len(),
            "{what}: reply to a command never sent: {r}"
        );
        assert!(seen.insert(n), "{what}: two replies to command {n}");
        if !kinds[n] {
            assert!(
                last_inband.is_none_or(|l| l < n),
                "{what}: in-band reply {n} after {last_inband:?}"
            );
            last_inband = Some(n);
        }
    }
}

// ---------------------------------------------------------------------
// 2. Removal by the manager under a flood
// ---------------------------------------------------------------------

const FLOOD_ROUNDS: usize = 500;

/// A client floods its monitor while the manager removes it: the
/// removal races the I/O thread's reads and parsing, a full request
/// queue (the monitor suspended), OOB commands running in the I/O
/// thread, and a dispatcher with the monitor's requests queued.
fn remove_under_flood(oob: bool, what: &str, default_seed: u64) {
    let t0 = Instant::now();
    let mut rng = Rng::new(seed(what, default_seed));
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    let mut warm = None;
    let mut replies_total = 0;
    for round in 0..common::scaled(FLOOD_ROUNDS) {
        if round == WARMUP {
            warm = Some(qemu.snapshot());
        }
        let (chr, id) = (format!("f{round}"), format!("fm{round}"));
        let path = qemu.sock(&chr);
        chardev_add(&mut qemu.mgr, &chr, &path);
        qemu.monitor_add(&id, &chr);
        let mut client = Qmp::connect(&path);
        client.handshake(if oob { &["oob"] } else { &[] });
        let writer = client.writer_clone();
        let flood_seed = rng.next_u64();
        let flood = thread::spawn(move || flood_writer(writer, oob, flood_seed));
        // Remove after a random number of replies (0: at once).
        let wait_for = if rng.chance(1, 4) { 0 } else { rng.below(200) };
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut replies = Vec::new();
            let mut tail = None;
            let mut tx = Some(tx);
            loop {
                if replies.len() == wait_for {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                match client.recv_lenient() {
                    Incoming::Msg(m) if m.get("event").is_some() => {}
                    Incoming::Msg(m) => replies.push(m),
                    Incoming::Closed => break,
                    Incoming::Partial(p) => {
                        tail = Some(p);
                        break;
                    }
                }
            }
            (replies, tail)
        });
        match rx.recv_timeout(ROUND_LIMIT) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{what} round {round}: connection ended before the removal")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "{what} round {round}: timed out after {ROUND_LIMIT:?} waiting for {wait_for} \
                     replies"
                )
            }
        }
        qemu.monitor_remove(&id);
        // The client must see the connection end: a hang here is a
        // removed monitor that kept its client.
        let (replies, tail) = join_timeout(
            reader,
            ROUND_LIMIT,
            "the reader to see the removed monitor's connection end",
        )
        .expect("reader");
        let kinds = join_timeout(
            flood,
            ROUND_LIMIT,
            "the flood writer to see the connection end",
        )
        .expect("writer");
        // The client reads all the time, so nothing may be cut off: the
        // connection ends on a message boundary (docs/contract.md).
        assert!(
            tail.is_none(),
            "{what} round {round}: the connection ended inside a message: {tail:?}"
        );
        check_flood_replies(&format!("{what} round {round}"), &replies, &kinds);
        replies_total += replies.len();
        qemu.mgr.ok("chardev-remove", json!({"id": chr}));
    }
    report(
        what,
        t0,
        common::scaled(FLOOD_ROUNDS),
        &format!("({replies_total} replies)"),
    );
    let base = baseline(&start, &warm.expect("warm-up"));
    finish(qemu, wd, &base, what);
}

#[test]
fn remove_under_flood_inband() {
    remove_under_flood(false, "remove_under_flood_inband", 0x5eed_0002);
}

#[test]
fn remove_under_flood_oob() {
    remove_under_flood(true, "remove_under_flood_oob", 0x5eed_0003);
}

// ---------------------------------------------------------------------
// 3. Self-removal in the middle of a burst
// ---------------------------------------------------------------------

const SELF_ROUNDS: usize = 500;

/// A client sends a burst with monitor-remove of its own monitor in the
/// middle: every command before it is answered, then the removal's own
/// `{"return": {}}`, then EOF; nothing after the removal runs (OOB
/// commands after it may have run before it, in the I/O thread).
#[test]
fn self_removal_under_flood() {
    let what = "self_removal_under_flood";
    let t0 = Instant::now();
    let mut rng = Rng::new(seed(what, 0x5eed_0004));
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    let mut warm = None;
    for round in 0..common::scaled(SELF_ROUNDS) {
        if round == WARMUP {
            warm = Some(qemu.snapshot());
        }
        let ctx = format!("{what} round {round}");
        let oob = round % 2 == 1;
        let (chr, id) = (format!("s{round}"), format!("sm{round}"));
        let path = qemu.sock(&chr);
        chardev_add(&mut qemu.mgr, &chr, &path);
        qemu.monitor_add(&id, &chr);
        let mut client = Qmp::connect(&path);
        client.handshake(if oob { &["oob"] } else { &[] });

        let (pre, post) = (rng.below(40), rng.below(200));
        let remove = format!(
            "{{\"execute\": \"monitor-remove\", \"arguments\": {{\"id\": \"{id}\"}}, \"id\": \
             \"rm\"}}\n"
        );
        let mut text = String::new();
        let mut kinds = Vec::new();
        for n in 0..pre + post {
            if n == pre {
                text.push_str(&remove);
            }
            let (cmd, is_oob) = flood_command(&mut rng, n, oob);
            text.push_str(&cmd);
            kinds.push(is_oob);
        }
        if post == 0 {
            text.push_str(&remove);
        }
        // Written in random pieces, cut anywhere (also inside a
        // command), by a thread: the monitor stops reading when its
        // queue is full, and closes the connection at the end.
        let mut writer = client.writer_clone();
        let chunk_seed = rng.next_u64();
        let burst = thread::spawn(move || {
            let mut rng = Rng::new(chunk_seed);
            let mut bytes = text.as_bytes();
            while !bytes.is_empty() {
                let n = rng.range(1, 2048).min(bytes.len());
                if writer.write_all(&bytes[..n]).is_err() {
                    break;
                }
                bytes = &bytes[n..];
            }
        });

        let mut removed = false;
        let mut answered = HashSet::new();
        let mut last_inband = None;
        loop {
            match client.recv_lenient() {
                Incoming::Msg(m) if m.get("event").is_some() => {}
                Incoming::Msg(m) => {
                    assert!(!removed, "{ctx}: reply after the removal's: {m}");
                    if m["id"] == "rm" {
                        assert_eq!(m, json!({"return": {}, "id": "rm"}), "{ctx}");
                        removed = true;
                        continue;
                    }
                    assert!(m.get("return").is_some(), "{ctx}: not a success: {m}");
                    let n = m["id"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{ctx}: no id: {m}"))
                        as usize;
                    assert!(
                        n < pre || kinds[n],
                        "{ctx}: in-band command {n} after the removal ran: {m}"
                    );
                    assert!(answered.insert(n), "{ctx}: two replies to {n}");
                    if !kinds[n] {
                        assert!(
                            last_inband.is_none_or(|l| l < n),
                            "{ctx}: reply {n} after {last_inband:?}"
                        );
                        last_inband = Some(n);
                    }
                }
                Incoming::Closed => break,
                Incoming::Partial(p) => panic!("{ctx}: output cut short: {p:?}"),
            }
        }
        assert!(removed, "{ctx}: EOF without the removal's reply");
        let missing: Vec<_> = (0..pre).filter(|n| !answered.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "{ctx}: commands before the removal not answered: {missing:?}"
        );
        join_timeout(burst, ROUND_LIMIT, "the burst writer").expect("burst writer");
        assert!(!qemu.ids().contains(&id), "{ctx}: still listed");
        // The monitor is freed by now (EOF comes from the same bottom
        // half that frees it), so its chardev has no frontend.
        qemu.mgr.ok("chardev-remove", json!({"id": chr}));
    }
    report(what, t0, common::scaled(SELF_ROUNDS), "");
    let base = baseline(&start, &warm.expect("warm-up"));
    finish(qemu, wd, &base, what);
}

// ---------------------------------------------------------------------
// 4. Removal during event broadcasts
// ---------------------------------------------------------------------

const BROADCAST_ROUNDS: usize = 500;

/// What the clients of the removed monitors saw.
#[derive(Default)]
struct BroadcastSeen {
    events: usize,
    /// Events a client got before the greeting, while its monitor was
    /// in capability negotiation, or after it was removed: not allowed
    /// (docs/contract.md: events go to live monitors in command mode), collected to
    /// report them all at the end while the rest of the scenario still
    /// runs.
    violations: Vec<String>,
}

/// Adds and removes monitors through `ctrl` (the manager, or another
/// client in command mode) while events are being broadcast.
fn broadcast_adder(
    ctrl: &mut Qmp,
    dir: &Path,
    prefix: &str,
    rounds: usize,
    seed: u64,
) -> BroadcastSeen {
    let mut rng = Rng::new(seed);
    let mut seen = BroadcastSeen::default();
    for i in 0..rounds {
        let ctx = format!("adder {prefix} round {i}");
        let (chr, id) = (format!("{prefix}c{i}"), format!("{prefix}m{i}"));
        let path = dir.join(format!("{chr}.sock"));
        chardev_add(ctrl, &chr, &path);
        // From here to the removal's reply `ctrl` collects the events
        // broadcast while the monitor may have been live: the only ones
        // its client may get (see Qmp::expect_eof_after).
        ctrl.events.clear();
        ctrl.ok("monitor-add", json!({"id": id, "chardev": chr}));
        let mut client = Qmp::connect(&path);
        // 0: stays in capability negotiation (gets no events);
        // 1: command mode; 2: command mode and a command in flight.
        let mode = rng.below(3);
        // The greeting must be the first thing a client gets.
        loop {
            let m = client
                .recv()
                .unwrap_or_else(|| panic!("{ctx}: EOF before the greeting"));
            if m.get("QMP").is_some() {
                break;
            }
            assert!(m.get("event").is_some(), "{ctx}: {m}");
            seen.violations
                .push(format!("{ctx}: event before the greeting: {m}"));
        }
        if mode >= 1 {
            let caps = if rng.chance(1, 2) {
                json!(["oob"])
            } else {
                json!([])
            };
            let rsp =
                client.call(json!({"execute": "qmp_capabilities", "arguments": {"enable": caps}}));
            assert_eq!(rsp, json!({"return": {}}), "{ctx}");
        }
        if mode == 2 {
            client.send(&json!({"execute": "query-name", "id": "inflight"}));
        }
        ctrl.ok("monitor-remove", json!({"id": id}));
        let emitted_before: Vec<Value> = ctrl.events.drain(..).collect();
        // Until the end: events (only in command mode), maybe the reply
        // to the command in flight; never garbage, and never half a
        // message: the client reads all the time, so the connection
        // ends on a message boundary.
        let mut events = std::mem::take(&mut client.events);
        loop {
            match client.recv_lenient() {
                Incoming::Msg(m) if m.get("event").is_some() => events.push(m),
                Incoming::Msg(m) => assert!(
                    mode == 2 && m == json!({"return": {}, "id": "inflight"}),
                    "{ctx}: {m}"
                ),
                Incoming::Closed => break,
                Incoming::Partial(p) => {
                    panic!("{ctx}: the connection ended inside a message: {p:?}")
                }
            }
        }
        for m in &events {
            assert!(m["event"] == "STOP" || m["event"] == "RESUME", "{ctx}: {m}");
            if mode == 0 {
                seen.violations
                    .push(format!("{ctx}: event in capability negotiation mode: {m}"));
            }
            if !emitted_before.contains(m) {
                seen.violations
                    .push(format!("{ctx}: event broadcast after the removal: {m}"));
            }
        }
        seen.events += events.len();
        ctrl.ok("chardev-remove", json!({"id": chr}));
    }
    seen
}

/// One client loops stop/cont (STOP and RESUME go to every monitor in
/// command mode) while two others (the manager and a second client)
/// add and remove monitors: a broadcast that walks mon_list races the
/// unlinking, and output flushed into a monitor being removed races
/// out_watch cancelling and handler detaching.
#[test]
fn remove_during_broadcast() {
    let what = "remove_during_broadcast";
    let t0 = Instant::now();
    let mut rng = Rng::new(seed(what, 0x5eed_0005));
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    let dir = qemu.dir.clone();
    // Warm-up, alone, then the RSS baseline.
    let warm_seen = broadcast_adder(&mut qemu.mgr, &dir, "w", WARMUP, rng.next_u64());
    assert!(
        warm_seen.violations.is_empty(),
        "without broadcasts: {:?}",
        warm_seen.violations
    );
    let warm = qemu.snapshot();
    let mut ctl = qemu.dynamic_client("ctl", &[]);
    let mut adm = qemu.dynamic_client("adm", &["oob"]);
    let (seed_a, seed_b) = (rng.next_u64(), rng.next_u64());
    let done = AtomicBool::new(false);
    let (toggles, seen) = thread::scope(|s| {
        let mgr = &mut qemu.mgr;
        let done = &done;
        let broadcaster = s.spawn(move || {
            let mut toggles = 0;
            while !done.load(Ordering::SeqCst) {
                // Only this client changes the run state, so each
                // command emits exactly its event, before its reply.
                assert_eq!(ctl.ok("stop", json!({})), json!({}));
                assert_eq!(ctl.ok("cont", json!({})), json!({}));
                let names: Vec<_> = ctl.events.drain(..).map(|e| e["event"].clone()).collect();
                assert_eq!(
                    names,
                    [json!("STOP"), json!("RESUME")],
                    "broadcaster toggle {toggles}"
                );
                toggles += 1;
            }
            (ctl, toggles)
        });
        let dir2 = dir.clone();
        let a = s.spawn(move || {
            let _stop = SetOnDrop(done);
            broadcast_adder(mgr, &dir, "a", common::scaled(BROADCAST_ROUNDS) / 2, seed_a)
        });
        let b = s.spawn(move || {
            let _stop = SetOnDrop(done);
            let n = broadcast_adder(
                &mut adm,
                &dir2,
                "b",
                common::scaled(BROADCAST_ROUNDS) / 2,
                seed_b,
            );
            (adm, n)
        });
        let mut seen = join_scoped_timeout(a, LIMIT, "adder a").expect("adder a");
        let (adm, seen_b) = join_scoped_timeout(b, LIMIT, "adder b").expect("adder b");
        done.store(true, Ordering::SeqCst);
        let (ctl, toggles) =
            join_scoped_timeout(broadcaster, ROUND_LIMIT, "the broadcaster").expect("broadcaster");
        drop((ctl, adm));
        seen.events += seen_b.events;
        seen.violations.extend(seen_b.violations);
        (toggles, seen)
    });
    report(
        what,
        t0,
        common::scaled(BROADCAST_ROUNDS),
        &format!(
            "({toggles} stop/cont, {} events seen by removed monitors)",
            seen.events
        ),
    );
    // The two helper monitors go too: back to the very start.
    for id in ["ctl", "adm"] {
        qemu.monitor_remove(id);
        qemu.mgr
            .ok("chardev-remove", json!({"id": format!("{id}-chr")}));
    }
    let base = baseline(&start, &warm);
    finish(qemu, wd, &base, what);
    assert!(
        seen.violations.is_empty(),
        "{} clients got events they must not get, e.g.:\n{}",
        seen.violations.len(),
        seen.violations
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Connections at most (`QMH_GREETING_CONNECTS=N` for another number);
/// the test stops at the first violation.  On unpatched QEMU
/// (build/baseline, `QMH_BASELINE=1`) the first connection that got an
/// event before its greeting was, in 62 runs: median 559, 90% by 3,184,
/// 95% by 5,686, all but one by 7,934, the last at 25,347.  30,000 saw
/// the bug in all 62 (10,000 would have in 61, the old 5,000 in 57).
fn greeting_connects() -> usize {
    std::env::var("QMH_GREETING_CONNECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| common::scaled(GREETING_CONNECTS))
}

const GREETING_CONNECTS: usize = 30_000;

/// stop/cont pairs the broadcasting client writes at once.
const TOGGLE_BATCH: usize = 20;

/// The narrow version of the greeting check above: a client connects
/// over and over to one monitor (and negotiates) while another client
/// loops stop/cont, with both cores loaded.  The first thing each
/// connection gets must be the greeting.  An event that passed the
/// negotiation check for the previous client used to be written from
/// the main loop after the chardev had switched to the next client and
/// before its greeting (unpatched QEMU too); now an I/O thread
/// monitor's output is written in the I/O thread only, in order with
/// the switch (qemu-patches 0018).
///
/// The monitors come from the command line (`-mon`), so that the same
/// test runs on unpatched QEMU: with `QMH_BASELINE=1` it must see the
/// bug there (see `common::expect_bug`).  There it failed in 62 of 62
/// runs, after 559 connections in the median run and 25,347 in the
/// slowest (see `greeting_connects`); with 5,000 connections and a
/// round trip per stop/cont, as before, it passed 2 runs in 5 there.
#[test]
fn greeting_comes_first_during_broadcasts() {
    let what = "greeting_comes_first_during_broadcasts";
    let t0 = Instant::now();
    let baseline = common::on_baseline();
    // The client that never reads (below) has a monitor that goes at
    // the end on the patched build, which takes the events buffered for
    // it along; unpatched QEMU cannot add one.
    let cli: &[&str] = if baseline {
        &["ctl", "slow", "g"]
    } else {
        &["ctl", "g"]
    };
    let mut args = Vec::new();
    for id in cli {
        args.push("-chardev".to_owned());
        args.push(format!(
            "socket,id={id}-chr,path=@DIR@/{id}-chr.sock,server=on,wait=off"
        ));
        args.push("-mon".to_owned());
        args.push(format!("chardev={id}-chr,mode=control,id={id}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut qemu = Qemu::start(&args);
    let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
    // No query-monitors on unpatched QEMU: no snapshot there, where the
    // test only has to see the bug.
    let mut start = (!baseline).then(|| qemu.snapshot());
    let connect = |qemu: &Qemu, id: &str| {
        let mut c = Qmp::connect(&qemu.sock(&format!("{id}-chr")));
        c.handshake(&[]);
        c
    };
    let mut ctl = connect(&qemu, "ctl");
    // A client in command mode that never reads, the kind a broadcast
    // must cope with: QEMU buffers every event for it (the buffer goes
    // with its monitor), which also makes each broadcast slower.
    let slow = if baseline {
        connect(&qemu, "slow")
    } else {
        qemu.dynamic_client("slow", &[])
    };
    let path = qemu.sock("g-chr");
    let done = AtomicBool::new(false);
    let toggles = AtomicUsize::new(0);
    let mut violations = Vec::new();
    let mut connects = 0;
    thread::scope(|s| {
        let (done, toggles) = (&done, &toggles);
        s.spawn(move || {
            // stop/cont in batches of 20 pairs, written at once: the
            // main loop emits events back to back instead of once per
            // round trip, which made the bug show in a fifth of the
            // connections on unpatched QEMU (median of 10 runs: first
            // failure at 520 connections instead of 2,600).
            let batch: String = (0..TOGGLE_BATCH)
                .map(|_| "{\"execute\": \"stop\"}\n{\"execute\": \"cont\"}\n")
                .collect();
            while !done.load(Ordering::SeqCst) {
                ctl.send_raw(&batch);
                for _ in 0..2 * TOGGLE_BATCH {
                    assert_eq!(
                        ctl.recv_reply_awaiting("the reply to stop or cont"),
                        Some(json!({"return": {}}))
                    );
                }
                ctl.events.clear();
                toggles.fetch_add(TOGGLE_BATCH, Ordering::Relaxed);
            }
        });
        let _stop = SetOnDrop(done);
        // Two threads that only burn CPU: with the cores contended, the
        // I/O thread is preempted now and then inside the window
        // (between the socket chardev going CONNECTED and the monitor's
        // OPENED handler sending the greeting) in which an event from
        // the main thread gets through.  On a quiet machine, without
        // them the window was hit in some runs and not at all in others.
        for _ in 0..2 {
            s.spawn(move || {
                let mut x = 0u64;
                while !done.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            });
        }
        for i in 0..greeting_connects() {
            connects += 1;
            let mut client = Qmp::connect(&path);
            let first = client.recv().unwrap_or_else(|| panic!("connect {i}: EOF"));
            if first.get("QMP").is_none() {
                violations.push(format!("connect {i}: first message {first}"));
                break;
            }
            // Negotiate, so that the next client's connection follows a
            // session in command mode: events are being sent to it.
            client.ok("qmp_capabilities", json!({}));
            // The manager gets every event too: read them, or QEMU
            // buffers them for it without bound (RSS would grow by MBs).
            if i % 100 == 99 {
                qemu.mgr.ok("query-name", json!({}));
                qemu.mgr.events.clear();
            }
            if i + 1 == WARMUP * 4 {
                if let Some(start) = &mut start {
                    start.rss_kb = qemu.rss_kb();
                }
            }
        }
    });
    report(
        what,
        t0,
        connects,
        &format!(
            "({} stop/cont; {} connections got an event first)",
            toggles.load(Ordering::Relaxed),
            violations.len()
        ),
    );
    drop(slow);
    if let Some(start) = start {
        qemu.monitor_remove("slow");
        qemu.mgr.ok("chardev-remove", json!({"id": "slow-chr"}));
        finish(qemu, wd, &start, what);
    }
    common::expect_bug(
        what,
        &format!("{connects} connections"),
        &violations
            .iter()
            .map(|v| format!("an event before the greeting: {v}"))
            .collect::<Vec<_>>(),
    );
}

// ---------------------------------------------------------------------
// 5. monitor-add and monitor-remove back to back
// ---------------------------------------------------------------------

const ADD_REMOVE_ROUNDS: usize = 2000;

/// Is the socket chardev `label` connected to a client?
fn chardev_connected(mgr: &mut Qmp, label: &str) -> bool {
    let list = mgr.ok("query-chardev", json!({}));
    let c = list
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["label"] == label)
        .expect("chardev listed")
        .clone();
    !c["filename"]
        .as_str()
        .expect("filename")
        .starts_with("disconnected:")
}

/// monitor-add and monitor-remove in one write: the removal runs right
/// after the set-up of an I/O-thread monitor (handlers installed by a
/// bottom half in the I/O thread), sometimes with a client already
/// connected, whose greeting is being sent while the monitor goes.
/// The removal must always succeed: no half-initialised window.
#[test]
fn add_then_remove_without_delay() {
    let what = "add_then_remove_without_delay";
    let t0 = Instant::now();
    let mut rng = Rng::new(seed(what, 0x5eed_0006));
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    // A few chardevs reused round after round (a chardev outlives its
    // monitor and takes the next one), and a fresh one now and then.
    let pool: Vec<String> = (0..4).map(|k| format!("pool{k}")).collect();
    for chr in &pool {
        let path = qemu.sock(chr);
        chardev_add(&mut qemu.mgr, chr, &path);
    }
    let mut warm = None;
    let mut greetings = 0;
    let mut preconnected = 0;
    for i in 0..ADD_REMOVE_ROUNDS {
        if i == WARMUP {
            warm = Some(qemu.snapshot());
        }
        let ctx = format!("{what} round {i}");
        let fresh = i % 10 == 9;
        let chr = if fresh {
            format!("fresh{i}")
        } else {
            pool[i % pool.len()].clone()
        };
        let path = qemu.sock(&chr);
        if fresh {
            chardev_add(&mut qemu.mgr, &chr, &path);
        }
        let mut client = None;
        if rng.chance(1, 3) {
            let c = Qmp::connect(&path);
            wait_until("the chardev to accept the client", || {
                chardev_connected(&mut qemu.mgr, &chr)
            });
            client = Some(c);
            preconnected += 1;
        }
        let id = format!("q{i}");
        let mut args = json!({"id": id, "chardev": chr});
        match rng.below(4) {
            0 => args["close-action"] = json!("none"),
            1 => args["close-action"] = json!("delete"),
            _ => {}
        }
        if rng.chance(1, 3) {
            args["pretty"] = json!(rng.chance(1, 2));
        }
        let add = json!({"execute": "monitor-add", "arguments": args, "id": "add"});
        let remove = json!({"execute": "monitor-remove", "arguments": {"id": id}, "id": "remove"});
        qemu.mgr.send_raw(&format!("{add}\n{remove}\n"));
        assert_eq!(
            qemu.mgr
                .recv_reply_awaiting("the reply to monitor-add")
                .expect("add reply"),
            json!({"return": {}, "id": "add"}),
            "{ctx}"
        );
        assert_eq!(
            qemu.mgr
                .recv_reply_awaiting("the reply to monitor-remove")
                .expect("remove reply"),
            json!({"return": {}, "id": "remove"}),
            "{ctx}"
        );
        if let Some(mut c) = client {
            // The removal closes the connection: at most the greeting
            // (pretty or not) came first.
            let bytes = c.read_to_close();
            let values: Vec<Value> = serde_json::Deserializer::from_slice(&bytes)
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{ctx}: {:?}: {e}", String::from_utf8_lossy(&bytes)));
            assert!(values.len() <= 1, "{ctx}: {values:?}");
            if let Some(g) = values.first() {
                assert!(g.get("QMP").is_some(), "{ctx}: not a greeting: {g}");
                greetings += 1;
            }
        }
        if fresh {
            qemu.mgr.ok("chardev-remove", json!({"id": chr}));
        }
        if i % 100 == 99 {
            assert_eq!(qemu.ids(), ["compat_monitor0"], "{ctx}");
        }
    }
    for chr in &pool {
        qemu.mgr.ok("chardev-remove", json!({"id": chr}));
    }
    report(
        what,
        t0,
        ADD_REMOVE_ROUNDS,
        &format!("({preconnected} with a client, {greetings} greetings before the removal)"),
    );
    let base = baseline(&start, &warm.expect("warm-up"));
    finish(qemu, wd, &base, what);
}

// ---------------------------------------------------------------------
// 6. The client leaves while its monitor is removed
// ---------------------------------------------------------------------

const DISCONNECT_ROUNDS: usize = 500;

/// A thread closes the client at the moment the manager sends
/// monitor-remove: the chardev's CLOSED event (in the I/O thread; for
/// close-action=delete it schedules its own removal) races the removal
/// steps, sometimes with a command of the monitor in flight.
#[test]
fn disconnect_during_removal() {
    let what = "disconnect_during_removal";
    let t0 = Instant::now();
    let mut rng = Rng::new(seed(what, 0x5eed_0007));
    let mut qemu = Qemu::start(&[]);
    let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
    let start = qemu.snapshot();
    let mut warm = None;
    let barrier = Barrier::new(2);
    let (tx, rx) = mpsc::channel::<Option<Qmp>>();
    let (mut manager_won, mut close_won) = (0, 0); // one-shot rounds only
    thread::scope(|s| {
        // Owned by the scope's closure: if it panics, the closer thread
        // sees the channel end instead of waiting for the next client.
        let tx = tx;
        let barrier = &barrier;
        s.spawn(move || {
            while let Ok(Some(client)) = rx.recv_timeout(LIMIT) {
                barrier.wait();
                client.shutdown();
                drop(client);
            }
        });
        for round in 0..common::scaled(DISCONNECT_ROUNDS) {
            if round == WARMUP {
                warm = Some(qemu.snapshot());
            }
            let ctx = format!("{what} round {round}");
            let delete = round % 2 == 1;
            let (chr, id) = (format!("d{round}"), format!("dm{round}"));
            let path = qemu.sock(&chr);
            chardev_add(&mut qemu.mgr, &chr, &path);
            let action = if delete { "delete" } else { "none" };
            qemu.mgr.ok(
                "monitor-add",
                json!({"id": id, "chardev": chr, "close-action": action}),
            );
            let mut client = Qmp::connect(&path);
            client.handshake(if rng.chance(1, 2) { &["oob"] } else { &[] });
            // 0: idle; 1: a command in flight; 2: a burst in flight.
            match rng.below(3) {
                0 => {}
                1 => client.send(&json!({"execute": "query-status"})),
                _ => {
                    let burst: String = (0..16)
                        .map(|n| format!("{{\"execute\": \"query-monitors\", \"id\": {n}}}\n"))
                        .collect();
                    client.send_raw(&burst);
                }
            }
            tx.send(Some(client)).expect("closer thread");
            barrier.wait();
            let rsp = qemu
                .mgr
                .call(json!({"execute": "monitor-remove", "arguments": {"id": id}}));
            if rsp.get("return").is_some() {
                // The manager removed it: the chardev is the manager's.
                manager_won += usize::from(delete);
                qemu.mgr.ok("chardev-remove", json!({"id": chr}));
            } else {
                // Only a one-shot monitor can be gone already, removed
                // (with its chardev) by its client's disconnect.
                assert!(delete, "{ctx}: {rsp}");
                assert_eq!(
                    rsp["error"]["desc"],
                    format!("No monitor with id '{id}'"),
                    "{ctx}: {rsp}"
                );
                close_won += 1;
                wait_until("the one-shot chardev to go", || {
                    !qemu.chardev_labels().contains(&chr)
                });
            }
        }
        tx.send(None).expect("closer thread");
    });
    report(
        what,
        t0,
        common::scaled(DISCONNECT_ROUNDS),
        &format!("(one-shot rounds: manager won {manager_won}, close won {close_won})"),
    );
    let base = baseline(&start, &warm.expect("warm-up"));
    finish(qemu, wd, &base, what);
}

// ---------------------------------------------------------------------
// 7. quit while monitors come and go
// ---------------------------------------------------------------------

const QUIT_RUNS: usize = 20;
const QUIT_WORKERS: usize = 3;

/// Sends a command; None once QEMU is gone (write error, EOF, reset).
fn try_call(q: &mut Qmp, msg: Value) -> Option<Value> {
    q.try_send_raw(&format!("{msg}\n")).ok()?;
    q.try_recv_reply()
}

/// Like `try_call` for a command that must succeed while QEMU is up.
fn try_ok(q: &mut Qmp, execute: &str, arguments: Value) -> Option<Value> {
    let rsp = try_call(q, json!({"execute": execute, "arguments": arguments}))?;
    match rsp.get("return") {
        Some(v) => Some(v.clone()),
        None => panic!("{execute} {arguments} failed: {rsp}"),
    }
}

/// Loops add/connect/command/remove through its own QMP client until
/// QEMU goes away under it.  Some monitors remove themselves, some are
/// left attached for the exit to tear down.
fn quit_worker(
    mut ctrl: Qmp,
    dir: PathBuf,
    k: usize,
    seed: u64,
    rounds: &AtomicUsize,
) -> Option<()> {
    let mut rng = Rng::new(seed);
    let mut kept = Vec::new();
    for i in 0..100_000 {
        let (chr, id) = (format!("w{k}c{i}"), format!("w{k}m{i}"));
        let path = dir.join(format!("{chr}.sock"));
        try_ok(&mut ctrl, "chardev-add", socket_chardev(&chr, &path))?;
        let action = *rng.pick(&["none", "delete"]);
        try_ok(
            &mut ctrl,
            "monitor-add",
            json!({"id": id, "chardev": chr, "close-action": action}),
        )?;
        let mut client = Qmp::try_connect(&path).ok()?;
        match client.recv_lenient() {
            Incoming::Msg(g) => assert!(g.get("QMP").is_some(), "{g}"),
            _ => return None,
        }
        try_ok(&mut client, "qmp_capabilities", json!({}))?;
        try_ok(&mut client, "query-name", json!({}))?;
        match rng.below(4) {
            0 => {
                try_ok(&mut ctrl, "monitor-remove", json!({"id": id}))?;
                try_ok(&mut ctrl, "chardev-remove", json!({"id": chr}))?;
            }
            1 => {
                // Removes itself; a one-shot monitor takes its chardev.
                try_ok(&mut client, "monitor-remove", json!({"id": id}))?;
                if action == "none" {
                    // Its chardev is free once the client sees the end.
                    if let Some(m) = client.try_recv_reply() {
                        panic!("after self-removal: {m}");
                    }
                    try_ok(&mut ctrl, "chardev-remove", json!({"id": chr}))?;
                }
            }
            2 => drop(client), // one-shot ones go by themselves
            _ => kept.push(client),
        }
        rounds.fetch_add(1, Ordering::SeqCst);
    }
    Some(())
}

/// quit from the manager while three clients add and remove monitors:
/// monitor_cleanup() at exit races removals in progress, one-shot
/// removals scheduled as bottom halves, self-removals waiting for the
/// dispatcher, and monitors set up in the I/O thread.  QEMU must exit
/// with status 0, not by a signal.
#[test]
fn quit_while_adding_and_removing() {
    let what = "quit_while_adding_and_removing";
    let t0 = Instant::now();
    let mut rng = Rng::new(seed(what, 0x5eed_0008));
    let mut total_rounds = 0;
    for run in 0..QUIT_RUNS {
        let mut qemu = Qemu::start(&[]);
        let wd = Watchdog::arm(what, qemu.pid(), LIMIT);
        let workers: Vec<Qmp> = (0..QUIT_WORKERS)
            .map(|k| qemu.dynamic_client(&format!("w{k}"), &[]))
            .collect();
        let rounds = AtomicUsize::new(0);
        let quit_after = rng.below(30);
        let dir = qemu.dir.clone();
        let status = thread::scope(|s| {
            let rounds = &rounds;
            let handles: Vec<_> = workers
                .into_iter()
                .enumerate()
                .map(|(k, ctrl)| {
                    let (dir, seed) = (dir.clone(), rng.next_u64());
                    s.spawn(move || quit_worker(ctrl, dir, k, seed, rounds))
                })
                .collect();
            wait_until("the workers to get going", || {
                rounds.load(Ordering::SeqCst) >= quit_after
                    || handles.iter().any(|h| h.is_finished())
            });
            assert!(
                handles.iter().all(|h| !h.is_finished()),
                "run {run}: a worker stopped before quit"
            );
            qemu.mgr.send(&json!({"execute": "quit"}));
            let status = wait_timeout(&mut qemu.child, Duration::from_secs(120));
            for h in handles {
                join_scoped_timeout(h, ROUND_LIMIT, "a worker to see QEMU gone").expect("worker");
            }
            status
        });
        drop(wd);
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.success(),
            "run {run}: QEMU exit status {status} (signal {:?}) after {} rounds",
            status.signal(),
            rounds.load(Ordering::SeqCst)
        );
        total_rounds += rounds.load(Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&qemu.dir);
    }
    report(
        what,
        t0,
        QUIT_RUNS,
        &format!("(QEMU runs; {total_rounds} add/remove rounds in all)"),
    );
}
