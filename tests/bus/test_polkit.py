#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The asynchronous polkit checks of services/common, against the real polkitd.

tests/bus/polkit-probe asks polkit through services/common/polkit.c exactly as the daemons do; this
suite runs it on a private system bus (tests/lib/aziot_harness.py) with our restrictive bus policy
and calls it as root, as the unprivileged test users and as a user the policy does not admit.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_POLKIT_PROBE.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
PROBE = os.environ.get("AZIOT_POLKIT_PROBE") or \
    os.path.join(BUILD_DIR, "tests", "bus", "polkit-probe")
TEST_DIR = os.path.join(SOURCE_DIR, "tests", "bus")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import aziot_harness  # noqa: E402

import dbus  # noqa: E402
import dbus.mainloop.glib  # noqa: E402
from gi.repository import GLib  # noqa: E402

NAME = "org.aziot.test.PolkitProbe1"
PATH = "/org/aziot/test/PolkitProbe1"
IFACE = "org.aziot.test.PolkitProbe1"
NOT_AUTHORIZED = "org.aziot.test.PolkitProbe1.Error.NotAuthorized"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"

USE = "org.aziot.test.polkitprobe.use"
MANAGE = "org.aziot.test.polkitprobe.manage"
CHALLENGE = "org.aziot.test.polkitprobe.challenge"
USER_A, USER_B = aziot_harness.TEST_USERS

# Calls the probe from another process (run as some user); prints the outcome as JSON.
CLIENT = r"""
import dbus, json, sys
method, args = sys.argv[1], json.loads(sys.argv[2])
try:
    probe = dbus.SystemBus().get_object("%s", "%s", introspect=False)
    if method.startswith("org.freedesktop.DBus."):
        iface, member = method.rsplit(".", 1)
    else:
        iface, member = "%s", method
    sig = {"CheckAll": "as", "CheckDetails": "sa{ss}"}.get(member)
    result = probe.get_dbus_method(member, iface)(*args, signature=sig, timeout=20)
    print(json.dumps({"ok": bool(result)}))
except dbus.DBusException as e:
    print(json.dumps({"error": e.get_dbus_name(), "message": e.get_dbus_message()}))
""" % (NAME, PATH, IFACE)


# Python in a child: the one with dbus-python, whatever python3 is on PATH.
PYTHON = "/usr/bin/python3"


def rule(js_condition, result="YES"):
    return ("polkit.addRule(function(action, subject) {\n"
            f"    if ({js_condition})\n"
            f"        return polkit.Result.{result};\n"
            "});\n")


class StackTestCase(aziot_harness.StackTestMixin, unittest.TestCase):
    """One stack (bus, polkitd) per test class; rules added by a test are removed after it."""

    probe_args = []

    @classmethod
    def setUpClass(cls):
        if not os.access(PROBE, os.X_OK):
            raise unittest.SkipTest(f"{PROBE} is not built")
        aziot_harness.ensure_test_users()
        cls.run_dir = tempfile.mkdtemp(prefix="aziot-polkit-")
        cls.stack = aziot_harness.Stack(
            cls.run_dir, SOURCE_DIR, BUILD_DIR, extra_bus_policy_dirs=[TEST_DIR],
            extra_actions=[os.path.join(TEST_DIR, "org.aziot.test.polkitprobe.policy")])
        cls.failed = False
        try:
            cls.stack.start()
            cls.start_probe()
        except BaseException:
            cls.stack.stop()
            print(f"stack logs kept in {cls.run_dir}", file=sys.stderr)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        if cls.failed:
            print(f"\nstack logs kept in {cls.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.run_dir, ignore_errors=True)

    @classmethod
    def start_probe(cls, *extra_args):
        return cls.stack.start_process("polkit-probe", [PROBE, *cls.probe_args, *extra_args],
                                       env={"AZIOT_LOG": "debug"}, wait_bus_name=NAME)

    def setUp(self):
        self.rules = []
        self.peers = []

    def tearDown(self):
        for peer, conn in self.peers:
            conn.close()
            peer.wait(10)
        self.remove_test_rules()
        if not self.stack.polkitd_running():
            self.stack.start_polkitd()

    # -- helpers ------------------------------------------------------------------------------

    def probe(self):
        return dbus.Interface(self.stack.bus().get_object(NAME, PATH, introspect=False), IFACE)

    def call_root(self, method, *args, timeout=20):
        """Calls the probe as root in this process: {"ok": bool} or {"error": name}."""
        try:
            return {"ok": bool(self.probe().get_dbus_method(method)(*args, timeout=timeout))}
        except dbus.DBusException as e:
            return {"error": e.get_dbus_name(), "message": e.get_dbus_message()}

    def call_as(self, user, method, *args):
        """Calls the probe from a client process running as user."""
        result = self.stack.run_as(user, [PYTHON, "-c", CLIENT, method, json.dumps(args)])
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def assertAllowed(self, outcome):
        self.assertEqual(outcome, {"ok": True})

    def assertDenied(self, outcome, error=NOT_AUTHORIZED):
        self.assertEqual(outcome.get("error"), error, outcome)

    def peer_as(self, user):
        """A process running as user, connected to a socket we accept: returns (popen, our end
        of the connection), whose SO_PEERCRED names that process."""
        peer, conn = self.stack.connected_peer_as(user)
        self.peers.append((peer, conn))
        return peer, conn

    def probe_log(self):
        return self.stack.processes["polkit-probe"].log()

    def wait_for_probe_log(self, pattern, count, timeout=10):
        aziot_harness._wait_until(lambda: len(re.findall(pattern, self.probe_log())) >= count,
                                  timeout, f"{count} x {pattern!r} in the probe's log")


class PolkitTest(StackTestCase):

    # -- the bus caller (system-bus-name subject) ---------------------------------------------

    def test_root_is_allowed(self):
        self.assertAllowed(self.call_root("Check", USE))
        self.assertAllowed(self.call_root("Check", MANAGE))

    def test_unprivileged_user_is_denied(self):
        self.assertDenied(self.call_as(USER_A, "Check", USE))
        self.assertDenied(self.call_as(USER_B, "Check", MANAGE))

    def test_rule_grants_one_action_to_one_user(self):
        self.assertDenied(self.call_as(USER_A, "Check", USE))
        self.add_rules(rule(f'action.id == "{USE}" && subject.user == "{USER_A}"'))
        self.assertAllowed(self.call_as(USER_A, "Check", USE))
        # Only that action, only that user.
        self.assertDenied(self.call_as(USER_A, "Check", MANAGE))
        self.assertDenied(self.call_as(USER_B, "Check", USE))
        # And not once the rule is gone.
        self.stack.remove_rules(self.rules.pop())
        self.assertDenied(self.call_as(USER_A, "Check", USE))

    def test_root_is_allowed_whatever_the_rules(self):
        # polkitd authorizes uid 0 before it runs any rule.
        self.add_rules(rule(f'action.id == "{MANAGE}"', "NO"))
        self.assertAllowed(self.call_root("Check", MANAGE))

    def test_challenge_is_a_denial(self):
        # auth_admin: polkitd answers "not authorized, but could be after authentication".
        self.assertDenied(self.call_as(USER_A, "Check", CHALLENGE))
        self.assertRegex(self.probe_log(), f"polkit wants .* to authenticate for {CHALLENGE}")

    def test_polkit_error_is_a_denial(self):
        # An action polkitd does not know is an error reply, for root too.
        self.assertDenied(self.call_root("Check", "org.aziot.test.polkitprobe.unknown"))
        self.assertRegex(self.probe_log(), "polkit check of org.aziot.test.polkitprobe.unknown "
                                           "for .* failed, denying")

    def test_invalid_action_is_rejected_before_polkit(self):
        self.assertDenied(self.call_root("Check", "no spaces/allowed"), INVALID_ARGS)
        self.assertDenied(self.call_root("Check", ""), INVALID_ARGS)

    def test_details_reach_polkit(self):
        self.add_rules(rule(f'action.id == "{USE}" && subject.user == "{USER_A}" && '
                            'action.lookup("key-id") == "k1"'))
        self.assertAllowed(self.call_as(USER_A, "CheckDetails", USE, {"key-id": "k1"}))
        self.assertDenied(self.call_as(USER_A, "CheckDetails", USE, {"key-id": "k2"}))
        self.assertDenied(self.call_as(USER_A, "CheckDetails", USE, {}))

    def test_one_call_needing_several_answers(self):
        # The handler runs three times for two actions: the first answer must still be there on
        # the third run (a registry that forgot it at once would loop for ever).
        self.add_rules(rule(f'action.id == "{USE}" && subject.user == "{USER_A}"'))
        self.assertDenied(self.call_as(USER_A, "CheckAll", [USE, MANAGE]))
        self.add_rules(rule(f'action.id == "{MANAGE}" && subject.user == "{USER_A}"'))
        self.assertAllowed(self.call_as(USER_A, "CheckAll", [USE, MANAGE, USE]))
        asked = len(re.findall(f"Asked polkit about {USE}", self.probe_log()))
        self.assertAllowed(self.call_as(USER_A, "CheckAll", [USE, MANAGE]))
        # Each action asked once per call.
        self.assertEqual(len(re.findall(f"Asked polkit about {USE}", self.probe_log())),
                         asked + 1)

    # -- the bus policy -----------------------------------------------------------------------

    def test_bus_policy_shuts_out_other_users(self):
        # nobody is not in the probe's .conf: the bus refuses before the probe sees anything.
        self.assertDenied(self.call_as("nobody", "Check", USE), ACCESS_DENIED)
        # A test user may call the probe's interface, not others on it.
        self.assertDenied(self.call_as(USER_A, "org.freedesktop.DBus.Peer.Ping"), ACCESS_DENIED)
        # Only root may own the name.
        result = self.stack.run_as(USER_A, [PYTHON, "-c",
                                            "import dbus; dbus.SystemBus().request_name("
                                            "'org.aziot.test.PolkitProbe1.Other')"])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(ACCESS_DENIED, result.stderr)

    # -- delegated sockets (unix-process subject) ---------------------------------------------

    def test_delegated_socket_authorizes_the_peer_process(self):
        peer, conn = self.peer_as(USER_A)
        fd = dbus.types.UnixFd(conn.fileno())
        # The caller is root, which polkit always allows: a denial proves the peer was asked about.
        self.assertDenied(self.call_root("CheckDelegated", fd, USE))
        self.add_rules(rule(f'action.id == "{USE}" && subject.user == "{USER_A}" && '
                            f'subject.pid == {peer.pid}'))
        self.assertAllowed(self.call_root("CheckDelegated", fd, USE))
        self.assertDenied(self.call_root("CheckDelegated", fd, MANAGE))
        self.assertIn(f"CheckDelegated: peer pid {peer.pid} uid "
                      f"{aziot_harness.pwd.getpwnam(USER_A).pw_uid}", self.probe_log())

    def test_delegated_socket_of_another_process_is_not_matched(self):
        peer, conn = self.peer_as(USER_A)
        other, _ = self.peer_as(USER_A)
        self.add_rules(rule(f'subject.pid == {other.pid}'))
        self.assertDenied(self.call_root("CheckDelegated", dbus.types.UnixFd(conn.fileno()), USE))

    def test_delegated_garbage_fd_is_a_clean_error(self):
        read_end, write_end = os.pipe()
        try:
            self.assertDenied(self.call_root("CheckDelegated", dbus.types.UnixFd(read_end), USE),
                              INVALID_ARGS)
        finally:
            os.close(read_end)
            os.close(write_end)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unconnected:
            self.assertDenied(self.call_root("CheckDelegated",
                                             dbus.types.UnixFd(unconnected.fileno()), USE),
                              INVALID_ARGS)
        self.assertTrue(self.stack.processes["polkit-probe"].alive())
        self.assertAllowed(self.call_root("Check", USE))

    def test_delegated_socket_whose_peer_has_exited(self):
        peer, conn = self.peer_as(USER_A)
        peer.kill()
        peer.wait(10)
        self.assertDenied(self.call_root("CheckDelegated", dbus.types.UnixFd(conn.fileno()), USE),
                          INVALID_ARGS)

    # -- polkitd missing or dying -------------------------------------------------------------

    def test_polkitd_stopped_means_denied(self):
        self.add_rules(rule(f'subject.user == "{USER_A}"'))
        self.stack.stop_polkitd()
        start = time.monotonic()
        self.assertDenied(self.call_root("Check", USE, timeout=10))
        self.assertDenied(self.call_as(USER_A, "Check", USE))
        self.assertLess(time.monotonic() - start, 5)
        self.assertIn("polkit is not running", self.probe_log())
        self.stack.start_polkitd()
        self.assertAllowed(self.call_root("Check", USE))
        self.assertAllowed(self.call_as(USER_A, "Check", USE))

    def test_polkitd_dying_during_a_check_means_denied(self):
        polkitd = self.stack.polkitd_process.popen
        asked = len(re.findall("Asked polkit about", self.probe_log()))
        polkitd.send_signal(signal.SIGSTOP)
        client = self.stack.popen_as("root", [PYTHON, "-c", CLIENT, "Check", json.dumps([USE])],
                                     stdout=subprocess.PIPE, text=True)
        try:
            self.wait_for_probe_log("Asked polkit about", asked + 1)
            polkitd.kill()
            out, _ = client.communicate(timeout=10)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        self.assertDenied(json.loads(out))
        self.stack.stop_polkitd()  # reaps it and waits for its name to go

    # -- many checks in flight at once --------------------------------------------------------

    def test_concurrent_checks_each_get_their_own_answer(self):
        peer_a, conn_a = self.peer_as(USER_A)
        peer_b, conn_b = self.peer_as(USER_B)
        self.add_rules(rule(f'action.id == "{MANAGE}" && subject.user == "{USER_A}"'))
        fd_a, fd_b = dbus.types.UnixFd(conn_a.fileno()), dbus.types.UnixFd(conn_b.fileno())
        calls = []
        for i in range(20):
            calls.append([("Check", (USE,), True),
                          ("CheckDelegated", (fd_a, MANAGE), True),
                          ("CheckDelegated", (fd_a, USE), False),
                          ("CheckDelegated", (fd_b, MANAGE), False)][i % 4])

        loop = GLib.MainLoop()
        conn = dbus.bus.BusConnection(self.stack.bus_address,
                                      mainloop=dbus.mainloop.glib.DBusGMainLoop())
        probe = dbus.Interface(conn.get_object(NAME, PATH, introspect=False), IFACE)
        answers = {}

        def done(i, outcome):
            answers[i] = outcome
            if len(answers) == len(calls):
                loop.quit()

        asked = len(re.findall("Asked polkit about", self.probe_log()))
        polkitd = self.stack.polkitd_process.popen
        # Hold polkitd until every call has its query in flight, so that all 20 are pending at
        # once in the probe's registry.
        polkitd.send_signal(signal.SIGSTOP)
        try:
            for i, (method, args, _) in enumerate(calls):
                probe.get_dbus_method(method)(
                    *args, timeout=30,
                    reply_handler=lambda ok, i=i: done(i, {"ok": bool(ok)}),
                    error_handler=lambda e, i=i: done(i, {"error": e.get_dbus_name()}))
            deadline = time.monotonic() + 10
            while len(re.findall("Asked polkit about", self.probe_log())) < asked + 20:
                GLib.MainContext.default().iteration(False)
                self.assertLess(time.monotonic(), deadline, "the probe did not ask 20 times")
                time.sleep(0.01)
        finally:
            polkitd.send_signal(signal.SIGCONT)
        timeout = GLib.timeout_add_seconds(20, loop.quit)
        loop.run()
        GLib.source_remove(timeout)
        conn.close()

        self.assertEqual(len(answers), 20)
        for i, (method, args, allowed) in enumerate(calls):
            with self.subTest(call=i, method=method):
                if allowed:
                    self.assertAllowed(answers[i])
                else:
                    self.assertDenied(answers[i])
        self.assertTrue(self.stack.processes["polkit-probe"].alive())


class IdleExitTest(StackTestCase):
    """bus_request_name_and_run_until_idle(): exit when idle, not while a check is in flight."""

    probe_args = ["--idle-exit-ms=1500"]

    def test_exits_when_idle_but_not_while_busy(self):
        process = self.stack.processes["polkit-probe"]
        # Calls keep it alive past its idle time.
        start = time.monotonic()
        while time.monotonic() - start < 2.5:
            self.assertAllowed(self.call_root("Check", USE))
            time.sleep(0.2)
        self.assertTrue(process.alive())

        # A check waiting for polkitd is work in flight: no exit, however long it takes.
        polkitd = self.stack.polkitd_process.popen
        asked = len(re.findall("Asked polkit about", self.probe_log()))
        polkitd.send_signal(signal.SIGSTOP)
        client = self.stack.popen_as("root", [PYTHON, "-c", CLIENT, "Check", json.dumps([USE])],
                                     stdout=subprocess.PIPE, text=True)
        try:
            self.wait_for_probe_log("Asked polkit about", asked + 1)
            time.sleep(3)  # twice the idle time, on purpose: nothing should happen
            self.assertTrue(process.alive())
        finally:
            polkitd.send_signal(signal.SIGCONT)
        out, _ = client.communicate(timeout=20)
        self.assertAllowed(json.loads(out))

        # Then idle: it releases its name and exits cleanly.
        self.assertEqual(process.popen.wait(10), 0)
        self.assertIn("releasing org.aziot.test.PolkitProbe1 and exiting", process.log())
        self.assertFalse(self.stack.name_has_owner(NAME))
        self.assertDenied(self.call_root("Check", USE), SERVICE_UNKNOWN)

        # Made activatable, the next call starts a new instance (which connects through
        # DBUS_STARTER_ADDRESS), and it serves that call.
        self.stack.write_service_file(NAME, [PROBE, "--idle-exit-ms=60000"],
                                      env={"AZIOT_LOG": "debug"})
        self.assertAllowed(self.call_root("Check", USE))
        pid = self.stack.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionUnixProcessID", "s", (NAME,))
        self.assertNotEqual(pid, process.pid)
        self.assertIn(f"Asked polkit about {USE}",
                      aziot_harness._read_text(os.path.join(self.run_dir, "logs",
                                                            f"{NAME}.log")))


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
