#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-certd's EST issuance and the renewal of EST identities, over D-Bus, against the mock EST
server (tests/cloud/mock_est.py: its own PKI, HTTPS, Basic and client-certificate authentication
enforced), with the real keyd holding every key and the real polkitd (the stack of test_certs.py).

The device's bootstrap identity is what a real device has: a certificate issued by the EST
operator's bootstrap CA and its key, given to certd as a preloaded certificate and to keyd as a
preloaded key. The mock's server CA is given as a preloaded certificate named by trusted_certs.

Renewal runs on minute-scale (here: seconds-scale) lifetimes: the mock issues certificates that live
a few seconds, and [cert_issuance.est.identity_auto_renew] sets a 50% threshold.

Environment (set by meson): as test_certs.py.
"""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_certs import (  # noqa: E402
    CERT_IFACE, CERTD, CERTS_NAME, FAILED, INVALID_PARAMETER, NOT_AUTHORIZED, PROPERTIES_IFACE, PROVIDER,
    PROVIDER_DIR, SOURCE_DIR, USER_A, CallError, CertdTestCase, cert_path, make_csr, pem_blocks,
    upstream_file_name, wait_until)

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cloud"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import mock_est  # noqa: E402
from aziot_proxy import ConnectProxy  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402
from cryptography import x509  # noqa: E402

BASIC = ("device-user", "s3cret-pass")
RENEW_TIMEOUT = 30


def spki(cert):
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


class EstTestCase(CertdTestCase):
    """One mock EST server per class (its PKI made once); a fresh certd per test."""

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.est_dir = tempfile.mkdtemp(prefix="aziot-est-")
        cls.est = mock_est.MockEst(cls.est_dir)
        cls.bootstrap_cert, cls.bootstrap_key = cls.est.make_client_cert("bootstrap",
                                                                         cn="device-boot")
        for path in (cls.est_dir, cls.bootstrap_key):
            os.chmod(path, 0o700 if os.path.isdir(path) else 0o600)
        cls.est.start()
        try:
            super().setUpClass()
        except BaseException:
            cls.est.stop()
            raise

    @classmethod
    def keyd_extra_config(cls):
        return f'\n[preloaded_keys]\nbootstrap = "file://{cls.bootstrap_key}"\n'

    @classmethod
    def tearDownClass(cls):
        cls.est.stop()
        super().tearDownClass()

    def setUp(self):
        self.est.policy = mock_est.Policy()
        self.est.labels = {}
        self.est.clear_faults()
        self.est.revoked = set()
        self.mark = len(self.est.requests)
        super().setUp()

    def tearDown(self):
        super().tearDown()
        # The identity key pairs are per test.
        for key_id in ("est-id", "est-id-temp"):
            try:
                handle = self.conn.call_blocking("org.aziot.Keys1", "/org/aziot/Keys1",
                                                 "org.aziot.Keys1", "LoadKeyPair", "sa{sv}",
                                                 [key_id, {}], timeout=10)
                self.conn.call_blocking("org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1",
                                        "DeleteKeyPair", "sa{sv}", [str(handle), {}], timeout=10)
            except Exception:
                pass

    # -- configuration --------------------------------------------------------------------------

    def est_config(self, auth="basic", url=None, trusted=True, renew=None, bootstrap=True,
                   extra=""):
        """[cert_issuance] for an EST-issued "device" (and "device2"), with the mock's server CA and
        the bootstrap certificate preloaded."""
        lines = ["[preloaded_certs]",
                 f'est-server-ca = "file://{self.est.server_ca_path}"',
                 f'est-bootstrap = "file://{self.bootstrap_cert}"',
                 "", "[cert_issuance.est]"]
        if trusted:
            lines.append('trusted_certs = ["est-server-ca"]')
        if auth in ("basic", "both"):
            lines += [f'username = "{BASIC[0]}"', f'password = "{BASIC[1]}"']
        if auth in ("x509", "both"):
            lines += ['identity_cert = "est-id"', 'identity_pk = "est-id"']
            if bootstrap:
                lines += ['bootstrap_identity_cert = "est-bootstrap"',
                          'bootstrap_identity_pk = "bootstrap"']
        if renew:
            lines += ["", "[cert_issuance.est.identity_auto_renew]"]
            lines += [f'{k} = {v!r}'.replace("'", '"') if isinstance(v, str) else
                      f'{k} = {str(v).lower()}' for k, v in renew.items()]
        lines += ["", "[cert_issuance.est.urls]", f'default = "{url or self.est.url}"', "",
                  "[cert_issuance.device]", 'method = "est"', "",
                  "[cert_issuance.device2]", 'method = "est"', "", extra]
        return "\n".join(lines) + "\n"

    def restart_certd(self, config, env=None):
        if "certd" in self.stack.processes:
            self.stack.stop_process("certd")
        self.write_config(config)
        self.certd = self.start_certd(env=env)

    def requests(self, op=None):
        return [r for r in self.est.requests[self.mark:]
                if r.method and (op is None or r.op == op)]

    def create(self, cert_id="device", cn="device-1", key=None):
        key, csr = make_csr(cn, key=key)
        return key, str(self.call("CreateCertificate", cert_id, csr, {}))

    def key_spki(self, key_id):
        """The public key keyd holds as key_id, through the provider (as any OpenSSL user); None
        when there is no such key."""
        out = os.path.join(self.dir, f"{key_id}.spki.der")
        r = self.openssl("pkey", *PROVIDER, "-in", f"aziot-key:pair/{key_id}", "-pubout",
                         "-outform", "DER", "-out", out, check=False)
        if r.returncode != 0:
            return None
        with open(out, "rb") as f:
            return f.read()

    def identity(self):
        return pem_blocks(self.stored("est-id"))[0]

    def assertIdentityConsistent(self):
        """The stored EST identity certificate is for the key keyd holds as est-id."""
        self.assertEqual(spki(self.identity()), self.key_spki("est-id"))

    def renewal_props(self, cert_id="est-id"):
        props = self.conn.call_blocking(CERTS_NAME, cert_path(cert_id), PROPERTIES_IFACE,
                                        "GetAll", "s", [CERT_IFACE], timeout=10)
        return str(props["RenewalState"]), int(props["NextRenewal"])

    def verify_est(self, pem):
        """openssl verify of the leaf against the chain certd returned after it (the /cacerts)."""
        blocks = pem_blocks(pem)
        leaf = os.path.join(self.dir, "est-leaf.pem")
        chain = os.path.join(self.dir, "est-cacerts.pem")
        with open(leaf, "wb") as f:
            f.write(blocks[0].public_bytes(serialization.Encoding.PEM))
        with open(chain, "wb") as f:
            for b in blocks[1:]:
                f.write(b.public_bytes(serialization.Encoding.PEM))
        return self.openssl("verify", "-CAfile", chain, leaf, check=False)


class EstIssuanceTest(EstTestCase):
    """CreateCertificate with method "est"."""

    def test_basic_auth_only(self):
        self.est.policy = mock_est.Policy(basic=BASIC)
        self.restart_certd(self.est_config("basic"))
        key, pem = self.create()
        blocks = pem_blocks(pem)
        self.assertGreaterEqual(len(blocks), 2)
        self.assertEqual(spki(blocks[0]), key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.assertEqual(blocks[0].subject.rfc4514_string(), "CN=device-1")
        r = self.verify_est(pem)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # Stored where upstream stores it, as returned.
        self.assertEqual(self.stored("device"), pem)
        self.assertEqual(str(self.call("GetCertificate", "device", {})), pem)
        # On the wire: two requests, Basic auth, no client certificate, the CSR as upstream sends it.
        enroll, = self.requests("simpleenroll")
        cacerts, = self.requests("cacerts")
        for req in (enroll, cacerts):
            self.assertIsNone(req.client_cert)
            self.assertEqual(req.username, BASIC[0])
            self.assertTrue(req.password_ok)
            self.assertNotIn("user-agent", req.headers)
            self.assertNotIn("accept", req.headers)
        self.assertEqual(enroll.method, "POST")
        self.assertEqual(enroll.headers["content-type"], "application/pkcs10")
        self.assertEqual(enroll.headers["content-transfer-encoding"], "base64")
        lines = enroll.body.decode().split("\n")
        self.assertEqual(lines[-1], "")
        self.assertTrue(all(len(line) == 64 for line in lines[:-2]), lines)
        self.assertTrue(0 < len(lines[-2]) <= 64)
        self.assertEqual(enroll.csr.subject.rfc4514_string(), "CN=device-1")
        # Serials differ from one enrollment to the next.
        _, pem2 = self.create("device2", "device-2")
        self.assertNotEqual(pem_blocks(pem2)[0].serial_number, blocks[0].serial_number)

    def test_wrong_password_fails_clearly(self):
        self.est.policy = mock_est.Policy(basic=(BASIC[0], "another"))
        self.restart_certd(self.est_config("basic"))
        e = self.assertFails(FAILED, None, self.create)
        self.assertIn("401", e.message)
        self.assertIn("did not return successful response", e.message)
        self.assertNotIn(BASIC[1], e.message)
        self.assertNotIn(BASIC[1], self.certd.log())
        self.assertFalse(os.path.exists(os.path.join(self.certs_dir,
                                                     upstream_file_name("device"))))

    def test_untrusted_server_fails_clearly(self):
        self.est.policy = mock_est.Policy(basic=BASIC)
        self.restart_certd(self.est_config("basic", trusted=False))
        e = self.assertFails(FAILED, None, self.create)
        self.assertIn("EST server", e.message)
        self.assertRegex(e.message, "(?i)certificate|SSL|TLS")
        self.assertEqual(self.requests(), [])  # nothing reached the server's HTTP layer

    def test_server_down_and_bad_answers(self):
        self.est.policy = mock_est.Policy(basic=BASIC)
        self.restart_certd(self.est_config("basic"))
        cases = [
            (lambda: self.est.fail(500, body="boom"), "500 boom"),
            (lambda: self.est.fail(202, retry_after=5), "202"),
            (lambda: setattr(self.est, "body_mode", "garbage"), "neither PEM nor base64"),
            (lambda: setattr(self.est, "body_mode", "base64-garbage"), "not a PKCS#7"),
            (lambda: setattr(self.est, "content_type", "text/plain"),
             "not application/pkcs7-mime"),
            (lambda: setattr(self.est, "content_type", ""), "no Content-Type"),
        ]
        for fault, words in cases:
            with self.subTest(words=words):
                self.est.clear_faults()
                fault()
                e = self.assertFails(FAILED, None, self.create)
                self.assertIn(words, e.message)
        self.est.clear_faults()
        # Every form RFC 7030 allows is understood.
        for mode in ("base64", "base64-oneline", "base64-crlf", "pem"):
            with self.subTest(mode=mode):
                self.est.body_mode = mode
                _, pem = self.create()
                self.assertEqual(self.verify_est(pem).returncode, 0)
        self.est.clear_faults()
        self.est.down()
        try:
            e = self.assertFails(FAILED, None, self.create)
            self.assertIn("EST server", e.message)
        finally:
            self.est.up()
        _, pem = self.create()  # and back
        self.assertEqual(self.verify_est(pem).returncode, 0)

    def test_bootstrap_then_identity_then_device(self):
        self.est.policy = mock_est.Policy(client_cert=True)
        self.restart_certd(self.est_config("x509"))
        _, pem = self.create()
        self.assertEqual(self.verify_est(pem).returncode, 0)
        enrolls = self.requests("simpleenroll")
        self.assertEqual(len(enrolls), 2, enrolls)
        # 1: the identity, with the bootstrap certificate, a CSR certd made (EKU clientAuth,
        # subject of the caller's CSR, key est-id in keyd).
        self.assertEqual(enrolls[0].client_cert_source, "bootstrap")
        self.assertEqual(enrolls[0].client_cert_subject, "CN=device-boot")
        self.assertEqual(enrolls[0].csr.subject.rfc4514_string(), "CN=device-1")
        eku = enrolls[0].csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertIsNone(enrolls[0].username)
        # 2: the device, with the identity certd got.
        self.assertEqual(enrolls[1].client_cert_source, "est")
        identity = self.identity()
        self.assertEqual(enrolls[1].client_cert.serial_number, identity.serial_number)
        self.assertIdentityConsistent()
        self.assertIn("est-id", [str(i) for i in self.call("ListCertificates", {})])
        # The identity is tracked for renewal.
        state, next_renewal = self.renewal_props()
        self.assertEqual(state, "scheduled")
        self.assertGreater(next_renewal, time.time() * 1e6)
        # The next certificate needs no bootstrap.
        self.create("device2", "device-2")
        enrolls = self.requests("simpleenroll")
        self.assertEqual(len(enrolls), 3)
        self.assertEqual(enrolls[2].client_cert_source, "est")

    def test_client_cert_and_basic(self):
        self.est.policy = mock_est.Policy(basic=BASIC, client_cert=True)
        self.restart_certd(self.est_config("both"))
        _, pem = self.create()
        self.assertEqual(self.verify_est(pem).returncode, 0)
        for req in self.requests("simpleenroll"):
            self.assertEqual(req.username, BASIC[0])
            self.assertTrue(req.password_ok)
            self.assertIsNotNone(req.client_cert)

    def test_client_cert_required_but_no_identity_configured(self):
        self.est.policy = mock_est.Policy(client_cert=True)
        self.restart_certd(self.est_config("basic"))
        e = self.assertFails(FAILED, None, self.create)
        self.assertIn("403", e.message)

    def test_no_identity_and_no_bootstrap(self):
        self.est.policy = mock_est.Policy(client_cert=True)
        self.restart_certd(self.est_config("x509", bootstrap=False))
        e = self.assertFails(FAILED, None, self.create)
        self.assertIn("no bootstrap identity", e.message)
        self.assertEqual(self.requests(), [])

    def test_refused_bootstrap_certificate(self):
        self.est.policy = mock_est.Policy(client_cert=True, accept_bootstrap=False)
        self.restart_certd(self.est_config("x509"))
        e = self.assertFails(FAILED, None, self.create)
        self.assertIn("bootstrap identity", e.message)
        self.assertIn("403", e.message)
        self.assertFalse(os.path.exists(os.path.join(self.certs_dir,
                                                     upstream_file_name("est-id"))))

    def test_url_resolution(self):
        self.est.policy = mock_est.Policy(basic=BASIC)
        extra = (f'[cert_issuance.labelled]\nmethod = "est"\nurl = "{self.est.url_for("one")}"\n'
                 f'\n[cert_issuance.est.urls]\nother = "{self.est.url_for("two")}"\n')
        config = self.est_config("basic").replace("[cert_issuance.est.urls]\n", "")
        config = config.replace(f'default = "{self.est.url}"\n', "")
        config += extra + f'default = "{self.est.url}/"\n'
        config += '\n[cert_issuance.other]\nmethod = "est"\n'
        self.restart_certd(config)
        self.create("labelled")
        self.create("other")
        self.create("device")
        paths = [r.path for r in self.requests("simpleenroll")]
        self.assertEqual(paths, ["/.well-known/est/one/simpleenroll",
                                 "/.well-known/est/two/simpleenroll",
                                 "/.well-known/est/simpleenroll"])

    def test_through_https_proxy(self):
        self.est.policy = mock_est.Policy(basic=BASIC)
        with ConnectProxy(credentials=("px", "py")) as proxy:
            self.restart_certd(self.est_config("basic"), env={"HTTPS_PROXY": proxy.url})
            _, pem = self.create()
            self.assertEqual(self.verify_est(pem).returncode, 0)
            self.assertEqual(len(proxy.targets), 2)
            self.assertTrue(all(t == f"127.0.0.1:{self.est.port}" for t in proxy.targets))
            self.assertEqual(proxy.refused, [])
        # A proxy that is not there: the request fails, it does not go direct.
        self.restart_certd(self.est_config("basic"),
                           env={"https_proxy": "http://127.0.0.1:9"})
        e = self.assertFails(FAILED, None, self.create)
        self.assertIn("EST server", e.message)

    def test_unauthorized_caller_reaches_no_server(self):
        self.est.policy = mock_est.Policy(basic=BASIC)
        self.restart_certd(self.est_config("basic"))
        _, csr = make_csr("device-1")
        with self.assertRaises(CallError) as cm:
            self.call_as(USER_A, "CreateCertificate", "device", csr, {})
        self.assertEqual(cm.exception.name, NOT_AUTHORIZED)
        self.assertEqual(cm.exception.message,
                         f"user {self.uid_a} is not authorized to modify the cert device")
        self.assertEqual(self.requests(), [])
        # With a principal for the id, the same user may.
        self.write_principals([(self.uid_a, ["device"])])
        wait_until(lambda: "Configuration reloaded" in self.certd.log(), 10,
                   "the principals to be reloaded")
        deadline = time.monotonic() + 10
        while True:
            try:
                self.call_as(USER_A, "CreateCertificate", "device", csr, {})
                break
            except CallError as e:
                if e.name != NOT_AUTHORIZED or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertEqual(len(self.requests("simpleenroll")), 1)

    def test_bad_csr(self):
        self.est.policy = mock_est.Policy(basic=BASIC)
        self.restart_certd(self.est_config("basic"))
        _, csr = make_csr("device-1")
        bad = csr.replace(csr.splitlines()[3], csr.splitlines()[3][::-1])
        self.assertFails(INVALID_PARAMETER, 'parameter "csr" has an invalid value',
                         self.call, "CreateCertificate", "device", bad, {})
        self.assertEqual(self.requests(), [])

    def test_configuration_errors(self):
        self.stack.stop_process("certd")
        good = self.est_config("basic")
        for bad, words in [
            (good.replace(f'default = "{self.est.url}"', 'default = "ftp://x"'), "https://"),
            (good.replace(f'password = "{BASIC[1]}"\n', ""), "go together"),
            (good.replace('trusted_certs = ["est-server-ca"]', 'trusted_certs = ["nope"]'),
             "trusted_certs"),
            (good + '[cert_issuance.z]\nmethod = "est"\nbootstrap_identity_cert = "b"\n'
                    'bootstrap_identity_pk = "b"\n', "bootstrap identity needs"),
            (good.replace("[cert_issuance.est.urls]",
                          '[cert_issuance.est.identity_auto_renew]\nthreshold = "0%"\n\n'
                          '[cert_issuance.est.urls]'), "threshold"),
        ]:
            with self.subTest(words=words):
                self.write_config(bad)
                r = subprocess.run([CERTD, "--idle-timeout=0"],
                                   env=self.stack.child_env({
                                       "AZIOT_CERTD_CONFIG": self.config,
                                       "AZIOT_CERTD_CONFIG_DIR": self.config_dir,
                                       "OPENSSL_MODULES": PROVIDER_DIR}),
                                   capture_output=True, text=True, timeout=30)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(words, r.stderr)
        self.write_config(good)
        self.certd = self.start_certd()


class EstRenewalTest(EstTestCase):
    """The renewal engine on the EST identity: seconds-scale lifetimes."""

    LIFETIME = 12

    def start_x509(self, renew=None, env=None):
        self.est.policy = mock_est.Policy(client_cert=True, validity=self.LIFETIME)
        self.restart_certd(self.est_config("x509", renew=renew or {"threshold": "50%",
                                                                   "retry": "10%"}), env=env)
        self.create()
        return self.identity()

    def test_renews_before_the_threshold_and_rotates_the_key(self):
        old = self.start_x509()
        old_key = self.key_spki("est-id")
        self.assertEqual(spki(old), old_key)
        self.assertEqual(self.renewal_props()[0], "scheduled")
        wait_until(lambda: self.identity().serial_number != old.serial_number, RENEW_TIMEOUT,
                   "the identity to be renewed")
        new = self.identity()
        renewed_at = time.time()
        # Renewed after the threshold (50% of the lifetime), well before the end.
        self.assertGreaterEqual(renewed_at + 1, old.not_valid_before.timestamp() +
                                self.LIFETIME * 0.5 - 2)
        self.assertNotEqual(spki(new), spki(old))
        self.assertIdentityConsistent()
        self.assertIsNone(self.key_spki("est-id-temp"))
        self.assertEqual(new.subject, old.subject)
        # /simplereenroll, authenticated by the identity being renewed.
        reenroll = self.requests("simplereenroll")
        self.assertGreaterEqual(len(reenroll), 1)
        self.assertEqual(reenroll[0].client_cert.serial_number, old.serial_number)
        self.assertIn("Renewed the certificate est-id", self.certd.log())
        wait_until(lambda: self.renewal_props()[0] == "scheduled", 5, "the next schedule")
        # The renewed identity works for the next device certificate.
        self.create("device2", "device-2")
        last = self.requests("simpleenroll")[-1]
        self.assertEqual(last.client_cert.serial_number,
                         self.identity().serial_number)

    def test_signal_on_renewal(self):
        monitor = subprocess.Popen(["gdbus", "monitor", "--system", "--dest", CERTS_NAME],
                                   env=self.stack.child_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        self.addCleanup(monitor.wait, 10)
        self.addCleanup(monitor.terminate)
        old = self.start_x509()
        wait_until(lambda: self.identity().serial_number != old.serial_number, RENEW_TIMEOUT,
                   "the identity to be renewed")
        time.sleep(0.5)
        monitor.terminate()
        out, _ = monitor.communicate(timeout=10)
        self.assertIn("org.aziot.Certificates1.CertificateRenewed ('est-id',)", out)

    def test_without_key_rotation(self):
        old = self.start_x509({"threshold": "50%", "retry": "10%", "rotate_key": False})
        wait_until(lambda: self.identity().serial_number != old.serial_number, RENEW_TIMEOUT,
                   "the identity to be renewed")
        self.assertEqual(spki(self.identity()), spki(old))
        self.assertIdentityConsistent()

    def test_server_down_keeps_the_old_certificate_and_retries(self):
        old = self.start_x509({"threshold": "50%", "retry": "25%"})
        self.est.down()
        try:
            wait_until(lambda: "Renewing est-id failed" in self.certd.log(), RENEW_TIMEOUT,
                       "a failed renewal")
            self.assertEqual(self.renewal_props()[0], "retrying")
            self.assertEqual(self.identity().serial_number, old.serial_number)
            self.assertIdentityConsistent()
            failures = self.certd.log().count("Renewing est-id failed")
            wait_until(lambda: self.certd.log().count("Renewing est-id failed") > failures,
                       RENEW_TIMEOUT, "a retry")
            self.assertEqual(self.identity().serial_number, old.serial_number)
            self.assertIdentityConsistent()
        finally:
            self.est.up()
        wait_until(lambda: self.identity().serial_number != old.serial_number, RENEW_TIMEOUT,
                   "the renewal once the server is back")
        self.assertIdentityConsistent()

    def test_expired_identity_renews_with_the_bootstrap(self):
        old = self.start_x509({"threshold": "50%", "retry": "25%"})
        self.est.fail(500, ops={"simplereenroll"})
        wait_until(lambda: time.time() > old.not_valid_after.replace(
            tzinfo=__import__("datetime").timezone.utc).timestamp(), RENEW_TIMEOUT,
            "the identity to expire")
        wait_until(lambda: self.identity().serial_number != old.serial_number, RENEW_TIMEOUT,
                   "the renewal with the bootstrap identity")
        boot = [r for r in self.requests("simpleenroll") if r.client_cert_source == "bootstrap"]
        self.assertEqual(len(boot), 2, boot)  # the first identity, then its renewal
        self.assertIdentityConsistent()

    def test_device_certificate_waits_for_a_due_identity(self):
        old = self.start_x509({"threshold": "50%", "retry": "10%"})
        self.est.delay = 2  # the renewal is in flight when the next request comes
        wait_until(lambda: self.renewal_props()[0] == "renewing", RENEW_TIMEOUT,
                   "the renewal to start")
        self.est.delay = 0
        self.create("device2", "device-2")
        last = self.requests("simpleenroll")[-1]
        self.assertNotEqual(last.client_cert.serial_number, old.serial_number)
        self.assertEqual(last.client_cert.serial_number, self.identity().serial_number)


class EstReloadTest(EstTestCase):
    def test_reload_rebuilds_the_renewal_set(self):
        self.est.policy = mock_est.Policy(client_cert=True)  # 30-day certificates
        config = self.est_config("x509")
        self.restart_certd(config)
        self.create()
        state, first = self.renewal_props()
        self.assertEqual(state, "scheduled")
        lifetime = self.identity().not_valid_after - self.identity().not_valid_before
        start = self.identity().not_valid_before.replace(
            tzinfo=__import__("datetime").timezone.utc).timestamp()
        self.assertAlmostEqual(first / 1e6, start + lifetime.total_seconds() * 0.8, delta=2)
        # Another threshold: rescheduled.
        self.write_config(self.est_config("x509", renew={"threshold": "50%"}))
        wait_until(lambda: self.renewal_props()[1] != first, 10, "the new schedule")
        self.assertAlmostEqual(self.renewal_props()[1] / 1e6,
                               start + lifetime.total_seconds() * 0.5, delta=2)
        # The configuration no longer names the identity: not renewed any more.
        self.write_config(self.est_config("basic"))
        wait_until(lambda: self.renewal_props()[0] == "none", 10, "the identity to be dropped")
        self.assertEqual(self.renewal_props()[1], 0)
        # Named again.
        self.write_config(config)
        wait_until(lambda: self.renewal_props()[0] == "scheduled", 10,
                   "the identity to be tracked again")
        # A reload that cannot load trusted_certs keeps everything as it was.
        self.write_config(config.replace('trusted_certs = ["est-server-ca"]',
                                         'trusted_certs = ["missing"]'))
        wait_until(lambda: "Keeping the previous configuration" in self.certd.log(), 10,
                   "the reload to be refused")
        self.assertEqual(self.renewal_props()[0], "scheduled")
        self.create("device2", "device-2")


class EstUpstreamHomeTest(EstTestCase):
    def test_a_home_written_by_upstream_is_served_and_renewed(self):
        """The files upstream's certd leaves (no index of ours): served, listed once the
        configuration names them, and the EST identity is tracked for renewal."""
        self.est.policy = mock_est.Policy(client_cert=True)
        config = self.est_config("x509")
        self.restart_certd(config)
        _, pem = self.create()
        identity = self.stored("est-id")
        self.stack.stop_process("certd")
        os.unlink(os.path.join(self.certs_dir, "index"))
        self.assertEqual(sorted(os.listdir(self.certs_dir)),
                         sorted([upstream_file_name("device"), upstream_file_name("est-id"),
                                 upstream_file_name("ca")]))
        self.certd = self.start_certd()
        self.assertEqual(str(self.call("GetCertificate", "est-id", {})), identity)
        self.assertEqual(str(self.call("GetCertificate", "device", {})), pem)
        listed = [str(i) for i in self.call("ListCertificates", {})]
        self.assertIn("est-id", listed)
        self.assertIn("device", listed)
        self.assertEqual(self.renewal_props()[0], "scheduled")
        # And it is used as the identity, without a new bootstrap.
        before = len(self.requests("simpleenroll"))
        self.create("device2", "device-2")
        last = self.requests("simpleenroll")
        self.assertEqual(len(last), before + 1)
        self.assertEqual(last[-1].client_cert_source, "est")


class EstCrashTest(EstTestCase):
    """kill -9 during a renewal loses neither the old nor the new certificate and key."""

    LIFETIME = 12
    RENEW = {"threshold": "50%", "retry": "10%"}

    def start_x509(self, env=None):
        self.est.policy = mock_est.Policy(client_cert=True, validity=self.LIFETIME)
        self.restart_certd(self.est_config("x509", renew=self.RENEW), env=env)
        self.create()
        return self.identity()

    def killed(self):
        process = self.stack.processes.pop("certd")
        process.popen.wait(30)
        return process.popen.returncode

    def test_kill_during_the_request(self):
        old = self.start_x509()
        self.est.delay = 5
        wait_until(lambda: self.renewal_props()[0] == "renewing", RENEW_TIMEOUT,
                   "the renewal to start")
        self.certd.popen.kill()
        self.assertEqual(self.killed(), -9)
        self.est.delay = 0
        self.assertEqual(self.identity().serial_number, old.serial_number)
        self.assertIdentityConsistent()
        self.certd = self.start_certd()
        wait_until(lambda: self.identity().serial_number != old.serial_number, RENEW_TIMEOUT,
                   "the renewal after the restart")
        self.assertIdentityConsistent()

    def crash_at(self, step):
        old = self.start_x509(env={"AZIOT_CERTD_CRASH_AT": step})
        wait_until(lambda: not self.certd.alive(), RENEW_TIMEOUT, f"certd to die at {step}")
        self.assertEqual(self.killed(), -9)
        issued = self.requests("simplereenroll")[-1].issued
        # Whatever is on disk now: a restart ends with the new certificate and the new key.
        self.certd = self.start_certd()
        wait_until(lambda: "interrupted renewal" in self.certd.log(), 10,
                   "the interrupted renewal to be dealt with")
        now = self.identity()
        self.assertEqual(now.serial_number, issued.serial_number)
        self.assertNotEqual(now.serial_number, old.serial_number)
        self.assertIdentityConsistent()
        self.assertEqual(os.listdir(os.path.join(self.home, "renewal")), [])

    def test_crash_after_the_pending_copy(self):
        self.crash_at("renewal-pending-written")

    def test_crash_after_the_key_moved(self):
        self.crash_at("renewal-key-moved")


if __name__ == "__main__":
    unittest.main(verbosity=2)
