# SPDX-License-Identifier: MIT
"""services/common/http-client.c against local servers: what arrives on the wire (method, headers,
body, client certificate, CONNECT through a proxy), what comes back (status, Content-Type, body), and
each failure with its errno: refused, timed out, TLS refused either way, body too large.

The client is driven by http-client-driver (AZIOT_HTTP_CLIENT_DRIVER), which runs the requests of its
command line on one event loop and prints one JSON line per finished request. The servers here are
raw sockets in threads, so that the test sees the request exactly as sent."""

import base64
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_est import Pki, make_key  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

DRIVER = os.environ.get("AZIOT_HTTP_CLIENT_DRIVER")
BODY_MAX = 4 * 1024 * 1024
# Variables of the environment that change what the client does; each test sets its own.
CLIENT_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
              "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")


# ------------------------------------------------------------------------------------------------
# Servers

class Response:
    def __init__(self, status=200, reason="OK", headers=(("Content-Type", "text/plain"),), body=b"hello",
                 delay=0.0, chunked=False, hang=False, stall_after_headers=False, content_length=None):
        self.status, self.reason, self.headers, self.body = status, reason, list(headers), body
        self.delay, self.chunked, self.hang = delay, chunked, hang
        self.stall_after_headers, self.content_length = stall_after_headers, content_length


class Exchange:
    """One request as the server read it: header names and values as sent, in order."""

    def __init__(self, method, target, version, headers, body, peer_cert, client_port, session_reused):
        self.method, self.target, self.version = method, target, version
        self.headers, self.body, self.peer_cert = headers, body, peer_cert
        self.client_port, self.session_reused = client_port, session_reused

    def names(self):
        return [n.lower() for n, _ in self.headers]

    def get(self, name):
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[0] if len(values) == 1 else (None if not values else values)


class Reader:
    """Buffered reads from a socket: requests on one kept-alive connection follow each other."""

    def __init__(self, conn):
        self.conn, self.buf = conn, b""

    def _more(self):
        chunk = self.conn.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def head(self, limit=65536):
        """(first line, [(name, value)]), or None at the end of the connection."""
        try:
            while b"\r\n\r\n" not in self.buf:
                if len(self.buf) > limit:
                    raise ValueError("head too long")
                self._more()
        except EOFError:
            return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip(" \t")))
        return lines[0], headers

    def exact(self, n):
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class HttpServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering each request with handler(exchange) (a
    Response). Connections are kept alive: a client that reused one would be seen doing so. Records
    every exchange, TLS failures, connections."""

    def __init__(self, tls=None, handler=None):
        self.tls = tls
        self.handler = handler or (lambda ex: Response())
        self.exchanges, self.tls_errors = [], []
        self.connections = 0
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path="/", host="127.0.0.1"):
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True).start()

    def _serve(self, conn, addr):
        conn.settimeout(20)
        try:
            if self.tls:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    with self.lock:
                        self.tls_errors.append(str(e))
                    return
            reader = Reader(conn)
            while self._exchange(conn, reader, addr):
                pass
        except (OSError, ValueError, EOFError):
            pass
        finally:
            conn.close()

    def _exchange(self, conn, reader, addr):
        head = reader.head()
        if head is None:
            return False
        (request_line, headers) = head
        method, target, version = request_line.split(" ")
        ex = Exchange(method, target, version, headers, b"", None, addr[1], None)
        if isinstance(conn, ssl.SSLSocket):
            ex.peer_cert = conn.getpeercert(binary_form=True)
            ex.session_reused = conn.session_reused
        length = ex.get("Content-Length")
        if isinstance(length, str):
            ex.body = reader.exact(int(length))
        with self.lock:
            self.exchanges.append(ex)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self._respond(conn, self.handler(ex))
        finally:
            with self.lock:
                self.active -= 1

    def _respond(self, conn, r):
        if r.hang:
            self.stopping.wait(30)
            return False
        if r.delay:
            self.stopping.wait(r.delay)
        head = f"HTTP/1.1 {r.status} {r.reason}\r\n"
        for name, value in r.headers:
            head += f"{name}: {value}\r\n"
        if r.chunked:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += f"Content-Length: {r.content_length if r.content_length is not None else len(r.body)}\r\n"
        head += "\r\n"
        conn.sendall(head.encode("latin-1"))
        if r.stall_after_headers:
            self.stopping.wait(30)
            return False
        if r.chunked:
            for i in range(0, len(r.body), 65536):
                piece = r.body[i:i + 65536]
                conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.sendall(r.body)
        return True


class ConnectProxy:
    """An HTTP CONNECT proxy: records each CONNECT (target, headers); refuse=True answers 403."""

    def __init__(self, refuse=False):
        self.refuse = refuse
        self.connects = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, userinfo=""):
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(20)
        try:
            reader = Reader(conn)
            head = reader.head()
            if head is None:
                return
            request_line, headers = head
            rest = reader.buf
            method, target, _ = request_line.split(" ")
            with self.lock:
                self.connects.append((method, target, headers))
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.refuse:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=20)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            t = threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True)
            t.start()
            self._pipe(conn, upstream)
            t.join(20)
            upstream.close()
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------
# PKI: mock_est's (server CA, server cert for localhost and 127.0.0.1, bootstrap CA) and a few more.

def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


CA_EXTENSIONS = [(x509.BasicConstraints(ca=True, path_length=None), True),
                 (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)]


def an_hour_ago():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=1)


class Files:
    def __init__(self, directory):
        self.dir = directory

    def write(self, filename, data):
        path = os.path.join(self.dir, filename)
        with open(path, "wb") as f:
            f.write(data)
        return path


def make_pki(directory):
    pki = Pki(os.path.join(directory, "pki"))
    files = Files(directory)
    p = {"pki": pki, "server_ca": pki.path("server-ca.pem"), "server": pki.path("server.pem"),
         "server_key": pki.path("server.key.pem"), "bootstrap_ca": pki.path("bootstrap-ca.pem")}

    def server_cert(stem, subject, sans):
        key = make_key()
        ext = [(x509.SubjectAlternativeName(sans), False)] if sans else []
        ext.append((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
        cert = Pki.sign(pki.server_ca, pki.server_ca_key, subject, key.public_key(), days=30,
                        not_before=an_hour_ago(), extensions=ext)
        p[stem] = files.write(stem + ".pem", pem(cert))
        p[stem + "_key"] = files.write(stem + ".key.pem", key_pem(key))

    # A host name that is not the one asked for; a certificate with no SAN (its CN is checked).
    server_cert("wrong_host", name("wrong.example"),
                [x509.DNSName("wrong.example"), x509.IPAddress(ipaddress.ip_address("10.9.9.9"))])
    server_cert("cn_only", name("localhost"), None)

    # Client certificates: from the bootstrap CA, and a leaf under an intermediate under its own root.
    cert, key = pki.make_client_cert(cn="device-1")
    p["client_cert"] = files.write("client.pem", pem(cert))
    p["client_key"] = files.write("client.key.pem", key_pem(key))
    p["client_der"] = cert.public_bytes(serialization.Encoding.DER)
    p["other_key"] = files.write("other.key.pem", key_pem(make_key()))
    cert, key = pki.make_client_cert(cn="stranger", ca="self")
    p["self_signed"] = files.write("self.pem", pem(cert))
    p["self_signed_key"] = files.write("self.key.pem", key_pem(key))

    root_key, inter_key, leaf_key = make_key(), make_key(), make_key()
    root = Pki.sign(None, root_key, name("Chain Root CA"), root_key.public_key(), days=30,
                    not_before=an_hour_ago(), extensions=CA_EXTENSIONS)
    inter = Pki.sign(root, root_key, name("Chain Intermediate CA"), inter_key.public_key(), days=30,
                     not_before=an_hour_ago(), extensions=CA_EXTENSIONS)
    leaf = Pki.sign(inter, inter_key, name("chained-device"), leaf_key.public_key(), days=30,
                    not_before=an_hour_ago(),
                    extensions=[(x509.BasicConstraints(ca=False, path_length=None), True),
                                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])
    p["chain_root"] = files.write("chain-root.pem", pem(root))
    p["chain_inter"] = files.write("chain-inter.pem", pem(inter))
    p["chain_leaf"] = files.write("chain-leaf.pem", pem(leaf))
    p["chain_leaf_key"] = files.write("chain-leaf.key.pem", key_pem(leaf_key))
    p["chain_leaf_der"] = leaf.public_bytes(serialization.Encoding.DER)
    return p


def server_context(cert, key, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


# ------------------------------------------------------------------------------------------------
# Tests

class HttpClientTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not DRIVER or not os.access(DRIVER, os.X_OK):
            raise AssertionError("AZIOT_HTTP_CLIENT_DRIVER must name the built http-client-driver")
        cls.tmp = tempfile.mkdtemp(prefix="http-client-")
        cls.p = make_pki(cls.tmp)
        cls.files = Files(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def server(self, tls=None, handler=None):
        s = HttpServer(tls, handler)
        self.addCleanup(s.stop)
        return s

    def tls_server(self, handler=None, cert="server", client_ca=None):
        return self.server(server_context(self.p[cert], self.p[cert + "_key"], client_ca), handler)

    def proxy(self, refuse=False):
        pr = ConnectProxy(refuse)
        self.addCleanup(pr.stop)
        return pr

    def drive(self, *args, env=None, timeout=60, expect_lines=None):
        """Runs the driver; returns (its JSON lines sorted by index, wall seconds)."""
        e = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
        e.update(env or {})
        start = time.monotonic()
        p = subprocess.run([DRIVER, *args], env=e, capture_output=True, timeout=timeout)
        wall = time.monotonic() - start
        out, err = p.stdout.decode(), p.stderr.decode(errors="replace")
        self.assertEqual(p.returncode, 0, f"driver failed ({p.returncode}):\n{err}\n{out}")
        lines = sorted((json.loads(line) for line in out.splitlines()), key=lambda j: j["index"])
        if expect_lines is not None:
            self.assertEqual(len(lines), expect_lines, out + err)
        return lines, wall

    def one(self, *args, **kw):
        lines, _ = self.drive(*args, expect_lines=1, **kw)
        return lines[0]

    def assertOk(self, r, status=200):
        self.assertIsNone(r.get("error"), r)
        self.assertNotIn("start_error", r)
        self.assertEqual(r["status"], status, r)
        self.assertTrue(r["body_terminated"], r)
        return base64.b64decode(r["body"])

    def assertFails(self, r, error, *in_message):
        self.assertEqual(r.get("error"), error, r)
        self.assertIsNone(r["status"])
        self.assertTrue(r["message"], r)
        for text in in_message:
            self.assertIn(text.lower(), r["message"].lower(), r)


class RequestTest(HttpClientTestCase):
    """What is sent and what comes back."""

    def test_get_sends_exactly_host_and_the_given_headers(self):
        s = self.server(handler=lambda ex: Response(
            headers=[("Content-Type", "application/json; charset=utf-8"), ("X-Other", "1")],
            body=b'{"ok": true}'))
        r = self.one("--header", "Authorization: SharedAccessSignature sr=hub&sig=secret",
                     "--header", "If-Match: *", s.url("/devices/d1?api-version=2021-04-12"))
        self.assertEqual(self.assertOk(r), b'{"ok": true}')
        self.assertEqual(r["content_type"], "application/json; charset=utf-8")
        ex, = s.exchanges
        self.assertEqual((ex.method, ex.target, ex.version),
                         ("GET", "/devices/d1?api-version=2021-04-12", "HTTP/1.1"))
        self.assertEqual(ex.headers, [("Host", f"127.0.0.1:{s.port}"),
                                      ("Authorization", "SharedAccessSignature sr=hub&sig=secret"),
                                      ("If-Match", "*")])
        self.assertEqual(ex.body, b"")

    def test_post_body_arrives_exactly_with_its_content_type_and_no_expect(self):
        # Over 1 MiB, where curl would otherwise send "Expect: 100-continue", with every byte value.
        body = bytes(range(256)) * (5 * 1024 + 3)
        path = self.files.write("post-body", body)
        s = self.server(handler=lambda ex: Response(status=201, reason="Created", body=b"made"))
        r = self.one("--method", "POST", "--header", "Content-Type: application/octet-stream",
                     "--body-file", path, s.url("/est/simpleenroll"))
        self.assertEqual(self.assertOk(r, 201), b"made")
        ex, = s.exchanges
        self.assertEqual(ex.method, "POST")
        self.assertEqual(ex.body, body)
        self.assertEqual(sorted(ex.names()), ["content-length", "content-type", "host"])
        self.assertEqual(ex.get("Content-Type"), "application/octet-stream")
        self.assertEqual(ex.get("Content-Length"), str(len(body)))

    def test_no_content_type_unless_given(self):
        path = self.files.write("json-body", b'{"registrationId": "d1"}')
        s = self.server()
        self.assertOk(self.one("--method", "POST", "--body-file", path, s.url("/")))
        ex, = s.exchanges
        self.assertEqual(sorted(ex.names()), ["content-length", "host"])
        self.assertEqual(ex.body, b'{"registrationId": "d1"}')

    def test_methods(self):
        path = self.files.write("put-body", b"put me")
        s = self.server()
        lines, _ = self.drive("--method", "PUT", "--body-file", path, s.url("/put"), "--next",
                              "--method", "PATCH", "--body-file", path, s.url("/patch"), "--next",
                              "--method", "DELETE", s.url("/delete"), "--next",
                              "--method", "POST", s.url("/post-empty"), "--next",
                              "--method", "GET", s.url("/get"), expect_lines=5)
        for r in lines:
            self.assertOk(r)
        seen = {ex.target: ex for ex in s.exchanges}
        self.assertEqual((seen["/put"].method, seen["/put"].body), ("PUT", b"put me"))
        self.assertEqual((seen["/patch"].method, seen["/patch"].body), ("PATCH", b"put me"))
        self.assertEqual(seen["/delete"].method, "DELETE")
        self.assertNotIn("content-length", seen["/delete"].names())
        # POST without a body still says how long it is.
        self.assertEqual(seen["/post-empty"].method, "POST")
        self.assertEqual(seen["/post-empty"].get("Content-Length"), "0")
        self.assertEqual(seen["/get"].names(), ["host"])

    def test_a_header_with_an_empty_value_is_sent(self):
        s = self.server()
        self.assertOk(self.one("--header", "X-Empty:", "--header", "X-Blank:   ", s.url("/")))
        ex, = s.exchanges
        self.assertEqual(ex.headers[1:], [("X-Empty", ""), ("X-Blank", "")])

    def test_given_accept_is_sent_instead_of_none(self):
        s = self.server()
        self.assertOk(self.one("--header", "Accept: application/json", s.url("/")))
        self.assertEqual(s.exchanges[0].headers[1:], [("Accept", "application/json")])

    def test_error_statuses_and_bodies_come_back(self):
        answers = {
            "/404": Response(404, "Not Found", [("Content-Type", "application/json")],
                             b'{"message": "no such device"}'),
            "/500": Response(500, "Internal Server Error", [], b"boom"),
            "/204": Response(204, "No Content", [], b""),
            "/chunked": Response(body=b"x" * 200000, chunked=True),
        }
        s = self.server(handler=lambda ex: answers[ex.target])
        lines, _ = self.drive(*(s.url(path) for path in answers), expect_lines=4)
        r404, r500, r204, rchunked = lines
        self.assertEqual(self.assertOk(r404, 404), b'{"message": "no such device"}')
        self.assertEqual(r404["content_type"], "application/json")
        self.assertEqual(self.assertOk(r500, 500), b"boom")
        self.assertIsNone(r500["content_type"])
        self.assertEqual(self.assertOk(r204, 204), b"")
        self.assertEqual(self.assertOk(rchunked), b"x" * 200000)

    def test_bad_requests_are_refused_before_anything_is_sent(self):
        s = self.server()
        url = s.url("/")
        lines, _ = self.drive(
            "--method", "FETCH", url, "--next",
            "--method", "get", url, "--next",
            "--method", "", url, "--next",
            "ftp://127.0.0.1/file", "file:///etc/passwd", f"127.0.0.1:{s.port}/", "http://",
            f"http://127.0.0.1:{s.port}/a b", "not a url", "--next",
            "--header", "NoColon", url, "--next",
            "--header", "Bad Name: x", url, "--next",
            "--header", ": no name", url, "--next",
            "--header", "X-Split: a\r\nInjected: b", url, "--next",
            "--header", "X-Nul: a\x01b", url, "--next",
            "--client-cert", self.p["client_cert"], url, "--next",
            "--client-key", self.p["client_key"], url,
            expect_lines=16)
        for r in lines:
            self.assertEqual((r.get("start_error"), r["errno"]), ("EINVAL", 22), r)
        time.sleep(0.2)
        self.assertEqual(s.connections, 0)

    def test_every_request_has_its_own_connection(self):
        s = self.server()
        lines, _ = self.drive("--sequential", "--concurrent", "3", s.url("/"), expect_lines=3)
        for r in lines:
            self.assertOk(r)
        self.assertEqual(s.connections, 3)
        self.assertEqual(len({ex.client_port for ex in s.exchanges}), 3)

    def test_redirects_are_not_followed(self):
        s = self.server(handler=lambda ex: Response(302, "Found", [("Location", "/elsewhere")], b""))
        self.assertOk(self.one(s.url("/here")), 302)
        self.assertEqual([ex.target for ex in s.exchanges], ["/here"])


class TlsTest(HttpClientTestCase):
    def test_server_trusted_through_trust(self):
        s = self.tls_server()
        self.assertEqual(self.assertOk(self.one("--trust", self.p["server_ca"], s.url("/"))), b"hello")
        self.assertIsNone(s.exchanges[0].peer_cert)

    def test_server_not_trusted_fails_with_eproto(self):
        s = self.tls_server()
        self.assertFails(self.one(s.url("/")), "EPROTO", "certificate")
        # A trusted certificate that is not the server's issuer does not help.
        self.assertFails(self.one("--trust", self.p["bootstrap_ca"], s.url("/")), "EPROTO")
        self.assertEqual(s.exchanges, [])

    def test_system_store_is_openssls_default_verify_paths(self):
        s = self.tls_server()
        self.assertOk(self.one(s.url("/"), env={"SSL_CERT_FILE": self.p["server_ca"]}))

    def test_host_name_mismatch_fails(self):
        s = self.tls_server(cert="wrong_host")
        self.assertFails(self.one("--trust", self.p["server_ca"], s.url("/")), "EPROTO", "127.0.0.1")
        self.assertEqual(s.exchanges, [])

    def test_common_name_is_checked_without_san(self):
        s = self.tls_server(cert="cn_only")
        self.assertOk(self.one("--trust", self.p["server_ca"], s.url("/", host="localhost")))
        self.assertFails(self.one("--trust", self.p["server_ca"], s.url("/")), "EPROTO")

    def test_client_certificate_is_presented(self):
        s = self.tls_server(client_ca=self.p["bootstrap_ca"])
        r = self.one("--trust", self.p["server_ca"], "--client-cert", self.p["client_cert"],
                     "--client-key", self.p["client_key"], s.url("/"))
        self.assertOk(r)
        self.assertEqual(s.exchanges[0].peer_cert, self.p["client_der"])

    def test_client_certificate_required_and_missing_fails_with_eproto(self):
        s = self.tls_server(client_ca=self.p["bootstrap_ca"])
        for _ in range(3):  # the refusal comes after the TLS 1.3 handshake: check it is reliable
            self.assertFails(self.one("--trust", self.p["server_ca"], s.url("/")), "EPROTO")
        self.assertEqual(s.exchanges, [])
        self.assertEqual(len(s.tls_errors), 3)

    def test_client_certificate_not_trusted_by_the_server_fails_with_eproto(self):
        s = self.tls_server(client_ca=self.p["bootstrap_ca"])
        r = self.one("--trust", self.p["server_ca"], "--client-cert", self.p["self_signed"],
                     "--client-key", self.p["self_signed_key"], s.url("/"))
        self.assertFails(r, "EPROTO")
        self.assertEqual(s.exchanges, [])

    def test_client_key_not_of_the_certificate_fails_with_eproto(self):
        s = self.tls_server(client_ca=self.p["bootstrap_ca"])
        r = self.one("--trust", self.p["server_ca"], "--client-cert", self.p["client_cert"],
                     "--client-key", self.p["other_key"], s.url("/"))
        self.assertFails(r, "EPROTO", "client key")
        self.assertEqual(s.exchanges, [])

    def test_client_chain_is_sent(self):
        s = self.tls_server(client_ca=self.p["chain_root"])
        args = ["--trust", self.p["server_ca"], "--client-cert", self.p["chain_leaf"],
                "--client-key", self.p["chain_leaf_key"]]
        r = self.one(*args, "--chain", self.p["chain_inter"], s.url("/"))
        self.assertOk(r)
        self.assertEqual(s.exchanges[0].peer_cert, self.p["chain_leaf_der"])
        # Without the intermediate the server cannot build the chain.
        self.assertFails(self.one(*args, s.url("/")), "EPROTO")
        self.assertEqual(len(s.exchanges), 1)

    def test_identity_and_trust_stay_with_their_request(self):
        s = self.tls_server(client_ca=self.p["bootstrap_ca"])
        lines, _ = self.drive(
            "--sequential",
            "--trust", self.p["server_ca"], "--client-cert", self.p["client_cert"],
            "--client-key", self.p["client_key"], s.url("/1"), "--next",
            "--trust", self.p["server_ca"], s.url("/2"), "--next",
            "--trust", self.p["server_ca"], "--client-cert", self.p["client_cert"],
            "--client-key", self.p["client_key"], s.url("/3"),
            expect_lines=3)
        self.assertOk(lines[0])
        self.assertFails(lines[1], "EPROTO")
        self.assertOk(lines[2])
        self.assertEqual([ex.target for ex in s.exchanges], ["/1", "/3"])
        # A new connection and TLS session each time.
        self.assertEqual([ex.session_reused for ex in s.exchanges], [False, False])
        self.assertEqual(s.connections, 3)
        self.assertNotEqual(s.exchanges[0].client_port, s.exchanges[1].client_port)

    def test_trust_stays_with_its_request(self):
        s = self.tls_server()
        lines, _ = self.drive("--sequential", "--trust", self.p["server_ca"], s.url("/1"), "--next",
                              s.url("/2"), "--next", "--trust", self.p["server_ca"], s.url("/3"),
                              expect_lines=3)
        self.assertOk(lines[0])
        self.assertFails(lines[1], "EPROTO", "certificate")
        self.assertOk(lines[2])
        # And at once: each handshake has its own trust store.
        lines, _ = self.drive("--trust", self.p["server_ca"], "--concurrent", "3", s.url("/a"),
                              "--next", "--concurrent", "3", s.url("/b"), expect_lines=6)
        for r in lines[:3]:
            self.assertOk(r)
        for r in lines[3:]:
            self.assertFails(r, "EPROTO", "certificate")


class FailureTest(HttpClientTestCase):
    def test_connection_refused(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        self.assertFails(self.one(f"http://127.0.0.1:{port}/"), "ECONNREFUSED", str(port))

    def test_unresolvable_host_is_unreachable(self):
        self.assertFails(self.one("--timeout-ms", "10000", "http://no-such-host.invalid/"),
                         "EHOSTUNREACH", "no-such-host.invalid")

    def test_server_that_never_answers_times_out(self):
        s = self.server(handler=lambda ex: Response(hang=True))
        r = self.one("--timeout-ms", "700", s.url("/"))
        self.assertFails(r, "ETIMEDOUT", "timed out")
        self.assertGreaterEqual(r["elapsed_ms"], 690)
        self.assertLess(r["elapsed_ms"], 1500)
        self.assertEqual(len(s.exchanges), 1)

    def test_body_that_stops_coming_times_out(self):
        s = self.server(handler=lambda ex: Response(body=b"x" * 100, stall_after_headers=True))
        r = self.one("--timeout-ms", "700", s.url("/"))
        self.assertFails(r, "ETIMEDOUT")
        self.assertLess(r["elapsed_ms"], 1500)

    def test_tls_handshake_that_never_comes_times_out(self):
        s = self.server(handler=lambda ex: Response(hang=True))  # plain TCP: no ServerHello
        r = self.one("--timeout-ms", "700", s.url("/").replace("http:", "https:"))
        self.assertFails(r, "ETIMEDOUT")
        self.assertLess(r["elapsed_ms"], 1500)

    def test_body_over_the_limit_fails_with_efbig(self):
        answers = {
            "/announced": Response(body=b"y" * (BODY_MAX + 1)),
            "/chunked": Response(body=b"z" * (BODY_MAX + 1), chunked=True),
            "/exact": Response(body=b"e" * BODY_MAX, chunked=True),
            "/lying": Response(body=b"l" * (BODY_MAX + 1), content_length=BODY_MAX + 1),
        }
        s = self.server(handler=lambda ex: answers[ex.target])
        lines, _ = self.drive(*(s.url(p) for p in answers), expect_lines=4)
        self.assertFails(lines[0], "EFBIG", str(BODY_MAX))
        self.assertFails(lines[1], "EFBIG", str(BODY_MAX))
        self.assertEqual(len(self.assertOk(lines[2])), BODY_MAX)
        self.assertFails(lines[3], "EFBIG")

    def test_garbage_answer_is_eio(self):
        def garbage(ex):
            return Response(status="banana", reason="")
        s = self.server(handler=garbage)
        self.assertFails(self.one(s.url("/")), "EIO")


class ConcurrencyTest(HttpClientTestCase):
    def test_concurrent_requests_take_the_time_of_one(self):
        delay = 1.5
        s = self.server(handler=lambda ex: Response(delay=delay, body=ex.target.encode()))
        lines, wall = self.drive("--concurrent", "6", s.url("/slow"), expect_lines=6)
        for r in lines:
            self.assertEqual(self.assertOk(r), b"/slow")
            self.assertGreaterEqual(r["elapsed_ms"], delay * 1000 - 50)
        self.assertEqual(s.max_active, 6)
        self.assertLess(wall, 2 * delay, "the requests ran one after the other")
        self.assertEqual(sorted(r["pending"] for r in lines), [0, 1, 2, 3, 4, 5])

    def test_a_slow_request_does_not_hold_up_a_fast_one(self):
        slow = self.server(handler=lambda ex: Response(delay=2))
        fast = self.server()
        lines, _ = self.drive(slow.url("/"), fast.url("/"), expect_lines=2)
        self.assertOk(lines[0])
        self.assertOk(lines[1])
        self.assertLess(lines[1]["elapsed_ms"], 1000)
        self.assertEqual(lines[1]["pending"], 1)

    def test_cancelled_request_has_no_output(self):
        s = self.server(handler=lambda ex: Response(delay=3))
        lines, wall = self.drive("--cancel-after-ms", "300", s.url("/"), expect_lines=0)
        self.assertLess(wall, 2.5)
        self.assertEqual(len(s.exchanges), 1)  # it was on its way

    def test_cancel_leaves_the_others(self):
        slow = self.server(handler=lambda ex: Response(delay=3))
        other = self.server(handler=lambda ex: Response(delay=0.6))
        lines, _ = self.drive("--cancel-after-ms", "200", slow.url("/cancelled"), "--next",
                              other.url("/kept"), expect_lines=1)
        self.assertEqual(lines[0]["index"], 1)
        self.assertOk(lines[0])

    def test_freeing_the_client_in_a_callback_drops_the_pending_requests(self):
        slow = self.server(handler=lambda ex: Response(delay=3))
        fast = self.server()
        lines, wall = self.drive("--free-after-first", "--concurrent", "2", slow.url("/"), "--next",
                                 fast.url("/"), expect_lines=1)
        self.assertEqual(lines[0]["index"], 2)
        self.assertLess(wall, 2.5)


class ProxyTest(HttpClientTestCase):
    def https_through(self, env, **kw):
        s = self.tls_server()
        r = self.one("--trust", self.p["server_ca"], "--header", "Authorization: secret-token",
                     s.url("/via"), env=env, **kw)
        return s, r

    def test_https_proxy_is_used_with_connect(self):
        pr = self.proxy()
        s, r = self.https_through({"HTTPS_PROXY": pr.url()})
        self.assertOk(r)
        (method, target, headers), = pr.connects
        self.assertEqual((method, target), ("CONNECT", f"127.0.0.1:{s.port}"))
        # The request's headers go to the server only.
        self.assertNotIn("authorization", [n.lower() for n, _ in headers])
        self.assertEqual(s.exchanges[0].get("Authorization"), "secret-token")

    def test_lower_case_https_proxy_is_used(self):
        pr = self.proxy()
        s, r = self.https_through({"https_proxy": pr.url()})
        self.assertOk(r)
        self.assertEqual([c[1] for c in pr.connects], [f"127.0.0.1:{s.port}"])

    def test_upper_case_wins(self):
        pr, unused = self.proxy(), self.proxy()
        _, r = self.https_through({"HTTPS_PROXY": pr.url(), "https_proxy": unused.url()})
        self.assertOk(r)
        self.assertEqual(len(pr.connects), 1)
        self.assertEqual(unused.connects, [])

    def test_plain_http_goes_through_the_tunnel_too(self):
        pr = self.proxy()
        s = self.server()
        self.assertOk(self.one(s.url("/plain"), env={"HTTPS_PROXY": pr.url()}))
        self.assertEqual([c[:2] for c in pr.connects], [("CONNECT", f"127.0.0.1:{s.port}")])
        self.assertEqual(s.exchanges[0].target, "/plain")

    def test_no_proxy_bypasses_it(self):
        for var in ("NO_PROXY", "no_proxy"):
            with self.subTest(var=var):
                pr = self.proxy()
                _, r = self.https_through({"HTTPS_PROXY": pr.url(), var: "localhost,127.0.0.1"})
                self.assertOk(r)
                self.assertEqual(pr.connects, [])

    def test_no_proxy_for_other_hosts_keeps_it(self):
        pr = self.proxy()
        _, r = self.https_through({"HTTPS_PROXY": pr.url(), "NO_PROXY": "example.com"})
        self.assertOk(r)
        self.assertEqual(len(pr.connects), 1)

    def test_other_proxy_variables_are_ignored(self):
        pr = self.proxy()
        s = self.server()
        env = {"http_proxy": pr.url(), "HTTP_PROXY": pr.url(), "ALL_PROXY": pr.url(),
               "all_proxy": pr.url()}
        self.assertOk(self.one(s.url("/"), env=env))
        self.assertEqual(pr.connects, [])
        self.assertEqual(len(s.exchanges), 1)

    def test_proxy_credentials_from_the_url(self):
        pr = self.proxy()
        _, r = self.https_through({"HTTPS_PROXY": pr.url("proxy-user:p%40ss@")})
        self.assertOk(r)
        (_, _, headers), = pr.connects
        auth = [v for n, v in headers if n.lower() == "proxy-authorization"]
        self.assertEqual(auth, ["Basic " + base64.b64encode(b"proxy-user:p@ss").decode()])

    def test_proxy_refusing_the_tunnel_is_econnrefused(self):
        pr = self.proxy(refuse=True)
        s, r = self.https_through({"HTTPS_PROXY": pr.url()})
        self.assertFails(r, "ECONNREFUSED", "403")
        self.assertEqual(s.exchanges, [])

    def test_proxy_unreachable_is_econnrefused(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        _, r = self.https_through({"HTTPS_PROXY": f"http://127.0.0.1:{port}"})
        self.assertFails(r, "ECONNREFUSED")

    def test_empty_upper_case_falls_back_to_lower_case(self):
        pr = self.proxy()
        s = self.server()
        self.assertOk(self.one(s.url("/"), env={"HTTPS_PROXY": ""}))
        self.assertEqual((len(s.exchanges), pr.connects), (1, []))
        self.assertOk(self.one(s.url("/"), env={"HTTPS_PROXY": "", "https_proxy": pr.url()}))
        self.assertEqual(len(pr.connects), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
