#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Live demo: a manager adds a QMP monitor at run time, a client talks
on it, the manager removes it.  Prints every message exchanged.

Usage: demo.py PATH/TO/qemu-system-x86_64
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


class Peer:
    """One QMP connection that prints what it sends and receives."""

    def __init__(self, name, path):
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(200):
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")

    def recv(self):
        line = self.file.readline()
        print(f"  {self.name} <- {line.strip() if line else '(EOF: disconnected)'}")
        return json.loads(line) if line else None

    def cmd(self, execute, **arguments):
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        print(f"  {self.name} -> {json.dumps(msg)}")
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            rsp = self.recv()
            if rsp is None or "event" not in rsp:
                return rsp


def main():
    qemu = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="qmh-demo-")
    mgr_path, client_path = os.path.join(tmp, "manager.sock"), os.path.join(tmp, "client.sock")
    proc = subprocess.Popen([qemu, "-M", "none", "-accel", "qtest", "-display", "none",
                             "-qmp", f"unix:{mgr_path},server=on,wait=off"])
    try:
        print("manager: the monitor QEMU was started with (-qmp)")
        mgr = Peer("manager", mgr_path)
        mgr.recv()
        mgr.cmd("qmp_capabilities")
        print("manager: create a chardev and a new monitor on it")
        mgr.cmd("chardev-add", id="client0", backend={"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": client_path}},
            "server": True, "wait": False}})
        mgr.cmd("monitor-add", id="session0", chardev="client0")
        mgr.cmd("query-monitors")
        print("client: a fresh, independent QMP session")
        client = Peer("client ", client_path)
        client.recv()
        client.cmd("qmp_capabilities")
        client.cmd("query-name")
        print("manager: remove the monitor; the client is disconnected")
        mgr.cmd("monitor-remove", id="session0")
        assert client.recv() is None
        mgr.cmd("query-monitors")
        mgr.cmd("chardev-remove", id="client0")
        mgr.cmd("quit")
        proc.wait(timeout=30)
        print(f"QEMU exited with status {proc.returncode}")
        sys.exit(proc.returncode)
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    main()
