#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziotctl keys list, certs list|show, identity show, modules list — and aziotctl check's
service checks — against a real running stack (tests/lib/aziot_stack.py up(): keyd, certd and
identityd on a private system bus with our bus policy and the real polkitd, the gateway, the
mock DPS and IoT Hub; the device provisions through DPS with a symmetric key). Root sees
everything; an unprivileged user is refused by the bus policy, a user of the service's group that
no principal names is refused by polkit (keys) or identityd (identities), and aziotctl says
"access denied".

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_AZIOTCTL.
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cloud"))
import aziot_harness  # noqa: E402
import aziot_stack  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

AZIOTCTL = os.environ["AZIOT_AZIOTCTL"]
USER_A, USER_B = aziot_harness.TEST_USERS
CERTS = ("org.aziot.Certificates1", "/org/aziot/Certificates1", "org.aziot.Certificates1")
IDENTITY = ("org.aziot.Identity1", "/org/aziot/Identity1", "org.aziot.Identity1")


def make_cert_pem(cn, days):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    return cert, cert.public_bytes(serialization.Encoding.PEM).decode()


class QueryTest(aziot_harness.StackTestCase):
    RUN_DIR_PREFIX = "aziotctl-query-"

    @classmethod
    def start_class(cls):
        aziot_harness.ensure_test_users()
        for group in ("aziotks", "aziotcs", "aziotid"):
            aziot_harness.ensure_group(group)
        cls.write_weak_keys()
        cls.stack.start()
        (cls.keys, cls.certs, cls.identity, cls.dps, cls.hub,
         cls.token) = aziot_stack.up(cls.stack)
        cls.conn = cls.stack.bus()
        cls.cert, pem = make_cert_pem("aziotctl test", 30)
        cls.conn.call_blocking(*CERTS, "ImportCertificate", "ssa{sv}", ["ctl-test", pem, {}])
        cls.conn.call_blocking(*IDENTITY, "CreateModuleIdentity", "ssa{sv}",
                               ["aziot", "ctl-module", {}], timeout=60)
        # keyd's configuration (config.toml and config.d), readable by the test users (its own
        # directory is 0700)
        cls.keyd_config = os.path.join(cls.run_dir, "keyd-config.toml")
        shutil.copy(cls.keys.config_file, cls.keyd_config)
        os.chmod(cls.keyd_config, 0o644)
        cls.keyd_config_d = os.path.join(cls.run_dir, "keyd-config.d")
        shutil.copytree(cls.keys.config_d, cls.keyd_config_d)
        os.chmod(cls.keyd_config_d, 0o755)
        for name in os.listdir(cls.keyd_config_d):
            os.chmod(os.path.join(cls.keyd_config_d, name), 0o644)

    @classmethod
    def write_weak_keys(cls):
        """Preloaded key pairs that key-pairs-read warns about: RSA 1024, EC P-384."""
        secrets = os.path.join(cls.run_dir, "ctl-secrets")
        config_d = os.path.join(cls.run_dir, "config", "keyd", "config.d")
        os.makedirs(secrets)
        os.makedirs(config_d)
        lines = ["[preloaded_keys]"]
        for name, key in (("weak-rsa", rsa.generate_private_key(65537, 1024)),
                          ("p384", ec.generate_private_key(ec.SECP384R1())),
                          ("good-ec", ec.generate_private_key(ec.SECP256R1()))):
            path = os.path.join(secrets, f"{name}.pem")
            with open(path, "wb") as f:
                f.write(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            lines.append(f'{name} = "file://{path}"')
        with open(os.path.join(config_d, "50-ctl.toml"), "w") as f:
            f.write("\n".join(lines) + "\n")

    @classmethod
    def stop_class(cls):
        for mock in (getattr(cls, "dps", None), getattr(cls, "hub", None)):
            if mock:
                mock.stop()
        super().stop_class()

    def ctl(self, *args, env=None):
        e = self.stack.child_env({**self.keys.config_env(), **self.certs.config_env(),
                                  **self.identity.config_env(), **(env or {})})
        return subprocess.run([AZIOTCTL, *args], capture_output=True, text=True, env=e,
                              timeout=60)

    def ctl_as(self, user, *args, groups=None):
        return self.stack.run_as(user, [AZIOTCTL, *args], groups=groups,
                                 env={"AZIOT_KEYD_CONFIG": self.keyd_config,
                                      "AZIOT_KEYD_CONFIG_DIR": self.keyd_config_d})

    # -- keys --------------------------------------------------------------------------------

    def test_keys_list(self):
        r = self.ctl("keys", "list", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = {k["id"]: k for k in json.loads(r.stdout)}
        self.assertEqual(keys["device-id"]["type"], "key")
        self.assertEqual(keys["weak-rsa"]["type"], "key pair")
        self.assertEqual(keys["good-ec"]["status"], "available")
        self.assertEqual(keys["device-id"]["status"], "available")
        self.assertTrue(keys["device-id"]["location"].startswith("file://"))
        text = self.ctl("keys", "list")
        self.assertRegex(text.stdout, r"device-id +key +available +file://")
        self.assertNotIn("sr=", text.stdout + r.stdout)  # never a handle

    def test_keys_list_refused_by_polkit(self):
        r = self.ctl_as(USER_A, "keys", "list", "-o", "json", groups=["aziotks"])
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = {k["id"]: k for k in json.loads(r.stdout)}
        self.assertEqual(keys["device-id"]["status"], "access denied")

    # -- certs -------------------------------------------------------------------------------

    def test_certs_list(self):
        r = self.ctl("certs", "list", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        certs = {c["id"]: c for c in json.loads(r.stdout)}
        c = certs["ctl-test"]
        self.assertEqual(c["subject"], "CN=aziotctl test")
        self.assertEqual(c["issuer"], "CN=aziotctl test")
        self.assertEqual(c["fingerprint_sha256"],
                         self.cert.fingerprint(hashes.SHA256()).hex(":").upper())
        self.assertEqual(c["not_after"],
                         self.cert.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"))
        text = self.ctl("certs", "list")
        self.assertRegex(text.stdout, r"ctl-test +\S+Z +CN=aziotctl test")

    def test_certs_show(self):
        r = self.ctl("certs", "show", "ctl-test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Subject:      CN=aziotctl test", r.stdout)
        serial = re.search(r"^Serial: +([0-9A-F]+)$", r.stdout, re.M)
        self.assertIsNotNone(serial, r.stdout)
        self.assertEqual(int(serial.group(1), 16), self.cert.serial_number)
        pem = self.ctl("certs", "show", "ctl-test", "--pem")
        self.assertEqual(x509.load_pem_x509_certificate(pem.stdout.encode()), self.cert)
        j = json.loads(self.ctl("certs", "show", "ctl-test", "-o", "json", "--pem").stdout)
        self.assertEqual(j["id"], "ctl-test")
        self.assertIn("BEGIN CERTIFICATE", j["pem"])

    def test_certs_show_unknown(self):
        r = self.ctl("certs", "show", "no-such-cert")
        self.assertEqual(r.returncode, 1)
        self.assertIn("certificate no-such-cert", r.stderr)
        self.assertIn("NotFound", r.stderr)

    def test_certs_refused_by_bus_policy(self):
        r = self.ctl_as(USER_A, "certs", "list")
        self.assertEqual(r.returncode, 1)
        self.assertIn("access denied", r.stderr)

    def test_usage(self):
        self.assertEqual(self.ctl("certs", "show").returncode, 2)
        self.assertEqual(self.ctl("certs", "frobnicate").returncode, 2)
        self.assertEqual(self.ctl("keys", "list", "-o", "xml").returncode, 2)
        self.assertEqual(self.ctl("modules").returncode, 2)

    # -- identities --------------------------------------------------------------------------

    def test_identity_show(self):
        r = self.ctl("identity", "show", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        ident = json.loads(r.stdout)
        self.assertEqual(ident["provisioningState"], "provisioned")
        self.assertEqual(ident["deviceId"], "my-device")
        self.assertEqual(ident["authType"], "sas")
        self.assertEqual(ident["hubName"], self.hub.hostname)
        self.assertNotIn("keyHandle", ident)
        text = self.ctl("identity", "show")
        self.assertIn("Provisioning state: provisioned", text.stdout)
        self.assertIn("deviceId: my-device", text.stdout)

    def test_identity_refused(self):
        r = self.ctl_as(USER_A, "identity", "show", groups=["aziotid"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("access denied", r.stderr)
        r = self.ctl_as(USER_B, "identity", "show")
        self.assertEqual(r.returncode, 1)
        self.assertIn("access denied", r.stderr)

    def test_modules_list(self):
        r = self.ctl("modules", "list", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        modules = {m["moduleId"]: m for m in json.loads(r.stdout)}
        self.assertEqual(modules["ctl-module"]["deviceId"], "my-device")
        self.assertNotIn("keyHandle", modules["ctl-module"])
        text = self.ctl("modules", "list")
        self.assertRegex(text.stdout, r"ctl-module +aziot ")

    # -- check: the service checks -----------------------------------------------------------

    def check(self, *args):
        socket_dir = os.path.dirname(self.keys.keyd_socket)
        r = self.ctl("check", "-o", "json", "--dont-run", "host-local-time hostname", *args,
                     env={"AZIOT_SOCKET_DIR": socket_dir,
                          "SSL_CERT_FILE": os.path.join(self.run_dir, "cloud", "ca.pem")})
        return r.returncode, json.loads(r.stdout)["checks"]

    def test_check_services(self):
        rc, checks = self.check("--iothub-hostname", self.hub.hostname)
        for id_ in ("keyd-running", "certd-running", "identityd-running", "certs-read",
                    "host-connect-dps-endpoint", "host-connect-iothub-https",
                    "host-connect-iothub-mqtt", "host-connect-iothub-amqp"):
            self.assertEqual(checks[id_]["result"]["result"], "ok", (id_, checks[id_]))
        self.assertEqual(checks["tpmd-running"]["result"]["result"], "ignored")
        pairs = checks["key-pairs-read"]["result"]
        self.assertEqual(pairs["result"], "warning", pairs)
        details = "\n".join(pairs["details"])
        self.assertIn("key pair weak-rsa is an RSA key of 1024 bits", details)
        self.assertIn("key pair p384 is an EC key on another curve than P-256", details)
        self.assertNotIn("good-ec", details)
        self.assertNotIn("could not load", details)
        self.assertEqual(rc, 0)  # warnings only

    def test_check_service_gone(self):
        # the gateway's socket missing: a warning; no bus at all: an error
        rc, checks = self.check()
        self.assertEqual(checks["keyd-running"]["result"]["result"], "ok")
        r = self.ctl("check", "-o", "json", "--dont-run", "host-local-time hostname",
                     env={"AZIOT_SOCKET_DIR": os.path.join(self.run_dir, "nowhere")})
        checks = json.loads(r.stdout)["checks"]
        self.assertEqual(checks["keyd-running"]["result"]["result"], "warning")
        self.assertIn("nowhere/keyd.sock", "".join(checks["keyd-running"]["result"]["details"]))
        r = self.ctl("check", "-o", "json", "--dont-run", "host-local-time hostname",
                     env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.run_dir}/no-bus"})
        checks = json.loads(r.stdout)["checks"]
        self.assertEqual(r.returncode, 1)
        self.assertEqual(checks["certd-running"]["result"]["result"], "error")


if __name__ == "__main__":
    unittest.main(verbosity=2)
