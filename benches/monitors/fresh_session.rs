// SPDX-License-Identifier: GPL-2.0-or-later
//! 3. Time to a usable fresh session

use std::{os::fd::AsRawFd, time::Instant};

use serde_json::json;

use crate::{
    client::{Raw, CAPS, QUERY_NAME},
    common::{fd_chardev, send_fd, socketpair},
    qemu::{cli_socket_monitor, patched_bin, Proc},
    report::{fmt_time, Report},
    stats::{interleave, median, us},
    Reps,
};

pub fn run(rep: &Reps, report: &mut Report) {
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
    // 2: chardev-add + monitor-add; 3: socketpair + getfd + chardev-add +
    // monitor-add; 4: as 1, but the client connects while monitor-add is in
    // flight.
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
                    remove_session(&mut p, &name);
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
                    remove_session(&mut p, &name);
                    let _ = std::fs::remove_file(&path);
                    dt
                }
                _ => {
                    let getfd = format!(
                        "{{\"execute\":\"getfd\",\"arguments\":{{\"fdname\":\"{name}\"}}}}\n"
                    );
                    let chardev_add =
                        json!({"execute": "chardev-add", "arguments": fd_chardev(&name, &name)})
                            .to_string();
                    let monitor_add =
                        json!({"execute": "monitor-add", "arguments": {"id": name, "chardev": name}}).to_string();
                    let t = Instant::now();
                    let (ours, theirs) = socketpair();
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
                    remove_session(&mut p, &name);
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
        let monitor_add = format!(
            "{}\n",
            json!({"execute": "monitor-add", "arguments": {"id": name, "chardev": name}})
        );
        let padded = format!(
            "{{\"execute\":\"query-name\"{}}}\n",
            " ".repeat(monitor_add.len() - 25)
        );
        assert_eq!(padded.len(), monitor_add.len());
        pad_len = padded.len();
        for k in 0..2 {
            let which = (r + k) % 2;
            let t = Instant::now();
            p.mgr.send(if which == 0 {
                monitor_add.as_bytes()
            } else {
                padded.as_bytes()
            });
            p.mgr.check_ok("monitor-add / query-name");
            if r >= 20 {
                detail[which].push(us(t.elapsed()));
            }
        }
        p.mgr
            .ok_json(json!({"execute": "monitor-remove", "arguments": {"id": name}}));
        p.mgr
            .ok_json(json!({"execute": "chardev-remove", "arguments": {"id": name}}));
        let _ = std::fs::remove_file(p.sock(&name));
    }
    let short = interleave(1, rep.session, 20, |_| {
        p.mgr.send(QUERY_NAME);
        p.mgr.check_ok("query-name");
    });
    report.compare(
        "3a″",
        &format!(
            "monitor-add round trip on the manager vs query-name padded to the same {pad_len} \
             bytes"
        ),
        &detail[0],
        &detail[1],
        None,
    );
    let per_byte = (median(&detail[1]) - median(&short[0])) / (pad_len - QUERY_NAME.len()) as f64;
    report.notes.push(format!(
        "3: QEMU reads QMP input one byte per iteration of the monitor's poll loop; here each \
         byte of a request costs {per_byte:.1} µs (query-name: {} for {} bytes, {} padded to \
         {pad_len} bytes, the length of the monitor-add command). The spare-monitor session sends \
         {} bytes in all.",
        fmt_time(median(&short[0])),
        QUERY_NAME.len(),
        fmt_time(median(&detail[1])),
        CAPS.len() + QUERY_NAME.len()
    ));
    report.compare(
        "3a",
        "fresh session: monitor-add on an existing chardev + connect + greeting + \
         qmp_capabilities + first reply, vs the same on a spare command-line monitor",
        &samples[1],
        &samples[0],
        Some(1.5),
    );
    report.compare(
        "3a′",
        "the same, but the client connects while monitor-add is still in flight (the chardev \
         already listens), vs spare monitor",
        &samples[4],
        &samples[0],
        None,
    );
    report.compare(
        "3b",
        "fresh session with chardev-add included, vs spare monitor",
        &samples[2],
        &samples[0],
        None,
    );
    report.compare(
        "3c",
        "fresh session over socketpair + getfd (SCM_RIGHTS) + chardev-add fd + monitor-add, vs \
         spare monitor",
        &samples[3],
        &samples[0],
        None,
    );
    report.groups.push((
        "3. Time to a usable fresh session".into(),
        vec![
            ("spare command-line monitor".into(), samples[0].clone()),
            ("monitor-add".into(), samples[1].clone()),
            ("monitor-add, overlapped".into(), samples[4].clone()),
            ("chardev-add + monitor-add".into(), samples[2].clone()),
            ("socketpair + getfd + ...".into(), samples[3].clone()),
        ],
    ));
    p.quit();
}

/// Removes a session's monitor and chardev, both named `name`.
fn remove_session(p: &mut Proc, name: &str) {
    p.mgr
        .ok_json(json!({"execute": "monitor-remove", "arguments": {"id": name}}));
    p.mgr
        .ok_json(json!({"execute": "chardev-remove", "arguments": {"id": name}}));
}
