# SPDX-License-Identifier: GPL-2.0-or-later
"""Clients nobody here wrote: the official qemu.qmp package (PyPI) on
monitors made by monitor-add, against the patched QEMU in build/bin."""

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

from qemu.qmp import EventListener, ExecuteError, QMPClient
from qemu.qmp.protocol import StateError
from qemu.qmp.legacy import QEMUMonitorProtocol

BIN_DIR = os.environ.get("QEMU_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build/bin"))

# Every wait is bounded: a hang fails the test, saying what it waited
# for, instead of blocking the suite.  Seconds per wait.
TIMEOUT = 30


def timed_out(what):
    return AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")


async def bounded(awaitable, what):
    """awaitable, waited for at most TIMEOUT seconds."""
    try:
        return await asyncio.wait_for(awaitable, TIMEOUT)
    except asyncio.TimeoutError:
        raise timed_out(what) from None


class BoundedQMP(QEMUMonitorProtocol):
    """qemu.qmp's legacy client with every wait bounded: it has a
    timeout for commands (settimeout) but none for connect and close."""

    def __init__(self, address):
        super().__init__(address)
        self.settimeout(TIMEOUT)
        self._awaiting = None

    def _sync(self, future, timeout=None):
        try:
            return super()._sync(future, TIMEOUT if timeout is None else timeout)
        except asyncio.TimeoutError:
            raise timed_out(f"{self._awaiting or 'QMP'} on {self._address}") from None

    def _bounded(self, what, call, *args, **kwargs):
        self._awaiting = what
        try:
            return call(*args, **kwargs)
        finally:
            self._awaiting = None

    def connect(self, negotiate=True):
        return self._bounded("the greeting", super().connect, negotiate)

    def cmd_obj(self, qmp_cmd):
        return self._bounded(f"the reply to {qmp_cmd}", super().cmd_obj, qmp_cmd)

    def cmd(self, cmd, **kwds):
        return self._bounded(f"the reply to {cmd}", super().cmd, cmd, **kwds)

    def close(self):
        return self._bounded("the disconnect", super().close)


class Qemu:
    """A patched QEMU whose manager monitor is driven by qemu.qmp's
    legacy synchronous client."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="qmh-py-")
        mgr = os.path.join(self.dir, "mgr.sock")
        self.proc = subprocess.Popen(
            [os.path.join(BIN_DIR, "qemu-system-x86_64"), "-M", "none", "-accel", "qtest",
             "-display", "none", "-qmp", f"unix:{mgr},server=on,wait=off"])
        try:
            deadline = time.monotonic() + TIMEOUT
            while not os.path.exists(mgr):
                if time.monotonic() > deadline:
                    raise timed_out(f"QEMU to create {mgr}")
                time.sleep(0.05)
            self.mgr = BoundedQMP(mgr)
            self.mgr.connect()
        except BaseException:
            # setUp failed: no cleanup will stop this QEMU
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def cmd(self, name, **args):
        rsp = self.mgr.cmd_raw(name, args or None)
        if "error" in rsp:
            raise AssertionError(f"{name} {args}: {rsp}")
        return rsp["return"]

    def session(self, mon_id, **options):
        """A socket chardev and a dynamic monitor on it, with monitor-add
        `options`; returns its path."""
        path = os.path.join(self.dir, f"{mon_id}.sock")
        self.cmd("chardev-add", id=mon_id, backend={"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": path}}, "server": True, "wait": False}})
        self.cmd("monitor-add", id=mon_id, chardev=mon_id, **options)
        return path

    def close(self):
        try:
            self.mgr.cmd_raw("quit")
            # qemu.qmp reports the server's closing of the line as EOFError
            with contextlib.suppress(EOFError):
                self.mgr.close()
            status = self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            shutil.rmtree(self.dir, ignore_errors=True)
        assert status == 0, f"QEMU exited with {status}"


class QemuQmpClients(unittest.TestCase):
    def setUp(self):
        self.qemu = Qemu()
        self.addCleanup(self.qemu.close)

    def test_async_client_negotiates_runs_gets_events_and_is_disconnected(self):
        path = self.qemu.session("s1")
        mgr_path = os.path.join(self.qemu.dir, "mgr.sock")

        # The legacy client runs its own event loop: use an asynchronous
        # client as the manager here.
        self.qemu.mgr.close()

        async def scenario():
            mgr = QMPClient("manager")
            await bounded(mgr.connect(mgr_path), "the manager's greeting")
            try:
                await session(mgr)
            finally:
                await bounded(mgr.disconnect(), "the manager's disconnect")

        async def session(mgr):
            client = QMPClient("s1")
            await bounded(client.connect(path), "s1's greeting")
            self.assertEqual(await bounded(client.execute("query-name"), "s1's query-name"), {})
            listener = EventListener()
            with client.listen(listener):
                await bounded(mgr.execute("stop"), "the reply to stop")
                event = await bounded(listener.get(), "the STOP event on s1")
            self.assertEqual(event["event"], "STOP")
            # Removed by the manager: the server side closes the connection,
            # which qemu.qmp reports as EOFError when the client disconnects.
            await bounded(mgr.execute("monitor-remove", {"id": "s1"}), "the reply to monitor-remove")
            with self.assertRaises(StateError):
                await bounded(client.execute("query-name"), "s1's query-name after its removal")
            with self.assertRaises(EOFError):
                await bounded(client.disconnect(), "s1's disconnect")
            ids = [m["id"] for m in await bounded(mgr.execute("query-monitors"), "the reply to query-monitors")]
            self.assertEqual(ids, ["compat_monitor0"])

        try:
            asyncio.run(scenario())
        finally:
            self.qemu.mgr = BoundedQMP(mgr_path)
            self.qemu.mgr.connect()

    def test_legacy_client_removes_its_own_monitor(self):
        path = self.qemu.session("s2")
        client = BoundedQMP(path)
        greeting = client.connect(negotiate=True)
        self.assertEqual(greeting["QMP"]["capabilities"], ["oob"])
        self.assertIn("status", client.cmd("query-status"))
        self.assertEqual(client.cmd("monitor-remove", id="s2"), {})
        # The reply came first; then the monitor is gone.
        self.assertEqual([m["id"] for m in self.qemu.cmd("query-monitors")], ["compat_monitor0"])
        with self.assertRaises(EOFError):  # the server closed the line
            client.close()
        self.qemu.cmd("chardev-remove", id="s2")

    def test_async_client_on_a_restricted_session(self):
        """qemu.qmp introspects and runs commands on a session that may
        run query-* only: it sees the smaller QEMU, a refused command
        raises ExecuteError with the refusal, and the session goes on."""
        path = self.qemu.session("r1", **{"allow-commands": ["query-*"],
                                          "deny-commands": ["query-qmp-schema"]})

        async def scenario():
            client = QMPClient("r1")
            await bounded(client.connect(path), "r1's greeting")
            try:
                names = {c["name"] for c in await bounded(
                    client.execute("query-commands"), "r1's query-commands")}
                self.assertIn("query-status", names)
                self.assertFalse({n for n in names
                                  if not n.startswith("query-") and n != "qmp_capabilities"}, names)
                self.assertNotIn("query-qmp-schema", names)
                for refused in ["stop", "quit", "query-qmp-schema", "human-monitor-command"]:
                    with self.assertRaises(ExecuteError) as err:
                        await bounded(client.execute(refused), f"r1's {refused}")
                    self.assertEqual(err.exception.error.error.desc,
                                     f"The command '{refused}' is not allowed on this monitor")
                status = await bounded(client.execute("query-status"), "r1's query-status")
                self.assertEqual(status["status"], "running")
            finally:
                await bounded(client.disconnect(), "r1's disconnect")

        asyncio.run(scenario())
        self.assertEqual(self.qemu.cmd("query-status")["status"], "running")

    def test_async_client_over_tls(self):
        """qemu.qmp over TLS (Python's ssl) to a monitor added on a
        listening TCP chardev with tls-creds: the handshake, a command,
        the disconnect when the manager removes it, and the chardev free
        again."""
        certs = os.path.join(self.qemu.dir, "tls")
        os.mkdir(certs)
        script = os.path.join(os.path.dirname(__file__), "../common/tls-certs.sh")
        subprocess.run([script, certs], check=True, timeout=TIMEOUT)
        self.qemu.cmd("object-add", **{"qom-type": "tls-creds-x509", "id": "tls0",
                                       "endpoint": "server", "dir": certs,
                                       "verify-peer": False})
        self.qemu.cmd("chardev-add", id="t1", backend={"type": "socket", "data": {
            "addr": {"type": "inet", "data": {"host": "127.0.0.1", "port": "0"}},
            "server": True, "wait": False, "tls-creds": "tls0"}})
        self.qemu.cmd("monitor-add", id="t1", chardev="t1")
        [filename] = [c["filename"] for c in self.qemu.cmd("query-chardev") if c["label"] == "t1"]
        port = int(filename.split(",")[0].rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=os.path.join(certs, "ca-cert.pem"))

        async def scenario():
            client = QMPClient("t1")
            await bounded(client.connect(("127.0.0.1", port), ssl=context), "t1's greeting over TLS")
            self.assertEqual(await bounded(client.execute("query-name"), "t1's query-name"), {})
            # Removed by the manager (a TLS chardev drops what a removed
            # monitor had not written yet: no self-removal's reply here)
            await asyncio.to_thread(self.qemu.cmd, "monitor-remove", id="t1")
            with self.assertRaises(StateError):
                await bounded(client.execute("query-name"), "t1's query-name after its removal")
            with self.assertRaises(EOFError):  # the server closed the line
                await bounded(client.disconnect(), "t1's disconnect")

        asyncio.run(scenario())
        self.assertEqual([m["id"] for m in self.qemu.cmd("query-monitors")], ["compat_monitor0"])
        self.qemu.cmd("chardev-remove", id="t1")

    def test_qmp_shell_drives_a_dynamic_monitor(self):
        path = self.qemu.session("s3")
        # qmp-shell is installed next to this interpreter, in the venv
        shell = os.path.join(os.path.dirname(sys.executable), "qmp-shell")
        out = subprocess.run([shell, path], input="query-name\nquery-monitors\n",
                             capture_output=True, text=True, timeout=60, check=True).stdout
        prompt = "(QEMU) "
        replies = [json.loads(line[len(prompt):]) for line in out.splitlines()
                   if line.startswith(prompt + "{")]
        self.assertEqual(replies[0], {"return": {}})
        ids = [m["id"] for m in replies[1]["return"]]
        self.assertEqual(ids, ["compat_monitor0", "s3"])
        self.qemu.cmd("monitor-remove", id="s3")


if __name__ == "__main__":
    unittest.main()
