#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-tpmd over D-Bus against a TPM simulator (swtpm, one per class, tests/lib/aziot_tpm.py), on
a private system bus with our restrictive policy (dbus/org.aziot.Tpm1.conf) and the real polkitd
with polkit/org.aziot.tpm.policy.

What tpmd says is checked independently: the EK and SRK against tpm2-tools (tpm2_readpublic of the
persistent handles, tpm2_createek for the TCG template), the imported authentication key by
building DPS's blob for this TPM's EK and SRK in the test (aziot_tpm.make_auth_key_blob) around a
key the test knows, so the HMAC can be computed here.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_TPMD.
"""

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
TPMD = os.environ.get("AZIOT_TPMD") or os.path.join(BUILD_DIR, "services", "tpm", "aziot-tpmd")
XML_PATH = os.path.join(SOURCE_DIR, "dbus", "org.aziot.Tpm1.xml")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aziot_harness  # noqa: E402
import aziot_tpm  # noqa: E402
from test_certs import describe_interface  # noqa: E402

import dbus  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

TPM_NAME, TPM_PATH, TPM_IFACE = "org.aziot.Tpm1", "/org/aziot/Tpm1", "org.aziot.Tpm1"
INVALID_PARAMETER = "org.aziot.Tpm1.Error.InvalidParameter"
NOT_FOUND = "org.aziot.Tpm1.Error.NotFound"
NOT_AUTHORIZED = "org.aziot.Tpm1.Error.NotAuthorized"
UNAVAILABLE = "org.aziot.Tpm1.Error.Unavailable"
FAILED = "org.aziot.Tpm1.Error.Failed"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"

TPM_GROUP = "aziottpm"
USER_A, USER_B = aziot_harness.TEST_USERS
PYTHON = "/usr/bin/python3"
CALL_TIMEOUT = 30
AUTH_KEY_HANDLE = 0x81000100

# One call as another user: argv[1] is JSON [method, signature, args]; bytes as lists of ints.
USER_CALL = r'''
import json, os, sys
import dbus
method, signature, args = json.loads(sys.argv[1])
args = [dbus.ByteArray(bytes(a)) if isinstance(a, list) else a for a in args]
conn = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
try:
    r = conn.call_blocking("org.aziot.Tpm1", "/org/aziot/Tpm1", "org.aziot.Tpm1", method,
                           signature, args, timeout=30, byte_arrays=True)
    if isinstance(r, (list, tuple)):
        r = [bytes(x).hex() for x in r]
    elif r is not None:
        r = bytes(r).hex()
    print(json.dumps({"ok": r}))
except dbus.DBusException as e:
    print(json.dumps({"error": e.get_dbus_name(), "message": e.get_dbus_message()}))
'''


CallError = aziot_harness.CallError


wait_until = aziot_harness.wait_until


class TpmdTestCase(aziot_harness.StackTestMixin, unittest.TestCase):
    """One stack and one swtpm per class; tpmd (re)started per test with the class's config."""

    @classmethod
    def setUpClass(cls):
        if not os.access(TPMD, os.X_OK):
            raise unittest.SkipTest(f"{TPMD} is not built")
        cls.users = aziot_harness.ensure_test_users()
        aziot_harness.ensure_group(TPM_GROUP)
        cls.uid_a = cls.users[USER_A].pw_uid
        cls.run_dir = tempfile.mkdtemp(prefix="aziot-tpm-")
        os.chmod(cls.run_dir, 0o755)
        cls.stack = aziot_harness.Stack(cls.run_dir, SOURCE_DIR, BUILD_DIR)
        cls.failed = False
        cls.swtpm = aziot_tpm.Swtpm(os.path.join(cls.run_dir, "swtpm"))
        try:
            cls.swtpm.start()
            cls.stack.start()
            cls.conn = cls.stack.bus()
        except BaseException:
            cls.swtpm.stop()
            cls.stack.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        cls.swtpm.stop()
        if cls.failed:
            print(f"\nstack logs kept in {cls.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.run_dir, ignore_errors=True)

    def setUp(self):
        self.rules = []
        self.config_dir = os.path.join(self.run_dir, "config.d")
        os.makedirs(self.config_dir, exist_ok=True)
        self.config = os.path.join(self.run_dir, "config.toml")
        self.write_config()
        self.tpmd = self.start_tpmd()

    def tearDown(self):
        self.remove_test_rules()
        if "tpmd" in self.stack.processes:
            status = self.stack.stop_process("tpmd")
            self.assertEqual(status, 0, "tpmd did not exit cleanly on SIGTERM")

    def write_config(self, extra="", tcti=None):
        with open(self.config, "w") as f:
            f.write(f'tcti = "{tcti if tcti is not None else self.swtpm.tcti}"\n{extra}')

    def start_tpmd(self, wait=True):
        return self.stack.start_process(
            "tpmd", [TPMD, "--idle-timeout=0"],
            env={"AZIOT_TPMD_CONFIG": self.config, "AZIOT_TPMD_CONFIG_DIR": self.config_dir,
                 "AZIOT_LOG": "debug"},
            wait_bus_name=TPM_NAME if wait else None)

    def restart_tpmd(self):
        self.stack.stop_process("tpmd")
        self.tpmd = self.start_tpmd()

    # -- calls ------------------------------------------------------------------------------------

    def call(self, method, signature, *args, timeout=CALL_TIMEOUT):
        try:
            return self.conn.call_blocking(TPM_NAME, TPM_PATH, TPM_IFACE, method, signature,
                                           list(args), timeout=timeout, byte_arrays=True)
        except dbus.DBusException as e:
            raise CallError(e.get_dbus_name(), e.get_dbus_message()) from None

    def keys(self):
        ek, srk = self.call("GetTpmKeys", "a{sv}", {})
        return bytes(ek), bytes(srk)

    def import_key(self, blob):
        return self.call("ImportAuthKey", "aya{sv}", dbus.ByteArray(blob), {})

    def sign(self, data, timeout=CALL_TIMEOUT):
        return bytes(self.call("SignWithAuthKey", "aya{sv}", dbus.ByteArray(data), {},
                               timeout=timeout))

    def call_as(self, user, method, signature, *args, groups=(TPM_GROUP,)):
        args = [list(a) if isinstance(a, (bytes, bytearray)) else a for a in args]
        r = self.stack.run_as(user, [PYTHON, "-c", USER_CALL,
                                     json.dumps([method, signature, args])],
                              groups=list(groups) if groups is not None else None)
        if r.returncode != 0:
            raise AssertionError(f"the client as {user} failed:\n{r.stdout}\n{r.stderr}")
        outcome = json.loads(r.stdout)
        if "error" in outcome:
            raise CallError(outcome["error"], outcome["message"])
        return outcome["ok"]

    def assertFails(self, name, fn, *args, **kwargs):
        with self.assertRaises(CallError, msg=f"{args!r} succeeded") as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.name, name, str(cm.exception))
        return cm.exception

    def tools(self, *args, check=True):
        return self.swtpm.tools(*args, check=check)

    def read_public(self, handle, swtpm=None):
        """What tpm2_readpublic reads at a persistent handle: a marshalled TPM2B_PUBLIC."""
        out = os.path.join(self.run_dir, f"{handle:08x}.pub")
        (swtpm or self.swtpm).tools("tpm2_readpublic", "-c", hex(handle), "-o", out)
        with open(out, "rb") as f:
            return f.read()

    def persistent_handles(self):
        out = self.tools("tpm2_getcap", "handles-persistent").stdout
        return {int(line.strip().lstrip("- "), 16) for line in out.splitlines() if "0x" in line}

    def blob_for(self, key):
        ek, srk = self.keys()
        return aziot_tpm.make_auth_key_blob(ek, srk, key)


class KeysTest(TpmdTestCase):
    def test_ek_and_srk_are_persisted_and_stable(self):
        ek, srk = self.keys()
        self.assertIn(aziot_tpm.EK_HANDLE, self.persistent_handles())
        self.assertIn(aziot_tpm.SRK_HANDLE, self.persistent_handles())
        # What tpm2_readpublic reads at the handles, as marshalled TPM2B_PUBLIC.
        self.assertEqual(ek, self.read_public(aziot_tpm.EK_HANDLE))
        self.assertEqual(srk, self.read_public(aziot_tpm.SRK_HANDLE))
        # A TPM2B_PUBLIC: 2-byte size, then the area; RSA-2048 with AES-128-CFB.
        self.assertEqual(int.from_bytes(ek[:2], "big"), len(ek) - 2)
        pub = aziot_tpm.parse_public(ek)
        self.assertEqual(pub.type, aziot_tpm.TPM2_ALG_RSA)
        self.assertEqual(len(pub.unique), 256)
        # The same after restarting tpmd, and the TPM.
        self.restart_tpmd()
        self.assertEqual(self.keys(), (ek, srk))
        self.swtpm.restart()
        self.restart_tpmd()
        self.assertEqual(self.keys(), (ek, srk))

    def test_ek_is_the_tcg_template(self):
        ek, _ = self.keys()
        # tpm2_createek makes the TCG default RSA EK again (transiently): the same key.
        out = os.path.join(self.run_dir, "ek-again.pub")
        self.tools("tpm2_createek", "-c", "-", "-G", "rsa", "-u", out)
        with open(out, "rb") as f:
            again = f.read()
        self.assertEqual(aziot_tpm.parse_public(again).unique, aziot_tpm.parse_public(ek).unique)

    def test_properties_and_introspection(self):
        props = self.conn.call_blocking(TPM_NAME, TPM_PATH, "org.freedesktop.DBus.Properties",
                                        "GetAll", "s", [TPM_IFACE], timeout=CALL_TIMEOUT)
        self.assertEqual(int(props["AuthKeyIndex"]), 0x100)
        self.assertEqual(str(props["Tcti"]), self.swtpm.tcti)
        with open(XML_PATH) as f:
            documented = describe_interface(f.read(), TPM_IFACE)
        text = self.conn.call_blocking(TPM_NAME, TPM_PATH, "org.freedesktop.DBus.Introspectable",
                                       "Introspect", "", [], timeout=CALL_TIMEOUT)
        self.assertEqual(describe_interface(str(text), TPM_IFACE), documented)


class AuthKeyTest(TpmdTestCase):
    def tearDown(self):
        if AUTH_KEY_HANDLE in self.persistent_handles():
            self.tools("tpm2_evictcontrol", "-C", "o", "-c", hex(AUTH_KEY_HANDLE))
        super().tearDown()

    def test_import_then_sign(self):
        key = os.urandom(32)
        self.import_key(self.blob_for(key))
        self.assertIn(AUTH_KEY_HANDLE, self.persistent_handles())
        for data in (b"", b"scope/registrations/device-1\n1700000000", os.urandom(1024),
                     os.urandom(1025), os.urandom(5000)):
            with self.subTest(size=len(data)):
                self.assertEqual(self.sign(data), hmac.new(key, data, hashlib.sha256).digest())
        # Persisted: a new tpmd signs with it.
        self.restart_tpmd()
        self.assertEqual(self.sign(b"x"), hmac.new(key, b"x", hashlib.sha256).digest())

    def test_import_replaces_the_previous_key(self):
        first, second = os.urandom(32), os.urandom(32)
        self.import_key(self.blob_for(first))
        self.import_key(self.blob_for(second))
        self.assertEqual(self.sign(b"m"), hmac.new(second, b"m", hashlib.sha256).digest())

    def test_sign_without_a_key(self):
        e = self.assertFails(NOT_FOUND, self.sign, b"m")
        self.assertIn("0x81000100", e.message)

    def test_malformed_blobs(self):
        key = os.urandom(32)
        self.import_key(self.blob_for(key))
        good = self.blob_for(os.urandom(32))
        for name, blob in [("empty", b""), ("truncated", good[:-10]),
                           ("trailing bytes", good + b"\0\0"), ("too short", good[:3]),
                           ("huge", good + os.urandom(9000))]:
            with self.subTest(name=name):
                e = self.assertFails(INVALID_PARAMETER, self.import_key, blob)
                self.assertIn("malformed authentication key", e.message)
        # The TPM refuses: a corrupted duplicate, a blob for another EK. The key in place stays.
        parts = aziot_tpm.split_auth_key_blob(good)
        dup = bytearray(parts.duplicate)
        dup[len(dup) // 2] ^= 0xff
        parts.duplicate = bytes(dup)
        corrupted = parts.to_bytes()
        e = self.assertFails(INVALID_PARAMETER, self.import_key, corrupted)
        self.assertIn("import", e.message)
        other_ek = aziot_tpm.marshal_public(aziot_tpm.ek_rsa_public(
            rsa.generate_private_key(65537, 2048).public_key().public_numbers().n.to_bytes(
                256, "big")))
        ek, srk = self.keys()
        e = self.assertFails(INVALID_PARAMETER, self.import_key,
                             aziot_tpm.make_auth_key_blob(other_ek, srk, os.urandom(32)))
        self.assertIn("activating the credential", e.message)
        self.assertEqual(self.sign(b"m"), hmac.new(key, b"m", hashlib.sha256).digest())
        self.assertTrue(self.tpmd.alive())

    def test_other_auth_key_index(self):
        self.stack.stop_process("tpmd")
        self.write_config("auth_key_index = 0x00_02_00\n")
        self.tpmd = self.start_tpmd()
        key = os.urandom(32)
        try:
            self.import_key(self.blob_for(key))
            self.assertIn(0x81000200, self.persistent_handles())
            self.assertNotIn(AUTH_KEY_HANDLE, self.persistent_handles())
            self.assertEqual(self.sign(b"m"), hmac.new(key, b"m", hashlib.sha256).digest())
        finally:
            if 0x81000200 in self.persistent_handles():
                self.tools("tpm2_evictcontrol", "-C", "o", "-c", "0x81000200")


class AccessTest(TpmdTestCase):
    def tearDown(self):
        if AUTH_KEY_HANDLE in self.persistent_handles():
            self.tools("tpm2_evictcontrol", "-C", "o", "-c", hex(AUTH_KEY_HANDLE))
        super().tearDown()

    def test_group_member_reads_and_signs_but_may_not_import(self):
        key = os.urandom(32)
        self.import_key(self.blob_for(key))
        ek, srk = self.keys()
        got = self.call_as(USER_A, "GetTpmKeys", "a{sv}", {})
        self.assertEqual(got, [ek.hex(), srk.hex()])
        self.assertEqual(self.call_as(USER_A, "SignWithAuthKey", "aya{sv}", b"m", {}),
                         hmac.new(key, b"m", hashlib.sha256).hexdigest())
        blob = self.blob_for(os.urandom(32))
        with self.assertRaises(CallError) as cm:
            self.call_as(USER_A, "ImportAuthKey", "aya{sv}", blob, {})
        self.assertEqual(cm.exception.name, NOT_AUTHORIZED)
        self.assertEqual(cm.exception.message,
                         f"user {self.uid_a} is not authorized to import the TPM authentication key")
        self.assertEqual(self.sign(b"m"), hmac.new(key, b"m", hashlib.sha256).digest())
        # A polkit rule for the user (as the packaged one grants the Identity service's user).
        self.add_rules(f'''polkit.addRule(function(action, subject) {{
            if (action.id == "org.aziot.tpm.import-auth-key" && subject.user == "{USER_A}")
                return polkit.Result.YES;
        }});''')
        new = os.urandom(32)
        self.call_as(USER_A, "ImportAuthKey", "aya{sv}", self.blob_for(new), {})
        self.assertEqual(self.sign(b"m"), hmac.new(new, b"m", hashlib.sha256).digest())

    def test_others_are_stopped_by_the_bus(self):
        for method, signature, args in [("GetTpmKeys", "a{sv}", [{}]),
                                        ("SignWithAuthKey", "aya{sv}", [b"m", {}])]:
            with self.subTest(method=method):
                with self.assertRaises(CallError) as cm:
                    self.call_as(USER_B, method, signature, *args, groups=None)
                self.assertEqual(cm.exception.name, ACCESS_DENIED)

    def test_shipped_rule_names_the_identity_service(self):
        with open(os.path.join(SOURCE_DIR, "polkit", "org.aziot.tpm.rules")) as f:
            rules = f.read()
        self.assertIn('"org.aziot.tpm.import-auth-key"', rules)
        self.assertIn('subject.user == "aziotid"', rules)


class RobustnessTest(TpmdTestCase):
    def test_loop_answers_while_the_tpm_hangs(self):
        keys = self.keys()  # cached from now on
        outcome = {}

        def slow_call():
            try:
                outcome["r"] = self.sign(b"m", timeout=60)
            except CallError as e:
                outcome["error"] = e.name

        self.swtpm.pause()
        try:
            t = threading.Thread(target=slow_call)
            t.start()
            time.sleep(0.5)
            self.assertTrue(t.is_alive(), "the TPM call did not wait for the TPM")
            conn = dbus.bus.BusConnection(self.stack.bus_address)  # not the one that waits
            start = time.monotonic()
            ek, srk = conn.call_blocking(TPM_NAME, TPM_PATH, TPM_IFACE, "GetTpmKeys", "a{sv}",
                                         [{}], timeout=5, byte_arrays=True)
            conn.call_blocking(TPM_NAME, TPM_PATH, "org.freedesktop.DBus.Properties", "Get",
                               "ss", [TPM_IFACE, "AuthKeyIndex"], timeout=5)
            self.assertLess(time.monotonic() - start, 2)
            self.assertEqual((bytes(ek), bytes(srk)), keys)
        finally:
            self.swtpm.resume()
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertEqual(outcome.get("error"), NOT_FOUND)  # answered once the TPM came back

    def test_missing_tpm(self):
        self.stack.stop_process("tpmd")
        missing = os.path.join(self.run_dir, "no-tpm", "swtpm.sock")
        self.write_config(tcti=f"swtpm:path={missing}")
        self.tpmd = self.start_tpmd()
        for _ in range(2):
            e = self.assertFails(UNAVAILABLE, self.keys)
            self.assertIn(f"swtpm:path={missing}", e.message)
            e = self.assertFails(UNAVAILABLE, self.sign, b"m")
        self.assertTrue(self.tpmd.alive())
        # The TPM appears: the next call opens it.
        late = aziot_tpm.Swtpm(os.path.join(self.run_dir, "no-tpm"))
        late.start()
        try:
            self.assertEqual(late.tcti, f"swtpm:path={missing}")
            ek, srk = self.keys()
            self.assertEqual(ek, self.read_public(aziot_tpm.EK_HANDLE, late))
        finally:
            self.stack.stop_process("tpmd")
            late.stop()
            self.tpmd = self.start_tpmd()

    def test_hierarchy_passwords(self):
        self.keys()  # EK and SRK exist before the passwords change
        self.tools("tpm2_changeauth", "-c", "e", "endorsement-pass")
        self.tools("tpm2_changeauth", "-c", "o", "owner-pass")
        try:
            self.stack.stop_process("tpmd")
            self.write_config('[hierarchy_authorization]\nendorsement = "wrong"\n'
                              'owner = "owner-pass"\n')
            self.tpmd = self.start_tpmd()
            self.keys()  # reading needs no password
            blob = self.blob_for(os.urandom(32))
            e = self.assertFails(FAILED, self.import_key, blob)
            self.assertIn("endorsement", e.message)
            self.assertNotIn("wrong", e.message)
            self.assertNotIn("owner-pass", self.tpmd.log())
            self.assertTrue(self.tpmd.alive())
            self.stack.stop_process("tpmd")
            self.write_config('[hierarchy_authorization]\nendorsement = "endorsement-pass"\n'
                              'owner = "owner-pass"\n')
            self.tpmd = self.start_tpmd()
            key = os.urandom(32)
            self.import_key(blob if False else self.blob_for(key))
            self.assertEqual(self.sign(b"m"), hmac.new(key, b"m", hashlib.sha256).digest())
            self.tools("tpm2_evictcontrol", "-C", "o", "-P", "owner-pass", "-c",
                       hex(AUTH_KEY_HANDLE))
        finally:
            self.tools("tpm2_changeauth", "-c", "e", "-p", "endorsement-pass", check=False)
            self.tools("tpm2_changeauth", "-c", "o", "-p", "owner-pass", check=False)

    def test_configuration_errors(self):
        self.stack.stop_process("tpmd")
        for extra, words in [('auth_key_index = "0x00_01_00"\n', "without quotes"),
                             ("auth_key_index = 0x800000\n", "from 0 to 0x7fffff"),
                             ("auth_key_index = -1\n", "from 0 to 0x7fffff"),
                             ("tcti = 3\n", "tcti"),
                             ('[hierarchy_authorization]\nowner = "' + "x" * 65 + '"\n',
                              "longer than 64")]:
            with self.subTest(words=words):
                with open(self.config, "w") as f:
                    f.write(extra if extra.startswith("tcti") else
                            f'tcti = "{self.swtpm.tcti}"\n{extra}')
                r = subprocess.run([TPMD, "--idle-timeout=0"],
                                   env=self.stack.child_env({
                                       "AZIOT_TPMD_CONFIG": self.config,
                                       "AZIOT_TPMD_CONFIG_DIR": self.config_dir}),
                                   capture_output=True, text=True, timeout=30)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(words, r.stderr)
        self.write_config()
        self.tpmd = self.start_tpmd()


if __name__ == "__main__":
    unittest.main(verbosity=2)
