# SPDX-License-Identifier: MIT
"""What the end-to-end suites of the gateway's service sockets share (tests/gateway/
test_keys_http.py, test_certs_http.py, test_tpm_http.py, test_identity_http.py): one
aziot_harness.Stack per class with a service behind the gateway on its socket, the clients (raw
connections as root, agents and curl as the test users), and the checks that do not depend on
the service (JSON headers, error bodies, the OpenAPI document, throttling).

    class CertsHttpTestCase(ServiceHttpTestCase):
        GROUP = "aziotcs"                      # the socket's group
        RUN_DIR_PREFIX = "aziot-gwc-"
        API = "2020-09-01"                     # the api-version of a request unless told
        OPENAPI = aziot_openapi.OpenApi(...)   # what every answer is checked against
        REQUIRED = (GATEWAYD, CERTD, ...)      # what must be built

        @classmethod
        def start_stack(cls):                  # cls.stack is made: start it and the service,
            ...                                # set cls.services, cls.sock and cls.gateway
"""

import json
import os
import re
import stat
import time

import aziot_harness
from aziot_harness import BUILD_DIR, SOURCE_DIR
from aziot_http import Agent, AgentError, Connection, curl, request_bytes

GATEWAYD = os.path.join(BUILD_DIR, "gateway", "aziot-gatewayd")
USER_A, USER_B = aziot_harness.TEST_USERS

_API = object()  # the class's API
_GROUP = object()  # the class's GROUP


def poll(predicate, what, timeout=10, interval=0.02):
    """Polls predicate until it returns a true value, which it returns; AssertionError after
    timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def compact(value):
    """JSON as upstream (serde_json) writes it: no spaces, members in declaration order."""
    return json.dumps(value, separators=(",", ":")).encode()


def at(body, marker, text):
    """(body, text + serde's position): the column where the first marker in body ends, or of
    the body's last byte without a marker (where a flattened struct reports its errors)."""
    column = len(body) if marker is None else body.index(marker) + len(marker)
    return body, f"{text} at line 1 column {column}"


def gateway_source(name):
    """The text of gateway/<name> (a route table)."""
    with open(os.path.join(SOURCE_DIR, "gateway", name)) as f:
        return f.read()


def c_array(source, name):
    """What stands between the braces of `name[] = { … };` in C source."""
    return re.search(rf"{name}\[\] = \{{(.*?)\n\}};", source, re.S).group(1)


class ServiceHttpTestCase(aziot_harness.StackTestCase):
    """A stack per class (aziot_harness.StackTestCase: run_dir under /tmp, kept when a test failed
    or a process reported to a sanitizer), the service's socket mode 0660 and group GROUP as a
    packaged socket unit makes it, so that the test users in that group reach it. A class sets
    what the module docstring says, and may set MAX_REQUESTS (the service's max_requests),
    BODY_TIMEOUT_MS (the gateway's deadline for a request's body), CALL_TIMEOUT (s a request may
    take: the timeout of a connection, and 5 s more for an agent's answer) and CURL_MAX_TIME
    (curl's --max-time)."""

    RUN_DIR_PARENT = "/tmp"
    SANITIZER_REPORTS = True
    GROUP = None
    API = None
    OPENAPI = None
    MAX_REQUESTS = None
    BODY_TIMEOUT_MS = None
    CALL_TIMEOUT = 10.0
    CURL_MAX_TIME = None
    # Answers compared byte for byte with compact(), as upstream writes them (member order too),
    # not only as JSON.
    BYTE_EXACT = False

    @classmethod
    def start_class(cls):
        users = aziot_harness.ensure_test_users()
        cls.uid_a, cls.uid_b = users[USER_A].pw_uid, users[USER_B].pw_uid
        cls.group_gid = aziot_harness.ensure_group(cls.GROUP).gr_gid
        cls.start_stack()
        os.chown(cls.sock, 0, cls.group_gid)
        cls.prepare_class()

    @classmethod
    def start_stack(cls):
        raise NotImplementedError

    @classmethod
    def prepare_class(cls):
        """Class-wide preparation once the service is served."""

    @classmethod
    def gateway_env(cls):
        env = {"AZIOT_LOG": "debug"}
        if cls.BODY_TIMEOUT_MS is not None:
            env["AZIOT_GATEWAY_BODY_TIMEOUT_MS"] = str(cls.BODY_TIMEOUT_MS)
        return env

    # -- clients ----------------------------------------------------------------------------

    def target(self, path, version=_API):
        """path with ?api-version=version (or &api-version), as is for version None."""
        if version is _API:
            version = self.API
        return path if version is None else \
            f"{path}{'&' if '?' in path else '?'}api-version={version}"

    def connect(self):
        """A connection of root's, closed at the test's end."""
        conn = Connection(self.sock, timeout=self.CALL_TIMEOUT)
        self.addCleanup(conn.close)
        return conn

    def http(self, method, path, body=None, version=_API, via=None,
             content_type="application/json", conn=None, headers=None, documented=True):
        """One request as the synchronous key client writes it, on a new connection (via: an
        Agent, to ask as its user) or on conn (left open). The answer is checked against OPENAPI
        unless not documented (the generic 415 and 422 of a path without the method, which a
        document describes in words only)."""
        target = self.target(path, version)
        c = conn if conn is not None else \
            via.connect(self.sock, timeout=self.CALL_TIMEOUT) if via else \
            Connection(self.sock, timeout=self.CALL_TIMEOUT)
        try:
            c.send(request_bytes(method, target, body, headers, content_type))
            r = c.read_response(head_request=method == "HEAD")
        finally:
            if conn is None:
                c.close()
        if method != "HEAD" and documented:
            self.assertDocumented(method, path, r, body)
        return r

    def curl(self, method, path, body=None, user=None, version=_API, json_type=True):
        """A request as a user makes it: curl --unix-socket (as root, or as user in GROUP);
        json_type=False: without Content-Type: application/json (curl then says it is a form)."""
        host = os.path.basename(self.sock)
        argv = ["curl", "-sS", "-i"]
        if self.CURL_MAX_TIME is not None:
            argv += ["--max-time", str(self.CURL_MAX_TIME)]
        argv += ["--unix-socket", self.sock, "-X", method,
                 f"http://{host}{self.target(path, version)}"]
        if body is not None:
            argv += ["--data-binary", json.dumps(body)]
            if json_type:
                argv += ["-H", "Content-Type: application/json"]
        r = curl(argv, self.stack, user, [self.GROUP])
        self.assertDocumented(method, path, r, body)
        return r

    def agent_as(self, user, groups=_GROUP):
        """A process of user holding HTTP connections for the test, with groups (None: the
        user's own; by default GROUP)."""
        if groups is _GROUP:
            groups = (self.GROUP,)
        agent = Agent.start_as(self.stack, user, groups,
                               os.path.join(self.run_dir, "logs", f"agent-{user}.log"))
        agent.timeout = self.CALL_TIMEOUT + 5
        self.addCleanup(agent.close)
        return agent

    def gateway_log(self):
        return self.gateway.log()

    def service_pid(self, bus_name):
        return int(self.stack.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionUnixProcessID", "s", (bus_name,)))

    # -- checks -----------------------------------------------------------------------------

    def assertDocumented(self, method, path, r, body=None):
        request = body if isinstance(body, (dict, list)) else None
        self.assertEqual(self.OPENAPI.response_errors(method, path.split("?")[0], r, request), [],
                         f"{method} {path} -> {r.status} {r.body[:300]!r}")

    def assertJsonHeaders(self, r):
        # Byte for byte what the synchronous key client accepts (spec §1.6).
        self.assertIn(b"\r\ncontent-type: application/json\r\n", r.raw_head + b"\r\n")
        self.assertEqual(r.header("content-type"), b"application/json")
        self.assertEqual(int(r.header("content-length")), len(r.body))

    def assertOk(self, r, body):
        """A 200 whose body is exactly body, as upstream writes it."""
        self.assertEqual(r.status, 200, r.body)
        self.assertJsonHeaders(r)
        self.assertEqual(r.body, compact(body))

    def assertNoContent(self, r):
        self.assertEqual(r.status, 204, r.body)
        self.assertEqual(r.body, b"")
        self.assertIn(r.header("content-length"), (None, b"0"))
        self.assertIsNone(r.header("content-type"))

    def assertError(self, r, status, message):
        self.assertEqual(r.status, status, r.body)
        self.assertJsonHeaders(r)
        if self.BYTE_EXACT:
            self.assertEqual(r.body, compact({"message": message}))
        else:
            self.assertEqual(r.json(), {"message": message})

    def assertSocketMode(self):
        st = os.stat(self.sock)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o660, self.group_gid))

    def assertOutsiderRefused(self):
        """A test user outside GROUP cannot connect to the socket."""
        outsider = self.agent_as(USER_B, groups=None)
        with self.assertRaises(AgentError) as cm:
            outsider.connect(self.sock)
        self.assertEqual(cm.exception.name, "PermissionError")

    # -- bodies the gateway refuses before the service sees them -----------------------------

    def post_oversized(self, path, start, length=2 << 20):
        """POST path announcing a JSON body of length bytes and sending start and as many "A"s:
        (the connection, the answer)."""
        c = self.connect()
        c.send(f"POST {self.target(path)} HTTP/1.1\r\ncontent-type: application/json"
               f"\r\ncontent-length: {length}\r\n\r\n".encode())
        try:
            c.send(start + b"A" * length)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway stopped reading, as it should
        return c, c.read_response()

    def post_slowly(self, path, body):
        """POST path with body but for its last byte: (the connection, the answer, the seconds
        until it came)."""
        c = self.connect()
        c.send(f"POST {self.target(path)} HTTP/1.1\r\ncontent-type: application/json"
               f"\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body[:-1])
        start = time.monotonic()
        r = c.read_response()
        return c, r, time.monotonic() - start

    # -- throttling (spec §1.2): max_requests simultaneous connections per uid ---------------

    def assertDropped(self, conn, path):
        """conn, over the limit, is closed without an answer to a GET of path."""
        try:
            conn.send(request_bytes("GET", self.target(path)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before the request went out
        self.assertTrue(conn.is_closed(), "the connection over the limit got an answer")

    def throttled_lines(self, uid):
        return self.gateway_log().count(f"Max simultaneous connections reached for user {uid}\n")

    def check_connections_per_uid(self, probe, root_limited=False):
        """MAX_REQUESTS connections of a test user are served (self.served(conn) checks an
        answer); the one beyond is dropped (assertDropped with probe) and logged. Meanwhile
        another uid, and root, are served up to the limit (root_limited: and root's connection
        beyond it is dropped too). A connection that goes frees its slot, once the gateway has
        seen it go."""
        a = self.agent_as(USER_A)
        held = [a.connect(self.sock) for _ in range(self.MAX_REQUESTS)]
        for conn in held:
            self.served(conn)

        self.assertDropped(a.connect(self.sock), probe)
        poll(lambda: self.throttled_lines(self.uid_a) == 1, "the throttling log line")

        b = self.agent_as(USER_B)
        others = [b.connect(self.sock) for _ in range(self.MAX_REQUESTS)]
        others += [self.connect() for _ in range(self.MAX_REQUESTS)]
        for conn in others:
            self.served(conn)
        # The held connections still are.
        for conn in held:
            self.served(conn)
        self.assertEqual((self.throttled_lines(self.uid_b), self.throttled_lines(0)), (0, 0))
        if root_limited:
            self.assertDropped(self.connect(), probe)
            poll(lambda: self.throttled_lines(0) == 1, "root's throttling log line")

        held.pop().close()

        def a_new_one_is_served():
            conn = a.connect(self.sock)
            try:
                self.served(conn)
                return conn
            except (EOFError, BrokenPipeError, ConnectionResetError):
                conn.close()
                return None
        held.append(poll(a_new_one_is_served, "a freed slot to be usable"))
        # The slot is taken again: the limit still holds.
        self.assertDropped(a.connect(self.sock), probe)
        for conn in held:
            self.served(conn)
