#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A device provisioned the way an administrator does it, on the installed tree.

The mock IoT Hub and DPS (tests/cloud) run in this process with a symmetric-key individual
enrollment; their server CAs are added to the machine's trust store as a device's administrator
would (appended to /etc/ssl/certs/ca-certificates.crt, OpenSSL's default CA file on Debian, which
identityd's HTTP client loads through SSL_CTX_set_default_verify_paths()). Then, as root, the
super-config /etc/aziot/config.toml is written and the INSTALLED `aziotctl config apply` turns it
into /etc/aziot/<svc>/config.d/00-super.toml and /var/secrets/aziot/keyd/device-id, owned by the
users the installed sysusers.d file made. The distribution's system bus (as in test_activation.py)
then starts identityd (as aziotid) and keyd (as aziotks) by D-Bus activation from the installed
files; identityd registers with the mock DPS, signing its SAS token with the device key held by
keyd, and must end "provisioned" with the hub and device id DPS assigned, which the gateway
(started from the installed socket units) serves on /run/aziot/identityd.sock. A wrong key ends
in "failed", a refused registration and no device backup.

Everything runs in a private mount namespace where the installed tree is the system
(tests/system/sysroot.py): nothing of the host's /usr, /etc, /var or /run changes."""

import base64
import hashlib
import hmac
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "cloud"))
import sysroot  # noqa: E402
from sysroot import BUS_NAMES, SERVICE_USERS, SERVICES, SysrootError  # noqa: E402
import mock_dps  # noqa: E402
import mock_hub  # noqa: E402
import test_activation  # noqa: E402  (the gateway as systemd starts it from the socket units)

import dbus  # noqa: E402

BUS_SOCKET = "/run/dbus/system_bus_socket"
CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
SUPER_CONFIG = "/etc/aziot/config.toml"
DEVICE_ID_SECRET = "/var/secrets/aziot/keyd/device-id"
ID_SCOPE = "0ne000E2E01"
EMPTY_OPTIONS = dbus.Dictionary({}, signature="sv")
PROVISION_TIMEOUT = 20.0


def super_config(dps_url, registration_id, key_b64):
    return (f'hostname = "e2e-device"\n\n'
            f'[provisioning]\nsource = "dps"\nglobal_endpoint = "{dps_url}/"\n'
            f'id_scope = "{ID_SCOPE}"\n\n'
            f'[provisioning.attestation]\nmethod = "symmetric_key"\n'
            f'registration_id = "{registration_id}"\n'
            f'symmetric_key = {{ value = "{key_b64}" }}\n')


class ProvisionTest(test_activation.InstalledBus, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="aziot-provision-")
        os.chmod(cls.tmp, 0o755)
        cls.p = sysroot.installed_paths()
        cls.root = None
        cls.bus_process = None
        cls.hub = cls.dps = None
        try:
            cls.dest = sysroot.install(os.path.join(cls.tmp, "dest"))
            cls.root = sysroot.InstalledRoot(cls.dest, os.path.join(cls.tmp, "scratch"))
            cls.root.enter()
            cls.root.apply_sysusers()
            cls.root.apply_tmpfiles()
            cls.start_cloud()
            cls.start_bus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.root:
            cls.root.close()
        if cls.bus_process:
            cls.bus_process.wait()
        for mock in (cls.dps, cls.hub):
            if mock:
                mock.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def start_cloud(cls):
        """The mocks, in this process on 127.0.0.1 (the namespace shares the network), and their
        server CAs made trusted machine-wide, in the namespace's copy of the CA file."""
        cloud = os.path.join(cls.tmp, "cloud")
        cls.hub = mock_hub.MockHub(os.path.join(cloud, "hub"))
        cls.dps = mock_dps.MockDps(os.path.join(cloud, "dps"), id_scope=ID_SCOPE, hub=cls.hub)
        cls.hub.start()
        cls.dps.start()
        cls.enrollment = cls.dps.add_symmetric_key("e2e-device", device_id="e2e-assigned-id")
        cls.refused = cls.dps.add_symmetric_key("e2e-refused")
        if not os.path.exists(CA_FILE):
            raise SysrootError(f"{CA_FILE} is missing: is ca-certificates installed?")
        with open(CA_FILE, "a") as out:
            for path in (cls.hub.server_ca_path, cls.dps.server_ca_path):
                with open(path) as f:
                    out.write("\n" + f.read())

    def provisioning_state(self):
        return str(self.call("identityd", "Get", "org.aziot.Identity1", "ProvisioningState",
                             interface="org.freedesktop.DBus.Properties"))

    def wait_state(self, *final):
        """Polls identityd (activating it) until its ProvisioningState is one of final."""
        end = time.monotonic() + PROVISION_TIMEOUT
        while True:
            state = self.provisioning_state()
            if state in final:
                return state
            if time.monotonic() > end:
                self.fail(f"identityd is still {state!r}\n--- bus log (identityd, keyd) ---\n"
                          f"{self.read_bus_log()}")
            time.sleep(0.05)

    def uid_of(self, pid):
        return sysroot.process_identity(pid)[0]

    def identityd_home(self):
        return os.path.join(self.p["localstatedir"], "lib", "aziot", "identityd")

    def fresh_device(self, config):
        """A device as an administrator sets it up: the services stopped, identityd with an
        empty home, no /var/secrets yet, /etc/aziot/config.toml written and `aziotctl config
        apply` run (as root, without AZIOTCTL_ROOT). Returns aziotctl's CompletedProcess."""
        for svc in ("identityd", "keyd"):
            self.stop_service(svc)
        self.log_start = len(self.read_bus_log())
        shutil.rmtree("/var/secrets", ignore_errors=True)
        home = self.identityd_home()
        for entry in os.listdir(home):
            path = os.path.join(home, entry)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        os.makedirs(os.path.dirname(SUPER_CONFIG), exist_ok=True)
        with open(SUPER_CONFIG, "w") as f:
            f.write(config)
        os.chmod(SUPER_CONFIG, 0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZIOTCTL")}
        result = subprocess.run([os.path.join(self.p["bindir"], "aziotctl"), "config", "apply"],
                                capture_output=True, text=True, env=env, timeout=30)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("Azure IoT Identity Service has been configured successfully!",
                      result.stdout)
        self.assertIn("systemd is not running on this machine", result.stdout)
        self.dps.clear_log()
        return result

    def new_log(self):
        """The bus log (the activated services' output) since fresh_device()."""
        return self.read_bus_log()[self.log_start:]

    def readable_by(self, user, path):
        return subprocess.run(["setpriv", "--reuid", user, "--regid", user, "--init-groups",
                               "cat", path], capture_output=True, timeout=30).returncode == 0

    def registrations(self, registration_id):
        return [r for r in self.dps.http_requests("register")
                if r.registration_id == registration_id]

    # --- the tests ----------------------------------------------------------------------------

    def test_provisioned_by_dps(self):
        key_b64 = self.enrollment.primary_key
        self.fresh_device(super_config(self.dps.url, "e2e-device", key_b64))

        # What `config apply` wrote, at the real paths, for the installed users.
        for svc in SERVICES:
            path = os.path.join("/etc/aziot", svc, "config.d", "00-super.toml")
            with self.subTest(path=path):
                st = os.stat(path)
                self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, SERVICE_USERS[svc])
                self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(DEVICE_ID_SECRET, "rb") as f:
            self.assertEqual(f.read(), base64.b64decode(key_b64))
        st = os.stat(DEVICE_ID_SECRET)
        self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, "aziotks")
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertTrue(self.readable_by("aziotks", DEVICE_ID_SECRET))
        self.assertFalse(self.readable_by("aziotid", DEVICE_ID_SECRET))

        self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned",
                         self.read_bus_log())
        identityd = self.owner_pid(BUS_NAMES["identityd"])
        self.assertEqual(self.uid_of(identityd), pwd.getpwnam("aziotid").pw_uid)
        # The mocks' CAs are trusted through the system's store, not through the environment.
        with open(f"/proc/{identityd}/environ", "rb") as f:
            names = {v.split(b"=", 1)[0] for v in f.read().split(b"\0") if v}
        self.assertEqual(names & {b"SSL_CERT_FILE", b"SSL_CERT_DIR", b"CURL_CA_BUNDLE"}, set())

        identity = self.call("identityd", "GetDeviceIdentity", EMPTY_OPTIONS)
        self.assertEqual(str(identity["type"]), "aziot")
        self.assertEqual(str(identity["hubName"]), self.hub.hostname)
        self.assertEqual(str(identity["deviceId"]), "e2e-assigned-id")
        self.assertEqual(str(identity["authType"]), "sas")
        self.assertEqual(self.dps.registration("e2e-device")["deviceId"], "e2e-assigned-id")
        self.assertIn("e2e-assigned-id", self.hub.registry.devices)

        # keyd was activated as aziotks and holds the key of /var/secrets/aziot/keyd/device-id.
        self.assertEqual(self.uid_of(self.owner_pid(BUS_NAMES["keyd"])),
                         pwd.getpwnam("aziotks").pw_uid)
        handle = self.call("keyd", "LoadKey", "device-id", EMPTY_OPTIONS)
        data = b"aziot-dbus system test"
        signature = bytes(self.call("keyd", "Sign", handle, "HMAC-SHA256",
                                    dbus.ByteArray(data), EMPTY_OPTIONS))
        self.assertEqual(signature, hmac.new(base64.b64decode(key_b64), data,
                                             hashlib.sha256).digest())

        # The mock DPS (strict about SAS tokens) accepted a registration signed with that key.
        registered = self.registrations("e2e-device")
        self.assertTrue(registered, "identityd never registered with DPS")
        self.assertEqual([(r.auth, r.status, r.principal) for r in registered],
                         [("sas", 202, "e2e-device")] * len(registered))
        self.assertTrue(os.path.exists(os.path.join(self.identityd_home(), "device_info")),
                        "no device backup")

        # The gateway, from the installed socket units, serves the device identity to root.
        process, paths = self.start_gateway()
        result = subprocess.run(
            ["curl", "-sS", "-w", "\n%{http_code}", "--unix-socket", paths["identityd"],
             "http://x/identities/identity?api-version=2020-09-01"],
            capture_output=True, text=True, timeout=30)
        body, _, code = result.stdout.rpartition("\n")
        self.assertEqual(code, "200", f"{result.stdout}{result.stderr}\n{self.gateway_log()}")
        answer = json.loads(body)
        self.assertEqual(answer["spec"]["deviceId"], "e2e-assigned-id", body)
        self.assertEqual(answer["spec"]["hubName"], self.hub.hostname, body)

    def test_secret_reachable_by_keyd(self):
        """`aziotctl config apply` on a device without /var/secrets: keyd's user can read the
        device-id file it writes for keyd (owned by aziotks, 0600, in keyd/ 0700 aziotks)."""
        self.fresh_device(super_config(self.dps.url, "e2e-device", self.enrollment.primary_key))
        self.assertTrue(self.readable_by("aziotks", DEVICE_ID_SECRET),
                        {p: oct(os.stat(p).st_mode) for p in ("/var/secrets", "/var/secrets/aziot",
                                                              "/var/secrets/aziot/keyd")})
        for path, mode, owner in (("/var/secrets", 0o755, "root"),
                                  ("/var/secrets/aziot", 0o755, "root"),
                                  ("/var/secrets/aziot/keyd", 0o700, "aziotks")):
            st = os.stat(path)
            self.assertEqual((stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name),
                             (mode, owner), path)

    def test_unusable_key_fails(self):
        """keyd cannot load the device key (its file is gone): identityd cannot sign its SAS
        token, says so, and ends "failed" too."""
        self.fresh_device(super_config(self.dps.url, "e2e-device", self.enrollment.primary_key))
        os.unlink(DEVICE_ID_SECRET)
        self.provisioning_state()  # activates identityd
        sysroot.wait_until(lambda: "Failed to provision the device" in self.new_log(),
                           "identityd to give up", timeout=PROVISION_TIMEOUT)
        self.assertFalse(self.registrations("e2e-device"), "an unsigned registration")
        self.assertEqual(self.provisioning_state(), "failed", self.new_log())

    def test_wrong_key_fails(self):
        wrong = base64.b64encode(b"not the enrollment's key, 32 b.").decode()
        self.fresh_device(super_config(self.dps.url, "e2e-refused", wrong))

        self.assertEqual(self.wait_state("provisioned", "failed"), "failed", self.read_bus_log())
        self.assertIn("Failed to provision the device: DPS client error\n"
                      "caused by: Unauthorized (HTTP 401)", self.new_log())

        refused = self.registrations("e2e-refused")
        self.assertTrue(refused, "identityd never registered with DPS")
        self.assertEqual({(r.auth, r.status, r.reason) for r in refused},
                         {("sas", 401, "signature mismatch")})
        self.assertIsNone(self.dps.registration("e2e-refused"))
        self.assertNotIn("device_info", os.listdir(self.identityd_home()), "a device backup")
        with self.assertRaisesRegex(AssertionError, "NotFound"):
            self.call("identityd", "GetDeviceIdentity", EMPTY_OPTIONS)


if __name__ == "__main__":
    unittest.main(verbosity=2)
