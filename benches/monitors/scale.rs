// SPDX-License-Identifier: GPL-2.0-or-later
//! 6. Scale: N monitors with a client each, dynamic vs command line

use std::time::Instant;

use serde_json::Value;

use crate::{
    client::Raw,
    qemu::{baseline_bin, cli_socket_monitor, patched_bin, Proc},
    report::{verdict, Report, ScalePoint},
    stats::{interleave, interleave_timed, median, us},
    Reps,
};

/// Time from sending `stop` until every client has the STOP event; then
/// `cont` and the RESUME events are consumed, untimed.
fn event_fanout(p: &mut Proc, clients: &mut [Raw]) -> f64 {
    let t = Instant::now();
    p.mgr.send(b"{\"execute\":\"stop\"}\n");
    for c in clients.iter_mut() {
        let l = c.line();
        assert!(
            l.windows(6).any(|w| w == b"\"STOP\""),
            "expected STOP: {}",
            String::from_utf8_lossy(l)
        );
    }
    let dt = us(t.elapsed());
    p.mgr.check_ok("stop");
    p.mgr.ok("{\"execute\":\"cont\"}");
    for c in clients.iter_mut() {
        let l = c.line();
        assert!(
            l.windows(8).any(|w| w == b"\"RESUME\""),
            "expected RESUME: {}",
            String::from_utf8_lossy(l)
        );
    }
    dt
}

pub fn run(rep: &Reps, report: &mut Report, nofile: u64) {
    let base = baseline_bin();
    let kinds = if base.exists() { 3 } else { 2 };
    let needed = rep.scale.iter().sum::<usize>() as u64 * kinds as u64 + 256;
    if needed > nofile {
        report.notes.push(format!(
            "6: skipped, needs {needed} fds and RLIMIT_NOFILE is only {nofile}"
        ));
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
            let mut clients: Vec<Raw> = (0..n)
                .map(|i| Raw::connect_retry(&c.sock(&format!("c{i}"))))
                .collect();
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
            assert_eq!(
                v["return"].as_array().expect("list").len(),
                n + 1,
                "query-monitors"
            );
        }
        eprintln!(
            "    N={n}: set up in {}",
            setup_s
                .iter()
                .map(|s| format!("{s:.2} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        sets.push(Set {
            n,
            base_kib,
            setup_s,
            rss_kib,
            procs,
        });
    }
    // Then the measurements, interleaved over every process of every N.
    let all: Vec<(usize, usize)> = (0..sets.len())
        .flat_map(|s| (0..kinds).map(move |k| (s, k)))
        .collect();
    let patched: Vec<(usize, usize)> = (0..sets.len())
        .flat_map(|s| (0..2).map(move |k| (s, k)))
        .collect();
    let event = interleave_timed(all.len(), rep.scale_rounds, 3, |i| {
        let (p, cl) = &mut sets[all[i].0].procs[all[i].1];
        event_fanout(p, cl)
    });
    let query = interleave(patched.len(), rep.scale_rounds, 3, |i| {
        let m = &mut sets[patched[i].0].procs[patched[i].1].0.mgr;
        m.send(b"{\"execute\":\"query-monitors\"}\n");
        m.check_reply_ok();
    });
    let name = interleave(all.len(), rep.scale_rounds, 3, |i| {
        sets[all[i].0].procs[all[i].1].0.mgr.query_name()
    });
    for (si, set) in sets.into_iter().enumerate() {
        let pick = |v: &Vec<Vec<f64>>, idx: &[(usize, usize)]| {
            idx.iter()
                .zip(v)
                .filter(|((s, _), _)| *s == si)
                .map(|(_, x)| x.clone())
                .collect::<Vec<_>>()
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
        report.row(
            &format!("6 N={n}"),
            "memory per monitor with its client (RssAnon above a fresh QEMU, / N): dynamic vs \
             command line",
            format!("{:.1} KiB", per(sp.rss_kib[0])),
            format!("{:.1} KiB", per(sp.rss_kib[1])),
            "—".into(),
            "",
            String::new(),
        );
        report.compare(
            &format!("6 N={n}"),
            "`stop` until the STOP event reached every client: dynamic vs command line",
            &sp.event[0],
            &sp.event[1],
            None,
        );
        report.compare(
            &format!("6 N={n}"),
            "query-monitors round trip: dynamic vs command line",
            &sp.query[0],
            &sp.query[1],
            None,
        );
        report.compare(
            &format!("6 N={n}"),
            "query-name round trip on the manager monitor: dynamic vs command line",
            &sp.name[0],
            &sp.name[1],
            None,
        );
    }
    let p100 = points.iter().find(|p| p.n == 100);
    let p1000 = points.iter().find(|p| p.n == 1000);
    if let (Some(a), Some(b)) = (p100, p1000) {
        // Growth from 100 to 1000 monitors: slope of memory, exponent of time.
        let slope = |k: usize| (b.rss_kib[k] as f64 - a.rss_kib[k] as f64) / 900.0;
        report.row(
            "6 slope",
            "memory (RssAnon) per extra monitor with its client, N=100 → N=1000: dynamic vs \
             command line",
            format!("{:.1} KiB", slope(0)),
            format!("{:.1} KiB", slope(1)),
            "—".into(),
            "",
            String::new(),
        );
        let setup = b.setup_s[0] / b.setup_s[1];
        report.row(
            "6 set-up",
            "N=1000 monitors with their clients: added one by one (chardev-add, monitor-add, \
             connect, handshake) vs QEMU started with 1000 `-mon` (start, connect, handshake)",
            format!("{:.2} s", b.setup_s[0]),
            format!("{:.2} s", b.setup_s[1]),
            format!("{setup:.2}"),
            "≤ 2",
            verdict(setup <= 2.0),
        );
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
            report.row(
                "6 growth",
                &format!("{what}: exponent k of t ∝ N^k, N=100 → N=1000: dynamic vs command line"),
                format!("k = {ed:.2}"),
                format!("k = {ec:.2}{unpatched}"),
                "—".into(),
                "k ≤ 1.2 (linear)",
                verdict(ed <= 1.2),
            );
        }
        if b.rss_kib.len() > 2 {
            report.row(
                "6 unpatched",
                "command-line monitors, patched vs unpatched QEMU: memory (RssAnon) per extra \
                 monitor, N=100 → N=1000",
                format!("{:.1} KiB", slope(1)),
                format!("{:.1} KiB", slope(2)),
                "—".into(),
                "",
                String::new(),
            );
            report.compare(
                "6 unpatched",
                "N=1000 command-line monitors, patched vs unpatched QEMU: `stop` to every client",
                &b.event[1],
                &b.event[2],
                None,
            );
            report.compare(
                "6 unpatched",
                "N=1000 command-line monitors, patched vs unpatched QEMU: query-name on the \
                 manager",
                &b.name[1],
                &b.name[2],
                None,
            );
        }
    }
    report.notes.push(
        "6: memory is RssAnon (heap and stacks); VmRSS also counts pages of the QEMU binary, \
         which differ between processes by a few hundred KiB. It moves in 4 KiB pages, so the \
         per-monitor figure means little below N=100."
            .into(),
    );
    report.notes.push(format!(
        "6: set-up time of N monitors with their clients, dynamic (chardev-add, monitor-add, \
         connect, handshake, one after the other) / command line (start QEMU, connect, \
         handshake){}: {}",
        if points.first().is_some_and(|p| p.setup_s.len() > 2) {
            " / command line, unpatched"
        } else {
            ""
        },
        points
            .iter()
            .map(|p| format!(
                "N={}: {}",
                p.n,
                p.setup_s
                    .iter()
                    .map(|s| format!("{s:.2} s"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    for sp in &points {
        let mut items = vec![
            ("command line".into(), sp.event[1].clone()),
            ("monitor-add".into(), sp.event[0].clone()),
        ];
        if sp.event.len() > 2 {
            items.push(("command line, unpatched".into(), sp.event[2].clone()));
        }
        report.groups.push((
            format!("6. Scale N={}: stop → STOP at every client", sp.n),
            items,
        ));
    }
    report.scale = points;
}
