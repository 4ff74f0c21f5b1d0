# SPDX-License-Identifier: MIT
"""HTTP/1.1 over a Unix stream socket, for the tests of aziot-gatewayd.

    conn = Connection(path)                 # a raw client: sends bytes as given
    conn.send(request_bytes("POST", "/sign?api-version=2021-05-01", body={...}))
    r = conn.read_response()                # r.status, r.headers, r.body, r.json()

    http.client over the socket:            UnixHTTPConnection(path)

    As another user, in a process of its own (so that the gateway sees that uid):
    agent = Agent(stack.popen_as(user, Agent.argv(), stdin=PIPE, stdout=PIPE, text=True))
    conn = agent.connect(path)              # the same interface as Connection

Standard library only: the agent runs this very file with `python3 -c`.
"""

import base64
import http.client
import json
import select
import socket
import subprocess
import sys

__all__ = ["Response", "Connection", "UnixHTTPConnection", "Agent", "request_bytes"]


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name lower-cased, value bytes)
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        values = [v for n, v in self.headers if n == name]
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


def parse_head(head):
    """(status, reason, headers) of a response head without its final CRLF CRLF."""
    lines = head.split(b"\r\n")
    version, status, reason = lines[0].split(b" ", 2)
    if version != b"HTTP/1.1":
        raise ValueError(f"not an HTTP/1.1 response: {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        name, value = line.split(b":", 1)
        headers.append((name.decode().lower(), value.strip()))
    return int(status), reason.decode(), headers


class Connection:
    """A raw HTTP/1.1 client over a Unix socket: sends bytes as given, parses responses."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_response(self, head_request=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, reason, headers = parse_head(head)
        length = [int(v) for n, v in headers if n == "content-length"]
        n = 0 if head_request or not length else length[0]
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return Response(status, reason, headers, body, head)

    def is_closed(self, timeout=2.0):
        """True when the server closed the connection (EOF or reset) with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        return data == b"" and self.buf == b""


def request_bytes(method, target, body=None, headers=None, content_type="application/json"):
    """A request as the synchronous key client writes it: request line, then content-length
    and content-type only when there is a body, no Host (unless headers has one)."""
    lines = [f"{method} {target} HTTP/1.1"]
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        lines.append(f"content-length: {len(data)}")
        if content_type:
            lines.append(f"content-type: {content_type}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def curl(argv, stack=None, user=None, groups=None):
    """Runs curl with argv (which must include -i) as this process, or as user with groups on an
    aziot_harness Stack, and returns its answer as a Response."""
    if user is None:
        out = subprocess.run(argv, capture_output=True, timeout=30)
    else:
        out = stack.run_as(user, argv, groups=groups, text=False)
    if out.returncode != 0:
        raise AssertionError(f"curl failed ({out.returncode}): {out.stderr!r}")
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    status, reason, headers = parse_head(head)
    return Response(status, reason, headers, body, head)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client's keep-alive connection, over a Unix socket (Host: keyd.sock)."""

    def __init__(self, path, host="keyd.sock", timeout=10.0):
        super().__init__(host, timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


# ---------------------------------------------------------------------------------------------
# The agent: raw connections held by a process of another uid, driven over JSON lines.


def _agent_main():
    conns = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op, conn = cmd["op"], conns.get(cmd.get("conn"))
        try:
            if op == "connect":
                n = len(conns)
                conns[n] = Connection(cmd["path"], cmd.get("timeout", 10.0))
                out = {"conn": n}
            elif op == "send":
                conn.send(base64.b64decode(cmd["data"]))
                out = {}
            elif op == "response":
                r = conn.read_response(cmd.get("head_request", False))
                out = {"status": r.status, "reason": r.reason, "body": _b64(r.body),
                       "head": _b64(r.raw_head)}
            elif op == "is_closed":
                out = {"closed": conn.is_closed(cmd.get("timeout", 2.0))}
            elif op == "close":
                conn.close()
                out = {}
            else:
                out = {"error": "ValueError", "message": f"unknown op {op}"}
        except (OSError, EOFError, ValueError) as e:
            out = {"error": type(e).__name__, "message": str(e)}
        print(json.dumps(out), flush=True)


def _b64(data):
    return base64.b64encode(data).decode()


class AgentError(Exception):
    def __init__(self, name, message):
        super().__init__(f"{name}: {message}")
        self.name = name


class Agent:
    """Drives a process running _agent_main() (start it with argv())."""

    def __init__(self, popen, timeout=15.0):
        self.popen = popen
        self.timeout = timeout

    @staticmethod
    def argv(python="/usr/bin/python3"):
        with open(__file__) as f:
            source = f.read()
        return [python, "-c", source, "agent"]

    def _do(self, **cmd):
        self.popen.stdin.write(json.dumps(cmd) + "\n")
        self.popen.stdin.flush()
        ready, _, _ = select.select([self.popen.stdout], [], [], self.timeout)
        line = self.popen.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"the HTTP agent did not answer {cmd['op']}")
        out = json.loads(line)
        if "error" in out:
            raise AgentError(out["error"], out["message"])
        return out

    @classmethod
    def start_as(cls, stack, user, groups, log_path):
        """An agent running as user with groups (None: the user's own) on an aziot_harness
        Stack, its stderr appended to log_path. Close it with close()."""
        with open(log_path, "ab") as log:
            popen = stack.popen_as(user, cls.argv(),
                                   groups=list(groups) if groups is not None else None,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   text=True)
        return cls(popen)

    def connect(self, path, timeout=10.0):
        return AgentConnection(self, self._do(op="connect", path=path, timeout=timeout)["conn"])

    def close(self):
        self.popen.stdin.close()
        try:
            self.popen.wait(10)
        finally:
            self.popen.stdout.close()


class AgentConnection:
    """Connection's interface, for a connection the agent holds."""

    def __init__(self, agent, n):
        self.agent = agent
        self.n = n

    def send(self, data):
        try:
            self.agent._do(op="send", conn=self.n, data=_b64(data))
        except AgentError as e:
            if e.name in ("BrokenPipeError", "ConnectionResetError"):
                raise {"BrokenPipeError": BrokenPipeError,
                       "ConnectionResetError": ConnectionResetError}[e.name](str(e)) from None
            raise

    def read_response(self, head_request=False):
        try:
            out = self.agent._do(op="response", conn=self.n, head_request=head_request)
        except AgentError as e:
            if e.name in ("EOFError", "ConnectionResetError"):
                raise EOFError(str(e)) from None
            raise
        head = base64.b64decode(out["head"])
        return Response(out["status"], out["reason"], parse_head(head)[2],
                        base64.b64decode(out["body"]), head)

    def is_closed(self, timeout=2.0):
        return self.agent._do(op="is_closed", conn=self.n, timeout=timeout)["closed"]

    def close(self):
        self.agent._do(op="close", conn=self.n)


if __name__ == "__main__" and sys.argv[1:2] == ["agent"]:
    _agent_main()
