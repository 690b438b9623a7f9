#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU's own Rust and the crate in one binary (make check-qemu-rust).

check.py BIN_DIR

BIN_DIR holds a qemu-system-x86_64 configured with --enable-rust
(make QEMU_RUST=1).  Its symbols must show QEMU's Rust linked in (the
Rust HPET's code, module hpet::) and two copies of Rust's standard
library: QEMU's, global, and the crate's, made local by cargo-build.py
--localize (rust_eh_personality once of each).  The binary must offer
the hpet device, and the crate's commands must work in it:
query-monitors, a monitor added on a socket chardev that a client talks
to, the error of a monitor-add on a chardev that does not exist,
monitor-remove ending the client's session, and quit with status 0.
Standard library and binutils' nm only; every wait is bounded.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

LIMIT = 30  # seconds for any one step


def fail(msg):
    print(f"check-qemu-rust: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


class Qmp:
    """A bounded QMP client on a unix socket; events are skipped."""

    def __init__(self, path):
        deadline = time.monotonic() + LIMIT
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    fail(f"cannot connect to {path}: {e}")
                time.sleep(0.05)
        self.sock.settimeout(LIMIT)
        self.file = self.sock.makefile("rb")
        if "QMP" not in (self.read() or {}):
            fail(f"no QMP greeting on {path}")
        self.ok("qmp_capabilities")

    def read(self):
        line = self.file.readline()
        return json.loads(line) if line else None

    def send(self, cmd, **args):
        msg = {"execute": cmd, **({"arguments": args} if args else {})}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            rsp = self.read()
            if rsp is None:
                fail(f"{cmd}: connection closed")
            if "event" not in rsp:
                return rsp

    def ok(self, cmd, **args):
        rsp = self.send(cmd, **args)
        if "return" not in rsp:
            fail(f"{cmd}: {rsp}")
        return rsp["return"]


def check_symbols(qemu):
    syms = subprocess.run(["nm", "-C", qemu], check=True, capture_output=True,
                          text=True).stdout.splitlines()
    if not any(" hpet::" in line for line in syms):
        fail(f"no hpet:: symbols: {qemu} has no Rust HPET (not --enable-rust?)")
    kinds = sorted(line.split()[1] for line in syms
                   if line.endswith(" rust_eh_personality") and len(line.split()) == 3)
    if kinds != ["T", "t"]:
        fail(f"rust_eh_personality is {kinds or 'missing'}: expected QEMU's"
             " global (T) and the crate's local (t)")


def main():
    qemu = os.path.join(sys.argv[1], "qemu-system-x86_64")
    check_symbols(qemu)
    tmp = tempfile.mkdtemp(prefix="qmh-qemu-rust-")
    mgr_path = os.path.join(tmp, "manager.sock")
    client_path = os.path.join(tmp, "client.sock")
    proc = subprocess.Popen([qemu, "-M", "none", "-accel", "qtest", "-display", "none",
                             "-qmp", f"unix:{mgr_path},server=on,wait=off"])
    try:
        mgr = Qmp(mgr_path)
        types = {t["name"] for t in mgr.ok("qom-list-types", implements="sys-bus-device")}
        if "hpet" not in types:
            fail("no hpet: QEMU's Rust HPET is not in this binary")

        if [m["dynamic"] for m in mgr.ok("query-monitors")] != [False]:
            fail("query-monitors: expected the -qmp monitor only")
        err = mgr.send("monitor-add", id="nowhere", chardev="no-such-chardev")
        if err.get("error", {}).get("class") != "GenericError":
            fail(f"monitor-add on a missing chardev: {err}")

        mgr.ok("chardev-add", id="client0", backend={"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": client_path}},
            "server": True, "wait": False}})
        mgr.ok("monitor-add", id="session0", chardev="client0")
        client = Qmp(client_path)
        ids = {m["id"]: m["dynamic"] for m in client.ok("query-monitors")}
        if ids.get("session0") is not True or len(ids) != 2:
            fail(f"query-monitors on the added monitor: {ids}")

        mgr.ok("monitor-remove", id="session0")
        if client.read() is not None:
            fail("the client's session outlived monitor-remove")
        if len(mgr.ok("query-monitors")) != 1:
            fail("query-monitors after monitor-remove")
        mgr.ok("chardev-remove", id="client0")
        mgr.ok("quit")
        rc = proc.wait(timeout=LIMIT)
        if rc != 0:
            fail(f"QEMU exited with status {rc}")
        print("check-qemu-rust: QEMU's Rust HPET and the crate's commands in one binary")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
