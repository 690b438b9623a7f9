// SPDX-License-Identifier: GPL-2.0-or-later
//! 2. Patch effect: patched vs unpatched QEMU, same monitor
//!
//! Patch 0022 reads QMP input in chunks, so the round trip is meant to
//! shrink.

use crate::{
    client::Raw,
    qemu::{baseline_bin, cli_socket_monitor, patched_bin, Proc},
    report::Report,
    stats::interleave,
    Reps, WARMUP,
};

pub fn run(rep: &Reps, report: &mut Report) {
    let base = baseline_bin();
    if !base.exists() {
        report.row(
            "2",
            "query-name round trip, command-line socket monitor: patched vs unpatched QEMU",
            "—".into(),
            "—".into(),
            "—".into(),
            "≤ 0.35",
            "not run".into(),
        );
        report.notes.push(format!(
            "2: no baseline binary at {} (set QEMU_BASELINE_BIN)",
            base.display()
        ));
        return;
    }
    // Many groups of processes: two processes of the very same binary differ
    // by several per cent here (thread placement, memory layout), so the
    // process is the unit of comparison.  Each group also has a second
    // unpatched process: unpatched vs unpatched is the noise floor.
    let mut runs = Vec::new();
    for _ in 0..rep.instances {
        let extra = cli_socket_monitor("m");
        let procs = [
            Proc::launch(&patched_bin(), &extra),
            Proc::launch(&base, &extra),
            Proc::launch(&base, &extra),
        ];
        let mut clients: Vec<Raw> = procs
            .iter()
            .map(|p| Raw::connect_retry(&p.sock("m")))
            .collect();
        for c in clients.iter_mut() {
            c.handshake();
        }
        runs.push(interleave(3, rep.hot / rep.instances, WARMUP, |i| {
            clients[i].query_name()
        }));
        drop(clients);
        for p in procs {
            p.quit();
        }
    }
    let col = |k: usize| runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
    report.compare_instances(
        "2",
        "query-name round trip, command-line socket monitor: patched vs unpatched QEMU",
        &col(0),
        &col(1),
        Some(0.35),
    );
    report.compare_instances(
        "2 control",
        "the same, unpatched vs another unpatched process (noise floor of 2)",
        &col(2),
        &col(1),
        None,
    );
    report.groups.push((
        "2. Patched vs unpatched: query-name round trip".into(),
        vec![
            ("unpatched QEMU".into(), col(1).concat()),
            ("patched QEMU".into(), col(0).concat()),
            ("unpatched QEMU, 2nd process".into(), col(2).concat()),
        ],
    ));
}
