# SPDX-License-Identifier: MIT
"""An HTTP CONNECT proxy for the tests of what our daemons send through HTTPS_PROXY.

    with ConnectProxy(credentials=("user", "pass")) as proxy:
        proxy.url                 http://127.0.0.1:PORT (with user:pass@ when credentials are set)
        proxy.targets             every CONNECT target ("host:port"), in order
        proxy.refused             CONNECTs refused for missing or wrong Proxy-Authorization

It tunnels bytes both ways and nothing else: any other method gets 405."""

import base64
import select
import socket
import socketserver
import threading


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        proxy = self.server.proxy
        sock = self.request
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
            if len(head) > 65536:
                return
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or parts[0] != "CONNECT":
            sock.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        target = parts[1]
        if proxy.credentials is not None:
            want = "Basic " + base64.b64encode(":".join(proxy.credentials).encode()).decode()
            if headers.get("proxy-authorization") != want:
                with proxy.lock:
                    proxy.refused.append(target)
                sock.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                return
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except (OSError, ValueError):
            sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with proxy.lock:
            proxy.targets.append(target)
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with upstream:
            ends = [sock, upstream]
            while True:
                readable, _, _ = select.select(ends, [], [], 30)
                if not readable:
                    return
                for r in readable:
                    data = r.recv(65536)
                    if not data:
                        return
                    (upstream if r is sock else sock).sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ConnectProxy:
    def __init__(self, credentials=None):
        self.credentials = tuple(credentials) if credentials else None
        self.targets = []
        self.refused = []
        self.lock = threading.Lock()
        self._server = None

    @property
    def url(self):
        port = self._server.server_address[1]
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"http://{auth}127.0.0.1:{port}"

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
