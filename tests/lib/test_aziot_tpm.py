#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Self-check of tests/lib/aziot_tpm.py: the swtpm fixture, and DPS authenticationKey blobs that a
real TPM (swtpm, driven by tpm2-tools only) activates, imports and HMACs with.

The TPM side does what a TPM device does with the blob: a PolicySecret(endorsement) session for
the EK, ActivateCredential(SRK, EK) -> K, Import under the SRK with K (AES-128-CFB), Load, HMAC.

    /usr/bin/python3 -m unittest -v tests/lib/test_aziot_tpm.py      (from the source tree, root)
"""

import dataclasses
import hashlib
import hmac
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aziot_tpm  # noqa: E402
from aziot_tpm import Swtpm, TpmError  # noqa: E402

try:
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.exit("test_aziot_tpm needs python3-cryptography: run it with /usr/bin/python3")

EK = f"0x{aziot_tpm.EK_HANDLE:08x}"
SRK = f"0x{aziot_tpm.SRK_HANDLE:08x}"
AUTH_KEY_HANDLE = "0x81000100"  # where a TPM device persists the imported key
SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"
MESSAGE = b"registration-id\n1700000000"


def needs_root():
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (swtpm, tpm2-tools, package installs)")


def random_modulus():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_numbers().n.to_bytes(256, "big")


def flip(data, index):
    data = bytearray(data)
    data[index] ^= 0x01
    return bytes(data)


class SwtpmTest(unittest.TestCase):
    """The fixture itself: sockets, restart with the same state, pause/resume, clean-up."""

    @classmethod
    def setUpClass(cls):
        needs_root()
        cls.tmp = tempfile.mkdtemp(prefix="aziot-tpm-")
        cls.tpm = Swtpm(os.path.join(cls.tmp, "tpm")).start()

    @classmethod
    def tearDownClass(cls):
        cls.tpm.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def tearDown(self):
        # A failed test must not leave the shared TPM paused or stopped.
        if self.tpm.paused:
            self.tpm.resume()
        if not self.tpm.running:
            self.tpm.start()
        self.tpm.flush_transients()

    def path(self, name):
        return os.path.join(self.tmp, name)

    def test_tcti_env_and_sockets(self):
        t = self.tpm
        self.assertEqual(t.tcti, f"swtpm:path={t.socket}")
        self.assertEqual(t.env, {"TPM2TOOLS_TCTI": t.tcti})
        self.assertEqual(t.ctrl_socket, t.socket + ".ctrl")
        for sock in (t.socket, t.ctrl_socket):
            self.assertTrue(stat.S_ISSOCK(os.stat(sock).st_mode), sock)
        self.assertEqual(os.path.dirname(t.state_dir), t.directory)
        self.assertTrue(os.listdir(t.state_dir))  # swtpm's NV state file
        out = t.tools("tpm2_getrandom", "8", "--hex").stdout.strip()
        self.assertRegex(out, r"^[0-9a-f]{16}$")

    def test_restart_keeps_persistent_objects(self):
        t = self.tpm
        handle = "0x81000010"
        ctx = self.path("primary.ctx")
        t.tools("tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", ctx, "-Q")
        t.tools("tpm2_evictcontrol", "-C", "o", "-c", ctx, handle)
        t.flush_transients()
        self.addCleanup(lambda: t.tools("tpm2_evictcontrol", "-C", "o", "-c", handle,
                                        check=False))
        name = t.tools("tpm2_readpublic", "-c", handle, "-n", self.path("before.name"))
        t.tools("tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", ctx, "-Q")  # left loaded
        self.assertNotEqual(t.tools("tpm2_getcap", "handles-transient").stdout.strip(), "")
        pid = t.pid

        t.restart()
        self.assertNotEqual(t.pid, pid)
        self.assertIn(handle, t.tools("tpm2_getcap", "handles-persistent").stdout)
        t.tools("tpm2_readpublic", "-c", handle, "-n", self.path("after.name"))
        with open(self.path("before.name"), "rb") as a, open(self.path("after.name"), "rb") as b:
            self.assertEqual(a.read(), b.read(), name.stdout)
        # A real power cycle: transient objects are gone.
        self.assertEqual(t.tools("tpm2_getcap", "handles-transient").stdout.strip(), "")

    def test_stop_and_start(self):
        t = self.tpm
        proc = t.process
        t.stop()
        self.assertFalse(t.running)
        self.assertIsNotNone(proc.poll())
        r = t.tools("tpm2_getrandom", "4", check=False, timeout=20)
        self.assertNotEqual(r.returncode, 0)
        with self.assertRaises(TpmError):
            t.tools("tpm2_getrandom", "4", timeout=20)
        t.start()
        self.assertTrue(t.running)
        t.tools("tpm2_getrandom", "4")

    def test_pause_makes_commands_hang_until_resume(self):
        t = self.tpm
        t.pause()
        self.assertTrue(t.paused)
        with open(f"/proc/{t.pid}/stat") as f:
            self.assertEqual(f.read().rsplit(")", 1)[1].split()[0], "T")
        proc = subprocess.Popen(["tpm2_getrandom", "8", "--hex"], env=dict(os.environ, **t.env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            self.assertIsNone(proc.poll(), "a TPM command completed while swtpm was paused")
            t.resume()
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err)
        self.assertRegex(out.strip(), r"^[0-9a-f]{16}$")
        self.assertFalse(t.paused)

    def test_tool_timeout_while_paused(self):
        # A caller that gives up on a hanging command gets an error, and the TPM still works
        # after resume() although a command was abandoned half-way.
        t = self.tpm
        t.pause()
        t0 = time.monotonic()
        with self.assertRaisesRegex(TpmError, "timed out"):
            t.tools("tpm2_getrandom", "4", timeout=1)
        self.assertLess(time.monotonic() - t0, 10)
        t.resume()
        self.assertRegex(t.tools("tpm2_getrandom", "4", "--hex", timeout=20).stdout.strip(),
                         r"^[0-9a-f]{8}$")

    def test_stop_while_paused(self):
        t = self.tpm
        proc = t.process
        t.pause()
        t.stop()
        self.assertIsNotNone(proc.poll())
        self.assertFalse(t.paused)

    def test_context_manager_removes_what_it_made(self):
        base = self.path("cm")
        with Swtpm(base) as t:
            proc = t.process
            self.assertTrue(t.running)
            t.tools("tpm2_getrandom", "4")
        self.assertIsNotNone(proc.poll())
        self.assertFalse(os.path.exists(base))

        kept = self.path("kept")
        os.makedirs(kept)
        with open(os.path.join(kept, "mine"), "w"):
            pass
        with Swtpm(kept) as t:
            t.tools("tpm2_getrandom", "4")
        self.assertEqual(os.listdir(kept), ["mine"])

    def test_long_directory_gets_short_sockets(self):
        base = self.path("d" * 60 + "/" + "e" * 60)
        with Swtpm(base) as t:
            self.assertFalse(t.socket.startswith(base))
            self.assertLessEqual(len(t.ctrl_socket), aziot_tpm.SUN_PATH_MAX)
            t.tools("tpm2_getrandom", "4")
            sock_dir = os.path.dirname(t.socket)
        self.assertFalse(os.path.exists(sock_dir))
        self.assertFalse(os.path.exists(base))


class AuthKeyBlobTpmTest(unittest.TestCase):
    """make_auth_key_blob() against a real TPM, with tpm2-tools doing what a TPM device does."""

    @classmethod
    def setUpClass(cls):
        needs_root()
        cls.tmp = tempfile.mkdtemp(prefix="aziot-tpm-blob-")
        cls.tpm = Swtpm(os.path.join(cls.tmp, "tpm")).start()
        try:
            t = cls.tpm
            ek_pub, srk_pub = cls.file("ek.pub"), cls.file("srk.pub")
            t.tools("tpm2_createek", "-c", EK, "-G", "rsa", "-u", cls.file("createek.pub"))
            t.flush_transients()
            t.tools("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb",
                    "-a", SRK_ATTRIBUTES, "-c", cls.file("srk.ctx"), "-Q")
            t.tools("tpm2_evictcontrol", "-C", "o", "-c", cls.file("srk.ctx"), SRK)
            t.flush_transients()
            t.tools("tpm2_readpublic", "-c", EK, "-o", ek_pub, "-n", cls.file("ek.name"))
            t.tools("tpm2_readpublic", "-c", SRK, "-o", srk_pub, "-n", cls.file("srk.name"))
            cls.ek_public = cls.read(ek_pub)
            cls.srk_public = cls.read(srk_pub)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tpm.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def tearDown(self):
        self.tpm.flush_transients()

    @classmethod
    def file(cls, name):
        return os.path.join(cls.tmp, name)

    @classmethod
    def read(cls, path):
        with open(path, "rb") as f:
            return f.read()

    def write(self, name, data):
        path = self.file(name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    # -- what a TPM device does with the blob, in tpm2-tools

    def activate(self, parts):
        """PolicySecret(endorsement) session, ActivateCredential(SRK, EK): (process, K or None)."""
        t = self.tpm
        cred = self.write("cred.in", aziot_tpm.tpm2_tools_credential_file(parts.credential_blob,
                                                                          parts.secret))
        session, out = self.file("session.ctx"), self.file("k.out")
        if os.path.exists(out):
            os.unlink(out)
        t.tools("tpm2_startauthsession", "--policy-session", "-S", session)
        try:
            t.tools("tpm2_policysecret", "-S", session, "-c", "e")
            r = t.tools("tpm2_activatecredential", "-c", SRK, "-C", EK, "-i", cred, "-o", out,
                        "-P", f"session:{session}", check=False)
        finally:
            t.tools("tpm2_flushcontext", session, check=False)
        return r, (self.read(out) if r.returncode == 0 else None)

    def import_key(self, parts, inner_key):
        """Import under the SRK with encryptionKey = inner_key (AES-128-CFB): (process, files)."""
        pub = self.write("key.pub", parts.public)
        dup = self.write("key.dup", parts.duplicate)
        seed = self.write("key.seed", parts.in_sym_seed)
        priv = self.file("key.priv")
        args = ["tpm2_import", "-C", SRK, "-G", "aes", "-u", pub, "-i", dup, "-s", seed,
                "-r", priv]
        if inner_key is not None:
            args += ["-k", self.write("inner.key", inner_key)]
        return self.tpm.tools(*args, check=False), pub, priv

    def tpm_hmac(self, key, message):
        msg = self.write("message", message)
        try:
            self.tpm.tools("tpm2_hmac", "-c", key, "-g", "sha256", "-o", self.file("mac"), msg)
        finally:
            self.tpm.flush_transients()  # a context file is loaded anew each time
        return self.read(self.file("mac"))

    def import_and_hmac(self, blob, message):
        """The whole device side: returns the TPM's HMAC-SHA256 of message with the new key."""
        parts = aziot_tpm.split_auth_key_blob(blob)
        r, inner_key = self.activate(parts)
        self.assertEqual(r.returncode, 0, r.stderr)
        r, pub, priv = self.import_key(parts, inner_key)
        self.assertEqual(r.returncode, 0, r.stderr)
        ctx = self.file("key.ctx")
        self.tpm.tools("tpm2_load", "-C", SRK, "-u", pub, "-r", priv, "-c", ctx)
        self.tpm.flush_transients()  # the saved context is what the next tool loads
        return self.tpm_hmac(ctx, message)

    def activated_parts(self, hmac_key=None):
        parts = aziot_tpm.make_auth_key(self.ek_public, self.srk_public,
                                        hmac_key or secrets.token_bytes(32))
        r, inner_key = self.activate(parts)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(inner_key, parts.inner_key)
        return parts

    # -- the EK and SRK as the TPM reports them

    def test_readpublic_writes_tpm2b_public(self):
        for blob, name_file, want in ((self.ek_public, "ek.name", aziot_tpm.ek_rsa_public),
                                      (self.srk_public, "srk.name", aziot_tpm.srk_rsa_public)):
            # tpm2_readpublic -o: the TPM2B (size prefix included), what tpmd returns
            self.assertEqual(int.from_bytes(blob[:2], "big"), len(blob) - 2)
            pub = aziot_tpm.parse_public(blob)
            modulus = aziot_tpm.tpm2b_public_rsa_modulus(blob)
            self.assertEqual(len(modulus), 256)
            self.assertEqual(pub, want(modulus))  # the standard template, field by field
            self.assertEqual(aziot_tpm.marshal_public(pub), blob)
            self.assertEqual(aziot_tpm.compute_name(blob), self.read(self.file(name_file)))
        self.assertEqual(self.read(self.file("createek.pub")), self.ek_public)

    # -- the blob works

    def test_blob_imports_as_hmac_key(self):
        hmac_key = secrets.token_bytes(32)
        blob = aziot_tpm.make_auth_key_blob(self.ek_public, self.srk_public, hmac_key)
        self.assertIsInstance(blob, bytes)
        mac = self.import_and_hmac(blob, MESSAGE)
        self.assertEqual(mac, hmac.new(hmac_key, MESSAGE, hashlib.sha256).digest())
        self.assertNotEqual(self.tpm_hmac(self.file("key.ctx"), MESSAGE + b"x"), mac)

        # As a device keeps it: persisted, used by handle.
        self.tpm.tools("tpm2_evictcontrol", "-C", "o", "-c", self.file("key.ctx"),
                       AUTH_KEY_HANDLE)
        self.addCleanup(self.tpm.tools, "tpm2_evictcontrol", "-C", "o", "-c", AUTH_KEY_HANDLE,
                        check=False)
        self.tpm.flush_transients()
        os.unlink(self.file("key.ctx"))
        self.assertEqual(self.tpm_hmac(AUTH_KEY_HANDLE, MESSAGE), mac)
        r = self.tpm.tools("tpm2_readpublic", "-c", AUTH_KEY_HANDLE, "-o", self.file("p.pub"))
        self.assertEqual(self.read(self.file("p.pub")),
                         aziot_tpm.split_auth_key_blob(blob).public, r.stdout)

    def test_hmac_key_sizes(self):
        for size in (1, 16, 64):  # up to a SHA-256 block
            with self.subTest(size=size):
                hmac_key = secrets.token_bytes(size)
                blob = aziot_tpm.make_auth_key_blob(self.ek_public, self.srk_public, hmac_key)
                self.assertEqual(self.import_and_hmac(blob, MESSAGE),
                                 hmac.new(hmac_key, MESSAGE, hashlib.sha256).digest())
        # A longer key, which hmac_key_object() refuses, made by hand: the TPM refuses it too.
        with self.assertRaises(ValueError):
            aziot_tpm.hmac_key_object(b"k" * 65)
        public, sensitive = aziot_tpm.hmac_key_object(b"k" * 64)
        seed = sensitive[6:38]
        long_key = b"k" * 65
        public = dataclasses.replace(public, unique=hashlib.sha256(seed + long_key).digest())
        sensitive = sensitive[:38] + aziot_tpm.tpm2b(long_key)
        parts = self.activated_parts()
        dup, in_sym_seed = aziot_tpm.duplicate(public, sensitive, self.srk_public,
                                               parts.inner_key)
        parts = dataclasses.replace(parts, duplicate=dup, in_sym_seed=in_sym_seed,
                                    public=aziot_tpm.marshal_public(public))
        r, _, _ = self.import_key(parts, parts.inner_key)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("key size is not supported", r.stderr)

    def test_blob_layout(self):
        hmac_key = secrets.token_bytes(32)
        parts = aziot_tpm.make_auth_key(self.ek_public, self.srk_public, hmac_key)
        blob = parts.to_bytes()
        split = aziot_tpm.split_auth_key_blob(blob)
        self.assertEqual(split, dataclasses.replace(parts, inner_key=None))
        for part in (split.credential_blob, split.secret, split.duplicate, split.in_sym_seed,
                     split.public):
            self.assertEqual(int.from_bytes(part[:2], "big"), len(part) - 2)
        # TPM2B_ID_OBJECT: TPM2B_DIGEST integrityHMAC, then the encrypted TPM2B of the 16-byte K
        self.assertEqual(len(split.credential_blob), 2 + (2 + 32) + (2 + 16))
        self.assertEqual(split.credential_blob[2:4], b"\x00\x20")
        # seeds: RSA-2048 OAEP ciphertexts
        self.assertEqual(len(split.secret), 2 + 256)
        self.assertEqual(len(split.in_sym_seed), 2 + 256)
        # TPM2B_PRIVATE: outer HMAC, then (inner integrity, TPM2B_SENSITIVE) encrypted
        sensitive = 2 + (2 + 0) + (2 + 32) + (2 + 32)
        self.assertEqual(len(split.duplicate), 2 + (2 + 32) + (2 + 32) + 2 + sensitive)
        pub = aziot_tpm.parse_public(split.public)
        self.assertEqual(pub.type, aziot_tpm.TPM2_ALG_KEYEDHASH)
        self.assertEqual(pub.name_alg, aziot_tpm.TPM2_ALG_SHA256)
        self.assertEqual(pub.attributes, 0x00040040)  # userWithAuth | sign
        self.assertEqual(pub.scheme, (aziot_tpm.TPM2_ALG_HMAC, aziot_tpm.TPM2_ALG_SHA256))
        self.assertEqual(pub.auth_policy, b"")
        self.assertEqual(len(pub.unique), 32)
        self.assertEqual(len(parts.inner_key), 16)

    def test_make_credential_activates(self):
        credential = secrets.token_bytes(32)
        blob, secret = aziot_tpm.make_credential(self.ek_public, credential,
                                                 aziot_tpm.compute_name(self.srk_public))
        r, out = self.activate(aziot_tpm.AuthKeyBlob(blob, secret, b"", b"", b""))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out, credential)

    # -- and fails where it must

    def test_blob_for_another_ek_fails_activation(self):
        other_ek = aziot_tpm.marshal_public(aziot_tpm.ek_rsa_public(random_modulus()))
        parts = aziot_tpm.make_auth_key(other_ek, self.srk_public, secrets.token_bytes(32))
        r, out = self.activate(parts)
        self.assertNotEqual(r.returncode, 0)
        self.assertIsNone(out)
        self.assertIn("ActivateCredential", r.stderr)
        # swtpm (libtpms 0.9) answers a seed that does not OAEP-decrypt with TPM_RC_FAILURE
        # (0x101, "commands not being accepted because of a TPM failure"), yet is not in failure
        # mode: the next command works. A client must not take that code for a dead TPM.
        self.activated_parts()

    def test_blob_for_another_srk_fails(self):
        # K is bound to the SRK's Name: activation fails; the duplicate would not import either.
        other_srk = aziot_tpm.marshal_public(aziot_tpm.srk_rsa_public(random_modulus()))
        parts = aziot_tpm.make_auth_key(self.ek_public, other_srk, secrets.token_bytes(32))
        r, out = self.activate(parts)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("integrity check failed", r.stderr)
        r, _, _ = self.import_key(parts, parts.inner_key)
        self.assertNotEqual(r.returncode, 0)

    def test_corrupted_duplicate_fails_import(self):
        parts = self.activated_parts()
        # one bit in the encrypted sensitive area, one in the outer HMAC
        for index in (len(parts.duplicate) - 5, 10):
            with self.subTest(index=index):
                bad = dataclasses.replace(parts, duplicate=flip(parts.duplicate, index))
                r, _, _ = self.import_key(bad, parts.inner_key)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("integrity check failed", r.stderr)
        r, _, _ = self.import_key(parts, parts.inner_key)  # the intact one does import
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_wrong_inner_key_fails_import(self):
        parts = self.activated_parts()
        r, _, _ = self.import_key(parts, flip(parts.inner_key, 0))
        self.assertNotEqual(r.returncode, 0)
        # The inner integrity's size field decrypts to garbage: TPM_RC_SIZE (TPM_RC_INTEGRITY
        # in the rare case that it happens to read 32).
        self.assertRegex(r.stderr, "structure is the wrong size|integrity check failed")
        r, _, _ = self.import_key(parts, None)  # no inner key at all
        self.assertNotEqual(r.returncode, 0)
        r, _, _ = self.import_key(parts, parts.inner_key)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_tampered_public_or_seed_fails_import(self):
        parts = self.activated_parts()
        pub = aziot_tpm.parse_public(parts.public)
        noda = dataclasses.replace(pub, attributes=pub.attributes | aziot_tpm.TPMA_OBJECT_NODA)
        bad = dataclasses.replace(parts, public=aziot_tpm.marshal_public(noda))
        r, _, _ = self.import_key(bad, parts.inner_key)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("integrity check failed", r.stderr)  # the Name is in the outer HMAC
        bad = dataclasses.replace(parts, in_sym_seed=flip(parts.in_sym_seed, 100))
        r, _, _ = self.import_key(bad, parts.inner_key)
        self.assertNotEqual(r.returncode, 0)  # TPM_RC_FAILURE from swtpm, see above
        r, _, _ = self.import_key(parts, parts.inner_key)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_fixed_tpm_object_is_refused_by_the_tpm(self):
        # Why the imported key has neither fixedTPM nor fixedParent: duplicate() refuses such an
        # object, and the TPM refuses to import one (here made by hand around that check).
        public, sensitive = aziot_tpm.hmac_key_object(
            secrets.token_bytes(32),
            aziot_tpm.AUTH_KEY_ATTRIBUTES | aziot_tpm.TPMA_OBJECT_FIXEDTPM)
        with self.assertRaises(ValueError):
            aziot_tpm.duplicate(public, sensitive, self.srk_public)
        parts = self.activated_parts()
        allowed = dataclasses.replace(public, attributes=aziot_tpm.AUTH_KEY_ATTRIBUTES)
        dup, seed = aziot_tpm.duplicate(allowed, sensitive, self.srk_public, parts.inner_key)
        fixed = dataclasses.replace(parts, duplicate=dup, in_sym_seed=seed,
                                    public=aziot_tpm.marshal_public(public))
        r, _, _ = self.import_key(fixed, parts.inner_key)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("inconsistent attributes", r.stderr)  # TPM_RC_ATTRIBUTES, objectPublic


class StructureTest(unittest.TestCase):
    """Marshalling and argument checks, without a TPM."""

    def test_split_rejects_truncated_and_trailing(self):
        ek = aziot_tpm.marshal_public(aziot_tpm.ek_rsa_public(random_modulus()))
        srk = aziot_tpm.marshal_public(aziot_tpm.srk_rsa_public(random_modulus()))
        blob = aziot_tpm.make_auth_key_blob(ek, srk, b"k" * 32)
        aziot_tpm.split_auth_key_blob(blob)
        for bad in (b"", blob[:1], blob[:-1], blob + b"\0", blob[:54]):
            with self.subTest(size=len(bad)), self.assertRaises(ValueError):
                aziot_tpm.split_auth_key_blob(bad)

    def test_parse_public_rejects_malformed(self):
        blob = aziot_tpm.marshal_public(aziot_tpm.srk_rsa_public(random_modulus()))
        for bad in (blob[:-1], blob + b"\0", b"\x00\x01\x00", blob[2:],
                    b"\x00\x0a\x00\x99\x00\x0b\x00\x00\x00\x00\x00\x00"):  # type 0x0099
            with self.subTest(bad=bad[:12].hex()), self.assertRaises(ValueError):
                aziot_tpm.parse_public(bad)

    def test_roundtrip_of_other_types(self):
        T = aziot_tpm
        publics = [
            T.TpmPublic(type=T.TPM2_ALG_ECC, name_alg=T.TPM2_ALG_SHA256, attributes=0x00040072,
                        symmetric=None, scheme=(0x0018, T.TPM2_ALG_SHA256), curve=0x0003,
                        kdf=None, unique=(b"x" * 32, b"y" * 32)),
            T.TpmPublic(type=T.TPM2_ALG_ECC, name_alg=T.TPM2_ALG_SHA256, attributes=0x00040072,
                        scheme=(T.TPM2_ALG_ECDAA, T.TPM2_ALG_SHA256, 7), curve=0x0003,
                        kdf=(0x0020, T.TPM2_ALG_SHA256), unique=(b"", b"")),
            T.TpmPublic(type=T.TPM2_ALG_KEYEDHASH, name_alg=T.TPM2_ALG_SHA1, attributes=0x20,
                        scheme=(T.TPM2_ALG_XOR, T.TPM2_ALG_SHA256, 0x0022), unique=b"u" * 20),
            T.TpmPublic(type=T.TPM2_ALG_KEYEDHASH, name_alg=T.TPM2_ALG_SHA256, attributes=0x10,
                        scheme=None, unique=b""),
            T.TpmPublic(type=T.TPM2_ALG_SYMCIPHER, name_alg=T.TPM2_ALG_SHA384, attributes=0x20000,
                        symmetric=(T.TPM2_ALG_AES, 256, T.TPM2_ALG_CFB), unique=b"s" * 48),
            T.TpmPublic(type=T.TPM2_ALG_RSA, name_alg=T.TPM2_ALG_SHA256, attributes=0x40000,
                        scheme=(0x0015,), key_bits=2048, exponent=3, unique=b"n" * 256),
        ]
        for pub in publics:
            with self.subTest(type=pub.type, scheme=pub.scheme):
                blob = T.marshal_public(pub)
                self.assertEqual(T.parse_public(blob), pub)
                name = T.compute_name(blob)
                digest = hashlib.new(T._hash_name(pub.name_alg), blob[2:]).digest()
                self.assertEqual(name, pub.name_alg.to_bytes(2, "big") + digest)

    def test_hmac_key_object(self):
        seed = bytes(range(32))
        public, sensitive = aziot_tpm.hmac_key_object(b"secret", seed_value=seed)
        self.assertEqual(public.unique, hashlib.sha256(seed + b"secret").digest())
        self.assertEqual(sensitive, b"\x00\x08" + b"\x00\x00" + b"\x00\x20" + seed +
                         b"\x00\x06secret")
        for bad in (b"", b"k" * 65):
            with self.assertRaises(ValueError):
                aziot_tpm.hmac_key_object(bad)

    def test_kdfa_sizes(self):
        key = b"seed" * 8
        a = aziot_tpm.kdfa(aziot_tpm.TPM2_ALG_SHA256, key, b"STORAGE", b"name", b"", 128)
        self.assertEqual(len(a), 16)
        b = aziot_tpm.kdfa(aziot_tpm.TPM2_ALG_SHA256, key, b"STORAGE", b"name", b"", 300)
        self.assertEqual(len(b), 38)
        self.assertLess(b[0], 16)  # 300 bits: only the low 4 bits of the first byte
        # the requested size is an input: a longer key is not an extension of a shorter one
        self.assertNotEqual(b[:16], a)
        self.assertNotEqual(
            a, aziot_tpm.kdfa(aziot_tpm.TPM2_ALG_SHA256, key, b"INTEGRITY", b"name", b"", 128))

    def test_parents_must_be_rsa_storage_keys(self):
        modulus = random_modulus()
        signing = dataclasses.replace(aziot_tpm.ek_rsa_public(modulus), attributes=0x00040072)
        with self.assertRaises(ValueError):
            aziot_tpm.make_credential(aziot_tpm.marshal_public(signing), b"k" * 16, b"\0\x0b")
        ecc = aziot_tpm.TpmPublic(type=aziot_tpm.TPM2_ALG_ECC, name_alg=aziot_tpm.TPM2_ALG_SHA256,
                                  attributes=aziot_tpm.SRK_RSA_ATTRIBUTES,
                                  symmetric=aziot_tpm.AES_128_CFB, curve=3, unique=(b"", b""))
        with self.assertRaises(ValueError):
            aziot_tpm.make_auth_key_blob(aziot_tpm.marshal_public(aziot_tpm.ek_rsa_public(modulus)),
                                         aziot_tpm.marshal_public(ecc), b"k" * 32)
        with self.assertRaises(ValueError):  # a credential larger than the EK's digest
            aziot_tpm.make_credential(aziot_tpm.ek_rsa_public(modulus), b"k" * 33, b"\0\x0b")


if __name__ == "__main__":
    unittest.main(verbosity=2)
