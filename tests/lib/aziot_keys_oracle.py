# SPDX-License-Identifier: MIT
"""Independent computations of what aziot-keyd must produce (spec §2.5-§2.8), for the tests that
check keyd's results: never keyd's own code, only Python's hmac/hashlib and the upstream formats.

The helpers of tests/bus/test_keys.py are the same; new suites import them from here.
"""

import base64
import hashlib
import hmac
import json
import os

HVK = "handle-validation-key"
ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
P256_OID_DER = bytes.fromhex("06082a8648ce3d030107")  # 1.2.840.10045.3.1.7, DER
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

# keyd's (and upstream's) messages.
BAD_VALUE = "a parameter has an invalid value"
INTERNAL = "internal error"


def bad_param(name, cause=None):
    text = f'parameter "{name}" has an invalid value'
    return f"{text}\ncaused by: {cause}" if cause is not None else text


INVALID_HANDLE = bad_param("handle", "invalid handle")
BAD_MECHANISM = bad_param("mechanism", "mechanism cannot be used with this key type")
NOT_A_KEY = bad_param("handle", "handle is not for a key")
NOT_A_KEY_PAIR = bad_param("handle", "handle is not for a key pair")
NOT_DERIVED = bad_param("handle", "handle is not for a derived key")
NESTED = bad_param("handle",
                   "nested derived keys are not supported, import the outer derived key first")


def b64(data):
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text, validate=True)


def hmac256(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def key_file_name(key_id):
    """Spec §2.8: the id's ASCII letters and digits, '-', the hex SHA-256 of the id, '.key'."""
    alnum = "".join(c for c in key_id if c in ALNUM)
    return f"{alnum}-{hashlib.sha256(key_id.encode()).hexdigest()}.key"


def handle_parts(handle):
    """Spec §2.5: (sr bytes, sig bytes, sr as JSON) of a handle string."""
    fields = dict(part.split("=", 1) for part in handle.split("&"))
    sr = unb64(fields["sr"])
    sig = unb64(fields["sig"])
    return sr, sig, json.loads(sr)


def make_handle(validation_key, key_id):
    """A handle built by upstream's algorithm (spec §2.5) for key_id, a serde KeyId value."""
    sr = json.dumps({"key_id": key_id, "nonce": b64(os.urandom(64))},
                    separators=(",", ":")).encode()
    return f"sr={b64(sr)}&sig={b64(hmac256(validation_key, sr))}"


def with_sig(handle, sig):
    return f"{handle.split('&')[0]}&sig={b64(sig)}"


def mgf1_sha256(seed, length):
    out = b""
    for counter in range((length + 31) // 32):
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
    return out[:length]


def emsa_pss_encode_sha256(message, modulus_bits, salt_len=32):
    """RFC 8017 §9.1.1, as OpenSSL pads a PSS signature before a raw RSA operation."""
    em_bits = modulus_bits - 1
    em_len = (em_bits + 7) // 8
    salt = os.urandom(salt_len)
    h = hashlib.sha256(b"\0" * 8 + hashlib.sha256(message).digest() + salt).digest()
    db = b"\0" * (em_len - salt_len - 32 - 2) + b"\x01" + salt
    masked = bytes(a ^ b for a, b in zip(db, mgf1_sha256(h, em_len - 32 - 1)))
    masked = bytes([masked[0] & (0xff >> (8 * em_len - em_bits))]) + masked[1:]
    em = masked + h + b"\xbc"
    # The raw operation takes a block as long as the modulus.
    return em.rjust((modulus_bits + 7) // 8, b"\0")


def tree_listing(root, exclude=()):
    """Every path below root (relative), except the paths in exclude and what is below them."""
    excluded = {os.path.abspath(p) for p in exclude}
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if os.path.abspath(os.path.join(dirpath, d)) not in excluded]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.abspath(path) not in excluded:
                found.add(os.path.relpath(path, root))
    return found
