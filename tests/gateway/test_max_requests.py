# SPDX-License-Identifier: MIT
"""Where the gateway's max_requests (spec §1.2) comes from: each service publishes its configured
max_requests as the MaxRequests property of its main interface, and the gateway asks for it on the
first connection to the service's socket. The services' configuration files hold secrets and are
readable by their users only, so the gateway, which runs as its own user (aziotgw), never reads them.

  - MaxRequests of keyd, certd, tpmd and identityd is their max_requests (default 10); a bad value
    (-1, 2^32, "ten") makes the service refuse to start, naming max_requests;
  - the gateway, as aziotgw with the project's bus policy, enforces keyd's max_requests from a
    config.toml it cannot read;
  - starting the gateway activates no service: the first connection does.

Needs root (the test stack, the user aziotgw)."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR", "build")
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))

import aziot_harness  # noqa: E402
from aziot_http import Connection, request_bytes  # noqa: E402

GATEWAY_USER = "aziotgw"  # meson_options.txt gateway_user: what the project's bus policy names
V2021 = "api-version=2021-05-01"
TIMEOUT = 15

SERVICES = {
    # name: (binary below the build directory, bus name, interface, extra configuration)
    "keyd": (("services", "keys", "aziot-keyd"), "org.aziot.Keys1", "org.aziot.Keys1",
             '[aziot_keys]\nhomedir_path = "{home}"\n'),
    "certd": (("services", "certs", "aziot-certd"), "org.aziot.Certificates1",
              "org.aziot.Certificates1", 'homedir_path = "{home}"\n'),
    "tpmd": (("services", "tpm", "aziot-tpmd"), "org.aziot.Tpm1", "org.aziot.Tpm1",
             'tcti = "swtpm:path={home}/no-tpm"\n'),
    "identityd": (("services", "identity", "aziot-identityd"), "org.aziot.Identity1",
                  "org.aziot.Identity1",
                  'hostname = "h"\nhomedir = "{home}"\n[provisioning]\nsource = "none"\n'),
}


def object_path(bus_name):
    return "/" + bus_name.replace(".", "/")


def wait_until(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class MaxRequestsTestCase(unittest.TestCase):
    """One test stack (bus with the project's policy, polkitd) per test."""

    def setUp(self):
        for path in [os.path.join(BUILD_DIR, "gateway", "aziot-gatewayd")] + [
                os.path.join(BUILD_DIR, *s[0]) for s in SERVICES.values()]:
            if not os.access(path, os.X_OK):
                self.skipTest(f"{path} not built")
        if os.geteuid() != 0:
            self.skipTest("needs root")
        # Before the bus starts: dbus-daemon ignores a policy naming a user that does not exist.
        self.gw = aziot_harness.ensure_test_users((GATEWAY_USER,))[GATEWAY_USER]
        self.run_dir = tempfile.mkdtemp(prefix="aziot-gwmr-")
        os.chmod(self.run_dir, 0o755)
        self.stack = aziot_harness.Stack(self.run_dir, SOURCE_DIR, BUILD_DIR)
        self.stack.start()
        self.addCleanup(self.stack.stop)

    def config(self, name, max_requests=None, extra=""):
        """Writes run_dir/config/<name>/config.toml, 0600 root's as in the package (it would
        hold secrets); returns the AZIOT_<NAME>_CONFIG variables."""
        home = os.path.join(self.run_dir, name)
        config_dir = os.path.join(self.run_dir, "config", name)
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(config_dir, "config.d"), mode=0o700, exist_ok=True)
        path = os.path.join(config_dir, "config.toml")
        text = ""
        if max_requests is not None:
            text += f"max_requests = {max_requests}\n"
        text += (extra or SERVICES[name][3]).format(home=home)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        upper = name.upper()
        return {f"AZIOT_{upper}_CONFIG": path,
                f"AZIOT_{upper}_CONFIG_DIR": os.path.join(config_dir, "config.d")}

    def activatable(self, name, max_requests=None):
        binary, bus_name = SERVICES[name][0], SERVICES[name][1]
        env = {**self.config(name, max_requests), "AZIOT_GATEWAY_USER": GATEWAY_USER,
               "AZIOT_LOG": "debug"}
        self.stack.write_service_file(bus_name, [os.path.join(BUILD_DIR, *binary)], env=env)

    def service_log(self, name):
        try:
            with open(os.path.join(self.stack.logs_dir, f"{SERVICES[name][1]}.log")) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def max_requests_property(self, name):
        _, bus_name, interface, _ = SERVICES[name]
        return int(self.stack.bus().call_blocking(
            bus_name, object_path(bus_name), "org.freedesktop.DBus.Properties", "Get", "ss",
            (interface, "MaxRequests"), timeout=TIMEOUT))

    def start_gateway(self, names):
        """The gateway as aziotgw, on run_dir/sockets/<name>.sock for each name."""
        sockets = os.path.join(self.run_dir, "sockets")
        os.makedirs(sockets, mode=0o755, exist_ok=True)
        os.chown(sockets, self.gw.pw_uid, self.gw.pw_gid)
        args = []
        for name in names:
            args += [f"--{name}-socket", os.path.join(sockets, f"{name}.sock")]
        # The services' configuration is pointed at as a packaged gateway would find it (it
        # looks nowhere now): AZIOT_*_CONFIG of every service.
        env = {"AZIOT_LOG": "debug"}
        for name in names:
            env.update(self.config_env_of(name))
        self.gateway = self.stack.start_process(
            "gateway", [os.path.join(BUILD_DIR, "gateway", "aziot-gatewayd")] + args, env=env,
            user=GATEWAY_USER)
        for name in names:
            path = os.path.join(sockets, f"{name}.sock")
            wait_until(lambda: os.path.exists(path), f"the gateway's {name} socket")
            os.chmod(path, 0o666)
        wait_until(lambda: all(f"Serving {n}.sock" in self.gateway.log() for n in names),
                   "the gateway to be serving")
        return {name: os.path.join(sockets, f"{name}.sock") for name in names}

    def config_env_of(self, name):
        config_dir = os.path.join(self.run_dir, "config", name)
        upper = name.upper()
        return {f"AZIOT_{upper}_CONFIG": os.path.join(config_dir, "config.toml"),
                f"AZIOT_{upper}_CONFIG_DIR": os.path.join(config_dir, "config.d")}


class PropertyTest(MaxRequestsTestCase):
    def test_property_is_the_configured_value(self):
        values = {"keyd": 0, "certd": 4294967295, "tpmd": 7, "identityd": None}
        for name, value in values.items():
            self.activatable(name, value)
        for name, value in values.items():
            with self.subTest(service=name):
                self.assertEqual(self.max_requests_property(name), 10 if value is None else value,
                                 self.service_log(name))

    def test_bad_value_is_refused(self):
        for name, (binary, bus_name, _, _) in SERVICES.items():
            for bad in ("-1", "4294967296", '"ten"'):
                with self.subTest(service=name, value=bad):
                    env = {**self.stack.child_env(), **self.config(name, bad)}
                    r = subprocess.run(
                        [os.path.join(BUILD_DIR, *binary)], env=env, capture_output=True,
                        text=True, timeout=TIMEOUT)
                    self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
                    self.assertIn('"max_requests" must be', r.stdout + r.stderr)
                    self.assertFalse(self.stack.name_has_owner(bus_name))


class GatewayTest(MaxRequestsTestCase):
    def test_enforced_from_an_unreadable_config(self):
        self.activatable("keyd", 2)
        # The premise: the gateway's user cannot read keyd's configuration.
        r = self.stack.run_as(GATEWAY_USER, ["cat", self.config_env_of("keyd")["AZIOT_KEYD_CONFIG"]])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Permission denied", r.stderr)

        sock = self.start_gateway(["keyd"])["keyd"]
        held = [Connection(sock) for _ in range(2)]
        for c in held:  # answered by keyd: the gateway has accepted them all
            c.send(request_bytes("GET", f"/key/absent?{V2021}"))
            self.assertLess(c.read_response().status, 500)
        wait_until(lambda: "max_requests on keyd.sock is 2 (org.aziot.Keys1)"
                   in self.gateway.log(), "the gateway to have keyd's max_requests")
        extra = Connection(sock)
        try:
            extra.send(request_bytes("GET", f"/key/absent?{V2021}"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertTrue(extra.is_closed(), "the connection over keyd's max_requests got an answer")
        wait_until(lambda: "Max simultaneous connections reached for user 0" in self.gateway.log(),
                   "the throttling log line")
        log = self.gateway.log()
        self.assertNotIn("Cannot ask", log)
        self.assertNotIn("Permission denied", log)
        for c in held + [extra]:
            c.close()

    def test_start_activates_no_service(self):
        for name in ("keyd", "certd"):
            self.activatable(name, 3)
        socks = self.start_gateway(["keyd", "certd"])
        time.sleep(1)  # what the gateway would do at start, it has done
        for name in ("keyd", "certd"):
            self.assertFalse(self.stack.name_has_owner(SERVICES[name][1]), name)
            self.assertIsNone(self.service_log(name), f"{name} was started")

        # The first connection to keyd.sock activates keyd (asked for MaxRequests), not certd.
        c = Connection(socks["keyd"])
        wait_until(lambda: "max_requests on keyd.sock is 3" in self.gateway.log(),
                   "the gateway to ask keyd")
        self.assertTrue(self.stack.name_has_owner("org.aziot.Keys1"))
        self.assertFalse(self.stack.name_has_owner("org.aziot.Certificates1"))
        c.close()

    def test_a_restarted_service_is_asked_again(self):
        # `aziotctl system restart` after a configuration change restarts the services, not the
        # gateway: the new limit must still reach it.
        self.activatable("keyd", 2)
        sock = self.start_gateway(["keyd"])["keyd"]
        c = Connection(sock)
        c.send(request_bytes("GET", f"/key/absent?{V2021}"))
        self.assertLess(c.read_response().status, 500)
        c.close()
        wait_until(lambda: "max_requests on keyd.sock is 2" in self.gateway.log(),
                   "the gateway to ask keyd")

        self.activatable("keyd", 3)
        pid = int(self.stack.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionUnixProcessID", "s", ("org.aziot.Keys1",), timeout=TIMEOUT))
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not self.stack.name_has_owner("org.aziot.Keys1"), "keyd to exit")

        c = Connection(sock)  # activates keyd again, which the gateway asks again
        c.send(request_bytes("GET", f"/key/absent?{V2021}"))
        self.assertLess(c.read_response().status, 500)
        c.close()
        wait_until(lambda: "max_requests on keyd.sock is 3" in self.gateway.log(),
                   "the gateway to ask the restarted keyd")
        held = [Connection(sock) for _ in range(3)]
        for c in held:
            c.send(request_bytes("GET", f"/key/absent?{V2021}"))
            self.assertLess(c.read_response().status, 500)
        extra = Connection(sock)
        try:
            extra.send(request_bytes("GET", f"/key/absent?{V2021}"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertTrue(extra.is_closed(), "the connection over keyd's new max_requests got an answer")
        for c in held + [extra]:
            c.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
