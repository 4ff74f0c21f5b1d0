# SPDX-License-Identifier: MIT
"""The mock IoT Hub (mock_hub.py) keeps module identities as spec §4 (cloud-protocols.md) says, and is as
strict as the real Hub about who may touch them: device SAS tokens (spec §2) and X.509 client certs,
If-Match and etags, ids and keys in bodies; module tokens made with keys derived as identityd derives
them (§2.3) are accepted; its switches do what they say. Driven by cloud_client.py, whose SAS tokens
are made apart from the mocks' code."""

import base64
import os
import secrets
import signal
import socket
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mock_hub import MockHub, Registry  # noqa: E402
from cloud_client import Client, HUB_API, control, derived_module_key, sas_token  # noqa: E402
from mocktest import NETWORK_ERRORS, MockTestCase  # noqa: E402

from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

MASTER = base64.b64encode(b"m" * 32).decode()  # identityd's master key in these tests
MODULE_MEMBERS = {"moduleId", "deviceId", "generationId", "etag", "connectionState",
                  "connectionStateUpdatedTime", "lastActivityTime", "cloudToDeviceMessageCount",
                  "authentication"}


def b64len(value):
    return len(base64.b64decode(value, validate=True))


class HubTestCase(MockTestCase):
    TMP_PREFIX = "mock-hub-"

    def setUp(self):
        self.hub = MockHub(self.pki_dir).start()
        self.addCleanup(self.hub.stop)
        self.dev = self.hub.registry.add_device("dev1")

    def client(self, cert=None, key=None, **kw):
        return Client(self.hub.url, self.hub.server_ca_path, cert=cert, key=key, api_version=HUB_API, **kw)

    def token(self, device_id="dev1", key=None, module_id=None, **kw):
        aud = f"{self.hub.hostname}/devices/{device_id}" + (f"/modules/{module_id}" if module_id else "")
        return sas_token(aud, key or self.dev.primary_key, **kw)

    def mod_path(self, m, d="dev1"):
        return f"/devices/{d}/modules/{m}"

    def create(self, m, d="dev1", auth=None, **kw):
        return self.client().put(self.mod_path(m, d), {"moduleId": m, "deviceId": d},
                                 auth=auth or self.token(d), **kw)

    def assertHubError(self, r, status, code, text=None, network_error=False, reason=None):
        self.assertEqual(r.status, status, r)
        self.assertIn("application/json", r.headers["content-type"])
        body = r.json
        members = {"Message", "ExceptionMessage"} | ({"networkError"} if network_error else set())
        self.assertEqual(set(body), members)
        self.assertTrue(body["Message"].startswith(f"ErrorCode:{code};"), body)
        if text is not None:
            self.assertEqual(body["Message"], f"ErrorCode:{code};{text}")
        self.assertRegex(body["ExceptionMessage"], r"^Tracking ID:[0-9a-f]{32}-G:0-TimeStamp:")
        if network_error:
            self.assertIs(body["networkError"], True)
        if reason is not None:
            self.assertIn(reason, self.hub.http_requests()[-1].reason)
        return body


class TestModules(HubTestCase):
    def test_identityd_sequence(self):
        """Create (Hub picks keys and generationId) → derive keys from generationId → update with
        If-Match: * → get / list → a module token with the derived key is accepted → delete."""
        c = self.client()
        r = self.create("mod1")
        self.assertEqual(r.status, 200, r)
        created = r.json
        self.assertEqual(set(created), MODULE_MEMBERS)
        self.assertEqual((created["moduleId"], created["deviceId"]), ("mod1", "dev1"))
        self.assertRegex(created["generationId"], r"^\d{18}$")
        auth = created["authentication"]
        self.assertEqual(auth["type"], "sas")
        self.assertEqual(b64len(auth["symmetricKey"]["primaryKey"]), 32)
        self.assertNotEqual(auth["symmetricKey"]["primaryKey"], auth["symmetricKey"]["secondaryKey"])
        self.assertEqual(auth["x509Thumbprint"], {"primaryThumbprint": None, "secondaryThumbprint": None})
        gen = created["generationId"]
        keys = {w: derived_module_key(MASTER, "mod1", gen, w) for w in ("primary", "secondary")}
        update = {"moduleId": "mod1", "deviceId": "dev1",
                  "authentication": {"symmetricKey": {"primaryKey": keys["primary"],
                                                      "secondaryKey": keys["secondary"]}, "type": "sas"}}
        r = c.put(self.mod_path("mod1"), update, auth=self.token(), headers={"If-Match": "*"})
        self.assertEqual(r.status, 200, r)
        updated = r.json
        self.assertEqual(updated["generationId"], gen)
        self.assertNotEqual(updated["etag"], created["etag"])
        self.assertEqual(updated["authentication"]["symmetricKey"],
                         {"primaryKey": keys["primary"], "secondaryKey": keys["secondary"]})
        mod = self.hub.registry.module("dev1", "mod1")
        self.assertTrue(mod.keys_derived_from(MASTER))
        self.assertFalse(mod.keys_derived_from(base64.b64encode(b"x" * 32).decode()))
        self.assertEqual(c.get(self.mod_path("mod1"), auth=self.token()).json, updated)
        self.assertEqual(c.get("/devices/dev1/modules", auth=self.token()).json, [updated])
        # the host agent's token, made with the derived key, is what the Hub accepts
        mtoken = self.token(module_id="mod1", key=keys["primary"])
        self.assertTrue(self.hub.verify_token(mtoken, "dev1", "mod1"))
        self.assertEqual(self.hub.verify_token(self.token(module_id="mod1", key=keys["secondary"]),
                                               "dev1", "mod1").key_index, 1)
        r = c.post("/devices/dev1/modules/mod1/messages/events", {"t": 21}, auth=mtoken)
        self.assertEqual((r.status, r.body), (204, b""))
        self.assertEqual(self.hub.http_requests()[-1].principal, "dev1/mod1")
        old = self.token(module_id="mod1", key=auth["symmetricKey"]["primaryKey"])
        res = self.hub.verify_token(old, "dev1", "mod1")
        self.assertEqual((res.ok, res.reason), (False, "signature mismatch"))
        self.assertEqual(c.post("/devices/dev1/modules/mod1/messages/events", {}, auth=old).status, 401)
        # delete
        r = c.delete(self.mod_path("mod1"), auth=self.token(), headers={"If-Match": "*"})
        self.assertEqual((r.status, r.body), (204, b""))
        self.assertNotIn("content-type", r.headers)
        self.assertHubError(c.get(self.mod_path("mod1"), auth=self.token()), 404, "ModuleNotFound",
                            "Module mod1 on device dev1 not found")
        self.assertEqual(c.get("/devices/dev1/modules", auth=self.token()).json, [])
        self.assertFalse(self.hub.verify_token(mtoken, "dev1", "mod1"))
        log = [(r.method, r.route, r.auth, r.status) for r in self.hub.http_requests()]
        self.assertEqual(log[:2], [("PUT", "put-module", "sas", 200), ("PUT", "put-module", "sas", 200)])

    def test_etags_and_if_match(self):
        c = self.client()
        etag = self.create("m").json["etag"]
        upd = {"moduleId": "m", "deviceId": "dev1", "managedBy": "host"}
        r = c.put(self.mod_path("m"), upd, auth=self.token(), headers={"If-Match": f'"{etag}"'})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["managedBy"], "host")
        new = r.json["etag"]
        self.assertHubError(c.put(self.mod_path("m"), upd, auth=self.token(), headers={"If-Match": etag}),
                            412, "PreconditionFailed")  # stale
        r = c.put(self.mod_path("m"), upd, auth=self.token(), headers={"If-Match": f'W/"{new}"'})
        self.assertEqual(r.status, 200, r)
        # keys kept when an update has no authentication section
        self.assertEqual(self.hub.registry.module("dev1", "m").updates, 2)
        # If-Match on a module that does not exist
        r = c.put(self.mod_path("nope"), {"moduleId": "nope", "deviceId": "dev1"}, auth=self.token(),
                  headers={"If-Match": "*"})
        self.assertHubError(r, 404, "ModuleNotFound")
        # DELETE: If-Match required; a stale etag refused; unknown module 404
        self.assertHubError(c.delete(self.mod_path("m"), auth=self.token()), 412, "PreconditionFailed")
        self.assertHubError(c.delete(self.mod_path("m"), auth=self.token(), headers={"If-Match": etag}),
                            412, "PreconditionFailed")
        current = self.hub.registry.module("dev1", "m").etag
        r = c.delete(self.mod_path("m"), auth=self.token(), headers={"If-Match": current})
        self.assertEqual(r.status, 204, r)
        self.assertHubError(c.delete(self.mod_path("m"), auth=self.token(), headers={"If-Match": "*"}),
                            404, "ModuleNotFound")
        self.hub.require_if_match_on_delete = False
        self.create("m2")
        self.assertEqual(c.delete(self.mod_path("m2"), auth=self.token()).status, 204)

    def test_create_existing_conflicts(self):
        first = self.create("m").json
        self.assertHubError(self.create("m"), 409, "ModuleAlreadyExistsOnDevice",
                            "A module with ID 'm' already exists on device 'dev1'")
        self.assertEqual(self.hub.registry.module("dev1", "m").generation_id, first["generationId"])
        self.hub.put_replaces = True  # spec §4.4's lenient reading
        second = self.create("m").json
        self.assertNotEqual(second["generationId"], first["generationId"])
        self.assertNotEqual(second["authentication"]["symmetricKey"], first["authentication"]["symmetricKey"])

    def test_create_with_keys_and_type_none(self):
        key = base64.b64encode(b"k" * 16).decode()
        body = {"moduleId": "m", "deviceId": "dev1",
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": None}}}
        r = self.client().put(self.mod_path("m"), body, auth=self.token())
        self.assertEqual(r.json["authentication"]["symmetricKey"]["primaryKey"], key)
        self.assertEqual(b64len(r.json["authentication"]["symmetricKey"]["secondaryKey"]), 32)
        body = {"moduleId": "n", "deviceId": "dev1", "authentication": {"type": "none"}}
        r = self.client().put(self.mod_path("n"), body, auth=self.token())
        self.assertEqual(r.json["authentication"]["type"], "none")
        self.assertEqual(r.json["authentication"]["symmetricKey"], {"primaryKey": None, "secondaryKey": None})
        self.assertFalse(self.hub.verify_token(self.token(module_id="n", key=key), "dev1", "n"))

    def test_bad_requests(self):
        c = self.client()
        tok = self.token()
        short = base64.b64encode(b"k" * 8).decode()
        cases = [
            ("moduleId not the path's", {"moduleId": "other", "deviceId": "dev1"}, 400, "ArgumentInvalid"),
            ("deviceId not the path's", {"moduleId": "m", "deviceId": "dev2"}, 400, "ArgumentInvalid"),
            ("no ids", {}, 400, "ArgumentInvalid"),
            ("not an object", ["m"], 400, "ArgumentInvalid"),
            ("key not base64", {"moduleId": "m", "deviceId": "dev1", "authentication": {
                "type": "sas", "symmetricKey": {"primaryKey": "not base64!"}}}, 400, "ArgumentInvalid"),
            ("key too short", {"moduleId": "m", "deviceId": "dev1",
                               "authentication": {"type": "sas", "symmetricKey": {"primaryKey": short}}},
             400, "ArgumentInvalid"),
            ("key not a string", {"moduleId": "m", "deviceId": "dev1",
                                  "authentication": {"type": "sas", "symmetricKey": {"primaryKey": 5}}},
             400, "ArgumentInvalid"),
            ("self-signed module", {"moduleId": "m", "deviceId": "dev1",
                                    "authentication": {"type": "selfSigned"}}, 400, "ArgumentInvalid"),
            ("not JSON", "{moduleId", 400, "ArgumentInvalid"),
        ]
        for name, body, status, code in cases:
            with self.subTest(name):
                self.assertHubError(c.put(self.mod_path("m"), body, auth=tok), status, code)
        self.assertHubError(c.put(self.mod_path("m"), {"moduleId": "m", "deviceId": "dev1"}, auth=tok,
                                  content_type="text/plain"), 415, "UnsupportedMediaType")
        self.assertHubError(c.put(self.mod_path("m"), None, auth=tok), 400, "ArgumentInvalid")
        r = c.put("/devices/dev1/modules/bad%20id", {"moduleId": "bad id", "deviceId": "dev1"}, auth=tok)
        self.assertHubError(r, 400, "ArgumentInvalid", "invalid module id 'bad id'")
        self.assertHubError(c.get(self.mod_path("m"), auth=tok, api_version=False), 400,
                            "InvalidProtocolVersion")
        self.assertHubError(c.get(self.mod_path("m"), auth=tok, api_version="2021-04-12"), 400,
                            "InvalidProtocolVersion")
        self.assertHubError(c.get("/devices/dev1", auth=tok), 404, "NotFound")
        self.assertHubError(c.post(self.mod_path("m"), {}, auth=tok), 405, "MethodNotAllowed")
        self.assertEqual(self.hub.registry.device("dev1").modules, {})
        # ids the SAS encode set escapes (spec §4.1) arrive decoded
        r = c.put("/devices/dev1/modules/a%3Db%23c", {"moduleId": "a=b#c", "deviceId": "dev1"}, auth=tok)
        self.assertEqual((r.status, r.json["moduleId"]), (200, "a=b#c"))

    def test_keep_alive(self):
        c = self.client()
        for m in ("k1", "k2", "k3"):
            r = c.put(self.mod_path(m), {"moduleId": m, "deviceId": "dev1"}, auth=self.token(),
                      keep_alive=True)
            self.assertEqual(r.status, 200)
        self.assertEqual(len(c.get("/devices/dev1/modules", auth=self.token(), keep_alive=True).json), 3)
        c.close()


class TestAuthentication(HubTestCase):
    def test_bad_device_tokens(self):
        other = self.hub.registry.add_device("dev2")
        c = self.client()
        past = int(time.time()) - 1
        cases = [
            ("other device's key", self.token(key=other.primary_key), "signature mismatch"),
            ("expired", self.token(expiry=past), "expired"),
            ("other device's audience", self.token("dev2", key=self.dev.primary_key), "audience mismatch"),
            ("other hub", sas_token("other.azure-devices.net/devices/dev1", self.dev.primary_key),
             "audience mismatch"),
            ("module audience", self.token(module_id="m"), "audience mismatch"),
            ("hub-wide audience", sas_token(self.hub.hostname, self.dev.primary_key), "audience mismatch"),
            ("skn", self.token(skn="registration"), "unexpected skn"),
            ("malformed", self.token().replace("&se=", "&ex="), "malformed"),
        ]
        for name, token, reason in cases:
            with self.subTest(name):
                self.assertHubError(c.get("/devices/dev1/modules", auth=token), 401,
                                    "IotHubUnauthorizedAccess", "Unauthorized", reason=reason)
        self.assertHubError(c.get("/devices/dev1/modules"), 401, "IotHubUnauthorizedAccess",
                            reason="no SAS token")
        # dev2's valid token does not open dev1
        dev2_token = self.token("dev2", key=other.primary_key)
        self.assertHubError(c.get("/devices/dev1/modules", auth=dev2_token), 401,
                            "IotHubUnauthorizedAccess", reason="audience mismatch")
        self.assertHubError(c.get("/devices/dev9/modules", auth=self.token("dev9")), 401,
                            "IotHubUnauthorizedAccess", reason="unknown device dev9")
        other.enabled = False
        self.assertHubError(c.get("/devices/dev2/modules", auth=dev2_token), 401,
                            "IotHubUnauthorizedAccess", reason="disabled")
        # accepted: secondary key, '/' escaped, mixed case
        secondary = self.token(key=self.dev.secondary_key)
        self.assertEqual(c.get("/devices/dev1/modules", auth=secondary).status, 200)
        escaped = sas_token("", self.dev.primary_key, sr=f"{self.hub.hostname}%2Fdevices%2Fdev1")
        self.assertEqual(c.get("/devices/dev1/modules", auth=escaped).status, 200)
        self.assertEqual(c.get("/devices/dev1/modules", auth=self.token()).status, 200)
        self.assertEqual(self.hub.http_requests()[-1].principal, "dev1")

    def test_verify_token_helper(self):
        mod = self.hub.registry.add_module("dev1", "agent")
        good = self.token(module_id="agent", key=mod.primary_key)
        self.assertTrue(self.hub.verify_token(good, "dev1", "agent"))
        for token, args, reason in [
            (good, ("dev1", "other"), "unknown module other on device dev1"),
            (good, ("dev1",), "audience mismatch"),
            (self.token(module_id="agent", key=mod.primary_key, expiry=time.time() - 1), ("dev1", "agent"),
             "expired"),
            (self.token(module_id="agent", key=self.dev.primary_key), ("dev1", "agent"),
             "signature mismatch"),
            (self.token(module_id="agent", key=mod.primary_key, skn="x"), ("dev1", "agent"),
             "unexpected skn"),
        ]:
            with self.subTest(reason):
                res = self.hub.verify_token(token, *args)
                self.assertFalse(res)
                self.assertIn(reason, res.reason)
        self.assertTrue(self.hub.verify_token(self.token(), "dev1"))
        # the same over the device-facing route
        r = self.client().post("/devices/dev1/messages/events", {"x": 1}, auth=self.token())
        self.assertEqual(r.status, 204)
        r = self.client().post("/devices/dev1/messages/events", {"x": 1}, auth=good)
        self.assertEqual(r.status, 401)

    def test_x509_devices(self):
        pki = self.hub.pki
        self_signed = pki.make_cert("hub-x1", "x1")
        self.hub.registry.add_device("x1", thumbprint=self_signed.cert)
        root = pki.make_ca("hub-root", "Hub Device Root")
        inter = pki.make_ca("hub-inter", "Hub Device Intermediate", issuer=root)
        self.hub.registry.add_device("x2", ca=root.cert)
        ok = pki.make_cert("hub-x2", "x2", issuer=inter)
        c1 = self.client(self_signed.cert_path, self_signed.key_path)
        self.assertEqual(c1.get("/devices/x1/modules").status, 200)
        c2 = self.client(ok.chain_path, ok.key_path)
        self.assertEqual(c2.put(self.mod_path("m", "x2"), {"moduleId": "m", "deviceId": "x2"}).status, 200)
        self.assertEqual(self.hub.http_requests()[-1].auth, "x509")
        cases = [
            ("another self-signed cert", "x1", pki.make_cert("hub-x1b", "x1"), "thumbprint"),
            ("untrusted CA", "x2", pki.make_cert("hub-x2b", "x2", issuer=pki.make_ca("hub-other", "Other")),
             "does not chain"),
            ("CN not the device id", "x2", pki.make_cert("hub-x2c", "x3", issuer=root), "CN"),
            ("expired", "x2", pki.make_cert("hub-x2d", "x2", issuer=root, seconds=1,
                                            not_before=root.cert.not_valid_before), "expired"),
            ("server-only EKU", "x2", pki.make_cert("hub-x2e", "x2", issuer=root,
                                                    eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
             "client authentication"),
            ("a SAS device", "dev1", pki.make_cert("hub-d1", "dev1", issuer=root), "thumbprint"),
            ("without the intermediate", "x2", ok, "does not chain"),
            ("forged issuer name", "x2", pki.make_cert("hub-x2f", "x2",
                                                       issuer=pki.make_ca("hub-fake", "Hub Device Root")),
             "does not chain"),
        ]
        for name, device, cert, reason in cases:
            with self.subTest(name):
                chain = cert.cert_path if name == "without the intermediate" else cert.chain_path
                r = self.client(chain, cert.key_path).get(f"/devices/{device}/modules")
                self.assertHubError(r, 401, "IotHubUnauthorizedAccess", reason=reason)
        self.assertEqual(self.hub.tls_errors(), [])

    def test_gateway_hostname(self):
        """Nested: requests go to a local address while audiences carry the real hub name (spec §2.1)."""
        hub = MockHub(self.pki_dir, hostname="myhub.azure-devices.net", registry=Registry()).start()
        self.addCleanup(hub.stop)
        dev = hub.registry.add_device("edge", primary_key=base64.b64encode(b"e" * 32).decode())
        c = Client(hub.url, hub.server_ca_path, api_version=HUB_API)
        real = sas_token("myhub.azure-devices.net/devices/edge", dev.primary_key)
        self.assertEqual(c.get("/devices/edge/modules", auth=real).status, 200)
        local = sas_token(f"127.0.0.1:{hub.port}/devices/edge", dev.primary_key)
        self.assertEqual(c.get("/devices/edge/modules", auth=local).status, 401)


class TestFaults(HubTestCase):
    def test_throttling_server_error_and_network_error(self):
        c = self.client()
        self.hub.fail(429, retry_after=10, count=1)
        r = c.get("/devices/dev1/modules", auth=self.token())
        self.assertHubError(r, 429, "ThrottlingException")
        self.assertEqual(r.headers["retry-after"], "10")
        self.assertEqual(c.get("/devices/dev1/modules", auth=self.token()).status, 200)
        self.hub.fail(500, routes=["put-module"])
        self.assertHubError(self.create("m"), 500, "ServerError")
        self.assertEqual(c.get("/devices/dev1/modules", auth=self.token()).status, 200)
        # a parent edgeHub that cannot reach upstream (spec §4.3)
        self.hub.fail(404, network_error=True, message="cannot reach the upstream hub")
        self.assertHubError(c.get(self.mod_path("m"), auth=self.token()), 404, "NotFound",
                            "cannot reach the upstream hub", network_error=True)
        self.hub.clear_faults()
        self.assertEqual(self.create("m").status, 200)

    def test_garbage_content_type_delay(self):
        c = self.client()
        self.hub.body_mode = "garbage"
        r = self.create("m")
        self.assertEqual(r.status, 200)
        with self.assertRaises(ValueError):
            r.json
        self.hub.body_mode = "json"
        self.hub.content_type = "text/plain"
        self.assertEqual(c.get(self.mod_path("m"), auth=self.token()).headers["content-type"], "text/plain")
        self.hub.content_type = None
        self.hub.delay = 30
        with self.assertRaises((TimeoutError, socket.timeout)):
            self.client(timeout=0.3).get(self.mod_path("m"), auth=self.token())

    def test_down_up_and_drop(self):
        c = self.client()
        self.hub.down()
        with self.assertRaises(ConnectionRefusedError):
            c.get("/devices/dev1/modules", auth=self.token())
        self.hub.up()
        self.assertEqual(c.get("/devices/dev1/modules", auth=self.token()).status, 200)
        self.hub.drop_connections = True
        with self.assertRaises(NETWORK_ERRORS):
            c.get("/devices/dev1/modules", auth=self.token())
        self.assertEqual(self.hub.tls_errors(), ["dropped by drop_connections"])


class TestCli(HubTestCase):
    def setUp(self):
        pass

    def test_script(self):
        d = os.path.join(self.tmp, "cli")
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        p, info = self.start_script("mock_hub.py", "--dir", d, "--device", f"d1={key}", "--device", "d2",
                                    "--hostname", "cli-hub.example", "--control")
        self.assertEqual(info["HOSTNAME"], "cli-hub.example")
        c = Client(info["URL"], info["SERVER_CA"], api_version=HUB_API)
        d1 = sas_token("cli-hub.example/devices/d1", key)
        self.assertEqual(c.get("/devices/d1/modules", auth=d1).json, [])
        d2 = sas_token("cli-hub.example/devices/d2", info["DEVICE_KEY_d2"])
        self.assertEqual(c.get("/devices/d2/modules", auth=d2).status, 200)

        def ctl(method, path, obj=None):
            return control(info["CONTROL_URL"], method, path, obj)
        status, mod = ctl("POST", "/modules", {"deviceId": "d1", "moduleId": "agent"})
        self.assertEqual(status, 200, mod)
        mkey = mod["authentication"]["symmetricKey"]["primaryKey"]
        mtok = sas_token("cli-hub.example/devices/d1/modules/agent", mkey)
        check = {"token": mtok, "deviceId": "d1", "moduleId": "agent"}
        self.assertEqual(ctl("POST", "/verify-token", check),
                         (200, {"ok": True, "reason": None, "keyIndex": 0}))
        self.assertEqual(ctl("POST", "/verify-token", {"token": d2, "deviceId": "d1"})[1]["ok"], False)
        status, dev = ctl("POST", "/devices", {"deviceId": "d3"})
        self.assertEqual(c.get("/devices/d3/modules", auth=sas_token("cli-hub.example/devices/d3",
                                                                   dev["primaryKey"])).status, 200)
        self.assertEqual(ctl("POST", "/config", {"put_replaces": True})[0], 200)
        self.assertEqual(ctl("POST", "/fail", {"status": 500, "network_error": True, "count": 1})[0], 200)
        self.assertTrue(c.get("/devices/d3/modules", auth=sas_token("cli-hub.example/devices/d3",
                                                                  dev["primaryKey"])).json["networkError"])
        devices = {d["deviceId"]: d for d in ctl("GET", "/registry")[1]["devices"]}
        self.assertEqual([m["moduleId"] for m in devices["d1"]["modules"]], ["agent"])
        self.assertEqual(ctl("POST", "/nonsense")[0], 404)
        p.send_signal(signal.SIGUSR1)
        self.assertGoesDown(lambda: c.get("/devices/d2/modules", auth=d2))
        p.send_signal(signal.SIGUSR2)
        self.assertEqual(self.comes_up(lambda: c.get("/devices/d2/modules", auth=d2)).status, 200)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
