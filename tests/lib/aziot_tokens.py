#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Real PKCS#11 tokens for integration tests: a SoftHSM2 token and a tpm2-pkcs11 token on swtpm.

    with SoftHsmToken(tmp) as hsm:                      # tmp/softhsm2.conf, tmp/tokens/
        hsm.keypairgen("device-id", "EC:prime256v1")
        run(keyd, env={**os.environ, **hsm.env})         # the module needs hsm.env (SOFTHSM2_CONF)
        hsm.uri("device-id")            # pkcs11:token=aziot;object=device%2Did?pin-value=1234

    with Tpm2Pkcs11Token(tmp) as tpm:                   # swtpm + tpm2-abrmd + a tpm2-pkcs11 store
        tpm.keypairgen("device-id", "rsa:2048")
        tpm.sign("device-id", digest_info, "RSA-PKCS")

Both objects expose .module (the PKCS#11 library to load), .env (what a process that loads the
module must have in its environment), .label, .pin, .so_pin, .uri(), .slot_id(), .objects(),
.object_info(), .keypairgen(), .secretgen(), .public_key_pem(), .sign(), .verify(), .read_private(),
.key_access(), .probe(), .mechanisms() and .close(); both are context managers that stop what they
started and remove the directories they created. Everything lives under base_dir, nothing under
/etc or the host's /etc/softhsm configuration. Standard library only (ctypes for .probe()); the
tools are softhsm2-util and pkcs11-tool (opensc), swtpm, tpm2-tools, tpm2_ptool and tpm2-abrmd.
The swtpm, and the helpers that run tools and install packages, are aziot_tpm's (.swtpm is the
aziot_tpm.Swtpm). Run with /usr/bin/python3. Failures raise TokenError (an aziot_tpm.TpmError)
with the command and the tool's stderr.

Tool facts this module relies on (Debian 12: opensc 0.23, softhsm2 2.6.1, swtpm 0.7.1,
tpm2-tss 3.2.1, tpm2-tools 5.4, tpm2-pkcs11 1.9.0, tpm2-abrmd 3.0.0), each observed here:

  * pkcs11-tool --sign IGNORES --label: it signs with the first private key of the token (or the
    one with --id). Every helper here therefore resolves the label to CKA_ID and passes --id;
    every key made here gets a random 8-byte id.
  * pkcs11-tool --read-object --type privkey never returns a private key, even an extractable
    one: it prints "sorry, reading private keys not (yet) supported" and EXITS 0. read_private()
    therefore reports failure unless key bytes were written, and the real proof that a key is not
    extractable is key_access() (CKA_SENSITIVE / CKA_EXTRACTABLE as pkcs11-tool -O shows them) or
    probe() reading CKA_VALUE / CKA_PRIVATE_EXPONENT, which must not return a value (SoftHSM:
    CKR_ATTRIBUTE_SENSITIVE; tpm2-pkcs11: see below).
    For secret keys pkcs11-tool does try CKA_VALUE and fails (exit 1) on a sensitive key.
  * pkcs11-tool -O lists every object whatever --label/--id say (only --type filters).
  * pkcs11-tool --verify exits 0 on a bad signature too ("Invalid signature" on stdout); verify()
    reads the message.

SoftHSM2 (SoftHsmToken):
  * softhsm2-util --init-token --free puts the token in a random slot id; it is found by label.
  * pkcs11-tool --keygen --key-type GENERIC:32 (CKM_GENERIC_SECRET_KEY_GEN) and AES:32 work;
    without --sensitive the secret is CKA_SENSITIVE=false but still never extractable. secretgen()
    passes --usage-sign (CKA_SIGN/CKA_VERIFY, needed for CKM_SHA256_HMAC) and --sensitive.
    CKM_SHA256_HMAC sign and verify through the token work on GENERIC keys.
  * pkcs11-tool --write-object --type secrkey --key-type GENERIC:32 fails ("Unknown key type
    0x10"); to know a secret's value, generate it with extractable=True, sensitive=False.

tpm2-pkcs11 on swtpm (Tpm2Pkcs11Token), mechanisms from pkcs11-tool -M on the token:
  * key pairs: CKM_RSA_PKCS_KEY_PAIR_GEN (keySize 1024..3072), CKM_EC_KEY_PAIR_GEN (P-256 tested;
    192..638 advertised), C_GenerateKeyPair through pkcs11-tool works for EC:prime256v1,
    rsa:2048 and rsa:3072.
  * RSA-4096 does NOT work on swtpm 0.7.1: C_GenerateKeyPair -> CKR_ATTRIBUTE_VALUE_INVALID
    ("Keysize 4096 not supported"), and tpm2_ptool addkey --algorithm rsa4096 -> TPM_RC_VALUE
    (0x2c4) from TPM2_Create. The library's mechanism list advertises RSA up to 3072 only.
  * sign: CKM_ECDSA (+ ECDSA-SHA1/256/384/512), CKM_RSA_PKCS, CKM_RSA_X_509, CKM_RSA_PKCS_PSS,
    SHA1/256/384/512-RSA-PKCS(-PSS); encrypt/decrypt: RSA-PKCS, RSA-X-509, RSA-PKCS-OAEP.
    ECDSA returns raw r||s (64 bytes for P-256); ecdsa_raw_to_der() converts for openssl.
  * secret keys: NO CKM_GENERIC_SECRET_KEY_GEN, and C_GenerateKey is not implemented at all
    (pkcs11-tool --keygen AES:32 -> CKR_FUNCTION_NOT_SUPPORTED). HMAC keys come only from
    tpm2_ptool addkey --algorithm hmac:sha256 (CKK_SHA256_HMAC, not CKK_GENERIC_SECRET), which
    secretgen() uses; CKM_SHA256_HMAC (and SHA-1/384/512-HMAC) sign works on them.
  * AES: CKM_AES_KEY_GEN is listed but only reachable through tpm2_ptool addkey aes128/aes256;
    CKM_AES_CBC, CKM_AES_CBC_PAD, CKM_AES_ECB, CKM_AES_CTR, CKM_AES_CFB128 (0x2107). NO CKM_AES_GCM.
  * digests SHA-1/256/384/512; C_GenerateRandom.
  * Private keys are CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL.
    Reading secrets differs from SoftHSM: a private key has no CKA_VALUE / CKA_PRIVATE_EXPONENT
    at all (CKR_ATTRIBUTE_TYPE_INVALID, where SoftHSM says CKR_ATTRIBUTE_SENSITIVE), and CKA_VALUE
    of an HMAC key answers CKR_OK with length 0 (pkcs11-tool: "Needed CKA_VALUE but didn't find
    encrypted blob", exit 0). Portable check: no non-empty value comes back.
  * tpm2_ptool --id is taken as TEXT: --id 05 makes CKA_ID 3035 (hex of "05").

The TPM resource-manager problem, and why tpm2-abrmd runs by default:
  swtpm (libtpms) holds only 3 loaded transient objects, and without a resource manager nothing
  swaps them out. tpm2_ptool addtoken alone needs more: it dies with TPM_RC 0x902 "out of memory
  for object contexts" (tpm2-tools leave every object they load in the TPM). The tpm2-pkcs11
  library flushes its objects when a process finalizes, but keeps each key it has used loaded
  while the process runs: pkcs11-tool --test with 3 keys failed with 0x902 in Esys_LoadExternal,
  and probe() signing with EC, RSA-2048, RSA-3072 and HMAC keys in one session got CKR_OK twice,
  then CKR_GENERAL_ERROR from C_SignInit (with tpm2-abrmd: CKR_OK four times). Across processes
  too: while one process held a session in which it had signed with two keys, a second process
  could not even C_Login (CKR_GENERAL_ERROR; Esys_StartAuthSession 0x902 "Error unsealing
  wrapping key"); with tpm2-abrmd both worked. So a keyd that uses more than two keys, or a test
  that signs while keyd holds keys, hits the wall, and a killed process leaks its objects until
  flush_transients(). So by default
  (resource_manager=True) this module runs tpm2-abrmd --session --allow-root on a private
  dbus-daemon --session and every TPM user (tpm2_ptool, pkcs11-tool, the module) goes through
  TCTI "tabrmd:bus_type=session"; the env then also carries DBUS_SESSION_BUS_ADDRESS.
  With resource_manager=False the TCTI is "swtpm:path=<base>/swtpm.sock" directly, and tpm2_ptool
  runs with tpm2-tools wrappers on PATH that flush all transient objects after every tool (which
  would also flush a concurrently running module user's objects: run tpm2_ptool-based helpers,
  i.e. secretgen(), only while no other process uses the token). flush_transients() clears what a
  killed process leaked. (Several processes can use one swtpm socket: a process with the module
  initialized and logged in did not block tpm2_getrandom from another; they only compete for
  the object slots.)

Debian packages: the fixtures install what they need when it is missing (as root, apt-get
install --no-install-recommends, serialized by a lock; SOFTHSM_PACKAGES, SWTPM_PACKAGES and
TPM2_PKCS11_PACKAGES, the last being what ./dev should add: libtpm2-pkcs11-1,
libtpm2-pkcs11-tools, tpm2-abrmd, libtss2-tcti-tabrmd0). Installing libtpm2-pkcs11-1 also registers
/usr/share/p11-kit/modules/tpm2_pkcs11.module (seen by p11-kit-proxy users, if any), and
tpm2-abrmd ships a system-bus activation file and /etc/dbus-1/system.d/tpm2-abrmd.conf (used
only by a real system bus; the fixture uses its own session bus).
"""

import contextlib
import ctypes
import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import aziot_tpm
from aziot_tpm import (  # noqa: F401  (re-exported: users of this module name them here)
    APT_LOCK, DEFAULT_TIMEOUT, SUN_PATH_MAX, SWTPM_PACKAGES, TOOL_TIMEOUT, Swtpm, TpmError,
    _tail, missing_packages)
from aziot_tpm import pdeathsig as _pdeathsig
from aziot_tpm import read_text as _read
from aziot_tpm import stop_process as _stop_process

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SOFTHSM_PACKAGES = ["softhsm2", "opensc"]
# The tpm2-pkcs11 library and tpm2_ptool, plus tpm2-abrmd and its TCTI (resource_manager=True).
TPM2_PKCS11_CORE_PACKAGES = ["libtpm2-pkcs11-1", "libtpm2-pkcs11-tools"]
TPM2_ABRMD_PACKAGES = ["tpm2-abrmd", "libtss2-tcti-tabrmd0"]
TPM2_PKCS11_PACKAGES = TPM2_PKCS11_CORE_PACKAGES + TPM2_ABRMD_PACKAGES

KEY_TYPES = ("EC:prime256v1", "EC:secp384r1", "rsa:2048", "rsa:3072", "rsa:4096")

HERE = os.path.dirname(os.path.abspath(__file__))


class TokenError(TpmError):
    """A step of setting up or using a token failed; the message has the command and its output."""


@contextlib.contextmanager
def _token_errors():
    """What fails in aziot_tpm (tools, packages, swtpm) fails here as a TokenError."""
    try:
        yield
    except TokenError:
        raise
    except TpmError as e:
        raise TokenError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# helpers


def pct(value):
    """RFC 7512 value encoding as the project's pkcs11-uri.c does it: every byte that is not an
    ASCII letter or digit becomes %XX."""
    out = []
    for b in str(value).encode("utf-8"):
        c = chr(b)
        out.append(c if c.isascii() and c.isalnum() else f"%{b:02X}")
    return "".join(out)


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_int(value):
    body = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    if body[0] & 0x80:
        body = b"\x00" + body
    return b"\x02" + _der_len(len(body)) + body


def ecdsa_raw_to_der(sig):
    """PKCS#11 CKM_ECDSA output (r || s, equal halves) -> DER ECDSA-Sig-Value (what openssl
    verifies)."""
    if not sig or len(sig) % 2:
        raise ValueError(f"raw ECDSA signature must have an even, non-zero length, got {len(sig)}")
    half = len(sig) // 2
    r = int.from_bytes(sig[:half], "big")
    s = int.from_bytes(sig[half:], "big")
    body = _der_int(r) + _der_int(s)
    return b"\x30" + _der_len(len(body)) + body


SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def rsa_pkcs1_digest_info(sha256_digest):
    """The input CKM_RSA_PKCS needs to sign a SHA-256 digest (DigestInfo, PKCS#1 v1.5)."""
    return SHA256_DIGEST_INFO + sha256_digest


def run_tool(cmd, env=None, what=None, check=True, input=None, timeout=TOOL_TIMEOUT):
    """Runs cmd (text mode) and returns the CompletedProcess; raises TokenError with the command,
    exit status, stdout and stderr when check and it fails or cannot be started."""
    with _token_errors():
        return aziot_tpm.run_tool(cmd, env=env, what=what, check=check, input=input,
                                  timeout=timeout)


def ensure_packages(packages):
    """Installs the Debian packages that are missing (quietly, idempotently, once at a time across
    processes). Needs root when something is missing."""
    with _token_errors():
        aziot_tpm.ensure_packages(packages)


def find_tpm2_pkcs11_module():
    """The tpm2-pkcs11 library as Debian installs it (…/pkcs11/libtpm2_pkcs11.so, a link to
    libtpm2_pkcs11.so.1)."""
    patterns = ["/usr/lib/*/pkcs11/libtpm2_pkcs11.so", "/usr/lib/*/libtpm2_pkcs11.so.1",
                "/usr/lib/pkcs11/libtpm2_pkcs11.so", "/usr/lib/*/libtpm2_pkcs11.so*",
                "/usr/local/lib/*/pkcs11/libtpm2_pkcs11.so", "/usr/local/lib/libtpm2_pkcs11.so*"]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if os.path.exists(path):
                return path
    raise TokenError("libtpm2_pkcs11.so not found; install " + " ".join(TPM2_PKCS11_CORE_PACKAGES))


def _parse_objects(text):
    """pkcs11-tool -O output -> [{'class', 'type', 'label', 'id', 'usage', 'access'}]."""
    classes = (("Private Key Object", "privkey"), ("Public Key Object", "pubkey"),
               ("Secret Key Object", "secrkey"), ("Certificate Object", "cert"),
               ("Data object", "data"), ("Profile object", "profile"))
    objs = []
    cur = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            cur = None
            for prefix, cls in classes:
                if line.startswith(prefix):
                    rest = line[len(prefix):].lstrip(";").strip()
                    cur = {"class": cls, "type": rest, "label": None, "id": None,
                           "usage": set(), "access": set()}
                    objs.append(cur)
                    break
            continue
        if cur is None:
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == "label":
            cur["label"] = value
        elif key == "id":
            cur["id"] = value.lower()
        elif key in ("usage", "access"):
            cur[key] = {v.strip() for v in value.split(",") if v.strip() not in ("", "none")}
    return objs


def _parse_slots(text):
    """pkcs11-tool -L output -> [(slot_id, token_label or None)]."""
    slots = []
    for line in text.splitlines():
        m = re.match(r"^Slot \d+ \((0x[0-9a-fA-F]+)\):", line)
        if m:
            slots.append([int(m.group(1), 16), None])
            continue
        m = re.match(r"^\s+token label\s*:\s?(.*)$", line)
        if m and slots:
            slots[-1][1] = m.group(1).strip()
    return [tuple(s) for s in slots]


# ---------------------------------------------------------------------------------------------
# the common part


class _Pkcs11Token:
    module = None
    label = None
    pin = None
    so_pin = None

    def __init__(self, base_dir):
        self.base_dir = os.path.abspath(base_dir)
        # The topmost directory this creates (base_dir or an ancestor), removed by close().
        self._created_top = None
        top = self.base_dir
        while not os.path.isdir(top):
            self._created_top = top
            top = os.path.dirname(top)
        os.makedirs(self.base_dir, exist_ok=True)
        self.env = {}
        self._tool_env_extra = {}
        self._closed = False
        self._made = []  # paths created here, removed on close()

    # -- process environment

    def tool_env(self):
        """os.environ plus what the module and the tools need: for running a client by hand."""
        env = dict(os.environ)
        env.update(self.env)
        env.update(self._tool_env_extra)
        return env

    def _tmpfile(self, suffix=""):
        fd, path = tempfile.mkstemp(suffix=suffix, dir=self._tmp_dir)
        os.close(fd)
        return path

    # -- pkcs11-tool

    def pkcs11_tool(self, args, login=True, check=True, what=None, token=True):
        cmd = ["pkcs11-tool", "--module", self.module]
        if token:
            cmd += ["--token-label", self.label]
        if login:
            cmd += ["--login", "--pin", self.pin]
        cmd += list(args)
        return run_tool(cmd, env=self.tool_env(), check=check, what=what or "pkcs11-tool")

    def slot_id(self):
        """The PKCS#11 slot id (CK_SLOT_ID) of the token, from pkcs11-tool -L."""
        r = self.pkcs11_tool(["-L"], login=False, token=False, what="listing slots")
        for slot, label in _parse_slots(r.stdout):
            if label == self.label:
                return slot
        raise TokenError(f"no slot holds token {self.label!r}; pkcs11-tool -L said:\n{r.stdout}")

    def uri(self, object=None, pin=True, slot_id=False):
        """pkcs11:token=<label>[;object=<obj>][?pin-value=<pin>] (slot-id=<n> instead of token= with
        slot_id=True), values percent-encoded like services/keys/pkcs11-uri.c does."""
        path = f"slot-id={self.slot_id()}" if slot_id else f"token={pct(self.label)}"
        if object is not None:
            path += f";object={pct(object)}"
        return f"pkcs11:{path}" + (f"?pin-value={pct(self.pin)}" if pin else "")

    def object_info(self):
        """Every object of the token (after login) as dicts: class (privkey, pubkey, secrkey,
        cert, data), type, label, id (hex), usage (set), access (set: sensitive, always sensitive,
        never extractable or extractable, local)."""
        r = self.pkcs11_tool(["-O"], what=f"listing objects of token {self.label!r}")
        return _parse_objects(r.stdout)

    def objects(self):
        """Sorted labels of the token's objects (a key pair's label once)."""
        return sorted({o["label"] for o in self.object_info() if o["label"] is not None})

    def find(self, label, classes=("privkey", "secrkey", "pubkey", "cert", "data")):
        """The first object with this label, by class preference; TokenError if none."""
        objs = [o for o in self.object_info() if o["label"] == label]
        for cls in classes:
            for o in objs:
                if o["class"] == cls:
                    return o
        raise TokenError(f"token {self.label!r} has no {'/'.join(classes)} object labelled "
                         f"{label!r} (labels: {sorted({o['label'] for o in self.object_info()})})")

    def key_id(self, label):
        """CKA_ID (hex) of the key labelled so."""
        o = self.find(label, ("privkey", "secrkey", "pubkey"))
        if not o["id"]:
            raise TokenError(f"object {label!r} has no CKA_ID")
        return o["id"]

    def key_access(self, label):
        """The access flags of the private or secret key: e.g. {'sensitive', 'always sensitive',
        'never extractable', 'local'} for a key that can never leave the token."""
        return set(self.find(label, ("privkey", "secrkey"))["access"])

    def mechanisms(self):
        """Mechanism names as pkcs11-tool -M prints them (e.g. 'ECDSA', 'SHA256-HMAC',
        'mechtype-0x2107' for ones opensc has no name for)."""
        r = self.pkcs11_tool(["-M"], login=False, what="listing mechanisms")
        names = []
        for line in r.stdout.splitlines()[1:]:
            if line.startswith("  "):
                names.append(line.strip().split(",")[0].strip())
        return names

    # -- keys

    def keypairgen(self, label, key_type):
        """Generates a key pair on the token (C_GenerateKeyPair via pkcs11-tool) with a random
        CKA_ID; returns the id (hex)."""
        if key_type not in KEY_TYPES:
            raise ValueError(f"key_type must be one of {KEY_TYPES}, not {key_type!r}")
        key_id = secrets.token_hex(8)
        self.pkcs11_tool(["--keypairgen", "--key-type", key_type, "--label", label, "--id", key_id],
                         what=f"generating {key_type} key pair {label!r} on {self.label!r}")
        return key_id

    def public_key_der(self, label):
        key_id = self.find(label, ("pubkey",))["id"]
        out = self._tmpfile(".der")
        try:
            self.pkcs11_tool(["--read-object", "--type", "pubkey", "--id", key_id, "-o", out],
                             what=f"reading public key {label!r}")
            with open(out, "rb") as f:
                return f.read()
        finally:
            os.unlink(out)

    def public_key_pem(self, label):
        """The public key as PEM (SubjectPublicKeyInfo), converted by openssl pkey."""
        der = self.public_key_der(label)
        r = subprocess.run(["openssl", "pkey", "-pubin", "-inform", "DER", "-outform", "PEM"],
                           input=der, capture_output=True)
        if r.returncode != 0:
            raise TokenError(f"openssl pkey could not read public key {label!r}: "
                             f"{r.stderr.decode(errors='replace')}")
        return r.stdout.decode()

    def sign(self, label, data, mechanism):
        """Signs data with the private or secret key labelled so, through pkcs11-tool (by CKA_ID,
        as --sign ignores --label). ECDSA gives raw r||s; RSA-PKCS wants a DigestInfo."""
        key_id = self.key_id(label)
        inp = self._tmpfile(".in")
        out = self._tmpfile(".sig")
        try:
            with open(inp, "wb") as f:
                f.write(data)
            self.pkcs11_tool(["--sign", "--mechanism", mechanism, "--id", key_id, "-i", inp,
                              "-o", out], what=f"signing with {label!r} ({mechanism})")
            with open(out, "rb") as f:
                return f.read()
        finally:
            os.unlink(inp)
            os.unlink(out)

    def verify(self, label, data, signature, mechanism):
        """Verifies a signature through the token (C_Verify via pkcs11-tool --verify, by CKA_ID;
        the public key of a pair, the key itself for HMAC). True or False; pkcs11-tool exits 0
        either way, so its message decides."""
        o = self.find(label, ("pubkey", "secrkey", "privkey"))
        inp = self._tmpfile(".in")
        sig = self._tmpfile(".sig")
        try:
            with open(inp, "wb") as f:
                f.write(data)
            with open(sig, "wb") as f:
                f.write(signature)
            r = self.pkcs11_tool(["--verify", "--mechanism", mechanism, "--id", o["id"], "-i", inp,
                                  "--signature-file", sig], check=False)
        finally:
            os.unlink(inp)
            os.unlink(sig)
        if "Signature is valid" in r.stdout:
            return True
        if "Invalid signature" in r.stdout:
            return False
        raise TokenError(f"verifying with {label!r} ({mechanism}) failed (exit {r.returncode}):\n"
                         f"stdout: {_tail(r.stdout)}\nstderr: {_tail(r.stderr)}")

    def read_private(self, label):
        """Tries to read the private (or secret) key out of the token with pkcs11-tool
        --read-object --type privkey|secrkey --login. Returns the CompletedProcess; returncode is
        forced non-zero when no key bytes came out, as pkcs11-tool exits 0 on private keys it
        refuses to read ("reading private keys not (yet) supported"). .key holds the bytes read."""
        o = self.find(label, ("privkey", "secrkey"))
        out = self._tmpfile(".key")
        os.unlink(out)
        try:
            r = self.pkcs11_tool(["--read-object", "--type", o["class"], "--id", o["id"],
                                  "-o", out], check=False)
            data = b""
            if os.path.exists(out):
                with open(out, "rb") as f:
                    data = f.read()
        finally:
            if os.path.exists(out):
                os.unlink(out)
        if r.returncode == 0 and not data:
            r.returncode = 1
            r.stderr += "\n(aziot_tokens: pkcs11-tool wrote no key material)"
        r.key = data
        return r

    def probe(self, ops):
        """Runs PKCS#11 operations in ONE separate process (ctypes, this module's --probe) that
        loads self.module with self.env, logs in and keeps its session across ops. Each op is a
        dict: {"op": "attr", "label": L, "class": "private"|"secret"|"public" (default: the
        private key, else the secret key of that label),
        "attrs": ["CKA_VALUE", ...]} -> {attr: {"rv": "CKR_...", "len": n, "hex": value (when
        rv is CKR_OK and n > 0)}}, or {"op": "sign",
        "label": L, "class": ..., "mechanism": "ECDSA"|int, "data": bytes} -> {"rv", "sig"
        (bytes)}; to hold the session while another process works: {"op": "sleep", "seconds":
        n} -> {}, {"op": "touch", "path": p} -> {}, {"op": "wait", "path": p, "timeout": s} ->
        {"found": bool}. Returns the list of results."""
        spec = {"module": self.module, "token": self.label, "pin": self.pin, "ops": []}
        for op in ops:
            op = dict(op)
            if isinstance(op.get("data"), (bytes, bytearray)):
                op["data"] = bytes(op["data"]).hex()
            spec["ops"].append(op)
        r = run_tool(["/usr/bin/python3", os.path.join(HERE, "aziot_tokens.py"), "--probe"],
                     env=self.tool_env(), input=json.dumps(spec), check=False)
        try:
            answer = json.loads(r.stdout)
        except ValueError:
            raise TokenError(f"probe failed (exit {r.returncode}):\nstdout: {_tail(r.stdout)}\n"
                             f"stderr: {_tail(r.stderr)}") from None
        if "error" in answer:
            raise TokenError(f"probe: {answer['error']}\nstderr: {_tail(r.stderr)}")
        results = answer["results"]
        for res in results:
            if "sig_hex" in res:
                res["sig"] = bytes.fromhex(res.pop("sig_hex"))
        return results

    # -- lifetime

    def _rmtree(self, path):
        shutil.rmtree(path, ignore_errors=True)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._stop()
        for path in reversed(self._made):
            if os.path.isdir(path) and not os.path.islink(path):
                self._rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        if self._created_top:
            self._rmtree(self._created_top)

    def _stop(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# SoftHSM2


class SoftHsmToken(_Pkcs11Token):
    """A SoftHSM2 token with its own configuration under base_dir (softhsm2.conf, tokens/), so the
    host's /etc/softhsm does not matter. A process that loads .module must get .env
    (SOFTHSM2_CONF)."""

    def __init__(self, base_dir, label="aziot", pin="1234", so_pin="12345678", install=True):
        super().__init__(base_dir)
        self.module = SOFTHSM_MODULE
        self.label = label
        self.pin = pin
        self.so_pin = so_pin
        try:
            if install:
                ensure_packages(SOFTHSM_PACKAGES)
            if not os.path.exists(self.module):
                raise TokenError(f"{self.module} is missing (package softhsm2)")
            self.conf = os.path.join(self.base_dir, "softhsm2.conf")
            self.token_dir = os.path.join(self.base_dir, "tokens")
            self._tmp_dir = os.path.join(self.base_dir, "tmp")
            for path in (self.token_dir, self._tmp_dir):
                if not os.path.isdir(path):
                    os.makedirs(path, mode=0o700)
                    self._made.append(path)
            if not os.path.exists(self.conf):
                self._made.append(self.conf)
            with open(self.conf, "w") as f:
                f.write(f"directories.tokendir = {self.token_dir}\n"
                        "objectstore.backend = file\n"
                        "log.level = ERROR\n"
                        "slots.removable = false\n")
            self.env = {"SOFTHSM2_CONF": self.conf}
            run_tool(["softhsm2-util", "--init-token", "--free", "--label", label,
                      "--so-pin", so_pin, "--pin", pin], env=self.tool_env(),
                     what=f"softhsm2-util --init-token {label!r}")
        except BaseException:
            self.close()
            raise

    def slot_id(self):
        """The token's slot id (random, chosen by softhsm2-util), from softhsm2-util
        --show-slots."""
        r = run_tool(["softhsm2-util", "--show-slots"], env=self.tool_env(), what="show-slots")
        slot = None
        for line in r.stdout.splitlines():
            m = re.match(r"^Slot (\d+)\s*$", line)
            if m:
                slot = int(m.group(1))
                continue
            m = re.match(r"^\s+Label:\s+(.*?)\s*$", line)
            if m and slot is not None and m.group(1) == self.label:
                return slot
        return super().slot_id()

    def secretgen(self, label, key_type="GENERIC:32", sensitive=True, extractable=False):
        """Generates a secret key (C_GenerateKey: GENERIC:n = CKM_GENERIC_SECRET_KEY_GEN, or
        AES:n) usable for CKM_SHA256_HMAC (CKA_SIGN/CKA_VERIFY set); returns its id (hex)."""
        kind = key_type.split(":")[0].upper()
        if kind not in ("GENERIC", "AES"):
            raise ValueError(f"secret key_type must be GENERIC:<bytes> or AES:<bytes>, "
                             f"not {key_type!r}")
        key_id = secrets.token_hex(8)
        args = ["--keygen", "--key-type", key_type, "--label", label, "--id", key_id,
                "--usage-sign"]
        if sensitive:
            args.append("--sensitive")
        if extractable:
            args.append("--extractable")
        self.pkcs11_tool(args, what=f"generating {key_type} secret {label!r}")
        return key_id

    def remove(self):
        """Deletes the token's files: to the module the token is gone (as if unplugged)."""
        shutil.rmtree(self.token_dir, ignore_errors=True)
        os.makedirs(self.token_dir, mode=0o700, exist_ok=True)


# ---------------------------------------------------------------------------------------------
# tpm2-pkcs11 on swtpm


class Tpm2Pkcs11Token(_Pkcs11Token):
    """A tpm2-pkcs11 token on a private swtpm (see the module docstring for what works).

    Under base_dir: swtpm/ (state, log, pid file), store/ (the tpm2-pkcs11 sqlite store), and with
    resource_manager: bus/ (a private session dbus-daemon) and tpm2-abrmd's log. Sockets go to a
    short directory in /tmp when base_dir is too long for a Unix socket path. swtpm, tpm2-abrmd
    and dbus-daemon are children of this process (not daemons), stopped by close() and sent
    SIGTERM by the kernel if this process dies.

    .env for a process that loads .module: TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI, TSS2_LOG (quiet)
    and, with the resource manager, DBUS_SESSION_BUS_ADDRESS. .tcti is the TCTI string, usable as
    TPM2TOOLS_TCTI for tpm2-tools."""

    def __init__(self, base_dir, label="aziot-tpm", pin="1234", so_pin="12345678",
                 resource_manager=True, quiet=True, install=True):
        super().__init__(base_dir)
        self.label = label
        self.pin = pin
        self.so_pin = so_pin
        self.resource_manager = resource_manager
        self.swtpm = None  # an aziot_tpm.Swtpm
        self._abrmd = self._bus = None
        self._sock_dir = None
        self.timings = {}
        try:
            if install:
                ensure_packages(SWTPM_PACKAGES + TPM2_PKCS11_CORE_PACKAGES +
                                (TPM2_ABRMD_PACKAGES if resource_manager else []))
            self.module = find_tpm2_pkcs11_module()
            self._setup(quiet)
        except BaseException:
            self.close()
            raise

    @property
    def _swtpm(self):
        """The swtpm process (a subprocess.Popen), None before it started."""
        return self.swtpm.process if self.swtpm is not None else None

    def _mkdir(self, path):
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o700)
            self._made.append(path)
        return path

    def _setup(self, quiet):
        t0 = time.monotonic()
        tpm_dir = self._mkdir(os.path.join(self.base_dir, "swtpm"))
        self.store = self._mkdir(os.path.join(self.base_dir, "store"))
        self._tmp_dir = self._mkdir(os.path.join(self.base_dir, "tmp"))
        sock_dir = tpm_dir
        if len(os.path.join(tpm_dir, "bus", "session_bus_socket")) > SUN_PATH_MAX - 8:
            sock_dir = self._sock_dir = tempfile.mkdtemp(prefix="aziot-tpm-", dir="/tmp")

        # 1. swtpm, a child process (state, logs and pid file in tpm_dir)
        with _token_errors():
            self.swtpm = Swtpm(tpm_dir, socket_dir=sock_dir, install=False)
            self.swtpm.start()
        self.swtpm_socket = self.swtpm.socket
        self.swtpm_log = self.swtpm.log
        direct_tcti = self.swtpm.tcti
        self.timings["swtpm"] = time.monotonic() - t0

        # 2. optionally a resource manager: tpm2-abrmd on a private session bus
        if self.resource_manager:
            t1 = time.monotonic()
            bus_dir = self._mkdir(os.path.join(sock_dir if self._sock_dir else tpm_dir, "bus"))
            bus_socket = os.path.join(bus_dir, "session_bus_socket")
            bus_log = os.path.join(tpm_dir, "dbus-daemon.log")
            self._made.append(bus_log)
            with open(bus_log, "w") as blog:
                self._bus = subprocess.Popen(
                    ["dbus-daemon", "--session", "--nofork", "--nopidfile",
                     f"--address=unix:path={bus_socket}", "--print-address=1"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=blog,
                    preexec_fn=_pdeathsig, text=True)
            line = self._bus.stdout.readline()  # printed once it listens
            if not line.startswith("unix:"):
                raise TokenError(f"private dbus-daemon did not start: {_read(bus_log)}")
            self.bus_address = f"unix:path={bus_socket}"
            self.abrmd_log = os.path.join(tpm_dir, "tpm2-abrmd.log")
            self._made.append(self.abrmd_log)
            with open(self.abrmd_log, "w") as alog:
                self._abrmd = subprocess.Popen(
                    ["tpm2-abrmd", "--session", "--allow-root", "--flush-all",
                     f"--tcti=swtpm:path={self.swtpm_socket}"],
                    stdin=subprocess.DEVNULL, stdout=alog, stderr=alog, preexec_fn=_pdeathsig,
                    env=dict(os.environ, DBUS_SESSION_BUS_ADDRESS=self.bus_address))
            self.tcti = "tabrmd:bus_type=session"
            self.env = {"DBUS_SESSION_BUS_ADDRESS": self.bus_address}
            self._wait_tpm(self.tcti, self._abrmd, self.abrmd_log, "tpm2-abrmd")
            self.timings["tpm2-abrmd"] = time.monotonic() - t1
        else:
            self.tcti = direct_tcti
            # tpm2-tools leave loaded objects behind; without a resource manager the TPM's
            # three slots run out inside one tpm2_ptool command, so flush after each tool.
            self._flush_bin = self._mkdir(os.path.join(self.base_dir, "flush-bin"))
            self._write_flush_wrappers()

        self.env.update({
            "TPM2_PKCS11_STORE": self.store,
            "TPM2_PKCS11_TCTI": self.tcti,
        })
        if quiet:
            self.env["TSS2_LOG"] = "all+NONE"
        # Our own tool runs: the tools' TCTI, errors (not warnings) from the TSS, temp files here.
        self._tool_env_extra = {"TPM2TOOLS_TCTI": self.tcti, "TSS2_LOG": "all+ERROR",
                                "TMPDIR": self._tmp_dir}

        # 3. the store and the token
        t2 = time.monotonic()
        r = self._ptool(["init", "--path", self.store], "tpm2_ptool init")
        m = re.search(r"^id:\s*(\d+)", r.stdout, re.M)
        if not m:
            raise TokenError(f"tpm2_ptool init printed no primary id:\n{r.stdout}\n{r.stderr}")
        self.primary_id = int(m.group(1))
        self._ptool(["addtoken", "--pid", str(self.primary_id), "--label", self.label,
                     "--userpin", self.pin, "--sopin", self.so_pin, "--path", self.store],
                    f"tpm2_ptool addtoken {self.label!r}")
        self.timings["store+token"] = time.monotonic() - t2
        self.timings["total"] = time.monotonic() - t0

    def _write_flush_wrappers(self):
        for tool in sorted(glob.glob("/usr/bin/tpm2_*")):
            name = os.path.basename(tool)
            if name in ("tpm2_ptool", "tpm2_flushcontext"):
                continue
            path = os.path.join(self._flush_bin, name)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\n"{tool}" "$@"\nrc=$?\n'
                        '/usr/bin/tpm2_flushcontext -t >/dev/null 2>&1\nexit $rc\n')
            os.chmod(path, 0o755)

    def _ptool_env(self):
        env = self.tool_env()
        if not self.resource_manager:
            env["PATH"] = self._flush_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        return env

    def _ptool(self, args, what):
        return run_tool(["tpm2_ptool"] + list(args), env=self._ptool_env(), what=what)

    def _wait_tpm(self, tcti, proc, log, what, timeout=DEFAULT_TIMEOUT):
        """Waits until tpm2_getrandom answers through tcti (proc serves it, log is its log)."""
        env = dict(os.environ, TPM2TOOLS_TCTI=tcti)
        if self.resource_manager and tcti.startswith("tabrmd"):
            env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        with _token_errors():
            aziot_tpm.wait_tpm_ready(env, proc, log, what, timeout)

    def tpm2_tool(self, args, check=True, what=None):
        """Runs a tpm2-tools command against this TPM (through the resource manager if any)."""
        return run_tool(list(args), env=self.tool_env(), check=check, what=what or args[0])

    def transient_handles(self):
        r = self.tpm2_tool(["tpm2_getcap", "handles-transient"])
        return [line.strip("- ").strip() for line in r.stdout.splitlines() if line.strip()]

    def flush_transients(self):
        """Flushes every transient object and session in the TPM (without a resource manager,
        what a killed module user leaked). Only while no other process uses the TPM."""
        for flag in ("-t", "-l", "-s"):
            self.tpm2_tool(["tpm2_flushcontext", flag], check=False)

    def secretgen(self, label, key_type="hmac:sha256"):
        """Adds a secret key with tpm2_ptool addkey (the library has no C_GenerateKey):
        hmac:sha1|sha256|sha384|sha512 (CKK_*_HMAC, for CKM_SHA*_HMAC) or aes128|aes256.
        Returns its CKA_ID (hex of the ASCII id given to tpm2_ptool)."""
        allowed = ("hmac:sha1", "hmac:sha256", "hmac:sha384", "hmac:sha512", "aes128", "aes256")
        if key_type not in allowed:
            raise ValueError(f"tpm2 secret key_type must be one of {allowed}, not {key_type!r}")
        text_id = secrets.token_hex(4)
        self._ptool(["addkey", "--label", self.label, "--key-label", label, "--id", text_id,
                     "--userpin", self.pin, "--algorithm", key_type, "--path", self.store],
                    f"tpm2_ptool addkey {key_type} {label!r}")
        return text_id.encode().hex()

    def ptool_addkey(self, label, algorithm):
        """tpm2_ptool addkey for any algorithm it knows (rsa1024..rsa4096, ecc224..ecc521, ...)."""
        text_id = secrets.token_hex(4)
        self._ptool(["addkey", "--label", self.label, "--key-label", label, "--id", text_id,
                     "--userpin", self.pin, "--algorithm", algorithm, "--path", self.store],
                    f"tpm2_ptool addkey {algorithm} {label!r}")
        return text_id.encode().hex()

    def _stop(self):
        _stop_process(self._abrmd)
        if self._bus is not None:
            _stop_process(self._bus)
            if self._bus.stdout:
                self._bus.stdout.close()
        if self.swtpm is not None:
            self.swtpm.close()
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# --probe: a minimal ctypes PKCS#11 client, run in its own process by _Pkcs11Token.probe()

CKR_NAMES = {
    0x0: "CKR_OK", 0x3: "CKR_SLOT_ID_INVALID", 0x5: "CKR_GENERAL_ERROR",
    0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD", 0x11: "CKR_ATTRIBUTE_SENSITIVE",
    0x12: "CKR_ATTRIBUTE_TYPE_INVALID", 0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
    0x20: "CKR_DATA_INVALID", 0x21: "CKR_DATA_LEN_RANGE", 0x30: "CKR_DEVICE_ERROR",
    0x31: "CKR_DEVICE_MEMORY", 0x32: "CKR_DEVICE_REMOVED", 0x54: "CKR_FUNCTION_NOT_SUPPORTED",
    0x60: "CKR_KEY_HANDLE_INVALID", 0x62: "CKR_KEY_SIZE_RANGE", 0x63: "CKR_KEY_TYPE_INCONSISTENT",
    0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED", 0x70: "CKR_MECHANISM_INVALID",
    0x71: "CKR_MECHANISM_PARAM_INVALID", 0x82: "CKR_OBJECT_HANDLE_INVALID",
    0x90: "CKR_OPERATION_ACTIVE", 0x91: "CKR_OPERATION_NOT_INITIALIZED", 0xA0: "CKR_PIN_INCORRECT",
    0xB3: "CKR_SESSION_HANDLE_INVALID", 0xE0: "CKR_TOKEN_NOT_PRESENT",
    0x100: "CKR_USER_ALREADY_LOGGED_IN", 0x101: "CKR_USER_NOT_LOGGED_IN",
    0x150: "CKR_BUFFER_TOO_SMALL", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
}
CKA = {
    "CKA_CLASS": 0x0, "CKA_TOKEN": 0x1, "CKA_PRIVATE": 0x2, "CKA_LABEL": 0x3, "CKA_VALUE": 0x11,
    "CKA_KEY_TYPE": 0x100, "CKA_ID": 0x102, "CKA_SENSITIVE": 0x103, "CKA_SIGN": 0x108,
    "CKA_VERIFY": 0x10A, "CKA_MODULUS": 0x120, "CKA_PUBLIC_EXPONENT": 0x122,
    "CKA_PRIVATE_EXPONENT": 0x123, "CKA_PRIME_1": 0x124, "CKA_VALUE_LEN": 0x161,
    "CKA_EXTRACTABLE": 0x162, "CKA_LOCAL": 0x163, "CKA_NEVER_EXTRACTABLE": 0x164,
    "CKA_ALWAYS_SENSITIVE": 0x165, "CKA_EC_PARAMS": 0x180, "CKA_EC_POINT": 0x181,
}
CKO = {"data": 0, "cert": 1, "public": 2, "pubkey": 2, "private": 3, "privkey": 3,
       "secret": 4, "secrkey": 4}
CKM = {"RSA-PKCS": 0x1, "RSA-X-509": 0x3, "RSA-PKCS-PSS": 0xD, "SHA256-RSA-PKCS": 0x40,
       "ECDSA": 0x1041, "ECDSA-SHA256": 0x1044, "SHA256-HMAC": 0x251, "SHA-1-HMAC": 0x221,
       "SHA384-HMAC": 0x261, "SHA512-HMAC": 0x271}


class _CkAttribute(ctypes.Structure):
    _fields_ = [("type", ctypes.c_ulong), ("pValue", ctypes.c_void_p),
                ("ulValueLen", ctypes.c_ulong)]


class _CkMechanism(ctypes.Structure):
    _fields_ = [("mechanism", ctypes.c_ulong), ("pParameter", ctypes.c_void_p),
                ("ulParameterLen", ctypes.c_ulong)]


def _probe_main():
    spec = json.load(sys.stdin)
    ul = ctypes.c_ulong
    lib = ctypes.CDLL(spec["module"])
    for name in ("C_Initialize", "C_Finalize", "C_GetSlotList", "C_GetTokenInfo",
                 "C_OpenSession", "C_Login", "C_FindObjectsInit", "C_FindObjects",
                 "C_FindObjectsFinal", "C_GetAttributeValue", "C_SignInit", "C_Sign",
                 "C_CloseSession"):
        getattr(lib, name).restype = ul

    def ck(rv, what):
        if rv != 0:
            raise RuntimeError(f"{what}: {CKR_NAMES.get(rv, hex(rv))}")

    ck(lib.C_Initialize(None), "C_Initialize")
    try:
        n = ul(0)
        ck(lib.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(n)), "C_GetSlotList")
        slots = (ul * max(n.value, 1))()
        ck(lib.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(n)), "C_GetSlotList")
        slot = None
        for i in range(n.value):
            info = ctypes.create_string_buffer(1024)
            if lib.C_GetTokenInfo(ul(slots[i]), info) == 0:
                if info.raw[:32].decode(errors="replace").rstrip(" \0") == spec["token"]:
                    slot = slots[i]
                    break
        if slot is None:
            raise RuntimeError(f"no slot with token {spec['token']!r}")
        session = ul(0)
        ck(lib.C_OpenSession(ul(slot), ul(0x6), None, None, ctypes.byref(session)),
           "C_OpenSession")  # CKF_SERIAL_SESSION | CKF_RW_SESSION
        pin = spec["pin"].encode()
        ck(lib.C_Login(session, ul(1), ctypes.c_char_p(pin), ul(len(pin))), "C_Login")

        def find(cls, label):
            cls_v = ul(CKO[cls])
            lab = label.encode()
            lab_buf = ctypes.create_string_buffer(lab, len(lab))
            tmpl = (_CkAttribute * 2)(
                _CkAttribute(CKA["CKA_CLASS"], ctypes.cast(ctypes.byref(cls_v), ctypes.c_void_p),
                             ctypes.sizeof(cls_v)),
                _CkAttribute(CKA["CKA_LABEL"], ctypes.cast(lab_buf, ctypes.c_void_p), len(lab)))
            ck(lib.C_FindObjectsInit(session, tmpl, ul(2)), "C_FindObjectsInit")
            found = (ul * 16)()
            count = ul(0)
            ck(lib.C_FindObjects(session, found, ul(16), ctypes.byref(count)), "C_FindObjects")
            lib.C_FindObjectsFinal(session)
            if count.value != 1:
                raise RuntimeError(f"{count.value} {cls} objects labelled {label!r}, expected 1")
            return ul(found[0])

        def find_key(op):
            if op.get("class"):
                return find(op["class"], op["label"])
            for cls in ("private", "secret"):  # a key pair's private half, else a secret key
                try:
                    return find(cls, op["label"])
                except RuntimeError:
                    pass
            raise RuntimeError(f"no private or secret key labelled {op['label']!r}")

        results = []
        for op in spec["ops"]:
            if op["op"] == "sleep":  # e.g. to hold the session while another process works
                time.sleep(float(op["seconds"]))
                results.append({})
                continue
            if op["op"] == "touch":
                with open(op["path"], "w"):
                    pass
                results.append({})
                continue
            if op["op"] == "wait":  # until op["path"] exists
                end = time.monotonic() + float(op.get("timeout", DEFAULT_TIMEOUT))
                while not os.path.exists(op["path"]) and time.monotonic() < end:
                    time.sleep(0.005)
                results.append({"found": os.path.exists(op["path"])})
                continue
            obj = find_key(op)
            if op["op"] == "attr":
                res = {}
                for name in op["attrs"]:
                    a = _CkAttribute(CKA[name], None, 0)
                    rv = lib.C_GetAttributeValue(session, obj, ctypes.byref(a), ul(1))
                    entry = {"rv": CKR_NAMES.get(rv, hex(rv)), "len": a.ulValueLen}
                    if rv == 0 and a.ulValueLen not in (0, ctypes.c_ulong(-1).value):
                        buf = ctypes.create_string_buffer(a.ulValueLen)
                        a.pValue = ctypes.cast(buf, ctypes.c_void_p)
                        rv = lib.C_GetAttributeValue(session, obj, ctypes.byref(a), ul(1))
                        entry = {"rv": CKR_NAMES.get(rv, hex(rv)), "len": a.ulValueLen}
                        if rv == 0:
                            entry["hex"] = buf.raw[:a.ulValueLen].hex()
                    res[name] = entry
                results.append(res)
            elif op["op"] == "sign":
                mech_v = op["mechanism"]
                mech = _CkMechanism(CKM[mech_v] if isinstance(mech_v, str) else int(mech_v),
                                    None, 0)
                rv = lib.C_SignInit(session, ctypes.byref(mech), obj)
                if rv != 0:
                    results.append({"rv": CKR_NAMES.get(rv, hex(rv)), "step": "C_SignInit"})
                    continue
                data = bytes.fromhex(op["data"])
                out = ctypes.create_string_buffer(1024)
                out_len = ul(1024)
                rv = lib.C_Sign(session, ctypes.c_char_p(data), ul(len(data)), out,
                                ctypes.byref(out_len))
                res = {"rv": CKR_NAMES.get(rv, hex(rv)), "step": "C_Sign"}
                if rv == 0:
                    res["sig_hex"] = out.raw[:out_len.value].hex()
                results.append(res)
            else:
                raise RuntimeError(f"unknown op {op['op']!r}")
        lib.C_CloseSession(session)
        json.dump({"results": results}, sys.stdout)
    finally:
        lib.C_Finalize(None)


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        try:
            _probe_main()
        except Exception as e:  # reported as JSON so the caller can show it
            json.dump({"error": f"{type(e).__name__}: {e}"}, sys.stdout)
        sys.exit(0)
    sys.exit("usage: aziot_tokens.py --probe < spec.json  (used by _Pkcs11Token.probe())")
