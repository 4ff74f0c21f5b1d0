# SPDX-License-Identifier: MIT
"""Fixtures of the gateway's process tests: a private dbus-daemon, the built aziot-gatewayd on a
temporary socket, an optional stand-in for keyd (mock_keyd.py), and a small raw HTTP client."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR", "build")
SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GATEWAYD = os.path.join(BUILD_DIR, "gateway", "aziot-gatewayd")
MOCK_KEYD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mock_keyd.py")
API = "api-version=2021-05-01"

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


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name lower-cased, value bytes)
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        values = [v for n, v in self.headers if n == name]
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)


class Connection:
    """A raw HTTP/1.1 client over a Unix socket: sends bytes as given, parses responses."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_response(self, head_request=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        version, status, reason = lines[0].split(b" ", 2)
        assert version == b"HTTP/1.1", lines[0]
        headers = []
        for line in lines[1:]:
            name, value = line.split(b":", 1)
            headers.append((name.decode().lower(), value.strip()))
        length = [int(v) for n, v in headers if n == "content-length"]
        n = 0 if head_request or not length else length[0]
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return Response(int(status), reason.decode(), headers, body, head)

    def is_closed(self, timeout=2.0):
        """True when the server closed the connection (EOF or reset) with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        return data == b"" and self.buf == b""


def request_bytes(method, target, body=None, headers=None, content_type="application/json"):
    lines = [f"{method} {target} HTTP/1.1"]
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        lines.append(f"content-length: {len(data)}")
        if content_type:
            lines.append(f"content-type: {content_type}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class GatewayTestCase(unittest.TestCase):
    """Starts a private bus (with the keyd stand-in when WITH_KEYD) and a gateway per class."""

    WITH_KEYD = False
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
        if cls.WITH_KEYD:
            cls.start_mock_keyd()
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
    def start_mock_keyd(cls):
        cls.calls_path = os.path.join(cls.tmp, "calls.jsonl")
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=cls.bus_address)
        p = subprocess.Popen(["/usr/bin/python3", MOCK_KEYD, cls.calls_path], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        cls.procs.append(p)
        assert p.stdout.readline().strip() == b"ready"
        p.stdout.close()

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
