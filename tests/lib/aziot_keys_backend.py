# SPDX-License-Identifier: MIT
"""Where aziot-keyd keeps keys, seen without keyd: the key store under test (AZIOT_KEYS_BACKEND),
the objects of its PKCS#11 token, and the checks the keys suites make about stored keys
(tests/bus/test_keys.py over D-Bus, tests/gateway/test_keys_http.py through the gateway).

    BACKEND = backend_from_env()               # file (default), softhsm2 or tpm2
    class MyTest(KeyStoreChecks, unittest.TestCase):
        key_store_backend = BACKEND
        key_store_dir = ".../home/keys"        # keyd's keys directory
        key_store_token = token                # the base slot's token (aziot_tokens), or None
        ...
        self.assertStored("k", IMPORTED, key, usage="sign")
        self.assertEqual(sig, self.expected_hmac(HVK, sr))

Backends (services/keys/keys-store.c puts what keyd makes in the first location that can take
it, the filesystem being the last):

  file      keyd's filesystem store alone ([aziot_keys] homedir_path): every key is a file of
            keys/, spec §2.8, checked byte for byte, mode 0600 in a 0700 directory.
  softhsm2  a SoftHSM2 token as pkcs11_base_slot: key pairs, generated and imported symmetric keys
            (HMAC: CKK_GENERIC_SECRET, encrypt: CKK_AES) and the handle-validation-key on the
            token, except an imported sign/derive key shorter than SoftHSM's CKM_SHA256_HMAC
            takes (32 bytes): that one goes to the file store.
  tpm2      a tpm2-pkcs11 token on swtpm: key pairs only (no C_GenerateKey, no secret-key
            C_CreateObject, no AES-GCM there); every symmetric key goes to the file store.

A key on a token must be there once, CKA_SENSITIVE, not CKA_EXTRACTABLE (generated ones also
CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE and CKA_LOCAL), with no file in the home, and is
checked by behaviour: HMAC against the token's own CKM_SHA256_HMAC (computed in another process
through the token's module, never by keyd), key pairs against the public key read from the token
with pkcs11-tool. The token's objects are listed by another process too (ctypes, TOKEN_LISTER),
which reads exact labels and the attributes that say whether a key can leave the token.

Run with /usr/bin/python3 (python3-cryptography); aziot_tokens makes the tokens.
"""

import json
import os
import stat
import subprocess
import sys

from cryptography.hazmat.primitives import serialization

from aziot_keys_oracle import hmac256, key_file_name

BACKENDS = ("file", "softhsm2", "tpm2")
PYTHON = "/usr/bin/python3"

# What a test stores: a symmetric key keyd generated, one the test imported, a key pair.
GENERATED, IMPORTED, PAIR = "generated", "imported", "pair"

# The shortest key SoftHSM2's CKM_SHA256_HMAC signs with (2.6.1: C_SignInit answers
# CKR_KEY_SIZE_RANGE below 32 bytes; no upper bound, 1 MiB tried). keyd imports a shorter
# sign/derive key to the file store (services/keys/keys-pkcs11.c, hmac_works()).
SOFTHSM_HMAC_MIN_KEY_LENGTH = 32


class Backend:
    """The key store under test and where it puts each kind of key."""

    def __init__(self, name):
        if name not in BACKENDS:
            raise ValueError(f"AZIOT_KEYS_BACKEND must be one of {', '.join(BACKENDS)}, "
                             f"not {name!r}")
        self.name = name
        # With a base slot, key pairs on the token.
        self.on_token = name != "file"
        # Symmetric keys on the token when it can generate, import and use them (SoftHSM2), else
        # (tpm2) in the home, the second location.
        self.secrets_on_token = name == "softhsm2"

    def __str__(self):
        return self.name

    def location_of(self, kind, content=None, usage=None):
        """Where keyd must store a key of that kind that it accepted: "token" or "file". For an
        imported symmetric key, content (its bytes) and usage ("sign", "derive" or "encrypt";
        None counts as sign) decide too: a sign/derive key the token's HMAC refuses goes to the
        file store."""
        if kind == PAIR:
            return "token" if self.on_token else "file"
        if not self.secrets_on_token:
            return "file"
        if kind == IMPORTED and content is not None and usage != "encrypt" and \
                len(content) < SOFTHSM_HMAC_MIN_KEY_LENGTH:
            return "file"
        return "token"

    def make_token(self, directory):
        """A new token of this backend under directory (aziot_tokens), None for "file"."""
        if self.name == "softhsm2":
            from aziot_tokens import SoftHsmToken
            return SoftHsmToken(directory)
        if self.name == "tpm2":
            from aziot_tokens import Tpm2Pkcs11Token
            return Tpm2Pkcs11Token(directory)
        return None


def backend_from_env(allowed=BACKENDS):
    """The Backend named by AZIOT_KEYS_BACKEND (default file); exits when the suite does not run
    on that one."""
    name = os.environ.get("AZIOT_KEYS_BACKEND") or "file"
    if name not in allowed:
        sys.exit(f"AZIOT_KEYS_BACKEND must be {' or '.join(allowed)}, not {name!r}")
    return Backend(name)


def import_sign_and_encrypt(backend, import_key, key_id, key):
    """The same bytes as a key to sign/derive with and as a key to encrypt with, imported by
    import_key(key_id, key, usages) -> handle: (sign handle, encrypt handle). On the filesystem
    one key with both usages; with a base slot two keys, key_id (sign) and key_id + "-enc"
    (encrypt), as PKCS#11 keys have one usage (upstream refuses a mask of both there)."""
    if not backend.on_token:
        handle = import_key(key_id, key, ["sign", "encrypt"])
        return handle, handle
    return import_key(key_id, key, ["sign"]), import_key(key_id + "-enc", key, ["encrypt"])


def key_path(keys_dir, key_id):
    """Where spec §2.8 puts key_id's file in keyd's keys directory."""
    return os.path.join(keys_dir, key_file_name(key_id))


def read_key_file(keys_dir, key_id):
    with open(key_path(keys_dir, key_id), "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# The token's objects

# Every object of a token with the attributes the tests look at, read in a separate process
# that loads the token's module (ctypes), logs in and prints JSON: exact labels (bytes, so that
# ids with tabs, newlines or 4096 characters come out as they are) and each attribute's value
# (hex) or null when the token does not give it (CKR_ATTRIBUTE_SENSITIVE, ..._TYPE_INVALID).
TOKEN_LISTER = r"""
import ctypes, json, sys
spec = json.load(sys.stdin)
ul = ctypes.c_ulong


class Attr(ctypes.Structure):
    _fields_ = [("type", ul), ("pValue", ctypes.c_void_p), ("ulValueLen", ul)]


lib = ctypes.CDLL(spec["module"])
for name in ("C_Initialize", "C_Finalize", "C_GetSlotList", "C_GetTokenInfo", "C_OpenSession",
             "C_Login", "C_FindObjectsInit", "C_FindObjects", "C_FindObjectsFinal",
             "C_GetAttributeValue", "C_CloseSession"):
    getattr(lib, name).restype = ul


def ck(rv, what):
    if rv != 0:
        sys.exit(f"{what}: CKR 0x{rv:x}")


ck(lib.C_Initialize(None), "C_Initialize")
n = ul(0)
ck(lib.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(n)), "C_GetSlotList")
slots = (ul * max(n.value, 1))()
ck(lib.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(n)), "C_GetSlotList")
slot = None
for i in range(n.value):
    info = ctypes.create_string_buffer(1024)  # CK_TOKEN_INFO begins with the 32-byte label
    if lib.C_GetTokenInfo(ul(slots[i]), info) == 0 and \
            info.raw[:32].rstrip(b" ") == spec["token"].encode():
        slot = slots[i]
        break
if slot is None:
    sys.exit(f"no token labelled {spec['token']!r}")
session = ul(0)
ck(lib.C_OpenSession(ul(slot), ul(0x6), None, None, ctypes.byref(session)), "C_OpenSession")
pin = spec["pin"].encode()
ck(lib.C_Login(session, ul(1), ctypes.c_char_p(pin), ul(len(pin))), "C_Login")
ck(lib.C_FindObjectsInit(session, None, ul(0)), "C_FindObjectsInit")
handles = []
while True:
    found, count = (ul * 64)(), ul(0)
    ck(lib.C_FindObjects(session, found, ul(64), ctypes.byref(count)), "C_FindObjects")
    handles += list(found[:count.value])
    if count.value < 64:
        break
lib.C_FindObjectsFinal(session)
objects = []
for h in handles:
    obj = {}
    for name, t in spec["attrs"].items():
        a = Attr(t, None, 0)
        rv = lib.C_GetAttributeValue(session, ul(h), ctypes.byref(a), ul(1))
        obj[name] = None
        if rv == 0 and a.ulValueLen != ul(-1).value:
            buf = ctypes.create_string_buffer(max(a.ulValueLen, 1))
            a.pValue = ctypes.cast(buf, ctypes.c_void_p)
            if lib.C_GetAttributeValue(session, ul(h), ctypes.byref(a), ul(1)) == 0:
                obj[name] = buf.raw[:a.ulValueLen].hex()
    objects.append(obj)
lib.C_CloseSession(session)
lib.C_Finalize(None)
json.dump(objects, sys.stdout)
"""

CKA = {"class": 0x0, "label": 0x3, "value": 0x11, "key_type": 0x100, "id": 0x102,
       "sensitive": 0x103, "private_exponent": 0x123, "value_len": 0x161, "extractable": 0x162,
       "local": 0x163, "never_extractable": 0x164, "always_sensitive": 0x165}
CKO_NAMES = {0: "data", 1: "certificate", 2: "public", 3: "private", 4: "secret"}
CKK_GENERIC_SECRET, CKK_AES = 0x10, 0x1F


def token_objects(token):
    """Every object of the token: dicts with class ("public", "private", "secret"), label (str),
    key_type, value_len (ints or None), sensitive, extractable, local, never_extractable,
    always_sensitive (bools or None), id (bytes) and readable (whether any secret value came out:
    CKA_VALUE or CKA_PRIVATE_EXPONENT, non-empty)."""
    spec = {"module": token.module, "token": token.label, "pin": token.pin, "attrs": CKA}
    r = subprocess.run([PYTHON, "-c", TOKEN_LISTER], input=json.dumps(spec), text=True,
                       capture_output=True, env=token.tool_env(), timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"listing the objects of token {token.label!r} failed: "
                             f"{r.stderr.strip()}")
    out = []
    for raw in json.loads(r.stdout):
        value = {k: (bytes.fromhex(v) if v is not None else None) for k, v in raw.items()}

        def ulong(b):
            return int.from_bytes(b, sys.byteorder) if b else None

        def boolean(b):
            return bool(b[0]) if b else None
        out.append({
            "class": CKO_NAMES.get(ulong(value["class"]), ulong(value["class"])),
            "label": value["label"].decode("utf-8", "surrogateescape")
            if value["label"] is not None else None,
            "id": value["id"],
            "key_type": ulong(value["key_type"]),
            "value_len": ulong(value["value_len"]),
            "readable": bool(value["value"]) or bool(value["private_exponent"]),
            **{k: boolean(value[k]) for k in ("sensitive", "extractable", "local",
                                              "never_extractable", "always_sensitive")},
        })
    return out


def wipe_token(token):
    """Deletes every object of the token (between the keyd homes that share a tpm2 token)."""
    types = {"public": "pubkey", "private": "privkey", "secret": "secrkey"}
    for o in token_objects(token):
        args = ["--delete-object", "--type", types.get(o["class"], "data")]
        args += ["--id", o["id"].hex()] if o["id"] else ["--label", o["label"]]
        token.pkcs11_tool(args, what=f"deleting {o['class']} {o['label']!r}")
    left = token_objects(token)
    if left:
        raise AssertionError(f"token {token.label!r} still holds {left}")


def token_hmac(token, key_id, data):
    """HMAC-SHA256 of data with the token's secret key labelled key_id, by the token's own
    CKM_SHA256_HMAC (in another process, through the PKCS#11 module)."""
    (result,) = token.probe([{"op": "sign", "label": key_id, "class": "secret",
                              "mechanism": "SHA256-HMAC", "data": data}])
    if result.get("rv") != "CKR_OK":
        raise AssertionError(f"HMAC with {key_id!r} on token {token.label!r}: {result}")
    return result["sig"]


def token_public_key(token, key_id):
    """The public key of the token's key pair labelled key_id, read with pkcs11-tool."""
    return serialization.load_pem_public_key(token.public_key_pem(key_id).encode())


# ---------------------------------------------------------------------------------------------
# Checks of what is stored, for unittest.TestCase


class KeyStoreChecks:
    """Mixed into a unittest.TestCase (before it) whose keyd keeps its key files in key_store_dir
    and, with a base slot, keys on key_store_token (an aziot_tokens token, or None); both may be
    properties. key_store_backend is the Backend under test."""

    key_store_backend = Backend("file")
    key_store_dir = None
    key_store_token = None

    def location_of(self, kind, content=None, usage=None):
        return self.key_store_backend.location_of(kind, content, usage)

    def key_path(self, key_id):
        return key_path(self.key_store_dir, key_id)

    def read_key(self, key_id):
        return read_key_file(self.key_store_dir, key_id)

    def write_key_file(self, key_id, data):
        """A key file as upstream writes it (spec §2.8): keys/ 0700, the file 0600."""
        os.makedirs(self.key_store_dir, mode=0o700, exist_ok=True)
        path = self.key_path(key_id)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)

    def token_objects(self, key_id=None):
        """The objects of the token (all, or those labelled key_id); [] without one."""
        if self.key_store_token is None:
            return []
        objects = token_objects(self.key_store_token)
        return objects if key_id is None else [o for o in objects if o["label"] == key_id]

    def key_files(self):
        """The names in the keys directory (none when it does not exist)."""
        try:
            return set(os.listdir(self.key_store_dir))
        except FileNotFoundError:
            return set()

    def listing(self):
        """Everything stored: {"files": key file names, "token": {label: sorted classes}}."""
        token = {}
        for o in self.token_objects():
            token.setdefault(o["label"], []).append(o["class"])
        return {"files": self.key_files(), "token": {k: sorted(v) for k, v in token.items()}}

    def expected_listing(self, kinds, base=None):
        """The listing() there must be when the keys {id: kind} were added to base (a listing);
        a kind may also be (kind, content, usage), for location_of."""
        out = {"files": set(), "token": {}} if base is None else \
            {"files": set(base["files"]), "token": dict(base["token"])}
        for key_id, kind in kinds.items():
            kind, *how = kind if isinstance(kind, tuple) else (kind,)
            if self.location_of(kind, *how) == "file":
                out["files"].add(key_file_name(key_id))
            else:
                out["token"][key_id] = ["private", "public"] if kind == PAIR else ["secret"]
        return out

    def assertStoredIds(self, kinds, base=None):
        """What is stored is exactly base (a listing()) plus the keys {id: kind}, each where its
        kind belongs on this backend."""
        self.assertEqual(self.listing(), self.expected_listing(kinds, base))

    def assertKeyFile(self, key_id, content=None):
        """The key's file is where spec §2.8 puts it, mode 0600, in a 0700 directory; returns its
        bytes."""
        path = self.key_path(key_id)
        st = os.stat(path)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, path)
        self.assertEqual(stat.S_IMODE(os.stat(self.key_store_dir).st_mode), 0o700)
        data = self.read_key(key_id)
        if content is not None:
            self.assertEqual(data, content)
        return data

    def assertStored(self, key_id, kind, content=None, usage=None):
        """The key is stored where keyd must put a key of that kind (location_of, with content
        and usage) on this backend, and only there. In a file: as assertKeyFile, returns its
        bytes. On the token: exactly one secret key (or one private and one public key) labelled
        key_id, sensitive, not extractable, its value not readable, generated ones never
        extractable, always sensitive and made on the token; content (imported) fixes
        CKA_VALUE_LEN, usage ("sign", "derive" or "encrypt") the key type; no file in the home.
        Returns content: the bytes of a key generated on a token are nobody's."""
        objects = self.token_objects(key_id)
        if self.location_of(kind, content, usage) == "file":
            self.assertEqual(objects, [], f"{key_id!r} is on the token too")
            return self.assertKeyFile(key_id, content)
        self.assertFalse(os.path.lexists(self.key_path(key_id)),
                         f"{key_id!r} is on the token and has a file in the home")
        self.assertEqual(sorted(o["class"] for o in objects),
                         ["private", "public"] if kind == PAIR else ["secret"],
                         f"objects labelled {key_id!r}")
        key = next(o for o in objects if o["class"] != "public")
        self.assertIs(key["sensitive"], True, key_id)
        self.assertIs(key["extractable"], False, key_id)
        self.assertFalse(key["readable"], f"the value of {key_id!r} can be read")
        if kind != IMPORTED:
            for flag in ("never_extractable", "always_sensitive", "local"):
                self.assertIs(key[flag], True, f"{key_id!r}: {flag}")
        if content is not None:
            self.assertEqual(key["value_len"], len(content), key_id)
        if usage is not None:
            self.assertEqual(key["key_type"], CKK_AES if usage == "encrypt" else
                             CKK_GENERIC_SECRET, f"key type of {key_id!r} ({usage})")
        return content

    def assertNotStored(self, key_id):
        """Neither a file nor a token object for key_id."""
        self.assertFalse(os.path.lexists(self.key_path(key_id)), f"{key_id!r} has a file")
        self.assertEqual(self.token_objects(key_id), [], f"{key_id!r} is on the token")

    def stored_secret(self, key_id):
        """Where the symmetric key key_id is (as keyd resolves it: the token first):
        ("token", None) or ("file", its bytes)."""
        if any(o["class"] == "secret" for o in self.token_objects(key_id)):
            return "token", None
        return "file", self.read_key(key_id)

    def expected_hmac(self, key_id, data):
        """HMAC-SHA256 of data with the stored key key_id, computed without keyd: Python's hmac
        over the file's bytes, or the token's CKM_SHA256_HMAC (token_hmac)."""
        where, material = self.stored_secret(key_id)
        if where == "file":
            return hmac256(material, data)
        return token_hmac(self.key_store_token, key_id, data)

    def secret_length(self, key_id):
        """The length of the stored symmetric key: of the file, or CKA_VALUE_LEN on the token."""
        where, material = self.stored_secret(key_id)
        if where == "file":
            return len(material)
        (key,) = [o for o in self.token_objects(key_id) if o["class"] == "secret"]
        return key["value_len"]

    def fingerprint(self, key_id):
        """What identifies the stored key, to see that it was not replaced (and that a moved key
        pair is the one that was moved: relabelling keeps CKA_ID): a file's bytes; on a token the
        objects' classes and CKA_IDs, with the HMAC of a fixed message for a secret key and the
        public key (pkcs11-tool) for a key pair."""
        objects = self.token_objects(key_id)
        if not objects:
            return ("file", self.read_key(key_id))
        out = sorted((o["class"], o["id"]) for o in objects)
        if any(o["class"] == "secret" for o in objects):
            out.append(self.expected_hmac(key_id, b"fingerprint"))
        if any(o["class"] == "public" for o in objects):
            out.append(self.key_store_token.public_key_pem(key_id))
        return ("token", out)

    def stored_public_key(self, key_id):
        """The public key of the stored key pair, read without keyd: from the PKCS#8 PEM file
        (checked to be one), or from the token with pkcs11-tool."""
        if self.location_of(PAIR) == "file":
            data = self.assertKeyFile(key_id)
            self.assertTrue(data.startswith(b"-----BEGIN PRIVATE KEY-----\n"), data[:40])
            return serialization.load_pem_private_key(data, password=None).public_key()
        self.assertStored(key_id, PAIR)
        return token_public_key(self.key_store_token, key_id)
