#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A mock EST server (RFC 7030) for the tests of the Certificates service (certd).

What certd sends and accepts: /work/shared/spec/cloud-protocols.md §5 and upstream-api.md §3.5.

PKI (generated on first use of a directory, loaded from it afterwards; EC P-256 keys, PEM files):
    server-ca.pem                 root of the server's TLS certificate: what certd's trusted_certs names
    server.pem, server.key.pem    the HTTPS server certificate (SAN localhost, 127.0.0.1) and key
    est-ca.pem, est-ca.key.pem    the EST CA that signs enrolled certs (with intermediate=True:
                                  est-ca.pem is the intermediate, est-root-ca.pem its root)
    est-chain.pem                 what /cacerts returns: the EST CA chain, signing CA first
    bootstrap-ca.pem, .key.pem    the bootstrap CA, whose certs are accepted for TLS client auth
    client-ca-bundle.pem          bootstrap CA + EST CA chain: the TLS client-cert trust store

In a test:
    with MockEst(directory, basic=("user", "pass"), client_cert=True) as est:
        est.url                    https://127.0.0.1:PORT/.well-known/est   (est.url_for("label"))
        est.server_ca_path         for trusted_certs
        cert, key = est.make_client_cert("boot", "device-1")   # a bootstrap-CA cert + key
        est.fail(500) / est.fail(202, retry_after=5, count=1) / est.delay = 2 / est.body_mode = "pem"
        est.content_type = "text/plain" / est.down(); est.up() / est.drop_connections = True
        est.requests               the request log (Request objects), est.wait_for_requests(2)

Strictness (as a real EST server): Basic configured and missing/wrong → 401 + WWW-Authenticate;
client cert required and none sent, or one of a refused kind (accept_bootstrap/accept_est_issued,
revoked) → 403; an untrusted, expired, not-yet-valid or non-clientAuth client cert → the TLS handshake
fails (logged as a Request with tls_error). CSR: Content-Type not application/pkcs10 → 415; not base64,
not a CSR, or a bad self-signature → 400. /simplereenroll needs the current cert as TLS client cert (403)
and the CSR subject must be its subject (400). /cacerts is anonymous unless policy.auth_cacerts.
Injected faults (fail/delay/body_mode/content_type) apply after authentication.

As a script:
    mock_est.py --dir D [--port P] [--basic user:pass] [--client-cert-auth] [--validity 5m] ...
prints KEY=VALUE lines (URL, SERVER_CA, EST_CA, ...) then READY, and serves until SIGTERM/SIGINT;
SIGUSR1 takes it down (stops accepting), SIGUSR2 brings it back up; with --control, CONTROL_URL is a
plain-HTTP control channel for every runtime switch (see apply_config).

The server loop, the request log, the fault switches, the control channel, the script mode and the
certificate helpers are mock_cloud.py's (MockServerBase, PkiDir, sign_cert, run_script_servers); what
is EST's is here: the PKI layout, the routes, Basic and client-certificate authentication (verified by
OpenSSL in the handshake, unlike the cloud services' own 401), PKCS#7 answers and the body modes.
"""

import base64
import binascii
import datetime
import http.client
import json
import os
import re
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_cloud import (DAY, Call, MockServerBase, PkiDir, add_script_options, ca_extensions,  # noqa: E402
                        leaf_extensions, make_key, run_script_servers, script_parser, server_extensions,
                        sign_cert, _name, _now, _pem, _write)
from mock_cloud import _key_pem  # noqa: E402,F401  (mock_est._key_pem, for the tests)

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs7  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

__all__ = [
    "MockEst", "Policy", "Pki", "Request",
    "make_key", "make_csr", "encode_csr", "decode_pkcs7", "est_request", "parse_duration", "apply_config",
]

WELL_KNOWN = "/.well-known/est"
OPS = ("cacerts", "simpleenroll", "simplereenroll")
UNSUPPORTED_OPS = ("csrattrs", "serverkeygen", "fullcmc")
CT_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CT_CACERTS = "application/pkcs7-mime"
BODY_MODES = ("base64", "base64-oneline", "base64-crlf", "pem", "der", "garbage", "base64-garbage",
              "empty-pkcs7")
ORG = "aziot-dbus mock EST"


# ------------------------------------------------------------------------------------------------
# Helpers (also for the tests that drive certd)

def make_csr(key, cn, client_auth=True, sans=(), subject=None):
    """A SHA-256 CSR of `key` (subject CN=cn, or the given x509.Name), with EKU clientAuth like certd's
    EST identity CSRs, and optional SAN DNS names."""
    b = x509.CertificateSigningRequestBuilder().subject_name(
        subject if subject is not None else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if client_auth:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return b.sign(key, hashes.SHA256())


def encode_csr(csr):
    """The body certd sends: base64 of the DER CSR, 64 characters a line, every line ending in \\n."""
    der = csr if isinstance(csr, bytes) else csr.public_bytes(serialization.Encoding.DER)
    b64 = base64.b64encode(der).decode()
    return "".join(b64[i:i + 64] + "\n" for i in range(0, len(b64), 64)).encode()


def decode_pkcs7(body):
    """Certificates of a certs-only PKCS#7 response, PEM or base64 DER (whitespace allowed), in order."""
    if isinstance(body, str):
        body = body.encode()
    if b"-----BEGIN PKCS7-----" in body:
        return pkcs7.load_pem_pkcs7_certificates(body)
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(body.split()), validate=True))


def parse_duration(text):
    """Seconds of "90", "90s", "5m", "2h", "30d"."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|day|days)?\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r}")
    unit = {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": DAY, "day": DAY, "days": DAY}[m.group(2)]
    return float(m.group(1)) * unit


def est_request(url, method="GET", body=None, headers=None, cafile=None, basic=None, cert=None,
                key=None, timeout=10.0):
    """One HTTPS (or HTTP) request, returns (status, headers dict lower-cased, body bytes).
    TLS failures raise ssl.SSLError / ConnectionError."""
    m = re.fullmatch(r"(https?)://([^/:]+)(?::(\d+))?(/.*)?", url)
    if not m:
        raise ValueError(url)
    scheme, host, port, path = m.group(1), m.group(2), m.group(3), m.group(4) or "/"
    if scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile)
        if cert:
            ctx.load_cert_chain(cert, key)
        conn = http.client.HTTPSConnection(host, int(port or 443), context=ctx, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    hdrs = dict(headers or {})
    if basic:
        hdrs["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    if body is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = "application/pkcs10"
        hdrs["Content-Transfer-Encoding"] = "base64"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _der(tag, content):
    return bytes([tag]) + _der_len(len(content)) + content


def empty_signed_data():
    """A degenerate PKCS#7 SignedData with no certificates (serialize_certificates refuses empty lists)."""
    oid_signed = bytes.fromhex("06092a864886f70d010702")
    oid_data = bytes.fromhex("06092a864886f70d010701")
    sd = _der(0x30, _der(0x02, b"\x01") + _der(0x31, b"") + _der(0x30, oid_data) + _der(0x31, b""))
    return _der(0x30, oid_signed + _der(0xA0, sd))


# ------------------------------------------------------------------------------------------------
# PKI

class Pki(PkiDir):
    """The server CA + server cert, the EST CA (optionally an intermediate under a root) and the
    bootstrap CA, generated into `directory` or loaded from it."""

    sign = staticmethod(sign_cert)

    def __init__(self, directory, intermediate=False, server_names=("localhost", "127.0.0.1"),
                 ca_days=3650):
        super().__init__(directory)
        self.ca_days = ca_days
        self.server_ca, self.server_ca_key = self._ca("server-ca", "Mock EST Server Root CA")
        self.bootstrap_ca, self.bootstrap_ca_key = self._ca("bootstrap-ca", "Mock EST Bootstrap CA")
        if intermediate or os.path.exists(self.path("est-root-ca.pem")):
            root, root_key = self._ca("est-root-ca", "Mock EST Root CA")
            self.est_ca, self.est_ca_key = self._ca("est-ca", "Mock EST Issuing CA", issuer=(root, root_key))
            self.est_chain = [self.est_ca, root]
        else:
            self.est_ca, self.est_ca_key = self._ca("est-ca", "Mock EST CA")
            self.est_chain = [self.est_ca]
        _write(self.path("est-chain.pem"), b"".join(_pem(c) for c in self.est_chain))
        _write(self.path("client-ca-bundle.pem"),
               _pem(self.bootstrap_ca) + b"".join(_pem(c) for c in self.est_chain))
        if self.has("server"):
            self.server_cert = self.load("server")[0][0]
        else:
            key = make_key()
            self.server_cert = self.sign(
                self.server_ca, self.server_ca_key, _name(server_names[0], ORG), key.public_key(),
                days=self.ca_days - 1, not_before=_now() - datetime.timedelta(days=1),
                extensions=server_extensions(server_names) + [
                    (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)])
            self.store("server", self.server_cert, key)

    def _ca(self, stem, cn, issuer=None):
        if self.has(stem):
            certs, key = self.load(stem)
            return certs[0], key
        key = make_key()
        issuer_cert, issuer_key = issuer or (None, key)
        days = self.ca_days if issuer is None else self.ca_days - 1
        cert = self.sign(issuer_cert, issuer_key, _name(cn, ORG), key.public_key(), days=days,
                         extensions=ca_extensions(), not_before=_now() - datetime.timedelta(days=1))
        self.store(stem, cert, key)
        return cert, key

    def make_client_cert(self, name=None, cn="client", ca="bootstrap", days=365, seconds=None,
                         not_before=None, key=None, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)):
        """A client cert + key: ca = "bootstrap" | "est" | "self" (self-signed, untrusted) | "server"
        (a CA the mock does not accept for clients). Valid from `not_before` (default: an hour ago,
        against clock steps) for `days` (or `seconds`). With `name`, also writes <name>.pem and
        <name>.key.pem into the directory and returns their paths; else returns (cert, key) objects."""
        key = key or make_key()
        if not_before is None:
            not_before = _now() - datetime.timedelta(hours=1)
        issuer = {"bootstrap": (self.bootstrap_ca, self.bootstrap_ca_key),
                  "est": (self.est_ca, self.est_ca_key),
                  "server": (self.server_ca, self.server_ca_key),
                  "self": (None, key)}[ca]
        cert = self.sign(issuer[0], issuer[1], _name(cn, org=None), key.public_key(), days=days,
                         seconds=seconds, not_before=not_before, extensions=leaf_extensions(eku))
        if name is None:
            return cert, key
        return self.store(name, cert, key)

    def classify(self, cert):
        """"bootstrap" or "est" by the issuer of a client cert (OpenSSL has verified the chain)."""
        if cert.issuer == self.bootstrap_ca.subject:
            return "bootstrap"
        if cert.issuer == self.est_ca.subject:
            return "est"
        return None


# ------------------------------------------------------------------------------------------------
# Configuration and log

class Policy:
    """Authentication and issuance settings of the server, or of one label.

    basic: (username, password) → HTTP Basic required (missing/wrong → 401 + WWW-Authenticate).
    client_cert: a TLS client cert is required (absent → 403; untrusted/expired → TLS handshake fails).
    accept_bootstrap / accept_est_issued: which client certs are accepted (else 403).
    auth_cacerts: whether /cacerts needs the same authentication (RFC 7030: it should not).
    validity: seconds of issued certs (capped at the EST CA's notAfter); backdate: notBefore = now − it.
    default_eku: EKU OIDs added when the CSR asks for none (None: no EKU)."""

    def __init__(self, basic=None, client_cert=False, accept_bootstrap=True, accept_est_issued=True,
                 auth_cacerts=False, validity=30 * DAY, backdate=0, default_eku=None):
        self.basic = tuple(basic) if basic else None
        self.client_cert = client_cert
        self.accept_bootstrap = accept_bootstrap
        self.accept_est_issued = accept_est_issued
        self.auth_cacerts = auth_cacerts
        self.validity = parse_duration(validity)
        self.backdate = parse_duration(backdate)
        self.default_eku = default_eku

    def copy(self, **changes):
        p = Policy.__new__(Policy)
        p.__dict__.update(self.__dict__)
        for k, v in changes.items():
            if not hasattr(p, k):
                raise AttributeError(k)
            setattr(p, k, v)
        return p


class Request:
    """One logged request (or a refused connection: method None, tls_error set)."""

    def __init__(self, **kw):
        self.time = time.time()
        self.method = None
        self.path = None
        self.label = None
        self.op = None
        self.headers = {}          # lower-cased names
        self.body = b""
        self.auth = []             # "basic", "cert"
        self.username = None
        self.password_ok = None
        self.client_cert = None    # x509.Certificate
        self.client_cert_subject = None   # RFC 4514 string
        self.client_cert_source = None    # "bootstrap" | "est"
        self.tls_error = None
        self.error = None          # an exception inside the mock (answered 500)
        self.status = None
        self.response = b""        # the body answered
        self.response_headers = {}  # and the headers besides Content-Type and Content-Length
        self.csr = None            # x509.CertificateSigningRequest
        self.issued = None         # x509.Certificate
        self.__dict__.update(kw)

    @property
    def route(self):
        return self.op

    def to_json(self):
        skip = ("client_cert", "csr", "issued", "body", "response", "response_headers")
        d = {k: v for k, v in self.__dict__.items() if k not in skip}
        d["body"] = self.body.decode("latin-1")
        d["csr_subject"] = self.csr.subject.rfc4514_string() if self.csr is not None else None
        d["issued_serial"] = self.issued.serial_number if self.issued is not None else None
        d["issued_pem"] = _pem(self.issued).decode() if self.issued is not None else None
        return json.dumps(d)

    def __repr__(self):
        return (f"<Request {self.method} {self.path} auth={self.auth} cert={self.client_cert_subject!r}"
                f" status={self.status} tls_error={self.tls_error!r}>")


# ------------------------------------------------------------------------------------------------
# Server

class MockEst(MockServerBase):
    """The mock EST server; see the module docstring. Attributes settable at runtime:

    policy (Policy), labels {label: Policy}, strict_labels (unknown labels → 404),
    delay (seconds before answering), body_mode (one of BODY_MODES), content_type (None: the right one,
    "": omit), fault_ops (None: delay/body_mode/content_type apply to every op, else a set of ops),
    enroll_with_chain (append the EST CA chain to enroll responses), drop_connections (close every
    connection at accept), revoked (serials of client certs refused with 403).
    Methods: fail(), clear_faults(), down(), up(), make_client_cert(), requests, wait_for_requests()."""

    name = "mock-est"
    request_class = Request
    BODY_MODES = BODY_MODES
    CONFIG_KEYS = MockServerBase.CONFIG_KEYS + ("fault_ops", "enroll_with_chain", "strict_labels",
                                                "request_client_cert", "revoked")
    SET_CONFIG_KEYS = ("fault_ops",)
    max_body = None
    server_version = "mock-est/1"

    def __init__(self, directory, port=0, host="127.0.0.1", basic=None, client_cert=False,
                 validity=30 * DAY, intermediate=False, tls=True, tls_max_version=None,
                 server_names=("localhost", "127.0.0.1"), log_path=None, verbose=False, **policy_kw):
        self.pki = Pki(directory, intermediate=intermediate, server_names=server_names)
        self.tls = tls
        self.policy = Policy(basic=basic, client_cert=client_cert, validity=validity, **policy_kw)
        self.labels = {}
        self.strict_labels = False
        self.enroll_with_chain = False
        self.revoked = set()
        self.request_client_cert = None  # None: when some policy wants one; True/False: always/never
        super().__init__(directory, port=port, host=host, log_path=log_path, verbose=verbose)

        def ctx(verify):
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            c.load_cert_chain(self.pki.path("server.pem"), self.pki.path("server.key.pem"))
            if tls_max_version == "1.2":
                c.maximum_version = ssl.TLSVersion.TLSv1_2
            if verify:
                c.verify_mode = ssl.CERT_OPTIONAL
                c.load_verify_locations(self.pki.path("client-ca-bundle.pem"))
            return c
        self._ctx_plain = ctx(False)
        self._ctx_client = ctx(True)

    # ---- paths and URLs

    est_ca_path = property(lambda self: self.pki.path("est-chain.pem"))
    bootstrap_ca_path = property(lambda self: self.pki.path("bootstrap-ca.pem"))
    client_ca_bundle_path = property(lambda self: self.pki.path("client-ca-bundle.pem"))

    @property
    def url(self):
        return self.base_url + WELL_KNOWN

    def url_for(self, label=None):
        return self.url + (f"/{label}" if label else "")

    def make_client_cert(self, name=None, cn="client", ca="bootstrap", **kw):
        return self.pki.make_client_cert(name, cn=cn, ca=ca, **kw)

    # ---- configuration

    def policy_for(self, label):
        return self.labels.get(label, self.policy) if label is not None else self.policy

    def set_label(self, label, **kw):
        """Gives `label` its own Policy: the default one with `kw` changed."""
        self.labels[label] = self.policy.copy(**kw)
        return self.labels[label]

    def _wants_client_cert(self):
        if self.request_client_cert is not None:
            return self.request_client_cert
        return self.policy.client_cert or any(p.client_cert for p in self.labels.values())

    # the ops delay/body_mode/content_type apply to: MockServerBase's fault_routes, by EST's name
    fault_ops = property(lambda self: self.fault_routes, lambda self, ops: setattr(self, "fault_routes", ops))

    def fail(self, status, body=b"", retry_after=None, count=None, ops=None, content_type="text/plain"):
        """Answer authenticated requests with `status` (+ Retry-After when given): the next `count`
        ones (None: until clear_faults()), for `ops` (None: all of cacerts/simpleenroll/simplereenroll)."""
        if isinstance(body, str):
            body = body.encode()
        self._failure = dict(status=status, body=body, retry_after=retry_after, count=count,
                             routes=set(ops) if ops else None, content_type=content_type)

    def apply_config(self, cfg):
        """Applies a control-channel /config object (ValueError on unknown keys): any of CONFIG_KEYS;
        "fail": fail() arguments or null; "policy": {Policy fields}; "labels": {label: {fields} or null}."""
        for k, v in cfg.items():
            if k == "fail":
                if v is None:
                    self._failure = None
                else:
                    self.fail(**v)
            elif k == "policy":
                self.policy = self.policy.copy(**_policy_changes(v))
            elif k == "labels":
                for label, changes in v.items():
                    if changes is None:
                        self.labels.pop(label, None)
                    else:  # changes to the label's policy (a new label starts from the default one)
                        self.labels[label] = self.policy_for(label).copy(**_policy_changes(changes))
            elif k == "revoked":
                self.revoked = set(v)
            else:
                super().apply_config({k: v})

    def control(self, method, path, arg):
        """POST /client-cert {name, cn, ca, days} → {"cert": path, "key": path}."""
        if method == "POST" and path == "/client-cert":
            try:
                cert, key = self.make_client_cert(arg["name"], cn=arg.get("cn", arg["name"]),
                                                  ca=arg.get("ca", "bootstrap"), days=arg.get("days", 365))
            except KeyError as e:  # a missing name or an unknown ca: a bad request, not an unknown path
                raise ValueError(f"bad /client-cert argument: {e}") from None
            return {"cert": cert, "key": key}
        raise KeyError(path)

    # ---- issuance

    def _issue(self, csr, policy):
        ext = leaf_extensions(eku=())
        has_eku = False
        for e in csr.extensions:
            if isinstance(e.value, (x509.SubjectAlternativeName, x509.KeyUsage)):
                ext.append((e.value, e.critical))
            elif isinstance(e.value, x509.ExtendedKeyUsage):
                ext.append((e.value, e.critical))
                has_eku = True
        if not has_eku and policy.default_eku:
            ext.append((x509.ExtendedKeyUsage(list(policy.default_eku)), False))
        nb = _now() - datetime.timedelta(seconds=policy.backdate)
        return Pki.sign(self.pki.est_ca, self.pki.est_ca_key, csr.subject, csr.public_key(),
                        seconds=policy.validity + policy.backdate, not_before=nb, extensions=ext)

    # ---- log

    def http_requests(self, op=None):
        return super().http_requests(op)

    def wait_for_requests(self, n, timeout=10.0, op=None):
        """Waits until the log holds ≥ n HTTP requests (of `op` if given); returns them."""
        return super().wait_for_requests(n, timeout, op)

    @property
    def issued_certs(self):
        """Every cert issued so far (x509.Certificate), oldest first."""
        return [r.issued for r in self.requests if r.issued is not None and r.status == 200]

    # ---- the connection: TLS with OpenSSL verifying the client cert against client-ca-bundle.pem

    def _handshake(self, sock):
        if not self.tls:
            return sock, []
        ctx = self._ctx_client if self._wants_client_cert() else self._ctx_plain
        sock = ctx.wrap_socket(sock, server_side=True)
        peer = sock.getpeercert(binary_form=True)
        return sock, [x509.load_der_x509_certificate(peer)] if peer else []

    # ---- the request

    def _reply(self, call, status, body=b"", content_type="text/plain", headers=()):
        self._send(call.handler, call.rec, status, body, content_type, headers)

    def _answer(self, handler, rec):
        rec.body = handler.read_body()
        call = Call(self, handler, rec, {}, {})
        if call.client_cert is not None:
            rec.client_cert = call.client_cert
            rec.client_cert_subject = rec.client_cert.subject.rfc4514_string()
            rec.client_cert_source = self.pki.classify(rec.client_cert)

        # Route: /.well-known/est[/<label>]/<op>
        path = handler.path.split("?", 1)[0]
        if not path.startswith(WELL_KNOWN + "/"):
            return self._reply(call, 404, b"not found\n")
        parts = path[len(WELL_KNOWN) + 1:].split("/")
        if len(parts) == 1:
            label, op = None, parts[0]
        elif len(parts) == 2 and parts[0]:
            label, op = parts
        else:
            return self._reply(call, 404, b"not found\n")
        rec.label, rec.op = label, op
        if op in UNSUPPORTED_OPS:
            return self._reply(call, 404, f"{op} is not supported\n".encode())
        if op not in OPS:
            return self._reply(call, 404, b"not found\n")
        if label is not None and label not in self.labels and self.strict_labels:
            return self._reply(call, 404, f"unknown label {label}\n".encode())
        policy = self.policy_for(label)
        want = "GET" if op == "cacerts" else "POST"
        if handler.command != want:
            return self._reply(call, 405, b"method not allowed\n", headers=[("Allow", want)])

        # Authentication
        if op != "cacerts" or policy.auth_cacerts:
            refusal = self._authenticate(call, policy)
            if refusal:
                return self._reply(call, *refusal)
        else:
            self._note_auth(call, policy)

        # Injected faults
        f = self._injected(op)
        if f is not None:
            hdrs = [("Retry-After", str(f["retry_after"]))] if f["retry_after"] is not None else []
            return self._reply(call, f["status"], f["body"], content_type=f["content_type"], headers=hdrs)

        if op == "cacerts":
            return self._send_certs(call, list(self.pki.est_chain), CT_CACERTS, op)

        # simpleenroll / simplereenroll
        ctype = call.header("Content-Type") or ""
        if ctype.split(";")[0].strip().lower() != "application/pkcs10":
            return self._reply(call, 415, b"Content-Type must be application/pkcs10\n")
        try:
            der = base64.b64decode(b"".join(rec.body.split()), validate=True)
            csr = x509.load_der_x509_csr(der)
        except (binascii.Error, ValueError) as e:
            return self._reply(call, 400, f"invalid CSR: {e}\n".encode())
        rec.csr = csr
        if not csr.is_signature_valid:
            return self._reply(call, 400, b"CSR signature does not verify\n")
        if op == "simplereenroll":
            if rec.client_cert is None:
                return self._reply(call, 403,
                                   b"simplereenroll needs the current certificate as TLS client cert\n")
            if csr.subject != rec.client_cert.subject:
                return self._reply(call, 400,
                                   b"simplereenroll: CSR subject differs from the current certificate\n")
        rec.issued = self._issue(csr, policy)
        certs = [rec.issued] + (list(self.pki.est_chain) if self.enroll_with_chain else [])
        return self._send_certs(call, certs, CT_CERTS_ONLY, op)

    def _note_auth(self, call, policy):
        rec = call.rec
        user = _basic_credentials(call.header("Authorization") or "")
        if user is not None:
            rec.auth.append("basic")
            rec.username = user[0]
            rec.password_ok = policy.basic is not None and user == policy.basic
        if rec.client_cert is not None:
            rec.auth.append("cert")
        return user

    def _authenticate(self, call, policy):
        """None when the request may proceed, else the refusal: the arguments of _reply() after call."""
        user = self._note_auth(call, policy)
        rec = call.rec
        if policy.basic is not None and user != policy.basic:
            return (401, b"authentication required\n", "text/plain",
                    [("WWW-Authenticate", 'Basic realm="mock-est"')])
        if policy.client_cert:
            if rec.client_cert is None:
                return 403, b"a TLS client certificate is required\n"
            if rec.client_cert_source == "bootstrap" and not policy.accept_bootstrap:
                return 403, b"bootstrap certificates are not accepted here\n"
            if rec.client_cert_source == "est" and not policy.accept_est_issued:
                return 403, b"EST-issued certificates are not accepted here\n"
            if rec.client_cert_source is None:
                return 403, b"client certificate not accepted\n"
            if rec.client_cert.serial_number in self.revoked:
                return 403, b"client certificate revoked\n"
        return None

    def _send_certs(self, call, certs, content_type, op):
        mode = self.body_mode if self._fault_applies(op) else "base64"
        if mode not in BODY_MODES:
            raise ValueError(f"bad body_mode {mode!r}")
        der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
        headers = [("Content-Transfer-Encoding", "base64")]
        if mode == "pem":
            body, headers = pkcs7.serialize_certificates(certs, serialization.Encoding.PEM), []
        elif mode == "der":
            body, headers = der, []
        elif mode == "garbage":
            body = b"this is not a PKCS#7 structure! <html>@@@</html>\n"
        elif mode == "base64-garbage":
            body = base64.encodebytes(os.urandom(300))
        elif mode == "empty-pkcs7":
            body = base64.encodebytes(empty_signed_data())
        elif mode == "base64-oneline":
            body = base64.b64encode(der)
        elif mode == "base64-crlf":
            body = base64.encodebytes(der).replace(b"\n", b"\r\n")
        else:
            body = base64.encodebytes(der)  # 76-character lines, like most EST servers
        if self._fault_applies(op) and self.content_type is not None:
            content_type = self.content_type  # "" → no Content-Type header at all
        return self._reply(call, 200, body, content_type=content_type, headers=headers)


def _basic_credentials(authorization):
    """(user, password) of a Basic Authorization value, ("", None) when it does not decode, None when
    it is not Basic."""
    if not authorization.lower().startswith("basic "):
        return None
    try:
        user, _, pw = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ("", None)
    return (user, pw)


# ------------------------------------------------------------------------------------------------
# Control channel: the runtime switches of a mock run as a process (plain HTTP on 127.0.0.1, its own
# port, untouched by the faults; MockServerBase.start_control).
#   GET  /requests                   the log, JSON (Request.to_json objects)
#   POST /config   {...}             any of CONFIG_KEYS; "fail": {status, body, retry_after, count, ops}
#                                    or null; "policy": {Policy fields}; "labels": {label: {fields}}
#   POST /fail {...}                 fail() arguments
#   POST /clear-faults, /clear-log, /down, /up
#   POST /client-cert {name, cn, ca, days}  → {"cert": path, "key": path}

CONFIG_KEYS = MockEst.CONFIG_KEYS
POLICY_KEYS = ("basic", "client_cert", "accept_bootstrap", "accept_est_issued", "auth_cacerts", "validity",
               "backdate")


def _policy_changes(d):
    bad = set(d) - set(POLICY_KEYS)
    if bad:
        raise ValueError(f"unknown policy keys {sorted(bad)}")
    d = dict(d)
    if d.get("basic"):
        d["basic"] = tuple(d["basic"])
    for k in ("validity", "backdate"):
        if k in d:
            d[k] = parse_duration(d[k])
    return d


def apply_config(mock, cfg):
    """Applies a control-channel /config object to `mock` (ValueError on unknown keys)."""
    mock.apply_config(cfg)


# ------------------------------------------------------------------------------------------------
# CLI

def main(argv=None):
    ap = script_parser("Mock EST server (RFC 7030) for the certd tests.")
    ap.add_argument("--basic", metavar="USER:PASS", help="require HTTP Basic auth")
    ap.add_argument("--client-cert-auth", action="store_true", help="require a TLS client cert")
    ap.add_argument("--no-bootstrap", action="store_true", help="refuse bootstrap-CA client certs (403)")
    ap.add_argument("--auth-cacerts", action="store_true", help="/cacerts needs authentication too")
    ap.add_argument("--validity", default="30d", help="of issued certs: 90s, 5m, 2h, 30d")
    ap.add_argument("--backdate", default="0", help="notBefore = now - this")
    ap.add_argument("--intermediate", action="store_true", help="EST CA is an intermediate under a root")
    ap.add_argument("--enroll-with-chain", action="store_true")
    ap.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    ap.add_argument("--tls-max", choices=["1.2", "1.3"])
    ap.add_argument("--label", action="append", default=[], metavar="LABEL[:basic=U:P|:cert|:nocert|"
                    ":nobootstrap|:validity=D]", help="a label with its own policy; implies --strict-labels")
    ap.add_argument("--bootstrap-cert", action="append", default=[], metavar="NAME[:CN]",
                    help="write a bootstrap-CA client cert NAME.pem + NAME.key.pem into --dir")
    ap.add_argument("--fail-status", type=int, help="answer with this status")
    ap.add_argument("--fail-body", default="")
    ap.add_argument("--retry-after", type=int)
    ap.add_argument("--fail-count", type=int, help="only the next N requests")
    ap.add_argument("--fail-ops", help="comma-separated ops the failure applies to")
    ap.add_argument("--delay", type=float, default=0)
    ap.add_argument("--body-mode", choices=BODY_MODES, default="base64")
    ap.add_argument("--content-type", help="response Content-Type ('' to omit)")
    ap.add_argument("--fault-ops", help="comma-separated ops delay/body-mode/content-type apply to")
    ap.add_argument("--drop-connections", action="store_true")
    add_script_options(ap, "requests.jsonl")
    a = ap.parse_args(argv)

    basic = tuple(a.basic.split(":", 1)) if a.basic else None
    est = MockEst(a.dir, port=a.port, host=a.host, basic=basic, client_cert=a.client_cert_auth,
                  validity=parse_duration(a.validity), backdate=parse_duration(a.backdate),
                  intermediate=a.intermediate, tls=not a.http, tls_max_version=a.tls_max,
                  log_path=a.log or os.path.join(a.dir, "requests.jsonl"), verbose=a.verbose,
                  accept_bootstrap=not a.no_bootstrap, auth_cacerts=a.auth_cacerts)
    est.enroll_with_chain = a.enroll_with_chain
    for spec in a.label:
        name, *opts = spec.split(":")
        kw = {}
        i = 0
        while i < len(opts):
            o = opts[i]
            if o.startswith("basic="):
                kw["basic"] = (o[6:], opts[i + 1])
                i += 1
            elif o == "cert":
                kw["client_cert"] = True
            elif o == "nocert":
                kw["client_cert"] = False
            elif o == "nobasic":
                kw["basic"] = None
            elif o == "nobootstrap":
                kw["accept_bootstrap"] = False
            elif o.startswith("validity="):
                kw["validity"] = parse_duration(o[9:])
            else:
                ap.error(f"bad label option {o!r}")
            i += 1
        est.set_label(name, **kw)
        est.strict_labels = True
    if a.fail_status:
        est.fail(a.fail_status, a.fail_body, retry_after=a.retry_after, count=a.fail_count,
                 ops=a.fail_ops.split(",") if a.fail_ops else None)
    est.delay = a.delay
    est.body_mode = a.body_mode
    est.content_type = a.content_type
    est.fault_ops = set(a.fault_ops.split(",")) if a.fault_ops else None
    est.drop_connections = a.drop_connections
    boots = []
    for spec in a.bootstrap_cert:
        name, _, cn = spec.partition(":")
        boots.append((name, est.make_client_cert(name, cn=cn or name)))

    def lines():
        out = [f"URL={est.url}", f"PORT={est.port}", f"SERVER_CA={est.server_ca_path}",
               f"EST_CA={est.est_ca_path}", f"BOOTSTRAP_CA={est.bootstrap_ca_path}",
               f"BOOTSTRAP_CA_KEY={est.pki.path('bootstrap-ca.key.pem')}", f"LOG={est.log_path}"]
        if a.control:
            out.append(f"CONTROL_URL={est.start_control(a.control_port)}")
        for name, (cert, key) in boots:
            out += [f"BOOTSTRAP_CERT_{name}={cert}", f"BOOTSTRAP_KEY_{name}={key}"]
        return out
    return run_script_servers([est], lines)


if __name__ == "__main__":
    sys.exit(main())
