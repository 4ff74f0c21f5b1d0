#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-keyd with PKCS#11 tokens: the real daemon on a private system bus with the real polkitd
(the fixture of test_keys.py), its key store configured as upstream's (pkcs11_lib_path,
pkcs11_base_slot, [preloaded_keys]) over real SoftHSM2 tokens and a tpm2-pkcs11 token on swtpm
(tests/lib/aziot_tokens.py).

What is checked, each against the token itself (pkcs11-tool, a ctypes PKCS#11 client in its own
process) or openssl, never against keyd:
  1. keys keyd generates on a token are sensitive and never extractable, and nothing of them is
     written to keyd's home;
  2. preloaded token keys (made beforehand with pkcs11-tool, named by token label or slot-id)
     sign what openssl verifies, and their public parameters are the token's public key;
  3. a broken PKCS#11 configuration (wrong PIN, missing token or slot, missing library, a library
     that is not PKCS#11) leaves the filesystem keys working, says what is wrong in the log, never
     the PIN, tries a rejected PIN once only, and does not create new keys on the filesystem
     instead; a bad URI (base slot or preloaded key) stops keyd;
  4. a token that goes away and comes back while keyd runs (a SoftHSM2 token directory moved away
     and back; tpm2-abrmd stopped and started again under a tpm2-pkcs11 token): errors while it
     is away, filesystem keys keep working, the same handles work again once it is back, and no
     key is duplicated or regenerated;
  5. where a key id is looked up: its preloaded location only, else the base slot's token, then
     the filesystem; new keys go to the token.

Every PIN is random, so that finding it in a log or a D-Bus error means it leaked.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_KEYD.
"""

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keys import (  # noqa: E402
    FAILED, HVK, KEYD, KEYS_NAME, NOT_FOUND, OPTS, SOURCE_DIR,
    SHA256_DIGEST_INFO, CallError, KeydTestCase, compressed_point, hmac256, key_file_name)

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import aziot_tokens  # noqa: E402
from aziot_tokens import SoftHsmToken, Tpm2Pkcs11Token, pct  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

EXIT_TIMEOUT = 10
NOT_PKCS11_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1",
                         "/usr/lib/aarch64-linux-gnu/libz.so.1")
PAYLOAD = b"the message keyd signs"


def toml_string(s):
    return json.dumps(s)  # a TOML basic string (the tests' values are ASCII)


def log_lines(log, level, text):
    """The lines of a keyd log at level ("ERR!", "WARN", "INFO", "DBUG") that contain text."""
    return [line for line in log.splitlines() if f"[{level}] aziot-keyd: " in line and text in line]


def not_a_pkcs11_library():
    """A real shared object without C_GetFunctionList: libz, else the libc this interpreter
    runs on."""
    for path in NOT_PKCS11_CANDIDATES:
        if os.path.exists(path):
            return path
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if os.path.basename(path).startswith(("libz.so", "libc.so")):
                return path
    raise AssertionError("no libz or libc found")


def new_pin():
    """A PIN that cannot appear in a log by chance (ASCII alphanumeric: the same in a URI)."""
    return "Pin" + secrets.token_hex(8)


class Pkcs11TestCase(KeydTestCase):
    """One token (self.token: SoftHSM2 with label "aziot" unless make_token() says otherwise; PIN
    self.pin) and a fresh keyd home per test; the test starts keyd with start() as often as it
    needs, each run with its own log."""

    keyd_scope = None

    def setUp(self):
        super().setUp()
        self.pin = new_pin()
        self.secrets = [self.pin]  # what must never reach a log or a D-Bus error
        self.token = self.make_token(os.path.join(self.state.dir, "token"))
        self.addCleanup(self.token.close)  # after tearDown, which stops keyd
        self.keyd = None
        self.keyd_name = None
        self.runs = 0
        self.tmp = tempfile.mkdtemp(prefix="verify-", dir=self.state.dir)

    def make_token(self, directory):
        return SoftHsmToken(directory, pin=self.pin)

    def tearDown(self):
        try:
            if self.keyd_name is not None:
                alive = self.keyd.alive()
                status = self.stack.stop_process(self.keyd_name)
                self.assertTrue(alive, f"keyd died:\n{self.keyd.log()}")
                self.assertEqual(status, 0, "keyd did not exit cleanly on SIGTERM")
                self.keyd_name = None
        finally:
            super().tearDown()

    # -- configuration and keyd runs ----------------------------------------------------------

    def config(self, lib=None, slot=None, preloaded=None, extra=""):
        """The [aziot_keys] entries after homedir_path, then [preloaded_keys]."""
        text = ""
        if lib is not None:
            text += f"pkcs11_lib_path = {toml_string(lib)}\n"
        if slot is not None:
            text += f"pkcs11_base_slot = {toml_string(slot)}\n"
        text += extra
        if preloaded:
            text += "\n[preloaded_keys]\n"
            text += "".join(f"{key_id} = {toml_string(uri)}\n" for key_id, uri in preloaded.items())
        return text

    def base_slot_config(self, **kwargs):
        return self.config(lib=self.token.module, slot=self.token.uri(), **kwargs)

    def keyd_env(self):
        return {**self.state.env(), **self.token.env}

    def start(self, config=""):
        """(Re)starts keyd with this configuration; returns once it serves its name."""
        self.stop()
        self.state.write_config(config)
        self.keyd_name = f"keyd-{self._testMethodName}-{self.runs}"
        self.runs += 1
        self.keyd = self.stack.start_process(self.keyd_name, [KEYD, "--idle-timeout=0"],
                                             env=self.keyd_env(), wait_bus_name=KEYS_NAME)
        return self.keyd

    def stop(self):
        if self.keyd_name is None:
            return
        log = self.keyd.log()
        status = self.stack.stop_process(self.keyd_name)
        self.keyd_name = None
        self.assertEqual(status, 0, f"keyd did not exit cleanly on SIGTERM:\n{log}")
        self.assertNoSecret(log, "keyd's log")
        self.stack.wait_for_name_gone(KEYS_NAME)

    # -- assertions ---------------------------------------------------------------------------

    def assertNoSecret(self, text, where):
        for secret in self.secrets:
            self.assertNotIn(secret, text, f"a PIN appears in {where}:\n{text}")

    def assertLogged(self, log, level, text):
        self.assertTrue(log_lines(log, level, text), f"keyd did not log [{level}] {text}:\n{log}")

    def assertCallFails(self, name, method, *args):
        """The call fails with the D-Bus error name (None: any keyd error); returns the error."""
        with self.assertRaises(CallError, msg=f"{method}{args!r} succeeded") as cm:
            self.call(method, *args)
        if name is not None:
            self.assertEqual(cm.exception.name, name, f"{method}: {cm.exception}")
        self.assertTrue(cm.exception.name.startswith("org.aziot.Keys1.Error."), cm.exception)
        self.assertNoSecret(cm.exception.message, f"the error of {method}")
        return cm.exception

    def assertServing(self):
        """keyd runs, owns its name and answers."""
        self.assertTrue(self.keyd.alive(), f"keyd died:\n{self.keyd.log()}")
        owner = self.stack.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionUnixProcessID", "s", (KEYS_NAME,))
        self.assertEqual(owner, self.keyd.pid, "org.aziot.Keys1 is owned by another process")
        self.call("org.freedesktop.DBus.Peer.Ping")

    def key_files(self):
        """The files in keyd's keys directory (none when it does not exist)."""
        try:
            return sorted(os.listdir(self.state.keys_dir))
        except FileNotFoundError:
            return []

    def assertNotOnFilesystem(self, *key_ids):
        for key_id in key_ids:
            self.assertFalse(os.path.exists(self.state.key_path(key_id)),
                             f"key {key_id} was written to keyd's home: {self.key_files()}")

    def labels(self, cls=None):
        """Labels of the token's objects, one entry per object (of class cls)."""
        return sorted(o["label"] for o in self.token.object_info()
                      if o["label"] is not None and (cls is None or o["class"] == cls))

    def openssl_verifies(self, public_pem, message, signature):
        """openssl dgst -sha256 -verify: True when openssl accepts the signature of message."""
        paths = {}
        for name, data in (("pub.pem", public_pem.encode()), ("msg", message),
                           ("sig", signature)):
            paths[name] = os.path.join(self.tmp, name)
            with open(paths[name], "wb") as f:
                f.write(data)
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", paths["pub.pem"],
                            "-signature", paths["sig"], paths["msg"]],
                           capture_output=True, text=True)
        ok = r.returncode == 0 and "Verified OK" in r.stdout
        if not ok and r.returncode == 0:
            self.fail(f"openssl exited 0 without verifying: {r.stdout} {r.stderr}")
        return ok

    def assertEcdsaOpensslVerifies(self, public_pem, handle):
        for message in (PAYLOAD, b"", os.urandom(2000)):
            sig = self.call("Sign", handle, "ECDSA", hashlib.sha256(message).digest(), OPTS)
            self.assertEqual(sig[0], 0x30, "not a DER ECDSA-Sig-Value")
            self.assertTrue(self.openssl_verifies(public_pem, message, sig),
                            f"openssl rejects keyd's ECDSA signature {sig.hex()}")
            self.assertFalse(self.openssl_verifies(public_pem, message + b"!", sig))

    def assertRsaOpensslVerifies(self, public_pem, handle, modulus_len=256):
        for message in (PAYLOAD, b"", os.urandom(2000)):
            digest_info = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
            sig = self.call("Encrypt", handle, "RSA-PKCS1", digest_info, OPTS)
            self.assertEqual(len(sig), modulus_len)
            self.assertTrue(self.openssl_verifies(public_pem, message, sig),
                            f"openssl rejects keyd's RSA signature {sig.hex()}")
            self.assertFalse(self.openssl_verifies(public_pem, message + b"!", sig))

    def assertPublicParametersMatch(self, handle, public_pem):
        """GetKeyPairPublicParameter gives the public key that the token (or file) holds."""
        expected = serialization.load_pem_public_key(public_pem.encode())
        if isinstance(expected, ec.EllipticCurvePublicKey):
            self.assertIsInstance(expected.curve, ec.SECP256R1)
            self.assertEqual(compressed_point(self.ec_public_key(handle)),
                             compressed_point(expected))
        else:
            self.assertIsInstance(expected, rsa.RSAPublicKey)
            self.assertEqual(self.rsa_public_key(handle).public_numbers(),
                             expected.public_numbers())

    def assertTokenHmac(self, label, data, mac):
        """mac is what the token's own secret key labelled so makes of data (CKM_SHA256_HMAC in
        a PKCS#11 client of ours): keyd's HMAC came from that key."""
        (res,) = self.token.probe([{"op": "sign", "label": label, "class": "secret",
                                    "mechanism": "SHA256-HMAC", "data": data}])
        self.assertEqual(res.get("rv"), "CKR_OK", f"the token cannot HMAC with {label}: {res}")
        self.assertEqual(mac, res["sig"], f"keyd's HMAC is not that of the token's key {label}")


# ---------------------------------------------------------------------------------------------
# 1. Keys generated on a token never leave it


class NotExtractableTest(Pkcs11TestCase):

    def test_generated_keys_are_sensitive_and_never_extractable(self):
        self.start(self.base_slot_config())
        ec_handle = self.call("CreateKeyPairIfNotExists", "dev-ec", ["ec-p256"], OPTS)
        rsa_handle = self.call("CreateKeyPairIfNotExists", "dev-rsa", ["rsa-2048"], OPTS)
        hmac_handle = self.call("CreateKeyIfNotExists", "dev-hmac", ["sign"], OPTS)

        # They work, and they are the token's keys.
        self.assertEcdsaOpensslVerifies(self.token.public_key_pem("dev-ec"), ec_handle)
        self.assertRsaOpensslVerifies(self.token.public_key_pem("dev-rsa"), rsa_handle)
        self.assertTokenHmac("dev-hmac", PAYLOAD,
                             self.call("Sign", hmac_handle, "HMAC-SHA256", PAYLOAD, OPTS))

        info = {(o["class"], o["label"]): o for o in self.token.object_info()}
        for cls, label in (("privkey", "dev-ec"), ("privkey", "dev-rsa"), ("secrkey", "dev-hmac"),
                           ("secrkey", HVK)):
            self.assertIn((cls, label), info, f"no {cls} {label} on the token: {sorted(info)}")
            access = info[(cls, label)]["access"]
            self.assertLessEqual({"sensitive", "always sensitive", "never extractable"}, access,
                                 f"{label}: {access}")
            self.assertNotIn("extractable", access, label)
            self.assertEqual(self.token.key_access(label), access)

        # Straight from the token's attributes (a PKCS#11 client of our own).
        checks = [
            ({"op": "attr", "label": "dev-ec", "class": "private"},
             ["CKA_VALUE"]),
            ({"op": "attr", "label": "dev-rsa", "class": "private"},
             ["CKA_PRIVATE_EXPONENT", "CKA_PRIME_1"]),
            ({"op": "attr", "label": "dev-hmac", "class": "secret"}, ["CKA_VALUE"]),
            ({"op": "attr", "label": HVK, "class": "secret"}, ["CKA_VALUE"]),
        ]
        flags = ["CKA_TOKEN", "CKA_PRIVATE", "CKA_SENSITIVE", "CKA_EXTRACTABLE",
                 "CKA_ALWAYS_SENSITIVE", "CKA_NEVER_EXTRACTABLE"]
        results = self.token.probe([dict(op, attrs=secret_attrs + flags)
                                    for op, secret_attrs in checks])
        for (op, secret_attrs), res in zip(checks, results):
            for attr in secret_attrs:
                self.assertEqual(res[attr]["rv"], "CKR_ATTRIBUTE_SENSITIVE",
                                 f"{op['label']} {attr}: {res[attr]}")
                self.assertNotIn("hex", res[attr], f"{op['label']} {attr} was readable")
            expected = {"CKA_TOKEN": "01", "CKA_PRIVATE": "01", "CKA_SENSITIVE": "01",
                        "CKA_EXTRACTABLE": "00", "CKA_ALWAYS_SENSITIVE": "01",
                        "CKA_NEVER_EXTRACTABLE": "01"}
            self.assertEqual({a: res[a].get("hex") for a in flags}, expected, op["label"])

        # pkcs11-tool cannot read them out either.
        for label in ("dev-ec", "dev-rsa", "dev-hmac", HVK):
            r = self.token.read_private(label)
            self.assertNotEqual(r.returncode, 0, f"{label}: {r.stdout} {r.stderr}")
            self.assertEqual(r.key, b"", f"{label}: key bytes came out of the token")

        # Nothing of them in keyd's home: not the keys, not the handle-validation-key.
        self.assertEqual(self.key_files(), [])
        # Each exactly once on the token (a pair: private and public object).
        self.assertEqual(self.labels(), sorted(["dev-ec", "dev-ec", "dev-rsa", "dev-rsa",
                                                "dev-hmac", HVK]))


# ---------------------------------------------------------------------------------------------
# 2. Keys preloaded on a token


class PreloadedTokenKeyTest(Pkcs11TestCase):

    def setUp(self):
        super().setUp()
        self.token.keypairgen("ec-object", "EC:prime256v1")
        self.token.keypairgen("rsa-object", "rsa:2048")
        self.token.keypairgen("dev-plain", "EC:prime256v1")
        self.pems = {label: self.token.public_key_pem(label)
                     for label in ("ec-object", "rsa-object", "dev-plain")}
        self.before = self.labels()

    def check_preloaded(self, preloaded):
        self.start(self.config(lib=self.token.module, preloaded=preloaded))
        for key_id, label in (("dev-ec", "ec-object"), ("dev-rsa", "rsa-object")):
            with self.subTest(key_id=key_id, uri=preloaded[key_id]):
                handle = self.call("LoadKeyPair", key_id, OPTS)
                self.assertPublicParametersMatch(handle, self.pems[label])
                if key_id == "dev-ec":
                    self.assertEcdsaOpensslVerifies(self.pems[label], handle)
                else:
                    self.assertRsaOpensslVerifies(self.pems[label], handle)
                # CreateKeyPairIfNotExists finds it: the same key, nothing new anywhere.
                again = self.call("CreateKeyPairIfNotExists", key_id, ["rsa-2048", "ec-p256"],
                                  OPTS)
                self.assertPublicParametersMatch(again, self.pems[label])
        self.assertNotOnFilesystem("dev-ec", "dev-rsa")
        self.assertEqual(self.labels(), self.before)

    def test_by_token_label(self):
        self.check_preloaded({"dev-ec": self.token.uri("ec-object"),
                              "dev-rsa": self.token.uri("rsa-object")})

    def test_by_slot_id(self):
        uri = self.token.uri("ec-object", slot_id=True)
        self.assertRegex(uri, r"^pkcs11:slot-id=\d+;object=ec%2Dobject\?pin-value=")
        self.check_preloaded({"dev-ec": uri,
                              "dev-rsa": self.token.uri("rsa-object", slot_id=True)})

    def test_object_defaults_to_the_key_id(self):
        self.start(self.config(lib=self.token.module, preloaded={"dev-plain": self.token.uri()}))
        handle = self.call("LoadKeyPair", "dev-plain", OPTS)
        self.assertPublicParametersMatch(handle, self.pems["dev-plain"])
        self.assertEcdsaOpensslVerifies(self.pems["dev-plain"], handle)

    def test_preloaded_id_is_only_there(self):
        # A preloaded id is looked up at its URI only: an object missing there is missing, even
        # when a key file of that id exists in keyd's home.
        self.start()
        self.call("CreateKeyPairIfNotExists", "dev-gone", ["ec-p256"], OPTS)
        self.assertTrue(os.path.exists(self.state.key_path("dev-gone")))
        self.start(self.config(lib=self.token.module,
                               preloaded={"dev-gone": self.token.uri("no-such-object")}))
        self.assertCallFails(NOT_FOUND, "LoadKeyPair", "dev-gone", OPTS)
        self.assertServing()


# ---------------------------------------------------------------------------------------------
# 3. Broken PKCS#11 configurations


class BrokenConfigurationTest(Pkcs11TestCase):
    """keyd first runs with the filesystem only and makes an HMAC key (and with it the
    handle-validation-key, in the file store); then it runs with a broken PKCS#11
    configuration."""

    def setUp(self):
        super().setUp()
        self.start()
        self.handle = self.call("CreateKeyIfNotExists", "fs-key", ["sign"], OPTS)
        self.mac = self.call("Sign", self.handle, "HMAC-SHA256", PAYLOAD, OPTS)
        self.assertEqual(self.mac, hmac256(self.state.read_key("fs-key"), PAYLOAD))
        self.files = self.key_files()
        self.assertEqual(self.files, sorted([key_file_name("fs-key"), key_file_name(HVK)]))
        self.token_before = self.labels()

    def check_broken(self, config, messages):
        """keyd starts with config, logs messages (level, text), keeps serving the filesystem
        keys, and makes no new key anywhere."""
        self.start(config)
        # The old handle still verifies and signs the same; the key loads again.
        self.assertEqual(self.call("Sign", self.handle, "HMAC-SHA256", PAYLOAD, OPTS), self.mac)
        loaded = self.call("LoadKey", "fs-key", OPTS)
        self.assertEqual(self.call("Sign", loaded, "HMAC-SHA256", PAYLOAD, OPTS), self.mac)

        # A new key pair cannot be created where the configuration says, and is not created on
        # the filesystem instead.
        for _ in range(2):
            self.assertCallFails(FAILED, "CreateKeyPairIfNotExists", "new-pair", ["ec-p256"],
                                 OPTS)
        # Nor a new symmetric key: the filesystem is the fallback for a token that cannot
        # make HMAC keys, not for one that does not work.
        self.assertCallFails(FAILED, "CreateKeyIfNotExists", "new-key", ["sign"], OPTS)
        self.assertNotOnFilesystem("new-pair", "new-key")
        self.assertEqual(self.key_files(), self.files)
        self.assertEqual(self.labels(), self.token_before)

        self.assertServing()
        self.assertEqual(self.call("Sign", self.handle, "HMAC-SHA256", b"again", OPTS),
                         hmac256(self.state.read_key("fs-key"), b"again"))
        log = self.keyd.log()
        for level, text in messages:
            self.assertLogged(log, level, text)
        self.assertNoSecret(log, "keyd's log")
        return log

    def test_wrong_pin(self):
        wrong = new_pin()
        self.secrets.append(wrong)
        slot = f"pkcs11:token={pct(self.token.label)}?pin-value={wrong}"
        log = self.check_broken(self.config(lib=self.token.module, slot=slot), [
            ("ERR!", "Cannot log in to PKCS#11 token pkcs11:token=aziot: CKR_PIN_INCORRECT"),
            ("ERR!", "PKCS#11 base slot pkcs11:token=aziot is not usable"),
            ("ERR!", "PKCS#11 token pkcs11:token=aziot: the configured PIN was rejected; "
                     "not trying it again."),
        ])
        # One C_Login with the wrong PIN (at start-up), however many operations followed.
        self.assertEqual(len(log_lines(log, "ERR!", "Cannot log in to PKCS#11 token")), 1, log)
        self.assertGreaterEqual(len(log_lines(log, "ERR!", "not trying it again")), 2, log)
        # The token still takes the right PIN.
        self.assertEqual(self.labels(), self.token_before)

    def test_token_that_does_not_exist(self):
        slot = f"pkcs11:token=no-such-token?pin-value={self.pin}"
        self.check_broken(self.config(lib=self.token.module, slot=slot), [
            ("ERR!", "No PKCS#11 token matches pkcs11:token=no%2Dsuch%2Dtoken."),
            ("ERR!", "PKCS#11 base slot pkcs11:token=no%2Dsuch%2Dtoken is not usable"),
        ])

    def test_slot_id_that_does_not_exist(self):
        slot = f"pkcs11:slot-id=4242?pin-value={self.pin}"
        self.check_broken(self.config(lib=self.token.module, slot=slot), [
            ("ERR!", "No usable token in PKCS#11 slot pkcs11:slot-id=4242: CKR_SLOT_ID_INVALID"),
        ])

    def test_library_that_does_not_exist(self):
        lib = os.path.join(self.state.dir, "no-such-pkcs11.so")
        self.check_broken(self.config(lib=lib, slot=self.token.uri()), [
            ("ERR!", f"Cannot load the PKCS#11 library {lib}: "),
            ("ERR!", "PKCS#11 base slot pkcs11:token=aziot is not usable"),
        ])

    def test_library_that_is_not_pkcs11(self):
        lib = not_a_pkcs11_library()
        self.check_broken(self.config(lib=lib, slot=self.token.uri()), [
            ("ERR!", f"{lib} is not a PKCS#11 library (no C_GetFunctionList)."),
            ("ERR!", "PKCS#11 base slot pkcs11:token=aziot is not usable"),
        ])

    def test_bad_base_slot_uris(self):
        pin = f"?pin-value={self.pin}"
        for uri, reason in (
                ("pkcs11:object=x" + pin, "the URI names neither a token nor a slot-id"),
                ("pkcs11:object=x", "the URI names neither a token nor a slot-id"),
                ("pkcs11:token=%zz" + pin, 'invalid percent-encoding in attribute "token"'),
                ("slot-id=1" + pin, 'URI does not start with "pkcs11:"'),
                ("slot-id=1", 'URI does not start with "pkcs11:"'),
                ("pkcs11:slot-id=abc" + pin, 'slot-id "abc" is not a number'),
                ("pkcs11:slot-id=abc", 'slot-id "abc" is not a number')):
            with self.subTest(uri=uri):
                self.check_broken(self.config(lib=self.token.module, slot=uri), [
                    ("ERR!", f"pkcs11_base_slot is not a valid PKCS#11 URI: {reason}"),
                    ("ERR!", "pkcs11_base_slot is not valid (see above): new keys cannot be "
                             "made; keys on the filesystem keep working."),
                ])

    def test_bad_preloaded_uris(self):
        pin = f"?pin-value={self.pin}"
        for uri, reason in (
                ("pkcs11:object=dev" + pin, "the URI names neither a token nor a slot-id"),
                ("pkcs11:token=aziot;object=%G0" + pin,
                 'invalid percent-encoding in attribute "object"'),
                ("pkcs11:token=aziot;slot-id=abc" + pin, 'slot-id "abc" is not a number')):
            with self.subTest(uri=uri):
                self.start(self.config(lib=self.token.module, preloaded={"dev": uri}))
                # That key is unusable (and not looked for elsewhere); the others work.
                self.assertCallFails(FAILED, "LoadKeyPair", "dev", OPTS)
                self.assertCallFails(FAILED, "CreateKeyPairIfNotExists", "dev", ["ec-p256"],
                                     OPTS)
                self.assertNotOnFilesystem("dev")
                self.assertEqual(self.call("Sign", self.handle, "HMAC-SHA256", PAYLOAD, OPTS),
                                 self.mac)
                self.assertServing()
                log = self.keyd.log()
                self.assertLogged(log, "ERR!",
                                  f"Preloaded key dev: not a valid PKCS#11 URI: {reason}")
                self.assertNoSecret(log, "keyd's log")
        self.assertEqual(self.key_files(), self.files)


# ---------------------------------------------------------------------------------------------
# 4. A token that goes away and comes back


class TokenAwayTest(Pkcs11TestCase):
    """SoftHSM2 keeps each token in a directory below its tokendir. Moving that directory out of
    the tokendir makes the token vanish for the running module: its object store is gone
    (C_FindObjects finds nothing, C_GenerateKey answers CKR_GENERAL_ERROR), and after
    C_Finalize/C_Initialize the token is in no slot (keyd: CKR_TOKEN_NOT_PRESENT). Moving it back
    makes it reappear to a module initialized again. Renaming the directory within the tokendir
    does both at once: the running module loses the token's objects, a module initialized again
    finds the same token with the same objects."""

    def token_path(self):
        (name,) = os.listdir(self.token.token_dir)
        return os.path.join(self.token.token_dir, name)

    def start_with_keys(self):
        self.start(self.base_slot_config())
        self.ec = self.call("CreateKeyPairIfNotExists", "dev-ec", ["ec-p256"], OPTS)
        self.hmac = self.call("CreateKeyIfNotExists", "dev-hmac", ["sign"], OPTS)
        self.pem = self.token.public_key_pem("dev-ec")
        self.assertEcdsaOpensslVerifies(self.pem, self.ec)
        self.assertTokenHmac("dev-hmac", PAYLOAD,
                             self.call("Sign", self.hmac, "HMAC-SHA256", PAYLOAD, OPTS))
        self.objects = self.labels()
        self.assertEqual(self.objects, sorted(["dev-ec", "dev-ec", "dev-hmac", HVK]))

    def assertWorksAgain(self):
        """The same handles work, with the same keys, and nothing was duplicated on the token or
        written to the filesystem."""
        self.assertEcdsaOpensslVerifies(self.pem, self.ec)
        self.assertTokenHmac("dev-hmac", PAYLOAD,
                             self.call("Sign", self.hmac, "HMAC-SHA256", PAYLOAD, OPTS))
        self.assertEqual(self.labels(), self.objects)
        self.assertEqual(self.key_files(), [])
        self.assertServing()

    def test_token_removed_and_put_back(self):
        self.start_with_keys()
        path = self.token_path()
        away = os.path.join(self.state.dir, "token-away")
        shutil.move(path, away)
        try:
            for _ in range(2):
                self.assertCallFails(FAILED, "Sign", self.ec, "ECDSA",
                                     hashlib.sha256(PAYLOAD).digest(), OPTS)
                self.assertCallFails(FAILED, "Sign", self.hmac, "HMAC-SHA256", PAYLOAD, OPTS)
                self.assertCallFails(None, "CreateKeyPairIfNotExists", "new-pair", ["ec-p256"],
                                     OPTS)
                self.assertServing()
        finally:
            shutil.move(away, path)
        self.assertWorksAgain()
        log = self.keyd.log()
        self.assertLogged(log, "INFO", "PKCS#11 token pkcs11:token=aziot: CKR_GENERAL_ERROR, "
                                       "starting over with a new session.")
        self.assertLogged(log, "ERR!", "No PKCS#11 token matches pkcs11:token=aziot.")
        self.assertLogged(log, "INFO", "PKCS#11 token pkcs11:token=aziot: CKR_TOKEN_NOT_PRESENT, "
                                       "starting over with a new session.")
        self.assertNotOnFilesystem("new-pair")

    def test_token_replaced_by_a_copy_of_itself(self):
        # The token's directory is renamed under the running module: to it the token's store is
        # gone (no objects found, nothing can be written), and once the module is initialized
        # again the same token, with the same objects, is back. keyd must not take "no objects"
        # for "no key" and create the handle-validation-key (or any key) a second time.
        self.start_with_keys()
        path = self.token_path()
        os.rename(path, path + "-renamed")
        outcomes = []
        for _ in range(3):
            try:
                self.call("Sign", self.hmac, "HMAC-SHA256", PAYLOAD, OPTS)
                outcomes.append(None)
            except CallError as e:
                self.assertNoSecret(e.message, "a D-Bus error")
                outcomes.append(e.name)
        self.assertEqual(self.labels(), self.objects,
                         f"keys were duplicated on the token (Sign outcomes {outcomes}):\n"
                         f"{self.keyd.log()}")
        self.assertWorksAgain()

    def test_existing_key_pair_survives_its_token_being_replaced(self):
        # The same, with CreateKeyPairIfNotExists of a pair the token holds: whatever keyd
        # answers, the pair must stay as it was (one private and one public object, the same
        # public key), not be regenerated over the old one.
        self.start_with_keys()
        path = self.token_path()
        os.rename(path, path + "-renamed")
        try:
            handle = self.call("CreateKeyPairIfNotExists", "dev-ec", ["ec-p256"], OPTS)
            self.assertPublicParametersMatch(handle, self.pem)
        except CallError as e:
            self.assertNoSecret(e.message, "a D-Bus error")
        self.assertEqual(self.token.public_key_pem("dev-ec"), self.pem,
                         "the pair's public key object was replaced")
        self.assertEqual(self.labels(), self.objects,
                         f"the key pair was duplicated on the token:\n{self.keyd.log()}")
        self.assertWorksAgain()


class Tpm2TokenAwayTest(Pkcs11TestCase):
    """A tpm2-pkcs11 token on swtpm, reached through tpm2-abrmd (the fixture's resource manager).
    Stopping tpm2-abrmd breaks the module's connection to the TPM (Esys_* fail with a TCTI IO
    error: CKR_GENERAL_ERROR), and C_Initialize fails until a tpm2-abrmd serves again. The token
    cannot make HMAC keys, so symmetric keys (and the handle-validation-key) live on the
    filesystem and must keep working meanwhile."""

    def make_token(self, directory):
        return Tpm2Pkcs11Token(directory, pin=self.pin)

    def stop_resource_manager(self):
        # The fixture has no restart of its own: its child process is replaced here.
        tpm = self.token
        tpm._abrmd.terminate()
        tpm._abrmd.wait(10)

    def start_resource_manager(self):
        tpm = self.token
        with open(tpm.abrmd_log, "a") as log:
            tpm._abrmd = subprocess.Popen(
                ["tpm2-abrmd", "--session", "--allow-root", "--flush-all",
                 f"--tcti=swtpm:path={tpm.swtpm_socket}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=aziot_tokens._pdeathsig,
                env=dict(os.environ, DBUS_SESSION_BUS_ADDRESS=tpm.bus_address))
        tpm._wait_tpm(tpm.tcti, tpm._abrmd, tpm.abrmd_log, "tpm2-abrmd")

    def test_resource_manager_restarted(self):
        self.start(self.base_slot_config())
        pair = self.call("CreateKeyPairIfNotExists", "dev-ec", ["ec-p256"], OPTS)
        key = self.call("CreateKeyIfNotExists", "dev-hmac", ["sign"], OPTS)
        pem = self.token.public_key_pem("dev-ec")
        self.assertEcdsaOpensslVerifies(pem, pair)
        mac = self.call("Sign", key, "HMAC-SHA256", PAYLOAD, OPTS)
        self.assertEqual(mac, hmac256(self.state.read_key("dev-hmac"), PAYLOAD))
        objects = self.labels()
        self.assertEqual(objects, ["dev-ec", "dev-ec"])
        files = self.key_files()
        self.assertEqual(files, sorted([key_file_name("dev-hmac"), key_file_name(HVK)]))

        self.stop_resource_manager()
        try:
            for _ in range(2):
                self.assertCallFails(FAILED, "Sign", pair, "ECDSA",
                                     hashlib.sha256(PAYLOAD).digest(), OPTS)
                self.assertCallFails(None, "CreateKeyPairIfNotExists", "new-pair", ["ec-p256"],
                                     OPTS)
                # The filesystem keys (and handles) keep working.
                self.assertEqual(self.call("Sign", key, "HMAC-SHA256", PAYLOAD, OPTS), mac)
                self.assertServing()
        finally:
            self.start_resource_manager()

        self.assertEcdsaOpensslVerifies(pem, pair)
        self.assertEcdsaOpensslVerifies(pem, self.call("LoadKeyPair", "dev-ec", OPTS))
        self.assertEqual(self.call("Sign", key, "HMAC-SHA256", PAYLOAD, OPTS), mac)
        self.assertEqual(self.labels(), objects)
        self.assertEqual(self.key_files(), files)
        self.assertServing()
        log = self.keyd.log()
        self.assertLogged(log, "INFO", "PKCS#11 token pkcs11:token=aziot%2Dtpm: CKR_GENERAL_ERROR, "
                                       "starting over with a new session.")
        self.assertLogged(log, "ERR!", f"The PKCS#11 library {self.token.module} failed to "
                                       "initialize: CKR_GENERAL_ERROR")


# ---------------------------------------------------------------------------------------------
# 5. Where keys are found


class LocationTest(Pkcs11TestCase):

    def test_filesystem_keys_still_work_under_a_base_slot(self):
        self.start()
        pair = self.call("CreateKeyPairIfNotExists", "fs-pair", ["ec-p256"], OPTS)
        key = self.call("CreateKeyIfNotExists", "fs-key", ["sign"], OPTS)
        pem = serialization.load_pem_private_key(self.state.read_key("fs-pair"), None) \
            .public_key().public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        fs_key = self.state.read_key("fs-key")
        files = self.key_files()

        self.start(self.base_slot_config())
        self.assertLogged(self.keyd.log(), "INFO",
                          "New keys are created on PKCS#11 token pkcs11:token=aziot.")
        # Old handles, and new ones from LoadKey*, reach the filesystem keys.
        for handle in (pair, self.call("LoadKeyPair", "fs-pair", OPTS)):
            self.assertPublicParametersMatch(handle, pem)
            self.assertEcdsaOpensslVerifies(pem, handle)
        for handle in (key, self.call("LoadKey", "fs-key", OPTS),
                       self.call("CreateKeyIfNotExists", "fs-key", ["sign"], OPTS)):
            self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", PAYLOAD, OPTS),
                             hmac256(fs_key, PAYLOAD))
        again = self.call("CreateKeyPairIfNotExists", "fs-pair", ["rsa-2048"], OPTS)
        self.assertPublicParametersMatch(again, pem)

        # New keys go to the token.
        new_pair = self.call("CreateKeyPairIfNotExists", "new-pair", ["ec-p256"], OPTS)
        new_key = self.call("CreateKeyIfNotExists", "new-key", ["sign"], OPTS)
        self.assertEcdsaOpensslVerifies(self.token.public_key_pem("new-pair"), new_pair)
        self.assertTokenHmac("new-key", PAYLOAD,
                             self.call("Sign", new_key, "HMAC-SHA256", PAYLOAD, OPTS))
        self.assertNotOnFilesystem("new-pair", "new-key")
        self.assertEqual(self.key_files(), files)
        # The handle-validation-key stayed in the file store (no second one on the token).
        self.assertEqual(self.labels(), sorted(["new-pair", "new-pair", "new-key"]))

    def test_token_comes_before_the_filesystem(self):
        self.start()
        fs_pair = self.call("CreateKeyPairIfNotExists", "both", ["ec-p256"], OPTS)
        fs_point = self.public_parameter(fs_pair, "ec-point")
        self.token.keypairgen("both", "EC:prime256v1")
        token_pem = self.token.public_key_pem("both")
        self.start(self.base_slot_config())
        for handle in (fs_pair, self.call("LoadKeyPair", "both", OPTS)):
            self.assertPublicParametersMatch(handle, token_pem)
            self.assertNotEqual(self.public_parameter(handle, "ec-point"), fs_point)
            self.assertEcdsaOpensslVerifies(token_pem, handle)

    def preload_files(self):
        """A PEM key pair and a symmetric key in files of their own: (config entries, public PEM,
        key bytes)."""
        secret_dir = os.path.join(self.state.dir, "secrets")
        os.makedirs(secret_dir)
        pem_path = os.path.join(secret_dir, "pair.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", pem_path], check=True,
                       capture_output=True)
        with open(pem_path, "rb") as f:
            public_pem = serialization.load_pem_private_key(f.read(), None).public_key() \
                .public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        sym_path = os.path.join(secret_dir, "sym.key")
        sym = os.urandom(32)
        with open(sym_path, "wb") as f:
            f.write(sym)
        return {"file-pair": f"file://{pem_path}", "file-key": f"file://{sym_path}"}, \
            public_pem, sym

    def check_file_preloaded(self, preloaded, public_pem, sym):
        self.start(self.base_slot_config(preloaded=preloaded))
        for handle in (self.call("LoadKeyPair", "file-pair", OPTS),
                       self.call("CreateKeyPairIfNotExists", "file-pair", ["rsa-2048"], OPTS)):
            self.assertPublicParametersMatch(handle, public_pem)
            self.assertEcdsaOpensslVerifies(public_pem, handle)
        for handle in (self.call("LoadKey", "file-key", OPTS),
                       self.call("CreateKeyIfNotExists", "file-key", ["sign"], OPTS)):
            self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", PAYLOAD, OPTS),
                             hmac256(sym, PAYLOAD))
        self.assertNotOnFilesystem("file-pair", "file-key")

    def test_file_preloaded_keys_are_served_from_their_files(self):
        preloaded, public_pem, sym = self.preload_files()
        self.check_file_preloaded(preloaded, public_pem, sym)
        # Nothing of them was created on the token; only the handle-validation-key is there.
        self.assertEqual(self.labels(), [HVK])

    def test_file_preloaded_keys_are_not_shadowed_by_the_token(self):
        # A preloaded id is looked up at its preloaded location only (keys-store.h, as
        # upstream): token objects labelled with the same ids must not be used instead.
        preloaded, public_pem, sym = self.preload_files()
        self.token.keypairgen("file-pair", "EC:prime256v1")
        self.token.secretgen("file-key")
        before = self.labels()
        self.check_file_preloaded(preloaded, public_pem, sym)
        self.assertEqual(self.labels(), sorted(before + [HVK]))


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
