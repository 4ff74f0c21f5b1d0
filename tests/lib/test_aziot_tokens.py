#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Self-check of tests/lib/aziot_tokens.py: each token fixture really works.

For SoftHSM2 and for tpm2-pkcs11 on swtpm (through tpm2-abrmd, and once directly on the swtpm
socket): make the token, generate an EC P-256 and an RSA-2048 key, sign a SHA-256 digest through
the token and verify the signature outside it (python3-cryptography and openssl), check that the
private key cannot be read out, and the secret (HMAC) keys.

    /usr/bin/python3 -m unittest -v tests/lib/test_aziot_tokens.py      (from the source tree, root)
"""

import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aziot_tokens  # noqa: E402
from aziot_tokens import TokenError  # noqa: E402

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.exit("test_aziot_tokens needs python3-cryptography: run it with /usr/bin/python3")

MESSAGE = b"aziot-dbus token self-check\n"
DIGEST = hashlib.sha256(MESSAGE).digest()
VERBOSE = os.environ.get("AZIOT_TOKENS_VERBOSE") == "1"


def note(text):
    if VERBOSE:
        print(f"\n  [{text}]", file=sys.stderr, end="")


def alive(proc):
    return proc is not None and proc.poll() is None


class TokenChecks:
    """Checks shared by every token kind; subclasses make cls.token and cls.tmp."""

    token = None
    tmp = None
    token_kind = None

    @classmethod
    def make_token(cls, base_dir):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (package installs, swtpm, tpm2-abrmd)")
        cls.tmp = tempfile.mkdtemp(prefix="aziot-tokens-")
        t0 = time.monotonic()
        cls.token = cls.make_token(os.path.join(cls.tmp, "token"))
        note(f"{cls.token_kind} token ready in {time.monotonic() - t0:.3f} s")
        t0 = time.monotonic()
        cls.ec_id = cls.token.keypairgen("ec-key", "EC:prime256v1")
        cls.rsa_id = cls.token.keypairgen("rsa-key", "rsa:2048")
        note(f"EC + RSA-2048 keys in {time.monotonic() - t0:.3f} s")

    @classmethod
    def tearDownClass(cls):
        if cls.token is not None:
            cls.token.close()
        if cls.tmp and os.path.isdir(cls.tmp):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def openssl_verify(self, pem, sig_der, name):
        pem_path = self.write(f"{name}.pem", pem.encode())
        sig_path = self.write(f"{name}.sig", sig_der)
        msg_path = self.write(f"{name}.msg", MESSAGE)
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pem_path, "-signature",
                            sig_path, msg_path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Verified OK", r.stdout)

    # -- the token itself

    def test_token_listed_with_label_and_slot(self):
        slot = self.token.slot_id()
        self.assertIsInstance(slot, int)
        r = self.token.pkcs11_tool(["-L"], login=False, token=False)
        self.assertIn(f"({hex(slot)})", r.stdout)
        self.assertIn(self.token.label, r.stdout)

    def test_uri(self):
        t = self.token
        label = aziot_tokens.pct(t.label)
        self.assertEqual(t.uri(), f"pkcs11:token={label}?pin-value={t.pin}")
        self.assertEqual(t.uri("a b-c", pin=False), f"pkcs11:token={label};object=a%20b%2Dc")
        self.assertEqual(t.uri(slot_id=True), f"pkcs11:slot-id={t.slot_id()}?pin-value={t.pin}")

    def test_env_is_all_the_module_needs(self):
        # A client given only PATH and .env finds the token: nothing comes from the host config.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.token.env}
        r = subprocess.run(["pkcs11-tool", "--module", self.token.module, "--token-label",
                            self.token.label, "--login", "--pin", self.token.pin, "-O"],
                           env=env, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ec-key", r.stdout)

    def test_objects(self):
        objs = self.token.objects()
        self.assertIn("ec-key", objs)
        self.assertIn("rsa-key", objs)
        info = {(o["label"], o["class"]): o for o in self.token.object_info()}
        self.assertEqual(info[("ec-key", "privkey")]["id"], self.ec_id)
        self.assertEqual(info[("rsa-key", "pubkey")]["id"], self.rsa_id)

    # -- key pairs

    def test_ec_p256_sign_verify(self):
        sig = self.token.sign("ec-key", DIGEST, "ECDSA")
        self.assertEqual(len(sig), 64, "CKM_ECDSA on P-256 gives raw r||s")
        pem = self.token.public_key_pem("ec-key")
        pub = serialization.load_pem_public_key(pem.encode())
        self.assertIsInstance(pub, ec.EllipticCurvePublicKey)
        self.assertEqual(pub.curve.name, "secp256r1")
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        der = aziot_tokens.ecdsa_raw_to_der(sig)
        self.assertEqual(der, utils.encode_dss_signature(r, s))
        pub.verify(der, DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        self.openssl_verify(pem, der, "ec")
        # and a signature of another digest does not verify
        with self.assertRaises(Exception):
            pub.verify(der, hashlib.sha256(b"other").digest(),
                       ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def test_rsa_2048_sign_verify(self):
        sig = self.token.sign("rsa-key", aziot_tokens.rsa_pkcs1_digest_info(DIGEST), "RSA-PKCS")
        self.assertEqual(len(sig), 256)
        pem = self.token.public_key_pem("rsa-key")
        pub = serialization.load_pem_public_key(pem.encode())
        self.assertEqual(pub.key_size, 2048)
        pub.verify(sig, DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        self.openssl_verify(pem, sig, "rsa")

    def test_private_keys_cannot_be_read(self):
        for label in ("ec-key", "rsa-key"):
            with self.subTest(label=label):
                r = self.token.read_private(label)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertEqual(r.key, b"")
                access = self.token.key_access(label)
                self.assertIn("sensitive", access)
                self.assertIn("never extractable", access)
                self.assertNotIn("extractable", access)
        ec_attrs, rsa_attrs = self.token.probe([
            {"op": "attr", "label": "ec-key", "class": "private",
             "attrs": ["CKA_VALUE", "CKA_SENSITIVE", "CKA_EXTRACTABLE"]},
            {"op": "attr", "label": "rsa-key", "class": "private",
             "attrs": ["CKA_PRIVATE_EXPONENT", "CKA_PRIME_1", "CKA_MODULUS"]},
        ])
        self.assertEqual(ec_attrs["CKA_SENSITIVE"].get("hex"), "01")
        self.assertEqual(ec_attrs["CKA_EXTRACTABLE"].get("hex"), "00")
        for attrs, secret_attrs in ((ec_attrs, ["CKA_VALUE"]),
                                    (rsa_attrs, ["CKA_PRIVATE_EXPONENT", "CKA_PRIME_1"])):
            for a in secret_attrs:
                self.assertNotIn("hex", attrs[a], f"{a} came out of the token: {attrs[a]}")
                self.assertIn(attrs[a]["rv"], self.unreadable_rvs, attrs[a])
        self.assertEqual(len(rsa_attrs["CKA_MODULUS"]["hex"]), 512)  # the public part is readable

    def test_probe_signs_in_one_session(self):
        a, b = self.token.probe([
            {"op": "sign", "label": "ec-key", "mechanism": "ECDSA", "data": DIGEST},
            {"op": "sign", "label": "rsa-key", "mechanism": "RSA-PKCS",
             "data": aziot_tokens.rsa_pkcs1_digest_info(DIGEST)},
        ])
        self.assertEqual(a["rv"], "CKR_OK")
        self.assertEqual(b["rv"], "CKR_OK")
        pub = serialization.load_pem_public_key(self.token.public_key_pem("ec-key").encode())
        pub.verify(aziot_tokens.ecdsa_raw_to_der(a["sig"]), DIGEST,
                   ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def test_sign_uses_the_labelled_key(self):
        # pkcs11-tool --sign ignores --label; sign() must pick the key by id.
        self.token.keypairgen("second-ec", "EC:prime256v1")
        sig = self.token.sign("second-ec", DIGEST, "ECDSA")
        pub2 = serialization.load_pem_public_key(self.token.public_key_pem("second-ec").encode())
        pub1 = serialization.load_pem_public_key(self.token.public_key_pem("ec-key").encode())
        der = aziot_tokens.ecdsa_raw_to_der(sig)
        pub2.verify(der, DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        with self.assertRaises(Exception):
            pub1.verify(der, DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def test_missing_key_error(self):
        with self.assertRaises(TokenError) as cm:
            self.token.sign("no-such-key", DIGEST, "ECDSA")
        self.assertIn("no-such-key", str(cm.exception))

    def test_verify_on_token(self):
        sig = self.token.sign("ec-key", DIGEST, "ECDSA")
        self.assertTrue(self.token.verify("ec-key", DIGEST, sig, "ECDSA"))
        self.assertFalse(self.token.verify("ec-key", hashlib.sha256(b"x").digest(), sig, "ECDSA"))


class SoftHsmTokenTest(TokenChecks, unittest.TestCase):
    token_kind = "softhsm2"
    unreadable_rvs = ("CKR_ATTRIBUTE_SENSITIVE",)

    @classmethod
    def make_token(cls, base_dir):
        return aziot_tokens.SoftHsmToken(base_dir)

    def test_config_is_private(self):
        conf = self.token.env["SOFTHSM2_CONF"]
        self.assertTrue(conf.startswith(self.token.base_dir))
        with open(conf) as f:
            text = f.read()
        self.assertIn(f"directories.tokendir = {self.token.token_dir}\n", text)
        self.assertIn("objectstore.backend = file\n", text)
        self.assertEqual(self.token.module, "/usr/lib/softhsm/libsofthsm2.so")
        # softhsm2-util's and pkcs11-tool's idea of the slot agree
        self.assertEqual(self.token.slot_id(), aziot_tokens._Pkcs11Token.slot_id(self.token))

    def test_hmac_secret(self):
        key_id = self.token.secretgen("hmac-key")
        info = self.token.find("hmac-key", ("secrkey",))
        self.assertEqual(info["id"], key_id)
        self.assertIn("sensitive", info["access"])
        self.assertIn("never extractable", info["access"])
        r = self.token.read_private("hmac-key")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.key, b"")
        (attrs,) = self.token.probe([{"op": "attr", "label": "hmac-key", "class": "secret",
                                      "attrs": ["CKA_VALUE", "CKA_SIGN", "CKA_VERIFY"]}])
        self.assertEqual(attrs["CKA_VALUE"]["rv"], "CKR_ATTRIBUTE_SENSITIVE")
        self.assertEqual(attrs["CKA_SIGN"].get("hex"), "01")
        self.assertEqual(attrs["CKA_VERIFY"].get("hex"), "01")
        mac = self.token.sign("hmac-key", MESSAGE, "SHA256-HMAC")
        self.assertEqual(len(mac), 32)
        self.assertTrue(self.token.verify("hmac-key", MESSAGE, mac, "SHA256-HMAC"))
        bad = bytes([mac[0] ^ 1]) + mac[1:]
        self.assertFalse(self.token.verify("hmac-key", MESSAGE, bad, "SHA256-HMAC"))

    def test_hmac_matches_python_for_extractable_secret(self):
        # The positive control: a non-sensitive, extractable secret can be read, and the token's
        # CKM_SHA256_HMAC is the HMAC-SHA256 Python computes with it.
        self.token.secretgen("open-key", "GENERIC:32", sensitive=False, extractable=True)
        r = self.token.read_private("open-key")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.key), 32)
        mac = self.token.sign("open-key", MESSAGE, "SHA256-HMAC")
        self.assertEqual(mac, hmac.new(r.key, MESSAGE, hashlib.sha256).digest())

    def test_aes_secret(self):
        self.token.secretgen("aes-key", "AES:32")
        self.assertEqual(self.token.find("aes-key", ("secrkey",))["type"], "AES length 32")

    def test_remove_and_cleanup(self):
        base = os.path.join(self.tmp, "second")
        with aziot_tokens.SoftHsmToken(base, label="other") as t:
            t.keypairgen("k", "EC:prime256v1")
            self.assertEqual(t.objects(), ["k"])
            t.remove()
            with self.assertRaises(TokenError) as cm:
                t.objects()
            self.assertIn("No slot with token", str(cm.exception))
        self.assertFalse(os.path.exists(base))
        # the class's token was not touched
        self.assertIn("ec-key", self.token.objects())

    def test_existing_base_dir_is_kept(self):
        base = os.path.join(self.tmp, "kept")
        os.makedirs(base)
        self.write("kept/mine", b"x")
        with aziot_tokens.SoftHsmToken(base, label="kept"):
            pass
        self.assertEqual(os.listdir(base), ["mine"])


class Tpm2TokenChecks(TokenChecks):
    # tpm2-pkcs11 has no CKA_VALUE / CKA_PRIVATE_EXPONENT on private keys at all.
    unreadable_rvs = ("CKR_ATTRIBUTE_SENSITIVE", "CKR_ATTRIBUTE_TYPE_INVALID")

    def test_module_and_env(self):
        t = self.token
        self.assertTrue(os.path.exists(t.module), t.module)
        self.assertIn("libtpm2_pkcs11.so", t.module)
        self.assertEqual(t.env["TPM2_PKCS11_STORE"], t.store)
        self.assertEqual(t.env["TPM2_PKCS11_TCTI"], t.tcti)
        self.assertTrue(os.path.exists(os.path.join(t.store, "tpm2_pkcs11.sqlite3")))
        self.assertTrue(alive(t._swtpm))

    def test_mechanisms(self):
        mechs = set(self.token.mechanisms())
        for m in ("ECDSA-KEY-PAIR-GEN", "RSA-PKCS-KEY-PAIR-GEN", "ECDSA", "RSA-PKCS", "RSA-X-509",
                  "SHA256-HMAC"):
            self.assertIn(m, mechs)
        note("no GENERIC-SECRET-KEY-GEN: %s, no AES-GCM: %s" % (
            "GENERIC-SECRET-KEY-GEN" not in mechs, "AES-GCM" not in mechs))

    def test_hmac_secret(self):
        key_id = self.token.secretgen("hmac-key")
        info = self.token.find("hmac-key", ("secrkey",))
        self.assertEqual(info["id"], key_id)
        self.assertIn("sensitive", info["access"])
        self.assertIn("never extractable", info["access"])
        r = self.token.read_private("hmac-key")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.key, b"")
        (attrs,) = self.token.probe([{"op": "attr", "label": "hmac-key", "class": "secret",
                                      "attrs": ["CKA_VALUE"]}])
        self.assertNotIn("hex", attrs["CKA_VALUE"])  # tpm2-pkcs11: CKR_OK, length 0
        mac = self.token.sign("hmac-key", MESSAGE, "SHA256-HMAC")
        self.assertEqual(len(mac), 32)
        self.assertEqual(mac, self.token.sign("hmac-key", MESSAGE, "SHA256-HMAC"))
        self.assertNotEqual(mac, self.token.sign("hmac-key", MESSAGE + b"x", "SHA256-HMAC"))

    def test_rsa_4096(self):
        # swtpm 0.7.1 (libtpms 0.9) stops at RSA-3072: the failure must be a clear TokenError.
        try:
            self.token.keypairgen("rsa-4096", "rsa:4096")
        except TokenError as e:
            self.assertIn("C_GenerateKeyPair", str(e))
            note("RSA-4096: not supported by this swtpm")
            return
        note("RSA-4096: generated")
        sig = self.token.sign("rsa-4096", aziot_tokens.rsa_pkcs1_digest_info(DIGEST), "RSA-PKCS")
        pub = serialization.load_pem_public_key(self.token.public_key_pem("rsa-4096").encode())
        pub.verify(sig, DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


class Tpm2Pkcs11TokenTest(Tpm2TokenChecks, unittest.TestCase):
    """With the default resource manager (tpm2-abrmd on a private session bus)."""

    token_kind = "tpm2-pkcs11 (tpm2-abrmd)"

    @classmethod
    def make_token(cls, base_dir):
        return aziot_tokens.Tpm2Pkcs11Token(base_dir)

    def test_many_keys_in_one_process(self):
        # Without a resource manager swtpm's 3 object slots run out here (see the module docstring).
        self.token.keypairgen("ec-many", "EC:prime256v1")
        self.token.secretgen("hmac-many")
        ops = [{"op": "sign", "label": "ec-key", "mechanism": "ECDSA", "data": DIGEST},
               {"op": "sign", "label": "rsa-key", "mechanism": "RSA-PKCS",
                "data": aziot_tokens.rsa_pkcs1_digest_info(DIGEST)},
               {"op": "sign", "label": "ec-many", "mechanism": "ECDSA", "data": DIGEST},
               {"op": "sign", "label": "hmac-many", "mechanism": "SHA256-HMAC", "data": MESSAGE}]
        results = self.token.probe(ops + ops)
        self.assertEqual([r["rv"] for r in results], ["CKR_OK"] * 8, results)
        self.assertEqual(self.token.transient_handles(), [])

    def test_two_processes_at_once(self):
        # Process A keeps a session with two keys loaded while process B logs in and signs with
        # a third: without a resource manager B's C_Login fails with TPM_RC 0x902.
        self.token.keypairgen("ec-third", "EC:prime256v1")
        ready = os.path.join(self.tmp, "a-ready")
        done = os.path.join(self.tmp, "b-done")
        out = {}
        a = threading.Thread(target=lambda: out.update(a=self.token.probe([
            {"op": "sign", "label": "ec-key", "mechanism": "ECDSA", "data": DIGEST},
            {"op": "sign", "label": "rsa-key", "mechanism": "RSA-PKCS",
             "data": aziot_tokens.rsa_pkcs1_digest_info(DIGEST)},
            {"op": "touch", "path": ready},
            {"op": "wait", "path": done}])))
        a.start()
        try:
            end = time.monotonic() + 10
            while not os.path.exists(ready) and time.monotonic() < end and a.is_alive():
                time.sleep(0.005)
            self.assertTrue(os.path.exists(ready), out)
            (b,) = self.token.probe([{"op": "sign", "label": "ec-third", "mechanism": "ECDSA",
                                      "data": DIGEST}])
            self.assertEqual(b["rv"], "CKR_OK")
        finally:
            with open(done, "w"):
                pass
            a.join(20)
        self.assertEqual([r.get("rv") for r in out["a"][:2]], ["CKR_OK", "CKR_OK"])
        self.assertEqual(out["a"][3], {"found": True})

    @classmethod
    def tearDownClass(cls):
        # close() must stop swtpm, tpm2-abrmd and the session dbus-daemon and remove base_dir
        # (reported as an error of tearDownClass if not).
        t = cls.token
        procs = [t._swtpm, t._abrmd, t._bus] if t is not None else []
        super().tearDownClass()
        if t is not None:
            if not all(p is not None for p in procs) or any(alive(p) for p in procs):
                raise AssertionError(f"processes left after close(): {procs}")
            if os.path.exists(t.base_dir):
                raise AssertionError(f"{t.base_dir} left after close()")


class Tpm2Pkcs11DirectTokenTest(unittest.TestCase):
    """resource_manager=False: the module and the tools talk to the swtpm socket directly
    (tpm2_ptool through the flush wrappers). One pass through the life of such a token."""

    def test_lifecycle(self):
        if os.geteuid() != 0:
            self.skipTest("needs root")
        tmp = tempfile.mkdtemp(prefix="aziot-tokens-")
        self.addCleanup(shutil.rmtree, tmp, True)
        base = os.path.join(tmp, "direct")
        t0 = time.monotonic()
        with aziot_tokens.Tpm2Pkcs11Token(base, resource_manager=False) as t:
            note(f"direct token ready in {time.monotonic() - t0:.3f} s")
            self.assertEqual(t.tcti, f"swtpm:path={t.swtpm_socket}")
            self.assertEqual(t.env["TPM2_PKCS11_TCTI"], t.tcti)
            self.assertNotIn("DBUS_SESSION_BUS_ADDRESS", t.env)
            self.assertIsNone(t._abrmd)
            swtpm = t._swtpm
            t.keypairgen("ec-key", "EC:prime256v1")
            sig = t.sign("ec-key", DIGEST, "ECDSA")
            pub = serialization.load_pem_public_key(t.public_key_pem("ec-key").encode())
            pub.verify(aziot_tokens.ecdsa_raw_to_der(sig), DIGEST,
                       ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            t.secretgen("hmac-key")  # tpm2_ptool addkey without a resource manager
            self.assertEqual(len(t.sign("hmac-key", MESSAGE, "SHA256-HMAC")), 32)
            self.assertEqual(t.objects(), ["ec-key", "hmac-key"])
            self.assertEqual(t.transient_handles(), [])
            self.assertNotEqual(t.read_private("ec-key").returncode, 0)
        self.assertFalse(alive(swtpm))
        self.assertFalse(os.path.exists(base))


class HelpersTest(unittest.TestCase):
    def test_pct(self):
        self.assertEqual(aziot_tokens.pct("aziot-tpm"), "aziot%2Dtpm")
        self.assertEqual(aziot_tokens.pct("Key pairs"), "Key%20pairs")
        self.assertEqual(aziot_tokens.pct("é"), "%C3%A9")

    def test_ecdsa_raw_to_der(self):
        r, s = 0x80 << 248, 5
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        self.assertEqual(aziot_tokens.ecdsa_raw_to_der(raw), utils.encode_dss_signature(r, s))
        with self.assertRaises(ValueError):
            aziot_tokens.ecdsa_raw_to_der(b"\x01" * 63)

    def test_parse_objects(self):
        text = ("Private Key Object; EC\n  label:      a b\n  ID:         0A\n"
                "  Usage:      sign\n  Access:     sensitive, never extractable\n"
                "Public Key Object; EC  EC_POINT 256 bits\n  label:      a b\n  ID:         0a\n")
        objs = aziot_tokens._parse_objects(text)
        self.assertEqual([(o["class"], o["label"], o["id"]) for o in objs],
                         [("privkey", "a b", "0a"), ("pubkey", "a b", "0a")])
        self.assertEqual(objs[0]["access"], {"sensitive", "never extractable"})


if __name__ == "__main__":
    unittest.main(verbosity=2)
