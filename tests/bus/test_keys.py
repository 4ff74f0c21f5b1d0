#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-keyd over D-Bus: the real daemon on a private system bus with our restrictive policy
(dbus/org.aziot.Keys1.conf) and the real polkitd with polkit/org.aziot.keys.policy.

Every result is checked against an independent computation in this process (Python's hmac,
python-cryptography, the upstream file and handle formats of spec §2.5-§2.8), never against keyd
itself. Clients other than root run as the harness users in their own processes (a small helper
speaking JSON lines on stdin/stdout), so the bus and keyd see their real uids and groups.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_KEYD, and
AZIOT_KEYS_BACKEND, the key store under test:

  file (default)  keyd's filesystem backend alone ([aziot_keys] homedir_path).
  softhsm2        a SoftHSM2 token as pkcs11_base_slot (tests/lib/aziot_tokens.py), one fresh
                  token per keyd home. Everything keyd creates goes to the token: key pairs,
                  generated and imported symmetric keys (HMAC: CKK_GENERIC_SECRET, encrypt: AES),
                  the handle-validation-key. The filesystem stays the second location, so a home
                  written by upstream's rules must still load (CompatibilityTest).
  tpm2            a tpm2-pkcs11 token on swtpm (through tpm2-abrmd), one per test class, emptied
                  before every keyd home. Runs the key-pair subset only (TPM2_SUBSET below):
                  tpm2-pkcs11 has no C_GenerateKey (no CKM_GENERIC_SECRET_KEY_GEN, no
                  CKM_AES_KEY_GEN through PKCS#11), no CKM_AES_GCM, and its C_CreateObject makes
                  RSA public keys and data objects only, so every symmetric key keyd makes or
                  imports falls back to the filesystem; the symmetric tests would only test the
                  filesystem again. The subset is KeyPairTest, the tests of BadInputTest and
                  AuthorizationTest that create, move, load or use key pairs (their symmetric
                  keys land in files, which the helpers check too), and
                  test_each_key_is_stored_where_the_backend_puts_it, which checks that fallback.
                  RSA-4096 does not exist on swtpm: there it must fall through to the next
                  preferred algorithm.

The same tests run on every backend; what differs is checked through a few helpers (KeyStoreChecks
of tests/lib/aziot_keys_backend.py, shared with the gateway suite: assertStored, assertNotStored,
assertStoredIds, listing, fingerprint, expected_hmac, secret_length, stored_public_key; and
KeydTestCase.assertAeadRoundTrip): a key in a file is checked byte for byte, mode 0600 in a 0700
directory; a key on a token must be there once, CKA_SENSITIVE, not CKA_EXTRACTABLE (generated ones
also CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE and CKA_LOCAL), with no file in the home, and is
checked by behaviour: HMAC against the token's own CKM_SHA256_HMAC (computed in another process,
not by keyd), AEAD by round trip, key pairs against the public key read from the token with
pkcs11-tool. Imported keys are checked against the bytes the test chose. Differences that are
upstream's (PKCS#11 keys have one usage, sign/derive or encrypt, and refuse a mask of both with
InvalidParameter; v1 AEAD ciphertexts are for filesystem keys only; AES keys on a token may be
AES-128) are asserted as such, where they occur.
"""

import base64
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import unittest
import xml.etree.ElementTree as ET

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
KEYD = os.environ.get("AZIOT_KEYD") or os.path.join(BUILD_DIR, "services", "keys", "aziot-keyd")
XML_PATH = os.path.join(SOURCE_DIR, "dbus", "org.aziot.Keys1.xml")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import aziot_harness  # noqa: E402

import dbus  # noqa: E402
import dbus.lowlevel  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

INVALID_PARAMETER = "org.aziot.Keys1.Error.InvalidParameter"
NOT_FOUND = "org.aziot.Keys1.Error.NotFound"
NOT_AUTHORIZED = "org.aziot.Keys1.Error.NotAuthorized"
FAILED = "org.aziot.Keys1.Error.Failed"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"

# Messages of the handlers (services/keys/keys-dbus.c, keys-handle.c), in upstream's wording, and
# the independent computations: tests/lib/aziot_keys_oracle.py, shared with the gateway suite.
from aziot_keys_oracle import (  # noqa: E402
    BAD_MECHANISM, BAD_VALUE, INTERNAL, INVALID_HANDLE, NESTED, NOT_A_KEY, NOT_A_KEY_PAIR,
    NOT_DERIVED, b64, bad_param, emsa_pss_encode_sha256, handle_parts, hmac256, key_file_name,
    make_handle, tree_listing, with_sig)

# The key store under test, where it puts what, and the checks of stored keys:
# tests/lib/aziot_keys_backend.py, shared with the gateway suite.
from aziot_keys_backend import (  # noqa: E402
    GENERATED, IMPORTED, PAIR, KeyStoreChecks, backend_from_env, wipe_token)
import aziot_keys_backend  # noqa: E402

BACKEND = backend_from_env()
ON_TOKEN = BACKEND.on_token
SECRETS_ON_TOKEN = BACKEND.secrets_on_token
location_of = BACKEND.location_of

RESERVED = bad_param("handle", "the key handle-validation-key is reserved")
# CreateKeyPairIfNotExists with ["rsa-4096"] alone on swtpm, which cannot make one: upstream's
# invalid_parameter("preferred_algorithms", "no algorithm succeeded").
RSA4096_ALONE_ON_TPM2 = (INVALID_PARAMETER, BAD_VALUE)
BAD_SOCKET = bad_param("client-socket", "not a connected Unix socket")

HVK = "handle-validation-key"
KEYS_GROUP = "aziotks"
USER_A, USER_B = aziot_harness.TEST_USERS
PYTHON = "/usr/bin/python3"
CALL_TIMEOUT = 20
OPTS = {}  # no options
RELOAD_TIMEOUT = 10

KEY_FILE_RE = re.compile(r"^[A-Za-z0-9]*-[0-9a-f]{64}\.key$")
ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
P256_OID_DER = bytes.fromhex("06082a8648ce3d030107")  # 1.2.840.10045.3.1.7, DER
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

# ---------------------------------------------------------------------------------------------
# The client: the same code calls keyd in this process (as root) and in the helper processes
# that run as the test users. Arguments and results cross the helper's pipe as JSON, bytes and
# file descriptors tagged.

CLIENT_LIB = r'''
import base64, json, os
import dbus

KEYS_NAME, KEYS_PATH, KEYS_IFACE = "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1"
IN_SIGNATURES = {
    "CreateKeyIfNotExists": "sasa{sv}", "ImportKey": "sayasa{sv}", "LoadKey": "sa{sv}",
    "DeleteKey": "sa{sv}", "CreateKeyPairIfNotExists": "sasa{sv}", "LoadKeyPair": "sa{sv}",
    "MoveKeyPair": "ssa{sv}", "DeleteKeyPair": "sa{sv}", "GetKeyPairPublicParameter": "ssa{sv}",
    "CreateDerivedKey": "saya{sv}", "ExportDerivedKey": "sa{sv}", "Sign": "ssaya{sv}",
    "Encrypt": "ssaya{sv}", "Decrypt": "ssaya{sv}", "OpenPrivateConnection": "a{sv}",
    "org.freedesktop.DBus.Introspectable.Introspect": "", "org.freedesktop.DBus.Peer.Ping": "",
    "org.freedesktop.DBus.Properties.GetAll": "s",
}


class Fd:
    """A file descriptor number, passed as a D-Bus unix fd (h)."""
    def __init__(self, n):
        self.n = n


def to_dbus(v):
    if isinstance(v, (bytes, bytearray)):
        return dbus.ByteArray(bytes(v))
    if isinstance(v, Fd):
        return dbus.types.UnixFd(v.n)
    if isinstance(v, dict):
        return dbus.Dictionary({k: to_dbus(x) for k, x in v.items()}, signature="sv")
    if isinstance(v, list):
        return [to_dbus(x) for x in v]
    return v


def from_dbus(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [from_dbus(x) for x in v]
    if isinstance(v, dict):
        return {str(k): from_dbus(x) for k, x in v.items()}
    return v


def encode(v):
    if isinstance(v, (bytes, bytearray)):
        return {"$b": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, Fd):
        return {"$fd": v.n}
    if isinstance(v, dict):
        return {"$d": {k: encode(x) for k, x in v.items()}}
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    return v


def decode(v):
    if isinstance(v, dict) and "$b" in v:
        return base64.b64decode(v["$b"])
    if isinstance(v, dict) and "$fd" in v:
        return Fd(v["$fd"])
    if isinstance(v, dict) and "$d" in v:
        return {k: decode(x) for k, x in v["$d"].items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def call(conn, method, args, signature=None, timeout=20):
    """{"ok": result} or {"error": name, "message": text}."""
    iface, member = (method.rsplit(".", 1) if "." in method else (KEYS_IFACE, method))
    if signature is None:
        signature = IN_SIGNATURES.get(method)
    try:
        result = conn.call_blocking(KEYS_NAME, KEYS_PATH, iface, member, signature,
                                    [to_dbus(a) for a in args], timeout=timeout,
                                    byte_arrays=True)
        return {"ok": from_dbus(result)}
    except dbus.DBusException as e:
        return {"error": e.get_dbus_name(), "message": e.get_dbus_message()}
'''

HELPER = CLIENT_LIB + r'''
import sys
conn = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
print(json.dumps({"ready": str(conn.get_unique_name())}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    outcome = call(conn, request["method"], decode(request["args"]), request.get("signature"),
                   request["timeout"])
    if "ok" in outcome:
        outcome["ok"] = encode(outcome["ok"])
    print(json.dumps(outcome), flush=True)
'''

# The same code, as a module of this process.
keys_client = types.ModuleType("keys_client")
exec(CLIENT_LIB, keys_client.__dict__)
Fd = keys_client.Fd
KEYS_NAME, KEYS_PATH, KEYS_IFACE = keys_client.KEYS_NAME, keys_client.KEYS_PATH, \
    keys_client.KEYS_IFACE



CallError = aziot_harness.CallError


def unwrap(outcome):
    if "error" in outcome:
        raise CallError(outcome["error"], outcome["message"])
    return outcome["ok"]


class RootClient:
    """Calls keyd as root from this process."""

    def __init__(self, conn):
        self.conn = conn

    def call(self, method, *args, signature=None, timeout=CALL_TIMEOUT):
        return unwrap(keys_client.call(self.conn, method, list(args), signature, timeout))


class UserClient:
    """Calls keyd from a helper process running as another user (with the given groups and
    inherited file descriptors)."""

    def __init__(self, stack, user, groups, pass_fds, log_path):
        self.user = user
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = stack.popen_as(user, [PYTHON, "-c", HELPER], groups=groups,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log, text=True, pass_fds=tuple(pass_fds))
        self.unique_name = self._read(10)["ready"]

    def call(self, method, *args, signature=None, timeout=CALL_TIMEOUT):
        request = {"method": method, "args": keys_client.encode(list(args)),
                   "signature": signature, "timeout": timeout}
        self.popen.stdin.write(json.dumps(request) + "\n")
        self.popen.stdin.flush()
        outcome = self._read(timeout + 5)
        if "ok" in outcome:
            outcome["ok"] = keys_client.decode(outcome["ok"])
        return unwrap(outcome)

    def _read(self, timeout):
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        line = self.popen.stdout.readline() if ready else None
        if not line:
            raise AssertionError(f"the client running as {self.user} did not answer:\n"
                                 f"{aziot_harness._read_text(self.log_path)}")
        return json.loads(line)

    def close(self):
        self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.popen.stdout.close()


# ---------------------------------------------------------------------------------------------
# Independent computations


def compressed_point(public_key):
    return public_key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.CompressedPoint)


def import_sign_and_encrypt(client, key_id, key):
    """See KeydTestCase.import_sign_and_encrypt."""
    return aziot_keys_backend.import_sign_and_encrypt(
        BACKEND, lambda *args: client.call("ImportKey", *args, OPTS), key_id, key)


wait_until = aziot_harness.wait_until


def outcome_of(fn):
    """(error name, message) of a call, or None when it succeeded."""
    try:
        fn()
        return None
    except CallError as e:
        return (e.name, e.message)


# ---------------------------------------------------------------------------------------------
# The fixture


class KeydState:
    """A keyd configuration and home, below dir."""

    def __init__(self, directory, token=None):
        self.dir = directory
        self.home = os.path.join(directory, "home")
        self.keys_dir = os.path.join(self.home, "keys")
        self.config = os.path.join(directory, "config.toml")
        self.config_dir = os.path.join(directory, "config.d")
        self.token = token  # the base slot's token (aziot_tokens), or None: the filesystem alone
        os.makedirs(self.config_dir)
        self.write_config()

    def write_config(self, extra=""):
        pkcs11 = ""
        if self.token is not None:
            pkcs11 = (f'pkcs11_lib_path = "{self.token.module}"\n'
                      f'pkcs11_base_slot = "{self.token.uri()}"\n')
        with open(self.config, "w") as f:
            f.write(f'[aziot_keys]\nhomedir_path = "{self.home}"\n{pkcs11}{extra}')

    def env(self):
        env = {"AZIOT_KEYD_CONFIG": self.config, "AZIOT_KEYD_CONFIG_DIR": self.config_dir,
               "AZIOT_LOG": "debug"}
        if self.token is not None:
            env.update(self.token.env)  # what the PKCS#11 module needs (SOFTHSM2_CONF, TCTI, ...)
        return env

    def key_path(self, key_id):
        return aziot_keys_backend.key_path(self.keys_dir, key_id)

    def read_key(self, key_id):
        return aziot_keys_backend.read_key_file(self.keys_dir, key_id)

    def write_principals(self, name, entries):
        """config.d/NAME.toml with [[principal]] entries [(uid, [globs])], renamed in whole."""
        text = "".join(f"[[principal]]\nuid = {uid}\nkeys = {json.dumps(globs)}\n\n"
                       for uid, globs in entries)
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.config_dir, f"{name}.toml"))

    def remove_principals(self, name):
        os.unlink(os.path.join(self.config_dir, f"{name}.toml"))


class KeydTestCase(aziot_harness.StackTestMixin, KeyStoreChecks, unittest.TestCase):
    """One stack (bus, polkitd) per class. keyd_scope "test": a fresh keyd with a fresh home for
    every test; "class": one keyd for the whole class; None: the test starts what it needs.
    Where keys are stored, on every backend: KeyStoreChecks (aziot_keys_backend), on the test's
    home and token."""

    keyd_scope = "test"
    keyd_env = {}
    key_store_backend = BACKEND
    key_store_dir = property(lambda self: self.state.keys_dir)
    key_store_token = property(lambda self: self.state.token)

    @classmethod
    def setUpClass(cls):
        if not os.access(KEYD, os.X_OK):
            raise unittest.SkipTest(f"{KEYD} is not built")
        cls.users = aziot_harness.ensure_test_users()
        aziot_harness.ensure_group(KEYS_GROUP)
        cls.uid_a = cls.users[USER_A].pw_uid
        cls.uid_b = cls.users[USER_B].pw_uid
        cls.run_dir = tempfile.mkdtemp(prefix="aziot-keys-")
        cls.stack = aziot_harness.Stack(cls.run_dir, SOURCE_DIR, BUILD_DIR)
        cls.failed = False
        cls.serial = 0
        cls.class_keyd = None
        cls.class_token = None
        try:
            if BACKEND.name == "tpm2":
                # ~1 s to set up (swtpm, tpm2-abrmd, store, token): one per class, emptied before
                # every keyd home (new_state).
                cls.class_token = BACKEND.make_token(os.path.join(cls.run_dir, "tpm2"))
            cls.stack.start()
            cls.root = RootClient(cls.stack.bus())
            cls.prepare_class()
            if cls.keyd_scope == "class":
                cls.class_state = cls.new_state()
                cls.class_keyd = cls.start_keyd(cls.class_state)
                cls.prepare_class_keys()
        except BaseException:
            cls.stack.stop()
            if cls.class_token is not None:
                cls.class_token.close()
            print(f"stack logs kept in {cls.run_dir}", file=sys.stderr)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        if cls.class_token is not None:
            cls.class_token.close()
        if cls.failed:
            print(f"\nstack logs kept in {cls.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.run_dir, ignore_errors=True)

    @classmethod
    def prepare_class(cls):
        """Class-wide preparation before any keyd starts."""

    @classmethod
    def prepare_class_keys(cls):
        """With keyd_scope "class": creates the keys the tests share."""

    @classmethod
    def new_state(cls):
        cls.serial += 1
        directory = os.path.join(cls.run_dir, f"t{cls.serial}")
        os.makedirs(directory)
        token = None
        if BACKEND.name == "softhsm2":
            token = BACKEND.make_token(os.path.join(directory, "token"))  # ~0.03 s: one per home
        elif BACKEND.name == "tpm2":
            token = cls.class_token
            wipe_token(token)  # what the class's previous homes left there
        return KeydState(directory, token)

    @classmethod
    def start_keyd(cls, state, idle_timeout=0):
        return cls.stack.start_process("keyd", [KEYD, f"--idle-timeout={idle_timeout}"],
                                       env={**state.env(), **cls.keyd_env},
                                       wait_bus_name=KEYS_NAME)

    def setUp(self):
        self.clients = []
        self.peers = []
        self.rules = []
        self.keyd_killed = False
        if self.keyd_scope == "class":
            self.state = self.class_state
            self.keyd = self.class_keyd
        else:
            self.state = self.new_state()
            self.prepare_state(self.state)
            self.keyd = self.start_keyd(self.state) if self.keyd_scope == "test" else None

    def tearDown(self):
        for client in self.clients:
            client.close()
        for peer, conn in self.peers:
            conn.close()
            peer.wait(10)
        self.remove_test_rules()
        if self.keyd_scope == "class":
            if not self.keyd.alive():
                # This test killed the class's keyd: it fails, and the tests after it get a new
                # keyd on the same home rather than failing for the same reason.
                status = self.keyd.popen.poll()
                type(self).class_keyd = self.start_keyd(self.class_state)
                self.fail(f"keyd died (exit status {status}); log in {self.keyd.log_path}")
            self.assertKeydAlive()
        elif "keyd" in self.stack.processes:
            status = self.stack.stop_process("keyd")
            if not self.keyd_killed:
                self.assertEqual(status, 0, "keyd did not exit cleanly on SIGTERM")

    def prepare_state(self, state):
        """Per-test preparation of the home and configuration before keyd starts."""

    # -- helpers ------------------------------------------------------------------------------

    def call(self, method, *args, **kwargs):
        return self.root.call(method, *args, **kwargs)

    def client_as(self, user, groups=(KEYS_GROUP,), pass_fds=()):
        client = UserClient(self.stack, user, list(groups) if groups is not None else None,
                            pass_fds, os.path.join(self.state.dir,
                                                   f"client-{len(self.clients)}.log"))
        self.clients.append(client)
        return client

    def assertFails(self, name, message, client, method, *args, **kwargs):
        with self.assertRaises(CallError, msg=f"{method}{args!r} succeeded") as cm:
            client.call(method, *args, **kwargs)
        self.assertEqual(cm.exception.name, name, f"{method}: {cm.exception}")
        if message is not None:
            self.assertEqual(cm.exception.message, message, method)

    def assertKeydAlive(self):
        self.assertTrue(self.keyd.alive(), "keyd died")
        owner = self.stack.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionUnixProcessID", "s", (KEYS_NAME,))
        self.assertEqual(owner, self.keyd.pid, "org.aziot.Keys1 is owned by another process")
        self.assertIsInstance(self.call("CreateKeyIfNotExists", "alive-check", ["sign"], {}), str)

    def peer_as(self, user):
        """A process running as user, connected to a socket we accept: (popen, our end)."""
        peer, conn = self.stack.connected_peer_as(user)
        self.peers.append((peer, conn))
        return peer, conn

    def wait_for_outcome(self, fn, expected, what):
        """Polls fn until its outcome (None = success, or (error name, message)) is expected:
        principals are reloaded a moment after their file changes."""
        last = []

        def reached():
            last[:] = [outcome_of(fn)]
            return last[0] == expected
        try:
            wait_until(reached, RELOAD_TIMEOUT, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; last outcome {last[0]!r}") from None

    def public_parameter(self, handle, name, client=None):
        return (client or self.root).call("GetKeyPairPublicParameter", handle, name, {})

    def ec_public_key(self, handle, client=None):
        """The public key rebuilt from ec-curve-oid and ec-point only."""
        self.assertEqual(self.public_parameter(handle, "algorithm", client), "ECDSA")
        self.assertEqual(self.public_parameter(handle, "ec-curve-oid", client), P256_OID_DER)
        point = self.public_parameter(handle, "ec-point", client)
        self.assertEqual(len(point), 33)
        self.assertIn(point[0], (2, 3))  # compressed
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)

    def rsa_public_key(self, handle):
        self.assertEqual(self.public_parameter(handle, "algorithm"), "RSA")
        n = int.from_bytes(self.public_parameter(handle, "rsa-modulus"), "big")
        e = int.from_bytes(self.public_parameter(handle, "rsa-exponent"), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()

    def assertEcdsaVerifies(self, public_key, handle, client=None):
        for data in (b"", b"message", os.urandom(5000)):
            digest = hashlib.sha256(data).digest()
            sig = (client or self.root).call("Sign", handle, "ECDSA", digest, {})
            utils.decode_dss_signature(sig)  # DER ECDSA-Sig-Value, not raw r||s
            public_key.verify(sig, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            with self.assertRaises(InvalidSignature):
                public_key.verify(sig, hashlib.sha256(data + b"x").digest(),
                                  ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def assertRsaSignsPkcs1(self, public_key, handle):
        modulus_len = (public_key.key_size + 7) // 8
        for data in (b"", b"message", os.urandom(3000)):
            digest_info = SHA256_DIGEST_INFO + hashlib.sha256(data).digest()
            sig = self.call("Encrypt", handle, "RSA-PKCS1", digest_info, {})
            self.assertEqual(len(sig), modulus_len)
            public_key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())

    def assertRsaSignsPss(self, public_key, handle):
        numbers = public_key.public_numbers()
        for data in (b"message", os.urandom(3000)):
            block = emsa_pss_encode_sha256(data, public_key.key_size)
            sig = self.call("Encrypt", handle, "RSA-NO-PADDING", block, {})
            self.assertEqual(len(sig), len(block))
            self.assertEqual(pow(int.from_bytes(sig, "big"), numbers.e, numbers.n),
                             int.from_bytes(block, "big"))
            public_key.verify(sig, data, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                              hashes.SHA256())

    def assertAeadRoundTrip(self, handle):
        """For a key whose bytes nobody knows (generated on a token): ciphertexts are 0x02 ||
        ct || 16-byte tag, decrypt back, depend on the iv and fail to authenticate when
        tampered with."""
        for iv, aad, plaintext in ((os.urandom(12), b"aad", b"secret"),
                                   (os.urandom(12), b"", os.urandom(1000))):
            opts = {"iv": iv, "aad": aad}
            ct = self.call("Encrypt", handle, "AEAD", plaintext, opts)
            self.assertEqual(len(ct), 1 + len(plaintext) + 16)
            self.assertEqual(ct[0], 2)
            self.assertNotEqual(ct[1:1 + len(plaintext)], plaintext)
            self.assertEqual(self.call("Decrypt", handle, "AEAD", ct, opts), plaintext)
            other_iv = self.call("Encrypt", handle, "AEAD", plaintext,
                                 {"iv": os.urandom(12), "aad": aad})
            self.assertNotEqual(other_iv, ct)
            tampered = bytearray(ct)
            tampered[-1] ^= 1
            self.assertFails(FAILED, INTERNAL, self.root, "Decrypt", handle, "AEAD",
                             bytes(tampered), opts)

    def import_sign_and_encrypt(self, key_id, key, client=None):
        """The same bytes as a key to sign/derive with and as a key to encrypt with: (sign handle,
        encrypt handle). On the filesystem one key with both usages; with a base slot two keys,
        key_id (sign) and key_id + "-enc" (encrypt), as PKCS#11 keys have one usage."""
        return import_sign_and_encrypt(client or self.root, key_id, key)


# ---------------------------------------------------------------------------------------------
# 1. Every method, checked against independent computation


class SymmetricKeyTest(KeydTestCase):
    """CreateKeyIfNotExists, ImportKey, LoadKey, DeleteKey, Sign (HMAC), Encrypt/Decrypt (AEAD),
    derived keys; where symmetric keys are stored (files, or token objects)."""

    def test_imported_key_signs_like_python_hmac(self):
        # Any length for HMAC (RFC 2104), on every backend.
        for key in (os.urandom(32), os.urandom(7), os.urandom(100), os.urandom(600)):
            key_id = f"hmac-key-{len(key)}"
            handle = self.call("ImportKey", key_id, key, ["sign"], OPTS)
            for data in (b"", b"hello", os.urandom(4000)):
                self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", data, OPTS),
                                 hmac256(key, data), f"{len(key)}-byte key")
            # SoftHSM's CKM_SHA256_HMAC takes keys of 32 bytes or more only: a key it cannot sign
            # with goes to the home (what a token cannot take goes to the next location), in one
            # place and whole (location_of).
            self.assertStored(key_id, IMPORTED, key, usage="sign")

    def test_generated_key_is_32_random_bytes_in_a_private_file(self):
        h1 = self.call("CreateKeyIfNotExists", "gen-1", ["derive", "sign"], OPTS)
        h2 = self.call("CreateKeyIfNotExists", "gen-2", ["encrypt"], OPTS)
        h3 = self.call("CreateKeyIfNotExists", "gen-3", ["sign"], OPTS)
        k1 = self.assertStored("gen-1", GENERATED, usage="sign")
        k2 = self.assertStored("gen-2", GENERATED, usage="encrypt")
        self.assertStored("gen-3", GENERATED, usage="sign")
        self.assertEqual([self.secret_length(k) for k in ("gen-1", "gen-2", "gen-3", HVK)],
                         [32] * 4)
        self.assertStoredIds({"gen-1": GENERATED, "gen-2": GENERATED, "gen-3": GENERATED,
                              HVK: GENERATED})
        # Each signs with its own key, as the stored key does.
        sigs = set()
        for handle, key_id in ((h1, "gen-1"), (h3, "gen-3")):
            for data in (b"data", b"", os.urandom(3000)):
                sig = self.call("Sign", handle, "HMAC-SHA256", data, OPTS)
                self.assertEqual(sig, self.expected_hmac(key_id, data))
                sigs.add(sig)
        self.assertEqual(len(sigs), 6)
        self.assertNotIn(self.expected_hmac(HVK, b"data"), sigs)
        if k1 is not None:  # files: the bytes themselves
            self.assertNotEqual(k1, k2)
            iv, aad = os.urandom(12), b"aad"
            self.assertEqual(self.call("Encrypt", h2, "AEAD", b"secret", {"iv": iv, "aad": aad}),
                             b"\x02" + AESGCM(k2).encrypt(iv, b"secret", aad))
        self.assertAeadRoundTrip(h2)

    def test_every_usage_is_accepted(self):
        for i, usage in enumerate((["derive"], ["encrypt"], ["sign"],
                                   ["derive", "encrypt", "sign"], ["sign", "sign"],
                                   ["derive", "encrypt"])):
            both = "encrypt" in usage and len(set(usage)) > 1
            if both and ON_TOKEN:
                # PKCS#11 keys have one usage, as upstream: sign/derive (CKK_GENERIC_SECRET) or
                # encrypt (CKK_AES); a mask of both is refused, whatever the token can do.
                self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "CreateKeyIfNotExists",
                                 f"usage-key-{i}", usage, OPTS)
                self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "ImportKey",
                                 f"usage-import-{i}", os.urandom(32), usage, OPTS)
                self.assertNotStored(f"usage-key-{i}")
                self.assertNotStored(f"usage-import-{i}")
                continue
            self.assertIsInstance(self.call("CreateKeyIfNotExists", f"usage-key-{i}", usage,
                                            OPTS), str)
            self.assertIsInstance(
                self.call("ImportKey", f"usage-import-{i}", os.urandom(32), usage, OPTS), str)
            kind = "encrypt" if usage == ["encrypt"] else "sign" if not both else None
            self.assertStored(f"usage-key-{i}", GENERATED, usage=kind)
            self.assertStored(f"usage-import-{i}", IMPORTED, usage=kind)
        # An existing key is kept whatever the usage asked for, both usages too.
        self.assertIsInstance(self.call("CreateKeyIfNotExists", "usage-key-0",
                                        ["derive", "encrypt", "sign"], OPTS), str)

    def test_create_key_if_not_exists_keeps_an_existing_key(self):
        key = os.urandom(32)
        self.call("ImportKey", "existing", key, ["sign"], OPTS)
        handle = self.call("CreateKeyIfNotExists", "existing", ["sign"], OPTS)
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS), hmac256(key, b"m"))
        self.assertStored("existing", IMPORTED, key)
        handle = self.call("CreateKeyIfNotExists", "generated", ["sign"], OPTS)
        first = self.fingerprint("generated")
        sig = self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS)
        again = self.call("CreateKeyIfNotExists", "generated", ["encrypt"], OPTS)
        self.assertEqual(self.fingerprint("generated"), first)
        self.assertStored("generated", GENERATED, usage="sign")
        self.assertEqual(self.call("Sign", again, "HMAC-SHA256", b"m", OPTS), sig)

    def test_empty_key_file_counts_as_missing_for_creation(self):
        # Spec §2.8: an empty file is "missing" during create, an error during use.
        if not ON_TOKEN:
            handle = self.call("ImportKey", "empty", b"", ["sign"], OPTS)
            self.assertKeyFile("empty", b"")
        else:
            # A token holds no empty key: the import is refused and leaves nothing. The empty
            # file, written by upstream's rules, is in the second location; a handle for the id
            # comes from a key imported and deleted again.
            self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "ImportKey", "empty", b"",
                             ["sign"], OPTS)
            self.assertNotStored("empty")
            handle = self.call("ImportKey", "empty", os.urandom(32), ["sign"], OPTS)
            self.assertIsNone(self.call("DeleteKey", handle, OPTS))
            self.assertNotStored("empty")
            self.write_key_file("empty", b"")
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Sign", handle, "HMAC-SHA256",
                         b"m", OPTS)
        self.assertFails(NOT_FOUND, "key empty does not exist", self.root, "LoadKey", "empty",
                         OPTS)
        created = self.call("CreateKeyIfNotExists", "empty", ["sign"], OPTS)
        if not SECRETS_ON_TOKEN:
            key = self.assertKeyFile("empty")
            self.assertEqual(len(key), 32)
        else:
            # Created in the first location, the token; the empty file stays as it was.
            (secret,) = self.token_objects("empty")
            self.assertEqual((secret["class"], secret["sensitive"], secret["never_extractable"],
                              secret["value_len"]), ("secret", True, True, 32))
            self.assertKeyFile("empty", b"")
        for h in (handle, created):
            self.assertEqual(self.call("Sign", h, "HMAC-SHA256", b"m", OPTS),
                             self.expected_hmac("empty", b"m"))

    def test_import_key_overwrites_and_old_handles_follow(self):
        a, b = os.urandom(32), os.urandom(32)
        h_a = self.call("ImportKey", "rotated", a, ["sign"], OPTS)
        self.assertStored("rotated", IMPORTED, a)
        h_b = self.call("ImportKey", "rotated", b, ["sign"], OPTS)
        self.assertStored("rotated", IMPORTED, b)
        # A handle names the key id, not the material.
        for handle in (h_a, h_b):
            self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                             hmac256(b, b"m"))

    def test_load_key_returns_fresh_handles_in_upstream_format(self):
        key = os.urandom(32)
        self.call("ImportKey", "loaded", key, ["sign"], OPTS)
        h1 = self.call("LoadKey", "loaded", OPTS)
        h2 = self.call("LoadKey", "loaded", OPTS)
        self.assertNotEqual(h1, h2)
        self.assertStored(HVK, GENERATED, usage="sign")
        self.assertEqual(self.secret_length(HVK), 32)
        for handle in (h1, h2):
            self.assertRegex(handle, r"^sr=[A-Za-z0-9+/]+=*&sig=[A-Za-z0-9+/]{43}=$")
            sr, sig, sr_json = handle_parts(handle)
            self.assertEqual(sig, self.expected_hmac(HVK, sr))
            self.assertEqual(list(sr_json), ["key_id", "nonce"])
            self.assertEqual(sr_json["key_id"], {"Key": "loaded"})
            self.assertEqual(len(base64.b64decode(sr_json["nonce"], validate=True)), 64)
            self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                             hmac256(key, b"m"))

    def test_delete_key_is_idempotent(self):
        handle = self.call("ImportKey", "doomed", os.urandom(32), ["sign"], OPTS)
        self.assertStored("doomed", IMPORTED)
        self.assertIsNone(self.call("DeleteKey", handle, OPTS))
        self.assertNotStored("doomed")
        self.assertIsNone(self.call("DeleteKey", handle, OPTS))
        self.assertFails(NOT_FOUND, "key doomed does not exist", self.root, "LoadKey", "doomed",
                         OPTS)
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Sign", handle, "HMAC-SHA256",
                         b"m", OPTS)

    def test_aead_ciphertext_is_version_2_aes_256_gcm(self):
        key = os.urandom(32)
        handle = self.call("ImportKey", "aead", key, ["encrypt"], OPTS)
        self.assertStored("aead", IMPORTED, key, usage="encrypt")
        for iv, aad, plaintext in ((os.urandom(12), b"aad", b"hello"),
                                   (os.urandom(16), b"", os.urandom(1000)),
                                   (os.urandom(12), os.urandom(300), b"")):
            ct = self.call("Encrypt", handle, "AEAD", plaintext, {"iv": iv, "aad": aad})
            self.assertEqual(len(ct), 1 + len(plaintext) + 16)
            self.assertEqual(ct[0], 2)
            self.assertEqual(AESGCM(key).decrypt(iv, ct[1:], aad), plaintext)
            self.assertEqual(ct, b"\x02" + AESGCM(key).encrypt(iv, plaintext, aad))
            self.assertEqual(self.call("Decrypt", handle, "AEAD", ct, {"iv": iv, "aad": aad}),
                             plaintext)

    def test_aead_decrypts_version_2_and_version_1_made_here(self):
        key = os.urandom(32)
        handle = self.call("ImportKey", "aead-in", key, ["encrypt"], OPTS)
        iv, aad, plaintext = os.urandom(12), b"context", os.urandom(77)
        body_and_tag = AESGCM(key).encrypt(iv, plaintext, aad)
        v2 = b"\x02" + body_and_tag
        v1 = b"\x01" + body_and_tag[-16:] + body_and_tag[:-16]
        opts = {"iv": iv, "aad": aad}
        if SECRETS_ON_TOKEN:
            # v1 (IoT Edge 1.1) ciphertexts were only ever made with filesystem keys: a token key
            # refuses them, as upstream's does. A key file in the home still reads both.
            self.assertStored("aead-in", IMPORTED, key, usage="encrypt")
            self.assertEqual(self.call("Decrypt", handle, "AEAD", v2, opts), plaintext)
            self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Decrypt", handle, "AEAD",
                             v1, opts)
            self.write_key_file("aead-file", key)
            handle = self.call("LoadKey", "aead-file", OPTS)
        for ct in (v2, v1):
            self.assertEqual(self.call("Decrypt", handle, "AEAD", ct, opts), plaintext)

    def test_derived_keys_are_hmac_of_base_and_data(self):
        base = os.urandom(32)
        base_handle = self.call("ImportKey", "master", base, ["derive"], OPTS)
        for data in (b"module-1:gen:primary", b"", os.urandom(200)):
            derived = hmac256(base, data)
            handle = self.call("CreateDerivedKey", base_handle, data, OPTS)
            sr, _, sr_json = handle_parts(handle)
            self.assertEqual(sr_json["key_id"], {"Derived": [base_handle, list(data)]})
            self.assertEqual(self.call("ExportDerivedKey", handle, OPTS), derived)
            self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"sas", OPTS),
                             hmac256(derived, b"sas"))
            iv, aad = os.urandom(12), b"a"
            ct = self.call("Encrypt", handle, "AEAD", b"plain", {"iv": iv, "aad": aad})
            self.assertEqual(ct, b"\x02" + AESGCM(derived).encrypt(iv, b"plain", aad))
            mine = b"\x02" + AESGCM(derived).encrypt(iv, b"mine", aad)
            self.assertEqual(self.call("Decrypt", handle, "AEAD", mine, {"iv": iv, "aad": aad}),
                             b"mine")
        # Nothing is stored for a derived key.
        self.assertStoredIds({"master": IMPORTED, HVK: GENERATED})

    def test_each_key_is_stored_where_the_backend_puts_it(self):
        # Key pairs on a token; symmetric keys on it when it can make and hold them, else in the
        # home (tpm2-pkcs11: no C_GenerateKey, no C_CreateObject of secret keys, no AES-GCM),
        # where they work all the same.
        key = os.urandom(32)
        imp_sign = self.call("ImportKey", "imp-sign", key, ["sign"], OPTS)
        imp_enc = self.call("ImportKey", "imp-enc", key, ["encrypt"], OPTS)
        gen_sign = self.call("CreateKeyIfNotExists", "gen-sign", ["sign"], OPTS)
        gen_enc = self.call("CreateKeyIfNotExists", "gen-enc", ["encrypt"], OPTS)
        pair = self.call("CreateKeyPairIfNotExists", "pair", ["ec-p256"], OPTS)
        self.assertStored("imp-sign", IMPORTED, key, usage="sign")
        self.assertStored("imp-enc", IMPORTED, key, usage="encrypt")
        self.assertStored("gen-sign", GENERATED, usage="sign")
        self.assertStored("gen-enc", GENERATED, usage="encrypt")
        self.assertStored("pair", PAIR)
        self.assertStoredIds({"imp-sign": IMPORTED, "imp-enc": IMPORTED, "gen-sign": GENERATED,
                              "gen-enc": GENERATED, "pair": PAIR, HVK: GENERATED})
        self.assertEqual(self.call("Sign", imp_sign, "HMAC-SHA256", b"m", OPTS),
                         hmac256(key, b"m"))
        iv = os.urandom(12)
        self.assertEqual(self.call("Encrypt", imp_enc, "AEAD", b"p", {"iv": iv, "aad": b""}),
                         b"\x02" + AESGCM(key).encrypt(iv, b"p", b""))
        self.assertEqual(self.call("Sign", gen_sign, "HMAC-SHA256", b"m", OPTS),
                         self.expected_hmac("gen-sign", b"m"))
        self.assertAeadRoundTrip(gen_enc)
        self.assertEcdsaVerifies(self.stored_public_key("pair"), pair)

    def test_key_material_never_reaches_the_log(self):
        key = os.urandom(32)
        handle, enc = self.import_sign_and_encrypt("secret", key)
        derived = self.call("ExportDerivedKey",
                            self.call("CreateDerivedKey", handle, b"d", OPTS), OPTS)
        iv = os.urandom(12)
        ct = self.call("Encrypt", enc, "AEAD", b"plaintext-marker", {"iv": iv, "aad": b""})
        self.call("Decrypt", enc, "AEAD", ct, {"iv": iv, "aad": b""})
        log = self.keyd.log()
        self.assertIn("Imported key secret", log)
        for secret in (key, derived):
            for form in (secret.hex(), b64(secret), secret.hex().upper()):
                self.assertNotIn(form, log)
        self.assertNotIn("plaintext-marker", log)


class KeyPairTest(KeydTestCase):
    """CreateKeyPairIfNotExists (each algorithm), LoadKeyPair, GetKeyPairPublicParameter, Sign
    (ECDSA), Encrypt (RSA-PKCS1, RSA-NO-PADDING), MoveKeyPair, DeleteKeyPair; PEM files, or
    private keys that never leave the token."""

    def test_ec_p256_signs_ecdsa_verifiable_from_the_public_parameters(self):
        handle = self.call("CreateKeyPairIfNotExists", "ec", ["ec-p256"], OPTS)
        public_key = self.ec_public_key(handle)
        self.assertEcdsaVerifies(public_key, handle)
        stored = self.stored_public_key("ec")
        self.assertIsInstance(stored.curve, ec.SECP256R1)
        self.assertEqual(compressed_point(stored), compressed_point(public_key))
        self.assertStoredIds({"ec": PAIR, HVK: GENERATED})
        # A 48-byte digest (SHA-384) is taken as given, as OpenSSL does.
        digest = hashlib.sha384(b"m").digest()
        sig = self.call("Sign", handle, "ECDSA", digest, OPTS)
        public_key.verify(sig, digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))

    def test_default_algorithms_are_ec_p256_then_rsa_2048(self):
        for key_id, algorithms, expected in (("dflt", [], "ECDSA"), ("star", ["*"], "ECDSA"),
                                             ("rsa-first", ["rsa-2048", "ec-p256"], "RSA"),
                                             ("unknown-skipped", ["dsa", "rsa-2048"], "RSA")):
            handle = self.call("CreateKeyPairIfNotExists", key_id, algorithms, OPTS)
            self.assertEqual(self.public_parameter(handle, "algorithm"), expected, key_id)
            stored = self.stored_public_key(key_id)
            self.assertIsInstance(stored, ec.EllipticCurvePublicKey if expected == "ECDSA"
                                  else rsa.RSAPublicKey, key_id)

    def test_rsa_2048_signs_pkcs1_and_pss(self):
        handle = self.call("CreateKeyPairIfNotExists", "rsa2k", ["rsa-2048"], OPTS)
        public_key = self.rsa_public_key(handle)
        self.assertEqual(public_key.key_size, 2048)
        self.assertEqual(self.public_parameter(handle, "rsa-exponent"), b"\x01\x00\x01")
        self.assertRsaSignsPkcs1(public_key, handle)
        self.assertRsaSignsPss(public_key, handle)
        self.assertEqual(self.stored_public_key("rsa2k").public_numbers(),
                         public_key.public_numbers())

    def test_rsa_4096_signs_pkcs1_and_pss(self):
        if BACKEND.name == "tpm2":
            # swtpm has no RSA-4096 (C_GenerateKeyPair: CKR_ATTRIBUTE_VALUE_INVALID, "Keysize
            # 4096 not supported"): asked for alone, no key pair, and nothing left behind; with a
            # next preferred algorithm, that one.
            self.assertFails(RSA4096_ALONE_ON_TPM2[0], RSA4096_ALONE_ON_TPM2[1], self.root,
                             "CreateKeyPairIfNotExists", "rsa4k", ["rsa-4096"], OPTS)
            self.assertNotStored("rsa4k")
            self.assertFails(NOT_FOUND, "key pair rsa4k does not exist", self.root,
                             "LoadKeyPair", "rsa4k", OPTS)
            handle = self.call("CreateKeyPairIfNotExists", "rsa4k", ["rsa-4096", "rsa-2048"],
                               OPTS, timeout=60)
            expected_bits = 2048
        else:
            handle = self.call("CreateKeyPairIfNotExists", "rsa4k", ["rsa-4096"], OPTS,
                               timeout=60)
            expected_bits = 4096
        public_key = self.rsa_public_key(handle)
        self.assertEqual(public_key.key_size, expected_bits)
        self.assertEqual(len(self.public_parameter(handle, "rsa-modulus")), expected_bits // 8)
        self.assertRsaSignsPkcs1(public_key, handle)
        self.assertRsaSignsPss(public_key, handle)
        self.assertEqual(self.stored_public_key("rsa4k").public_numbers(),
                         public_key.public_numbers())

    def test_create_key_pair_if_not_exists_keeps_the_existing_pair(self):
        handle = self.call("CreateKeyPairIfNotExists", "kept", ["ec-p256"], OPTS)
        point = self.public_parameter(handle, "ec-point")
        first = self.fingerprint("kept")
        again = self.call("CreateKeyPairIfNotExists", "kept", ["rsa-2048"], OPTS)
        self.assertEqual(self.public_parameter(again, "ec-point"), point)
        self.assertEqual(self.fingerprint("kept"), first)
        self.assertStored("kept", PAIR)

    def test_load_key_pair(self):
        self.assertFails(NOT_FOUND, "key pair lp does not exist", self.root, "LoadKeyPair",
                         "lp", OPTS)
        created = self.call("CreateKeyPairIfNotExists", "lp", [], OPTS)
        loaded = self.call("LoadKeyPair", "lp", OPTS)
        self.assertNotEqual(loaded, created)
        self.assertEqual(handle_parts(loaded)[2]["key_id"], {"KeyPair": "lp"})
        self.assertEcdsaVerifies(self.ec_public_key(created), loaded)

    def test_move_key_pair(self):
        handle = self.call("CreateKeyPairIfNotExists", "cert-temp", ["ec-p256"], OPTS)
        point = self.public_parameter(handle, "ec-point")
        old = self.call("CreateKeyPairIfNotExists", "cert", ["ec-p256"], OPTS)
        self.assertNotEqual(self.public_parameter(old, "ec-point"), point)

        self.assertIsNone(self.call("MoveKeyPair", "cert-temp", "cert", OPTS))
        self.assertFails(NOT_FOUND, "key pair cert-temp does not exist", self.root,
                         "LoadKeyPair", "cert-temp", OPTS)
        self.assertNotStored("cert-temp")
        self.assertStored("cert", PAIR)
        self.assertEqual(compressed_point(self.stored_public_key("cert")), point)
        moved = self.call("LoadKeyPair", "cert", OPTS)
        self.assertEqual(self.public_parameter(moved, "ec-point"), point)
        # The old handle of the destination now reaches the moved key; that of the source
        # reaches nothing.
        self.assertEqual(self.public_parameter(old, "ec-point"), point)
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Sign", handle, "ECDSA",
                         hashlib.sha256(b"m").digest(), OPTS)
        self.assertEcdsaVerifies(self.ec_public_key(moved), moved)
        self.assertFails(NOT_FOUND, "key pair cert-temp does not exist", self.root,
                         "MoveKeyPair", "cert-temp", "cert", OPTS)

    def test_delete_key_pair_is_idempotent(self):
        handle = self.call("CreateKeyPairIfNotExists", "gone", [], OPTS)
        self.assertStored("gone", PAIR)
        self.assertIsNone(self.call("DeleteKeyPair", handle, OPTS))
        self.assertNotStored("gone")
        self.assertIsNone(self.call("DeleteKeyPair", handle, OPTS))
        self.assertFails(NOT_FOUND, "key pair gone does not exist", self.root, "LoadKeyPair",
                         "gone", OPTS)


# ---------------------------------------------------------------------------------------------
# 2. Bad input


class BadInputTest(KeydTestCase):
    """Malformed, forged and misdirected input, each with its error; one keyd for the class,
    which must survive all of it (same pid)."""

    keyd_scope = "class"

    @classmethod
    def prepare_class_keys(cls):
        cls.sym_key = os.urandom(32)
        cls.sym, cls.sym_enc = import_sign_and_encrypt(cls.root, "sym", cls.sym_key)
        cls.ec = cls.root.call("CreateKeyPairIfNotExists", "ec", ["ec-p256"], OPTS)
        cls.rsa = cls.root.call("CreateKeyPairIfNotExists", "rsa", ["rsa-2048"], OPTS)
        cls.derived = cls.root.call("CreateDerivedKey", cls.sym, b"data", OPTS)

    def handle_methods(self, handle):
        """Every method that takes a handle, with otherwise valid arguments."""
        iv = {"iv": os.urandom(12), "aad": b""}
        return [("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                ("Sign", handle, "ECDSA", hashlib.sha256(b"m").digest(), OPTS),
                ("Encrypt", handle, "AEAD", b"m", iv),
                ("Encrypt", handle, "RSA-PKCS1", b"m", OPTS),
                ("Decrypt", handle, "AEAD", b"\x02" + bytes(32), iv),
                ("DeleteKey", handle, OPTS),
                ("DeleteKeyPair", handle, OPTS),
                ("GetKeyPairPublicParameter", handle, "algorithm", OPTS),
                ("CreateDerivedKey", handle, b"d", OPTS),
                ("ExportDerivedKey", handle, OPTS)]

    def test_forged_and_malformed_handles_are_invalid(self):
        sr, sig, _ = handle_parts(self.sym)
        flipped_sig = bytearray(sig)
        flipped_sig[7] ^= 0x01
        sr_json = sr.decode()
        tampered_sr = sr_json.replace('"Key":"sym"', '"Key":"syn"').encode()
        other_sr = handle_parts(self.ec)[0]
        forged = [
            with_sig(self.sym, bytes(flipped_sig)),             # one bit of the MAC
            f"sr={b64(tampered_sr)}&sig={b64(sig)}",           # another id, old MAC
            f"sr={b64(other_sr)}&sig={b64(sig)}",              # MAC of another handle
            self.sym[:len(self.sym) // 2],                     # truncated
            self.sym[:-2],                                     # sig cut short
            "sr=!!notbase64!!&sig=" + b64(sig),                # bad base64
            self.sym.split("&")[0] + "&sig=" + b64(sig)[:-1],  # sig without its padding
            self.sym.split("&")[0],                            # no sig
            "sig=" + b64(sig),                                 # no sr
            "",
            "garbage",
            f"sr={b64(b'not json')}&sig={b64(sig)}",
            self.sym + "A" * (300 * 1024),                     # longer than any handle
        ]
        for handle in forged:
            for method, *args in self.handle_methods(handle):
                with self.subTest(handle=handle[:60], method=method):
                    self.assertFails(INVALID_PARAMETER, INVALID_HANDLE, self.root, method, *args)
        # The forged delete reached nothing.
        self.assertStored("sym", IMPORTED, self.sym_key)
        self.assertEqual(self.call("Sign", self.sym, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.sym_key, b"m"))

    def test_handles_of_the_wrong_kind(self):
        digest = hashlib.sha256(b"m").digest()
        aead = {"iv": os.urandom(12), "aad": b""}
        for method, *args in [("Sign", self.ec, "HMAC-SHA256", b"m", OPTS),
                              ("Sign", self.sym, "ECDSA", digest, OPTS),
                              ("Sign", self.derived, "ECDSA", digest, OPTS),
                              ("Encrypt", self.ec, "AEAD", b"m", aead),
                              ("Encrypt", self.rsa, "AEAD", b"m", aead),
                              ("Encrypt", self.sym, "RSA-PKCS1", b"m", OPTS),
                              ("Encrypt", self.derived, "RSA-NO-PADDING", b"m", OPTS),
                              ("Decrypt", self.rsa, "AEAD", b"\x02" + bytes(32), aead),
                              ("Decrypt", self.sym, "RSA-PKCS1", b"m", OPTS)]:
            with self.subTest(method=method, algorithm=args[1]):
                self.assertFails(INVALID_PARAMETER, BAD_MECHANISM, self.root, method, *args)
        self.assertFails(INVALID_PARAMETER, NOT_A_KEY_PAIR, self.root, "DeleteKeyPair", self.sym,
                         OPTS)
        self.assertFails(INVALID_PARAMETER, NOT_A_KEY_PAIR, self.root, "DeleteKeyPair",
                         self.derived, OPTS)
        self.assertFails(INVALID_PARAMETER, NOT_A_KEY, self.root, "DeleteKey", self.ec, OPTS)
        self.assertFails(INVALID_PARAMETER, NOT_A_KEY, self.root, "DeleteKey", self.derived, OPTS)
        self.assertFails(INVALID_PARAMETER, NOT_DERIVED, self.root, "ExportDerivedKey", self.sym,
                         OPTS)
        self.assertFails(INVALID_PARAMETER, NOT_DERIVED, self.root, "ExportDerivedKey", self.ec,
                         OPTS)
        # Upstream reads a symmetric key's file as a key pair and fails: 500 (spec §2.3 #8);
        # keyd answers so from the handle's kind, wherever the key is.
        for handle in (self.sym, self.derived):
            self.assertFails(FAILED, INTERNAL, self.root, "GetKeyPairPublicParameter",
                             handle, "algorithm", OPTS)
        # The right kind, the wrong algorithm of key pair.
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Sign", self.rsa, "ECDSA",
                         digest, OPTS)
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Encrypt", self.ec,
                         "RSA-PKCS1", SHA256_DIGEST_INFO + digest, OPTS)
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Encrypt", self.ec,
                         "RSA-NO-PADDING", bytes(32), OPTS)
        # Nothing was deleted on the way.
        self.assertStored("sym", IMPORTED, self.sym_key)
        self.assertStored("ec", PAIR)
        self.assertEqual(self.public_parameter(self.ec, "algorithm"), "ECDSA")

    def test_rsa_no_padding_needs_a_block_as_long_as_the_modulus(self):
        for block in (b"", bytes(255), b"\xff" * 256, bytes(257)):
            with self.subTest(length=len(block), top=block[:1]):
                self.assertFails(FAILED, INTERNAL, self.root, "Encrypt", self.rsa,
                                 "RSA-NO-PADDING", block, OPTS)

    def test_nested_derived_keys_are_refused(self):
        self.assertFails(INVALID_PARAMETER, NESTED, self.root, "CreateDerivedKey", self.derived,
                         b"more", OPTS)

    def test_derived_key_over_a_key_pair_cannot_be_used(self):
        # Spec §2.3 #12: accepted, but every later use fails: the PEM of a key pair is no HMAC
        # key, and nothing derived from a private key may leave keyd.
        handle = self.call("CreateDerivedKey", self.ec, b"data", OPTS)
        # The PEM file's HMAC, what must not come out; a token's private key has no bytes here.
        leaked = hmac256(self.read_key("ec"), b"data") if not ON_TOKEN else None
        aead = {"iv": bytes(12), "aad": b""}
        for method, *args in [("ExportDerivedKey", handle, OPTS),
                              ("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                              ("Encrypt", handle, "AEAD", b"m", aead),
                              ("Decrypt", handle, "AEAD", b"\x02" + bytes(32), aead)]:
            with self.subTest(method=method):
                try:
                    result = self.call(method, *args)
                except CallError as e:
                    self.assertEqual((e.name, e.message), (INVALID_PARAMETER, NOT_A_KEY))
                    continue
                self.fail(f"{method} used the key pair's PEM file as a symmetric key"
                          + (": HMAC-SHA256(PEM, data) left keyd" if result == leaked else ""))

    def test_unknown_algorithms(self):
        aead = {"iv": os.urandom(12), "aad": b""}
        for method, handle, algorithm, opts in [
                ("Sign", self.sym, "HMAC-SHA384", OPTS), ("Sign", self.sym, "", OPTS),
                ("Sign", self.sym, "hmac-sha256", OPTS), ("Sign", self.ec, "ecdsa", OPTS),
                ("Sign", self.rsa, "RSA-PKCS1", OPTS), ("Encrypt", self.sym, "AES", aead),
                ("Encrypt", self.sym, "aead", aead), ("Encrypt", self.rsa, "RSA-OAEP", OPTS),
                ("Decrypt", self.sym, "AEAD2", aead)]:
            with self.subTest(method=method, algorithm=algorithm):
                self.assertFails(INVALID_PARAMETER, BAD_MECHANISM, self.root, method, handle,
                                 algorithm, b"m" * 32, opts)
        for algorithms in (["dsa"], ["EC-P256"], ["ec-p384", "rsa-1024"], [""]):
            with self.subTest(algorithms=algorithms):
                self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root,
                                 "CreateKeyPairIfNotExists", "no-algorithm", algorithms, OPTS)
        self.assertNotStored("no-algorithm")

    def test_aead_failures(self):
        iv, aad = os.urandom(12), b"aad"
        opts = {"iv": iv, "aad": aad}
        sym = self.sym_enc
        on_token = location_of(IMPORTED) == "token"
        good = self.call("Encrypt", sym, "AEAD", b"plaintext", opts)

        def flip(data, index):
            out = bytearray(data)
            out[index] ^= 0x80
            return bytes(out)
        for what, ct, options in [("tag", flip(good, -1), opts),
                                  ("body", flip(good, 1), opts),
                                  ("aad", good, {"iv": iv, "aad": b"other"}),
                                  ("iv", good, {"iv": os.urandom(12), "aad": aad}),
                                  ("v1 reading of v2", b"\x01" + good[1:], opts),
                                  ("shortest", b"\x02" + bytes(16), opts)]:
            with self.subTest(what=what):
                if what.startswith("v1") and on_token:
                    # Token keys read v2 only (upstream): a v1 ciphertext is a bad value there.
                    self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Decrypt", sym,
                                     "AEAD", ct, options)
                    continue
                self.assertFails(FAILED, INTERNAL, self.root, "Decrypt", sym, "AEAD", ct,
                                 options)
        for what, ct in [("empty", b""), ("version only", b"\x02"),
                         ("16 bytes", b"\x02" + bytes(15)), ("version 3", b"\x03" + good[1:]),
                         ("version 0", b"\x00" + good[1:])]:
            with self.subTest(what=what):
                self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Decrypt", sym,
                                 "AEAD", ct, opts)
        for method, data in (("Encrypt", b"m"), ("Decrypt", good)):
            self.assertFails(INVALID_PARAMETER, bad_param("iv", "missing"), self.root, method,
                             sym, "AEAD", data, {"aad": aad})
            self.assertFails(INVALID_PARAMETER, bad_param("aad", "missing"), self.root, method,
                             sym, "AEAD", data, {"iv": iv})
            self.assertFails(INVALID_PARAMETER, bad_param("iv", "missing"), self.root, method,
                             self.derived, "AEAD", data, OPTS)
        short_key = os.urandom(16)
        short = self.call("ImportKey", "short", short_key, ["encrypt"], OPTS)
        if not on_token:
            # AES-256-GCM needs 32 bytes of key.
            self.assertFails(FAILED, INTERNAL, self.root, "Encrypt", short, "AEAD", b"m", opts)
        else:
            # A token's AES-GCM takes the key's length (upstream: "AES-GCM with unspecified key
            # length"): AES-128-GCM.
            self.assertStored("short", IMPORTED, short_key, usage="encrypt")
            self.assertEqual(self.call("Encrypt", short, "AEAD", b"m", opts),
                             b"\x02" + AESGCM(short_key).encrypt(iv, b"m", aad))
        self.assertEqual(self.call("Decrypt", sym, "AEAD", good, opts), b"plaintext")

    def test_options(self):
        fd_opts = {"client-socket": "not an fd"}
        for method, *args in [("LoadKey", "sym"), ("CreateKeyIfNotExists", "opt", ["sign"]),
                              ("ImportKey", "opt", b"k" * 32, ["sign"]),
                              ("CreateKeyPairIfNotExists", "opt", []),
                              ("LoadKeyPair", "ec"), ("MoveKeyPair", "ec", "opt"),
                              ("DeleteKey", self.sym), ("DeleteKeyPair", self.ec),
                              ("GetKeyPairPublicParameter", self.ec, "algorithm"),
                              ("CreateDerivedKey", self.sym, b"d"),
                              ("ExportDerivedKey", self.derived),
                              ("Sign", self.sym, "HMAC-SHA256", b"m"),
                              ("Encrypt", self.sym, "AEAD", b"m"),
                              ("Decrypt", self.sym, "AEAD", b"\x02" + bytes(32))]:
            aead = {"iv": b"i" * 12, "aad": b""} if args[1:2] == ["AEAD"] else {}
            with self.subTest(method=method):
                self.assertFails(INVALID_ARGS, 'Unknown option "bogus".', self.root, method,
                                 *args, {**aead, "bogus": 1})
                self.assertFails(INVALID_ARGS, 'Option "client-socket" must be of type h.',
                                 self.root, method, *args, {**aead, **fd_opts})
                if not aead:
                    self.assertFails(INVALID_ARGS, 'Unknown option "iv".', self.root, method,
                                     *args, {"iv": b"i" * 12})
        aead = (self.sym, "AEAD", b"m")
        self.assertFails(INVALID_ARGS, 'Option "iv" must be of type ay.', self.root, "Encrypt",
                         *aead, {"iv": "text", "aad": b""})
        self.assertFails(INVALID_ARGS, 'Option "aad" must be of type ay.', self.root, "Encrypt",
                         *aead, {"iv": b"i" * 12, "aad": 7})
        # Rejected before anything changed.
        for key_id in ("opt",):
            self.assertNotStored(key_id)
        self.assertStored("sym", IMPORTED, self.sym_key)
        self.assertStored("ec", PAIR)
        self.assertEqual(self.public_parameter(self.ec, "algorithm"), "ECDSA")

    def test_usage(self):
        for usage, cause in ((["verify"], "unknown key usage"),
                             (["sign", "bogus"], "unknown key usage"),
                             (["Sign"], "unknown key usage"),
                             (["sign,encrypt"], "unknown key usage"),
                             ([], "no key usage given")):
            with self.subTest(usage=usage):
                self.assertFails(INVALID_PARAMETER, bad_param("usage", cause), self.root,
                                 "CreateKeyIfNotExists", "bad-usage", usage, OPTS)
                self.assertFails(INVALID_PARAMETER, bad_param("usage", cause), self.root,
                                 "ImportKey", "bad-usage", b"k" * 32, usage, OPTS)
        self.assertNotStored("bad-usage")

    def test_public_parameters(self):
        for handle, name in ((self.ec, "rsa-modulus"), (self.ec, "rsa-exponent"),
                             (self.rsa, "ec-point"), (self.rsa, "ec-curve-oid"),
                             (self.ec, "modulus"), (self.ec, ""), (self.rsa, "Algorithm")):
            with self.subTest(name=name):
                self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root,
                                 "GetKeyPairPublicParameter", handle, name, OPTS)

    def test_missing_keys(self):
        self.assertFails(NOT_FOUND, "key missing does not exist", self.root, "LoadKey",
                         "missing", OPTS)
        self.assertFails(NOT_FOUND, "key pair missing does not exist", self.root, "LoadKeyPair",
                         "missing", OPTS)
        self.assertFails(NOT_FOUND, "key pair missing does not exist", self.root, "MoveKeyPair",
                         "missing", "elsewhere", OPTS)
        self.assertNotStored("elsewhere")
        self.assertNotStored("missing")

    def test_move_to_the_same_id(self):
        point = self.public_parameter(self.ec, "ec-point")
        self.assertFails(INVALID_PARAMETER, "source and destination for move are identical",
                         self.root, "MoveKeyPair", "ec", "ec", OPTS)
        self.assertFails(INVALID_PARAMETER, "source and destination for move are identical",
                         self.root, "MoveKeyPair", "nothing", "nothing", OPTS)
        self.assertEqual(self.public_parameter(self.call("LoadKeyPair", "ec", OPTS), "ec-point"),
                         point)

    def test_ids_cannot_escape_the_home(self):
        # The token's own files (SoftHSM's objects, swtpm's state, the tpm2-pkcs11 store) change
        # with the keys on it; nothing else outside the home may.
        outside = [self.state.home] + ([self.state.token.base_dir] if self.state.token else [])
        before = tree_listing(self.run_dir, outside)
        tricky = ["a/b", "/", "..", "../../etc/x", "../" * 20 + "tmp/aziot-escape",
                  "/tmp/aziot-escape", "./.", "x\\y", ".#x.key", "k.key", "keys/../../k",
                  "é ü\tñ\n"]
        base = self.listing()
        added = {}
        for key_id in tricky:
            with self.subTest(key_id=key_id[:40]):
                key = os.urandom(32)
                handle = self.call("ImportKey", key_id, key, ["sign"], OPTS)
                self.assertStored(key_id, IMPORTED, key)
                self.assertEqual(self.call("Sign", self.call("LoadKey", key_id, OPTS),
                                           "HMAC-SHA256", b"m", OPTS), hmac256(key, b"m"))
                self.call("CreateKeyIfNotExists", key_id + "#gen", ["sign"], OPTS)
                self.assertStored(key_id + "#gen", GENERATED)
                self.assertEqual(self.secret_length(key_id + "#gen"), 32)
                pair = self.call("CreateKeyPairIfNotExists", key_id + "#pair", [], OPTS)
                self.assertEqual(self.public_parameter(pair, "algorithm"), "ECDSA")
                self.assertStored(key_id + "#pair", PAIR)
                self.call("MoveKeyPair", key_id + "#pair", key_id + "#moved", OPTS)
                self.assertStored(key_id + "#moved", PAIR)
                self.assertNotStored(key_id + "#pair")
                added.update({key_id + "#gen": GENERATED, key_id + "#moved": PAIR})
                self.assertIsNone(self.call("DeleteKey", handle, OPTS))
                self.assertNotStored(key_id)
        # The longest id there may be: nothing in it goes into the file name but its hash.
        longest = "/" * 4096
        key = os.urandom(32)
        self.call("ImportKey", longest, key, ["sign"], OPTS)
        self.assertStored(longest, IMPORTED, key)
        if location_of(IMPORTED) == "file":
            self.assertEqual(key_file_name(longest)[0], "-")
        added[longest] = IMPORTED
        # Too long for any id (more than 4096 bytes, or empty), or for a file name (the id's
        # letters and digits go into it: more than NAME_MAX). A token's label has no such
        # limit: there the 4096 and 300 letters are ids like any other.
        for key_id in ("a" * 4096, "a" * 300, "/" * 4097, ""):
            valid = 0 < len(key_id) <= 4096
            with self.subTest(key_id=key_id[:10], length=len(key_id)):
                for method, kind, args, delete in [
                        ("ImportKey", IMPORTED, (key_id, b"k" * 32, ["sign"]), "DeleteKey"),
                        ("CreateKeyIfNotExists", GENERATED, (key_id, ["sign"]), "DeleteKey"),
                        ("CreateKeyPairIfNotExists", PAIR, (key_id, []), "DeleteKeyPair")]:
                    if valid and location_of(kind) == "token":
                        handle = self.call(method, *args, OPTS)
                        self.assertStored(key_id, kind)
                        self.assertIsNone(self.call(delete, handle, OPTS))
                        self.assertNotStored(key_id)
                        continue
                    self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, method, *args,
                                     OPTS)
                for method in ("LoadKey", "LoadKeyPair"):
                    self.assertFails(NOT_FOUND, None, self.root, method, key_id, OPTS)
        self.assertStoredIds(added, base)
        home = os.listdir(self.state.home) if os.path.isdir(self.state.home) else []
        if ON_TOKEN:
            self.assertLessEqual(set(home), {"keys"})
        else:
            self.assertEqual(home, ["keys"])
        self.assertEqual(tree_listing(self.run_dir, outside), before)
        self.assertFalse(os.path.exists("/tmp/aziot-escape"))

    def test_malformed_calls(self):
        self.assertFails(INVALID_ARGS, None, self.root, "LoadKey", "sym", signature="s")
        self.assertFails(INVALID_ARGS, None, self.root, "Sign", self.sym, "HMAC-SHA256", 5, OPTS,
                         signature="ssia{sv}")
        self.assertFails(INVALID_ARGS, None, self.root, "LoadKey", "sym", OPTS, "extra",
                         signature="sa{sv}s")
        self.assertFails(UNKNOWN_METHOD, None, self.root, "ExportKey", "sym", OPTS,
                         signature="sa{sv}")

    def test_bad_client_sockets(self):
        read_end, write_end = os.pipe()
        unconnected = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer, conn = self.peer_as(USER_A)
        peer.kill()
        peer.wait(10)
        try:
            for fd in (read_end, unconnected.fileno(), conn.fileno()):
                with self.subTest(fd=fd):
                    for method, *args in [("LoadKey", "sym"),
                                          ("CreateKeyIfNotExists", "deleg", ["sign"]),
                                          ("MoveKeyPair", "ec", "deleg")]:
                        self.assertFails(INVALID_PARAMETER, BAD_SOCKET, self.root, method,
                                         *args, {"client-socket": Fd(fd)})
        finally:
            os.close(read_end)
            os.close(write_end)
            unconnected.close()
        self.assertNotStored("deleg")


# ---------------------------------------------------------------------------------------------
# 3. Authorization


class AuthorizationTest(KeydTestCase):
    """The bus policy, principals (hot-reloaded), polkit, the reserved handle-validation-key,
    bearer handles and delegation through a client socket, with real unprivileged uids."""

    def setUp(self):
        super().setUp()
        try:
            self.key = os.urandom(32)
            self.sym, self.sym_enc = self.import_sign_and_encrypt("k-sym", self.key)
            self.call("ImportKey", "hey", os.urandom(32), ["sign"], OPTS)
            self.call("ImportKey", "other", os.urandom(32), ["sign"], OPTS)
            self.pair = self.call("CreateKeyPairIfNotExists", "k-pair", ["ec-p256"], OPTS)
            self.a = self.client_as(USER_A)
        except BaseException:
            self.tearDown()  # unittest does not after a failed setUp: stop this test's keyd
            raise

    def denied(self, uid, key_id):
        return (NOT_AUTHORIZED, f"user {uid} is not authorized to access the key {key_id}")

    def assertDenied(self, client, uid, key_id, method, *args):
        self.assertEqual(outcome_of(lambda: client.call(method, *args)),
                         self.denied(uid, key_id), f"{method}{args!r}")

    def id_methods(self, key_id):
        """Every method that names a key id, with the id in its place."""
        return [("LoadKey", key_id, OPTS), ("LoadKeyPair", key_id, OPTS),
                ("CreateKeyIfNotExists", key_id, ["sign"], OPTS),
                ("ImportKey", key_id, b"x" * 32, ["sign"], OPTS),
                ("CreateKeyPairIfNotExists", key_id, [], OPTS),
                ("MoveKeyPair", key_id, "k-moved", OPTS)]

    def test_bus_refuses_callers_outside_the_group(self):
        b = self.client_as(USER_B, groups=None)
        a_alone = self.client_as(USER_A, groups=None)
        for client in (b, a_alone):
            self.assertFails(ACCESS_DENIED, None, client, "LoadKey", "k-sym", OPTS)
            self.assertFails(ACCESS_DENIED, None, client, "Sign", self.sym, "HMAC-SHA256", b"m",
                             OPTS)
            self.assertFails(ACCESS_DENIED, None, client,
                             "org.freedesktop.DBus.Introspectable.Introspect")
        # The group reaches keyd (which decides) and its introspection and Peer, nothing else.
        self.assertFails(NOT_AUTHORIZED, None, self.a, "LoadKey", "k-sym", OPTS)
        self.assertIn("org.aziot.Keys1", self.a.call(
            "org.freedesktop.DBus.Introspectable.Introspect"))
        self.assertIsNone(self.a.call("org.freedesktop.DBus.Peer.Ping"))
        self.assertFails(ACCESS_DENIED, None, self.a, "org.freedesktop.DBus.Properties.GetAll",
                         "org.aziot.Keys1")

    def test_group_member_without_principal_is_not_authorized(self):
        for method, key_id, *rest in self.id_methods("k-sym") + self.id_methods("k-pair") + \
                self.id_methods("k-new"):
            with self.subTest(method=method, key_id=key_id):
                self.assertDenied(self.a, self.uid_a, key_id, method, key_id, *rest)
        self.assertNotStored("k-new")
        self.assertNotStored("k-moved")
        self.assertStored("k-sym", IMPORTED, self.key)
        self.assertStored("k-pair", PAIR)
        self.call("LoadKeyPair", "k-pair", OPTS)

    def test_principal_globs_allow_and_are_reloaded(self):
        self.state.write_principals("50-a", [(self.uid_a, ["k*", "?ey"])])
        self.wait_for_outcome(lambda: self.a.call("LoadKey", "k-sym", OPTS), None,
                              "the principal to be loaded")
        handle = self.a.call("LoadKey", "k-sym", OPTS)
        self.assertEqual(self.a.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.key, b"m"))
        self.a.call("LoadKey", "hey", OPTS)
        self.a.call("LoadKeyPair", "k-pair", OPTS)
        for key_id in ("other", "K-sym", "ak-sym", "hhey", "ey"):
            self.assertDenied(self.a, self.uid_a, key_id, "LoadKey", key_id, OPTS)
        new = self.a.call("CreateKeyIfNotExists", "k-new", ["sign"], OPTS)
        self.assertStored("k-new", GENERATED)
        self.assertEqual(self.a.call("Sign", new, "HMAC-SHA256", b"m", OPTS),
                         self.expected_hmac("k-new", b"m"))
        imported = os.urandom(32)
        self.a.call("ImportKey", "key", imported, ["sign"], OPTS)
        self.assertStored("key", IMPORTED, imported)
        self.a.call("CreateKeyPairIfNotExists", "k-pair2", [], OPTS)
        self.assertStored("k-pair2", PAIR)
        # A move needs both ids.
        self.assertDenied(self.a, self.uid_a, "other", "MoveKeyPair", "k-pair", "other", OPTS)
        self.assertDenied(self.a, self.uid_a, "other", "MoveKeyPair", "other", "k-pair", OPTS)
        self.assertStored("k-pair", PAIR)
        self.a.call("MoveKeyPair", "k-pair", "k-moved", OPTS)
        self.assertStored("k-moved", PAIR)
        self.assertNotStored("k-pair")

        self.state.remove_principals("50-a")
        self.wait_for_outcome(lambda: self.a.call("LoadKey", "k-sym", OPTS),
                              self.denied(self.uid_a, "k-sym"), "the principal to be dropped")
        self.assertDenied(self.a, self.uid_a, "hey", "LoadKey", "hey", OPTS)

    def test_principals_of_another_uid_do_not_apply(self):
        self.state.write_principals("50-b", [(self.uid_b, ["*"]), (0, ["*"]),
                                             (self.uid_a, ["only-this"])])
        self.call("ImportKey", "only-this", os.urandom(32), ["sign"], OPTS)
        self.wait_for_outcome(lambda: self.a.call("LoadKey", "only-this", OPTS), None,
                              "the principals to be loaded")
        self.assertDenied(self.a, self.uid_a, "k-sym", "LoadKey", "k-sym", OPTS)
        b = self.client_as(USER_B)
        b.call("LoadKey", "k-sym", OPTS)

    def test_polkit_rule_grants_load_of_one_key(self):
        self.add_rules(
            'polkit.addRule(function(action, subject) {\n'
            '    if (action.id == "org.aziot.keys.load" && subject.user == "%s" &&\n'
            '        action.lookup("key_id") == "k-sym")\n'
            '        return polkit.Result.YES;\n'
            '});\n' % USER_A)
        handle = self.a.call("LoadKey", "k-sym", OPTS)
        self.assertEqual(self.a.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.key, b"m"))
        self.assertDenied(self.a, self.uid_a, "other", "LoadKey", "other", OPTS)
        # Another action on the same key.
        self.assertDenied(self.a, self.uid_a, "k-sym", "CreateKeyIfNotExists", "k-sym",
                          ["sign"], OPTS)
        self.assertDenied(self.a, self.uid_a, "k-sym", "ImportKey", "k-sym", b"x" * 32,
                          ["sign"], OPTS)
        self.assertStored("k-sym", IMPORTED, self.key)
        # Another user.
        b = self.client_as(USER_B)
        self.assertDenied(b, self.uid_b, "k-sym", "LoadKey", "k-sym", OPTS)
        self.stack.remove_rules(self.rules.pop())
        self.assertDenied(self.a, self.uid_a, "k-sym", "LoadKey", "k-sym", OPTS)

    def test_polkit_rule_for_manage_sees_both_ids_of_a_move(self):
        self.add_rules(
            'polkit.addRule(function(action, subject) {\n'
            '    if (action.id == "org.aziot.keys.manage" && subject.user == "%s" &&\n'
            '        action.lookup("key_id") == "k-pair" &&\n'
            '        action.lookup("key_id_to") == "k-moved")\n'
            '        return polkit.Result.YES;\n'
            '});\n' % USER_A)
        self.assertDenied(self.a, self.uid_a, "k-pair", "MoveKeyPair", "k-pair", "other", OPTS)
        self.assertDenied(self.a, self.uid_a, "k-pair", "CreateKeyPairIfNotExists", "k-pair",
                          [], OPTS)
        point = self.public_parameter(self.pair, "ec-point")
        self.assertIsNone(self.a.call("MoveKeyPair", "k-pair", "k-moved", OPTS))
        self.assertEqual(self.public_parameter(self.call("LoadKeyPair", "k-moved", OPTS),
                                               "ec-point"), point)
        self.assertStored("k-moved", PAIR)
        self.assertNotStored("k-pair")

    def test_handle_validation_key_is_out_of_reach(self):
        self.assertStored(HVK, GENERATED)
        hvk = self.fingerprint(HVK)
        pair = self.fingerprint("k-pair")
        self.state.write_principals("50-all", [(self.uid_a, ["*"])])
        self.add_rules('polkit.addRule(function(action, subject) {\n'
                       '    return polkit.Result.YES;\n'
                       '});\n')
        self.wait_for_outcome(lambda: self.a.call("LoadKey", "k-sym", OPTS), None,
                              "the principal to be loaded")
        for client, uid in ((self.a, self.uid_a), (self.root, 0)):
            for method, key_id, *rest in self.id_methods(HVK):
                with self.subTest(uid=uid, method=method):
                    self.assertDenied(client, uid, HVK, method, key_id, *rest)
            self.assertDenied(client, uid, HVK, "MoveKeyPair", "k-pair", HVK, OPTS)
        self.assertEqual(self.fingerprint(HVK), hvk)
        self.assertEqual(self.fingerprint("k-pair"), pair)
        self.assertEqual(self.call("Sign", self.sym, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.key, b"m"))

    def test_handles_are_bearer_tokens(self):
        # No principal, no rule: a handle from root is all it takes.
        self.assertDenied(self.a, self.uid_a, "k-sym", "LoadKey", "k-sym", OPTS)
        self.assertEqual(self.a.call("Sign", self.sym, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.key, b"m"))
        iv = os.urandom(12)
        ct = self.a.call("Encrypt", self.sym_enc, "AEAD", b"p", {"iv": iv, "aad": b""})
        self.assertEqual(AESGCM(self.key).decrypt(iv, ct[1:], b""), b"p")
        self.assertEqual(self.a.call("Decrypt", self.sym_enc, "AEAD", ct,
                                     {"iv": iv, "aad": b""}), b"p")
        derived = self.a.call("CreateDerivedKey", self.sym, b"d", OPTS)
        self.assertEqual(self.a.call("ExportDerivedKey", derived, OPTS), hmac256(self.key, b"d"))
        self.assertEcdsaVerifies(self.ec_public_key(self.pair, self.a), self.pair, self.a)
        doomed = self.call("ImportKey", "k-doomed", os.urandom(32), ["sign"], OPTS)
        self.assertIsNone(self.a.call("DeleteKey", doomed, OPTS))
        self.assertNotStored("k-doomed")
        gone = self.call("CreateKeyPairIfNotExists", "k-gone", [], OPTS)
        self.assertIsNone(self.a.call("DeleteKeyPair", gone, OPTS))
        self.assertNotStored("k-gone")

    def test_delegated_socket_authorizes_the_peer_not_root(self):
        peer, conn = self.peer_as(USER_A)
        delegated = {"client-socket": Fd(conn.fileno())}
        # root itself would be allowed: a denial naming a's uid proves the peer was asked about.
        for method, key_id, *rest in self.id_methods("k-sym"):
            with self.subTest(method=method):
                self.assertDenied(self.root, self.uid_a, key_id, method, key_id, *rest[:-1],
                                  delegated)
        self.state.write_principals("50-a", [(self.uid_a, ["k-sym"])])
        self.wait_for_outcome(lambda: self.call("LoadKey", "k-sym", delegated), None,
                              "the principal to be loaded")
        self.assertDenied(self.root, self.uid_a, "other", "LoadKey", "other", delegated)
        # Handle operations with a delegated socket work as without.
        self.assertEqual(self.call("Sign", self.sym, "HMAC-SHA256", b"m", delegated),
                         hmac256(self.key, b"m"))

    def test_delegated_socket_and_polkit_rule_on_the_peer(self):
        peer_a, conn_a = self.peer_as(USER_A)
        peer_b, conn_b = self.peer_as(USER_B)
        self.add_rules(
            'polkit.addRule(function(action, subject) {\n'
            '    if (action.id == "org.aziot.keys.load" && subject.user == "%s" &&\n'
            '        action.lookup("key_id") == "k-sym")\n'
            '        return polkit.Result.YES;\n'
            '});\n' % USER_A)
        handle = self.call("LoadKey", "k-sym", {"client-socket": Fd(conn_a.fileno())})
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.key, b"m"))
        self.assertDenied(self.root, self.uid_a, "other", "LoadKey", "other",
                          {"client-socket": Fd(conn_a.fileno())})
        self.assertDenied(self.root, self.uid_b, "k-sym", "LoadKey", "k-sym",
                          {"client-socket": Fd(conn_b.fileno())})

    def test_unprivileged_user_may_not_delegate(self):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        a = self.client_as(USER_A, pass_fds=[theirs.fileno()])
        b = self.client_as(USER_B, pass_fds=[theirs.fileno()])
        self.state.write_principals("50-a", [(self.uid_a, ["*"]), (self.uid_b, ["*"])])
        self.wait_for_outcome(lambda: a.call("LoadKey", "k-sym", OPTS), None,
                              "the principal to be loaded")
        delegated = {"client-socket": Fd(theirs.fileno())}
        for client, uid in ((a, self.uid_a), (b, self.uid_b)):
            refusal = (NOT_AUTHORIZED, f"user {uid} may not act for another process")
            for method, *args in [("LoadKey", "k-sym"), ("ImportKey", "k-x", b"x" * 32, ["sign"]),
                                  ("Sign", self.sym, "HMAC-SHA256", b"m"),
                                  ("ExportDerivedKey",
                                   self.call("CreateDerivedKey", self.sym, b"d", OPTS))]:
                with self.subTest(uid=uid, method=method):
                    self.assertEqual(outcome_of(lambda: client.call(method, *args, delegated)),
                                     refusal)
        self.assertNotStored("k-x")


class GatewayUserTest(KeydTestCase):
    """AZIOT_GATEWAY_USER names the one user besides root that may delegate."""

    keyd_env = {"AZIOT_GATEWAY_USER": USER_B}

    def test_gateway_user_delegates_for_the_peer(self):
        key = os.urandom(32)
        self.call("ImportKey", "k-sym", key, ["sign"], OPTS)
        peer, conn = self.peer_as(USER_A)
        gateway = self.client_as(USER_B, pass_fds=[conn.fileno()])
        delegated = {"client-socket": Fd(conn.fileno())}
        self.assertEqual(outcome_of(lambda: gateway.call("LoadKey", "k-sym", delegated)),
                         (NOT_AUTHORIZED,
                          f"user {self.uid_a} is not authorized to access the key k-sym"))
        self.state.write_principals("50-a", [(self.uid_a, ["k-sym"])])
        self.wait_for_outcome(lambda: gateway.call("LoadKey", "k-sym", delegated), None,
                              "the principal to be loaded")
        handle = gateway.call("LoadKey", "k-sym", delegated)
        self.assertEqual(gateway.call("Sign", handle, "HMAC-SHA256", b"m", delegated),
                         hmac256(key, b"m"))
        # For itself, the gateway is just another uid.
        self.assertEqual(outcome_of(lambda: gateway.call("LoadKey", "k-sym", OPTS)),
                         (NOT_AUTHORIZED,
                          f"user {self.uid_b} is not authorized to access the key k-sym"))
        # And a is no gateway.
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        a = self.client_as(USER_A, pass_fds=[theirs.fileno()])
        self.assertEqual(outcome_of(lambda: a.call("LoadKey", "k-sym",
                                                   {"client-socket": Fd(theirs.fileno())})),
                         (NOT_AUTHORIZED, f"user {self.uid_a} may not act for another process"))


# ---------------------------------------------------------------------------------------------
# 4. Compatibility with a home written by upstream's rules


class CompatibilityTest(KeydTestCase):
    """A keyd home laid out as upstream lays it out, written here; handles built here by
    upstream's algorithm; [preloaded_keys]. With a base slot the same home must work: the
    filesystem is the second location, and using its keys copies nothing to the token."""

    @classmethod
    def prepare_class(cls):
        cls.pem_dir = os.path.join(cls.run_dir, "pem")
        os.makedirs(cls.pem_dir)
        cls.pems = {}
        for name, options in (("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                                      "-pkeyopt", "ec_param_enc:named_curve"]),
                              ("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                              ("preloaded-ec", ["-algorithm", "EC", "-pkeyopt",
                                                "ec_paramgen_curve:P-256"])):
            path = os.path.join(cls.pem_dir, f"{name}.pem")
            subprocess.run(["openssl", "genpkey", *options, "-out", path], check=True,
                           capture_output=True)
            with open(path, "rb") as f:
                cls.pems[name] = f.read()
            assert cls.pems[name].startswith(b"-----BEGIN PRIVATE KEY-----")

    def prepare_state(self, state):
        self.hvk = os.urandom(32)
        self.sym_key = os.urandom(32)
        self.preloaded_key = os.urandom(32)
        os.makedirs(state.keys_dir, mode=0o700)
        files = {HVK: self.hvk, "device-id": self.sym_key, "compat-ec": self.pems["ec"],
                 "compat-rsa": self.pems["rsa"]}
        for key_id, data in files.items():
            path = os.path.join(state.keys_dir, key_file_name(key_id))
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o600)
        preloaded_dir = os.path.join(state.dir, "secrets")
        os.makedirs(preloaded_dir)
        self.preloaded_paths = {"preloaded-sym": os.path.join(preloaded_dir, "device id.key"),
                                "preloaded-ec": os.path.join(preloaded_dir, "pair.pem")}
        for key_id, data in (("preloaded-sym", self.preloaded_key),
                             ("preloaded-ec", self.pems["preloaded-ec"])):
            with open(self.preloaded_paths[key_id], "wb") as f:
                f.write(data)
        # A space in the path, percent-encoded in the URI.
        sym_uri = "file://" + self.preloaded_paths["preloaded-sym"].replace(" ", "%20")
        state.write_config("[preloaded_keys]\n"
                           f'preloaded-sym = "{sym_uri}"\n'
                           f'preloaded-ec = "file://{self.preloaded_paths["preloaded-ec"]}"\n')
        self.written = {}
        for path in [os.path.join(state.keys_dir, n) for n in os.listdir(state.keys_dir)] + \
                list(self.preloaded_paths.values()):
            with open(path, "rb") as f:
                self.written[path] = f.read()

    def tearDown(self):
        super().tearDown()
        # Using keys never rewrites them.
        for path, data in self.written.items():
            with open(path, "rb") as f:
                self.assertEqual(f.read(), data, path)
        # Nor copies them: the handle-validation-key was the home's, nothing went to the token.
        self.assertEqual(self.token_objects(), [])

    def test_symmetric_key_file_loads_and_works(self):
        handle = self.call("LoadKey", "device-id", OPTS)
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.sym_key, b"m"))
        iv = os.urandom(12)
        self.assertEqual(self.call("Encrypt", handle, "AEAD", b"p", {"iv": iv, "aad": b"a"}),
                         b"\x02" + AESGCM(self.sym_key).encrypt(iv, b"p", b"a"))
        derived = self.call("CreateDerivedKey", handle, b"mod:gen:primary", OPTS)
        self.assertEqual(self.call("ExportDerivedKey", derived, OPTS),
                         hmac256(self.sym_key, b"mod:gen:primary"))
        self.call("CreateKeyIfNotExists", "device-id", ["sign"], OPTS)  # leaves it as it is

    def test_ec_key_file_loads_and_signs(self):
        handle = self.call("LoadKeyPair", "compat-ec", OPTS)
        from_pem = serialization.load_pem_private_key(self.pems["ec"], None).public_key()
        from_parameters = self.ec_public_key(handle)
        self.assertEqual(compressed_point(from_parameters), compressed_point(from_pem))
        self.assertEcdsaVerifies(from_pem, handle)

    def test_rsa_key_file_loads_and_signs(self):
        handle = self.call("LoadKeyPair", "compat-rsa", OPTS)
        from_pem = serialization.load_pem_private_key(self.pems["rsa"], None).public_key()
        self.assertEqual(self.rsa_public_key(handle).public_numbers(), from_pem.public_numbers())
        self.assertRsaSignsPkcs1(from_pem, handle)
        self.assertRsaSignsPss(from_pem, handle)

    def test_handles_built_by_upstreams_algorithm_are_accepted(self):
        key = make_handle(self.hvk, {"Key": "device-id"})
        self.assertEqual(self.call("Sign", key, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.sym_key, b"m"))
        pair = make_handle(self.hvk, {"KeyPair": "compat-ec"})
        from_pem = serialization.load_pem_private_key(self.pems["ec"], None).public_key()
        self.assertEcdsaVerifies(from_pem, pair)
        derived = make_handle(self.hvk, {"Derived": [key, [1, 2, 255]]})
        self.assertEqual(self.call("ExportDerivedKey", derived, OPTS),
                         hmac256(self.sym_key, bytes([1, 2, 255])))
        # Signed with another key, it is just a string.
        for forged in (make_handle(os.urandom(32), {"Key": "device-id"}),
                       make_handle(self.sym_key, {"Key": "device-id"})):
            self.assertFails(INVALID_PARAMETER, INVALID_HANDLE, self.root, "Sign", forged,
                             "HMAC-SHA256", b"m", OPTS)

    def test_handles_minted_by_keyd_verify_with_the_validation_key_file(self):
        for handle, key_id in ((self.call("LoadKey", "device-id", OPTS), {"Key": "device-id"}),
                               (self.call("LoadKeyPair", "compat-ec", OPTS),
                                {"KeyPair": "compat-ec"})):
            sr, sig, _ = handle_parts(handle)
            self.assertEqual(sig, hmac256(self.hvk, sr))
            # serde_json's compact form, fields in declaration order.
            self.assertRegex(sr.decode(), r'^\{"key_id":%s,"nonce":"[A-Za-z0-9+/]{86}=="\}$'
                             % re.escape(json.dumps(key_id, separators=(",", ":"))))

    def test_authentic_handles_keyd_must_still_refuse(self):
        key = make_handle(self.hvk, {"Key": "device-id"})
        nested = make_handle(self.hvk, {"Derived": [make_handle(self.hvk,
                                                                {"Derived": [key, [1]]}), [2]]})
        self.assertFails(INVALID_PARAMETER, NESTED, self.root, "Sign", nested, "HMAC-SHA256",
                         b"m", OPTS)
        self.assertFails(INVALID_PARAMETER, NESTED, self.root, "ExportDerivedKey", nested, OPTS)
        for reserved in (make_handle(self.hvk, {"Key": HVK}),
                         make_handle(self.hvk, {"Derived": [make_handle(self.hvk, {"Key": HVK}),
                                                            [1]]})):
            self.assertFails(INVALID_PARAMETER, RESERVED, self.root, "Sign", reserved,
                             "HMAC-SHA256", b"m", OPTS)
        for malformed in ({"Key": "device-id", "extra": 1}, {"Symmetric": "device-id"},
                          {"Derived": [key, [256]]}, {"Derived": [key]}):
            self.assertFails(INVALID_PARAMETER, INVALID_HANDLE, self.root, "Sign",
                             make_handle(self.hvk, malformed), "HMAC-SHA256", b"m", OPTS)

    def test_preloaded_keys(self):
        handle = self.call("LoadKey", "preloaded-sym", OPTS)
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(self.preloaded_key, b"m"))
        pair = self.call("LoadKeyPair", "preloaded-ec", OPTS)
        from_pem = serialization.load_pem_private_key(self.pems["preloaded-ec"], None)
        self.assertEcdsaVerifies(from_pem.public_key(), pair)
        # Nothing of them in the home (or on the token).
        for key_id in ("preloaded-sym", "preloaded-ec"):
            self.assertNotStored(key_id)


# ---------------------------------------------------------------------------------------------
# 5. Introspection


class IntrospectionTest(KeydTestCase):

    @staticmethod
    def describe(xml_text):
        """{method: ([(arg, type, direction)], {annotation: value})}, properties, signals."""
        interfaces = [i for i in ET.fromstring(xml_text).findall("interface")
                      if i.get("name") == KEYS_IFACE]
        assert len(interfaces) == 1, f"{len(interfaces)} {KEYS_IFACE} interfaces"
        iface = interfaces[0]
        methods = {}
        for m in iface.findall("method"):
            args = [(a.get("name"), a.get("type"), a.get("direction", "in"))
                    for a in m.findall("arg")]
            annotations = {a.get("name"): a.get("value") for a in m.findall("annotation")}
            methods[m.get("name")] = (args, annotations)
        return (methods, sorted(p.get("name") for p in iface.findall("property")),
                sorted(s.get("name") for s in iface.findall("signal")),
                {a.get("name"): a.get("value") for a in iface.findall("annotation")})

    def test_introspection_matches_the_xml(self):
        with open(XML_PATH) as f:
            documented = self.describe(f.read())
        running = self.describe(self.call("org.freedesktop.DBus.Introspectable.Introspect"))
        doc_methods, run_methods = documented[0], running[0]
        self.assertEqual(sorted(run_methods), sorted(doc_methods))
        for name, (args, annotations) in doc_methods.items():
            with self.subTest(method=name):
                self.assertEqual(run_methods[name][0], args)
                # sd-bus exposes only its own annotations; each must be documented.
                for key, value in run_methods[name][1].items():
                    self.assertEqual(annotations.get(key), value, f"annotation {key}")
        self.assertEqual(running[1:3], documented[1:3])
        for key, value in running[3].items():
            self.assertEqual(documented[3].get(key), value, f"interface annotation {key}")


# ---------------------------------------------------------------------------------------------
# 6. Crash safety


class CrashSafetyTest(KeydTestCase):
    """kill -9 in the middle of a burst of imports leaves whole keys or none: files that are
    whole (renamed into place), or token objects that are whole (one per id, as long as a value
    imported), and what keyd logged as imported survives."""

    BURST = 1000
    ROUNDS = 6

    def burst(self, items):
        """Sends ImportKey for every (id, value) without waiting for replies."""
        conn = dbus.bus.BusConnection(self.stack.bus_address)
        for key_id, value in items:
            msg = dbus.lowlevel.MethodCallMessage(KEYS_NAME, KEYS_PATH, KEYS_IFACE, "ImportKey")
            msg.append(key_id, dbus.ByteArray(value), ["sign"],
                       dbus.Dictionary({}, signature="sv"), signature="sayasa{sv}")
            msg.set_no_reply(True)
            conn.send_message(msg)
        conn.flush()
        return conn

    def imports_logged(self):
        return self.keyd.log().count("Imported key crash-")

    def kill_keyd_after(self, imports, baseline):
        """SIGKILL once keyd has logged that many more imports; returns how many it logged."""
        wait_until(lambda: self.imports_logged() - baseline >= imports, 30, f"{imports} imports")
        os.kill(self.keyd.pid, signal.SIGKILL)
        self.keyd.popen.wait(10)
        self.keyd_killed = True
        return self.imports_logged() - baseline

    @staticmethod
    def value_length(i, step):
        """Lengths of imported values, all over 1..8192 bytes; on SoftHSM within 32..512, what its
        CKM_SHA256_HMAC can use (test_imported_key_signs_like_python_hmac covers the rest)."""
        if SECRETS_ON_TOKEN:
            return 32 + (i * step) % 481
        return 1 + (i * step) % 8192

    def logged_imports(self):
        """The ids keyd logged as imported, across its restarts (one log)."""
        return set(re.findall(r"Imported key (crash-[0-9a-z-]+)", self.keyd.log()))

    def check_keys_dir(self, allowed):
        """allowed: {file name: [acceptable contents]}. Every key file is whole; temporary files
        do not look like keys. Returns {file name: content}."""
        found = {}
        for name in os.listdir(self.state.keys_dir):
            path = os.path.join(self.state.keys_dir, name)
            if name.startswith(".#"):
                self.assertIsNone(KEY_FILE_RE.match(name), name)
                continue
            self.assertTrue(name in allowed, f"{name}: a key file nobody imported")
            with open(path, "rb") as f:
                data = f.read()
            self.assertTrue(data in allowed[name], f"{name} is torn ({len(data)} bytes)")
            found[name] = data
        return found

    def check_token(self, allowed, fixed):
        """The token variant of check_keys_dir, for imports that go to the token: nothing in the
        home; on the token the keys fixed ({id: fingerprint}) as they were, and besides them only
        ids of allowed ({id: [acceptable values]}), each object labelled so a whole secret key
        (sensitive, not extractable, as long as one of the id's values). Returns the ids there.

        SoftHSM writes a new object's attributes one after the other: a kill inside
        C_CreateObject can leave an object with no attributes yet, or no CKA_LABEL (keyd sets it
        last). No id reaches such an object; they are counted in self.unreachable."""
        self.assertEqual(self.key_files(), set(), "imports that went to the home")
        found = set()
        unreachable = 0
        for o in self.token_objects():
            if o["label"] in fixed:
                continue
            if not o["label"]:
                self.assertFalse(o["id"], f"an object with an id and no label: {o}")
                unreachable += 1
                continue
            self.assertTrue(o["label"] in allowed, f"{o['label']!r}: a key nobody imported")
            self.assertEqual((o["class"], o["sensitive"], o["extractable"]),
                             ("secret", True, False), o["label"])
            self.assertTrue(o["value_len"] in {len(v) for v in allowed[o["label"]]},
                            f"{o['label']} is torn ({o['value_len']} bytes)")
            found.add(o["label"])
        self.unreachable = max(self.unreachable, unreachable)
        for key_id, fingerprint in fixed.items():
            self.assertEqual(self.fingerprint(key_id), fingerprint, key_id)
        return found

    def assertKeysUsableAfterRestart(self, ids_and_values, absent=()):
        """Restarts keyd: every key of ids_and_values [(id, [acceptable values])] signs as one of
        its values; the ids absent do not exist."""
        self.keyd = self.start_keyd(self.state)
        self.keyd_killed = False
        for key_id, values in ids_and_values:
            handle = self.call("LoadKey", key_id, OPTS)
            self.assertTrue(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS) in
                            [hmac256(v, b"m") for v in values],
                            f"{key_id} signs with none of its values")
        for key_id in absent:
            self.assertFails(NOT_FOUND, f"key {key_id} does not exist", self.root, "LoadKey",
                             key_id, OPTS)

    def setUp(self):
        super().setUp()
        self.unreachable = 0

    def tearDown(self):
        if self.unreachable:
            sys.stderr.write(f"\n{self.unreachable} torn, unlabelled objects on the token "
                             "(killed inside C_CreateObject) ")
        super().tearDown()

    def test_kill_during_imports_of_different_ids(self):
        self.call("CreateKeyIfNotExists", "warm-up", ["sign"], OPTS)
        on_token = location_of(IMPORTED) == "token"
        if on_token:
            fixed = {HVK: self.fingerprint(HVK), "warm-up": self.fingerprint("warm-up")}
        else:
            allowed = {key_file_name(HVK): [self.read_key(HVK)],
                       key_file_name("warm-up"): [self.read_key("warm-up")]}
        imported = {}
        for round in range(self.ROUNDS):
            items = [(f"crash-{round}-{i}", os.urandom(self.value_length(i, 37)))
                     for i in range(self.BURST)]
            baseline = self.imports_logged()
            conn = self.burst(items)
            done = self.kill_keyd_after(20, baseline)
            conn.close()
            self.assertLess(done, self.BURST, "keyd finished before it could be killed")
            imported.update(items)
            if on_token:
                there = self.check_token({k: [v] for k, v in imported.items()}, fixed)
            else:
                allowed.update({key_file_name(k): [v] for k, v in items})
                found = self.check_keys_dir(allowed)
                there = {k for k in imported if key_file_name(k) in found}
            # What keyd said it imported survived its death.
            self.assertLessEqual(self.logged_imports(), there)
            self.assertGreaterEqual(len(there), 20 * (round + 1))
            absent = [k for k, _ in items if k not in there][:10]
            self.assertKeysUsableAfterRestart([(k, [imported[k]]) for k in sorted(there)],
                                              absent)

    def test_kill_during_imports_to_one_id(self):
        self.call("CreateKeyIfNotExists", "warm-up", ["sign"], OPTS)
        on_token = location_of(IMPORTED) == "token"
        if on_token:
            fixed = {HVK: self.fingerprint(HVK), "warm-up": self.fingerprint("warm-up")}
        else:
            allowed = {key_file_name(HVK): [self.read_key(HVK)],
                       key_file_name("warm-up"): [self.read_key("warm-up")],
                       key_file_name("crash-one"): []}
        values_so_far = []
        for round in range(self.ROUNDS):
            values = [os.urandom(self.value_length(i, 53)) for i in range(self.BURST)]
            baseline = self.imports_logged()
            conn = self.burst([("crash-one", v) for v in values])
            done = self.kill_keyd_after(20, baseline)
            conn.close()
            self.assertLess(done, self.BURST, "keyd finished before it could be killed")
            values_so_far += values
            # The key was imported before the kill: it is there, one of its values, whole.
            if on_token:
                there = self.check_token({"crash-one": values_so_far}, fixed)
                self.assertIn("crash-one", there,
                              f"round {round}: crash-one, imported {done} times before the kill, "
                              "is gone from the token")
                self.assertKeysUsableAfterRestart([("crash-one", values_so_far)])
            else:
                allowed[key_file_name("crash-one")] += values
                found = self.check_keys_dir(allowed)
                self.assertIn(key_file_name("crash-one"), found)
                self.assertKeysUsableAfterRestart(
                    [("crash-one", [found[key_file_name("crash-one")]])])


# ---------------------------------------------------------------------------------------------
# 7. Activation and idle exit


class PrivateConnection:
    """A private connection to keyd (OpenPrivateConnection), spoken with GDBus: dbus-python cannot
    take a connection from a file descriptor."""

    def __init__(self, fd):
        from gi.repository import Gio, GLib
        self.Gio, self.GLib = Gio, GLib
        sock = Gio.Socket.new_from_fd(fd)
        stream = sock.connection_factory_create_connection()
        self.conn = Gio.DBusConnection.new_sync(
            stream, None, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT, None, None)

    def call(self, method, signature, args, fds=()):
        Gio, GLib = self.Gio, self.GLib
        fd_list = Gio.UnixFDList.new()
        for fd in fds:
            fd_list.append(fd)
        try:
            result, _ = self.conn.call_with_unix_fd_list_sync(
                None, KEYS_PATH, KEYS_NAME, method, GLib.Variant(f"({signature})", args), None,
                Gio.DBusCallFlags.NONE, CALL_TIMEOUT * 1000, fd_list, None)
        except GLib.Error as e:
            name = Gio.DBusError.get_remote_error(e)
            prefix = f"GDBus.Error:{name}: "
            message = e.message[len(prefix):] if e.message.startswith(prefix) else e.message
            raise CallError(name, message)
        return result.unpack()

    def close(self):
        if not self.conn.is_closed():
            try:
                self.conn.close_sync(None)
            except self.GLib.Error:
                pass  # keyd closed it first


class PrivateConnectionTest(KeydTestCase):
    """OpenPrivateConnection: the gateway's way around dbus-daemon."""

    keyd_scope = None

    def open_private(self):
        handle_fd = self.stack.bus().call_blocking(
            KEYS_NAME, KEYS_PATH, KEYS_NAME, "OpenPrivateConnection", "a{sv}", (OPTS,))
        connection = PrivateConnection(handle_fd.take())
        self.addCleanup(connection.close)
        return connection

    def test_first_call_sent_with_the_end_of_authentication_is_answered(self):
        """A client may send its first message in the same write as BEGIN (sd-bus and GDBus
        clients do so under load): keyd must answer it without waiting for more bytes."""
        from gi.repository import Gio, GLib
        self.start_keyd(self.state)
        handle_fd = self.stack.bus().call_blocking(
            KEYS_NAME, KEYS_PATH, KEYS_NAME, "OpenPrivateConnection", "a{sv}", (OPTS,))
        sock = socket.socket(fileno=handle_fd.take())
        self.addCleanup(sock.close)
        sock.settimeout(CALL_TIMEOUT)
        sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            answer += sock.recv(256)
        self.assertTrue(answer.startswith(b"OK "), answer)
        ping = Gio.DBusMessage.new_method_call(None, KEYS_PATH, "org.freedesktop.DBus.Peer",
                                               "Ping")
        ping.set_serial(1)
        sock.sendall(b"BEGIN\r\n" + ping.to_blob(Gio.DBusCapabilityFlags.NONE))
        data = sock.recv(4096)  # times out (CALL_TIMEOUT) if keyd sits on the call
        self.assertGreater(len(data), 16)
        reply = Gio.DBusMessage.new_from_blob(data, Gio.DBusCapabilityFlags.NONE)
        self.assertEqual(reply.get_message_type(), Gio.DBusMessageType.METHOD_RETURN)
        self.assertEqual(reply.get_reply_serial(), 1)
        del GLib

    def test_calls_on_a_private_connection(self):
        self.start_keyd(self.state)
        private = self.open_private()
        key = os.urandom(32)
        (handle,) = private.call("ImportKey", "sayasa{sv}", ("p-sym", key, ["sign"], {}))
        (sig,) = private.call("Sign", "ssaya{sv}", (handle, "HMAC-SHA256", b"m", {}))
        self.assertEqual(bytes(sig), hmac256(key, b"m"))
        # The same key, seen through the bus.
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"n", OPTS), hmac256(key, b"n"))
        # Errors keep their names on the private connection.
        with self.assertRaises(CallError) as e:
            private.call("Sign", "ssaya{sv}", ("garbage", "HMAC-SHA256", b"m", {}))
        self.assertEqual((e.exception.name, e.exception.message), (INVALID_PARAMETER,
                                                                   INVALID_HANDLE))
        with self.assertRaises(CallError) as e:
            private.call("LoadKey", "sa{sv}", (HVK, {}))
        self.assertEqual(e.exception.name, NOT_AUTHORIZED)
        # Not again from a private connection.
        with self.assertRaises(CallError) as e:
            private.call("OpenPrivateConnection", "a{sv}", ({},))
        self.assertEqual(e.exception.name, "org.freedesktop.DBus.Error.NotSupported")

    def test_only_root_and_the_gateway_user_may_open_one(self):
        self.start_keyd(self.state)
        a = self.client_as(USER_A)
        self.assertEqual(outcome_of(lambda: a.call("OpenPrivateConnection", OPTS)),
                         (NOT_AUTHORIZED,
                          f"user {self.uid_a} may not open a private connection"))

    def test_delegated_socket_on_a_private_connection(self):
        self.start_keyd(self.state)
        self.call("ImportKey", "k-sym", os.urandom(32), ["sign"], OPTS)
        private = self.open_private()
        peer, conn = self.peer_as(USER_A)
        args = ("k-sym", {"client-socket": self.GLib_handle(0)})
        with self.assertRaises(CallError) as e:
            private.call("LoadKey", "sa{sv}", args, fds=[conn.fileno()])
        self.assertEqual((e.exception.name, e.exception.message),
                         (NOT_AUTHORIZED, f"user {self.uid_a} is not authorized to access the "
                                          "key k-sym"))
        self.add_rules(
            'polkit.addRule(function(action, subject) {\n'
            '    if (action.id == "org.aziot.keys.load" && subject.user == "%s" &&\n'
            '        subject.pid == %d && action.lookup("key_id") == "k-sym")\n'
            '        return polkit.Result.YES;\n'
            '});\n' % (USER_A, peer.pid))
        (handle,) = private.call("LoadKey", "sa{sv}", args, fds=[conn.fileno()])
        self.assertTrue(handle.startswith("sr="))
        # Without the socket the opener (root) is the caller.
        (handle,) = private.call("LoadKey", "sa{sv}", ("k-sym", {}))
        self.assertTrue(handle.startswith("sr="))

    def GLib_handle(self, index):
        from gi.repository import GLib
        return GLib.Variant("h", index)

    def test_keyd_stays_while_a_private_connection_is_open(self):
        self.stack.write_service_file(KEYS_NAME, [KEYD, "--idle-timeout=1"],
                                      env=self.state.env())
        private = self.open_private()
        pid = int(self.stack.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionUnixProcessID", "s", (KEYS_NAME,)))
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            self.assertTrue(os.path.exists(f"/proc/{pid}"))
            time.sleep(0.1)
        self.assertTrue(self.stack.name_has_owner(KEYS_NAME))
        private.close()
        self.stack.wait_for_name_gone(KEYS_NAME, timeout=10)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, "keyd to exit")


class ActivationTest(KeydTestCase):

    keyd_scope = None

    def owner_pid(self):
        return int(self.stack.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionUnixProcessID", "s", (KEYS_NAME,)))

    def tearDown(self):
        if self.stack.name_has_owner(KEYS_NAME):
            pid = self.owner_pid()
            os.kill(pid, signal.SIGTERM)
            self.stack.wait_for_name_gone(KEYS_NAME)
        super().tearDown()

    def test_activation_idle_exit_and_reactivation(self):
        self.stack.write_service_file(KEYS_NAME, [KEYD, "--idle-timeout=1"],
                                      env=self.state.env())
        self.assertFalse(self.stack.name_has_owner(KEYS_NAME))
        key = os.urandom(32)
        start = time.monotonic()
        handle = self.call("ImportKey", "activated", key, ["sign"], OPTS)
        cold = time.monotonic() - start
        sys.stderr.write(f"\ncold activation of aziot-keyd to its first reply: "
                         f"{cold * 1000:.1f} ms\n")
        first_pid = self.owner_pid()

        # Calls that keep coming keep it, past its idle time.
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                             hmac256(key, b"m"))
        self.assertEqual(self.owner_pid(), first_pid)
        last_reply = time.monotonic()

        # Then it leaves after about a second.
        self.stack.wait_for_name_gone(KEYS_NAME, timeout=10)
        idle = time.monotonic() - last_reply
        self.assertGreaterEqual(idle, 0.9)
        self.assertLess(idle, 4)
        wait_until(lambda: not os.path.exists(f"/proc/{first_pid}"), 10, "keyd to exit")

        # The next call starts it again, with its state.
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(key, b"m"))
        self.assertNotEqual(self.owner_pid(), first_pid)
        log = aziot_harness._read_text(os.path.join(self.run_dir, "logs",
                                                    f"{KEYS_NAME}.log"))
        self.assertEqual(log.count("Serving org.aziot.Keys1."), 2)
        self.assertIn("releasing org.aziot.Keys1 and exiting", log)


# The key-pair subset that runs on tpm2 (see the module docstring): every test about key pairs,
# and those of bad input and authorization that create, load, move, delete or use key pairs.
TPM2_SUBSET = [
    "KeyPairTest",
    "SymmetricKeyTest.test_each_key_is_stored_where_the_backend_puts_it",  # the subset's reason
    "BadInputTest.test_forged_and_malformed_handles_are_invalid",
    "BadInputTest.test_handles_of_the_wrong_kind",
    "BadInputTest.test_rsa_no_padding_needs_a_block_as_long_as_the_modulus",
    "BadInputTest.test_derived_key_over_a_key_pair_cannot_be_used",
    "BadInputTest.test_unknown_algorithms",
    "BadInputTest.test_public_parameters",
    "BadInputTest.test_missing_keys",
    "BadInputTest.test_move_to_the_same_id",
    "BadInputTest.test_ids_cannot_escape_the_home",
    "AuthorizationTest.test_group_member_without_principal_is_not_authorized",
    "AuthorizationTest.test_principal_globs_allow_and_are_reloaded",
    "AuthorizationTest.test_polkit_rule_for_manage_sees_both_ids_of_a_move",
    "AuthorizationTest.test_handle_validation_key_is_out_of_reach",
    "AuthorizationTest.test_handles_are_bearer_tokens",
]

if __name__ == "__main__":
    sys.stderr.write(f"key store backend: {BACKEND}\n")
    result = unittest.main(verbosity=2, exit=False,
                           defaultTest=TPM2_SUBSET if BACKEND.name == "tpm2" else None).result
    sys.exit(0 if result.wasSuccessful() else 1)
