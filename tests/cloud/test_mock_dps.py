# SPDX-License-Identifier: MIT
"""The mock DPS (mock_dps.py) is as strict as spec §3 (cloud-protocols.md) says a DPS is, for every
attestation — symmetric key (individual and group), X.509 (thumbprint, CA, group chain) and TPM (a
real swtpm activating the authenticationKey and signing with it) — and its switches do what they say.
Driven by cloud_client.py, whose SAS tokens are made apart from the mocks' code, and by curl."""

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from mock_dps import MockDps, NEW_UUID, CSR_NOT_CONFIGURED  # noqa: E402
from mock_hub import MockHub  # noqa: E402
from cloud_client import Client, HUB_API, control, group_device_key, sas_token, string_to_sign  # noqa: E402
from mocktest import NETWORK_ERRORS, MockTestCase  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

SCOPE = "0ne0000ABCD"


def reg_path(rid, scope=SCOPE):
    return f"/{scope}/registrations/{rid}/register"


def op_path(rid, op, scope=SCOPE):
    return f"/{scope}/registrations/{rid}/operations/{op}"


def audience(rid, scope=SCOPE):
    return f"{scope}/registrations/{rid}"


def csr_b64(cn, san=None):
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    csr = b.sign(key, hashes.SHA256())
    return key, base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


class DpsTestCase(MockTestCase):
    """One PKI directory for the module; a hub and a DPS sharing its registry per test."""

    TMP_PREFIX = "mock-dps-"

    def setUp(self):
        self.hub = MockHub(self.pki_dir).start()
        self.addCleanup(self.hub.stop)
        self.dps = MockDps(self.pki_dir, id_scope=SCOPE, hub=self.hub).start()
        self.addCleanup(self.dps.stop)
        self.ca = self.dps.server_ca_path

    def client(self, cert=None, key=None, **kw):
        return Client(self.dps.url, self.ca, cert=cert, key=key, **kw)

    def hub_client(self, cert=None, key=None):
        return Client(self.hub.url, self.ca, cert=cert, key=key, api_version=HUB_API)

    def register(self, rid, key=None, body=None, client=None, skn="registration", **kw):
        auth = sas_token(audience(rid), key, skn=skn) if key is not None else None
        body = {"registrationId": rid} if body is None else body
        return (client or self.client()).put(reg_path(rid), body, auth=auth, **kw)

    def provision(self, rid, key=None, client=None, body=None, auth=None, max_polls=10):
        """Register and poll until an outcome: (final response, polls answered "assigning")."""
        client = client or self.client()
        if auth is None and key is not None:
            auth = sas_token(audience(rid), key, skn="registration")
        r = client.put(reg_path(rid), body or {"registrationId": rid}, auth=auth)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json["status"], "assigning")
        op = r.json["operationId"]
        assigning = 0
        for _ in range(max_polls):
            r = client.get(op_path(rid, op), auth=auth)
            if r.status == 202:
                self.assertEqual(r.json["status"], "assigning")
                self.assertEqual(r.json["registrationState"]["registrationId"], rid)
                assigning += 1
                continue
            return r, assigning
        self.fail("no outcome")

    def assertRefused(self, r, status, code, message=None, reason=None):
        self.assertEqual(r.status, status, r)
        self.assertIn("application/json", r.headers["content-type"])
        body = r.json
        self.assertEqual(set(body), {"errorCode", "trackingId", "message", "timestampUtc"})
        self.assertEqual(body["errorCode"], code)
        self.assertIsInstance(body["message"], str)
        if message is not None:
            self.assertEqual(body["message"], message)
        rec = self.dps.http_requests()[-1]
        self.assertEqual(rec.status, status)
        if reason is not None:
            self.assertIn(reason, rec.reason)
        return rec


class TestSymmetricKey(DpsTestCase):
    def test_individual_assigned_after_polls(self):
        e = self.dps.add_symmetric_key("dev-1", assigning_polls=2)
        payload = {"modelId": "dtmi:x;1", "list": [1, 2]}
        body = {"registrationId": "dev-1", "payload": payload}
        r, assigning = self.provision("dev-1", e.primary_key, body=body)
        self.assertEqual((r.status, assigning), (200, 2))
        self.assertIn("application/json", r.headers["content-type"])
        state = r.json["registrationState"]
        self.assertEqual(r.json["status"], "assigned")
        self.assertEqual(state["assignedHub"], self.hub.hostname)
        self.assertEqual(state["deviceId"], "dev-1")
        self.assertEqual(state["payload"], payload)
        self.assertEqual(state["status"], "assigned")
        self.assertNotIn("tpm", state)
        self.assertEqual(self.dps.registration("dev-1")["deviceId"], "dev-1")
        # the device exists in the hub with the enrollment's keys: the same key opens the hub
        dev = self.hub.registry.device("dev-1")
        self.assertEqual(dev.keys, (e.primary_key, e.secondary_key))
        hub_token = sas_token(f"{self.hub.hostname}/devices/dev-1", e.primary_key)
        self.assertEqual(self.hub_client().get("/devices/dev-1/modules", auth=hub_token).json, [])
        # the log: what was sent and how it was judged
        reg, *polls = self.dps.http_requests()
        self.assertEqual((reg.method, reg.route, reg.auth, reg.principal, reg.status, reg.reason),
                         ("PUT", "register", "sas", "dev-1", 202, None))
        self.assertEqual(reg.api_version, "2021-06-01")
        self.assertEqual(reg.sas["skn"], "registration")
        self.assertEqual(reg.headers["content-type"], "application/json")
        self.assertEqual(reg.json, body)
        self.assertEqual([p.status for p in polls], [202, 202, 200])
        self.assertTrue(all(p.route == "operation-status" and p.auth == "sas" for p in polls))

    def test_without_payload_and_secondary_key(self):
        e = self.dps.add_symmetric_key("dev-2")
        r, assigning = self.provision("dev-2", e.secondary_key)
        self.assertEqual((r.status, assigning), (200, 0))
        self.assertNotIn("payload", r.json["registrationState"])

    def test_mixed_case_registration_id_and_escaped_audience(self):
        # audiences are lower-cased by the client; the service compares case-insensitively and
        # takes '/' as '%2F' too (spec §2.1)
        e = self.dps.add_symmetric_key("My-Device")
        self.assertTrue(sas_token(audience("My-Device"), e.primary_key).startswith(
            f"SharedAccessSignature sr={SCOPE.lower()}/registrations/my-device&sig="))
        r, _ = self.provision("My-Device", e.primary_key)
        self.assertEqual(r.json["registrationState"]["deviceId"], "My-Device")
        escaped = sas_token(audience("My-Device"), e.primary_key, skn="registration",
                            sr=f"{SCOPE}%2Fregistrations%2FMy-Device")
        r = self.client().put(reg_path("My-Device"), {"registrationId": "My-Device"}, auth=escaped)
        self.assertEqual(r.status, 202, r)

    def test_group_device_key(self):
        g = self.dps.add_symmetric_key_group("grp-1", assigning_polls=1)
        key = group_device_key(g.primary_key, "sensor-7")
        r, assigning = self.provision("sensor-7", key)
        self.assertEqual((r.status, assigning), (200, 1))
        self.assertEqual(self.dps.http_requests()[0].principal, "grp-1")
        self.assertEqual(self.hub.registry.device("sensor-7").primary_key, key)
        # the secondary group key derives the secondary device key
        self.assertEqual(self.register("sensor-8", group_device_key(g.secondary_key, "sensor-8")).status, 202)
        # the group key itself, or another device's key, is not this device's key
        self.assertRefused(self.register("sensor-7", g.primary_key), 401, 401002, "Unauthorized",
                           "signature mismatch")
        self.assertRefused(self.register("sensor-9", key), 401, 401002, reason="signature mismatch")

    def test_individual_takes_precedence_over_group(self):
        g = self.dps.add_symmetric_key_group("grp")
        e = self.dps.add_symmetric_key("dev-x")
        self.assertRefused(self.register("dev-x", group_device_key(g.primary_key, "dev-x")), 401, 401002)
        self.assertEqual(self.register("dev-x", e.primary_key).status, 202)

    def test_bad_tokens_refused(self):
        e = self.dps.add_symmetric_key("dev-3")
        other = self.dps.add_symmetric_key("dev-4")
        past = int(time.time()) - 5
        cases = [
            ("wrong signature", sas_token(audience("dev-3"), other.primary_key, skn="registration"),
             "signature mismatch"),
            ("expired", sas_token(audience("dev-3"), e.primary_key, expiry=past, skn="registration"),
             "expired"),
            ("audience of another registration", sas_token(audience("dev-4"), e.primary_key,
                                                           skn="registration"), "audience mismatch"),
            ("audience of another scope", sas_token(audience("dev-3", "0ne0000FFFF"), e.primary_key,
                                                    skn="registration"), "audience mismatch"),
            ("audience without scope", sas_token("registrations/dev-3", e.primary_key, skn="registration"),
             "audience mismatch"),
            ("no skn", sas_token(audience("dev-3"), e.primary_key), "skn must be 'registration'"),
            ("wrong skn", sas_token(audience("dev-3"), e.primary_key, skn="device"),
             "skn must be 'registration'"),
            ("no se", sas_token(audience("dev-3"), e.primary_key, skn="registration").replace("&se=", "&xe="),
             "malformed"),
            ("not SAS", "Bearer abc", "malformed"),
            ("sig not base64", sas_token(audience("dev-3"), e.primary_key, skn="registration",
                                         signature="!!!"), "malformed"),
            ("duplicate field", sas_token(audience("dev-3"), e.primary_key, skn="registration") +
             "&skn=registration", "malformed"),
        ]
        for name, token, reason in cases:
            with self.subTest(name):
                r = self.client().put(reg_path("dev-3"), {"registrationId": "dev-3"}, auth=token)
                rec = self.assertRefused(r, 401, 401002, "Unauthorized", reason)
                self.assertEqual(rec.auth, "sas")
        self.assertEqual(self.dps.operations, {})
        self.assertIsNone(self.hub.registry.device("dev-3"))

    def test_unknown_enrollment_scope_and_no_credentials(self):
        self.dps.add_symmetric_key("known")
        key = base64.b64encode(secrets.token_bytes(64)).decode()
        self.assertRefused(self.register("unknown", key), 401, 401002, "Unauthorized", "no enrollment")
        auth = sas_token(audience("known", "0ne0000FFFF"), key, skn="registration")
        r = self.client().put(reg_path("known", "0ne0000FFFF"), {"registrationId": "known"}, auth=auth)
        self.assertRefused(r, 401, 401002, reason="unknown ID scope")
        rec = self.assertRefused(self.register("known"), 401, 401002, reason="no SAS token")
        self.assertIsNone(rec.auth)

    def test_registration_id_must_match_path(self):
        e = self.dps.add_symmetric_key("dev-5")
        r = self.register("dev-5", e.primary_key, body={"registrationId": "dev-6"})
        rec = self.assertRefused(r, 400, 400000, reason="not 'dev-5' of the URI")
        self.assertEqual(rec.auth, "sas")  # authenticated, then refused for the body

    def test_malformed_requests(self):
        e = self.dps.add_symmetric_key("dev-7")
        tok = sas_token(audience("dev-7"), e.primary_key, skn="registration")
        c = self.client()
        cases = [
            ("no body", dict(body=None), 400, 400000),
            ("not JSON", dict(body="{registrationId: dev-7"), 400, 400000),
            ("an array", dict(body=["dev-7"]), 400, 400000),
            ("no registrationId", dict(body={"payload": {}}), 400, 400000),
            ("registrationId not a string", dict(body={"registrationId": 7}), 400, 400000),
            ("no Content-Type", dict(body={"registrationId": "dev-7"}, content_type=None), 415, 415000),
            ("text/plain", dict(body={"registrationId": "dev-7"}, content_type="text/plain"), 415, 415000),
            ("no api-version", dict(body={"registrationId": "dev-7"}, api_version=False), 400, 400000),
            ("old api-version", dict(body={"registrationId": "dev-7"}, api_version="2019-03-31"),
             400, 400000),
        ]
        for name, kw, status, code in cases:
            with self.subTest(name):
                body = kw.pop("body")
                r = c.request("PUT", reg_path("dev-7"), body, auth=tok, **kw)
                self.assertRefused(r, status, code)
        self.assertRefused(c.get(reg_path("dev-7"), auth=tok), 405, 405000)
        self.assertEqual(self.dps.http_requests()[-1].response_headers["Allow"], "PUT")
        self.assertRefused(c.put(f"/{SCOPE}/registrations/dev-7/enroll", {}, auth=tok), 404, 404000)
        self.assertRefused(c.put(f"/{SCOPE}/registrations/register", {}, auth=tok), 404, 404000)
        self.assertEqual(c.put(reg_path("dev-7"), {"registrationId": "dev-7"}, auth=tok,
                               content_type="application/json; charset=utf-8").status, 202)

    def test_failed_disabled_and_other_outcomes(self):
        e = self.dps.add_symmetric_key("dev-f", outcome="failed", error_code=400209,
                                       error_message="Custom allocation failed with status code: 400")
        r, _ = self.provision("dev-f", e.primary_key)
        self.assertEqual((r.status, r.json["status"]), (200, "failed"))
        state = r.json["registrationState"]
        self.assertEqual([state[k] for k in ("registrationId", "status", "errorCode", "errorMessage")],
                         ["dev-f", "failed", 400209, "Custom allocation failed with status code: 400"])
        self.assertNotIn("assignedHub", state)
        self.assertIsNone(self.hub.registry.device("dev-f"))
        d = self.dps.add_symmetric_key("dev-d", enabled=False)
        r, _ = self.provision("dev-d", d.primary_key)
        self.assertEqual((r.json["status"], r.json["registrationState"]["status"]), ("disabled", "disabled"))
        u = self.dps.add_symmetric_key("dev-u", outcome="unassigned")
        self.assertEqual(self.provision("dev-u", u.primary_key)[0].json["status"], "unassigned")

    def test_operation_status_checks(self):
        e = self.dps.add_symmetric_key("dev-8", assigning_polls=3)
        o = self.dps.add_symmetric_key("dev-9")
        auth = sas_token(audience("dev-8"), e.primary_key, skn="registration")
        c = self.client()
        op = c.put(reg_path("dev-8"), {"registrationId": "dev-8"}, auth=auth).json["operationId"]
        self.assertRefused(c.get(op_path("dev-8", "4.0000.nope"), auth=auth), 404, 404000)
        other = sas_token(audience("dev-9"), o.primary_key, skn="registration")
        self.assertRefused(c.get(op_path("dev-9", op), auth=other), 404, 404000)  # not dev-9's
        self.assertRefused(c.get(op_path("dev-8", op), auth=other), 401, 401002, reason="audience")
        wrong_key = sas_token(audience("dev-8"), o.primary_key, skn="registration")
        self.assertRefused(c.get(op_path("dev-8", op), auth=wrong_key), 401, 401002, reason="signature")
        self.assertRefused(c.get(op_path("dev-8", op)), 401, 401002, reason="no SAS token")
        # identityd polls with the register request's token, expired after 30 s (spec §3.3):
        # accepted on this route unless check_expiry_on_status
        expired = sas_token(audience("dev-8"), e.primary_key, expiry=time.time() - 60, skn="registration")
        r = c.get(op_path("dev-8", op), auth=expired)
        self.assertEqual(r.status, 202, r)
        self.assertTrue(self.dps.http_requests()[-1].expired_token)
        self.dps.check_expiry_on_status = True
        self.assertRefused(c.get(op_path("dev-8", op), auth=expired), 401, 401002, reason="expired")
        # refused polls do not count: 2 more assigning, then assigned, then the same answer again
        self.assertEqual([c.get(op_path("dev-8", op), auth=auth).status for _ in range(4)],
                         [202, 202, 200, 200])
        self.assertEqual(c.get(op_path("dev-8", op), auth=auth).json["status"], "assigned")

    def test_allocation_options(self):
        e = self.dps.add_symmetric_key("dev-a", device_id=NEW_UUID)
        first = self.provision("dev-a", e.primary_key)[0].json["registrationState"]["deviceId"]
        second = self.provision("dev-a", e.primary_key)[0].json["registrationState"]["deviceId"]
        self.assertNotEqual(first, second)
        self.assertIsNotNone(self.hub.registry.device(first))
        self.assertIsNotNone(self.hub.registry.device(second))
        # another hub: assigned, but nothing created in this hub's registry
        b = self.dps.add_symmetric_key("dev-b", assigned_hub="elsewhere.azure-devices.net",
                                       device_id="edge-b", response_payload={"fromAllocation": True})
        state = self.provision("dev-b", b.primary_key)[0].json["registrationState"]
        self.assertEqual((state["assignedHub"], state["deviceId"], state["payload"]),
                         ("elsewhere.azure-devices.net", "edge-b", {"fromAllocation": True}))
        self.assertIsNone(self.hub.registry.device("edge-b"))
        # allocation by payload (a custom allocation function)
        c = self.dps.add_symmetric_key("dev-c", device_id=lambda rid, p: f"{rid}-{p['site']}",
                                       response_payload=lambda p: {"echo": p})
        body = {"registrationId": "dev-c", "payload": {"site": "north"}}
        state = self.provision("dev-c", c.primary_key, body=body)[0].json["registrationState"]
        self.assertEqual((state["deviceId"], state["payload"]), ("dev-c-north", {"echo": {"site": "north"}}))
        # re-registration keeps the device's modules, and a module made with the old device is still there
        self.hub.registry.add_module("dev-c-north", "m1")
        self.provision("dev-c", c.primary_key, body=body)
        self.assertIsNotNone(self.hub.registry.module("dev-c-north", "m1"))

    def test_curl_register(self):
        if not shutil.which("curl"):
            self.skipTest("curl is not installed")
        e = self.dps.add_symmetric_key("curl-dev")
        auth = sas_token(audience("curl-dev"), e.primary_key, skn="registration")
        p = subprocess.run(["curl", "-sS", "--cacert", self.ca, "-X", "PUT", "-H", f"Authorization: {auth}",
                            "-H", "Content-Type: application/json", "--data", '{"registrationId":"curl-dev"}',
                            "-w", "\n%{http_code}",
                            f"{self.dps.url}{reg_path('curl-dev')}?api-version=2021-06-01"],
                           capture_output=True, text=True, timeout=30)
        body, _, status = p.stdout.rpartition("\n")
        self.assertEqual(status, "202", p.stderr)
        self.assertEqual(json.loads(body)["status"], "assigning")
        # and with localhost (the server certificate's other name)
        url = f"https://localhost:{self.dps.port}{reg_path('curl-dev')}?api-version=2021-06-01"
        p = subprocess.run(["curl", "-sS", "--cacert", self.ca, "-X", "PUT", "-H", f"Authorization: {auth}",
                            "-H", "Content-Type: application/json", "--data", '{"registrationId":"curl-dev"}',
                            "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.stdout, "202", p.stderr)


class TestX509(DpsTestCase):
    def certs(self):
        pki = self.dps.pki
        root = pki.make_ca("dev-root", "Device Root CA")
        inter = pki.make_ca("dev-inter", "Device Intermediate CA", issuer=root)
        return pki, root, inter

    def test_individual_by_thumbprint(self):
        pki = self.dps.pki
        cert = pki.make_cert("x-dev-1", "x-dev-1")  # self-signed
        self.dps.add_x509("x-dev-1", cert=cert.cert, assigning_polls=1)
        c = self.client(cert.cert_path, cert.key_path)
        r, assigning = self.provision("x-dev-1", client=c)
        self.assertEqual((r.status, assigning), (200, 1))
        self.assertEqual(r.json["registrationState"]["deviceId"], "x-dev-1")
        reg = self.dps.http_requests()[0]
        self.assertEqual((reg.auth, reg.principal, reg.client_cert_subject),
                         ("x509", "x-dev-1", "CN=x-dev-1"))
        self.assertNotIn("authorization", reg.headers)
        # the hub knows the device by that thumbprint
        dev = self.hub.registry.device("x-dev-1")
        self.assertEqual((dev.auth_type, dev.thumbprints), ("selfSigned", [cert.thumbprint]))
        hub = self.hub_client(cert.cert_path, cert.key_path)
        self.assertEqual(hub.get("/devices/x-dev-1/modules").status, 200)
        # another self-signed cert with the same subject is another device
        impostor = pki.make_cert("x-dev-1-impostor", "x-dev-1")
        ci = self.client(impostor.cert_path, impostor.key_path)
        self.assertRefused(self.register("x-dev-1", client=ci), 401, 401002, "Unauthorized", "thumbprint")
        r = self.hub_client(impostor.cert_path, impostor.key_path).get("/devices/x-dev-1/modules")
        self.assertEqual(r.status, 401)
        # by a hex thumbprint (SHA-256 too), as an enrollment lists it
        cert2 = pki.make_cert("x-dev-2", "x-dev-2")
        self.dps.add_x509("x-dev-2", thumbprint=cert2.thumbprint256.lower())
        r = self.register("x-dev-2", client=self.client(cert2.cert_path, cert2.key_path))
        self.assertEqual(r.status, 202, r)

    def test_individual_ca_signed_and_group_chain(self):
        pki, root, inter = self.certs()
        leaf = pki.make_cert("x-dev-3", "x-dev-3", issuer=root)
        self.dps.add_x509("x-dev-3", ca=root.cert)
        r, _ = self.provision("x-dev-3", client=self.client(leaf.chain_path, leaf.key_path))
        self.assertEqual(r.json["status"], "assigned")
        # group on the root; the device's cert is under an intermediate it sends along
        self.dps.add_x509_group("x-group", ca=root.cert_path)
        leaf4 = pki.make_cert("x-dev-4", "x-dev-4", issuer=inter)
        r, _ = self.provision("x-dev-4", client=self.client(leaf4.chain_path, leaf4.key_path))
        self.assertEqual(r.json["status"], "assigned")
        self.assertEqual(self.dps.http_requests("register")[-1].principal, "x-group")
        self.assertEqual(len(self.dps.http_requests("register")[-1].client_chain), 2)
        dev = self.hub.registry.device("x-dev-4")
        self.assertEqual(dev.auth_type, "certificateAuthority")
        hub = self.hub_client(leaf4.chain_path, leaf4.key_path)
        self.assertEqual(hub.get("/devices/x-dev-4/modules").status, 200)
        # without the intermediate the chain does not reach the enrolled root
        self.assertRefused(self.register("x-dev-4", client=self.client(leaf4.cert_path, leaf4.key_path)),
                           401, 401002, reason="does not chain")

    def test_untrusted_and_unfit_certs_refused_with_401(self):
        pki, root, inter = self.certs()
        self.dps.add_x509_group("x-group", ca=root.cert)
        other_root = pki.make_ca("other-root", "Other Root CA")
        cases = [
            ("untrusted CA", pki.make_cert("u1", "x-dev-5", issuer=other_root), "does not chain"),
            ("self-signed", pki.make_cert("u2", "x-dev-5"), "does not chain"),
            ("expired", pki.make_cert("u3", "x-dev-5", issuer=root, seconds=60,
                                      not_before=time_ago(3600)), "expired"),
            ("not yet valid", pki.make_cert("u4", "x-dev-5", issuer=root, not_before=time_ago(-3600)),
             "not yet valid"),
            ("server-only EKU", pki.make_cert("u5", "x-dev-5", issuer=root,
                                              eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
             "client authentication"),
            ("CN is not the registration id", pki.make_cert("u6", "x-dev-6", issuer=root), "CN"),
            # a CA with the enrolled root's very name, but another key
            ("forged issuer name", pki.make_cert("u7", "x-dev-5",
                                                 issuer=pki.make_ca("fake-root", "Device Root CA")),
             "does not chain"),
            ("intermediate not yet valid", pki.make_cert("u8", "x-dev-5", issuer=pki.make_ca(
                "future-inter", "Future Intermediate", issuer=root, not_before=time_ago(-3600))),
             "in the chain is expired or not yet valid"),
            # an "intermediate" that is an end-entity cert (CA:FALSE)
            ("issued by a non-CA", pki.make_cert("u9", "x-dev-5", issuer=pki.make_cert("not-ca", "Not A CA",
                                                                                      issuer=root)),
             "does not chain"),
        ]
        for name, cert, reason in cases:
            with self.subTest(name):
                # the TLS handshake succeeds; the service answers 401 as DPS does
                r = self.register("x-dev-5", client=self.client(cert.chain_path, cert.key_path))
                rec = self.assertRefused(r, 401, 401002, "Unauthorized", reason)
                self.assertEqual(rec.auth, "x509")
        self.assertEqual(self.dps.tls_errors(), [])
        # and no registration is made for an X.509 enrollment with a SAS token
        cert = pki.make_cert("x-dev-7", "x-dev-7")
        self.dps.add_x509("x-dev-7", cert=cert.cert)
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.assertRefused(self.register("x-dev-7", key), 401, 401002, reason="SAS token is not accepted")
        # nor with a cert for a symmetric-key enrollment
        self.dps.add_symmetric_key("x-dev-8")
        c8 = pki.make_cert("x-dev-8", "x-dev-8", issuer=root)
        r = self.register("x-dev-8", client=self.client(c8.chain_path, c8.key_path))
        self.assertRefused(r, 401, 401002, reason="symmetric enrollment")

    def test_polls_need_the_same_cert(self):
        pki, root, _ = self.certs()
        self.dps.add_x509_group("x-group", ca=root.cert, assigning_polls=1)
        a = pki.make_cert("x-dev-9", "x-dev-9", issuer=root)
        b = pki.make_cert("x-dev-9b", "x-dev-9", issuer=root)
        ca = self.client(a.chain_path, a.key_path)
        op = self.register("x-dev-9", client=ca).json["operationId"]
        self.assertRefused(self.client().get(op_path("x-dev-9", op)), 401, 401002,
                           reason="no client certificate")
        self.assertRefused(self.client(b.chain_path, b.key_path).get(op_path("x-dev-9", op)), 401, 401002,
                           reason="not the certificate")
        self.assertEqual(ca.get(op_path("x-dev-9", op)).status, 202)
        self.assertEqual(ca.get(op_path("x-dev-9", op)).json["status"], "assigned")

    def test_curl_with_client_cert(self):
        if not shutil.which("curl"):
            self.skipTest("curl is not installed")
        pki, root, inter = self.certs()
        self.dps.add_x509_group("x-group", ca=root.cert)
        leaf = pki.make_cert("curl-x", "curl-x", issuer=inter)
        p = subprocess.run(["curl", "-sS", "--cacert", self.ca, "--cert", leaf.chain_path,
                            "--key", leaf.key_path, "-X", "PUT", "-H", "Content-Type: application/json",
                            "--data", '{"registrationId":"curl-x"}', "-w", "\n%{http_code}",
                            f"{self.dps.url}{reg_path('curl-x')}?api-version=2021-06-01"],
                           capture_output=True, text=True, timeout=30)
        body, _, status = p.stdout.rpartition("\n")
        self.assertEqual(status, "202", p.stdout + p.stderr)
        self.assertEqual(self.dps.http_requests()[-1].client_cert_subject, "CN=curl-x")


def time_ago(seconds):
    import datetime
    return (datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
            - datetime.timedelta(seconds=seconds))


class TestCertificateIssuance(DpsTestCase):
    """Spec §3.8 (the feature/dps_certs branch): identity certs for a CSR, trust bundle, server certs."""

    def test_csr_not_configured(self):
        e = self.dps.add_symmetric_key("c-dev-1")
        _, csr = csr_b64("c-dev-1")
        body = {"registrationId": "c-dev-1", "clientCertificateCsr": csr}
        r = self.register("c-dev-1", e.primary_key, body=body, api_version="2021-11-01-preview")
        self.assertRefused(r, 400, 400000, CSR_NOT_CONFIGURED)

    def test_identity_and_server_certificates(self):
        bundle_ca = self.dps.pki.make_ca("bundle-ca", "Trust Bundle CA")
        e = self.dps.add_symmetric_key("c-dev-2", issue_client_cert=True, trust_bundle=[bundle_ca.cert],
                                       server_certificates=True)
        key, csr = csr_b64("c-dev-2")
        client = self.client(api_version="2021-11-01-preview")
        body = {"registrationId": "c-dev-2", "clientCertificateCsr": csr}
        r, _ = self.provision("c-dev-2", e.primary_key, client=client, body=body)
        state = r.json["registrationState"]
        cert = x509.load_der_x509_certificate(base64.b64decode(state["issuedClientCertificate"]))
        self.assertEqual(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "c-dev-2")
        self.assertEqual(cert.public_key().public_numbers(), key.public_key().public_numbers())
        self.assertEqual(cert.issuer, self.dps.issuing_ca.cert.subject)
        self.assertEqual([x509.load_pem_x509_certificate(c["certificate"].encode())
                          for c in state["trustBundle"]["certificates"]], [bundle_ca.cert])
        self.assertEqual(state["deviceCertificateIssuanceSettings"], {"certificateType": "serverCertificate"})
        # the issued identity cert opens the hub, and asks DPS for a server cert
        pem_dir = tempfile.mkdtemp(dir=self.tmp)
        cert_path, key_path = os.path.join(pem_dir, "id.pem"), os.path.join(pem_dir, "id.key")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        self.assertEqual(self.hub_client(cert_path, key_path).get("/devices/c-dev-2/modules").status, 200)
        self.dps.issue_polls = 1
        ic = self.client(cert_path, key_path, api_version="2021-11-01-preview")
        _, server_csr = csr_b64("c-dev-2.local", san="c-dev-2.local")
        r = ic.post(f"/{SCOPE}/devices/c-dev-2/certificates/issue",
                    {"certificateType": "serverCertificate", "csr": server_csr})
        self.assertEqual(r.status, 202, r)
        op = r.json["operationId"]
        self.assertEqual(ic.get(f"/{SCOPE}/devices/c-dev-2/operations/{op}").json, {"status": "running"})
        r = ic.get(f"/{SCOPE}/devices/c-dev-2/operations/{op}")
        self.assertEqual(r.json["status"], "succeeded")
        location = r.json["resourceLocation"]
        self.assertTrue(location.startswith(f"https://127.0.0.1:{self.dps.port}/{SCOPE}/devices/c-dev-2/"))
        r = ic.get(location.split(str(self.dps.port), 1)[1])
        server = x509.load_pem_x509_certificate(r.json["issuedCertificate"].encode())
        eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertEqual(server.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                         .value.get_values_for_type(x509.DNSName), ["c-dev-2.local"])
        self.assertEqual(len(r.json["certificateChain"]), 1)
        # only the issued identity cert may ask
        self.assertRefused(self.client().post(f"/{SCOPE}/devices/c-dev-2/certificates/issue",
                                              {"certificateType": "serverCertificate", "csr": server_csr},
                                              api_version="2021-11-01-preview"), 401, 401002)


def _tpm_available():
    if os.geteuid() != 0:
        return "needs root (swtpm)"
    if not (shutil.which("swtpm") and shutil.which("tpm2_activatecredential")):
        return "swtpm and tpm2-tools are not installed"
    return None


@unittest.skipIf(_tpm_available(), _tpm_available() or "")
class TestTpm(DpsTestCase):
    """The TPM flow against swtpm, with tpm2-tools doing what a TPM device (tpmd) does."""

    EK, SRK = "0x81010001", "0x81000001"
    SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import aziot_tpm
        cls.aziot_tpm = aziot_tpm
        cls.tpm = aziot_tpm.Swtpm(os.path.join(cls.tmp, "tpm")).start()
        try:
            t = cls.tpm
            t.tools("tpm2_createek", "-c", cls.EK, "-G", "rsa", "-u", cls.file("ek.pub.raw"))
            t.flush_transients()
            t.tools("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb",
                    "-a", cls.SRK_ATTRIBUTES, "-c", cls.file("srk.ctx"), "-Q")
            t.tools("tpm2_evictcontrol", "-C", "o", "-c", cls.file("srk.ctx"), cls.SRK)
            t.flush_transients()
            t.tools("tpm2_readpublic", "-c", cls.EK, "-o", cls.file("ek.pub"))
            t.tools("tpm2_readpublic", "-c", cls.SRK, "-o", cls.file("srk.pub"))
            cls.ek = cls.read(cls.file("ek.pub"))
            cls.srk = cls.read(cls.file("srk.pub"))
        except BaseException:
            cls.tpm.close()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tpm.close()
        super().tearDownClass()

    @classmethod
    def file(cls, name):
        return os.path.join(cls.tmp, name)

    @staticmethod
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    def write(self, name, data):
        with open(self.file(name), "wb") as f:
            f.write(data)
        return self.file(name)

    def tpm_body(self, rid):
        return {"registrationId": rid, "tpm": {"endorsementKey": base64.b64encode(self.ek).decode(),
                                               "storageRootKey": base64.b64encode(self.srk).decode()}}

    def import_auth_key(self, blob, name="key"):
        """ActivateCredential(SRK, EK) → K, Import under the SRK with K, Load: the key's context file
        (<name>.ctx)."""
        t, parts = self.tpm, self.aziot_tpm.split_auth_key_blob(blob)
        cred = self.write("cred.in", self.aziot_tpm.tpm2_tools_credential_file(parts.credential_blob,
                                                                              parts.secret))
        session = self.file("session.ctx")
        t.tools("tpm2_startauthsession", "--policy-session", "-S", session)
        try:
            t.tools("tpm2_policysecret", "-S", session, "-c", "e")
            t.tools("tpm2_activatecredential", "-c", self.SRK, "-C", self.EK, "-i", cred,
                    "-o", self.file("k"), "-P", f"session:{session}")
        finally:
            t.tools("tpm2_flushcontext", session, check=False)
        t.tools("tpm2_import", "-C", self.SRK, "-G", "aes", "-u", self.write("key.pub", parts.public),
                "-i", self.write("key.dup", parts.duplicate), "-s", self.write("key.seed", parts.in_sym_seed),
                "-k", self.file("k"), "-r", self.file("key.priv"))
        t.tools("tpm2_load", "-C", self.SRK, "-u", self.file("key.pub"), "-r", self.file("key.priv"),
                "-c", self.file(name + ".ctx"))
        t.flush_transients()
        return self.file(name + ".ctx")

    def tpm_token(self, key_ctx, aud, skn=None):
        """A SAS token whose HMAC the TPM computes with the imported key."""
        expiry = int(time.time()) + 30
        self.tpm.tools("tpm2_hmac", "-c", key_ctx, "-g", "sha256", "-o", self.file("mac"),
                       self.write("msg", string_to_sign(aud, expiry)))
        self.tpm.flush_transients()
        sig = base64.b64encode(self.read(self.file("mac"))).decode()
        return sas_token(aud, expiry=expiry, skn=skn, signature=sig)

    def test_tpm_registration_end_to_end(self):
        self.dps.add_tpm("tpm-dev-1", self.ek, assigning_polls=1)
        c = self.client()
        r = c.put(reg_path("tpm-dev-1"), self.tpm_body("tpm-dev-1"))
        self.assertEqual(r.status, 401, r)
        self.assertEqual(set(r.json), {"authenticationKey"})
        rec = self.dps.http_requests()[-1]
        self.assertEqual((rec.auth, rec.principal, rec.reason), ("tpm", "tpm-dev-1", None))
        key_ctx = self.import_auth_key(base64.b64decode(r.json["authenticationKey"]))
        token = self.tpm_token(key_ctx, audience("tpm-dev-1"), skn="registration")
        r, assigning = self.provision("tpm-dev-1", auth=token, body={"registrationId": "tpm-dev-1"})
        self.assertEqual((r.status, assigning, r.json["status"]), (200, 1, "assigned"))
        state = r.json["registrationState"]
        self.assertEqual(state["deviceId"], "tpm-dev-1")
        # the assigned state carries the key for the hub, which the device imports in turn (spec §3.4 step 5)
        hub_ctx = self.import_auth_key(base64.b64decode(state["tpm"]["authenticationKey"]), "hub-key")
        hub_token = self.tpm_token(hub_ctx, f"{self.hub.hostname}/devices/tpm-dev-1")
        self.assertTrue(self.hub.verify_token(hub_token, "tpm-dev-1"))
        self.assertEqual(self.hub_client().get("/devices/tpm-dev-1/modules", auth=hub_token).status, 200)
        # the registration key is not the hub key
        self.assertEqual(self.hub_client().get("/devices/tpm-dev-1/modules", auth=self.tpm_token(
            key_ctx, f"{self.hub.hostname}/devices/tpm-dev-1")).status, 401)

        # without a new key in the assigned state, the registration key is the hub key
        self.dps.add_tpm("tpm-dev-2", base64.b64encode(self.ek).decode(), tpm_reissue_key=False)
        r = c.put(reg_path("tpm-dev-2"), self.tpm_body("tpm-dev-2"))
        key_ctx = self.import_auth_key(base64.b64decode(r.json["authenticationKey"]))
        token = self.tpm_token(key_ctx, audience("tpm-dev-2"), skn="registration")
        body = self.tpm_body("tpm-dev-2")  # the tpm member may come along with the token
        r, _ = self.provision("tpm-dev-2", auth=token, body=body)
        self.assertNotIn("tpm", r.json["registrationState"])
        hub_token = self.tpm_token(key_ctx, f"{self.hub.hostname}/devices/tpm-dev-2")
        self.assertEqual(self.hub_client().get("/devices/tpm-dev-2/modules", auth=hub_token).status, 200)

    def test_tpm_refusals(self):
        self.dps.add_tpm("tpm-dev-3", self.ek)
        c = self.client()
        # SAS before any challenge
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.assertRefused(self.register("tpm-dev-3", key), 401, 401002, reason="no authenticationKey")
        # an EK that is not the enrolled one: 401 without a challenge
        other_ek = self.aziot_tpm.marshal_public(self.aziot_tpm.ek_rsa_public(secrets.token_bytes(256)))
        body = self.tpm_body("tpm-dev-3")
        body["tpm"]["endorsementKey"] = base64.b64encode(other_ek).decode()
        self.assertRefused(c.put(reg_path("tpm-dev-3"), body), 401, 401002, "Unauthorized", "endorsementKey")
        # not enrolled; a registrationId not the path's; a SRK that is not a storage key
        self.assertRefused(c.put(reg_path("tpm-dev-4"), self.tpm_body("tpm-dev-4")), 401, 401002,
                           reason="no TPM enrollment")
        body = self.tpm_body("tpm-dev-3")
        body["registrationId"] = "tpm-dev-x"
        self.assertRefused(c.put(reg_path("tpm-dev-3"), body), 400, 400000)
        for srk in (b"garbage", self.ek[:50]):
            body = self.tpm_body("tpm-dev-3")
            body["tpm"]["storageRootKey"] = base64.b64encode(srk).decode()
            self.assertRefused(c.put(reg_path("tpm-dev-3"), body), 400, 400000, reason="storageRootKey")
        body = self.tpm_body("tpm-dev-3")
        body["tpm"] = {"endorsementKey": "%%%"}
        self.assertRefused(c.put(reg_path("tpm-dev-3"), body), 400, 400000)
        # each challenge has a fresh key, and only the last one counts
        first = c.put(reg_path("tpm-dev-3"), self.tpm_body("tpm-dev-3")).json["authenticationKey"]
        first_ctx = self.import_auth_key(base64.b64decode(first))
        token = self.tpm_token(first_ctx, audience("tpm-dev-3"), skn="registration")
        second = c.put(reg_path("tpm-dev-3"), self.tpm_body("tpm-dev-3")).json["authenticationKey"]
        self.assertNotEqual(first, second)
        plain = {"registrationId": "tpm-dev-3"}
        self.assertRefused(c.put(reg_path("tpm-dev-3"), plain, auth=token), 401, 401002,
                           reason="signature mismatch")
        second_ctx = self.import_auth_key(base64.b64decode(second), "second")
        token = self.tpm_token(second_ctx, audience("tpm-dev-3"), skn="registration")
        self.assertEqual(c.put(reg_path("tpm-dev-3"), plain, auth=token).status, 202)
        bad_skn = self.tpm_token(second_ctx, audience("tpm-dev-3"))
        self.assertRefused(c.put(reg_path("tpm-dev-3"), plain, auth=bad_skn), 401, 401002, reason="skn")


class TestFaults(DpsTestCase):
    def setUp(self):
        super().setUp()
        self.e = self.dps.add_symmetric_key("f-dev", assigning_polls=1)
        self.auth = sas_token(audience("f-dev"), self.e.primary_key, skn="registration")

    def reg(self, **kw):
        return self.client(**kw).put(reg_path("f-dev"), {"registrationId": "f-dev"}, auth=self.auth)

    def test_fail_429_then_500(self):
        self.dps.fail(429, retry_after=7, count=2)
        for _ in range(2):
            r = self.reg()
            self.assertRefused(r, 429, 429001)
            self.assertEqual(r.headers["retry-after"], "7")
        self.assertEqual(self.dps.http_requests()[-1].injected, "fail 429")
        op = self.reg().json["operationId"]
        self.dps.fail(500, routes=["operation-status"], count=1)
        self.assertEqual(self.reg().status, 202)  # register is not affected
        self.assertRefused(self.client().get(op_path("f-dev", op), auth=self.auth), 500, 500000)
        self.assertEqual(self.client().get(op_path("f-dev", op), auth=self.auth).status, 202)
        # before authentication: a throttled service says so to anyone
        self.dps.fail(503, body=b"", count=1)
        r = self.client().put(reg_path("f-dev"), {"registrationId": "f-dev"})
        self.assertEqual((r.status, r.body), (503, b""))
        self.dps.fail(400, body={"errorCode": 400999, "message": "custom"})
        self.assertEqual(self.reg().json, {"errorCode": 400999, "message": "custom"})
        self.dps.clear_faults()
        self.assertEqual(self.reg().status, 202)

    def test_garbage_empty_and_content_type(self):
        self.dps.body_mode = "garbage"
        r = self.reg()
        self.assertEqual(r.status, 202)
        self.assertIn("application/json", r.headers["content-type"])
        with self.assertRaises(ValueError):
            json.loads(r.body)
        self.assertTrue(r.body.startswith(b'{"operationId": '))
        self.dps.body_mode = "empty"
        r = self.reg()
        self.assertEqual((r.status, r.body, r.headers["content-length"]), (202, b"", "0"))
        self.dps.body_mode = "json"
        self.dps.content_type = "text/html"
        r = self.reg()
        self.assertEqual((r.headers["content-type"], r.json["status"]), ("text/html", "assigning"))
        self.dps.content_type = ""
        self.assertNotIn("content-type", self.reg().headers)
        # limited to some routes
        self.dps.fault_routes = {"operation-status"}
        r = self.reg()
        self.assertIn("application/json", r.headers["content-type"])
        self.assertNotIn("content-type", self.client().get(op_path("f-dev", r.json["operationId"]),
                                                          auth=self.auth).headers)
        # reshaping an answer in-process: an assigning state without registrationId
        self.dps.clear_faults()

        def drop_rid(rec, status, obj):
            if status == 202 and "registrationState" in obj:
                del obj["registrationState"]["registrationId"]
            return obj
        self.dps.rewrite = drop_rid
        op = self.reg().json["operationId"]
        self.assertEqual(self.client().get(op_path("f-dev", op), auth=self.auth).json["registrationState"],
                         {"status": "assigning"})

    def test_delay_and_timeout(self):
        self.dps.delay = 0.6
        t = time.monotonic()
        self.assertEqual(self.reg().status, 202)
        self.assertGreaterEqual(time.monotonic() - t, 0.6)
        self.dps.delay = 30
        t = time.monotonic()
        with self.assertRaises((TimeoutError, socket.timeout)):
            self.reg(timeout=0.3)
        self.assertLess(time.monotonic() - t, 5)
        # stop() ends a hang (the test does not wait 30 s)

    def test_down_and_up(self):
        port = self.dps.port
        c = self.client()
        self.assertEqual(c.put(reg_path("f-dev"), {"registrationId": "f-dev"}, auth=self.auth,
                               keep_alive=True).status, 202)
        self.dps.down()
        self.assertFalse(self.dps.is_up)
        with self.assertRaises(ConnectionRefusedError):
            self.reg()
        # an open keep-alive connection is cut too
        with self.assertRaises(NETWORK_ERRORS):
            c.put(reg_path("f-dev"), {"registrationId": "f-dev"}, auth=self.auth, keep_alive=True)
        c.close()
        self.dps.up()
        self.assertEqual(self.dps.port, port)
        self.assertEqual(self.reg().status, 202)

    def test_drop_connections(self):
        self.dps.drop_connections = True
        with self.assertRaises(NETWORK_ERRORS):
            self.reg()
        self.assertEqual(self.dps.tls_errors(), ["dropped by drop_connections"])
        self.dps.drop_connections = False
        self.assertEqual(self.reg().status, 202)

    def test_log_and_wait(self):
        with self.assertRaises(TimeoutError):
            self.dps.wait_for_requests(1, timeout=0.1)
        threading.Timer(0.2, self.reg).start()
        rec = self.dps.wait_for_requests(1, route="register", timeout=5)[0]
        self.assertEqual(rec.headers["authorization"], self.auth)
        self.assertEqual(rec.outcome, "202")
        logged = json.loads(rec.to_json())
        self.assertEqual((logged["method"], logged["route"], logged["auth"], logged["status"]),
                         ("PUT", "register", "sas", 202))
        self.dps.clear_log()
        self.assertEqual(self.dps.requests, [])


class TestCli(DpsTestCase):
    def setUp(self):
        pass  # the servers are in the child process

    def test_script_with_hub_and_control(self):
        d = os.path.join(self.tmp, "cli")
        p, info = self.start_script("mock_dps.py", "--dir", d, "--scope", SCOPE, "--with-hub",
                                    "--symmetric", "cli-dev", "--assigning-polls", "1", "--control")
        ca, key = info["SERVER_CA"], info["KEY_cli-dev"]
        dps = Client(info["URL"], ca)
        auth = sas_token(audience("cli-dev"), key, skn="registration")
        op = dps.put(reg_path("cli-dev"), {"registrationId": "cli-dev"}, auth=auth).json["operationId"]
        self.assertEqual(dps.get(op_path("cli-dev", op), auth=auth).status, 202)
        state = dps.get(op_path("cli-dev", op), auth=auth).json["registrationState"]
        self.assertEqual(state["assignedHub"], info["HUB_HOSTNAME"])
        hub = Client(info["HUB_URL"], ca, api_version=HUB_API)
        hub_auth = sas_token(f"{info['HUB_HOSTNAME']}/devices/cli-dev", key)
        self.assertEqual(hub.get("/devices/cli-dev/modules", auth=hub_auth).json, [])
        # the control channel
        def ctl(method, path, obj=None):
            return control(info["CONTROL_URL"], method, path, obj)

        status, enr = ctl("POST", "/enrollments", {"kind": "symmetric-group", "name": "g",
                                                   "assigningPolls": 0})
        self.assertEqual(status, 200, enr)
        dkey = group_device_key(enr["primaryKey"], "g-dev")
        gauth = sas_token(audience("g-dev"), dkey, skn="registration")
        op = dps.put(reg_path("g-dev"), {"registrationId": "g-dev"}, auth=gauth).json["operationId"]
        state = dps.get(op_path("g-dev", op), auth=gauth).json["registrationState"]
        self.assertEqual(state["deviceId"], "g-dev")
        self.assertEqual(ctl("POST", "/enrollments", {"kind": "nonsense", "name": "x"})[0], 400)
        self.assertEqual(ctl("POST", "/config", {"nonsense": 1})[0], 400)
        self.assertEqual(ctl("POST", "/fail", {"status": 429, "retry_after": 3, "count": 1})[0], 200)
        r = dps.put(reg_path("cli-dev"), {"registrationId": "cli-dev"}, auth=auth)
        self.assertEqual((r.status, r.headers["retry-after"], r.json["errorCode"]), (429, "3", 429001))
        garbage = {"body_mode": "garbage", "fault_routes": ["register"]}
        self.assertEqual(ctl("POST", "/config", garbage)[0], 200)
        with self.assertRaises(ValueError):
            dps.put(reg_path("cli-dev"), {"registrationId": "cli-dev"}, auth=auth).json
        ctl("POST", "/clear-faults")
        self.assertEqual(ctl("POST", "/down"), (200, {"up": False}))
        with self.assertRaises(ConnectionRefusedError):
            dps.put(reg_path("cli-dev"), {"registrationId": "cli-dev"}, auth=auth)
        self.assertEqual(ctl("POST", "/up"), (200, {"up": True}))
        status, log = ctl("GET", "/requests")
        self.assertEqual([e["status"] for e in log if e["route"] == "register"][-3:], [202, 429, 202])
        self.assertEqual(log[0]["auth"], "sas")
        status, regs = ctl("GET", "/registrations")
        self.assertEqual(regs["g-dev"]["deviceId"], "g-dev")
        # SIGUSR1 takes both down, SIGUSR2 brings them back
        p.send_signal(signal.SIGUSR1)
        wait_for(lambda: refused(dps, auth) and refused(hub, hub_auth, hub=True))
        p.send_signal(signal.SIGUSR2)
        wait_for(lambda: not refused(dps, auth))
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)
        with open(info["LOG"]) as f:
            self.assertEqual(json.loads(f.readline())["route"], "register")


def refused(client, auth, hub=False):
    try:
        if hub:
            client.get("/devices/cli-dev/modules", auth=auth)
        else:
            client.put(reg_path("cli-dev"), {"registrationId": "cli-dev"}, auth=auth)
        return False
    except ConnectionRefusedError:
        return True
    except (ConnectionResetError, ssl.SSLError, OSError):
        return False  # accepted by the kernel while going down


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


if __name__ == "__main__":
    unittest.main(verbosity=2)
