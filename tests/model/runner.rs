// SPDX-License-Identifier: GPL-2.0-or-later
//! One run of a plan on a fresh QEMU: the lanes of each round run (in
//! threads, or one after the other for a single-threaded replay), then a
//! sync point compares query-monitors, query-chardev and the getfd fds
//! QEMU holds with the model.  At the end every lane takes its objects
//! down, QEMU's fds must be back to the start, and `quit` must end QEMU
//! with status 0.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{
    conn::{Incoming, READ_LIMIT},
    exec::{LaneExec, SETTLE_LIMIT},
    failure::{Failure, Kind, Res},
    plan::{Item, Step},
    qemu::{initial, Qemu},
    state::{Order, Shared},
};

/// How the QEMU of a failed run ended, when it did: a step that failed
/// because QEMU died is reported as the crash.
fn crash_or(qemu: &mut Qemu, f: Failure) -> Failure {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        if let Some(c) = qemu.crashed() {
            return c.context(&format!("while: {}", f.detail));
        }
        if Instant::now() > deadline {
            return f;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs each lane's steps, in threads if `threaded`.
fn run_round(
    lanes: &mut [LaneExec],
    shared: &Shared,
    round: u32,
    steps: &[Vec<Step>],
    threaded: bool,
) -> Res {
    let run_lane = |lane: &mut LaneExec, steps: &[Step]| -> Res {
        for s in steps {
            lane.run(round, shared, s)?;
        }
        Ok(())
    };
    let results: Vec<Res> = if threaded {
        std::thread::scope(|sc| {
            let handles: Vec<_> = lanes
                .iter_mut()
                .zip(steps)
                .map(|(lane, steps)| sc.spawn(move || run_lane(lane, steps)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|p| {
                        Err(Failure::new(
                            Kind::Io,
                            format!("lane thread panicked: {p:?}"),
                        ))
                    })
                })
                .collect()
        })
    } else {
        lanes
            .iter_mut()
            .zip(steps)
            .map(|(lane, steps)| run_lane(lane, steps))
            .collect()
    };
    results.into_iter().collect()
}

/// Are a's and b's creation orders known relative to each other?
fn ordered(a: Order, b: Order) -> bool {
    a.0 != b.0 || a.1 == b.1
}

/// What QEMU reports that the model does not say, or None.
fn compare(
    lanes: &[LaneExec],
    shared: &Shared,
    mons: &[Value],
    chrs: &[String],
    objs: &[(String, String)],
    memfds: &[String],
) -> Option<(Kind, String)> {
    let model_mons: Vec<_> = shared
        .monitors
        .iter()
        .chain(lanes.iter().flat_map(|l| l.model.mons.iter()))
        .collect();
    let mut problems = Vec::new();
    let mut prev: Option<&super::state::Mon> = None;
    for m in mons {
        let id = m["id"].as_str().unwrap_or_default();
        match model_mons.iter().find(|e| e.id == id) {
            None => problems.push(format!(
                "query-monitors lists {m}, the model has no such monitor"
            )),
            Some(e) => {
                if e.info() != *m {
                    problems.push(format!(
                        "query-monitors lists {m}, the model says {}",
                        e.info()
                    ));
                }
                if let Some(p) = prev {
                    if ordered(p.order, e.order) && e.order < p.order {
                        problems.push(format!(
                            "query-monitors lists {} after {}, created later",
                            p.id, e.id
                        ));
                    }
                }
                prev = Some(e);
            }
        }
    }
    for e in &model_mons {
        let listed = mons.iter().any(|m| m["id"] == e.id.as_str());
        if !listed && !e.dying {
            problems.push(format!("query-monitors misses {}", e.info()));
        }
        if listed && e.dying {
            problems.push(format!("close-action=delete monitor {} still listed", e.id));
        }
    }
    // QOM's view of the same monitors: every monitor, however it was
    // made, is a monitor-qmp or monitor-hmp object in /objects, and
    // /objects has no other monitor object
    let ty = |e: &super::state::Mon| if e.hmp { "monitor-hmp" } else { "monitor-qmp" };
    for (o, t) in objs {
        match model_mons.iter().find(|e| e.id == *o) {
            Some(e) if e.dying => {
                problems.push(format!("close-action=delete object {o} still in /objects"))
            }
            Some(e) if ty(e) != t => {
                problems.push(format!("/objects has {o} as {t}, the model as {}", ty(e)))
            }
            Some(_) => {}
            None => problems.push(format!(
                "/objects has {t} {o}, the model has no such monitor"
            )),
        }
    }
    for e in model_mons.iter().filter(|e| !e.dying) {
        if !objs.iter().any(|(o, _)| *o == e.id) {
            problems.push(format!("/objects misses {} {}", ty(e), e.id));
        }
    }
    let model_chrs: BTreeMap<&str, bool> = shared
        .chardevs
        .iter()
        .map(|c| (c.as_str(), false))
        .chain(
            lanes
                .iter()
                .flat_map(|l| l.model.chrs.iter().map(|(n, c)| (n.as_str(), c.dying))),
        )
        .collect();
    for c in chrs {
        match model_chrs.get(c.as_str()) {
            None => problems.push(format!(
                "query-chardev lists {c}, the model has no such chardev"
            )),
            Some(true) => problems.push(format!(
                "chardev {c} of a close-action=delete monitor still there"
            )),
            Some(false) => {}
        }
    }
    for (c, _) in model_chrs
        .iter()
        .filter(|(c, dying)| !**dying && !chrs.iter().any(|x| x == *c))
    {
        problems.push(format!("query-chardev misses {c}"));
    }
    if !problems.is_empty() {
        return Some((Kind::State, problems.join("; ")));
    }
    // fd name -> does its monitor live on (not dying)?
    let model_fds: BTreeMap<&str, bool> = lanes
        .iter()
        .flat_map(|l| {
            l.model
                .fds
                .iter()
                .map(|(f, m)| (f.as_str(), l.model.mon(m).is_some_and(|m| !m.dying)))
        })
        .collect();
    for f in memfds {
        match model_fds.get(f.as_str()) {
            None => problems.push(format!(
                "QEMU still holds getfd fd {f}, whose monitor is gone"
            )),
            Some(true) => {}
            Some(false) => problems.push(format!(
                "getfd fd {f} of a close-action=delete monitor still open"
            )),
        }
    }
    for (f, _) in model_fds.iter().filter(|(_, live)| **live) {
        if !memfds.iter().any(|x| x == f) {
            problems.push(format!("QEMU lost getfd fd {f} of a live monitor"));
        }
    }
    (!problems.is_empty()).then(|| (Kind::FdLeak, problems.join("; ")))
}

fn list(rsp: &Value, what: &str) -> Res<Vec<Value>> {
    rsp.get("return")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| Failure::new(Kind::WrongReply, format!("{what}: {rsp}")))
}

/// The sync point: QEMU converges to the model (close-action=delete
/// removals are asynchronous, so it is polled, bounded).
fn sync(qemu: &mut Qemu, lanes: &mut [LaneExec], shared: &Shared, round: u32) -> Res {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let mons = list(
            &lanes[0].ctl_call("query-monitors", json!({}))?,
            "query-monitors",
        )?;
        let chrs: Vec<String> = list(
            &lanes[0].ctl_call("query-chardev", json!({}))?,
            "query-chardev",
        )?
        .iter()
        .map(|c| c["label"].as_str().unwrap_or_default().to_owned())
        .collect();
        let objs: Vec<(String, String)> = list(
            &lanes[0].ctl_call("qom-list", json!({"path": "/objects"}))?,
            "qom-list /objects",
        )?
        .iter()
        .filter_map(|o| {
            let t = o["type"]
                .as_str()?
                .strip_prefix("child<")?
                .strip_suffix('>')?;
            let name = o["name"].as_str()?;
            matches!(t, "monitor-qmp" | "monitor-hmp").then(|| (name.to_owned(), t.to_owned()))
        })
        .collect();
        let memfds = qemu.memfds();
        match compare(lanes, shared, &mons, &chrs, &objs, &memfds) {
            None => {
                for l in lanes.iter_mut() {
                    l.model.settle();
                }
                return Ok(());
            }
            Some((kind, what)) if Instant::now() > deadline => {
                return Err(Failure::new(
                    kind,
                    format!("sync after round {round}: {what}"),
                ));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Statistics of a run that passed.
pub struct Stats {
    pub steps: usize,
    pub rounds: u32,
}

/// Runs `plan` with `workers` worker lanes besides the manager's.
pub fn run(plan: &[Item], workers: u8, threaded: bool) -> Res<Stats> {
    let (shared, models) = initial(workers);
    let (mut qemu, mgr, ctls) = Qemu::start(workers)?;
    let dir = qemu.dir.clone();
    let conns = std::iter::once(mgr).chain(ctls);
    let mut lanes: Vec<LaneExec> = models
        .into_iter()
        .zip(conns)
        .map(|(m, c)| LaneExec::new(m, c, dir.clone()))
        .collect();
    let res = run_lanes(&mut qemu, &mut lanes, &shared, plan, workers, threaded);
    res.map_err(|f| crash_or(&mut qemu, f))
}

fn run_lanes(
    qemu: &mut Qemu,
    lanes: &mut [LaneExec],
    shared: &Shared,
    plan: &[Item],
    workers: u8,
    threaded: bool,
) -> Res<Stats> {
    sync(qemu, lanes, shared, 0).map_err(|f| f.context("QEMU's monitors at start"))?;
    let fds_start = qemu.fds();
    // the listening sockets of the lanes' command-line chardevs
    let owned_at_start: usize = lanes.iter().map(|l| l.model.chrs.len()).sum();
    let mut rounds: BTreeMap<u32, Vec<Vec<Step>>> = BTreeMap::new();
    for item in plan {
        let r = rounds
            .entry(item.round)
            .or_insert_with(|| vec![Vec::new(); workers as usize + 1]);
        r[item.lane as usize].push(item.step.clone());
    }
    let last = rounds.keys().last().copied().unwrap_or(0);
    for (round, steps) in &rounds {
        run_round(lanes, shared, *round, steps, threaded)?;
        if let Some(c) = qemu.crashed() {
            return Err(c.context(&format!("after round {round}")));
        }
        sync(qemu, lanes, shared, *round)?;
    }
    // Everything down, each lane its own, at the same time.
    let teardown = last + 1;
    let results: Vec<Res> = std::thread::scope(|sc| {
        let hs: Vec<_> = lanes
            .iter_mut()
            .map(|l| sc.spawn(move || l.teardown(teardown, shared)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|p| Err(Failure::new(Kind::Io, format!("panic: {p:?}"))))
            })
            .collect()
    });
    results
        .into_iter()
        .collect::<Res>()
        .map_err(|f| f.context("teardown"))?;
    sync(qemu, lanes, shared, teardown).map_err(|f| f.context("teardown"))?;
    // The start's fds, minus the listening sockets of cli0chr and obj0chr.
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let fds = qemu.fds();
        let mut left = fds_start.clone();
        let extra: Vec<&String> = fds
            .iter()
            .filter(|f| match left.iter().position(|x| x == *f) {
                Some(p) => {
                    left.remove(p);
                    false
                }
                None => true,
            })
            .collect();
        if extra.is_empty() && left.len() == owned_at_start {
            break;
        }
        if Instant::now() > deadline {
            return Err(Failure::new(
                Kind::FdLeak,
                format!(
                    "{} fds at start, {} at the end ({owned_at_start} fewer expected): new \
                     {extra:?}, gone {left:?}",
                    fds_start.len(),
                    fds.len()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    quit(qemu, &mut lanes[0])?;
    Ok(Stats {
        steps: plan.len(),
        rounds: last,
    })
}

fn quit(qemu: &mut Qemu, mgr: &mut LaneExec) -> Res {
    mgr.ctl
        .write("{\"execute\": \"quit\", \"id\": \"quit\"}\n")
        .map_err(|e| Failure::new(Kind::Io, format!("quit: {e}")))?;
    loop {
        match mgr.ctl.recv(READ_LIMIT)? {
            Incoming::Msg(m) if m.get("event").is_some() => {}
            Incoming::Msg(m) if m["id"] == "quit" && m.get("return").is_some() => {}
            Incoming::Msg(m) => return Err(Failure::new(Kind::WrongReply, format!("quit: {m}"))),
            Incoming::Closed => break,
        }
    }
    let status = qemu.wait_exit(Duration::from_secs(60))?;
    if !status.success() {
        return Err(Failure::new(
            Kind::Exit,
            format!(
                "QEMU exit after quit: {status}; stderr:\n{}",
                qemu.stderr_tail()
            ),
        ));
    }
    Ok(())
}
