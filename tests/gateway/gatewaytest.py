# SPDX-License-Identifier: MIT
"""Fixtures of the gateway's generic HTTP tests: a private dbus-daemon with no service on it, the
built aziot-gatewayd on a temporary socket, and the raw HTTP client of tests/lib/aziot_http.py.
What needs keyd is tested against the real one, in test_keys_http.py."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR", "build")
SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GATEWAYD = os.path.join(BUILD_DIR, "gateway", "aziot-gatewayd")
API = "api-version=2021-05-01"

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
from aziot_http import Connection, request_bytes  # noqa: E402

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what}")


class GatewayTestCase(unittest.TestCase):
    """Starts a private bus and a gateway per class."""

    MAX_REQUESTS = 10
    BODY_TIMEOUT_MS = 400

    @classmethod
    def setUpClass(cls):
        if not os.access(GATEWAYD, os.X_OK):
            raise unittest.SkipTest(f"{GATEWAYD} not built")
        cls.tmp = tempfile.mkdtemp(prefix="aziot-gw-")
        os.chmod(cls.tmp, 0o755)  # the unprivileged client must reach the socket
        cls.procs = []
        cls.bus_address = cls.start_bus()
        cls.config = os.path.join(cls.tmp, "keyd.toml")
        with open(cls.config, "w") as f:
            f.write(f"max_requests = {cls.MAX_REQUESTS}\n")
        cls.socket_path = os.path.join(cls.tmp, "keyd.sock")
        cls.gateway, cls.log_path = cls.start_gateway(["--keyd-socket", cls.socket_path])
        wait_for(lambda: os.path.exists(cls.socket_path), what="the gateway's socket")

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("AZIOT_TEST_SHOW_LOGS"):
            for name in sorted(os.listdir(cls.tmp)):
                if name.endswith(".log"):
                    with open(os.path.join(cls.tmp, name)) as f:
                        sys.stderr.write(f"--- {name}\n{f.read()}")
        for p in reversed(cls.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # Under the sanitizers a gateway reports at exit: that is a failure too.
        reports = []
        for name in sorted(os.listdir(cls.tmp)):
            if name.startswith("gateway-") and name.endswith(".log"):
                with open(os.path.join(cls.tmp, name)) as f:
                    text = f.read()
                if "Sanitizer" in text or "runtime error:" in text:
                    reports.append(f"--- {name}\n{text}")
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports:\n" + "\n".join(reports))

    @classmethod
    def start_bus(cls):
        path = os.path.join(cls.tmp, "bus")
        conf = os.path.join(cls.tmp, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONFIG.format(path=path))
        p = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        cls.procs.append(p)
        address = p.stdout.readline().decode().strip()
        p.stdout.close()
        return address

    @classmethod
    def gateway_env(cls, **extra):
        env = dict(os.environ)
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(name, None)
        env.update(DBUS_SYSTEM_BUS_ADDRESS=cls.bus_address, AZIOT_LOG="debug",
                   AZIOT_KEYD_CONFIG=cls.config if hasattr(cls, "config") else "/nonexistent",
                   AZIOT_KEYD_CONFIG_DIR=os.path.join(cls.tmp, "config.d"),
                   AZIOT_GATEWAY_BODY_TIMEOUT_MS=str(cls.BODY_TIMEOUT_MS))
        env.update(extra)
        return env

    @classmethod
    def start_gateway(cls, args, env=None, **popen):
        log_path = os.path.join(cls.tmp, f"gateway-{len(cls.procs)}.log")
        log = open(log_path, "w")
        p = subprocess.Popen([GATEWAYD] + args, env=env or cls.gateway_env(), stdout=log,
                             stderr=subprocess.STDOUT, **popen)
        log.close()
        cls.procs.append(p)
        return p, log_path

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def connect(self):
        c = Connection(self.socket_path)
        self.addCleanup(c.close)
        return c

    def request(self, method, target, body=None, headers=None, content_type="application/json",
                conn=None):
        c = conn or self.connect()
        c.send(request_bytes(method, target, body, headers, content_type))
        return c.read_response(head_request=method == "HEAD")

    def assertError(self, response, status, message):
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.header("content-type"), b"application/json")
        self.assertEqual(response.json(), {"message": message})


def main():
    unittest.main(verbosity=2, argv=[sys.argv[0]] + sys.argv[1:])
