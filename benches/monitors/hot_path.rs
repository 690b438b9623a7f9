// SPDX-License-Identifier: GPL-2.0-or-later
//! 1. Hot path: dynamic vs command-line monitor on the same kind of chardev

use serde_json::Value;

use crate::{
    client::Raw,
    qemu::{baseline_bin, cli_socket_monitor, open_pty, patched_bin, Proc},
    report::{fmt_ratio, Report},
    stats::{interleave, median, median_ci},
    Reps, WARMUP,
};

pub fn run(rep: &Reps, report: &mut Report) {
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
            extra.extend([
                "-chardev".into(),
                format!("pty,id={id}"),
                "-mon".into(),
                format!("chardev={id},mode=control"),
            ]);
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
        runs.push(interleave(
            clients.len(),
            rep.hot / rep.instances,
            WARMUP,
            |i| clients[i].query_name(),
        ));
        drop(clients);
        p.quit();
    }
    let col = |k: usize| runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
    report.compare_instances(
        "1a",
        "query-name round trip, socket (I/O thread): dynamic vs command-line monitor",
        &col(DYN_SOCK),
        &col(CLI_SOCK2),
        Some(1.03),
    );
    report.compare_instances(
        "1a control",
        "the same, 2nd vs 1st command-line socket monitor (order effect)",
        &col(CLI_SOCK2),
        &col(CLI_SOCK),
        None,
    );
    report.compare_instances(
        "1b",
        "query-name round trip, pty (I/O thread): dynamic vs command-line monitor",
        &col(DYN_PTY),
        &col(CLI_PTY2),
        Some(1.03),
    );
    report.compare_instances(
        "1b control",
        "the same, 2nd vs 1st command-line pty monitor (order effect)",
        &col(CLI_PTY2),
        &col(CLI_PTY),
        None,
    );
    // The order effect in unpatched QEMU: two command-line pty monitors.
    let base = baseline_bin();
    if base.exists() {
        let mut runs = Vec::new();
        for _ in 0..rep.instances {
            let mut extra = Vec::new();
            for id in ["cli_pty", "cli_pty2"] {
                extra.extend([
                    "-chardev".into(),
                    format!("pty,id={id}"),
                    "-mon".into(),
                    format!("chardev={id},mode=control"),
                ]);
            }
            let mut p = Proc::launch(&base, &extra);
            let mut clients = vec![
                open_pty(&p.pty_of("cli_pty")),
                open_pty(&p.pty_of("cli_pty2")),
            ];
            for c in clients.iter_mut() {
                c.handshake();
            }
            runs.push(interleave(2, rep.hot / rep.instances / 2, WARMUP, |i| {
                clients[i].query_name()
            }));
            drop(clients);
            p.quit();
        }
        let col = |k: usize| runs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
        report.compare_instances(
            "1b unpatched",
            "the same in unpatched QEMU, 2nd vs 1st command-line pty monitor",
            &col(1),
            &col(0),
            None,
        );
    }
    let vs_first = |d: usize, c: usize| {
        let r: Vec<f64> = col(d)
            .iter()
            .zip(col(c))
            .map(|(a, b)| median(a) / median(&b))
            .collect();
        fmt_ratio(median_ci(&r))
    };
    report.notes.push(format!(
        "1: dynamic vs the first command-line monitor of its kind: socket {}, pty {}",
        vs_first(DYN_SOCK, CLI_SOCK),
        vs_first(DYN_PTY, CLI_PTY)
    ));
    report.row(
        "1c",
        "query-name round trip, main-loop chardev: dynamic vs command-line monitor",
        "n/a".into(),
        "n/a".into(),
        "—".into(),
        "≤ 1.03",
        "not measurable".into(),
    );
    report.notes.push(
        "1c: in QEMU 10.2 every chardev with a read handler (socket, pty, file/pipe, serial, \
         stdio, udp, mux, hub) supports a GMainContext, so a QMP monitor on it runs in the \
         monitor I/O thread; the only main-loop chardevs (ringbuf, null, memory, vc without a UI) \
         have no input a client could send a command through. A main-loop monitor's round trip \
         cannot be measured."
            .into(),
    );
    let all = |k: usize| col(k).concat();
    report.groups.push((
        "1. Hot path: query-name round trip".into(),
        vec![
            ("socket, command line (1st)".into(), all(CLI_SOCK)),
            ("socket, command line (2nd)".into(), all(CLI_SOCK2)),
            ("socket, monitor-add".into(), all(DYN_SOCK)),
            ("pty, command line (1st)".into(), all(CLI_PTY)),
            ("pty, command line (2nd)".into(), all(CLI_PTY2)),
            ("pty, monitor-add".into(), all(DYN_PTY)),
        ],
    ));
}
