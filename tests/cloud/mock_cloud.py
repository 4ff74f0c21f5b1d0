# SPDX-License-Identifier: MIT
"""What the mock cloud servers share. The mock Azure DPS (mock_dps.py) and the mock IoT Hub
(mock_hub.py): SAS tokens, key derivations, the PKI, X.509 chain checks. Every mock, the mock EST
server (mock_est.py) too: certificate helpers, and an HTTPS server with a request log, fault switches,
a plain-HTTP control channel and a script mode.

Protocol facts: /work/shared/spec/cloud-protocols.md §1 (HTTP), §2 (SAS tokens and key derivations).

SAS tokens (§2.1), as a service checks them (tests make theirs with cloud_client.py):
    parse_sas_token(value)              the fields of "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]"
    check_sas(value, audience, keys, skn=None)  → SasResult: what a strict service decides
Keys (§2.3, §2.4): derive_device_key(group_key, registration_id), module_keys(master, module, genid).

Certificates: make_key(), sign_cert() (any cert, SKI/AKI, capped at the issuer's notAfter), and
PkiDir, a directory of <stem>.pem + <stem>.key.pem that CloudPki and mock_est's Pki build on.

PKI (a directory, generated on first use and loaded afterwards; EC P-256, PEM):
    server-ca.pem, .key.pem   the root the clients must trust for both services (e.g. SSL_CERT_FILE)
    server.pem, .key.pem      the HTTPS server certificate (SAN localhost, 127.0.0.1)
    <name>.pem, .key.pem, .chain.pem   device CAs and certificates made by make_ca()/make_cert()

Servers: MockServerBase (the server loop, the request log, fault switches, down()/up(), the control
channel; a subclass answers the requests) and MockServer, a JSON service with a route table. In a
MockServer, TLS client certificates are requested but never refused during the handshake: the peer's
chain is captured and judged by the service, which answers an untrusted one with its own 401 JSON body
as the real services do (a handshake failure would look like a network outage to the client).
"""

import argparse
import base64
import binascii
import ctypes
import dataclasses
import datetime
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import os
import re
import secrets
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
import urllib.parse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "SasError", "SasResult", "parse_sas_token", "check_sas", "derive_device_key", "module_keys",
    "random_key", "thumbprints", "verify_chain", "load_certs", "make_key", "sign_cert", "ca_extensions",
    "leaf_extensions", "server_extensions", "PkiDir", "CloudPki", "CertKey", "Request", "Refusal", "Call",
    "MockServerBase", "MockServer", "utc_iso", "script_parser", "add_script_options", "run_script_servers",
]

JSON_CT = "application/json; charset=utf-8"
BODY_MODES = ("json", "garbage", "empty")
MAX_BODY = 1 << 20
DAY = 86400


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


def utc_iso(t=None):
    """2024-01-02T03:04:05.1234567Z, as the services write their timestamps."""
    t = time.time() if t is None else t
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}0Z"


def random_key(size=32):
    """A base64 symmetric key of `size` random bytes."""
    return base64.b64encode(secrets.token_bytes(size)).decode()


def _key_bytes(key):
    return key if isinstance(key, (bytes, bytearray)) else base64.b64decode(key, validate=True)


# ------------------------------------------------------------------------------------------------
# SAS tokens (spec §2)

class SasError(ValueError):
    """A malformed SharedAccessSignature."""


def parse_sas_token(value):
    """{"sr", "sig" (form-decoded), "se", "skn"?} of an Authorization value; SasError when it is not
    exactly a SharedAccessSignature with sr, sig (base64 of 32 bytes) and a decimal se, each once,
    and nothing else."""
    prefix = "SharedAccessSignature "
    if not isinstance(value, str) or not value.startswith(prefix):
        raise SasError("not a SharedAccessSignature")
    fields = {}
    for part in value[len(prefix):].split("&"):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise SasError(f"malformed field {part!r}")
        if k not in ("sr", "sig", "se", "skn"):
            raise SasError(f"unknown field {k!r}")
        if k in fields:
            raise SasError(f"duplicate field {k!r}")
        fields[k] = v
    for k in ("sr", "sig", "se"):
        if not fields.get(k):
            raise SasError(f"missing {k}")
    if not re.fullmatch(r"[0-9]{1,12}", fields["se"]):
        raise SasError(f"se is not a decimal expiry: {fields['se']!r}")
    fields["sig"] = urllib.parse.unquote_plus(fields["sig"])
    try:
        if len(base64.b64decode(fields["sig"], validate=True)) != 32:
            raise SasError("sig is not an HMAC-SHA256")
    except binascii.Error:
        raise SasError("sig is not base64") from None
    return fields


@dataclasses.dataclass
class SasResult:
    """ok, or the reason it is refused; key_index: which of the keys signed it; expired also when
    the expiry was not enforced."""
    ok: bool
    reason: str | None = None
    fields: dict | None = None
    key_index: int | None = None
    expired: bool = False

    def __bool__(self):
        return self.ok


def check_sas(value, audience, keys, skn=None, check_expiry=True, now=None):
    """A strict service's decision on an Authorization value for `audience`: well-formed; URL-decoded
    sr equal to the audience (case-insensitively, so '/' or '%2F'); skn equal to `skn` (absent when
    None); HMAC-SHA256 of "<sr as received>\\n<se>" under one of `keys` (base64 or bytes; None entries
    skipped), compared in constant time; se in the future (unless check_expiry is False)."""
    try:
        f = parse_sas_token(value)
    except SasError as e:
        return SasResult(False, f"malformed token: {e}")
    res = SasResult(False, fields=f)
    res.expired = int(f["se"]) <= (time.time() if now is None else now)
    got = urllib.parse.unquote(f["sr"])
    if got.lower() != audience.lower():
        res.reason = f"audience mismatch: token for {got!r}, expected {audience.lower()!r}"
        return res
    if f.get("skn") != skn:
        res.reason = (f"skn must be {skn!r}" if skn else "unexpected skn") + f", got {f.get('skn')!r}"
        return res
    sig = base64.b64decode(f["sig"])
    msg = f"{f['sr']}\n{f['se']}".encode()
    for i, key in enumerate(keys):
        if key is None:
            continue
        if hmac.compare_digest(hmac.new(_key_bytes(key), msg, hashlib.sha256).digest(), sig):
            res.key_index = i
            break
    else:
        res.reason = "signature mismatch"
        return res
    if check_expiry and res.expired:
        res.reason = f"token expired at {f['se']}"
        return res
    res.ok = True
    return res


def derive_device_key(group_key, registration_id):
    """§2.4: B64(HMAC-SHA256(B64decode(group_key), UTF-8(registrationId)))."""
    return base64.b64encode(hmac.new(_key_bytes(group_key), registration_id.encode(),
                                     hashlib.sha256).digest()).decode()


def module_keys(master_key, module_id, generation_id):
    """§2.3: the (primaryKey, secondaryKey) identityd writes for a module, from its master key."""
    return tuple(base64.b64encode(hmac.new(_key_bytes(master_key),
                                           f"{module_id}:{generation_id}:{which}".encode(),
                                           hashlib.sha256).digest()).decode()
                 for which in ("primary", "secondary"))


# ------------------------------------------------------------------------------------------------
# X.509

def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def thumbprints(cert):
    """(SHA-1, SHA-256) of the DER cert, uppercase hex: the forms Azure shows as thumbprints."""
    d = _der(cert)
    return hashlib.sha1(d).hexdigest().upper(), hashlib.sha256(d).hexdigest().upper()


def normalize_thumbprint(text):
    return re.sub(r"[\s:]", "", text or "").upper()


def common_name(cert):
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def _is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def signed_by(cert, issuer):
    """Whether issuer's key verifies cert's signature (RSA PKCS#1 v1.5, ECDSA, EdDSA)."""
    pub = issuer.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(pub, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            pub.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _valid_at(cert, now):
    return cert.not_valid_before <= now <= cert.not_valid_after


def verify_chain(chain, anchors, now=None):
    """Whether the presented chain (leaf first, then what the client sent) is trusted by `anchors`:
    a path from the leaf to an anchor (the anchor itself, or a CA that signed the leaf or one of the
    presented CAs), every cert on it in its validity period, presented CAs with basicConstraints
    CA:TRUE, and a leaf usable for client authentication (no EKU, or one with clientAuth).
    Returns (anchor, None) or (None, reason)."""
    if not chain:
        return None, "no client certificate"
    now = now or _now()
    leaf = chain[0]
    if not _valid_at(leaf, now):
        return None, "client certificate is expired or not yet valid"
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if not {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(eku):
            return None, "client certificate is not for client authentication"
    except x509.ExtensionNotFound:
        pass
    by_der = {_der(a): a for a in anchors}
    current, seen = leaf, {_der(leaf)}
    for _ in range(8):
        if _der(current) in by_der:
            return by_der[_der(current)], None
        for a in anchors:
            if a.subject == current.issuer and _is_ca(a) and signed_by(current, a):
                if not _valid_at(a, now):
                    return None, f"CA {a.subject.rfc4514_string()} is expired"
                return a, None
        nxt = [c for c in chain[1:] if c.subject == current.issuer and _is_ca(c)
               and _der(c) not in seen and signed_by(current, c)]
        if not nxt:
            return None, "client certificate does not chain to a trusted CA"
        current = nxt[0]
        seen.add(_der(current))
        if not _valid_at(current, now):
            return None, f"CA {current.subject.rfc4514_string()} in the chain is expired or not yet valid"
    return None, "client certificate chain too long"


def load_certs(obj):
    """x509 certs from a Certificate, a list of them, PEM bytes/str, or a PEM file path."""
    if obj is None:
        return []
    if isinstance(obj, x509.Certificate):
        return [obj]
    if isinstance(obj, CertKey):
        return [obj.cert]
    if isinstance(obj, (list, tuple)):
        return [c for o in obj for c in load_certs(o)]
    if isinstance(obj, str) and "-----BEGIN" not in obj:
        with open(obj, "rb") as f:
            obj = f.read()
    if isinstance(obj, str):
        obj = obj.encode()
    # (load_pem_x509_certificates needs python3-cryptography ≥ 39)
    return [x509.load_pem_x509_certificate(b"-----BEGIN CERTIFICATE-----" + block)
            for block in obj.split(b"-----BEGIN CERTIFICATE-----")[1:]]


# ------------------------------------------------------------------------------------------------
# PKI

def make_key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(path, data, private=False):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn, org="aziot-dbus mock cloud"):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def sign_cert(issuer_cert, issuer_key, subject, public_key, days=None, seconds=None, not_before=None,
              extensions=(), serial=None):
    """A cert for `public_key`, signed by issuer (self-signed when issuer_cert is None), with SKI/AKI.
    notAfter is capped at the issuer's notAfter."""
    nb = not_before or _now()
    na = nb + datetime.timedelta(seconds=seconds if seconds is not None else (days or 1) * DAY)
    if issuer_cert is not None and na > issuer_cert.not_valid_after:
        na = issuer_cert.not_valid_after
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
         .public_key(public_key)
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(nb)
         .not_valid_after(na))
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
        issuer_key.public_key()), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def ca_extensions():
    """basicConstraints CA:TRUE and keyUsage digitalSignature, keyCertSign, cRLSign (both critical)."""
    return [(x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)]


def leaf_extensions(eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)):
    """basicConstraints CA:FALSE (critical), and the extended key usages `eku` unless empty."""
    ext = [(x509.BasicConstraints(ca=False, path_length=None), True)]
    if eku:
        ext.append((x509.ExtendedKeyUsage(list(eku)), False))
    return ext


def server_extensions(server_names):
    """subjectAltName (IP addresses and DNS names) and extendedKeyUsage serverAuth of a TLS server."""
    sans = []
    for n in server_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    return [(x509.SubjectAlternativeName(sans), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]


class PkiDir:
    """A directory of certificates and their keys: <stem>.pem and <stem>.key.pem (0600)."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def has(self, stem):
        return all(os.path.exists(self.path(stem + ext)) for ext in (".pem", ".key.pem"))

    def load(self, stem):
        """(the certificates of <stem>.pem, the key of <stem>.key.pem)."""
        with open(self.path(stem + ".key.pem"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        return load_certs(self.path(stem + ".pem")), key

    def store(self, stem, cert, key):
        """Writes the key, then the cert; returns their paths (cert, key)."""
        cert_path, key_path = self.path(stem + ".pem"), self.path(stem + ".key.pem")
        _write(key_path, _key_pem(key), private=True)
        _write(cert_path, _pem(cert))
        return cert_path, key_path


@dataclasses.dataclass
class CertKey:
    """A cert and its key, with the issuer chain up to the root (chain[0] is cert) and the files:
    cert_path (the cert), key_path, chain_path (cert + its CAs below the root: what a client sends)."""
    cert: x509.Certificate
    key: object
    chain: list
    cert_path: str = None
    key_path: str = None
    chain_path: str = None

    @property
    def thumbprint(self):
        return thumbprints(self.cert)[0]

    @property
    def thumbprint256(self):
        return thumbprints(self.cert)[1]


class CloudPki(PkiDir):
    """The services' server CA and certificate (shared by every mock using the same directory), and
    device CAs/certificates for the tests' X.509 identities."""

    def __init__(self, directory, server_names=("localhost", "127.0.0.1")):
        super().__init__(directory)
        self.server_ca = self.make_ca("server-ca", "Mock Azure Server Root CA", reuse=True)
        if self.has("server"):
            self.server = self._load("server")
        else:
            self.server = self._issue("server", _name(server_names[0]), self.server_ca, days=3649,
                                      extensions=server_extensions(server_names))

    def _load(self, stem):
        chain, key = self.load(stem)
        ck = CertKey(chain[0], key, chain, self.path(stem + ".pem"), self.path(stem + ".key.pem"),
                     self.path(stem + ".chain.pem"))
        if os.path.exists(self.path(stem + ".full.pem")):
            ck.chain = load_certs(self.path(stem + ".full.pem"))
        return ck

    def _issue(self, stem, subject, issuer, days, extensions, key=None, not_before=None, seconds=None):
        key = key or make_key()
        nb = not_before or (_now() - datetime.timedelta(hours=1))
        if issuer is None:
            cert = sign_cert(None, key, subject, key.public_key(), days=days, seconds=seconds,
                             not_before=nb, extensions=extensions)
            chain = [cert]
        else:
            cert = sign_cert(issuer.cert, issuer.key, subject, key.public_key(), days=days,
                             seconds=seconds, not_before=nb, extensions=extensions)
            chain = [cert] + issuer.chain
        ck = CertKey(cert, key, chain, *self.store(stem, cert, key), self.path(stem + ".chain.pem"))
        # what a client presents: the cert and its CAs, without the self-signed root
        _write(ck.chain_path, b"".join(_pem(c) for c in chain[:-1] if len(chain) > 1) or _pem(cert))
        _write(self.path(stem + ".full.pem"), b"".join(_pem(c) for c in chain))
        return ck

    def make_ca(self, name, cn=None, issuer=None, days=3650, reuse=False, seconds=None, not_before=None):
        """A CA (self-signed root, or under `issuer`, a CertKey), valid from `not_before` (default: an
        hour ago) for `days` (or `seconds`); with reuse, loaded when it exists."""
        if reuse and self.has(name):
            return self._load(name)
        return self._issue(name, _name(cn or name), issuer, days, ca_extensions(), not_before=not_before,
                           seconds=seconds)

    def make_cert(self, name, cn, issuer=None, days=365, seconds=None, not_before=None, key=None,
                  eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)):
        """A device (leaf) cert with CN=cn, signed by `issuer` (a CertKey), self-signed when None."""
        return self._issue(name, _name(cn, org=None), issuer, days, leaf_extensions(eku), key=key,
                           not_before=not_before, seconds=seconds)

    def sign_csr(self, csr, issuer, days=30, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), copy_san=False):
        """A cert for a CSR's key and subject (and its SAN with copy_san), by `issuer` (a CertKey)."""
        ext = leaf_extensions(eku)
        if copy_san:
            ext += [(e.value, e.critical) for e in csr.extensions
                    if isinstance(e.value, x509.SubjectAlternativeName)]
        return sign_cert(issuer.cert, issuer.key, csr.subject, csr.public_key(), days=days,
                         not_before=_now() - datetime.timedelta(minutes=5), extensions=ext)

# ------------------------------------------------------------------------------------------------
# TLS: request a client certificate, accept any, keep the chain the peer sent

class _PeerChains:
    """Installs an OpenSSL verify callback on an ssl.SSLContext that records, per handshake (in the
    thread doing it), the DER chain the peer presented, and lets every handshake through. The
    service judges the chain afterwards (verify_chain)."""

    _lock = threading.Lock()
    _lib = None
    local = threading.local()

    @classmethod
    def _load(cls):
        with cls._lock:
            if cls._lib is not None:
                return cls._lib
            ssl_lib = ctypes.CDLL("libssl.so.3")
            crypto = ctypes.CDLL("libcrypto.so.3")
            crypto.OpenSSL_version_num.restype = ctypes.c_ulong
            if crypto.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
                raise RuntimeError("libcrypto.so.3 is not the OpenSSL the ssl module uses")
            cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
            ssl_lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
            ssl_lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
            ssl_lib.SSL_CTX_get_options.restype = ctypes.c_uint64
            ssl_lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, cb_type]
            for fn in ("X509_STORE_CTX_get0_untrusted", "X509_STORE_CTX_get0_cert"):
                getattr(crypto, fn).argtypes = [ctypes.c_void_p]
                getattr(crypto, fn).restype = ctypes.c_void_p
            crypto.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
            crypto.OPENSSL_sk_value.argtypes = [ctypes.c_void_p, ctypes.c_int]
            crypto.OPENSSL_sk_value.restype = ctypes.c_void_p
            crypto.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]

            def der(x):
                n = crypto.i2d_X509(x, None)
                if n <= 0:
                    return None
                buf = ctypes.create_string_buffer(n)
                ptr = ctypes.c_char_p(ctypes.addressof(buf))
                crypto.i2d_X509(x, ctypes.byref(ptr))
                return buf.raw

            def callback(preverify_ok, store_ctx):
                try:
                    if getattr(cls.local, "chain", None) is None:
                        sk = crypto.X509_STORE_CTX_get0_untrusted(store_ctx)
                        n = crypto.OPENSSL_sk_num(sk) if sk else 0
                        chain = [der(crypto.OPENSSL_sk_value(sk, i)) for i in range(n)]
                        if not chain:
                            chain = [der(crypto.X509_STORE_CTX_get0_cert(store_ctx))]
                        cls.local.chain = [c for c in chain if c]
                except Exception:  # never let a bug here fail the handshake silently
                    cls.local.chain = []
                return 1

            cls._lib = (ssl_lib, cb_type(callback))
            return cls._lib

    @classmethod
    def install(cls, ctx):
        ssl_lib, callback = cls._load()
        ctx.verify_mode = ssl.CERT_OPTIONAL
        # CPython's SSLContext object: PyObject_HEAD, then the SSL_CTX pointer.
        ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if (not ptr or ssl_lib.SSL_CTX_get_verify_mode(ptr) != 1
                or ssl_lib.SSL_CTX_get_options(ptr) != int(ctx.options)):
            raise RuntimeError("cannot reach the SSL_CTX of this Python's SSLContext")
        ssl_lib.SSL_CTX_set_verify(ptr, 1, callback)  # SSL_VERIFY_PEER, never fail
        ctx._mock_peer_chain_callback = callback  # keep it alive with the context

    @classmethod
    def begin(cls):
        cls.local.chain = None

    @classmethod
    def take(cls):
        chain, cls.local.chain = getattr(cls.local, "chain", None), None
        return [x509.load_der_x509_certificate(d) for d in chain or []]


# ------------------------------------------------------------------------------------------------
# Log

class Request:
    """One logged request, or a refused connection (method None, tls_error set).

    auth: what the client presented — "sas", "x509", "tpm" (the unauthenticated TPM registration)
    or None; reason: why it was refused (None when it was not); injected: the fault that answered."""

    def __init__(self, **kw):
        self.time = time.time()
        self.method = None
        self.path = None
        self.route = None
        self.params = {}
        self.api_version = None
        self.headers = {}          # lower-cased names
        self.body = b""
        self.json = None
        self.auth = None
        self.sas = None            # the token's fields
        self.expired_token = None
        self.client_cert = None    # x509.Certificate (the leaf)
        self.client_chain = []     # what the client sent, leaf first
        self.principal = None      # the enrollment / device / module that authenticated
        self.reason = None
        self.injected = None
        self.status = None
        self.response = b""
        self.response_headers = {}
        self.error_code = None
        self.tls_error = None
        self.error = None          # an exception inside the mock (answered 500)
        self.registration_id = None
        self.operation_id = None
        self.__dict__.update(kw)

    @property
    def client_cert_subject(self):
        return self.client_cert.subject.rfc4514_string() if self.client_cert is not None else None

    @property
    def outcome(self):
        if self.tls_error:
            return f"connection refused: {self.tls_error}"
        return f"{self.status}" + (f" {self.reason}" if self.reason else "")

    def response_json(self):
        return json.loads(self.response) if self.response else None

    def to_json(self):
        skip = ("client_cert", "client_chain", "body", "response", "json")
        d = {k: v for k, v in self.__dict__.items() if k not in skip}
        d["body"] = self.body.decode("latin-1")
        d["response"] = self.response.decode("latin-1")
        d["client_cert_subject"] = self.client_cert_subject
        d["outcome"] = self.outcome
        return json.dumps(d, default=str)

    def __repr__(self):
        return (f"<Request {self.method} {self.path} route={self.route} auth={self.auth} "
                f"status={self.status} reason={self.reason!r} tls_error={self.tls_error!r}>")


class Refusal(Exception):
    """Raised by a route handler: answer with the service's error body."""

    def __init__(self, status, message, reason=None, code=None, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or message  # for the log, when the body says less (e.g. "Unauthorized")
        self.code = code
        self.headers = list(headers)


# ------------------------------------------------------------------------------------------------
# Server

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, mock, addr):
        self.mock = mock
        super().__init__(addr, _Handler)

    def server_bind(self):  # HTTPServer's calls getfqdn(), which can stall on DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        mock = self.mock
        if mock.drop_connections:
            mock._log(mock.request_class(tls_error="dropped by drop_connections"))
            request.close()
            return
        request.settimeout(mock.io_timeout)
        try:
            request, chain = mock._handshake(request)
        except (ssl.SSLError, OSError) as e:
            mock._log(mock.request_class(tls_error=f"{type(e).__name__}: {e}"))
            request.close()
            return
        with mock._lock:
            mock._conns.add(request)
        try:
            handler = _Handler.__new__(_Handler)
            handler.peer_chain = chain
            handler.__init__(request, client_address, self)
        finally:
            with mock._lock:
                mock._conns.discard(request)
            try:
                request.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            request.close()

    def handle_error(self, request, client_address):
        pass  # a client going away mid-request is not the server's problem


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peer_chain = ()

    @property
    def mock(self):
        return self.server.mock

    def version_string(self):
        return self.mock.server_version or super().version_string()

    def log_message(self, fmt, *args):
        if self.mock.verbose:
            sys.stderr.write(f"{self.mock.name}: " + (fmt % args) + "\n")

    def do_GET(self):
        self.mock._dispatch(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def read_body(self):
        limit = self.mock.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
                if limit is not None and len(out) > limit:
                    raise Refusal(413, "request body too large")
        n = int(self.headers.get("Content-Length") or 0)
        if limit is not None and n > limit:
            raise Refusal(413, "request body too large")
        return self.rfile.read(n) if n > 0 else b""


class Call:
    """A request being answered: what a route handler gets."""

    def __init__(self, mock, handler, rec, params, query):
        self.mock = mock
        self.handler = handler
        self.rec = rec
        self.params = params
        self.query = query
        self.headers = handler.headers
        self.body = rec.body
        self.chain = list(handler.peer_chain)

    @property
    def client_cert(self):
        return self.chain[0] if self.chain else None

    def header(self, name):
        return self.headers.get(name)

    def json_body(self, required=True):
        """The body as JSON (415 if the Content-Type is not JSON, 400 if it does not parse)."""
        ctype = self.headers.get("Content-Type")
        if not self.body:
            if required:
                raise Refusal(400, "a JSON request body is required")
            return None
        if ctype is None or "application/json" not in ctype.lower():
            raise Refusal(415, f"Content-Type must be application/json, got {ctype!r}")
        try:
            obj = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise Refusal(400, f"the request body is not JSON: {e}") from None
        self.rec.json = obj
        return obj


class MockServerBase:
    """A mock server: HTTPS (or plain HTTP with tls False) on a thread, a request log, fault switches
    and a control channel. A subclass sets `pki` (a PkiDir with server-ca.pem) before calling
    MockServerBase.__init__, and implements _handshake(sock) and _answer(handler, rec).

    Class attributes: name (threads, log lines, 500 bodies), request_class (the log's records, with
    a `route`), BODY_MODES (the first is the right answer), CONFIG_KEYS (what /config may set; those
    in SET_CONFIG_KEYS become sets), max_body (None: no limit), server_version (None: Python's).

    Runtime switches (attributes):
      delay          seconds to wait before answering (a hang: a large value; stop() ends it)
      body_mode      one of BODY_MODES
      content_type   None: the right one; "": no Content-Type header; else that value
      fault_routes   None: delay/body_mode/content_type apply to every route, else a set of route names
      drop_connections  close every connection at accept (the client sees a reset)
    Methods: clear_faults(), down()/up() (connection refused meanwhile), requests,
    http_requests(route), wait_for_requests(n), clear_log(), start_control()."""

    name = "mock"
    request_class = None
    BODY_MODES = ()
    CONFIG_KEYS = ("delay", "body_mode", "content_type", "drop_connections")
    SET_CONFIG_KEYS = ()
    max_body = MAX_BODY
    server_version = None
    tls = True

    def __init__(self, directory, port=0, host="127.0.0.1", log_path=None, verbose=False):
        self.dir = directory
        self.host = host
        self.port = port
        self.verbose = verbose
        self.log_path = log_path
        self.io_timeout = 30.0
        self._lock = threading.RLock()
        self._log_entries = []
        self._log_cond = threading.Condition(self._lock)
        self._conns = set()
        self._server = None
        self._thread = None
        self._control = None
        self._stopping = threading.Event()
        self._failure = None
        self.clear_faults()

    # ---- paths and URLs

    server_ca_path = property(lambda self: self.pki.path("server-ca.pem"))

    @property
    def base_url(self):
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def url(self):
        return self.base_url

    @property
    def is_up(self):
        return self._server is not None

    # ---- lifecycle

    def start(self):
        self._stopping.clear()
        self.up()
        return self

    def up(self):
        """Start accepting (again, on the same port)."""
        if self._server is not None:
            return
        self._server = _Server(self, (self.host, self.port))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.name, daemon=True)
        self._thread.start()

    def down(self):
        """Stop accepting and cut the open connections: connection refused until up()."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self._stopping.set()
        self.down()
        ctl, self._control = self._control, None
        if ctl is not None:
            ctl.shutdown()
            ctl.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- faults

    def clear_faults(self):
        self._failure = None
        self.delay = 0
        self.body_mode = self.BODY_MODES[0]
        self.content_type = None
        self.fault_routes = None
        self.drop_connections = False

    def _fault_applies(self, route):
        return self.fault_routes is None or route in self.fault_routes

    def _take_failure(self, route):
        """The failure set by fail() when it answers this request of `route` (a dict), else None.
        fail() stores a dict with at least "routes" (None: all) and "count" (None: until cleared)."""
        with self._lock:
            f = self._failure
            if f is None or (f["routes"] is not None and route not in f["routes"]):
                return None
            if f["count"] is not None:
                f["count"] -= 1
                if f["count"] <= 0:
                    self._failure = None
            return dict(f)

    def _injected(self, route):
        """The injected delay, then the injected failure if one answers this request of `route`."""
        if self._fault_applies(route) and self.delay:
            self._stopping.wait(self.delay)
        return self._take_failure(route)

    # ---- to override

    def _handshake(self, sock):
        """The TLS server side of an accepted connection: (the socket to serve, the client's chain)."""
        raise NotImplementedError

    def _answer(self, handler, rec):
        """Reads the request and answers it with _send(), filling in `rec` on the way."""
        raise NotImplementedError

    def control(self, method, path, arg):
        """Service-specific control-channel endpoints: a JSON-able result, or raise KeyError (404)."""
        raise KeyError(path)

    def apply_config(self, cfg):
        """Applies a control-channel /config object (ValueError on unknown keys)."""
        for k, v in cfg.items():
            if k not in self.CONFIG_KEYS:
                raise ValueError(f"unknown config key {k!r}")
            if k in self.SET_CONFIG_KEYS and v is not None:
                v = set(v)
            if k == "body_mode" and v not in self.BODY_MODES:
                raise ValueError(f"body_mode must be one of {self.BODY_MODES}")
            setattr(self, k, v)

    # ---- dispatch

    def _dispatch(self, handler):
        rec = self.request_class(method=handler.command, path=handler.path,
                                 headers={k.lower(): v for k, v in handler.headers.items()})
        try:
            self._answer(handler, rec)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            raise
        except Exception as e:  # a mock bug: a 500 the log shows
            if rec.status is not None:
                raise  # too late for another answer on this connection
            rec.error = f"{type(e).__name__}: {e}"
            if self.verbose:
                traceback.print_exc()
            self._send(handler, rec, 500, f"{self.name} internal error: {e}\n".encode(), "text/plain")

    def _send(self, handler, rec, status, body, ctype, headers=()):
        rec.status = status
        rec.response = body
        rec.response_headers = dict(headers)
        self._log(rec)
        handler.send_response(status)
        if ctype:
            handler.send_header("Content-Type", ctype)
        for k, v in headers:
            handler.send_header(k, v)
        if status != 204:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD" and status != 204:
            handler.wfile.write(body)

    # ---- log

    def _log(self, rec):
        with self._log_cond:
            self._log_entries.append(rec)
            self._log_cond.notify_all()
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(rec.to_json() + "\n")
        if self.verbose:
            sys.stderr.write(f"{self.name}: {rec!r}\n")

    @property
    def requests(self):
        """The log: every answered request and every refused connection, oldest first."""
        with self._lock:
            return list(self._log_entries)

    def http_requests(self, route=None):
        return [r for r in self.requests if r.method and (route is None or r.route == route)]

    def tls_errors(self):
        """Refused/failed connections: TLS handshake failures and drop_connections."""
        return [r.tls_error for r in self.requests if r.method is None]

    def clear_log(self):
        with self._lock:
            self._log_entries.clear()

    def wait_for_requests(self, n, timeout=10.0, route=None):
        """Waits until the log holds ≥ n HTTP requests (of `route` if given); returns them."""
        deadline = time.monotonic() + timeout
        with self._log_cond:
            while True:
                got = [r for r in self._log_entries if r.method and (route is None or r.route == route)]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {n} {self.name} requests after {timeout} s")
                self._log_cond.wait(left)

    # ---- control channel

    def start_control(self, port=0):
        """Starts the plain-HTTP control channel on 127.0.0.1; returns its URL.
            GET  /requests          the log (request_class.to_json objects)
            POST /config {...}      apply_config()
            POST /fail {...}        fail() arguments; /clear-faults, /clear-log, /down, /up
        plus the service's own (control())."""
        if self._control is None:
            self._control = _ControlServer(self, (self.host, port))
            threading.Thread(target=self._control.serve_forever, kwargs={"poll_interval": 0.05},
                             name=self.name + "-control", daemon=True).start()
        return f"http://{self.host}:{self._control.server_address[1]}"

    def _control_call(self, method, path, arg):
        if method == "GET" and path == "/requests":
            return [json.loads(r.to_json()) for r in self.requests]
        if method == "POST":
            if path == "/config":
                self.apply_config(arg)
                return {"up": self.is_up}
            if path == "/fail":
                self.fail(**arg)
                return {}
            simple = {"/clear-faults": self.clear_faults, "/clear-log": self.clear_log,
                      "/down": self.down, "/up": self.up}
            if path in simple:
                simple[path]()
                return {"up": self.is_up}
        return self.control(method, path, arg)


class MockServer(MockServerBase):
    """An HTTPS JSON service with a route table: MockServerBase with a CloudPki, TLS client
    certificates captured (never refused in the handshake), api-version checks and JSON error bodies.
    Subclasses set `name`, ROUTES [(method, path regex, route name, handler method name)],
    `api_versions`, and implement error_body(status, code, message, network_error).

    Runtime switches, besides MockServerBase's:
      body_mode      "json" | "garbage" (a truncated, unparsable JSON body) | "empty"
      api_versions   the api-versions accepted (empty: any)
      rewrite        None, or fn(request, status, obj) -> obj, to reshape JSON answers in-process
    Methods: fail() and those of MockServerBase."""

    ROUTES = ()
    api_versions = ()
    request_class = Request
    BODY_MODES = BODY_MODES
    CONFIG_KEYS = MockServerBase.CONFIG_KEYS + ("fault_routes", "api_versions")
    SET_CONFIG_KEYS = ("fault_routes", "api_versions")

    def __init__(self, directory, port=0, host="127.0.0.1", server_names=("localhost", "127.0.0.1"),
                 log_path=None, verbose=False):
        self.pki = CloudPki(directory, server_names=server_names)
        super().__init__(directory, port=port, host=host, log_path=log_path, verbose=verbose)
        self.api_versions = set(self.api_versions)
        self._routes = [(m, re.compile(p), n, h) for m, p, n, h in self.ROUTES]
        self.rewrite = None
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(self.pki.server.cert_path, self.pki.server.key_path)
        _PeerChains.install(self._ctx)

    def _handshake(self, sock):
        _PeerChains.begin()
        sock = self._ctx.wrap_socket(sock, server_side=True)
        return sock, _PeerChains.take()

    # ---- faults

    def fail(self, status, count=None, routes=None, retry_after=None, body=None, message=None,
             code=None, network_error=False):
        """Answer the next `count` requests (None: until clear_faults()) of `routes` (None: all) with
        `status`, before authentication: body None → the service's error body (with `message`,
        `code`, and "networkError": true if asked); a dict → that JSON; bytes/str → sent as is."""
        self._failure = dict(status=status, count=count, routes=set(routes) if routes else None,
                             retry_after=retry_after, body=body, message=message, code=code,
                             network_error=network_error)

    # ---- to override

    def error_body(self, status, code, message, network_error=False):
        raise NotImplementedError

    def code_for(self, status, what):
        return None

    # ---- dispatch

    def _answer(self, handler, rec):
        split = urllib.parse.urlsplit(handler.path)
        if handler.peer_chain:
            rec.client_cert, rec.client_chain = handler.peer_chain[0], list(handler.peer_chain)
        try:
            rec.body = handler.read_body()
            query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
            rec.api_version = (query.get("api-version") or [None])[0]
            route = self._match(handler.command, split.path, rec)
            call = Call(self, handler, rec, rec.params, query)
            if rec.api_version is None:
                raise Refusal(400, "the api-version query parameter is required",
                              code=self.code_for(400, "api-version"))
            if self.api_versions and rec.api_version not in self.api_versions:
                raise Refusal(400, f"api-version {rec.api_version} is not supported",
                              code=self.code_for(400, "api-version"))
            injected = self._injected(route[2])
            if injected is not None:
                return self._send_injected(handler, rec, injected)
            status, obj, headers = getattr(self, route[3])(call)
            self._send_json(handler, rec, status, obj, headers, mutable=self._fault_applies(route[2]))
        except Refusal as r:
            rec.reason = r.reason
            code = r.code if r.code is not None else self.code_for(r.status, None)
            rec.error_code = code
            body = self.error_body(r.status, code, r.message)
            self._send_json(handler, rec, r.status, body, r.headers,
                            mutable=rec.route is not None and self._fault_applies(rec.route))

    def _match(self, method, path, rec):
        allowed = []
        for m, rx, name, fn in self._routes:
            mt = rx.fullmatch(path)
            if mt:
                if m == method:
                    rec.route = name
                    rec.params = {k: urllib.parse.unquote(v) for k, v in mt.groupdict().items()}
                    return m, rx, name, fn
                allowed.append(m)
        if allowed:
            raise Refusal(405, f"method {method} not allowed", headers=[("Allow", ", ".join(allowed))])
        raise Refusal(404, f"no such resource: {path}")

    def _send_injected(self, handler, rec, f):
        rec.injected = f"fail {f['status']}"
        rec.reason = f"injected {f['status']}"
        headers = [("Retry-After", str(f["retry_after"]))] if f["retry_after"] is not None else []
        body = f["body"]
        if body is None:
            code = f["code"] if f["code"] is not None else self.code_for(f["status"], "injected")
            rec.error_code = code
            body = self.error_body(f["status"], code, f["message"] or http.client.responses.get(
                f["status"], "error"), network_error=f["network_error"])
        if isinstance(body, (dict, list)):
            return self._send_json(handler, rec, f["status"], body, headers, mutable=False)
        if isinstance(body, str):
            body = body.encode()
        return self._send(handler, rec, f["status"], body, JSON_CT if body else None, headers)

    def _send_json(self, handler, rec, status, obj, headers=(), mutable=True):
        ctype = JSON_CT
        if obj is None:
            data, ctype = b"", None
        else:
            if mutable and self.rewrite is not None:
                obj = self.rewrite(rec, status, obj)
            data = json.dumps(obj).encode()
        if mutable and obj is not None:
            if self.body_mode == "garbage":
                data = data[:max(1, len(data) // 2)]  # cut in the middle: never valid JSON
            elif self.body_mode == "empty":
                data = b""
            if self.content_type is not None:
                ctype = self.content_type or None
        self._send(handler, rec, status, data, ctype, headers)


class _ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _reply(self, status, obj):
        body = json.dumps(obj, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            arg = json.loads(self.rfile.read(n) or b"{}")
            result = self.server.mock._control_call(self.command, self.path, arg)
        except KeyError as e:
            return self._reply(404, {"error": f"not found: {e}"})
        except (ValueError, TypeError, AttributeError) as e:
            return self._reply(400, {"error": f"{type(e).__name__}: {e}"})
        self._reply(200, result)

    do_POST = do_DELETE = do_PUT = do_GET


class _ControlServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, mock, addr):
        self.mock = mock
        super().__init__(addr, _ControlHandler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


# ------------------------------------------------------------------------------------------------
# Script mode

def script_parser(description):
    """An argument parser with what every mock takes first: --dir, --host, --port."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dir", required=True, help="PKI directory (generated if empty)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: ephemeral")
    return ap


def add_script_options(ap, log_name, control_help="start the control channel (CONTROL_URL)"):
    """What every mock takes last: --control, --control-port, --log (default DIR/log_name), --verbose."""
    ap.add_argument("--control", action="store_true", help=control_help)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--log", help=f"JSON-lines request log (default DIR/{log_name})")
    ap.add_argument("--verbose", action="store_true")


def run_script_servers(servers, print_lines):
    """Script mode: start `servers`, print KEY=VALUE lines then READY, serve until SIGTERM/SIGINT;
    SIGUSR1 takes every server down, SIGUSR2 brings them back up."""
    import signal
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    def each(method):
        return lambda *_: threading.Thread(target=lambda: [getattr(s, method)() for s in servers]).start()
    signal.signal(signal.SIGUSR1, each("down"))
    signal.signal(signal.SIGUSR2, each("up"))
    for s in servers:
        s.start()
    for line in print_lines():
        print(line)
    print("READY", flush=True)
    while not stop.wait(0.2):
        pass
    for s in servers:
        s.stop()
    return 0
