#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The installed QEMU, on its own (make check-install).

check.py PREFIX WORKDIR BUILD_DIR

PREFIX holds what `make install` put there; WORKDIR (outside the build
tree) holds the test guest's vmlinuz and initrd.img and gets the
sockets.  The Makefile runs this in a mount namespace with BUILD_DIR
hidden under an empty tmpfs, so nothing can come from the build tree.
The installed qemu-system-x86_64 must list PREFIX/share/qemu as a data
directory, load the BIOS from Debian's seabios and the -kernel option
ROM from PREFIX/share/qemu (trace event load_file), boot the test guest
to its console, and serve a monitor added at run time: the client gets
the greeting, negotiates, sees both monitors and removes its own
monitor.  Standard library only: the build's venv is hidden too.
"""

import json
import os
import socket
import subprocess
import sys
import time

BOOT_LIMIT = 240  # seconds: a distribution kernel under TCG, loaded machine
STEP_LIMIT = 30


def fail(msg):
    print(f"check-install: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def connect(path, limit=STEP_LIMIT):
    deadline = time.monotonic() + limit
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(STEP_LIMIT)
            return s
        except OSError as e:
            s.close()
            if time.monotonic() > deadline:
                fail(f"cannot connect to {path}: {e}")
            time.sleep(0.05)


class Qmp:
    """A bounded QMP client on a unix socket (events are skipped)."""

    def __init__(self, path):
        self.sock = connect(path)
        self.file = self.sock.makefile("rb")
        greeting = self.read()
        if "QMP" not in greeting:
            fail(f"no greeting on {path}: {greeting}")
        self.cmd("qmp_capabilities")

    def read(self):
        line = self.file.readline()
        if not line:
            return None
        if not line.endswith(b"\n"):
            fail(f"half a message: {line!r}")
        return json.loads(line)

    def send(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def reply(self):
        while True:
            msg = self.read()
            if msg is None:
                fail("connection closed before the reply")
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        self.send(name, **args)
        msg = self.reply()
        if "return" not in msg:
            fail(f"{name} {args}: {msg}")
        return msg["return"]


def main():
    prefix, work, build = sys.argv[1:4]
    qemu = os.path.join(prefix, "bin", "qemu-system-x86_64")
    datadir = os.path.realpath(os.path.join(prefix, "share", "qemu"))
    hidden = os.path.isdir(build) and not os.listdir(build)
    print(f"check-install: {qemu}; build tree {build} "
          f"{'hidden' if hidden else 'VISIBLE'}")

    # the data directories it looks in, relative to its own binary
    out = subprocess.run([qemu, "-L", "help"], capture_output=True,
                         text=True, timeout=STEP_LIMIT, check=True).stdout
    dirs = [os.path.realpath(d) for d in out.split()]
    if datadir not in dirs:
        fail(f"{datadir} is not among the data directories: {dirs}")

    log = open(os.path.join(work, "qemu.log"), "w+", encoding="utf-8")
    proc = subprocess.Popen(
        [qemu, "-M", "pc", "-accel", "tcg", "-m", "256", "-nodefaults",
         "-display", "none",
         "-kernel", os.path.join(work, "vmlinuz"),
         "-initrd", os.path.join(work, "initrd.img"),
         "-append", "console=ttyS0 quiet panic=-1",
         "-chardev", f"socket,id=ser0,path={work}/ser0.sock,server=on,wait=off",
         "-serial", "chardev:ser0",
         "-qmp", f"unix:{work}/qmp.sock,server=on,wait=off",
         "-trace", "load_file"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        run(proc, work, prefix)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code = proc.returncode
    log.seek(0)
    text = log.read()
    if code != 0:
        fail(f"QEMU exited with {code}:\n{text}")

    # where the firmware came from: Debian's BIOS, the installed option ROM
    loads = {}
    for line in text.splitlines():
        words = line.split()
        if "load_file" in line and "name" in words and "location" in words:
            loads[words[words.index("name") + 1]] = words[words.index("location") + 1]
    bios = [p for n, p in loads.items() if n.startswith("bios")]
    if not bios or not all(p.startswith("/usr/share/seabios/") for p in bios):
        fail(f"the BIOS did not come from /usr/share/seabios: {loads}")
    rom = loads.get("linuxboot_dma.bin")
    if not rom or os.path.realpath(os.path.dirname(rom)) != datadir:
        fail(f"linuxboot_dma.bin did not come from {datadir}: {loads}")
    print(f"check-install: firmware: {loads}")
    print("check-install: the installed QEMU booted the guest and served a dynamic monitor")


def run(proc, work, prefix):
    mgr = Qmp(f"{work}/qmp.sock")

    # a monitor added at run time, used, and removed by its own client
    mgr.cmd("chardev-add", id="s1", backend={"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": f"{work}/s1.sock"}},
        "server": True, "wait": False}})
    mgr.cmd("monitor-add", id="s1", chardev="s1")
    client = Qmp(f"{work}/s1.sock")
    mons = {m["id"]: m for m in client.cmd("query-monitors")}
    if not mons.get("s1", {}).get("dynamic") or "compat_monitor0" not in mons:
        fail(f"query-monitors: {mons}")
    client.cmd("monitor-remove", id="s1")
    if client.read() is not None:
        fail("the removed monitor's connection stayed open")
    if [m["id"] for m in mgr.cmd("query-monitors")] != ["compat_monitor0"]:
        fail("the removed monitor is still listed")
    mgr.cmd("chardev-remove", id="s1")

    # the guest boots to its init and answers on its console
    console = connect(f"{work}/ser0.sock")
    console.settimeout(5)
    buf = b""
    deadline = time.monotonic() + BOOT_LIMIT
    while b"qmh: ready" not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            fail(f"the guest did not boot: {buf[-2000:]!r}")
        try:
            data = console.recv(4096)
        except socket.timeout:
            continue
        if not data:
            fail(f"console closed: {buf[-2000:]!r}")
        buf += data
    console.sendall(b"echo installed\n")
    deadline = time.monotonic() + STEP_LIMIT
    while b"qmh: echo installed" not in buf:
        if time.monotonic() > deadline:
            fail(f"the guest does not answer: {buf[-2000:]!r}")
        try:
            buf += console.recv(4096)
        except socket.timeout:
            pass
    print("check-install: the guest booted and answers on its console")

    mgr.send("quit")
    try:
        proc.wait(timeout=STEP_LIMIT)
    except subprocess.TimeoutExpired:
        fail("quit did not end QEMU")


if __name__ == "__main__":
    main()
