#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""identityd.sock end to end: HTTP clients (raw sockets, curl, processes of the harness's test
users) → aziot-gatewayd → the real aziot-identityd, D-Bus activated on a private system bus with
our policy next to the real polkitd, the real aziot-keyd (the device key, identityd's master key,
the local CA's key) and aziot-certd (local identities issued by a local CA; the DPS trust bundle),
against the strict mock DPS and IoT Hub of tests/cloud (HTTPS with their own CAs, given to
identityd through SSL_CERT_FILE). One stack, one pair of mocks and one identityd per class
(aziot_harness.Stack + aziot_stack.KeysServices, CertsServices and IdentityServices).

What the gateway answers is checked independently of identityd: a device or module keyHandle by
signing a SAS token with keyd and having the mock IoT Hub verify it as the real one would; module
keys in the mock Hub against HMAC-SHA256 of the master key computed here
(cloud-protocols.md §2.3); local identities with python-cryptography against the local CA made
here; provisioning against what the mock DPS saw. Every status, header and message is checked
against spec §1.3/§1.4 and §4.1-§4.4, every answer against interfaces/identity.yaml, bodies byte
for byte in upstream's member order.

Where we deliberately differ from upstream it is asserted as such: polkit may grant what the
principals do not (org.aziot.identity.*); /trust-bundle answers what DPS gave as trust bundle,
else ""; a failed reprovisioning keeps the device identity in use.

Environment: AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR.
"""

import base64
import json
import os
import re
import sys
import time
import unittest
import urllib.parse

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cloud"))
import aziot_harness  # noqa: E402
import aziot_http_suite  # noqa: E402
import aziot_openapi  # noqa: E402
import aziot_stack  # noqa: E402
import mock_dps  # noqa: E402
import mock_hub  # noqa: E402
from aziot_http import request_bytes  # noqa: E402
from aziot_http_suite import BUILD_DIR, GATEWAYD, USER_A, USER_B, ServiceHttpTestCase, at, \
    c_array, compact, gateway_source  # noqa: E402
from aziot_identity_suite import LocalIdentityChecks, keyd_sign, local_ca_certificate  # noqa: E402
from mock_cloud import module_keys  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

KEYD = os.path.join(BUILD_DIR, "services", "keys", "aziot-keyd")
CERTD = os.path.join(BUILD_DIR, "services", "certs", "aziot-certd")
IDENTITYD = os.path.join(BUILD_DIR, "services", "identity", "aziot-identityd")
PROVIDER_DIR = os.path.join(BUILD_DIR, "provider")

API = "2020-09-01"
VERSIONS = ("2020-09-01", "2021-12-01", "2022-08-01")
PROVISIONING_VERSIONS = ("2021-12-01", "2022-08-01")
ID_GROUP = "aziotid"
CERTS_NAME, CERTS_PATH = "org.aziot.Certificates1", "/org/aziot/Certificates1"
DEVICE = "dev1"
HOSTNAME = "testhost"
DOMAIN = "example.com"
SCOPE = "0ne00000A1"
TRUST_BUNDLE_ID = "aziot-dps-trust-bundle"
BODY_TIMEOUT_MS = 1000  # the gateway's deadline for a request's body (5 s upstream)
CALL_TIMEOUT = 30
POLL_TIMEOUT = 30
AUTH_ERROR = "authorization error"
NO_DEVICE = "device identity not found"
NO_MODULE = "module identity not found"
INTERNAL = "internal error"
MISSING_TYPE = 'parameter "type" has an invalid value\ncaused by: missing parameter'
BAD_MODULE_ID = 'parameter "module_id" has an invalid value'
BAD_PAYLOAD = 'parameter "provisioning.payload" has an invalid value'
LOCAL_CA_ISSUED = ("loc", "locsrv", "adhoc", "adhoc2")


def invalid_type(value):
    return f'parameter "type" has an invalid value\ncaused by: invalid type: {value}'


def hub_not_found(module_id):
    return f"Hub client error\ncaused by: module {module_id} not found"


def poll(predicate, what, timeout=POLL_TIMEOUT):
    return aziot_http_suite.poll(predicate, what, timeout, interval=0.05)


def sas_quote(s):
    return urllib.parse.quote(s, safe="")


def toml_string(s):
    return json.dumps(s)


class OpenApi(aziot_openapi.OpenApi):
    """aziot_openapi.OpenApi and arrays (type array, items): the module list."""

    KEYWORDS = aziot_openapi.OpenApi.KEYWORDS | {"items"}

    def _check(self, schema, value, where, out, closed):
        resolved = self.resolve(schema)
        if resolved.get("type") != "array":
            super()._check(schema, value, where, out, closed)
            return
        unsupported = set(resolved) - self.KEYWORDS
        if unsupported:
            raise ValueError(f"{where}: keywords {sorted(unsupported)} are not supported")
        if value is None and resolved.get("nullable"):
            return
        if not isinstance(value, list):
            out.append(f"{where}: {value!r} is not an array")
            return
        for i, item in enumerate(value):
            self._check(resolved["items"], item, f"{where}[{i}]", out, closed)


OPENAPI = OpenApi(os.path.join(SOURCE_DIR, "interfaces", "identity.yaml"))


class IdentityHttpTestCase(ServiceHttpTestCase, LocalIdentityChecks):
    """A stack per class: bus, polkitd, keyd and certd activatable (no idle exit), the mock IoT
    Hub (with a mock DPS when DPS is set), identityd activatable with the configuration of
    identity_config() and the gateway on run_dir/sockets/identityd.sock, mode 0660 and group
    aziotid as a packaged socket unit makes it. keyd holds the device key ("device-id"), the
    master key and the local CA's key; certd issues local identities for LOCAL_CA_ISSUED with
    that CA."""

    GROUP = ID_GROUP
    RUN_DIR_PREFIX = "aziot-idhttp-"
    API = API
    OPENAPI = OPENAPI
    REQUIRED = (GATEWAYD, KEYD, CERTD, IDENTITYD, PROVIDER_DIR)
    NOT_BUILT = AssertionError
    BODY_TIMEOUT_MS = BODY_TIMEOUT_MS
    CALL_TIMEOUT = CURL_MAX_TIME = CALL_TIMEOUT
    BYTE_EXACT = True
    DPS = False
    STATES = ("provisioned",)
    hub = dps = None

    @classmethod
    def identity_config(cls):
        raise NotImplementedError

    @classmethod
    def start_stack(cls):
        cls.hub = mock_hub.MockHub(os.path.join(cls.run_dir, "hub"))
        cls.hub.start()
        mocks = [cls.hub]
        if cls.DPS:
            cls.dps = mock_dps.MockDps(os.path.join(cls.run_dir, "dps"), id_scope=SCOPE,
                                       hub=cls.hub)
            cls.dps.start()
            mocks.append(cls.dps)
            device_key = cls.dps.add_symmetric_key(DEVICE).primary_key
        else:
            device_key = cls.hub.registry.add_device(DEVICE).primary_key
        cls.ca_bundle = os.path.join(cls.run_dir, "cloud-ca.pem")
        with open(cls.ca_bundle, "w") as out:
            for mock in mocks:
                with open(mock.server_ca_path) as f:
                    out.write(f.read())
        cls.master_key = os.urandom(32)
        cls.ca_key = ec.generate_private_key(ec.SECP256R1())
        cls.stack.start()
        cls.start_services(device_key)

    @classmethod
    def start_services(cls, device_key):
        secrets_dir = os.path.join(cls.run_dir, "secrets")
        os.makedirs(secrets_dir, mode=0o700)
        preloaded = []
        for key_id, data in (("device-id", base64.b64decode(device_key)),
                             ("aziot_identityd_master_id", cls.master_key),
                             ("local-ca", cls.ca_key.private_bytes(
                                 serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))):
            path = os.path.join(secrets_dir, f"{key_id}.key")
            with open(path, "wb") as f:
                f.write(data)
            preloaded.append(f'{key_id} = "file://{path}"')
        cls.keys = aziot_stack.KeysServices(
            cls.stack, keyd_args=["--idle-timeout=0"], keyd_env={"AZIOT_LOG": "debug"},
            extra_config="[preloaded_keys]\n" + "\n".join(preloaded))
        cls.keys.start(gateway=False)
        cls.certs = aziot_stack.CertsServices(
            cls.stack, certd_args=["--idle-timeout=0"], certd_env={"AZIOT_LOG": "debug"},
            extra_config='[cert_issuance.local_ca]\ncert = "local-ca"\npk = "local-ca"\n\n' +
            "".join(f'[cert_issuance.{i}]\nmethod = "local_ca"\n\n' for i in LOCAL_CA_ISSUED))
        cls.certs.start(gateway=False)
        cls.ca_cert = local_ca_certificate(cls.ca_key)
        cls.bus().call_blocking(CERTS_NAME, CERTS_PATH, CERTS_NAME, "ImportCertificate",
                                "ssa{sv}", ["local-ca", cls.ca_cert.public_bytes(
                                    serialization.Encoding.PEM).decode(), {}],
                                timeout=CALL_TIMEOUT)
        cls.identity = aziot_stack.IdentityServices(
            cls.stack, cls.identity_config(), identityd_env={"AZIOT_LOG": "debug"},
            gateway_env=cls.gateway_env(), ssl_cert_file=cls.ca_bundle)
        cls.identity.start()
        cls.sock = cls.identity.identityd_socket
        cls.gateway = cls.identity.gateway
        cls.home = cls.identity.identityd_home
        cls.identity.wait_state(*cls.STATES, timeout=60)

    @classmethod
    def bus(cls):
        return cls.stack.bus()

    @classmethod
    def stop_class(cls):
        super().stop_class()
        if cls.dps is not None:
            cls.dps.stop()
        if cls.hub is not None:
            cls.hub.stop()

    def setUp(self):
        for mock in (self.hub, self.dps):
            if mock is not None:
                mock.clear_faults()
                mock.rewrite = None
                mock.up()
                mock.clear_log()

    def tearDown(self):
        self.remove_test_rules()
        for mock in (self.hub, self.dps):
            if mock is not None:
                mock.clear_faults()
                mock.rewrite = None
                mock.up()
        self.assertTrue(self.gateway.alive(), "the gateway died")

    # -- HTTP -------------------------------------------------------------------------------

    def assertErrorStartsWith(self, r, status, prefix):
        self.assertEqual(r.status, status, r.body)
        self.assertJsonHeaders(r)
        self.assertEqual(list(r.json()), ["message"])
        self.assertTrue(r.json()["message"].startswith(prefix), r.body)
        return r.json()["message"]

    # -- identityd --------------------------------------------------------------------------

    def identityd_log(self):
        return aziot_harness._read_text(
            os.path.join(self.run_dir, "logs", f"{aziot_stack.IDENTITY_BUS_NAME}.log"))

    def reloaded(self, change):
        """Runs change() (which rewrites identityd's configuration) and waits until identityd
        has reloaded it."""
        before = self.identityd_log().count("Configuration reloaded")
        change()
        poll(lambda: self.identityd_log().count("Configuration reloaded") > before,
             "identityd to reload its configuration")

    def set_principals(self, text):
        self.reloaded(lambda: self.identity.write_principals(text))

    def sas_token(self, key_handle, resource):
        """A SAS token for resource as a client makes it (spec §4.8), signed by keyd with the
        handle identityd gave."""
        sr = sas_quote(resource)
        se = str(int(time.time()) + 600)
        sig = keyd_sign(self.bus(), key_handle, f"{sr}\n{se}".encode())
        return (f"SharedAccessSignature sr={sr}&sig="
                f"{sas_quote(base64.b64encode(sig).decode())}&se={se}")

    def assertDeviceHandleWorks(self, key_handle):
        token = self.sas_token(key_handle, f"{self.hub.hostname}/devices/{DEVICE}")
        verdict = self.hub.verify_token(token, DEVICE)
        self.assertTrue(verdict, verdict.reason)

    def assertModuleHandleWorks(self, key_handle, module_id):
        token = self.sas_token(key_handle,
                               f"{self.hub.hostname}/devices/{DEVICE}/modules/{module_id}")
        verdict = self.hub.verify_token(token, DEVICE, module_id)
        self.assertTrue(verdict, verdict.reason)

    def hub_module(self, module_id):
        return self.hub.registry.module(DEVICE, module_id)

    # -- identities -------------------------------------------------------------------------

    def device_identity(self, key_handle):
        return {"type": "aziot",
                "spec": {"hubName": self.hub.hostname, "gatewayHost": self.hub.hostname,
                         "deviceId": DEVICE, "auth": {"type": "sas", "keyHandle": key_handle}}}

    def module_identity(self, module_id, key_handle=None):
        spec = {"hubName": self.hub.hostname, "gatewayHost": self.hub.hostname,
                "deviceId": DEVICE, "moduleId": module_id,
                "genId": self.hub_module(module_id).generation_id}
        if key_handle is not None:
            spec["auth"] = {"type": "sas", "keyHandle": key_handle}
        return {"type": "aziot", "spec": spec}

    def assertDeviceIdentity(self, r):
        """The device identity, byte for byte; its key handle signs what IoT Hub accepts."""
        self.assertEqual(r.status, 200, r.body)
        handle = r.json()["spec"]["auth"]["keyHandle"]
        self.assertOk(r, self.device_identity(handle))
        self.assertDeviceHandleWorks(handle)

    def assertModuleIdentity(self, r, module_id):
        """A module identity, byte for byte; its keys in IoT Hub are derived from the master key
        and its key handle signs what IoT Hub accepts for the module."""
        self.assertEqual(r.status, 200, r.body)
        handle = r.json()["spec"]["auth"]["keyHandle"]
        self.assertOk(r, self.module_identity(module_id, handle))
        mod = self.hub_module(module_id)
        self.assertEqual(mod.keys, module_keys(self.master_key, module_id, mod.generation_id))
        self.assertModuleHandleWorks(handle, module_id)

    def assertLocalIdentity(self, r, module_id, server):
        self.assertEqual(r.status, 200, r.body)
        auth = r.json()["spec"]["auth"]
        self.assertOk(r, {"type": "local", "spec": {"moduleId": module_id, "auth": {
            "privateKey": auth["privateKey"], "certificate": auth["certificate"],
            "expiration": auth["expiration"]}}})
        key, leaf = self.assertIssuedByLocalCa(auth["privateKey"], auth["certificate"],
                                               f"{module_id}.{HOSTNAME}.{DOMAIN}", server)
        not_after = getattr(leaf, "not_valid_after_utc", None) or leaf.not_valid_after
        self.assertEqual(auth["expiration"], not_after.strftime("%Y-%m-%dT%H:%M:%S") + "+00:00")
        return key


def manual_config(hub_hostname, principals=""):
    return (f'hostname = "{HOSTNAME}"\ncloud_retries = 0\n\n'
            '[provisioning]\nsource = "manual"\n'
            f"iothub_hostname = {toml_string(hub_hostname)}\n"
            f'device_id = "{DEVICE}"\n\n'
            '[provisioning.authentication]\nmethod = "sas"\ndevice_id_pk = "device-id"\n\n'
            f'[localid]\ndomain = "{DOMAIN}"\n\n' + principals)


def principal(uid, name, idtypes=None, localid=None):
    text = f'[[principal]]\nuid = {int(uid)}\nname = "{name}"\n'
    if idtypes is not None:
        text += "idtype = [" + ", ".join(f'"{t}"' for t in idtypes) + "]\n"
    if localid is not None:
        text += f'localid = {{ type = "x509", attributes = "{localid}" }}\n'
    return text + "\n"


# ---------------------------------------------------------------------------------------------
# 1. The device, provisioned by DPS


class DeviceTest(IdentityHttpTestCase):
    """DPS symmetric-key provisioning with a custom payload; no principals (test users are
    unknown callers unless a test makes them principals)."""

    DPS = True

    @classmethod
    def dps_config(cls, endpoint, payload=True, symmetric_key="device-id"):
        text = (f'hostname = "{HOSTNAME}"\ncloud_retries = 0\n\n'
                f'[provisioning]\nsource = "dps"\nglobal_endpoint = "{endpoint}"\n'
                f'scope_id = "{SCOPE}"\n')
        if payload:
            text += f'payload = {{ uri = "file://{cls.payload_path}" }}\n'
        return (text + '\n[provisioning.attestation]\nmethod = "symmetric_key"\n'
                f'registration_id = "{DEVICE}"\nsymmetric_key = "{symmetric_key}"\n')

    @classmethod
    def identity_config(cls):
        cls.payload_path = os.path.join(cls.run_dir, "payload.json")
        with open(cls.payload_path, "w") as f:
            f.write('{"site": "north", "rack": [1, 2]}')
        cls.endpoint = f"{cls.dps.url}/"
        return cls.dps_config(cls.endpoint)

    def write_payload(self, text):
        with open(self.payload_path, "w") as f:
            f.write(text)

    def restore_config(self):
        self.write_payload('{"site": "north", "rack": [1, 2]}')
        self.reloaded(lambda: self.identity.write_config(self.dps_config(self.endpoint)))

    def test_caller_identity_is_the_device_for_root(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                self.assertDeviceIdentity(self.http("GET", "/identities/identity",
                                                    version=version))
        # As a user types it (curl sends Host: identityd.sock, which is ignored).
        self.assertDeviceIdentity(self.curl("GET", "/identities/identity"))

    def test_device_identity(self):
        for version in VERSIONS:
            for body in ({"type": "aziot"}, {"type": "anything", "more": [1]}, {"type": ""}):
                with self.subTest(version=version, body=body):
                    self.assertDeviceIdentity(self.http("POST", "/identities/device", body,
                                                        version=version))
        self.assertDeviceIdentity(self.curl("POST", "/identities/device", {"type": "aziot"}))
        # Provisioned by DPS with the device key, as the mock saw it: SAS with skn=registration
        # and the payload, the device created in the Hub by the assignment.
        register = self.dps.http_requests("register")
        self.assertEqual(register, [])  # nothing asked DPS again
        self.assertIsNotNone(self.hub.registry.device(DEVICE))
        self.assertEqual(self.dps.registration(DEVICE)["assignedHub"], self.hub.hostname)
        self.assertEqual(self.dps.registration(DEVICE)["payload"],
                         {"site": "north", "rack": [1, 2]})

    def test_provisioning_info(self):
        expected = {"source": "dps", "auth": "symmetric_key", "endpoint": self.endpoint,
                    "scope_id": SCOPE, "registration_id": DEVICE,
                    "payload": {"site": "north", "rack": [1, 2]}}
        for version in PROVISIONING_VERSIONS:
            with self.subTest(version=version):
                self.assertOk(self.http("GET", "/identities/provisioning", version=version),
                              expected)
        # A known api-version without the route: no route.
        self.assertError(self.http("GET", "/identities/provisioning", version="2020-09-01"),
                         404, "not found")
        # Needs no authorization: an unknown caller reads it too.
        b = self.agent_as(USER_B)
        self.assertOk(self.http("GET", "/identities/provisioning", version="2021-12-01", via=b),
                      expected)
        r = self.curl("GET", "/identities/provisioning", user=USER_B, version="2022-08-01")
        self.assertOk(r, expected)

    def test_provisioning_payloads(self):
        """The payload file is read for every request: any JSON, as it is; else 400."""
        self.addCleanup(self.restore_config)
        for text, value in (("[1, \"two\", {\"3\": null}]", [1, "two", {"3": None}]),
                            ('"text"', "text"), ("42", 42), ("true", True), ("null", None),
                            ('{"nested": {"a": [1.5, -2]}}', {"nested": {"a": [1.5, -2]}})):
            with self.subTest(payload=text):
                self.write_payload(text)
                r = self.http("GET", "/identities/provisioning", version="2021-12-01")
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json()["payload"], value)
                self.assertEqual(list(r.json()), ["source", "auth", "endpoint", "scope_id",
                                                  "registration_id", "payload"])
        self.write_payload("{not json")
        self.assertError(self.http("GET", "/identities/provisioning", version="2021-12-01"),
                         400, BAD_PAYLOAD)
        os.unlink(self.payload_path)
        self.assertError(self.http("GET", "/identities/provisioning", version="2021-12-01"),
                         400, BAD_PAYLOAD)
        # Without a payload in the configuration: null.
        self.reloaded(lambda: self.identity.write_config(
            self.dps_config(self.endpoint, payload=False)))
        self.assertOk(self.http("GET", "/identities/provisioning", version="2022-08-01"),
                      {"source": "dps", "auth": "symmetric_key", "endpoint": self.endpoint,
                       "scope_id": SCOPE, "registration_id": DEVICE, "payload": None})

    def test_provisioning_empty_payload_file(self):
        """An empty payload file is no JSON either (upstream: serde's EOF error): 400."""
        self.addCleanup(self.write_payload, '{"site": "north", "rack": [1, 2]}')
        self.write_payload("")
        self.assertError(self.http("GET", "/identities/provisioning", version="2021-12-01"),
                         400, BAD_PAYLOAD)

    def test_provisioning_endpoint_is_normalised(self):
        """upstream parses global_endpoint as a URL and answers it normalised (spec §4.3): an
        https URL without a path gets "/"."""
        self.addCleanup(self.restore_config)
        self.reloaded(lambda: self.identity.write_config(self.dps_config(self.dps.url)))
        r = self.http("GET", "/identities/provisioning", version="2021-12-01")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["endpoint"], f"{self.dps.url}/")

    def test_reprovision(self):
        before = self.device_handle()
        for body, content_type in ((None, "application/json"), ({"type": "aziot"}, None),
                                   (b"not json at all", "text/plain")):
            with self.subTest(body=body):
                self.dps.clear_log()
                self.assertNoContent(self.http("POST", "/identities/device/reprovision", body,
                                               content_type=content_type))
                # DPS was asked again, with the device key.
                register = self.dps.http_requests("register")
                self.assertEqual([r.status for r in register], [202])
                self.assertIn("skn=registration", register[0].headers["authorization"])
                self.assertEqual(json.loads(register[0].body)["payload"],
                                 {"site": "north", "rack": [1, 2]})
                self.assertEqual(self.identity.state(), "provisioned")
        self.assertDeviceHandleWorks(before)
        self.assertDeviceIdentity(self.http("POST", "/identities/device", {"type": "aziot"}))

    def test_reprovision_failures(self):
        """DPS down or refusing: 404 "DPS client error"; the device in use stays in use (our
        departure: upstream forgets it)."""
        self.dps.down()
        message = self.assertErrorStartsWith(
            self.http("POST", "/identities/device/reprovision"), 404,
            "DPS client error\ncaused by: ")
        self.assertIn(f"!!! {message.splitlines()[0]}", self.gateway_log())
        self.assertDeviceIdentity(self.http("GET", "/identities/identity"))
        self.dps.up()
        self.dps.fail(401, message="Unauthorized", count=1, routes=["register"])
        self.assertErrorStartsWith(self.http("POST", "/identities/device/reprovision"), 404,
                                   "DPS client error\ncaused by: ")
        self.assertDeviceIdentity(self.http("POST", "/identities/device", {"type": "aziot"}))
        with open(os.path.join(self.home, "device_info")) as f:
            self.assertEqual(f.read(), f'hub_name = "{self.hub.hostname}"\n'
                                       f'device_id = "{DEVICE}"\n')

    def test_key_client_error(self):
        """A device key keyd does not have: 404 "Key client error"."""
        self.addCleanup(self.restore_config)
        self.reloaded(lambda: self.identity.write_config(
            self.dps_config(self.endpoint, symmetric_key="no-such-key")))
        for method, path, body in (("POST", "/identities/device", {"type": "aziot"}),
                                   ("GET", "/identities/identity", None)):
            with self.subTest(path=path):
                self.assertErrorStartsWith(self.http(method, path, body), 404,
                                           "Key client error\ncaused by: ")

    def test_trust_bundle(self):
        """What DPS gave as trust bundle, else "" (our departure: upstream always answers "")."""
        self.addCleanup(self.forget_trust_bundle)
        self.forget_trust_bundle()
        b = self.agent_as(USER_B)
        for via in (None, b):
            for version in VERSIONS:
                self.assertOk(self.http("GET", "/trust-bundle", version=version, via=via),
                              {"certificate": ""})
        with open(self.hub.server_ca_path) as f:
            hub_ca = f.read()
        with open(self.dps.server_ca_path) as f:
            dps_ca = f.read()

        def with_bundle(request, status, obj):
            if request.route == "operation-status" and status == 200:
                obj["registrationState"]["trustBundle"] = {
                    "certificates": [{"certificate": hub_ca}, {"certificate": dps_ca}],
                    "etag": "1"}
            return obj
        self.dps.rewrite = with_bundle
        self.assertNoContent(self.http("POST", "/identities/device/reprovision"))
        for via in (None, b):
            self.assertOk(self.http("GET", "/trust-bundle", via=via),
                          {"certificate": hub_ca + dps_ca})
        r = self.curl("GET", "/trust-bundle", user=USER_B)
        self.assertOk(r, {"certificate": hub_ca + dps_ca})

    def forget_trust_bundle(self):
        self.bus().call_blocking(CERTS_NAME, CERTS_PATH, CERTS_NAME, "DeleteCertificate",
                                 "sa{sv}", [TRUST_BUNDLE_ID, {}], timeout=CALL_TIMEOUT)

    def device_handle(self):
        r = self.http("POST", "/identities/device", {"type": "aziot"})
        self.assertEqual(r.status, 200, r.body)
        return r.json()["spec"]["auth"]["keyHandle"]

    def test_the_socket_is_for_its_group(self):
        self.assertSocketMode()
        self.assertOutsiderRefused()

    def test_unknown_caller(self):
        """A user in group aziotid that is no principal: 401 "authorization error" for all but
        the provisioning information and the trust bundle; nothing reaches the cloud."""
        b = self.agent_as(USER_B)
        for method, path, body in (("GET", "/identities/identity", None),
                                   ("POST", "/identities/device", {"type": "aziot"}),
                                   ("POST", "/identities/device/reprovision", None),
                                   ("GET", "/identities/modules?type=aziot", None),
                                   ("POST", "/identities/modules",
                                    {"type": "aziot", "moduleId": "m"}),
                                   ("POST", "/identities/modules",
                                    {"type": "local", "moduleId": "adhoc"}),
                                   ("GET", "/identities/modules/m?type=aziot", None),
                                   ("GET", "/identities/modules/m?type=local", None),
                                   ("PUT", "/identities/modules/m?type=aziot", {}),
                                   ("DELETE", "/identities/modules/m?type=aziot", None)):
            with self.subTest(method=method, path=path):
                self.assertError(self.http(method, path, body, via=b), 401, AUTH_ERROR)
        self.assertEqual(self.hub.http_requests(), [])
        self.assertEqual(self.dps.http_requests(), [])
        self.assertIn("!!! authorization error", self.gateway_log())
        r = self.curl("GET", "/identities/identity", user=USER_B)
        self.assertError(r, 401, AUTH_ERROR)
        # The same requests from root's connection are served: identityd judged the client,
        # not the gateway (which runs as root).
        self.assertDeviceIdentity(self.http("GET", "/identities/identity"))

    def test_principal_with_device_idtype_and_polkit(self):
        self.addCleanup(self.set_principals, "")
        self.set_principals(principal(self.uid_a, "watcher", ["device"]))
        a = self.agent_as(USER_A)
        self.assertDeviceIdentity(self.http("GET", "/identities/identity", via=a))
        self.assertDeviceIdentity(self.http("POST", "/identities/device", {"type": "x"}, via=a))
        self.assertError(self.http("POST", "/identities/device/reprovision", via=a), 401,
                         AUTH_ERROR)
        self.assertError(self.http("GET", "/identities/modules?type=aziot", via=a), 401,
                         AUTH_ERROR)
        # b is still unknown.
        self.assertError(self.http("POST", "/identities/device", {"type": "x"},
                                   via=self.agent_as(USER_B)), 401, AUTH_ERROR)
        # polkit can grant what the principals do not (our departure).
        self.add_rules(f'''polkit.addRule(function(action, subject) {{
            if (action.id == "org.aziot.identity.manage" && subject.user == "{USER_A}")
                return polkit.Result.YES;
        }});''')
        self.dps.clear_log()
        self.assertNoContent(self.http("POST", "/identities/device/reprovision", via=a))
        self.assertEqual(len(self.dps.http_requests("register")), 1)
        r = self.http("GET", "/identities/modules?type=aziot", via=a)
        self.assertOk(r, {"identities": []})


# ---------------------------------------------------------------------------------------------
# 2. Module identities in IoT Hub, local identities


class ModulesTest(IdentityHttpTestCase):
    """Manual SAS provisioning. Principals: a is host process mod1 (idtype module), b is a daemon
    (no idtype), mod2 a host process of another uid, loc and locsrv local identities (client,
    server). identityd created mod1 and mod2 in IoT Hub when it started."""

    @classmethod
    def identity_config(cls):
        principals = (principal(cls.uid_a, "mod1", ["module"]) + principal(cls.uid_b, "edge") +
                      principal(2000, "mod2", ["module"]) + principal(2001, "loc", ["local"]) +
                      principal(2002, "locsrv", ["local"], localid="server"))
        return manual_config(cls.hub.hostname, principals)

    @classmethod
    def prepare_class(cls):
        # The startup reconciliation ends with prev_state written.
        poll(lambda: os.path.exists(os.path.join(cls.home, "prev_state")),
             "the reconciliation of mod1 and mod2")

    def setUp(self):
        super().setUp()
        self.hub.put_replaces = False

    def test_provisioning_info(self):
        for version in PROVISIONING_VERSIONS:
            self.assertOk(self.http("GET", "/identities/provisioning", version=version),
                          {"source": "manual", "auth": "sas"})

    def test_reconciled_modules(self):
        for module_id in ("mod1", "mod2"):
            with self.subTest(module=module_id):
                self.assertModuleIdentity(
                    self.http("GET", f"/identities/modules/{module_id}?type=aziot"), module_id)
        get = self.hub.http_requests("get-module")
        self.assertEqual([r.params["m"] for r in get], ["mod1", "mod2"])

    def test_list(self):
        self.hub.registry.add_module(DEVICE, "edgeAgent", managed_by="IotEdge")
        self.addCleanup(self.delete_module, "edgeAgent")
        for version in VERSIONS:
            with self.subTest(version=version):
                r = self.http("GET", "/identities/modules?type=aziot", version=version)
                self.assertEqual(r.status, 200, r.body)
                ids = [i["spec"]["moduleId"] for i in r.json()["identities"]]
                self.assertEqual(sorted(ids), ["edgeAgent", "mod1", "mod2"])
                self.assertOk(r, {"identities": [self.module_identity(m) for m in ids]})
        self.assertEqual([r.route for r in self.hub.http_requests()], ["list-modules"] * 3)

    def delete_module(self, module_id):
        """Deletes a module a test made, from IoT Hub and from identityd's backups."""
        self.hub.up()
        self.hub.clear_faults()
        self.assertNoContent(self.http("DELETE", f"/identities/modules/{module_id}?type=aziot"))

    def test_create_get_update_delete(self):
        # The type of the query is not looked at: the body's is.
        r = self.http("POST", "/identities/modules?type=local",
                      {"type": "aziot", "moduleId": "m3"})
        self.assertModuleIdentity(r, "m3")
        gen = self.hub_module("m3").generation_id
        for version in VERSIONS:
            self.assertModuleIdentity(self.http("GET", "/identities/modules/m3?type=aziot",
                                                version=version), "m3")
        # PUT writes the derived keys again (the body is ignored).
        mod = self.hub_module("m3")
        mod.primary_key, mod.secondary_key = mock_hub.random_key(), mock_hub.random_key()
        updates = mod.updates
        self.assertModuleIdentity(
            self.http("PUT", "/identities/modules/m3?type=aziot",
                      {"type": "aziot", "moduleId": "other"}), "m3")
        self.assertEqual(self.hub_module("m3").generation_id, gen)
        self.assertEqual(self.hub_module("m3").updates, updates + 1)
        self.assertIsNone(self.hub_module("other"))
        self.assertNoContent(self.http("DELETE", "/identities/modules/m3?type=aziot"))
        self.assertIsNone(self.hub_module("m3"))
        delete = self.hub.http_requests("delete-module")[-1]
        self.assertEqual((delete.params["m"], delete.headers.get("if-match")), ("m3", "*"))
        # Gone: from IoT Hub and from the backups.
        self.assertError(self.http("GET", "/identities/modules/m3?type=aziot"), 404,
                         hub_not_found("m3"))
        for method, body in (("DELETE", None), ("PUT", {})):
            with self.subTest(method=method):
                self.assertErrorStartsWith(
                    self.http(method, "/identities/modules/m3?type=aziot", body), 404,
                    "Hub client error\ncaused by: ErrorCode:ModuleNotFound;")

    def test_create_as_curl_and_existing(self):
        r = self.curl("POST", "/identities/modules", {"type": "aziot", "moduleId": "m4"})
        self.addCleanup(self.delete_module, "m4")
        self.assertModuleIdentity(r, "m4")
        for module_id in ("m4", "mod1"):
            with self.subTest(module=module_id):
                message = self.assertErrorStartsWith(
                    self.http("POST", "/identities/modules",
                              {"type": "aziot", "moduleId": module_id}), 404,
                    "Hub client error\ncaused by: ")
                self.assertIn("ErrorCode:ModuleAlreadyExistsOnDevice;", message)

    def test_type_rules(self):
        """The type query parameter (spec §4.3): upstream's texts, before anything else."""
        for method, path, body in (("GET", "/identities/modules", None),
                                   ("GET", "/identities/modules/mod1", None),
                                   ("PUT", "/identities/modules/mod1", {}),
                                   ("DELETE", "/identities/modules/mod1", None)):
            with self.subTest(method=method, path=path):
                self.assertError(self.http(method, path, body), 400, MISSING_TYPE)
                self.assertError(self.http(method, f"{path}?other=aziot", body), 400,
                                 MISSING_TYPE)
                for value, shown in (("foo", "foo"), ("AZIOT", "AZIOT"), ("", ""),
                                     ("a%20b", "a b"), ("x+y", "x y")):
                    self.assertError(self.http(method, f"{path}?type={value}", body), 400,
                                     invalid_type(shown))
                if path.endswith("mod1") and method == "GET":
                    continue
                # local is for GET of one module only.
                self.assertError(self.http(method, f"{path}?type=local", body), 400,
                                 invalid_type("local"))
        # The body's type on POST.
        self.assertError(self.http("POST", "/identities/modules",
                                   {"type": "foo", "moduleId": "m5"}), 400, invalid_type("foo"))
        self.assertEqual(self.hub.http_requests(), [])
        self.assertIsNotNone(self.hub_module("mod1"))

    def test_module_ids(self):
        """Blank ids and U+0000 are refused; others go to IoT Hub encoded, naming no other
        resource."""
        for module_id in ("", " ", "\t \n"):
            with self.subTest(module_id=module_id):
                self.assertError(self.http("POST", "/identities/modules",
                                           {"type": "aziot", "moduleId": module_id}), 400,
                                 BAD_MODULE_ID)
        self.assertError(self.http("POST", "/identities/modules",
                                   b'{"type":"aziot","moduleId":"a\\u0000b"}'), 400,
                         BAD_MODULE_ID)
        for path in ("%20", "%09", "a%00b"):
            with self.subTest(path=path):
                self.assertError(self.http("GET", f"/identities/modules/{path}?type=aziot"), 400,
                                 BAD_MODULE_ID)
        self.assertEqual(self.hub.http_requests(), [])
        for encoded, module_id, hub_path in (("a%2Fb", "a/b", "a%2Fb"),
                                             ("%2E%2E", "..", "%2E%2E"), ("..", "..", "%2E%2E"),
                                             ("x%3Fy", "x?y", "x%3Fy")):
            with self.subTest(encoded=encoded):
                self.hub.clear_log()
                self.assertError(self.http("GET", f"/identities/modules/{encoded}?type=aziot"),
                                 404, hub_not_found(module_id))
                request, = self.hub.http_requests()
                self.assertEqual(request.route, "get-module")
                self.assertEqual(request.path.split("?")[0],
                                 f"/devices/{DEVICE}/modules/{hub_path}")
                self.assertEqual(request.params["m"], module_id)
        # More segments are no module route.
        self.assertError(self.http("GET", "/identities/modules/a/b?type=aziot"), 404,
                         "not found")

    def test_host_principal(self):
        """a is host process mod1 (idtype module): its own module, nothing else."""
        a = self.agent_as(USER_A)
        for r in (self.http("GET", "/identities/identity", via=a),
                  self.http("GET", "/identities/modules/mod1?type=aziot", via=a),
                  self.curl("GET", "/identities/identity", user=USER_A)):
            self.assertModuleIdentity(r, "mod1")
        for method, path, body in (("POST", "/identities/device", {"type": "aziot"}),
                                   ("GET", "/identities/modules/mod2?type=aziot", None),
                                   ("GET", "/identities/modules/loc?type=local", None),
                                   ("GET", "/identities/modules?type=aziot", None),
                                   ("POST", "/identities/modules",
                                    {"type": "aziot", "moduleId": "m6"}),
                                   ("PUT", "/identities/modules/mod1?type=aziot", {}),
                                   ("DELETE", "/identities/modules/mod1?type=aziot", None),
                                   ("POST", "/identities/device/reprovision", None)):
            with self.subTest(method=method, path=path):
                self.assertError(self.http(method, path, body, via=a), 401, AUTH_ERROR)
        self.assertIsNotNone(self.hub_module("mod1"))
        self.assertIsNone(self.hub_module("m6"))
        # Its own id as a local identity: allowed to ask, but mod1 is no local principal.
        self.assertError(self.http("GET", "/identities/modules/mod1?type=local", via=a), 400,
                         'parameter "moduleId" has an invalid value\n'
                         "caused by: local identity for mod1 doesn't exist")
        # polkit can grant what the principals do not (our departure), per module.
        self.add_rules(f'''polkit.addRule(function(action, subject) {{
            if (action.id == "org.aziot.identity.get-module" && subject.user == "{USER_A}" &&
                action.lookup("module_id") == "mod2")
                return polkit.Result.YES;
        }});''')
        self.assertModuleIdentity(self.http("GET", "/identities/modules/mod2?type=aziot", via=a),
                                  "mod2")
        self.assertError(self.http("GET", "/identities/modules/loc?type=local", via=a), 401,
                         AUTH_ERROR)
        self.assertError(self.http("POST", "/identities/device", {"type": "aziot"}, via=a), 401,
                         AUTH_ERROR)

    def test_daemon_principal(self):
        """b is a principal without idtype (as IoT Edge is): the device, and every module."""
        b = self.agent_as(USER_B)
        self.assertDeviceIdentity(self.http("GET", "/identities/identity", via=b))
        self.assertDeviceIdentity(self.http("POST", "/identities/device", {"type": "aziot"},
                                            via=b))
        r = self.http("GET", "/identities/modules?type=aziot", via=b)
        self.assertEqual(r.status, 200, r.body)
        self.assertModuleIdentity(self.http("POST", "/identities/modules",
                                            {"type": "aziot", "moduleId": "m7"}, via=b), "m7")
        self.assertModuleIdentity(self.http("PUT", "/identities/modules/m7?type=aziot", {},
                                            via=b), "m7")
        self.assertNoContent(self.http("DELETE", "/identities/modules/m7?type=aziot", via=b))
        self.assertIsNone(self.hub_module("m7"))
        self.assertLocalIdentity(self.http("GET", "/identities/modules/loc?type=local", via=b),
                                 "loc", server=False)

    def test_hub_down_served_from_the_backup(self):
        online = self.http("GET", "/identities/modules/mod1?type=aziot")
        self.assertModuleIdentity(online, "mod1")
        self.hub.down()
        for version in VERSIONS:
            r = self.http("GET", "/identities/modules/mod1?type=aziot", version=version)
            # Served from the backup: the same generation, a handle that works.
            self.assertModuleIdentity(r, "mod1")
            self.assertEqual(r.json()["spec"]["genId"], online.json()["spec"]["genId"])
        self.assertModuleIdentity(self.http("GET", "/identities/identity",
                                            via=self.agent_as(USER_A)), "mod1")
        r = self.http("GET", "/identities/modules?type=aziot")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(sorted(i["spec"]["moduleId"] for i in r.json()["identities"]),
                         ["mod1", "mod2"])
        self.assertOk(r, {"identities": [self.module_identity(i["spec"]["moduleId"])
                                         for i in r.json()["identities"]]})
        # No backup: Hub error.
        self.assertError(self.http("GET", "/identities/modules/nope?type=aziot"), 404,
                         hub_not_found("nope"))
        # What changes IoT Hub needs it.
        self.assertErrorStartsWith(
            self.http("POST", "/identities/modules", {"type": "aziot", "moduleId": "m8"}), 404,
            "Hub client error\ncaused by: ")
        self.assertErrorStartsWith(self.http("DELETE", "/identities/modules/mod2?type=aziot"),
                                   404, "Hub client error\ncaused by: ")
        self.hub.up()
        self.assertIsNone(self.hub_module("m8"))
        self.assertIsNotNone(self.hub_module("mod2"))

    def test_hub_failures_fall_back_to_the_backup(self):
        self.assertModuleIdentity(self.http("GET", "/identities/modules/mod2?type=aziot"),
                                  "mod2")
        for status in (500, 404, 401):
            with self.subTest(status=status):
                self.hub.fail(status)
                self.assertModuleIdentity(
                    self.http("GET", "/identities/modules/mod2?type=aziot"), "mod2")

    def test_hub_errors(self):
        self.assertError(self.http("GET", "/identities/modules/nope?type=aziot"), 404,
                         hub_not_found("nope"))
        self.hub.fail(401, message="nope", code="IotHubUnauthorizedAccess")
        self.assertError(self.http("POST", "/identities/modules",
                                   {"type": "aziot", "moduleId": "m9"}), 404,
                         "Hub client error\ncaused by: ErrorCode:IotHubUnauthorizedAccess;nope")
        self.hub.fail(403, body=b"")
        self.assertError(self.http("DELETE", "/identities/modules/mod1?type=aziot"), 404,
                         "Hub client error\ncaused by: HTTP error 403")
        self.hub.clear_faults()
        self.assertIsNotNone(self.hub_module("mod1"))
        self.assertIsNone(self.hub_module("m9"))
        self.assertIn("!!! Hub client error", self.gateway_log())
        self.assertIn("!!! caused by: ErrorCode:IotHubUnauthorizedAccess;nope",
                      self.gateway_log())

    def test_module_without_generation_id(self):
        self.hub.fail(200, count=1, routes=["get-module"],
                      body={"moduleId": "mod1", "deviceId": DEVICE})
        self.assertError(self.http("GET", "/identities/modules/mod1?type=aziot"), 400, NO_MODULE)

    def test_local_identities_of_principals(self):
        key1 = self.assertLocalIdentity(self.http("GET", "/identities/modules/loc?type=local"),
                                        "loc", server=False)
        # A new key on every call: nothing is cached.
        key2 = self.assertLocalIdentity(
            self.http("GET", "/identities/modules/loc?type=local", version="2022-08-01"),
            "loc", server=False)
        self.assertNotEqual(key1.private_numbers(), key2.private_numbers())
        self.assertLocalIdentity(self.http("GET", "/identities/modules/locsrv?type=local"),
                                 "locsrv", server=True)
        for module_id in ("adhoc", "mod1"):
            with self.subTest(module=module_id):
                self.assertError(self.http("GET", f"/identities/modules/{module_id}?type=local"),
                                 400, 'parameter "moduleId" has an invalid value\n'
                                 f"caused by: local identity for {module_id} doesn't exist")
        self.assertEqual(self.hub.http_requests(), [])

    def test_create_local_identities(self):
        self.assertLocalIdentity(self.http("POST", "/identities/modules",
                                           {"type": "local", "moduleId": "adhoc"}),
                                 "adhoc", server=False)
        self.assertLocalIdentity(self.http("POST", "/identities/modules",
                                           {"type": "local", "moduleId": "adhoc",
                                            "localIdOpts": {"type": "x509",
                                                            "attributes": "client"}}),
                                 "adhoc", server=False)
        self.assertLocalIdentity(self.http("POST", "/identities/modules",
                                           {"type": "local", "moduleId": "adhoc2",
                                            "localIdOpts": {"type": "x509",
                                                            "attributes": "server"}}),
                                 "adhoc2", server=True)
        # Local principals get theirs with GET only.
        self.assertError(self.http("POST", "/identities/modules",
                                   {"type": "local", "moduleId": "loc"}), 400,
                         'parameter "moduleId" has an invalid value\n'
                         "caused by: local identity for loc already exists")
        # certd has no way to issue for this id: upstream's 500, the cause in the log.
        self.assertError(self.http("POST", "/identities/modules",
                                   {"type": "local", "moduleId": "not-configured"}), 500,
                         INTERNAL)
        self.assertIn("!!! internal error", self.gateway_log())
        self.assertEqual(self.hub.http_requests(), [])


# ---------------------------------------------------------------------------------------------
# 3. No provisioning


class UnprovisionedTest(IdentityHttpTestCase):
    """source = "none": local identities only."""

    STATES = ("unprovisioned",)

    @classmethod
    def identity_config(cls):
        return (f'hostname = "{HOSTNAME}"\n\n[provisioning]\nsource = "none"\n\n'
                f'[localid]\ndomain = "{DOMAIN}"\n\n' + principal(2001, "loc", ["local"]))

    def test_provisioning_info(self):
        for version in PROVISIONING_VERSIONS:
            self.assertOk(self.http("GET", "/identities/provisioning", version=version),
                          {"source": "none"})

    def test_no_device(self):
        for method, path, body in (("GET", "/identities/identity", None),
                                   ("POST", "/identities/device", {"type": "aziot"}),
                                   ("POST", "/identities/device/reprovision", None),
                                   ("GET", "/identities/modules?type=aziot", None),
                                   ("POST", "/identities/modules",
                                    {"type": "aziot", "moduleId": "m"}),
                                   ("GET", "/identities/modules/m?type=aziot", None),
                                   ("PUT", "/identities/modules/m?type=aziot", {}),
                                   ("DELETE", "/identities/modules/m?type=aziot", None)):
            with self.subTest(method=method, path=path):
                self.assertError(self.http(method, path, body), 400, NO_DEVICE)
        self.assertEqual(self.hub.http_requests(), [])

    def test_local_identity_and_trust_bundle(self):
        self.assertLocalIdentity(self.http("GET", "/identities/modules/loc?type=local"), "loc",
                                 server=False)
        self.assertLocalIdentity(self.http("POST", "/identities/modules",
                                           {"type": "local", "moduleId": "adhoc"}),
                                 "adhoc", server=False)
        self.assertOk(self.http("GET", "/trust-bundle"), {"certificate": ""})


# ---------------------------------------------------------------------------------------------
# 4. The generic HTTP layer on identityd.sock


class HttpLayerTest(IdentityHttpTestCase):
    """spec §1.3 on identityd.sock: api-versions, routes, methods, bodies."""

    @classmethod
    def identity_config(cls):
        return manual_config(cls.hub.hostname)

    def test_api_versions(self):
        self.assertError(self.http("GET", "/identities/identity", version=None), 400,
                         "api-version not specified")
        for version in ("2021-05-01", "2020-09-01-preview", "2021-12-02", "", "2022-08-01 "):
            with self.subTest(version=version):
                self.assertError(self.http("GET", "/trust-bundle",
                                           version=urllib.parse.quote(version)), 400,
                                 f"invalid api-version {json.dumps(version)}")
        # The last one wins, decoded as a form.
        self.assertDeviceIdentity(self.http("GET", "/identities/identity?api-version=2021-05-01",
                                            version="2022-08-01"))
        self.assertError(self.http("GET", f"/identities/identity?api-version={API}",
                                   version="2021-05-01"), 400, 'invalid api-version "2021-05-01"')
        self.assertDeviceIdentity(self.http(
            "GET", "/identities/identity?api%2Dversion=2020%2D09%2D01", version=None))
        self.assertError(self.http("GET", "/identities/provisioning?api-version=2021-12-01",
                                   version="2020-09-01"), 404, "not found")
        self.assertOk(self.http("GET", "/identities/provisioning?api-version=2020-09-01",
                                version="2021-12-01"), {"source": "manual", "auth": "sas"})

    def test_unknown_routes(self):
        for path in ("/", "/identities", "/identities/", "/identities/identity/",
                     "/identities/identities", "/IDENTITIES/identity", "/identity",
                     "/identities/device/", "/identities/device/reprovision/x",
                     "/identities/modules/", "/identities/modules/a/b",
                     "/identities/provisioning/x", "/trust-bundle/", "/trust_bundle",
                     "//identities/identity", "/identities/./identity",
                     "/identities/x/../identity", "/key", "/get_tpm_keys", "/certificates/c"):
            with self.subTest(path=path):
                self.assertError(self.http("GET", path), 404, "not found")
                self.assertError(self.http("POST", path, {"type": "aziot"}), 404, "not found")

    def test_methods_a_route_does_not_have(self):
        for method, path, body in [("POST", "/identities/identity", {"type": "aziot"}),
                                   ("DELETE", "/identities/identity", None),
                                   ("PUT", "/identities/identity", {}),
                                   ("GET", "/identities/device", None),
                                   ("GET", "/identities/device/reprovision", None),
                                   ("DELETE", "/identities/provisioning", None),
                                   ("PUT", "/identities/modules?type=aziot", {}),
                                   ("DELETE", "/identities/modules?type=aziot", None),
                                   ("POST", "/identities/modules/m?type=aziot",
                                    {"type": "aziot", "moduleId": "m"}),
                                   ("POST", "/trust-bundle", None),
                                   ("PATCH", "/identities/modules/m?type=aziot", {}),
                                   ("OPTIONS", "/identities/identity", None),
                                   ("HEAD", "/identities/identity", None)]:
            with self.subTest(method=method, path=path):
                version = "2021-12-01" if path == "/identities/provisioning" else API
                r = self.http(method, path, body, version=version)
                self.assertEqual(r.status, 400)
                if method != "HEAD":
                    self.assertError(r, 400, "method not allowed")
        # The body of a method the route lacks is still decoded first; PUT is JSON or 415.
        self.assertError(self.http("POST", "/identities/identity", b"{x", documented=False),
                         422, "key must be a string at line 1 column 2")
        self.assertError(self.http("PUT", "/trust-bundle", b"", documented=False), 422,
                         "EOF while parsing a value at line 1 column 0")
        self.assertError(self.http("PUT", "/identities/identity", b"{}",
                                   content_type="text/plain", documented=False), 415,
                         "request body must be application/json")
        self.assertEqual(self.hub.http_requests(), [])

    def test_malformed_json(self):
        for method, path in (("POST", "/identities/device"), ("POST", "/identities/modules")):
            for body, message in (at(b"{x}", b"{x", "key must be a string"),
                                  at(b"{", None, "EOF while parsing an object"),
                                  at(b'{"type": "aziot",}', b",}", "trailing comma"),
                                  at(b"\xff", b"\xff", "expected value"),
                                  at(b'{"type":"aziot","moduleId":"m"} x', None,
                                     "trailing characters")):
                with self.subTest(path=path, body=body):
                    self.assertError(self.http(method, path, body), 422, message)

    def test_missing_and_mistyped_members(self):
        cases = {
            "/identities/device": [
                at(b"{}", None, "missing field `type`"),
                at(b'{"moduleId":"m"}', None, "missing field `type`"),
                at(b'{"type":5}', b"5", "invalid type: integer `5`, expected a string"),
                at(b'{"type":null}', b"null", "invalid type: null, expected a string"),
                at(b'{"type":"a","type":"b"}', b'"a","type"', "duplicate field `type`"),
                at(b"5", None, "invalid type: integer `5`, expected struct Request"),
                at(b"[]", None, "invalid length 0, expected struct Request with 1 element"),
            ],
            "/identities/modules": [
                at(b"{}", None, "missing field `type`"),
                at(b'{"type":"aziot"}', None, "missing field `moduleId`"),
                at(b'{"moduleId":"m"}', None, "missing field `type`"),
                at(b'{"type":"aziot","moduleId":7}', b"7",
                   "invalid type: integer `7`, expected a string"),
                at(b'{"type":["aziot"],"moduleId":"m"}', b'{"type":',
                   "invalid type: sequence, expected a string"),
                at(b'{"type":"local","moduleId":"m","localIdOpts":{}}', b"{}",
                   "missing field `type`"),
            ],
        }
        for path, bodies in cases.items():
            for body, message in bodies:
                with self.subTest(path=path, body=body):
                    self.assertError(self.http("POST", path, body), 422, message)
        self.assertEqual(self.hub.http_requests(), [])

    def test_bodies_that_are_ignored_must_still_be_json(self):
        """PUT and DELETE of a module and reprovisioning ignore their bodies, but a body is
        decoded as JSON first (spec §1.3): 422, nothing sent to IoT Hub."""
        for method, path in (("PUT", "/identities/modules/mod-x?type=aziot"),
                             ("DELETE", "/identities/modules/mod-x?type=aziot"),
                             ("POST", "/identities/device/reprovision")):
            for body, message in (at(b"{x", b"{x", "key must be a string"),
                                  at(b"[1,", None, "EOF while parsing a value")):
                with self.subTest(method=method, body=body):
                    self.assertError(self.http(method, path, body), 422, message)
        # PUT needs a body: an empty one is a JSON error.
        self.assertError(self.http("PUT", "/identities/modules/mod-x?type=aziot", b""), 422,
                         "EOF while parsing a value at line 1 column 0")
        self.assertEqual(self.hub.http_requests(), [])

    def test_no_body(self):
        for path, body in (("/identities/device", {"type": "aziot"}),
                           ("/identities/modules", {"type": "aziot", "moduleId": "m"})):
            with self.subTest(path=path):
                self.assertError(self.http("POST", path), 400, "missing request body")
                self.assertError(self.http("POST", path, b""), 400, "missing request body")
                # A Content-Type that is not JSON: no body either.
                for content_type in ("text/plain", "application/jsonx", "text/json"):
                    self.assertError(self.http("POST", path, body, content_type=content_type),
                                     400, "missing request body")
        # A Content-Type with parameters is still JSON.
        self.assertDeviceIdentity(self.http("POST", "/identities/device", {"type": "aziot"},
                                            content_type="application/json; charset=utf-8"))
        self.assertError(self.http("PUT", "/identities/modules/m?type=aziot", {},
                                   content_type="text/plain"), 415,
                         "request body must be application/json")
        self.assertEqual(self.hub.http_requests(), [])

    def test_keep_alive(self):
        """Several requests on one connection, pipelined, answered in order."""
        c = self.connect()
        c.send(request_bytes("GET", f"/identities/identity?api-version={API}") +
               request_bytes("GET", "/identities/provisioning?api-version=2021-12-01") +
               request_bytes("POST", f"/identities/device?api-version={API}", b"{") +
               request_bytes("GET", f"/trust-bundle?api-version={API}") +
               request_bytes("GET", f"/nope?api-version={API}"))
        answers = [c.read_response() for _ in range(5)]
        self.assertEqual([r.status for r in answers], [200, 200, 422, 200, 404])
        self.assertDeviceIdentity(answers[0])
        self.assertEqual(answers[1].body, compact({"source": "manual", "auth": "sas"}))
        self.assertEqual(answers[3].body, compact({"certificate": ""}))

    def test_oversized_and_slow_bodies(self):
        c, r = self.post_oversized("/identities/device", b'{"type":"')
        self.assertError(r, 413, "request body too large")
        self.assertDocumented("POST", "/identities/device", r)
        self.assertTrue(c.is_closed())

        c, r, waited = self.post_slowly("/identities/modules",
                                        b'{"type":"aziot","moduleId":"slow"}')
        self.assertGreaterEqual(waited, BODY_TIMEOUT_MS / 1000 * 0.9)
        self.assertError(r, 408, "deadline has elapsed")
        self.assertDocumented("POST", "/identities/modules", r)
        self.assertIsNone(self.hub_module("slow"))


# ---------------------------------------------------------------------------------------------
# 5. The document


class InterfaceDocumentTest(unittest.TestCase):
    def test_document_lists_every_route_of_the_table(self):
        """interfaces/identity.yaml and the route table of gateway/identity-routes.c say the
        same: the routes, and for each the api-versions it takes."""
        source = gateway_source("identity-routes.c")
        table = c_array(source, "identity_routes")
        routes = re.findall(r'\{\s*HTTP_(\w+),\s*"([^"]+)",\s*(\w+),\s*(\w+),', table)
        self.assertEqual(len(routes), 10)
        versions = c_array(source, "identity_api_versions")
        names = re.findall(r'\[(\w+)\] = "([^"]+)"', versions)
        self.assertEqual([v for _, v in names], list(VERSIONS))
        index = {name: i for i, (name, _) in enumerate(names)}
        documented = {}
        for (method, template), (_, op) in OPENAPI.operations.items():
            params = [OPENAPI.resolve(p) for p in op["parameters"]]
            api, = [p for p in params if p["name"] == "api-version"]
            documented[(method, template.replace("{moduleId}", "*"))] = api["schema"]["enum"]
            for status, response in op["responses"].items():
                response = OPENAPI.resolve(response)
                self.assertEqual(status == "204", "content" not in response, (template, status))
        self.assertEqual(documented, {
            (m, p): [v for _, v in names[index[low]:index[high] + 1]]
            for m, p, low, high in routes})
        # The module routes document the type query parameter they take.
        for (method, template), (_, op) in OPENAPI.operations.items():
            types = [OPENAPI.resolve(p)["schema"]["enum"] for p in op["parameters"]
                     if OPENAPI.resolve(p)["name"] == "type"]
            expected = {("GET", "/identities/modules"): [["aziot"]],
                        ("GET", "/identities/modules/{moduleId}"): [["aziot", "local"]],
                        ("PUT", "/identities/modules/{moduleId}"): [["aziot"]],
                        ("DELETE", "/identities/modules/{moduleId}"): [["aziot"]]}
            self.assertEqual(types, expected.get((method, template), []), (method, template))

    def test_validator_catches_what_is_off(self):
        """The validation of answers can fail: bodies off their schema are reported."""
        from aziot_http import Response

        def response(status, body):
            return Response(status, "", [], compact(body), b"")
        ok_device = {"type": "aziot", "spec": {"hubName": "h", "gatewayHost": "h",
                                               "deviceId": "d",
                                               "auth": {"type": "sas", "keyHandle": "k"}}}
        self.assertEqual(OPENAPI.response_errors("GET", "/identities/identity",
                                                 response(200, ok_device)), [])
        for body in ({"type": "aziot", "spec": {}},
                     {**ok_device, "extra": 1},
                     {"type": "local", "spec": ok_device["spec"]},
                     {"type": "aziot", "spec": {**ok_device["spec"],
                                                "auth": {"type": "tpm", "keyHandle": "k"}}}):
            self.assertNotEqual(OPENAPI.response_errors("GET", "/identities/identity",
                                                        response(200, body)), [], body)
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/identities/modules", response(200, {"identities": [ok_device]})), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/identities/modules", response(200, {"identities": {}})), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/identities/provisioning", response(200, {"source": "dps"})), [])
        self.assertEqual(OPENAPI.response_errors(
            "GET", "/identities/provisioning",
            response(200, {"source": "dps", "auth": "tpm", "endpoint": "e", "scope_id": "s",
                           "registration_id": "r", "payload": None})), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/trust-bundle", response(418, {"message": "x"})), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "DELETE", "/identities/modules/m", response(204, {})), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
