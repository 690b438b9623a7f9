# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU 11.1's functional test of runtime monitors
(tests/functional/generic/test_monitor_hotplug.py), ported to this
project's harness: the same scenarios in the QOM spelling (object-add
and object-del of monitor-qmp), driven by qemu.qmp, against the patched
QEMU in build/bin.  Outcomes are asserted exactly, in both views of the
monitors (query-monitors and /objects), and every wait is bounded."""

import asyncio
import os
import random
import sys
import threading
import time
import unittest

from qemu.qmp import ExecInterruptedError, QMPClient
from qemu.qmp.protocol import StateError

from test_qemu_qmp import TIMEOUT, BoundedQMP, Qemu, bounded, timed_out

LISTED_BEFORE = ["compat_monitor0"]


class MonitorObjects(unittest.TestCase):
    def setUp(self):
        self.qemu = Qemu()
        self.addCleanup(self.qemu.close)
        self.sock = f"{self.qemu.dir}/hotplug.sock"

    def add_monitor(self, close_action=None):
        """A socket chardev and a monitor-qmp object on it."""
        self.qemu.cmd("chardev-add", id="hotplug-chr", backend={"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": self.sock}},
            "server": True, "wait": False}})
        args = {"qom-type": "monitor-qmp", "id": "hotplug-mon", "chardev": "hotplug-chr"}
        if close_action:
            args["close-action"] = close_action
        self.qemu.cmd("object-add", **args)
        self.assert_views(["compat_monitor0", "hotplug-mon"])

    def remove_monitor(self):
        self.qemu.cmd("object-del", id="hotplug-mon")
        self.qemu.cmd("chardev-remove", id="hotplug-chr")
        self.assert_views(LISTED_BEFORE)

    def monitor_objects(self):
        """The monitor objects in /objects, sorted (qom-list's order is a
        hash table's)."""
        return sorted(o["name"] for o in self.qemu.cmd("qom-list", path="/objects")
                      if o["type"] in ("child<monitor-qmp>", "child<monitor-hmp>"))

    def chardevs(self):
        return [c["label"] for c in self.qemu.cmd("query-chardev")]

    def assert_views(self, monitors):
        """query-monitors lists these, and every monitor is an object."""
        self.assertEqual([m["id"] for m in self.qemu.cmd("query-monitors")], monitors)
        self.assertEqual(self.monitor_objects(), sorted(monitors))

    def connect_and_handshake(self):
        qmp = BoundedQMP(self.sock)
        greeting = qmp.connect(negotiate=True)
        self.assertEqual(greeting["QMP"]["capabilities"], ["oob"])
        self.assertEqual(sorted(qmp.cmd("query-version")), ["package", "qemu"])
        return qmp

    def test_hotplug_cycle(self):
        for _ in range(2):  # the same ids and path work again
            self.add_monitor()
            self.connect_and_handshake().close()
            self.remove_monitor()

    def test_self_removal_is_rejected(self):
        self.add_monitor()
        qmp = self.connect_and_handshake()
        rsp = qmp.cmd_obj({"execute": "object-del", "arguments": {"id": "hotplug-mon"}})
        self.assertEqual(rsp["error"], {"class": "GenericError",
                                        "desc": "Cannot delete the current QMP monitor"})
        self.assertEqual(qmp.cmd("query-name"), {})
        qmp.close()
        self.remove_monitor()

    def test_auto_delete(self):
        self.add_monitor(close_action="delete")
        qmp = self.connect_and_handshake()
        self.assertIn("hotplug-chr", self.chardevs())
        qmp.close()
        deadline = time.monotonic() + TIMEOUT
        while "hotplug-chr" in self.chardevs():
            if time.monotonic() > deadline:
                raise timed_out("hotplug-chr to go with its client")
            time.sleep(0.05)
        self.assert_views(LISTED_BEFORE)

    def test_reconnect(self):
        self.add_monitor()
        for _ in range(2):
            qmp = self.connect_and_handshake()
            self.assertIn("hotplug-chr", [c["label"] for c in qmp.cmd("query-chardev")])
            qmp.close()
        self.remove_monitor()

    def test_large_response(self):
        self.add_monitor()
        qmp = self.connect_and_handshake()
        schema = qmp.cmd("query-qmp-schema")
        self.assertIn("monitor-qmp", [m["name"] for e in schema if e["meta-type"] == "enum"
                                      for m in e["members"]])
        qmp.close()
        self.remove_monitor()

    def test_events_after_negotiation(self):
        self.add_monitor()
        qmp = self.connect_and_handshake()
        for command, event in (("stop", "STOP"), ("cont", "RESUME")):
            self.qemu.cmd(command)
            self.assertEqual(qmp.pull_event(wait=float(TIMEOUT))["event"], event)
        qmp.close()
        self.remove_monitor()

    def test_hotplug_stress(self):
        """object-del while a client floods the monitor with large
        replies and event-generating commands, ten times, after a random
        delay each time (seeded: QMH_SEED replays a run).  The client may
        see only one kind of end, its monitor going away: anything else
        (a bounded wait that timed out, a command that failed, half a
        message) fails the test."""
        seed = int(os.environ.get("QMH_SEED") or random.randrange(1 << 32))
        print(f"test_hotplug_stress: seed {seed} (replay with QMH_SEED={seed})", file=sys.stderr)
        rng = random.Random(seed)
        failures = []

        async def flood(connected):
            client = QMPClient("hotplug")
            try:
                await bounded(client.connect(self.sock), "the greeting")
                connected.set()
                try:
                    while True:
                        await bounded(client.execute("query-qmp-schema"), "query-qmp-schema")
                        await bounded(client.execute("stop"), "stop")
                        await bounded(client.execute("cont"), "cont")
                except (ExecInterruptedError, StateError):
                    pass  # the monitor went away under the client
                try:
                    # says how the connection ended
                    await bounded(client.disconnect(), "the disconnect")
                except (ConnectionResetError, EOFError, BrokenPipeError):
                    pass
            except Exception as e:  # pylint: disable=broad-except
                failures.append(f"{type(e).__name__}: {e}")

        for n in range(10):
            self.add_monitor()
            connected = threading.Event()
            thread = threading.Thread(target=lambda: asyncio.run(flood(connected)))
            thread.start()
            # the removal races the flood, not the connect
            if not connected.wait(TIMEOUT):
                raise timed_out(f"the flooding client to connect ({failures})")
            time.sleep(rng.random() / 2)
            self.remove_monitor()
            thread.join(TIMEOUT)
            self.assertFalse(thread.is_alive(), "the flooding client never saw its monitor go")
            self.assertEqual(failures, [], f"round {n}, seed {seed}")
        self.qemu.cmd("cont")  # the last removal may have come between stop and cont
        self.assertEqual(self.qemu.cmd("query-status")["status"], "running")

if __name__ == "__main__":
    unittest.main()
