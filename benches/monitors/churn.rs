// SPDX-License-Identifier: GPL-2.0-or-later
//! 5. Churn: full add/remove cycles

use std::time::Instant;

use serde_json::json;

use crate::{
    client::Raw,
    qemu::{patched_bin, Proc},
    report::{fmt_time, verdict, Report},
    stats::{median, us},
    Reps,
};

pub fn run(rep: &Reps, report: &mut Report) {
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
        p.mgr
            .ok_json(json!({"execute": "monitor-add", "arguments": {"id": m, "chardev": c}}));
        let mut client = Raw::connect(&path);
        client.handshake();
        client.query_name();
        drop(client);
        p.mgr
            .ok_json(json!({"execute": "monitor-remove", "arguments": {"id": m}}));
        p.mgr
            .ok_json(json!({"execute": "chardev-remove", "arguments": {"id": c}}));
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
    report.row(
        "5a",
        "churn: full cycle (chardev-add, monitor-add, connect, handshake, query-name, disconnect, \
         monitor-remove, chardev-remove)",
        format!("{steady:.0} cycles/s"),
        format!("median cycle {}", fmt_time(median(&times))),
        "—".into(),
        "",
        String::new(),
    );
    report.row(
        "5b",
        &format!(
            "churn: fd count after {} cycles vs after {}",
            rep.churn, rep.churn_early
        ),
        format!("{fds}"),
        format!("{}", early.1),
        format!("{dfds:+}"),
        "growth 0",
        verdict(dfds <= 0),
    );
    report.row(
        "5c",
        &format!(
            "churn: VmRSS after {} cycles vs after {}",
            rep.churn, rep.churn_early
        ),
        format!("{rss} KiB"),
        format!("{} KiB", early.0),
        format!("{drss:+} KiB"),
        "growth < 1024 KiB",
        verdict(drss < 1024),
    );
    report.notes.push(format!(
        "5: checkpoints (cycle: VmRSS, RssAnon, fds): {}",
        checkpoints
            .iter()
            .map(|(i, r, a, f)| format!("{i}: {r} KiB, {a} KiB, {f}"))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    report.groups.push((
        "5. Churn: one full add/remove cycle".into(),
        vec![("cycle".into(), times)],
    ));
    p.quit();
}
