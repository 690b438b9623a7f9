// SPDX-License-Identifier: GPL-2.0-or-later
//! The request queue of a QMP monitor against input whose one byte
//! completes two requests (qemu-patches 0003), on a command-line
//! monitor, so that the test also runs on unpatched QEMU, which has the
//! bug (`QMH_BASELINE=1`, see `common::expect_bug`).

mod common;

use std::{os::unix::process::ExitStatusExt, time::Duration};

use common::{expect_bug, wait_timeout, Incoming, Qemu, Qmp};
use serde_json::json;

/// Times "1}" is sent, in one write.
const PAIRS: usize = 2000;

/// "1}" is the number 1, complete only when "}" is read, and then "}",
/// an error of its own: two requests from one byte.  With OOB on, a
/// monitor suspends when a request fills its queue, which stops the
/// reading but not the parsing of the byte at hand, so the second
/// request overflowed the queue and QEMU aborted on
/// handle_qmp_command()'s assertion.  "1}" 2,000 times in one write
/// does it: on unpatched QEMU (`QMH_BASELINE=1`) the test must see QEMU
/// die, and QEMU aborted (SIGABRT) in each of 22 runs there, after 1 to
/// 43 error replies.  Patched, every
/// value gets its error, in order, and the monitor goes on.
#[test]
fn one_byte_completing_two_requests_does_not_overflow_the_queue() {
    let what = "one_byte_completing_two_requests_does_not_overflow_the_queue";
    let mut qemu = Qemu::start(&[
        "-chardev",
        "socket,id=c,path=@DIR@/c.sock,server=on,wait=off",
        "-mon",
        "chardev=c,mode=control,id=m",
    ]);
    let mut client = Qmp::connect(&qemu.sock("c"));
    assert_eq!(client.handshake(&["oob"]), ["oob"]);
    // One write (4 kB, which the socket takes at once): QEMU may die
    // while reading it.
    client.send_raw(&format!(
        "{}{}\n",
        "1}".repeat(PAIRS),
        json!({"execute": "query-name", "id": "after"})
    ));
    let mut found = Vec::new();
    let mut errors = 0;
    loop {
        match client.recv_lenient() {
            Incoming::Msg(m) if m["id"] == "after" => {
                assert_eq!(m, json!({"return": {}, "id": "after"}));
                break;
            }
            Incoming::Msg(m) => {
                assert!(
                    m.get("id").is_none() && m["error"]["class"] == "GenericError",
                    "reply {errors}: {m}"
                );
                errors += 1;
            }
            Incoming::Closed | Incoming::Partial(_) => {
                let status = wait_timeout(&mut qemu.child, Duration::from_secs(60));
                found.push(format!(
                    "QEMU died after {errors} replies: {status} (signal {:?})",
                    status.signal()
                ));
                break;
            }
        }
    }
    expect_bug(what, &format!("\"1}}\" {PAIRS} times in one write"), &found);
    if found.is_empty() {
        assert_eq!(errors, 2 * PAIRS, "an error for each of the two values");
        assert!(qemu.quit().success());
    }
}
