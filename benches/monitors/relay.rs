// SPDX-License-Identifier: GPL-2.0-or-later
//! 4. A plain relay in front of a monitor vs talking to it directly

use std::process::{Command, Stdio};

use crate::{
    client::Raw,
    common::KillOnDrop,
    qemu::{cli_socket_monitor, patched_bin, Proc},
    report::{fmt_time, Report},
    stats::{interleave, median},
    Reps, WARMUP,
};

pub fn run(rep: &Reps, report: &mut Report) {
    let mut extra = cli_socket_monitor("direct");
    extra.extend(cli_socket_monitor("behind"));
    let p = Proc::launch(&patched_bin(), &extra);
    let relay = p.sock("relay");
    let socat = Command::new("socat")
        .arg(format!("UNIX-LISTEN:{}", relay.display()))
        .arg(format!("UNIX-CONNECT:{}", p.sock("behind").display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("socat (apt-get install socat)");
    // Killed also when a measurement panics.
    let socat = KillOnDrop(socat);
    let mut clients = vec![
        Raw::connect_retry(&p.sock("direct")),
        Raw::connect_retry(&relay),
    ];
    for c in clients.iter_mut() {
        c.handshake();
    }
    let s = interleave(2, rep.proxy, WARMUP, |i| clients[i].query_name());
    report.compare(
        "4",
        "query-name round trip through a socat relay vs direct (both command-line socket monitors)",
        &s[1],
        &s[0],
        None,
    );
    let added = median(&s[1]) - median(&s[0]);
    report.notes.push(format!(
        "4: the relay adds {} per command; it only copies bytes, so an id-rewriting QMP proxy \
         (parse, rewrite, serialise every message) costs at least this much more.",
        fmt_time(added)
    ));
    report.groups.push((
        "4. Relay (socat) vs direct: query-name round trip".into(),
        vec![
            ("direct".into(), s[0].clone()),
            ("through socat".into(), s[1].clone()),
        ],
    ));
    drop(clients);
    drop(socat);
    p.quit();
}
