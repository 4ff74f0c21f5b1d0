#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""certd.sock end to end: HTTP clients (raw sockets, curl, processes of the harness's test users)
→ aziot-gatewayd → the real aziot-certd, D-Bus activated on a private system bus with our policy,
next to the real aziot-keyd (which holds the test CA's key) and the real polkitd
(aziot_harness.Stack + aziot_stack.KeysServices and CertsServices; one stack per class).

The test CA: key pair "ca-key" made by keyd, its self-signed certificate made by the openssl
command line through our provider (as tests/bus/test_certs.py makes it), imported with PUT as "ca".
POST /certificates names it as issuer {certId: "ca", privateKeyHandle: <keyd's handle of ca-key>}.
Issued certificates are checked with `openssl verify` and python-cryptography; what certd stored
by the upstream file name rule (spec §3.6); every status, header and message against spec
§1.3/§1.4/§3.1-§3.3, and every answer against interfaces/certs.yaml.

EST issuance through the gateway: certd configured for the mock EST server of
tests/cloud/mock_est.py (HTTP Basic; its server CA preloaded and named by trusted_certs; one mock
per class), POST /certificates without an issuer for an id of method "est". Throttling (spec
§1.2): certd's max_requests, enforced by the gateway on certd.sock per client uid.

Where certd deliberately differs from upstream it is asserted as such: PUT refuses a body that is
not PEM certificates (400 'parameter "pem" has an invalid value\\ncaused by: not PEM
certificates'; upstream stores anything — docs/design.md says why).

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cloud"))
import aziot_harness  # noqa: E402
import aziot_openapi  # noqa: E402
import aziot_stack  # noqa: E402
import mock_est  # noqa: E402
from aziot_http import Connection, request_bytes  # noqa: E402
from aziot_http_suite import BUILD_DIR, GATEWAYD, USER_A, ServiceHttpTestCase, c_array, \
    gateway_source, poll  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

KEYD = os.path.join(BUILD_DIR, "services", "keys", "aziot-keyd")
CERTD = os.path.join(BUILD_DIR, "services", "certs", "aziot-certd")
PROVIDER_DIR = os.path.join(BUILD_DIR, "provider")

API = "2020-09-01"
CERTS_GROUP = "aziotcs"
KEYS_GROUP = "aziotks"
KEYS_NAME, KEYS_PATH, KEYS_IFACE = "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1"
PROVIDER = ["-provider-path", PROVIDER_DIR, "-provider", "aziot", "-provider", "default"]
NOT_FOUND = 'parameter "id" has an invalid value\ncaused by: not found'
INTERNAL = "internal error"
EST_BASIC = ("gw-device", "gw-s3cret")

OPENAPI = aziot_openapi.OpenApi(os.path.join(SOURCE_DIR, "interfaces", "certs.yaml"))


def bad_param(name, cause=None):
    text = f'parameter "{name}" has an invalid value'
    return text if cause is None else f"{text}\ncaused by: {cause}"


def not_authorized(uid, cert_id):
    return f"user {uid} is not authorized to modify the cert {cert_id}"


def upstream_file_name(cert_id):
    """Spec §3.6: the id's ASCII letters and digits, "-", hex SHA-256 of the id, ".cer"."""
    alnum = "".join(c for c in cert_id if c.isascii() and c.isalnum())
    return f"{alnum}-{hashlib.sha256(cert_id.encode()).hexdigest()}.cer"


def pem_blocks(pem):
    end = "-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate((b + end).encode())
            for b in pem.split(end) if "-----BEGIN CERTIFICATE-----" in b]


def spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def make_csr(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


class CertsHttpTestCase(ServiceHttpTestCase):
    """A stack per class: bus, polkitd, keyd and certd activatable (no idle exit) and the gateway
    on run_dir/sockets/certd.sock, mode 0660 and group aziotcs as a packaged socket unit makes
    it. A class may set MAX_REQUESTS (certd's max_requests) and add to certd's config.toml
    (certd_extra_config())."""

    GROUP = CERTS_GROUP
    RUN_DIR_PREFIX = "aziot-gwc-"
    API = API
    OPENAPI = OPENAPI
    REQUIRED = (GATEWAYD, KEYD, CERTD, PROVIDER_DIR)

    @classmethod
    def certd_extra_config(cls):
        return ""

    @classmethod
    def start_stack(cls):
        aziot_harness.ensure_group(KEYS_GROUP)
        cls.stack.start()
        cls.keys = aziot_stack.KeysServices(cls.stack, keyd_args=["--idle-timeout=0"],
                                            keyd_env={"AZIOT_LOG": "debug"})
        cls.keys.start(gateway=False)
        cls.services = aziot_stack.CertsServices(
            cls.stack, certd_args=["--idle-timeout=0"], certd_env={"AZIOT_LOG": "debug"},
            gateway_env=cls.gateway_env(), extra_config=cls.certd_extra_config())
        cls.services.start(max_requests=cls.MAX_REQUESTS)
        cls.sock = cls.services.certd_socket
        cls.gateway = cls.services.gateway
        cls.certs_dir = os.path.join(cls.services.certd_home, "certs")

    @classmethod
    def prepare_class(cls):
        conn = cls.stack.bus()
        cls.handles = {
            key_id: str(conn.call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE,
                                           "CreateKeyPairIfNotExists", "sasa{sv}",
                                           [key_id, ["ec-p256"], {}], timeout=20))
            for key_id in ("ca-key", "other-key")}
        cls.ca_pem = cls.make_ca("ca-key", "test CA")
        cls.put_from_setup("ca", cls.ca_pem)

    @classmethod
    def openssl(cls, *args, check=True):
        env = cls.stack.child_env({"OPENSSL_MODULES": PROVIDER_DIR})
        env.pop("OPENSSL_CONF", None)
        r = subprocess.run(["openssl", *args], env=env, capture_output=True, text=True,
                           timeout=30, cwd=cls.run_dir)
        if check and r.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    @classmethod
    def make_ca(cls, key_pair_id, name):
        out = os.path.join(cls.run_dir, f"{key_pair_id}.pem")
        cls.openssl("req", "-new", "-x509", *PROVIDER, "-key", f"aziot-key:pair/{key_pair_id}",
                    "-subj", f"/CN={name}", "-days", "365", "-sha256",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                    "-out", out)
        with open(out) as f:
            return f.read()

    @classmethod
    def put_from_setup(cls, cert_id, pem):
        c = Connection(cls.sock)
        try:
            c.send(request_bytes("PUT", f"/certificates/{cert_id}?api-version={API}",
                                 {"pem": pem}))
            r = c.read_response()
        finally:
            c.close()
        if r.status != 201:
            raise AssertionError(f"PUT {cert_id}: {r.status} {r.body[:300]!r}")

    # -- HTTP -------------------------------------------------------------------------------

    def ok(self, method, path, body=None, status=200, via=None):
        r = self.http(method, path, body, via=via)
        self.assertEqual(r.status, status, f"{method} {path}: {r.body[:300]!r}")
        self.assertJsonHeaders(r)
        return r.json()

    # -- checks -----------------------------------------------------------------------------

    def stored(self, cert_id):
        path = os.path.join(self.certs_dir, upstream_file_name(cert_id))
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return f.read()

    def verify(self, pem):
        """openssl verify of the first certificate of pem against the test CA."""
        d = tempfile.mkdtemp(dir=self.run_dir)
        self.addCleanup(shutil.rmtree, d, True)
        leaf, ca = os.path.join(d, "leaf.pem"), os.path.join(d, "ca.pem")
        with open(leaf, "w") as f:
            f.write(pem_blocks(pem)[0].public_bytes(serialization.Encoding.PEM).decode())
        with open(ca, "w") as f:
            f.write(self.ca_pem)
        return self.openssl("verify", "-CAfile", ca, leaf, check=False)

    def create_body(self, cert_id, csr, issuer=("ca", None)):
        body = {"certId": cert_id, "csr": csr}
        if issuer is not None:
            body["issuer"] = {"certId": issuer[0],
                              "privateKeyHandle": self.handles["ca-key"] if issuer[1] is None
                              else issuer[1]}
        return body


# ---------------------------------------------------------------------------------------------


class RoutesTest(CertsHttpTestCase):
    def test_import_get_delete_round_trip(self):
        pem = self.ca_pem + "\n" + self.ca_pem  # a chain: stored and served verbatim
        self.assertEqual(self.ok("PUT", "/certificates/round-trip", {"pem": pem}, 201),
                         {"pem": pem})
        self.assertEqual(self.stored("round-trip"), pem)
        self.assertEqual(self.ok("GET", "/certificates/round-trip"), {"pem": pem})
        # PUT replaces.
        self.assertEqual(self.ok("PUT", "/certificates/round-trip", {"pem": self.ca_pem}, 201),
                         {"pem": self.ca_pem})
        self.assertEqual(self.ok("GET", "/certificates/round-trip"), {"pem": self.ca_pem})
        self.assertNoContent(self.http("DELETE", "/certificates/round-trip"))
        self.assertIsNone(self.stored("round-trip"))
        self.assertError(self.http("GET", "/certificates/round-trip"), 400, NOT_FOUND)
        # Deleting what does not exist succeeds, as upstream.
        self.assertNoContent(self.http("DELETE", "/certificates/round-trip"))

    def test_keep_alive(self):
        """Several requests on one connection, pipelined, answered in order."""
        c = Connection(self.sock)
        self.addCleanup(c.close)
        target = f"/certificates/kept?api-version={API}"
        c.send(request_bytes("PUT", target, {"pem": self.ca_pem}) +
               request_bytes("GET", target) + request_bytes("DELETE", target) +
               request_bytes("GET", target))
        answers = [c.read_response() for _ in range(4)]
        self.assertEqual([r.status for r in answers], [201, 200, 204, 400])
        self.assertEqual(answers[1].json(), {"pem": self.ca_pem})
        self.assertEqual(answers[3].json(), {"message": NOT_FOUND})
        self.assertIsNone(self.stored("kept"))

    def test_percent_encoded_ids(self):
        self.ok("PUT", "/certificates/a%20b%2Fc", {"pem": self.ca_pem}, 201)
        self.assertEqual(self.stored("a b/c"), self.ca_pem)
        self.assertEqual(self.ok("GET", "/certificates/a%20b%2Fc"), {"pem": self.ca_pem})
        self.assertNoContent(self.http("DELETE", "/certificates/a%20b%2Fc"))
        self.assertIsNone(self.stored("a b/c"))

    def test_create_with_an_explicit_issuer(self):
        key, csr = make_csr("device-1")
        answer = self.ok("POST", "/certificates", self.create_body("device-1", csr), 201)
        pem = answer["pem"]
        certs = pem_blocks(pem)
        self.assertEqual(len(certs), 2)
        leaf, chain = certs
        r = self.verify(pem)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(chain, pem_blocks(self.ca_pem)[0])
        self.assertEqual(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                         "device-1")
        self.assertEqual(leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                         "test CA")
        self.assertEqual(leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))
        self.assertEqual(self.stored("device-1"), pem)
        self.assertEqual(self.ok("GET", "/certificates/device-1"), {"pem": pem})
        # Created again: replaced by a new certificate.
        again = self.ok("POST", "/certificates", self.create_body("device-1", csr), 201)["pem"]
        self.assertNotEqual(again, pem)
        self.assertEqual(self.stored("device-1"), again)
        self.assertNoContent(self.http("DELETE", "/certificates/device-1"))

    def test_create_without_an_issuer(self):
        _, csr = make_csr("lonely")
        # No issuer and no [cert_issuance] for the id: upstream's 500.
        self.assertError(self.http("POST", "/certificates", self.create_body("lonely", csr, None)),
                         500, INTERNAL)
        self.assertError(self.http("POST", "/certificates",
                                   dict(self.create_body("lonely", csr, None), issuer=None)),
                         500, INTERNAL)
        self.assertIsNone(self.stored("lonely"))

    def test_curl_as_a_user_would(self):
        _, csr = make_csr("curl-1")
        r = self.curl("POST", "/certificates", self.create_body("curl-1", csr))
        self.assertEqual(r.status, 201, r.body)
        pem = r.json()["pem"]
        self.assertEqual(self.verify(pem).returncode, 0)
        r = self.curl("GET", "/certificates/curl-1")
        self.assertEqual((r.status, r.json()), (200, {"pem": pem}))
        r = self.curl("DELETE", "/certificates/curl-1")
        self.assertEqual((r.status, r.body), (204, b""))
        self.assertIsNone(self.stored("curl-1"))


class InterfaceDocumentTest(unittest.TestCase):
    def test_document_lists_every_route_of_the_table(self):
        table = c_array(gateway_source("certs-routes.c"), "certs_routes")
        routes = {(m, p.replace("*", "{certId}"))
                  for m, p in re.findall(r'HTTP_(\w+), "([^"]+)"', table)}
        documented = set(OPENAPI.operations)
        self.assertEqual(routes, documented)


class BadInputTest(CertsHttpTestCase):
    def test_api_version_missing_or_unknown(self):
        self.assertError(self.http("GET", "/certificates/ca", version=None), 400,
                         "api-version not specified")
        for version in ("2021-05-01", "2020-09-02", ""):
            with self.subTest(version=version):
                self.assertError(self.http("GET", "/certificates/ca", version=version), 400,
                                 f'invalid api-version "{version}"')
        # The last one wins.
        r = self.http("GET", "/certificates/ca?api-version=2021-05-01")
        self.assertEqual(r.status, 200, r.body)
        self.assertError(self.http("GET", f"/certificates/ca?api-version={API}",
                                   version="2021-05-01"), 400, 'invalid api-version "2021-05-01"')

    def test_unknown_routes_and_methods(self):
        for path in ("/certificate", "/certificates/", "/certificates/a/b", "/", "/key/ca",
                     "/certificates/%FF"):
            with self.subTest(path=path):
                self.assertError(self.http("GET", path), 404, "not found")
        for method, path in (("GET", "/certificates"), ("DELETE", "/certificates"),
                             ("PUT", "/certificates"), ("POST", "/certificates/ca"),
                             ("PATCH", "/certificates/ca"), ("OPTIONS", "/certificates")):
            with self.subTest(method=method, path=path):
                body = {"pem": self.ca_pem} if method == "PUT" else None
                self.assertError(self.http(method, path, body), 400, "method not allowed")
        self.assertEqual(self.stored("ca"), self.ca_pem)

    def test_missing_and_mistyped_fields(self):
        _, csr = make_csr("x")
        cases = [
            ("{}", "missing field `certId` at line 1 column 2"),
            ('{"certId": "x"}', "missing field `csr` at line 1 column 15"),
            ('{"csr": "c"}', "missing field `certId` at line 1 column 12"),
            ('{"certId": 1, "csr": "c"}',
             "invalid type: integer `1`, expected a string at line 1 column 12"),
            ('{"certId": "x", "csr": "c", "issuer": "ca"}',
             'invalid type: string "ca", expected struct Issuer at line 1 column 42'),
            ('{"certId": "x", "csr": "c", "issuer": {"certId": "ca"}}',
             "missing field `privateKeyHandle` at line 1 column 54"),
            ('{"certId": "x", "csr": "c", "issuer": {"privateKeyHandle": "h"}}',
             "missing field `certId` at line 1 column 63"),
            ('{"certId": "x", "csr": "c", "issuer": {"certId": "ca", "privateKeyHandle": 2}}',
             "invalid type: integer `2`, expected a string at line 1 column 76"),
            ('{"certId": "x", "csr": "c", "certId": "y"}',
             "duplicate field `certId` at line 1 column 36"),
            ("[", "EOF while parsing a list at line 1 column 1"),
        ]
        for text, message in cases:
            with self.subTest(body=text):
                self.assertError(self.http("POST", "/certificates", text.encode()), 422, message)
        # Unknown members are ignored, in the issuer too.
        body = self.create_body("extra", csr)
        body["extra"] = [1]
        body["issuer"]["more"] = {}
        self.ok("POST", "/certificates", body, 201)
        self.assertNoContent(self.http("DELETE", "/certificates/extra"))
        for text, message in [("{}", "missing field `pem` at line 1 column 2"),
                              ('{"pem": null}',
                               "invalid type: null, expected a string at line 1 column 12"),
                              ("", "EOF while parsing a value at line 1 column 0")]:
            with self.subTest(put=text):
                self.assertError(self.http("PUT", "/certificates/x", text.encode()), 422, message)
        self.assertError(self.http("POST", "/certificates"), 400, "missing request body")
        self.assertError(self.http("POST", "/certificates",
                                   json.dumps(self.create_body("x", csr)).encode(),
                                   content_type="text/plain"), 400, "missing request body")
        self.assertError(self.http("PUT", "/certificates/x",
                                   json.dumps({"pem": self.ca_pem}).encode(),
                                   content_type="text/plain"), 415,
                         "request body must be application/json")
        self.assertIsNone(self.stored("x"))

    def test_bad_csr(self):
        _, csr = make_csr("bad")
        lines = csr.splitlines()
        body_lines = lines[1:-1]
        bad_base64 = "\n".join([lines[0], "!!!!" + body_lines[0][4:], *body_lines[1:],
                                lines[-1]]) + "\n"
        # The self-signature does not verify: the last byte of the signature flipped.
        der = bytearray(x509.load_pem_x509_csr(csr.encode()).public_bytes(
            serialization.Encoding.DER))
        der[-1] ^= 1
        bad_signature = "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(
            re.findall(".{1,64}", base64.b64encode(bytes(der)).decode())) + \
            "\n-----END CERTIFICATE REQUEST-----\n"
        cases = {
            "bad signature": bad_signature,
            "not PEM": "hello",
            "empty": "",
            "bad base64": bad_base64,
            "truncated": "\n".join(lines[:3] + lines[-1:]) + "\n",
            "a certificate": self.ca_pem,
            "base64 of DER, not PEM": "".join(body_lines),
        }
        for name, text in cases.items():
            with self.subTest(csr=name):
                self.assertError(self.http("POST", "/certificates", self.create_body("bad", text)),
                                 400, bad_param("csr"))
        self.assertIsNone(self.stored("bad"))

    def test_bad_issuer(self):
        _, csr = make_csr("bi")
        self.assertError(self.http("POST", "/certificates",
                                   self.create_body("bi", csr, ("no-such-ca", None))),
                         400, bad_param("issuer.certId", "not found"))
        self.assertError(self.http("POST", "/certificates",
                                   self.create_body("bi", csr, ("ca", "forged"))),
                         400, bad_param("issuer.privateKeyHandle", "invalid handle"))
        self.assertError(self.http("POST", "/certificates",
                                   self.create_body("bi", csr, ("ca", ""))),
                         400, bad_param("issuer.privateKeyHandle"))
        r = self.http("POST", "/certificates",
                      self.create_body("bi", csr, ("ca", self.handles["other-key"])))
        self.assertEqual(r.status, 400, r.body)
        self.assertTrue(r.json()["message"].startswith(bad_param("issuer")), r.body)
        self.assertIsNone(self.stored("bi"))

    def test_bad_pem_on_import(self):
        for name, text in {"not PEM": "hello", "empty": "",
                           "a private key": "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                            "-----END PRIVATE KEY-----\n"}.items():
            with self.subTest(pem=name):
                self.assertError(self.http("PUT", "/certificates/bad-pem", {"pem": text}),
                                 400, bad_param("pem", "not PEM certificates"))
        self.assertIsNone(self.stored("bad-pem"))

    def test_nul_in_arguments(self):
        _, csr = make_csr("n")
        self.assertError(self.http("GET", "/certificates/a%00b"), 400, bad_param("id"))
        self.assertError(self.http("DELETE", "/certificates/a%00b"), 400, bad_param("id"))
        self.assertError(self.http("PUT", "/certificates/a%00b", {"pem": self.ca_pem}), 400,
                         bad_param("id"))
        self.assertError(self.http("PUT", "/certificates/n", {"pem": self.ca_pem + "\0"}), 400,
                         bad_param("pem"))
        self.assertError(self.http("POST", "/certificates", self.create_body("a\0b", csr)), 400,
                         bad_param("id"))
        self.assertError(self.http("POST", "/certificates", self.create_body("n", csr + "\0")),
                         400, bad_param("csr"))
        self.assertError(self.http("POST", "/certificates",
                                   self.create_body("n", csr, ("c\0a", None))), 400,
                         bad_param("issuer.certId"))
        self.assertError(self.http("POST", "/certificates",
                                   self.create_body("n", csr, ("ca", "h\0"))), 400,
                         bad_param("issuer.privateKeyHandle"))
        self.assertIsNone(self.stored("n"))


class AuthorizationTest(CertsHttpTestCase):
    def setUp(self):
        self.a = self.agent_as(USER_A)
        self.addCleanup(self.no_principals)

    def no_principals(self):
        """Removes the principals and waits until certd has reloaded (a DELETE of an id that
        does not exist is 204 when allowed, 401 when not)."""
        self.services.write_principals([])
        poll(lambda: self.http("DELETE", "/certificates/app-probe", via=self.a).status == 401,
             "certd to drop the principals")

    def test_the_socket_is_for_its_group(self):
        self.assertOutsiderRefused()

    def test_get_is_open_and_changes_are_refused(self):
        self.assertEqual(self.ok("GET", "/certificates/ca", via=self.a), {"pem": self.ca_pem})
        self.assertError(self.http("GET", "/certificates/nope", via=self.a), 400, NOT_FOUND)
        _, csr = make_csr("app-1")
        for method, path, body, cert_id in [
                ("PUT", "/certificates/app-1", {"pem": self.ca_pem}, "app-1"),
                ("DELETE", "/certificates/ca", None, "ca"),
                ("POST", "/certificates", self.create_body("app-1", csr), "app-1")]:
            with self.subTest(method=method):
                self.assertError(self.http(method, path, body, via=self.a), 401,
                                 not_authorized(self.uid_a, cert_id))
        self.assertIsNone(self.stored("app-1"))
        self.assertEqual(self.stored("ca"), self.ca_pem)
        # As a user types it; logged as upstream logs it.
        r = self.curl("DELETE", "/certificates/ca", user=USER_A)
        self.assertError(r, 401, not_authorized(self.uid_a, "ca"))
        self.assertIn(f"!!! {not_authorized(self.uid_a, 'ca')}", self.gateway_log())
        # The same from root's own connection is allowed: certd judged the client, not the
        # gateway (which runs as root).
        self.ok("PUT", "/certificates/app-1", {"pem": self.ca_pem}, 201)
        self.assertNoContent(self.http("DELETE", "/certificates/app-1"))

    def test_a_principal_may_change_its_certificates(self):
        self.services.write_principals([(self.uid_a, ["app-*"])])
        poll(lambda: self.http("PUT", "/certificates/app-2", {"pem": self.ca_pem},
                               via=self.a).status == 201, "certd to load the principal")
        self.assertEqual(self.stored("app-2"), self.ca_pem)
        self.assertNoContent(self.http("DELETE", "/certificates/app-2", via=self.a))
        self.assertIsNone(self.stored("app-2"))
        _, csr = make_csr("app-3")
        # The issuer's id must be the principal's too.
        self.assertError(self.http("POST", "/certificates", self.create_body("app-3", csr),
                                   via=self.a), 401, not_authorized(self.uid_a, "ca"))
        self.services.write_principals([(self.uid_a, ["app-*", "ca"])])
        pem = poll(lambda: (lambda r: r.status == 201 and r.json()["pem"])(
            self.http("POST", "/certificates", self.create_body("app-3", csr), via=self.a)),
            "certd to load the new principal")
        self.assertEqual(self.verify(pem).returncode, 0)
        self.assertNoContent(self.http("DELETE", "/certificates/app-3", via=self.a))
        # Other ids stay refused.
        self.assertError(self.http("PUT", "/certificates/other", {"pem": self.ca_pem},
                                   via=self.a), 401, not_authorized(self.uid_a, "other"))


class EstHttpTestCase(CertsHttpTestCase):
    """certd issues "device" by EST: the mock EST server (Basic auth EST_BASIC required) is started
    before the stack; certd is configured with EST_PASSWORD."""

    EST_PASSWORD = EST_BASIC[1]

    @classmethod
    def setUpClass(cls):
        cls.est_dir = tempfile.mkdtemp(prefix="aziot-gwc-est-", dir="/tmp")
        os.chmod(cls.est_dir, 0o700)
        cls.est = mock_est.MockEst(cls.est_dir, basic=EST_BASIC)
        cls.est.start()
        try:
            super().setUpClass()
        except BaseException:
            cls.est.stop()
            shutil.rmtree(cls.est_dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.est.stop()
        shutil.rmtree(cls.est_dir, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def certd_extra_config(cls):
        return "\n".join([
            "[preloaded_certs]",
            f'est-server-ca = "file://{cls.est.server_ca_path}"',
            "",
            "[cert_issuance.est]",
            'trusted_certs = ["est-server-ca"]',
            f'username = "{EST_BASIC[0]}"',
            f'password = "{cls.EST_PASSWORD}"',
            "",
            "[cert_issuance.est.urls]",
            f'default = "{cls.est.url}"',
            "",
            "[cert_issuance.device]",
            'method = "est"',
            ""])

    def setUp(self):
        self.mark = len(self.est.requests)

    def est_requests(self, op=None):
        """What reached the mock since setUp(): HTTP requests and refused connections alike
        (op: only the HTTP requests of that operation)."""
        return [r for r in self.est.requests[self.mark:] if op is None or r.op == op]

    def verify_chain(self, pem):
        """openssl verify of the first certificate of pem against the certificates after it."""
        blocks = pem_blocks(pem)
        d = tempfile.mkdtemp(dir=self.run_dir)
        self.addCleanup(shutil.rmtree, d, True)
        leaf, chain = os.path.join(d, "leaf.pem"), os.path.join(d, "chain.pem")
        with open(leaf, "wb") as f:
            f.write(blocks[0].public_bytes(serialization.Encoding.PEM))
        with open(chain, "wb") as f:
            for b in blocks[1:]:
                f.write(b.public_bytes(serialization.Encoding.PEM))
        return self.openssl("verify", "-CAfile", chain, leaf, check=False)


class EstHttpTest(EstHttpTestCase):
    def test_create_by_est(self):
        key, csr = make_csr("est-device-1")
        pem = self.ok("POST", "/certificates", self.create_body("device", csr, None), 201)["pem"]
        blocks = pem_blocks(pem)
        self.assertGreaterEqual(len(blocks), 2, pem)
        leaf = blocks[0]
        self.assertEqual(spki(leaf.public_key()), spki(key.public_key()))
        self.assertEqual(leaf.subject.rfc4514_string(), "CN=est-device-1")
        r = self.verify_chain(pem)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # The chain after the leaf is the mock's /cacerts, not our test CA.
        with open(self.est.est_ca_path) as f:
            self.assertEqual(blocks[1:], pem_blocks(f.read()))
        self.assertNotIn(pem_blocks(self.ca_pem)[0], blocks)
        # Issued by the mock, for this CSR, with the configured Basic credentials.
        enroll, = self.est_requests("simpleenroll")
        self.assertEqual((enroll.status, enroll.username, enroll.password_ok),
                         (200, EST_BASIC[0], True))
        self.assertEqual(spki(enroll.csr.public_key()), spki(key.public_key()))
        self.assertEqual(enroll.issued, leaf)
        self.assertEqual(self.stored("device"), pem)
        self.assertEqual(self.ok("GET", "/certificates/device"), {"pem": pem})
        # As a user types it: the same.
        r = self.curl("GET", "/certificates/device")
        self.assertEqual((r.status, r.json()), (200, {"pem": pem}))

    def test_unprivileged_user_reaches_no_est_server(self):
        before = self.stored("device")
        _, csr = make_csr("est-device-2")
        a = self.agent_as(USER_A)
        self.assertError(self.http("POST", "/certificates", self.create_body("device", csr, None),
                                   via=a), 401, not_authorized(self.uid_a, "device"))
        r = self.curl("POST", "/certificates", self.create_body("device", csr, None), user=USER_A)
        self.assertError(r, 401, not_authorized(self.uid_a, "device"))
        self.assertEqual(self.est_requests(), [])
        self.assertEqual(self.stored("device"), before)
        # The same request from root does reach the server: the refusal above was the caller's.
        self.ok("POST", "/certificates", self.create_body("device", csr, None), 201)
        self.assertEqual(len(self.est_requests("simpleenroll")), 1)


class EstWrongPasswordHttpTest(EstHttpTestCase):
    EST_PASSWORD = "not-" + EST_BASIC[1]

    def test_wrong_password_is_an_internal_error(self):
        _, csr = make_csr("est-device-3")
        r = self.http("POST", "/certificates", self.create_body("device", csr, None))
        self.assertError(r, 500, INTERNAL)
        self.assertEqual(r.body, b'{"message":"internal error"}')
        # certd did ask, with the configured (wrong) password, and was refused.
        enrolls = self.est_requests("simpleenroll")
        self.assertEqual([(e.status, e.username, e.password_ok) for e in enrolls],
                         [(401, EST_BASIC[0], False)])
        self.assertIsNone(self.stored("device"))
        self.assertError(self.http("GET", "/certificates/device"), 400, NOT_FOUND)


class ThrottlingTest(CertsHttpTestCase):
    """spec §1.2 on certd.sock: max_requests simultaneous connections per uid; the one beyond
    is closed unanswered."""

    MAX_REQUESTS = 3

    def served(self, conn):
        r = self.http("GET", "/certificates/ca", conn=conn)
        self.assertEqual(r.status, 200, r.body)
        self.assertJsonHeaders(r)
        self.assertEqual(r.json(), {"pem": self.ca_pem})

    def test_connections_per_uid(self):
        self.check_connections_per_uid("/certificates/ca")


if __name__ == "__main__":
    unittest.main(verbosity=2)
