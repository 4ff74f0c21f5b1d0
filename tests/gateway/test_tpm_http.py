#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""tpmd.sock end to end: HTTP clients (raw sockets, curl, processes of the harness's test users)
→ aziot-gatewayd → the real aziot-tpmd, D-Bus activated on a private system bus with our policy
next to the real polkitd → a TPM simulator (aziot_harness.Stack + aziot_stack.TpmServices on
aziot_tpm.Swtpm; one stack and one swtpm per class).

What the gateway answers is checked independently of tpmd: the keys against what tpm2_readpublic
writes for the persistent handles of the EK (0x81010001) and the SRK (0x81000001); the imported
authentication key by building DPS's blob for this TPM's EK and SRK in the test
(aziot_tpm.make_auth_key_blob) around a key the test knows, so that each digest is computed here
with Python's hmac. Every status, header and message is checked against spec §1.2-§1.4 and §5,
every answer against interfaces/tpm.yaml. Tests that import evict the key again
(tpm2_evictcontrol), so that each starts without one.

Where we deliberately differ from upstream it is asserted as such: importing the authentication
key needs root or polkit's org.aziot.tpm.import-auth-key, and a refused caller gets 401 "user
<uid> is not authorized to import the TPM authentication key" (upstream lets anyone who can open
the socket import).

Environment: AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_TPMD (the aziot-tpmd to run).
"""

import json
import os
import re
import sys
import unittest
import urllib.parse

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import aziot_openapi  # noqa: E402
import aziot_stack  # noqa: E402
import aziot_tpm  # noqa: E402
from aziot_http import Connection, Response, request_bytes  # noqa: E402
from aziot_http_suite import BUILD_DIR, GATEWAYD, USER_A, USER_B, ServiceHttpTestCase, at, \
    c_array, compact, gateway_source, poll  # noqa: E402
from aziot_keys_oracle import b64, hmac256  # noqa: E402

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

TPMD = os.environ.get("AZIOT_TPMD") or os.path.join(BUILD_DIR, "services", "tpm", "aziot-tpmd")
API = "2020-09-01"
TPM_GROUP = "aziottpm"
TPM_NAME = "org.aziot.Tpm1"
AUTH_KEY_HANDLE = 0x81000100
INTERNAL = "internal error"
TOO_LARGE = "request body too large"
BODY_TIMEOUT_MS = 1000  # the gateway's deadline for a request's body (5 s upstream)
BLOB_MAX = 8192  # tpmd's limits: dbus/org.aziot.Tpm1.xml
SIGN_DATA_MAX = 65536
POST_ROUTES = (("POST", "/import_auth_key", "key"), ("POST", "/sign_with_auth_key", "data"))
ROUTES = (("GET", "/get_tpm_keys"),) + tuple((m, p) for m, p, _ in POST_ROUTES)

OPENAPI = aziot_openapi.OpenApi(os.path.join(SOURCE_DIR, "interfaces", "tpm.yaml"))


def not_authorized(uid):
    return f"user {uid} is not authorized to import the TPM authentication key"


class TpmHttpTestCase(ServiceHttpTestCase):
    """A stack and a swtpm per class: bus, polkitd, tpmd activatable (no idle exit) on the
    swtpm, and the gateway on run_dir/sockets/tpmd.sock, mode 0660 and group aziottpm as a
    packaged socket unit makes it. A class may set MAX_REQUESTS (tpmd's max_requests)."""

    GROUP = TPM_GROUP
    RUN_DIR_PREFIX = "aziot-gwt-"
    API = API
    OPENAPI = OPENAPI
    REQUIRED = (GATEWAYD, TPMD)
    NOT_BUILT = AssertionError
    BODY_TIMEOUT_MS = BODY_TIMEOUT_MS
    BYTE_EXACT = True
    swtpm = None

    @classmethod
    def start_stack(cls):
        cls.swtpm = aziot_tpm.Swtpm(os.path.join(cls.run_dir, "swtpm"))
        cls.swtpm.start()
        cls.stack.start()
        cls.services = aziot_stack.TpmServices(
            cls.stack, cls.swtpm.tcti, tpmd_args=["--idle-timeout=0"],
            tpmd_env={"AZIOT_LOG": "debug"}, tpmd_binary=TPMD, gateway_env=cls.gateway_env())
        cls.services.start(max_requests=cls.MAX_REQUESTS)
        cls.sock = cls.services.tpmd_socket
        cls.gateway = cls.services.gateway

    @classmethod
    def stop_class(cls):
        super().stop_class()
        if cls.swtpm is not None:
            cls.swtpm.stop()

    @classmethod
    def prepare_class(cls):
        """Activates tpmd with a first request, which makes the EK and the SRK in the new TPM."""
        c = Connection(cls.sock, timeout=60)
        try:
            c.send(request_bytes("GET", f"/get_tpm_keys?api-version={API}"))
            r = c.read_response()
        finally:
            c.close()
        if r.status != 200:
            raise AssertionError(f"GET /get_tpm_keys: {r.status} {r.body[:300]!r}")

    def setUp(self):
        self.evict_auth_key()

    def tearDown(self):
        self.remove_test_rules()
        self.evict_auth_key()

    # -- the TPM, through tpm2-tools --------------------------------------------------------

    def read_public(self, handle):
        """What tpm2_readpublic writes for a persistent handle: a marshalled TPM2B_PUBLIC."""
        out = os.path.join(self.run_dir, f"{handle:08x}.pub")
        self.swtpm.tools("tpm2_readpublic", "-c", hex(handle), "-o", out)
        with open(out, "rb") as f:
            return f.read()

    def tpm_keys(self):
        return self.read_public(aziot_tpm.EK_HANDLE), self.read_public(aziot_tpm.SRK_HANDLE)

    def persistent_handles(self):
        out = self.swtpm.tools("tpm2_getcap", "handles-persistent").stdout
        return {int(line.strip().lstrip("- "), 16) for line in out.splitlines() if "0x" in line}

    def assertNothingLoaded(self):
        """No transient object or session is left in the TPM (which holds a few only)."""
        for what in ("handles-transient", "handles-loaded-session", "handles-saved-session"):
            self.assertEqual(self.swtpm.tools("tpm2_getcap", what).stdout.strip(), "", what)

    def evict_auth_key(self):
        if AUTH_KEY_HANDLE in self.persistent_handles():
            self.swtpm.tools("tpm2_evictcontrol", "-C", "o", "-c", hex(AUTH_KEY_HANDLE))

    def blob_for(self, key):
        """DPS's authenticationKey holding key, for this TPM's EK and SRK as tpm2-tools read
        them."""
        return aziot_tpm.make_auth_key_blob(*self.tpm_keys(), key)

    # -- HTTP -------------------------------------------------------------------------------

    def get_keys(self, via=None):
        r = self.http("GET", "/get_tpm_keys", via=via)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def import_key(self, blob, via=None):
        return self.http("POST", "/import_auth_key", {"key": b64(blob)}, via=via)

    def sign(self, data, via=None):
        return self.http("POST", "/sign_with_auth_key", {"data": b64(data)}, via=via)

    def assertImported(self, r):
        self.assertOk(r, {})
        self.assertIn(AUTH_KEY_HANDLE, self.persistent_handles())

    def assertSigns(self, key, data=b"m", via=None):
        self.assertOk(self.sign(data, via=via), {"digest": b64(hmac256(key, data))})

    def tpmd_pid(self):
        return self.service_pid(TPM_NAME)


# ---------------------------------------------------------------------------------------------
# 1. The routes


class RoutesTest(TpmHttpTestCase):
    def test_get_tpm_keys_is_what_the_tpm_holds(self):
        ek, srk = self.tpm_keys()
        r = self.http("GET", "/get_tpm_keys")
        self.assertOk(r, {"endorsement_key": b64(ek), "storage_root_key": b64(srk)})
        # Marshalled TPM2B_PUBLIC: the TCG templates, RSA-2048 with AES-128-CFB.
        for name, blob, attributes in (("EK", ek, aziot_tpm.EK_RSA_ATTRIBUTES),
                                       ("SRK", srk, aziot_tpm.SRK_RSA_ATTRIBUTES)):
            with self.subTest(key=name):
                self.assertEqual(int.from_bytes(blob[:2], "big"), len(blob) - 2)
                public = aziot_tpm.parse_public(blob)
                self.assertEqual(public.type, aziot_tpm.TPM2_ALG_RSA)
                self.assertEqual(public.attributes, attributes)
                self.assertEqual(public.symmetric, aziot_tpm.AES_128_CFB)
                self.assertEqual(len(public.unique), 256)
        self.assertEqual(aziot_tpm.parse_public(ek).auth_policy, aziot_tpm.EK_RSA_POLICY)
        # The same again; a GET's body is read and ignored: the next request on the
        # connection is answered as such.
        c = Connection(self.sock)
        self.addCleanup(c.close)
        for body in (b"{not json", None):
            r2 = self.http("GET", "/get_tpm_keys", body, conn=c)
            self.assertEqual((r2.status, r2.body), (200, r.body))

    def test_import_then_sign(self):
        key = os.urandom(32)
        self.assertNotIn(AUTH_KEY_HANDLE, self.persistent_handles())
        self.assertImported(self.import_key(self.blob_for(key)))
        for data in (b"", b"scope/registrations/device-1\n1700000000", os.urandom(1024),
                     os.urandom(1025), os.urandom(5000), os.urandom(SIGN_DATA_MAX)):
            with self.subTest(size=len(data)):
                self.assertSigns(key, data)
        # Over tpmd's limit: 500, and the key is still there.
        self.assertError(self.sign(bytes(SIGN_DATA_MAX + 1)), 500, INTERNAL)
        self.assertIn(f'!!! caused by: org.aziot.Tpm1.Error.InvalidParameter: parameter "data" '
                      f"is over {SIGN_DATA_MAX} bytes", self.gateway_log())
        self.assertSigns(key)

    def test_import_replaces_the_previous_key(self):
        keys = [os.urandom(32), os.urandom(64), os.urandom(1)]
        # More imports than a TPM has session and object slots: tpmd frees what it loads.
        for i in range(8):
            key = keys[i % len(keys)]
            with self.subTest(i=i):
                self.assertImported(self.import_key(self.blob_for(key)))
                self.assertSigns(key)
        self.assertEqual(self.persistent_handles(),
                         {aziot_tpm.EK_HANDLE, aziot_tpm.SRK_HANDLE, AUTH_KEY_HANDLE})
        self.assertNothingLoaded()

    def test_sign_before_any_import(self):
        mark = len(self.gateway_log())
        r = self.sign(b"m")
        self.assertError(r, 500, INTERNAL)
        self.assertEqual(r.body, b'{"message":"internal error"}')
        # The cause is logged, not answered.
        self.assertIn("!!! caused by: org.aziot.Tpm1.Error.NotFound: there is no authentication "
                      "key at 0x81000100", self.gateway_log()[mark:])
        self.assertError(self.sign(b""), 500, INTERNAL)
        self.assertNotIn(AUTH_KEY_HANDLE, self.persistent_handles())

    def test_malformed_blobs(self):
        key = os.urandom(32)
        self.assertImported(self.import_key(self.blob_for(key)))
        good = self.blob_for(os.urandom(32))
        parts = aziot_tpm.split_auth_key_blob(good)
        ek, srk = self.tpm_keys()
        other_ek, other_srk = (aziot_tpm.marshal_public(make(
            rsa.generate_private_key(65537, 2048).public_key().public_numbers().n.to_bytes(
                256, "big"))) for make in (aziot_tpm.ek_rsa_public, aziot_tpm.srk_rsa_public))
        corrupted = bytearray(parts.duplicate)
        corrupted[len(corrupted) // 2] ^= 0xff
        cases = {
            # What tpmd refuses without the TPM …
            "empty": (b"", "malformed authentication key"),
            "too short": (good[:3], "malformed authentication key"),
            "truncated": (good[:-10], "malformed authentication key"),
            "trailing bytes": (good + b"\0\0", "malformed authentication key: 2 bytes after"),
            "not an HMAC key": (parts.credential_blob + parts.secret + parts.duplicate +
                                parts.in_sym_seed + srk, "not a keyed-hash (HMAC) key"),
            "8192 bytes": (good + bytes(BLOB_MAX - len(good)),
                           f"{BLOB_MAX - len(good)} bytes after the public area"),
            "over 8192 bytes": (good + bytes(BLOB_MAX + 1 - len(good)),
                                f"malformed authentication key: over {BLOB_MAX} bytes"),
            # … and what the TPM refuses.
            "corrupted duplicate": (parts.credential_blob + parts.secret + bytes(corrupted) +
                                    parts.in_sym_seed + parts.public,
                                    "importing the authentication key"),
            "for another EK": (aziot_tpm.make_auth_key_blob(other_ek, srk, os.urandom(32)),
                               "activating the credential"),
            "for another SRK": (aziot_tpm.make_auth_key_blob(ek, other_srk, os.urandom(32)),
                                "activating the credential"),
        }
        for name, (blob, cause) in cases.items():
            with self.subTest(blob=name):
                mark = len(self.gateway_log())
                self.assertError(self.import_key(blob), 500, INTERNAL)
                log = self.gateway_log()[mark:]
                self.assertIn("!!! caused by: org.aziot.Tpm1.Error.InvalidParameter: ", log)
                self.assertIn(cause, log)
        # The key in place stays, and tpmd left nothing behind in the TPM.
        self.assertSigns(key)
        self.assertIn(AUTH_KEY_HANDLE, self.persistent_handles())
        self.assertNothingLoaded()

    def test_unknown_members_and_the_list_form(self):
        key = os.urandom(32)
        # Unknown members are ignored; a struct may be the list of its members (serde).
        self.assertImported(self.http("POST", "/import_auth_key",
                                      {"key": b64(self.blob_for(key)), "extra": [1, {}]}))
        self.assertOk(self.http("POST", "/sign_with_auth_key",
                                compact({"data": b64(b"m"), "key": 5, "digest": None})),
                      {"digest": b64(hmac256(key, b"m"))})
        other = os.urandom(32)
        self.assertImported(self.http("POST", "/import_auth_key",
                                      compact([b64(self.blob_for(other))])))
        self.assertOk(self.http("POST", "/sign_with_auth_key", compact([b64(b"l")])),
                      {"digest": b64(hmac256(other, b"l"))})
        # Escapes in strings are undone before base64 is decoded.
        self.assertOk(self.http("POST", "/sign_with_auth_key", b'{"data":"bQ\\u003d\\u003d"}'),
                      {"digest": b64(hmac256(other, b"m"))})
        # Content-Type parameters are ignored.
        self.assertOk(self.http("POST", "/sign_with_auth_key", {"data": b64(b"c")},
                                content_type="application/json; charset=utf-8"),
                      {"digest": b64(hmac256(other, b"c"))})

    def test_keep_alive(self):
        """Several requests on one connection, pipelined, answered in order."""
        key = os.urandom(32)
        blob = self.blob_for(key)
        c = Connection(self.sock)
        self.addCleanup(c.close)
        c.send(request_bytes("POST", f"/sign_with_auth_key?api-version={API}", {"data": ""}) +
               request_bytes("GET", f"/get_tpm_keys?api-version={API}") +
               request_bytes("POST", f"/import_auth_key?api-version={API}", {"key": b64(blob)}) +
               request_bytes("POST", f"/sign_with_auth_key?api-version={API}",
                             {"data": b64(b"k")}))
        answers = [c.read_response() for _ in range(4)]
        self.assertEqual([r.status for r in answers], [500, 200, 200, 200])
        ek, srk = self.tpm_keys()
        self.assertEqual(answers[1].json(), {"endorsement_key": b64(ek),
                                             "storage_root_key": b64(srk)})
        self.assertEqual(answers[2].body, b"{}")
        self.assertEqual(answers[3].json(), {"digest": b64(hmac256(key, b"k"))})

    def test_a_tpm_out_of_reach(self):
        key = os.urandom(32)
        blob = self.blob_for(key)
        keys = self.get_keys()
        self.swtpm.stop()
        try:
            mark = len(self.gateway_log())
            # The keys were read at start and are served without the TPM; the rest fails.
            self.assertEqual(self.get_keys(), keys)
            self.assertError(self.import_key(blob), 500, INTERNAL)
            self.assertError(self.sign(b"m"), 500, INTERNAL)
            self.assertIn("!!! caused by: org.aziot.Tpm1.Error.Unavailable: ",
                          self.gateway_log()[mark:])
        finally:
            self.swtpm.start()
        # The TPM is back: tpmd opens it again.
        self.assertImported(self.import_key(blob))
        self.assertSigns(key)

    def test_a_client_that_leaves_before_the_answer(self):
        key = os.urandom(32)
        c = Connection(self.sock)
        c.send(request_bytes("POST", f"/import_auth_key?api-version={API}",
                             {"key": b64(self.blob_for(key))}))
        c.close()
        # tpmd imports all the same, and the gateway goes on serving.
        poll(lambda: AUTH_KEY_HANDLE in self.persistent_handles(), "the import")
        self.assertSigns(key)
        self.assertTrue(self.gateway.alive())

    def test_curl_as_a_user_would(self):
        ek, srk = self.tpm_keys()
        r = self.curl("GET", "/get_tpm_keys")
        self.assertEqual((r.status, r.json()), (200, {"endorsement_key": b64(ek),
                                                      "storage_root_key": b64(srk)}))
        key = os.urandom(32)
        r = self.curl("POST", "/import_auth_key", {"key": b64(self.blob_for(key))})
        self.assertEqual((r.status, r.body), (200, b"{}"))
        r = self.curl("POST", "/sign_with_auth_key", {"data": b64(b"curl")})
        self.assertEqual((r.status, r.json()), (200, {"digest": b64(hmac256(key, b"curl"))}))


class FirstUseTest(TpmHttpTestCase):
    """A TPM that has neither EK nor SRK (a new swtpm): tpmd, activated by the first request,
    makes and persists them."""

    @classmethod
    def prepare_class(cls):
        pass

    def test_keys_are_made_on_first_use(self):
        self.assertFalse(self.stack.name_has_owner(TPM_NAME))
        self.assertEqual(self.persistent_handles(), set())
        r = self.http("GET", "/get_tpm_keys")
        self.assertEqual(self.persistent_handles(), {aziot_tpm.EK_HANDLE, aziot_tpm.SRK_HANDLE})
        ek, srk = self.tpm_keys()
        self.assertOk(r, {"endorsement_key": b64(ek), "storage_root_key": b64(srk)})
        # The EK is the TCG template's: tpm2_createek makes the same key again.
        out = os.path.join(self.run_dir, "ek-again.pub")
        self.swtpm.tools("tpm2_createek", "-c", "-", "-G", "rsa", "-u", out)
        self.swtpm.flush_transients()
        with open(out, "rb") as f:
            self.assertEqual(aziot_tpm.parse_public(f.read()).unique,
                             aziot_tpm.parse_public(ek).unique)
        self.assertEqual(self.http("GET", "/get_tpm_keys").body, r.body)


class InterfaceDocumentTest(unittest.TestCase):
    def test_document_lists_every_route_of_the_table(self):
        """interfaces/tpm.yaml and the route table of gateway/tpm-routes.c say the same."""
        source = gateway_source("tpm-routes.c")
        table = c_array(source, "tpm_routes")
        routes = re.findall(r'\{ HTTP_(\w+), "([^"]+)", (\w+), (\w+),', table)
        self.assertEqual(len(routes), 3)
        self.assertEqual({(m, p) for m, p, _, _ in routes}, set(OPENAPI.operations))
        self.assertEqual(set(ROUTES), set(OPENAPI.operations))
        # Every route takes exactly the versions of the table, which the document lists.
        versions = c_array(source, "tpm_api_versions")
        names = dict(re.findall(r'\[(\w+)\] = "([^"]+)"', versions))
        self.assertEqual(list(names.values()), [API])
        for _, _, low, high in routes:
            self.assertEqual((names[low], names[high]), (API, API))
        for (method, template), (_, op) in OPENAPI.operations.items():
            self.assertEqual(op["parameters"], [{"$ref": "#/components/parameters/ApiVersion"}])
            self.assertEqual(OPENAPI.resolve(op["parameters"][0])["schema"]["enum"], [API])
            # Every answer is JSON; the body-less generic ones only where there is a body.
            for status, response in op["responses"].items():
                self.assertIn("content", OPENAPI.resolve(response), (template, status))
            has_body = "requestBody" in op
            for status in ("408", "413", "422"):
                self.assertEqual(status in op["responses"], has_body, (template, status))
            self.assertEqual(set(op["responses"]) - {"408", "413", "422"},
                             {"200", "400", "401", "500"}, template)

    def test_the_validator_can_fail(self):
        ok = Response(200, "OK", [], b'{"endorsement_key":"aGk=","storage_root_key":""}', b"")
        self.assertEqual(OPENAPI.response_errors("GET", "/get_tpm_keys", ok), [])
        for body in (b'{"endorsement_key":"aGk="}', b'{"endorsement_key":"aGk",'
                     b'"storage_root_key":""}', b'{"endorsement_key":"","storage_root_key":"",'
                     b'"more":""}', b'{"message":"x"}'):
            wrong = Response(200, "OK", [], body, b"")
            self.assertNotEqual(OPENAPI.response_errors("GET", "/get_tpm_keys", wrong), [], body)
        self.assertNotEqual(OPENAPI.response_errors(
            "POST", "/import_auth_key", Response(200, "", [], b'{"key":""}', b"")), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "POST", "/sign_with_auth_key", Response(200, "", [], b'{"digest":5}', b"")), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/get_tpm_keys", Response(404, "", [], b'{"message":"x"}', b"")), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/get_tpm_keys", Response(204, "", [], b"", b"")), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/nowhere", Response(500, "", [], b'{"message":"x"}', b"")), [])


# ---------------------------------------------------------------------------------------------
# 2. Bad input


class BadInputTest(TpmHttpTestCase):
    """Malformed, mistyped and misdirected requests, each with upstream's status and message.
    One gateway and one tpmd for the class: after every test both still run (tpmd with the same
    pid) and the TPM holds what it held before."""

    def setUp(self):
        super().setUp()
        self.tpmd_at_start = self.tpmd_pid()
        self.handles_at_start = self.persistent_handles()

    def tearDown(self):
        self.assertTrue(self.gateway.alive(), "the gateway died")
        self.assertEqual(self.tpmd_pid(), self.tpmd_at_start, "tpmd was replaced")
        self.assertEqual(self.persistent_handles(), self.handles_at_start)
        self.assertEqual(self.http("GET", "/get_tpm_keys").status, 200)
        super().tearDown()

    def test_api_version_missing_or_unknown(self):
        for method, path in ROUTES:
            body = {} if method == "POST" else None
            with self.subTest(method=method, path=path):
                self.assertError(self.http(method, path, body, version=None), 400,
                                 "api-version not specified")
                self.assertError(self.http(method, f"{path}?x=1", body, version=None), 400,
                                 "api-version not specified")
                for version in ("2021-05-01", "2020-09-02", "", "2020-09-01 ", 'a"b\\'):
                    query = urllib.parse.urlencode({"api-version": version})
                    self.assertError(self.http(method, f"{path}?{query}", body, version=None),
                                     400, f"invalid api-version {json.dumps(version)}")
                # The last api-version wins.
                self.assertError(self.http(method, f"{path}?api-version={API}", body,
                                           version="2021-05-01"), 400,
                                 'invalid api-version "2021-05-01"')
        r = self.http("GET", "/get_tpm_keys?api-version=2021-05-01")
        self.assertEqual(r.status, 200, r.body)
        # Percent-encoded, as a form.
        self.assertEqual(self.http("GET", "/get_tpm_keys?api%2Dversion=2020%2D09%2D01",
                                   version=None).status, 200)

    def test_unknown_routes(self):
        for path in ("/", "/get_tpm_keys/", "/get_tpm_key", "/get_tpm_keys/x", "/GET_TPM_KEYS",
                     "/getTpmKeys", "/get%5Ftpm%5Fkeys", "/import_auth_key/", "/importAuthKey",
                     "/sign_with_auth_key/x", "/sign", "/key", "/certificates/c",
                     "//get_tpm_keys", "/./get_tpm_keys", "/x/../get_tpm_keys"):
            with self.subTest(path=path):
                self.assertError(self.http("GET", path), 404, "not found")
                self.assertError(self.http("POST", path, {"key": "", "data": ""}), 404,
                                 "not found")

    def test_methods_a_route_does_not_have(self):
        for method, path, body in [("GET", "/import_auth_key", None),
                                   ("GET", "/sign_with_auth_key", None),
                                   ("POST", "/get_tpm_keys", None),
                                   ("POST", "/get_tpm_keys", {}),
                                   ("DELETE", "/get_tpm_keys", None),
                                   ("DELETE", "/import_auth_key", {"key": ""}),
                                   ("PUT", "/sign_with_auth_key", {"data": ""}),
                                   ("PUT", "/get_tpm_keys", {}),
                                   ("PATCH", "/import_auth_key", {"key": ""}),
                                   ("OPTIONS", "/get_tpm_keys", None),
                                   ("HEAD", "/get_tpm_keys", None)]:
            with self.subTest(method=method, path=path, body=body):
                r = self.http(method, path, body)
                self.assertEqual(r.status, 400)
                if method != "HEAD":
                    self.assertError(r, 400, "method not allowed")
        # The body of a method the route lacks is still decoded first; PUT is JSON or 415.
        self.assertError(self.http("POST", "/get_tpm_keys", b"{x", documented=False), 422,
                         "key must be a string at line 1 column 2")
        self.assertError(self.http("PUT", "/get_tpm_keys", b"", documented=False), 422,
                         "EOF while parsing a value at line 1 column 0")
        self.assertError(self.http("PUT", "/sign_with_auth_key", b'{"data":""}',
                                   content_type="text/plain", documented=False), 415,
                         "request body must be application/json")

    def test_malformed_json(self):
        cases = [(b"{x}", "key must be a string at line 1 column 2"),
                 (b"{", "EOF while parsing an object at line 1 column 1"),
                 (b'{"key": "aGk=",}', "trailing comma at line 1 column 16"),
                 (b"\xff", "expected value at line 1 column 1"),
                 (b"nul", "EOF while parsing a value at line 1 column 3"),
                 (b'{"key":"aGk=","data":"aGk="} x', "trailing characters at line 1 column 30")]
        for method, path, _ in POST_ROUTES:
            for body, message in cases:
                with self.subTest(path=path, body=body):
                    self.assertError(self.http(method, path, body), 422, message)

    def test_missing_and_mistyped_members(self):
        for method, path, member in POST_ROUTES:
            other = "data" if member == "key" else "key"
            cases = [
                at(b"{}", None, f"missing field `{member}`"),
                at(b'{"%s":"aGk="}' % other.encode(), None, f"missing field `{member}`"),
                at(b'{"%s":5}' % member.encode(), b"5",
                   "invalid type: integer `5`, expected a base64-encoded string"),
                at(b'{"%s":null}' % member.encode(), b"null",
                   "invalid type: null, expected a base64-encoded string"),
                at(b'{"%s":["aGk="]}' % member.encode(), b":",
                   "invalid type: sequence, expected a base64-encoded string"),
                at(b'{"%s":"aGk=","%s":"aGk="}' % (member.encode(), member.encode()),
                   b'"aGk=","%s"' % member.encode(), f"duplicate field `{member}`"),
                at(b"5", b"5", "invalid type: integer `5`, expected struct Request"),
                at(b'"aGk="', b'"aGk="', 'invalid type: string "aGk=", expected struct Request'),
                at(b"[]", b"[]", "invalid length 0, expected struct Request with 1 element"),
                at(b'["aGk=",1]', b'"aGk=",1', "trailing characters"),
            ]
            for body, message in cases:
                with self.subTest(path=path, body=body):
                    self.assertError(self.http(method, path, body), 422, message)

    def test_bad_base64(self):
        for text, error in (("aGk", "Invalid padding"), ("!!!!", "Invalid byte 33, offset 0."),
                            ("aGk=x", "Invalid byte 61, offset 3."),
                            ("aGl=", "Invalid last symbol 108, offset 2."),
                            ("a", "Encoded text cannot have a 6-bit remainder."),
                            ("aG k=", "Invalid byte 32, offset 2."),
                            ("aGk-", "Invalid byte 45, offset 3.")):
            quoted = json.dumps(text).encode()
            for method, path, member in POST_ROUTES:
                body = b'{"%s":%s}' % (member.encode(), quoted)
                with self.subTest(path=path, text=text):
                    self.assertError(self.http(method, path, body), 422,
                                     at(body, quoted, error)[1])

    def test_no_body(self):
        for method, path, member in POST_ROUTES:
            with self.subTest(path=path):
                self.assertError(self.http(method, path), 400, "missing request body")
                self.assertError(self.http(method, path, b""), 400, "missing request body")
                # A Content-Type that is not JSON: no body either.
                for content_type in ("text/plain", "text/json", "application/jsonx"):
                    self.assertError(self.http(method, path, {member: b64(b"x")},
                                               content_type=content_type),
                                     400, "missing request body")

    def test_oversized_bodies(self):
        for _, path, member in POST_ROUTES:
            with self.subTest(path=path):
                c, r = self.post_oversized(path, b'{"%s":"' % member.encode())
                self.assertError(r, 413, TOO_LARGE)
                self.assertDocumented("POST", path, r)
                self.assertEqual(r.header("connection"), b"close")
                self.assertTrue(c.is_closed())

    def test_slow_bodies(self):
        for _, path, member in POST_ROUTES:
            with self.subTest(path=path):
                c, r, waited = self.post_slowly(path, b'{"%s":""}' % member.encode())
                self.assertGreaterEqual(waited, BODY_TIMEOUT_MS / 1000 * 0.9)
                self.assertError(r, 408, "deadline has elapsed")
                self.assertDocumented("POST", path, r)
                self.assertTrue(c.is_closed())


# ---------------------------------------------------------------------------------------------
# 3. Authorization of the HTTP client by tpmd, with real unprivileged uids


class AuthorizationTest(TpmHttpTestCase):
    """tpmd judges the process at the other end of tpmd.sock, not the gateway (root)."""

    def setUp(self):
        super().setUp()
        self.a = self.agent_as(USER_A)

    def test_the_socket_is_for_its_group(self):
        self.assertSocketMode()
        self.assertOutsiderRefused()
        # The same user in the group is served.
        ek, srk = self.tpm_keys()
        self.assertEqual(self.get_keys(via=self.agent_as(USER_B)),
                         {"endorsement_key": b64(ek), "storage_root_key": b64(srk)})

    def test_group_member_reads_and_signs_but_may_not_import(self):
        ek, srk = self.tpm_keys()
        self.assertEqual(self.get_keys(via=self.a),
                         {"endorsement_key": b64(ek), "storage_root_key": b64(srk)})
        # Signing needs no authorization: before an import it fails as for root.
        self.assertError(self.sign(b"m", via=self.a), 500, INTERNAL)
        key = os.urandom(32)
        self.assertImported(self.import_key(self.blob_for(key)))
        self.assertSigns(key, b"as a", via=self.a)

        mark = len(self.gateway_log())
        self.assertError(self.import_key(self.blob_for(os.urandom(32)), via=self.a), 401,
                         not_authorized(self.uid_a))
        # Logged as upstream logs errors; the key in place stays.
        self.assertIn(f"!!! {not_authorized(self.uid_a)}", self.gateway_log()[mark:])
        self.assertSigns(key)
        # As a user types it.
        r = self.curl("POST", "/import_auth_key", {"key": b64(self.blob_for(os.urandom(32)))},
                      user=USER_A)
        self.assertError(r, 401, not_authorized(self.uid_a))
        self.assertSigns(key)
        # A blob that does not parse is refused before the caller is judged.
        self.assertError(self.import_key(b"\0\1", via=self.a), 500, INTERNAL)
        # The same import from root's own connection is allowed: tpmd judged the client, not
        # the gateway (which runs as root).
        new = os.urandom(32)
        self.assertImported(self.import_key(self.blob_for(new)))
        self.assertSigns(new, via=self.a)

    def test_polkit_rule_for_the_http_client(self):
        self.add_rules(f'''polkit.addRule(function(action, subject) {{
            if (action.id == "org.aziot.tpm.import-auth-key" && subject.user == "{USER_A}")
                return polkit.Result.YES;
        }});''')
        key = os.urandom(32)
        self.assertImported(self.import_key(self.blob_for(key), via=self.a))
        self.assertSigns(key)
        self.assertSigns(key, via=self.a)
        r = self.curl("POST", "/import_auth_key", {"key": b64(self.blob_for(key[::-1]))},
                      user=USER_A)
        self.assertEqual((r.status, r.body), (200, b"{}"))
        self.assertSigns(key[::-1])
        # The rule is a's: b is still refused, and the key stays.
        self.assertError(self.import_key(self.blob_for(os.urandom(32)),
                                         via=self.agent_as(USER_B)), 401,
                         not_authorized(self.uid_b))
        self.assertSigns(key[::-1])


# ---------------------------------------------------------------------------------------------
# 4. Throttling


class ThrottlingTest(TpmHttpTestCase):
    """spec §1.2 on tpmd.sock: max_requests (tpmd's configuration) simultaneous connections per
    uid; the one beyond is closed unanswered."""

    MAX_REQUESTS = 3

    def setUp(self):
        super().setUp()
        ek, srk = self.tpm_keys()
        self.keys = {"endorsement_key": b64(ek), "storage_root_key": b64(srk)}

    def served(self, conn):
        r = self.http("GET", "/get_tpm_keys", conn=conn)
        self.assertEqual(r.status, 200, r.body)
        self.assertJsonHeaders(r)
        self.assertEqual(r.json(), self.keys)

    def test_connections_per_uid(self):
        self.assertIn("Serving tpmd.sock at", self.gateway_log())
        self.check_connections_per_uid("/get_tpm_keys", root_limited=True)
        # Asked of tpmd (its MaxRequests), not read from its configuration.
        self.assertIn(f"max_requests on tpmd.sock is {self.MAX_REQUESTS} (org.aziot.Tpm1)",
                      self.gateway_log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
