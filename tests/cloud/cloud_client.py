# SPDX-License-Identifier: MIT
"""A minimal DPS / IoT Hub client for the tests of the mock cloud, written apart from the mocks so that
a mock is not checked by its own code: SAS tokens as spec §2.1 builds them (cloud-protocols.md), the
§2.3/§2.4 key derivations, and one HTTPS request per call (http.client + ssl).

    token = sas_token("0ne00000001/registrations/dev1", key_b64, skn="registration")
    c = Client(dps.url, cafile=dps.server_ca_path, cert=chain.pem, key=key.pem)
    r = c.put("/0ne00000001/registrations/dev1/register", {"registrationId": "dev1"}, auth=token)
    r.status, r.headers["content-type"], r.json
"""

import base64
import hashlib
import hmac
import http.client
import json
import ssl
import time
import urllib.parse

DPS_API = "2021-06-01"
HUB_API = "2017-11-08-preview"

# Spec §2.1 step 3: what the resource encoding escapes (every other byte is written as is).
_ESCAPED = frozenset(list(range(0x00, 0x20)) + [0x7F] + list(b' "<>`#?{}='))


def sr_of(audience):
    """The `sr` of a token: the audience lower-cased, then %XX (uppercase hex) for escaped bytes."""
    return "".join("%%%02X" % b if (b in _ESCAPED or b > 0x7F) else chr(b)
                   for b in audience.lower().encode("utf-8"))


def sign(key_b64, sr, se):
    return base64.b64encode(hmac.new(base64.b64decode(key_b64), (sr + "\n" + se).encode("utf-8"),
                                     hashlib.sha256).digest()).decode()


def sas_token(audience, key_b64=None, expiry=None, skn=None, ttl=30, signature=None, sr=None):
    """SharedAccessSignature sr=…&sig=<form-encoded>&se=…[&skn=…]; `signature` (base64) replaces the
    HMAC (e.g. one computed by a TPM), `sr` replaces the encoded audience."""
    se = str(int(time.time()) + ttl if expiry is None else int(expiry))
    sr = sr_of(audience) if sr is None else sr
    sig = signature if signature is not None else sign(key_b64, sr, se)
    token = "SharedAccessSignature sr=" + sr + "&" + urllib.parse.urlencode({"sig": sig}) + "&se=" + se
    if skn is not None:
        token += "&skn=" + skn
    return token


def string_to_sign(audience, expiry):
    return (sr_of(audience) + "\n" + str(int(expiry))).encode("utf-8")


def group_device_key(group_key_b64, registration_id):
    """Spec §2.4."""
    return base64.b64encode(hmac.new(base64.b64decode(group_key_b64), registration_id.encode("utf-8"),
                                     hashlib.sha256).digest()).decode()


def derived_module_key(master_key_b64, module_id, generation_id, which):
    """Spec §2.3: which = "primary" | "secondary"."""
    data = f"{module_id}:{generation_id}:{which}".encode("utf-8")
    mac = hmac.new(base64.b64decode(master_key_b64), data, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def control(url, method, path, obj=None):
    """A call on a mock's plain-HTTP control channel: (status, JSON answer)."""
    split = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(obj or {}), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


class Client:
    """HTTPS to one service; every request on a new connection unless keep_alive."""

    def __init__(self, base_url, cafile, cert=None, key=None, api_version=DPS_API, timeout=10.0):
        split = urllib.parse.urlsplit(base_url)
        self.host, self.port = split.hostname, split.port
        self.ctx = ssl.create_default_context(cafile=cafile)
        if cert:
            self.ctx.load_cert_chain(cert, key)
        self.api_version = api_version
        self.timeout = timeout
        self.conn = None

    def connection(self, keep_alive=False):
        if keep_alive and self.conn is not None:
            return self.conn
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        if keep_alive:
            self.conn = conn
        return conn

    def request(self, method, path, body=None, auth=None, headers=None, api_version=True,
                content_type="application/json", keep_alive=False):
        hdrs = dict(headers or {})
        if auth is not None:
            hdrs["Authorization"] = auth
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if body is not None and content_type is not None:
            hdrs["Content-Type"] = content_type
        if api_version:
            v = self.api_version if api_version is True else api_version
            path += ("&" if "?" in path else "?") + "api-version=" + v
        conn = self.connection(keep_alive)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            if not keep_alive:
                conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
