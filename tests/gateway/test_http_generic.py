#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The generic HTTP behaviour of aziot-gatewayd (spec §1.3, §1.6), checked over a raw Unix socket
against the built binary. No keyd is on the test bus: routes that reach it answer 500. The keys
routes, with the real keyd, are test_keys_http.py's."""

import os
import signal
import socket
import subprocess
import time

from gatewaytest import API, GATEWAYD, Connection, GatewayTestCase, main, request_bytes, wait_for

SIGN = {"keyHandle": "h", "algorithm": "HMAC-SHA256", "parameters": {"message": "aGk="}}


class Routing(GatewayTestCase):
    def test_no_host_header(self):
        # The synchronous key client sends no Host at all.
        r = self.request("GET", f"/key/k?{API}")
        self.assertError(r, 500, "internal error")

    def test_odd_host_headers(self):
        for host in ["/run/aziot/identityd.sock:0", "keyd.sock", "localhost", "", "a b"]:
            r = self.request("GET", "/nope?" + API, headers={"Host": host})
            self.assertError(r, 404, "not found")

    def test_api_version_missing(self):
        self.assertError(self.request("GET", "/key/k"), 400, "api-version not specified")
        self.assertError(self.request("GET", "/nope?x=1"), 400, "api-version not specified")
        # Checked before the method and the route.
        self.assertError(self.request("PATCH", "/nope"), 400, "api-version not specified")

    def test_api_version_unknown(self):
        self.assertError(self.request("GET", "/key/k?api-version=2099-01-01"), 400,
                         'invalid api-version "2099-01-01"')
        self.assertError(self.request("GET", "/key/k?api-version=a%22b%5Cc+d%0A"), 400,
                         'invalid api-version "a\\"b\\\\c d\\n"')
        self.assertError(self.request("GET", "/key/k?api-version=%FF"), 400,
                         'invalid api-version "\ufffd"')
        self.assertError(self.request("GET", "/key/k?api-version="), 400, 'invalid api-version ""')

    def test_api_version_last_wins(self):
        self.assertError(self.request("GET", f"/nope?api-version=x&{API}"), 404, "not found")
        self.assertError(self.request("GET", f"/nope?{API}&api-version=x"), 400,
                         'invalid api-version "x"')
        self.assertError(self.request("GET", "/nope?api-version=2020-09-01"), 404, "not found")

    def test_unknown_routes(self):
        for path in ["/", "/nope", "/key/", "/key/a/b", "/sign/", "/SIGN", "/keypair//x",
                     "/%6Bey/a", "/key/%FF"]:
            self.assertError(self.request("GET", f"{path}?{API}"), 404, "not found")

    def test_absolute_form_target(self):
        self.assertError(self.request("GET", f"http://keyd.sock/nope?{API}"), 404, "not found")

    def test_unknown_methods(self):
        for method in ["PATCH", "OPTIONS", "BREW", "get", "TRACE"]:
            self.assertError(self.request(method, f"/sign?{API}"), 400, "method not allowed")

    def test_head_has_no_body(self):
        c = self.connect()
        r = self.request("HEAD", f"/sign?{API}", conn=c)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.header("content-length"), b"32")
        self.assertEqual(r.body, b"")
        # The connection is still in step: the next request gets its own answer.
        self.assertError(self.request("GET", f"/nope?{API}", conn=c), 404, "not found")

    def test_method_the_route_lacks(self):
        self.assertError(self.request("GET", f"/sign?{API}"), 400, "method not allowed")
        self.assertError(self.request("DELETE", f"/sign?{API}"), 400, "method not allowed")
        self.assertError(self.request("DELETE", f"/sign?{API}", body={"x": 1}), 400,
                         "method not allowed")
        self.assertError(self.request("POST", f"/key/k?{API}", body=None), 400, "missing request body")
        self.assertError(self.request("DELETE", f"/key/k?{API}", body={}), 400, "method not allowed")
        # The body of such a request is still decoded first, as upstream does.
        self.assertError(self.request("DELETE", f"/sign?{API}", body=b"{x}"), 422,
                         "key must be a string at line 1 column 2")
        self.assertError(self.request("GET", f"/derivedkey?{API}"), 400, "method not allowed")

    def test_put(self):
        self.assertError(self.request("PUT", f"/sign?{API}", body={}, content_type="text/plain"), 415,
                         "request body must be application/json")
        self.assertError(self.request("PUT", f"/sign?{API}", body=b""), 422,
                         "EOF while parsing a value at line 1 column 0")
        self.assertError(self.request("PUT", f"/sign?{API}", body=b"[1,"), 422,
                         "EOF while parsing a value at line 1 column 3")
        self.assertError(self.request("PUT", f"/sign?{API}", body={"a": 1}), 400, "method not allowed")
        self.assertError(self.request("PUT", f"/sign?{API}", body={}, content_type="application/json; x"),
                         400, "method not allowed")


class Bodies(GatewayTestCase):
    def test_bad_json(self):
        cases = [
            (b"{x}", "key must be a string at line 1 column 2"),
            (b"{", "EOF while parsing an object at line 1 column 1"),
            (b"nul", "EOF while parsing a value at line 1 column 3"),
            (b"{}", "missing field `keyHandle` at line 1 column 2"),
            (b'{"keyHandle": 5}', "invalid type: integer `5`, expected a string at line 1 column 15"),
            (b'{"keyHandle":"h"}', "missing field `algorithm` at line 1 column 17"),
            (b'{"keyHandle":"h","algorithm":"RSA"}',
             "unknown variant `RSA`, expected `ECDSA` or `HMAC-SHA256` at line 1 column 35"),
            (b'{"keyHandle":"h","algorithm":"HMAC-SHA256","parameters":{"message":"aGk"}}',
             "Invalid padding at line 1 column 74"),
            (b'{"keyHandle":"h"} x', "trailing characters at line 1 column 19"),
            (b'\n{\n "keyHandle": []\n}', "invalid type: sequence, expected a string at line 3 column 14"),
        ]
        for body, message in cases:
            with self.subTest(body=body):
                self.assertError(self.request("POST", f"/sign?{API}", body=body), 422, message)

    def test_content_types(self):
        # Not JSON: "no body", which /sign requires.
        for ctype in ["text/plain", "application/json2", "Application/JSON"]:
            self.assertError(self.request("POST", f"/sign?{API}", body=b"{x}", content_type=ctype), 400,
                             "missing request body")
        # Absent, or JSON with parameters: decoded.
        for ctype in [None, "application/json; charset=utf-8", " application/json "]:
            self.assertError(self.request("POST", f"/sign?{API}", body=b"{x}", content_type=ctype), 422,
                             "key must be a string at line 1 column 2")

    def test_empty_body_is_no_body(self):
        self.assertError(self.request("POST", f"/sign?{API}", body=b""), 400, "missing request body")
        self.assertError(self.request("POST", f"/sign?{API}"), 400, "missing request body")

    def test_unknown_members_ignored(self):
        body = dict(SIGN, extra=[1, {"x": None}], more="y")
        self.assertError(self.request("POST", f"/sign?{API}", body=body), 500, "internal error")

    def test_get_body_ignored(self):
        c = self.connect()
        r = self.request("GET", f"/nope?{API}", body=b"{not json", conn=c)
        self.assertError(r, 404, "not found")
        self.assertError(self.request("GET", f"/nope?{API}", conn=c), 404, "not found")

    def test_chunked_body(self):
        c = self.connect()
        body = b'{"keyHandle"' + b":" + b"5}"
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in [body[:5], body[5:]])
        c.send(f"POST /sign?{API} HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n".encode() + chunks +
               b"0\r\nx-trailer: 1\r\n\r\n")
        self.assertError(c.read_response(), 422,
                         "invalid type: integer `5`, expected a string at line 1 column 14")
        self.assertError(self.request("GET", f"/nope?{API}", conn=c), 404, "not found")

    def test_expect_continue(self):
        c = self.connect()
        body = b"{x}"
        c.send(f"POST /sign?{API} HTTP/1.1\r\ncontent-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n"
               .encode())
        r = c.read_response()
        self.assertEqual(r.status, 100)
        c.send(body)
        self.assertError(c.read_response(), 422, "key must be a string at line 1 column 2")

    def test_slow_body(self):
        c = self.connect()
        c.send(f"POST /sign?{API} HTTP/1.1\r\ncontent-length: 100\r\n\r\n{{".encode())
        start = time.monotonic()
        r = c.read_response()
        self.assertError(r, 408, "deadline has elapsed")
        self.assertGreaterEqual(time.monotonic() - start, self.BODY_TIMEOUT_MS / 1000 * 0.9)
        self.assertEqual(r.header("connection"), b"close")
        self.assertTrue(c.is_closed())

    def test_slow_head(self):
        c = self.connect()
        c.send(f"GET /nope?{API} HTTP/1.1\r\nx-a: ".encode())
        self.assertError(c.read_response(), 408, "deadline has elapsed")
        self.assertTrue(c.is_closed())

    def test_idle_keep_alive_is_not_timed_out(self):
        c = self.connect()
        self.assertError(self.request("GET", f"/nope?{API}", conn=c), 404, "not found")
        time.sleep(self.BODY_TIMEOUT_MS / 1000 * 2)
        self.assertError(self.request("GET", f"/nope?{API}", conn=c), 404, "not found")

    def test_10_mib_body(self):
        rss_before = self.gateway_rss()
        c = self.connect()
        c.send(f"POST /sign?{API} HTTP/1.1\r\ncontent-length: {10 << 20}\r\n\r\n".encode())
        try:
            c.send(b"x" * (10 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway stopped listening, as it should
        r = c.read_response()
        self.assertError(r, 413, "request body too large")
        self.assertEqual(r.header("connection"), b"close")

        # Chunked, where the size is only known as it comes.
        c = self.connect()
        c.send(f"POST /sign?{API} HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(40):
                c.send(b"40000\r\n" + b"x" * 0x40000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertError(c.read_response(), 413, "request body too large")

        # Still serving, and not bloated.
        self.assertError(self.request("GET", f"/nope?{API}"), 404, "not found")
        self.assertLess(self.gateway_rss() - rss_before, 4096)

    def gateway_rss(self):
        with open(f"/proc/{self.gateway.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def test_body_just_under_the_limit(self):
        body = b'{"keyHandle":"' + b"h" * ((1 << 20) - 100) + b'"}'
        self.assertError(self.request("POST", f"/sign?{API}", body=body), 422,
                         f"missing field `algorithm` at line 1 column {len(body)}")


class Connections(GatewayTestCase):
    def test_keep_alive_sequence(self):
        c = self.connect()
        for _ in range(5):
            self.assertError(self.request("GET", f"/nope?{API}", conn=c), 404, "not found")
            self.assertError(self.request("POST", f"/sign?{API}", body=b"{x}", conn=c), 422,
                             "key must be a string at line 1 column 2")
            self.assertError(self.request("GET", f"/key/k?{API}", conn=c), 500, "internal error")

    def test_pipelined_requests_answered_in_order(self):
        c = self.connect()
        c.send(request_bytes("GET", f"/key/a?{API}") + request_bytes("GET", f"/nope?{API}") +
               request_bytes("POST", f"/sign?{API}", body=b"{x}") + request_bytes("GET", "/x") +
               b"\r\n" + request_bytes("GET", f"/nope?{API}"))
        self.assertEqual([c.read_response().status for _ in range(5)], [500, 404, 422, 400, 404])

    def test_connection_close(self):
        c = self.connect()
        c.send(request_bytes("GET", f"/nope?{API}", headers={"Connection": "close"}) +
               request_bytes("GET", f"/nope?{API}"))
        r = c.read_response()
        self.assertError(r, 404, "not found")
        self.assertEqual(r.header("connection"), b"close")
        self.assertTrue(c.is_closed())

    def test_http_1_0(self):
        c = self.connect()
        c.send(f"GET /nope?{API} HTTP/1.0\r\n\r\n".encode())
        self.assertError(c.read_response(), 404, "not found")
        self.assertTrue(c.is_closed())

        c = self.connect()
        c.send(f"GET /nope?{API} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
        r = c.read_response()
        self.assertEqual(r.header("connection"), b"keep-alive")
        c.send(f"GET /nope?{API} HTTP/1.0\r\n\r\n".encode())
        self.assertError(c.read_response(), 404, "not found")
        self.assertTrue(c.is_closed())

    def test_response_headers(self):
        # Byte for byte what the synchronous client accepts, and few headers (it parses 16).
        for method, target, body in [("GET", f"/nope?{API}", None), ("GET", "/x", None),
                                     ("POST", f"/sign?{API}", b"{x}"), ("GET", f"/key/k?{API}", None)]:
            r = self.request(method, target, body=body)
            self.assertEqual(r.header("content-type"), b"application/json")
            self.assertEqual(int(r.header("content-length")), len(r.body))
            self.assertLessEqual(len(r.headers), 4)
            self.assertIn(b"\r\ncontent-type: application/json\r\n", r.raw_head + b"\r\n")

    def test_malformed_requests(self):
        cases = [
            (b"GET /x\r\n\r\n", 400),
            (b"GET  /x HTTP/1.1\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nbad header\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nName : v\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"GET /x HTTP/2.0\r\n\r\n", 505),
            (b"GET /x HTTP/1.1\r\nA: " + b"a" * 20000 + b"\r\n\r\n", 431),
            (b"GET /x HTTP/1.1\r\n" + b"A: b\r\n" * 150 + b"\r\n", 431),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        ]
        for data, status in cases:
            with self.subTest(data=data[:40]):
                c = self.connect()
                c.send(data)
                r = c.read_response()
                self.assertEqual(r.status, status)
                self.assertEqual(r.header("content-type"), b"application/json")
                self.assertTrue(c.is_closed())

    def test_bad_chunked_coding(self):
        c = self.connect()
        c.send(f"POST /sign?{API} HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".encode())
        self.assertError(c.read_response(), 400, "malformed request body")
        self.assertTrue(c.is_closed())

    def test_half_close(self):
        # A client that shuts down its side after the request still gets the answer, and the
        # gateway then closes at once (it does not keep the connection, and its uid's slot, until
        # the client reads). The gateway is stopped meanwhile so that it sees the data and the
        # shutdown at once, and the answers are read only after it has let go.
        fds = len(os.listdir(f"/proc/{self.gateway.pid}/fd"))
        for pipelined in (1, 2):
            c = self.connect()
            os.kill(self.gateway.pid, signal.SIGSTOP)
            try:
                c.send(request_bytes("GET", f"/nope?{API}") * pipelined)
                c.sock.shutdown(socket.SHUT_WR)
            finally:
                os.kill(self.gateway.pid, signal.SIGCONT)
            wait_for(lambda: len(os.listdir(f"/proc/{self.gateway.pid}/fd")) == fds, timeout=2,
                     what="the gateway to close the connection")
            for _ in range(pipelined):
                self.assertError(c.read_response(), 404, "not found")
            self.assertTrue(c.is_closed())

    def test_client_gone_mid_request(self):
        c = self.connect()
        c.send(f"POST /sign?{API} HTTP/1.1\r\ncontent-length: 50\r\n\r\n{{".encode())
        c.close()
        self.assertError(self.request("GET", f"/nope?{API}"), 404, "not found")


class Throttling(GatewayTestCase):
    """No keyd on this bus: the gateway cannot ask it for MaxRequests, says so once, and applies
    upstream's default of 10 (keyd.toml's max_requests is not read: it is keyd's). The limit keyd
    publishes is tested against the real keyd in test_keys_http.py."""
    MAX_REQUESTS = 3

    def test_per_uid_limit(self):
        os.chmod(self.socket_path, 0o666)
        held = [self.connect() for _ in range(10)]
        for c in held:  # make sure the gateway has accepted them all
            self.assertError(self.request("GET", f"/nope?{API}", conn=c), 404, "not found")
        wait_for(lambda: "Cannot ask org.aziot.Keys1 for its MaxRequests" in self.log(),
                 what="the warning that keyd could not be asked")

        extra = self.connect()
        try:
            extra.send(request_bytes("GET", f"/nope?{API}"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before the request went out
        self.assertTrue(extra.is_closed(), "the connection over the limit got an answer")
        wait_for(lambda: "Max simultaneous connections reached for user 0" in self.log(),
                 what="the throttling log line")

        # Another uid is not affected.
        script = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(5); "
                  "s.connect(sys.argv[1]); s.sendall(b'GET /nope?%s HTTP/1.1\\r\\n\\r\\n'); "
                  "print(s.recv(100).split(b'\\r\\n')[0].decode())" % API)
        out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                              "/usr/bin/python3", "-c", script, self.socket_path],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.stdout.strip(), "HTTP/1.1 404 Not Found", out.stderr)

        # A slot freed is a slot usable again, once the gateway has seen it go.
        held.pop().close()

        def served():
            c = Connection(self.socket_path)
            try:
                c.send(request_bytes("GET", f"/nope?{API}"))
                return c.read_response().status == 404
            except (EOFError, BrokenPipeError, ConnectionResetError):
                return False
            finally:
                c.close()
        wait_for(served, what="a freed slot to be usable")
        # Warned once: the question is asked again no sooner than 10 s later.
        self.assertEqual(self.log().count("Cannot ask org.aziot.Keys1 for its MaxRequests"), 1)


class NoBus(GatewayTestCase):
    """The bus is gone: routes needing keyd still answer, with 500."""

    def test_without_bus(self):
        p, log_path = self.start_gateway(
            ["--keyd-socket", os.path.join(self.tmp, "nobus.sock")],
            env=self.gateway_env(DBUS_SYSTEM_BUS_ADDRESS="unix:path=" + os.path.join(self.tmp, "no")))
        path = os.path.join(self.tmp, "nobus.sock")
        wait_for(lambda: os.path.exists(path))
        c = Connection(path)
        c.send(request_bytes("POST", f"/sign?{API}", body=SIGN))
        self.assertError(c.read_response(), 500, "internal error")
        c.close()
        with open(log_path) as f:
            self.assertIn("!!! internal error", f.read())


class Lifecycle(GatewayTestCase):
    def run_gateway(self, args, env=None, **kw):
        return subprocess.run([GATEWAYD] + args, env=env or self.gateway_env(), capture_output=True,
                              text=True, timeout=10, **kw)

    def test_nothing_to_serve(self):
        r = self.run_gateway([])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Nothing to serve", r.stdout + r.stderr)

    def test_service_config_is_not_read(self):
        """keyd's configuration is keyd's (it holds secrets): the gateway does not open it, so
        a bad one is no concern of its own. keyd refuses it (tests/bus/test_keys.py)."""
        bad = os.path.join(self.tmp, "bad.toml")
        with open(bad, "w") as f:
            f.write("max_requests = \"ten\"\n")
        path = os.path.join(self.tmp, "bad.sock")
        p, log_path = self.start_gateway(["--keyd-socket", path],
                                         env=self.gateway_env(AZIOT_KEYD_CONFIG=bad))
        wait_for(lambda: os.path.exists(path), what="the gateway's socket")
        c = Connection(path)
        c.send(request_bytes("GET", f"/nope?{API}"))
        self.assertEqual(c.read_response().status, 404)
        c.close()
        self.assertIsNone(p.poll())
        with open(log_path) as f:
            self.assertNotIn("Invalid", f.read())

    def test_replaces_stale_socket_and_cleans_up(self):
        path = os.path.join(self.tmp, "stale.sock")
        with open(path, "w") as f:
            f.write("stale")
        p, _ = self.start_gateway(["--keyd-socket", path])
        wait_for(lambda: os.path.exists(path) and not os.path.isfile(path))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o660)
        c = Connection(path)
        c.send(request_bytes("GET", f"/nope?{API}"))
        self.assertEqual(c.read_response().status, 404)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(5), 0)
        self.assertFalse(os.path.exists(path))

    def test_serves_keyd_and_certd_at_once(self):
        keyd, certd = (os.path.join(self.tmp, f"both-{n}.sock") for n in ("keyd", "certd"))
        p, _ = self.start_gateway(["--keyd-socket", keyd, "--certd-socket", certd])
        wait_for(lambda: os.path.exists(keyd) and os.path.exists(certd))
        # Each socket has its own api-versions: 2021-05-01 is keyd's only.
        for path, status, body in [
                (keyd, 404, b'{"message":"not found"}'),
                (certd, 400, b'{"message":"invalid api-version \\"2021-05-01\\""}')]:
            c = Connection(path)
            c.send(request_bytes("GET", "/nope?api-version=2021-05-01"))
            r = c.read_response()
            c.close()
            self.assertEqual((r.status, r.body), (status, body), path)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(5), 0)
        self.assertFalse(os.path.exists(keyd) or os.path.exists(certd))

    def test_socket_activation(self):
        for name, ok in [("keyd", True), ("certd", True), ("bogus", False)]:
            with self.subTest(name=name):
                path = os.path.join(self.tmp, f"act-{name}.sock")
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(path)
                listener.listen(16)
                env = self.gateway_env(LISTEN_FDS="1", LISTEN_FDNAMES=name)
                # LISTEN_PID must be the gateway's own pid: set it after the fork.
                shim = ("import os,sys; os.dup2(int(sys.argv[1]), 3); os.set_inheritable(3, True); "
                        "os.environ['LISTEN_PID']=str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])")
                p = subprocess.Popen(["/usr/bin/python3", "-c", shim, str(listener.fileno()), GATEWAYD],
                                     env=env, pass_fds=[listener.fileno()], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
                self.procs.append(p)
                if ok:
                    c = Connection(path)
                    # 2020-09-01 is an api-version of both keyd.sock and certd.sock.
                    c.send(request_bytes("GET", "/nope?api-version=2020-09-01"))
                    r = c.read_response()
                    self.assertEqual((r.status, r.body), (404, b'{"message":"not found"}'))
                    c.close()
                    p.send_signal(signal.SIGTERM)
                    self.assertEqual(p.wait(5), 0)
                    # Not ours to remove.
                    self.assertTrue(os.path.exists(path))
                else:
                    self.assertNotEqual(p.wait(5), 0)
                listener.close()


if __name__ == "__main__":
    main()
