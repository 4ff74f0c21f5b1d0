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
"""

import argparse
import base64
import binascii
import datetime
import http.client
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
DAY = 86400


# ------------------------------------------------------------------------------------------------
# Helpers (also for the tests that drive certd)

def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


def make_key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn, org="aziot-dbus mock EST"):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


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

class Pki:
    """The server CA + server cert, the EST CA (optionally an intermediate under a root) and the
    bootstrap CA, generated into `directory` or loaded from it."""

    def __init__(self, directory, intermediate=False, server_names=("localhost", "127.0.0.1"),
                 ca_days=3650):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
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
        if os.path.exists(self.path("server.pem")) and os.path.exists(self.path("server.key.pem")):
            self.server_cert = self._load_cert("server.pem")
        else:
            key = make_key()
            sans = []
            for n in server_names:
                try:
                    import ipaddress
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            self.server_cert = self.sign(
                self.server_ca, self.server_ca_key, _name(server_names[0]), key.public_key(),
                days=self.ca_days - 1, not_before=_now() - datetime.timedelta(days=1),
                extensions=[(x509.SubjectAlternativeName(sans), False),
                            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
                            (x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                             True)])
            _write(self.path("server.key.pem"), _key_pem(key), private=True)
            _write(self.path("server.pem"), _pem(self.server_cert))

    def path(self, name):
        return os.path.join(self.dir, name)

    def _load_cert(self, name):
        with open(self.path(name), "rb") as f:
            return x509.load_pem_x509_certificate(f.read())

    def _ca(self, stem, cn, issuer=None):
        cert_path, key_path = self.path(stem + ".pem"), self.path(stem + ".key.pem")
        if os.path.exists(cert_path) and os.path.exists(key_path):
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), None)
            return self._load_cert(stem + ".pem"), key
        key = make_key()
        ext = [(x509.BasicConstraints(ca=True, path_length=None), True),
               (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)]
        if issuer is None:
            cert = self.sign(None, key, _name(cn), key.public_key(), days=self.ca_days, extensions=ext,
                             not_before=_now() - datetime.timedelta(days=1))
        else:
            cert = self.sign(issuer[0], issuer[1], _name(cn), key.public_key(), days=self.ca_days - 1,
                             extensions=ext, not_before=_now() - datetime.timedelta(days=1))
        _write(key_path, _key_pem(key), private=True)
        _write(cert_path, _pem(cert))
        return cert, key

    @staticmethod
    def sign(issuer_cert, issuer_key, subject, public_key, days=None, seconds=None, not_before=None,
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

    def make_client_cert(self, name=None, cn="client", ca="bootstrap", days=365, seconds=None,
                         not_before=None, key=None, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)):
        """A client cert + key: ca = "bootstrap" | "est" | "self" (self-signed, untrusted) | "server"
        (a CA the mock does not accept for clients). Valid from `not_before` (default: an hour ago,
        against clock steps) for `days` (or `seconds`). With `name`, also writes <name>.pem and
        <name>.key.pem into the directory and returns their paths; else returns (cert, key) objects."""
        key = key or make_key()
        if not_before is None:
            not_before = _now() - datetime.timedelta(hours=1)
        ext = [(x509.BasicConstraints(ca=False, path_length=None), True)]
        if eku:
            ext.append((x509.ExtendedKeyUsage(list(eku)), False))
        issuer = {"bootstrap": (self.bootstrap_ca, self.bootstrap_ca_key),
                  "est": (self.est_ca, self.est_ca_key),
                  "server": (self.server_ca, self.server_ca_key),
                  "self": (None, key)}[ca]
        cert = self.sign(issuer[0], issuer[1], _name(cn, org=None), key.public_key(), days=days,
                         seconds=seconds, not_before=not_before, extensions=ext)
        if name is None:
            return cert, key
        cert_path, key_path = self.path(name + ".pem"), self.path(name + ".key.pem")
        _write(key_path, _key_pem(key), private=True)
        _write(cert_path, _pem(cert))
        return cert_path, key_path

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
        self.csr = None            # x509.CertificateSigningRequest
        self.issued = None         # x509.Certificate
        self.__dict__.update(kw)

    def to_json(self):
        d = {k: v for k, v in self.__dict__.items() if k not in ("client_cert", "csr", "issued", "body")}
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

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mock, addr):
        self.mock = mock
        super().__init__(addr, _Handler)

    def server_bind(self):  # HTTPServer's calls getfqdn(), which can stall on DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        mock = self.mock
        if mock.drop_connections:
            mock._log(Request(tls_error="dropped by drop_connections"))
            request.close()
            return
        request.settimeout(mock.io_timeout)
        if mock.tls:
            ctx = mock._ctx_client if mock._wants_client_cert() else mock._ctx_plain
            try:
                request = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                mock._log(Request(tls_error=f"{type(e).__name__}: {e}"))
                request.close()
                return
        try:
            super().finish_request(request, client_address)
        finally:
            if request is not None and mock.tls:  # the raw socket was detached by wrap_socket
                try:
                    request.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                request.close()

    def handle_error(self, request, client_address):
        pass  # a client going away mid-request is not the server's problem


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-est/1"

    def log_message(self, fmt, *args):
        if self.server.mock.verbose:
            sys.stderr.write("mock-est: " + (fmt % args) + "\n")

    def do_GET(self):
        self._guarded()

    do_POST = do_PUT = do_DELETE = do_GET

    def _guarded(self):
        self.rec = None
        try:
            self._handle()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            raise
        except Exception as e:  # a mock bug or an unexpected CSR: a 500 that the log shows
            if self.rec is not None and self.rec.status is None:
                self.rec.error = f"{type(e).__name__}: {e}"
                self._send(500, f"mock-est internal error: {e}\n".encode())
            else:
                raise

    # ---- plumbing

    def _read_body(self):
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
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body=b"", content_type="text/plain", headers=()):
        rec = self.rec
        rec.status = status
        mock = self.server.mock
        mock._log(rec)
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # ---- the request

    def _handle(self):
        mock = self.server.mock
        path = self.path.split("?", 1)[0]
        rec = self.rec = Request(method=self.command, path=self.path,
                                 headers={k.lower(): v for k, v in self.headers.items()})
        rec.body = self._read_body()
        peer = None
        if isinstance(self.connection, ssl.SSLSocket):
            peer = self.connection.getpeercert(binary_form=True)
        if peer:
            rec.client_cert = x509.load_der_x509_certificate(peer)
            rec.client_cert_subject = rec.client_cert.subject.rfc4514_string()
            rec.client_cert_source = mock.pki.classify(rec.client_cert)

        # Route: /.well-known/est[/<label>]/<op>
        if not path.startswith(WELL_KNOWN + "/"):
            return self._send(404, b"not found\n")
        parts = path[len(WELL_KNOWN) + 1:].split("/")
        if len(parts) == 1:
            label, op = None, parts[0]
        elif len(parts) == 2 and parts[0]:
            label, op = parts
        else:
            return self._send(404, b"not found\n")
        rec.label, rec.op = label, op
        if op in UNSUPPORTED_OPS:
            return self._send(404, f"{op} is not supported\n".encode())
        if op not in OPS:
            return self._send(404, b"not found\n")
        if label is not None and label not in mock.labels and mock.strict_labels:
            return self._send(404, f"unknown label {label}\n".encode())
        policy = mock.policy_for(label)
        want = "GET" if op == "cacerts" else "POST"
        if self.command != want:
            return self._send(405, b"method not allowed\n", headers=[("Allow", want)])

        # Authentication
        if op != "cacerts" or policy.auth_cacerts:
            denied = self._authenticate(policy)
            if denied:
                return denied()
        else:
            self._note_auth(policy)

        # Injected faults
        if mock._fault_applies(op):
            if mock.delay:
                mock._stopping.wait(mock.delay)
        injected = mock._take_failure(op)
        if injected is not None:
            status, body, retry_after, ctype = injected
            hdrs = [("Retry-After", str(retry_after))] if retry_after is not None else []
            return self._send(status, body, content_type=ctype, headers=hdrs)

        if op == "cacerts":
            return self._send_certs(list(mock.pki.est_chain), CT_CACERTS, op)

        # simpleenroll / simplereenroll
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/pkcs10":
            return self._send(415, b"Content-Type must be application/pkcs10\n")
        try:
            der = base64.b64decode(b"".join(rec.body.split()), validate=True)
            csr = x509.load_der_x509_csr(der)
        except (binascii.Error, ValueError) as e:
            return self._send(400, f"invalid CSR: {e}\n".encode())
        rec.csr = csr
        if not csr.is_signature_valid:
            return self._send(400, b"CSR signature does not verify\n")
        if op == "simplereenroll":
            if rec.client_cert is None:
                return self._send(403, b"simplereenroll needs the current certificate as TLS client cert\n")
            if csr.subject != rec.client_cert.subject:
                return self._send(400, b"simplereenroll: CSR subject differs from the current certificate\n")
        rec.issued = mock._issue(csr, policy)
        certs = [rec.issued] + (list(mock.pki.est_chain) if mock.enroll_with_chain else [])
        return self._send_certs(certs, CT_CERTS_ONLY, op)

    def _note_auth(self, policy):
        rec = self.rec
        user = self._basic_credentials()
        if user is not None:
            rec.auth.append("basic")
            rec.username = user[0]
            rec.password_ok = policy.basic is not None and user == policy.basic
        if rec.client_cert is not None:
            rec.auth.append("cert")
        return user

    def _basic_credentials(self):
        h = self.headers.get("Authorization", "")
        if not h.lower().startswith("basic "):
            return None
        try:
            user, _, pw = base64.b64decode(h[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("", None)
        return (user, pw)

    def _authenticate(self, policy):
        """None when the request may proceed, else a function sending the refusal."""
        user = self._note_auth(policy)
        rec = self.rec
        if policy.basic is not None and user != policy.basic:
            return lambda: self._send(401, b"authentication required\n",
                                      headers=[("WWW-Authenticate", 'Basic realm="mock-est"')])
        if policy.client_cert:
            if rec.client_cert is None:
                return lambda: self._send(403, b"a TLS client certificate is required\n")
            if rec.client_cert_source == "bootstrap" and not policy.accept_bootstrap:
                return lambda: self._send(403, b"bootstrap certificates are not accepted here\n")
            if rec.client_cert_source == "est" and not policy.accept_est_issued:
                return lambda: self._send(403, b"EST-issued certificates are not accepted here\n")
            if rec.client_cert_source is None:
                return lambda: self._send(403, b"client certificate not accepted\n")
            if rec.client_cert.serial_number in self.server.mock.revoked:
                return lambda: self._send(403, b"client certificate revoked\n")
        return None

    def _send_certs(self, certs, content_type, op):
        mock = self.server.mock
        mode = mock.body_mode if mock._fault_applies(op) else "base64"
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
        if mock._fault_applies(op) and mock.content_type is not None:
            content_type = mock.content_type  # "" → no Content-Type header at all
        return self._send(200, body, content_type=content_type, headers=headers)


class MockEst:
    """The mock EST server; see the module docstring. Attributes settable at runtime:

    policy (Policy), labels {label: Policy}, strict_labels (unknown labels → 404),
    delay (seconds before answering), body_mode (one of BODY_MODES), content_type (None: the right one,
    "": omit), fault_ops (None: delay/body_mode/content_type apply to every op, else a set of ops),
    enroll_with_chain (append the EST CA chain to enroll responses), drop_connections (close every
    connection at accept), revoked (serials of client certs refused with 403).
    Methods: fail(), clear_faults(), down(), up(), make_client_cert(), requests, wait_for_requests()."""

    def __init__(self, directory, port=0, host="127.0.0.1", basic=None, client_cert=False,
                 validity=30 * DAY, intermediate=False, tls=True, tls_max_version=None,
                 server_names=("localhost", "127.0.0.1"), log_path=None, verbose=False, **policy_kw):
        self.pki = Pki(directory, intermediate=intermediate, server_names=server_names)
        self.dir = directory
        self.host = host
        self.port = port
        self.tls = tls
        self.verbose = verbose
        self.log_path = log_path
        self.io_timeout = 30.0
        self.policy = Policy(basic=basic, client_cert=client_cert, validity=validity, **policy_kw)
        self.labels = {}
        self.strict_labels = False
        self.enroll_with_chain = False
        self.revoked = set()
        self.request_client_cert = None  # None: when some policy wants one; True/False: always/never
        self.clear_faults()
        self._lock = threading.Lock()
        self._log_entries = []
        self._log_cond = threading.Condition(self._lock)
        self._server = None
        self._thread = None
        self._control = None
        self._stopping = threading.Event()

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

    server_ca_path = property(lambda self: self.pki.path("server-ca.pem"))
    est_ca_path = property(lambda self: self.pki.path("est-chain.pem"))
    bootstrap_ca_path = property(lambda self: self.pki.path("bootstrap-ca.pem"))
    client_ca_bundle_path = property(lambda self: self.pki.path("client-ca-bundle.pem"))

    @property
    def base_url(self):
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def url(self):
        return self.base_url + WELL_KNOWN

    def url_for(self, label=None):
        return self.url + (f"/{label}" if label else "")

    def make_client_cert(self, name=None, cn="client", ca="bootstrap", **kw):
        return self.pki.make_client_cert(name, cn=cn, ca=ca, **kw)

    # ---- lifecycle

    def start(self):
        self._stopping.clear()
        self.up()
        return self

    def up(self):
        if self._server is not None:
            return
        self._server = _Server(self, (self.host, self.port))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mock-est", daemon=True)
        self._thread.start()

    def down(self):
        """Stop accepting: the port is closed (connection refused) until up()."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)

    def stop(self):
        self._stopping.set()
        self.down()
        ctl, self._control = self._control, None
        if ctl is not None:
            ctl.shutdown()
            ctl.server_close()

    def start_control(self, port=0):
        """Starts the control channel (see apply_config); returns its URL http://127.0.0.1:PORT."""
        if self._control is None:
            self._control = _ControlServer(self, (self.host, port))
            threading.Thread(target=self._control.serve_forever, kwargs={"poll_interval": 0.05},
                             name="mock-est-control", daemon=True).start()
        return f"http://{self.host}:{self._control.server_address[1]}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def is_up(self):
        return self._server is not None

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

    def fail(self, status, body=b"", retry_after=None, count=None, ops=None, content_type="text/plain"):
        """Answer authenticated requests with `status` (+ Retry-After when given): the next `count`
        ones (None: until clear_faults()), for `ops` (None: all of cacerts/simpleenroll/simplereenroll)."""
        if isinstance(body, str):
            body = body.encode()
        self._failure = dict(status=status, body=body, retry_after=retry_after, count=count,
                             ops=set(ops) if ops else None, content_type=content_type)

    def clear_faults(self):
        self._failure = None
        self.delay = 0
        self.body_mode = "base64"
        self.content_type = None
        self.fault_ops = None
        self.drop_connections = False

    def _fault_applies(self, op):
        return self.fault_ops is None or op in self.fault_ops

    def _take_failure(self, op):
        with self._lock:
            f = self._failure
            if f is None or (f["ops"] is not None and op not in f["ops"]):
                return None
            if f["count"] is not None:
                f["count"] -= 1
                if f["count"] <= 0:
                    self._failure = None
            return f["status"], f["body"], f["retry_after"], f["content_type"]

    # ---- issuance

    def _issue(self, csr, policy):
        ext = [(x509.BasicConstraints(ca=False, path_length=None), True)]
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

    def _log(self, rec):
        with self._log_cond:
            self._log_entries.append(rec)
            self._log_cond.notify_all()
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(rec.to_json() + "\n")
        if self.verbose and rec.tls_error:
            sys.stderr.write(f"mock-est: connection refused: {rec.tls_error}\n")

    @property
    def requests(self):
        """The log: every answered request and every refused connection, oldest first."""
        with self._lock:
            return list(self._log_entries)

    def http_requests(self, op=None):
        return [r for r in self.requests if r.method and (op is None or r.op == op)]

    def tls_errors(self):
        """Refused/failed connections: TLS handshake failures (an untrusted/expired client cert, or the
        client refusing the server cert) and drop_connections."""
        return [r.tls_error for r in self.requests if r.method is None]

    @property
    def issued_certs(self):
        """Every cert issued so far (x509.Certificate), oldest first."""
        return [r.issued for r in self.requests if r.issued is not None and r.status == 200]

    def clear_log(self):
        with self._lock:
            self._log_entries.clear()

    def wait_for_requests(self, n, timeout=10.0, op=None):
        """Waits until the log holds ≥ n HTTP requests (of `op` if given); returns them."""
        deadline = time.monotonic() + timeout
        with self._log_cond:
            while True:
                got = [r for r in self._log_entries if r.method and (op is None or r.op == op)]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {n} EST requests after {timeout} s")
                self._log_cond.wait(left)


# ------------------------------------------------------------------------------------------------
# Control channel: the runtime switches of a mock run as a process (plain HTTP on 127.0.0.1, its own
# port, untouched by the faults).
#   GET  /requests                   the log, JSON (Request.to_json objects)
#   POST /config   {...}             any of CONFIG_KEYS; "fail": {status, body, retry_after, count, ops}
#                                    or null; "policy": {Policy fields}; "labels": {label: {fields}}
#   POST /clear-faults, /clear-log, /down, /up
#   POST /client-cert {name, cn, ca, days}  → {"cert": path, "key": path}

CONFIG_KEYS = ("delay", "body_mode", "content_type", "fault_ops", "drop_connections", "enroll_with_chain",
               "strict_labels", "request_client_cert", "revoked")
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
    for k, v in cfg.items():
        if k in CONFIG_KEYS:
            if k == "fault_ops" and v is not None:
                v = set(v)
            if k == "revoked":
                v = set(v)
            if k == "body_mode" and v not in BODY_MODES:
                raise ValueError(f"body_mode must be one of {BODY_MODES}")
            setattr(mock, k, v)
        elif k == "fail":
            if v is None:
                mock._failure = None
            else:
                mock.fail(**v)
        elif k == "policy":
            mock.policy = mock.policy.copy(**_policy_changes(v))
        elif k == "labels":
            for label, changes in v.items():
                if changes is None:
                    mock.labels.pop(label, None)
                else:  # changes to the label's policy (a new label starts from the default one)
                    mock.labels[label] = mock.policy_for(label).copy(**_policy_changes(changes))
        else:
            raise ValueError(f"unknown config key {k!r}")


class _ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/requests":
            return self._reply(200, [json.loads(r.to_json()) for r in self.server.mock.requests])
        self._reply(404, {"error": "not found"})

    def do_POST(self):
        mock = self.server.mock
        n = int(self.headers.get("Content-Length") or 0)
        try:
            arg = json.loads(self.rfile.read(n) or b"{}")
            if self.path == "/config":
                apply_config(mock, arg)
            elif self.path == "/clear-faults":
                mock.clear_faults()
            elif self.path == "/clear-log":
                mock.clear_log()
            elif self.path == "/down":
                mock.down()
            elif self.path == "/up":
                mock.up()
            elif self.path == "/client-cert":
                cert, key = mock.make_client_cert(arg["name"], cn=arg.get("cn", arg["name"]),
                                                  ca=arg.get("ca", "bootstrap"), days=arg.get("days", 365))
                return self._reply(200, {"cert": cert, "key": key})
            else:
                return self._reply(404, {"error": "not found"})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return self._reply(400, {"error": f"{type(e).__name__}: {e}"})
        self._reply(200, {"up": mock.is_up})


class _ControlServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, mock, addr):
        self.mock = mock
        super().__init__(addr, _ControlHandler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


# ------------------------------------------------------------------------------------------------
# CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description="Mock EST server (RFC 7030) for the certd tests.")
    ap.add_argument("--dir", required=True, help="PKI directory (generated if empty)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: ephemeral")
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
    ap.add_argument("--control", action="store_true", help="start the control channel (CONTROL_URL)")
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--log", help="JSON-lines request log (default DIR/requests.jsonl)")
    ap.add_argument("--verbose", action="store_true")
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

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=est.down).start())
    signal.signal(signal.SIGUSR2, lambda *_: threading.Thread(target=est.up).start())
    est.start()
    print(f"URL={est.url}")
    print(f"PORT={est.port}")
    print(f"SERVER_CA={est.server_ca_path}")
    print(f"EST_CA={est.est_ca_path}")
    print(f"BOOTSTRAP_CA={est.bootstrap_ca_path}")
    print(f"BOOTSTRAP_CA_KEY={est.pki.path('bootstrap-ca.key.pem')}")
    print(f"LOG={est.log_path}")
    if a.control:
        print(f"CONTROL_URL={est.start_control(a.control_port)}")
    for name, (cert, key) in boots:
        print(f"BOOTSTRAP_CERT_{name}={cert}")
        print(f"BOOTSTRAP_KEY_{name}={key}")
    print("READY", flush=True)
    while not stop.wait(0.2):
        pass
    est.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
