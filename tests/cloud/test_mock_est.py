# SPDX-License-Identifier: MIT
"""The mock EST server (mock_est.py) behaves like a strict RFC 7030 server, and its fault switches do
what they say: what the certd tests stand on. Checked with curl and openssl where it matters, so that
the mock is not only right by its own Python."""

import base64
import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest
import http.client
import json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mock_est  # noqa: E402
from mock_est import MockEst, decode_pkcs7, encode_csr, est_request, make_csr, make_key  # noqa: E402
from mocktest import MockTestCase  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

USER, PASS = "est-user", "s3cret:with:colons"
CT_PKCS10 = {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"}
TLS_REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


def run(*argv, input=None, check=True):
    if not shutil.which(argv[0]):
        raise unittest.SkipTest(f"{argv[0]} is not installed")
    p = subprocess.run(argv, input=input, capture_output=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    return p


def read(path):
    with open(path, "rb") as f:
        return f.read()


def spki(obj):
    return obj.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class EstTestCase(MockTestCase):
    """One PKI directory for the whole module (keys are cheap, but loading is cheaper); a server per test."""

    TMP_PREFIX = "mock-est-"

    def start(self, **kw):
        est = MockEst(self.pki_dir, **kw).start()
        self.addCleanup(est.stop)
        return est

    def file(self, name, data):
        path = os.path.join(self.tmp, f"{self.id().rsplit('.', 1)[1]}-{name}")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def enroll(self, est, csr=None, op="simpleenroll", label=None, basic=None, cert=None, key=None,
               body=None, headers=None):
        if csr is None:
            csr = make_csr(make_key(), "device-1")
        return est_request(f"{est.url_for(label)}/{op}", "POST",
                           body if body is not None else encode_csr(csr),
                           headers=headers or CT_PKCS10, cafile=est.server_ca_path, basic=basic,
                           cert=cert, key=key)

    def cacerts(self, est, **kw):
        return est_request(est.url + "/cacerts", cafile=est.server_ca_path, **kw)

    def assertIssued(self, est, status, headers, body, csr):
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["content-type"], "application/pkcs7-mime; smime-type=certs-only")
        certs = decode_pkcs7(body)
        self.assertEqual(len(certs), 1)
        self.assertEqual(spki(certs[0]), spki(csr))
        self.assertEqual(certs[0].subject, csr.subject)
        self.assertEqual(certs[0].issuer, est.pki.est_ca.subject)
        return certs[0]


class TestEnrollBasic(EstTestCase):
    def test_curl_enroll_openssl_checks(self):
        est = self.start(basic=(USER, PASS), validity=300)
        key = make_key()
        csr = make_csr(key, "curl-device", sans=["curl-device.example"])
        body = encode_csr(csr)
        lines = body.decode().split("\n")
        self.assertTrue(all(len(line) == 64 for line in lines[:-2]) and lines[-1] == "")
        csr_b64 = self.file("csr.b64", body)
        csr_pem = self.file("csr.pem", csr.public_bytes(serialization.Encoding.PEM))
        resp = self.file("resp.p7", b"")
        hdr = self.file("resp.hdr", b"")
        run("curl", "-sS", "--fail", "--cacert", est.server_ca_path, "-u", f"{USER}:{PASS}",
            "--data-binary", f"@{csr_b64}", "-H", "Content-Type: application/pkcs10",
            "-H", "Content-Transfer-Encoding: base64", "-o", resp, "-D", hdr,
            f"{est.url}/simpleenroll")
        with open(hdr) as f:
            self.assertIn("content-type: application/pkcs7-mime; smime-type=certs-only", f.read().lower())
        with open(resp, "rb") as f:
            der = base64.b64decode(f.read())
        leaf = self.file("leaf.pem", run("openssl", "pkcs7", "-inform", "DER", "-print_certs",
                                         input=der).stdout)
        # the cert's key is the CSR's key
        self.assertEqual(run("openssl", "x509", "-in", leaf, "-noout", "-pubkey").stdout,
                         run("openssl", "req", "-in", csr_pem, "-noout", "-pubkey").stdout)
        # and it verifies against what /cacerts returns (as a client: purpose sslclient)
        run("curl", "-sS", "--fail", "--cacert", est.server_ca_path, "-o", resp, f"{est.url}/cacerts")
        with open(resp, "rb") as f:
            ca_der = base64.b64decode(f.read())
        ca = self.file("ca.pem", run("openssl", "pkcs7", "-inform", "DER", "-print_certs",
                                     input=ca_der).stdout)
        out = run("openssl", "verify", "-purpose", "sslclient", "-CAfile", ca, leaf).stdout
        self.assertIn(b": OK", out)
        cert = x509.load_pem_x509_certificate(read(leaf))
        self.assertEqual(cert.subject, csr.subject)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.CLIENT_AUTH])
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["curl-device.example"])
        self.assertFalse(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertEqual(cert.not_valid_after - cert.not_valid_before, datetime.timedelta(seconds=300))
        self.assertLess(abs((cert.not_valid_before - datetime.datetime.utcnow()).total_seconds()), 5)
        r = est.http_requests("simpleenroll")[-1]
        self.assertEqual((r.method, r.auth, r.username, r.password_ok, r.status),
                         ("POST", ["basic"], USER, True, 200))
        self.assertEqual(r.headers["content-transfer-encoding"], "base64")
        self.assertEqual(r.issued, cert)
        self.assertEqual(est.issued_certs, [cert])

    def test_rsa_csr_expect_continue_and_chunked(self):
        """An RSA-4096 CSR (certd's fallback key type), with Expect: 100-continue, and as a chunked body."""
        from cryptography.hazmat.primitives.asymmetric import rsa
        est = self.start(basic=(USER, PASS))
        csr = make_csr(rsa.generate_private_key(65537, 4096), "rsa-device")
        body = encode_csr(csr)
        self.assertGreater(len(body), 1024)
        csr_b64 = self.file("csr.b64", body)
        for extra in (["-H", "Expect: 100-continue"], ["-H", "Transfer-Encoding: chunked"]):
            with self.subTest(extra=extra):
                resp = self.file("resp.p7", b"")
                p = run("curl", "-sS", "-v", "--fail", "--cacert", est.server_ca_path, "-u", f"{USER}:{PASS}",
                        "--data-binary", f"@{csr_b64}", "-H", "Content-Type: application/pkcs10",
                        "-H", "Content-Transfer-Encoding: base64", *extra, "-o", resp,
                        f"{est.url}/simpleenroll")
                if "Expect: 100-continue" in extra:
                    self.assertIn(b"100 Continue", p.stderr)
                self.assertEqual(spki(decode_pkcs7(read(resp))[0]), spki(csr))
                self.assertEqual(est.http_requests()[-1].body, body)

    def test_serials_random_and_distinct(self):
        est = self.start()
        csr = make_csr(make_key(), "same")
        serials = {decode_pkcs7(self.enroll(est, csr)[2])[0].serial_number for _ in range(3)}
        self.assertEqual(len(serials), 3)
        self.assertTrue(all(s > 2 ** 64 for s in serials))

    def test_cacerts(self):
        est = self.start(basic=(USER, PASS))
        status, headers, body = self.cacerts(est)  # no auth needed for /cacerts (RFC 7030 §4.1.1)
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("application/pkcs7-mime"))
        self.assertEqual(decode_pkcs7(body), est.pki.est_chain)
        est.policy.auth_cacerts = True
        self.assertEqual(self.cacerts(est)[0], 401)
        self.assertEqual(self.cacerts(est, basic=(USER, PASS))[0], 200)

    def test_intermediate_chain(self):
        d = os.path.join(self.tmp, "pki-intermediate")
        est = MockEst(d, intermediate=True).start()
        self.addCleanup(est.stop)
        chain = decode_pkcs7(self.cacerts(est)[2])
        self.assertEqual(len(chain), 2)
        self.assertEqual(chain[0].issuer, chain[1].subject)
        csr = make_csr(make_key(), "d")
        leaf = decode_pkcs7(self.enroll(est, csr)[2])[0]
        self.assertEqual(leaf.issuer, chain[0].subject)
        est.enroll_with_chain = True
        certs = decode_pkcs7(self.enroll(est, csr)[2])
        self.assertEqual(len(certs), 3)
        self.assertEqual(certs[1:], chain)

    def test_wrong_or_missing_password_401(self):
        est = self.start(basic=(USER, PASS))
        for basic in (None, (USER, "wrong"), ("other", PASS), (USER, PASS + "x")):
            with self.subTest(basic=basic):
                status, headers, _ = self.enroll(est, basic=basic)
                self.assertEqual(status, 401)
                self.assertEqual(headers["www-authenticate"], 'Basic realm="mock-est"')
        status, _, _ = self.enroll(est, headers={**CT_PKCS10, "Authorization": "Basic !!!"})
        self.assertEqual(status, 401)
        self.assertEqual([r.password_ok for r in est.http_requests()], [None, False, False, False, False])
        p = run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", est.server_ca_path,
                "-u", f"{USER}:nope", "--data-binary", "x", f"{est.url}/simpleenroll")
        self.assertEqual(p.stdout, b"401")

    def test_bad_requests(self):
        est = self.start()
        csr = make_csr(make_key(), "tampered")
        der = bytearray(csr.public_bytes(serialization.Encoding.DER))
        der[-1] ^= 0x01  # inside the signature: still parses, no longer verifies
        bad = x509.load_der_x509_csr(bytes(der))
        self.assertFalse(bad.is_signature_valid)
        status, _, body = self.enroll(est, body=encode_csr(bytes(der)))
        self.assertEqual(status, 400)
        self.assertIn(b"signature", body)
        self.assertEqual(est.http_requests()[-1].csr.subject, csr.subject)
        self.assertEqual(self.enroll(est, body=b"not base64 at all!")[0], 400)
        self.assertEqual(self.enroll(est, body=base64.encodebytes(b"\x30\x03\x02\x01\x00"))[0], 400)
        self.assertEqual(self.enroll(est, headers={"Content-Type": "application/json"})[0], 415)
        pem = csr.public_bytes(serialization.Encoding.PEM)  # PEM headers are not base64 → 400
        self.assertEqual(self.enroll(est, body=pem)[0], 400)
        # unpadded line-broken base64 with CRLF is fine
        ok = encode_csr(csr).replace(b"\n", b"\r\n")
        self.assertEqual(self.enroll(est, body=ok)[0], 200)

    def test_routes(self):
        est = self.start()
        url = est.url
        ca = est.server_ca_path
        self.assertEqual(est_request(url + "/cacerts", "POST", b"", cafile=ca)[0], 405)
        self.assertEqual(est_request(url + "/simpleenroll", cafile=ca)[0], 405)
        for path in ("/csrattrs", "/serverkeygen", "/nothing", "/a/b/cacerts"):
            self.assertEqual(est_request(url + path, cafile=ca)[0], 404, path)
        self.assertEqual(est_request(est.base_url + "/cacerts", cafile=ca)[0], 404)
        self.assertEqual(est_request(url + "/any-label/cacerts", cafile=ca)[0], 200)
        est.strict_labels = True
        self.assertEqual(est_request(url + "/any-label/cacerts", cafile=ca)[0], 404)

    def test_loads_existing_pki(self):
        a = MockEst(self.pki_dir)
        b = MockEst(self.pki_dir)
        self.assertEqual(a.pki.est_ca, b.pki.est_ca)
        self.assertEqual(a.pki.server_cert, b.pki.server_cert)
        self.assertEqual(oct(os.stat(a.pki.path("est-ca.key.pem")).st_mode & 0o777), "0o600")

    def test_server_cert_hostnames(self):
        est = self.start()
        ctx = ssl.create_default_context(cafile=est.server_ca_path)
        for host in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", est.port)) as s:
                with ctx.wrap_socket(s, server_hostname=host) as t:
                    self.assertTrue(t.getpeercert())
        with socket.create_connection(("127.0.0.1", est.port)) as s:
            with self.assertRaises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(s, server_hostname="est.example.org")

    def test_client_refusing_server_cert_is_logged(self):
        est = self.start()
        with self.assertRaises(ssl.SSLCertVerificationError):
            est_request(est.url + "/cacerts", cafile=est.est_ca_path)  # the wrong trust anchor
        deadline = time.monotonic() + 5
        while not est.tls_errors() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(len(est.tls_errors()), 1)
        self.assertEqual(est.http_requests(), [])

    def test_plain_http(self):
        est = self.start(tls=False)
        self.assertTrue(est.url.startswith("http://"))
        self.assertEqual(self.cacerts(est)[0], 200)


class TestClientCert(EstTestCase):
    def test_bootstrap_then_est_issued(self):
        """certd's flow: bootstrap cert → EST identity cert → device cert with the identity cert."""
        est = self.start(client_cert=True)
        boot_cert, boot_key = est.make_client_cert("boot", cn="bootstrap-1")
        id_key = make_key()
        id_csr = make_csr(id_key, "est-identity")
        status, headers, body = self.enroll(est, id_csr, cert=boot_cert, key=boot_key)
        ident = self.assertIssued(est, status, headers, body, id_csr)
        r = est.http_requests()[-1]
        self.assertEqual((r.auth, r.client_cert_subject, r.client_cert_source), (["cert"], "CN=bootstrap-1",
                                                                                 "bootstrap"))
        id_cert = self.file("id.pem", ident.public_bytes(serialization.Encoding.PEM))
        id_pk = self.file("id.key", mock_est._key_pem(id_key))
        # the EST-issued identity cert authenticates simpleenroll (what certd does) …
        dev_csr = make_csr(make_key(), "device-cert")
        self.assertIssued(est, *self.enroll(est, dev_csr, cert=id_cert, key=id_pk), dev_csr)
        self.assertEqual(est.http_requests()[-1].client_cert_source, "est")
        # … and simplereenroll of itself (RFC 7030 §4.2.2: same subject)
        new_csr = make_csr(make_key(), "est-identity")
        self.assertIssued(est, *self.enroll(est, new_csr, op="simplereenroll", cert=id_cert, key=id_pk),
                          new_csr)
        status, _, body = self.enroll(est, dev_csr, op="simplereenroll", cert=id_cert, key=id_pk)
        self.assertEqual(status, 400, body)  # other subject
        # no bootstrap on this label any more: 403; the identity cert still works
        est.policy.accept_bootstrap = False
        self.assertEqual(self.enroll(est, cert=boot_cert, key=boot_key)[0], 403)
        self.assertEqual(self.enroll(est, cert=id_cert, key=id_pk)[0], 200)
        est.policy.accept_bootstrap, est.policy.accept_est_issued = True, False
        self.assertEqual(self.enroll(est, cert=id_cert, key=id_pk)[0], 403)
        self.assertEqual(self.enroll(est, cert=boot_cert, key=boot_key)[0], 200)
        est.policy.accept_est_issued = True
        est.revoked.add(ident.serial_number)
        self.assertEqual(self.enroll(est, cert=id_cert, key=id_pk)[0], 403)

    def test_curl_with_bootstrap_cert(self):
        est = self.start(client_cert=True)
        cert, key = est.make_client_cert("curl-boot", cn="curl-boot")
        csr_b64 = self.file("csr.b64", encode_csr(make_csr(make_key(), "x")))
        args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", est.server_ca_path,
                "--data-binary", f"@{csr_b64}", "-H", "Content-Type: application/pkcs10",
                "-H", "Content-Transfer-Encoding: base64", f"{est.url}/simpleenroll"]
        self.assertEqual(run(*args, "--cert", cert, "--key", key).stdout, b"200")
        self.assertEqual(run(*args).stdout, b"403")
        bad_cert, bad_key = est.make_client_cert("curl-self", cn="curl-self", ca="self")
        p = run(*args, "--cert", bad_cert, "--key", bad_key, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(p.stdout, b"000")  # no HTTP response: the TLS handshake failed

    def test_no_client_cert_403(self):
        est = self.start(client_cert=True)
        status, _, body = self.enroll(est)
        self.assertEqual(status, 403, body)
        self.assertEqual(est.http_requests()[-1].auth, [])
        self.assertEqual(self.cacerts(est)[0], 200)

    def refused(self, est, cert, key):
        est.clear_log()
        with self.assertRaises(TLS_REFUSED):
            self.enroll(est, cert=cert, key=key)
        deadline = time.monotonic() + 5
        while not est.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(len(est.requests), 1, est.requests)
        self.assertIsNone(est.requests[0].method)
        return est.requests[0].tls_error

    def test_untrusted_expired_and_wrong_purpose_refused_in_tls(self):
        for tls_max in (None, "1.2"):
            est = MockEst(self.pki_dir, client_cert=True, tls_max_version=tls_max).start()
            self.addCleanup(est.stop)
            with self.subTest(tls_max=tls_max):
                self_signed = est.make_client_cert("self", cn="intruder", ca="self")
                self.assertIn("certificate", self.refused(est, *self_signed))
                other_ca = est.make_client_cert("other-ca", cn="intruder", ca="server")
                self.assertIn("certificate", self.refused(est, *other_ca))
                past = datetime.datetime.utcnow() - datetime.timedelta(days=2)
                expired = est.make_client_cert("expired", cn="old", not_before=past, days=1)
                self.assertIn("expired", self.refused(est, *expired))
                future = datetime.datetime.utcnow() + datetime.timedelta(days=1)
                not_yet = est.make_client_cert("future", cn="new", not_before=future, days=1)
                self.assertIn("not yet valid", self.refused(est, *not_yet))
                server_only = est.make_client_cert("srv-eku", cn="srv",
                                                   eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
                self.assertIn("purpose", self.refused(est, *server_only))
                # an expired EST-issued cert too
                est_expired = est.make_client_cert("est-expired", cn="id", ca="est", not_before=past, days=1)
                self.assertIn("expired", self.refused(est, *est_expired))
                # and a good one still goes through
                good = est.make_client_cert("good", cn="good")
                self.assertEqual(self.enroll(est, cert=good[0], key=good[1])[0], 200)

    def test_key_not_matching_cert_cannot_authenticate(self):
        est = self.start(client_cert=True)
        cert, _ = est.make_client_cert("pair-a", cn="a")
        _, other_key = est.make_client_cert("pair-b", cn="b")
        with self.assertRaises(ssl.SSLError):  # the client refuses to load a mismatched pair
            self.enroll(est, cert=cert, key=other_key)

    def test_basic_and_cert(self):
        est = self.start(basic=(USER, PASS), client_cert=True)
        cert, key = est.make_client_cert("both", cn="both")
        self.assertEqual(self.enroll(est, cert=cert, key=key)[0], 401)
        self.assertEqual(self.enroll(est, basic=(USER, PASS))[0], 403)
        self.assertEqual(self.enroll(est, cert=cert, key=key, basic=(USER, "no"))[0], 401)
        self.assertEqual(self.enroll(est, cert=cert, key=key, basic=(USER, PASS))[0], 200)
        self.assertEqual(est.http_requests()[-1].auth, ["basic", "cert"])

    def test_cert_not_requested_when_not_required(self):
        est = self.start(basic=(USER, PASS))
        cert, key = est.make_client_cert("unasked", cn="unasked", ca="self")
        self.assertEqual(self.enroll(est, cert=cert, key=key, basic=(USER, PASS))[0], 200)
        self.assertEqual(est.http_requests()[-1].auth, ["basic"])
        est.request_client_cert = True
        good, gkey = est.make_client_cert("asked", cn="asked")
        self.assertEqual(self.enroll(est, cert=good, key=gkey, basic=(USER, PASS))[0], 200)
        self.assertEqual(est.http_requests()[-1].auth, ["basic", "cert"])

    def test_labels(self):
        est = self.start(basic=(USER, PASS))
        est.set_label("device-id", basic=None, client_cert=True, validity=120)
        est.set_label("other", basic=("u2", "p2"))
        cert, key = est.make_client_cert("label", cn="label")
        csr = make_csr(make_key(), "labelled")
        status, headers, body = self.enroll(est, csr, label="device-id", cert=cert, key=key)
        leaf = self.assertIssued(est, status, headers, body, csr)
        self.assertEqual((leaf.not_valid_after - leaf.not_valid_before).total_seconds(), 120)
        self.assertEqual(est.http_requests()[-1].label, "device-id")
        self.assertEqual(self.enroll(est, label="device-id", basic=(USER, PASS))[0], 403)
        self.assertEqual(self.enroll(est, label="other", basic=(USER, PASS))[0], 401)
        self.assertEqual(self.enroll(est, label="other", basic=("u2", "p2"))[0], 200)
        self.assertEqual(self.enroll(est, basic=(USER, PASS))[0], 200)
        self.assertEqual(self.enroll(est, label="unknown", basic=(USER, PASS))[0], 200)
        est.strict_labels = True
        self.assertEqual(self.enroll(est, label="unknown", basic=(USER, PASS))[0], 404)


class TestFaults(EstTestCase):
    def test_fail_status(self):
        est = self.start(basic=(USER, PASS))
        est.fail(500, "boom")
        status, _, body = self.enroll(est, basic=(USER, PASS))
        self.assertEqual((status, body), (500, b"boom"))
        self.assertEqual(self.cacerts(est)[0], 500)
        self.assertEqual(self.enroll(est, basic=(USER, "wrong"))[0], 401)  # auth comes first
        est.fail(202, retry_after=7, count=1, ops=["simpleenroll"])
        self.assertEqual(self.cacerts(est)[0], 200)
        status, headers, _ = self.enroll(est, basic=(USER, PASS))
        self.assertEqual((status, headers["retry-after"]), (202, "7"))
        self.assertEqual(self.enroll(est, basic=(USER, PASS))[0], 200)  # count exhausted
        est.fail(503, count=2)
        self.assertEqual([self.cacerts(est)[0] for _ in range(3)], [503, 503, 200])
        est.fail(201)
        est.clear_faults()
        self.assertEqual(self.cacerts(est)[0], 200)

    def test_delay(self):
        est = self.start()
        est.delay = 1.0
        est.fault_ops = {"simpleenroll"}
        t = time.monotonic()
        self.assertEqual(self.cacerts(est)[0], 200)
        self.assertLess(time.monotonic() - t, 0.8)
        t = time.monotonic()
        self.assertEqual(self.enroll(est)[0], 200)
        self.assertGreaterEqual(time.monotonic() - t, 1.0)
        est.delay = 5
        with self.assertRaises(TimeoutError):
            est_request(est.url + "/simpleenroll", "POST", encode_csr(make_csr(make_key(), "t")),
                        cafile=est.server_ca_path, timeout=0.5)

    def test_body_modes(self):
        est = self.start()
        csr = make_csr(make_key(), "modes")
        est.body_mode = "pem"
        status, headers, body = self.enroll(est, csr)
        self.assertTrue(body.startswith(b"-----BEGIN PKCS7-----"), body)
        self.assertNotIn("content-transfer-encoding", headers)
        self.assertIssued(est, status, headers, body, csr)
        out = run("openssl", "pkcs7", "-print_certs", "-noout", input=body).stdout
        self.assertIn(b"subject=CN = modes", out)
        self.assertIn(b"BEGIN PKCS7", self.cacerts(est)[2])
        for mode in ("base64", "base64-oneline", "base64-crlf"):
            est.body_mode = mode
            status, headers, body = self.enroll(est, csr)
            self.assertIssued(est, status, headers, body, csr)
            self.assertEqual(b"\r\n" in body, mode == "base64-crlf")
            self.assertEqual(b"\n" in body, mode != "base64-oneline")
        est.body_mode = "der"
        status, _, body = self.enroll(est, csr)
        self.assertEqual(pkcs7_der_certs(body)[0].subject, csr.subject)
        est.body_mode = "garbage"
        status, headers, body = self.enroll(est, csr)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/pkcs7-mime; smime-type=certs-only")
        with self.assertRaises(ValueError):
            decode_pkcs7(body)
        est.body_mode = "base64-garbage"
        body = self.enroll(est, csr)[2]
        base64.b64decode(body)  # valid base64 …
        with self.assertRaises(ValueError):  # … of no PKCS#7
            decode_pkcs7(body)
        est.body_mode = "empty-pkcs7"
        body = self.enroll(est, csr)[2]
        self.assertEqual(decode_pkcs7(body), [])
        p = run("openssl", "pkcs7", "-inform", "DER", "-print", "-noout", input=base64.b64decode(body))
        self.assertEqual(p.returncode, 0)

    def test_content_type(self):
        est = self.start()
        est.content_type = "text/plain"
        status, headers, body = self.enroll(est)
        self.assertEqual((status, headers["content-type"]), (200, "text/plain"))
        decode_pkcs7(body)  # the body is still right
        est.content_type = "application/pkcs7-mimefoo"
        self.assertEqual(self.cacerts(est)[1]["content-type"], "application/pkcs7-mimefoo")
        est.content_type = ""
        self.assertNotIn("content-type", self.enroll(est)[1])
        est.content_type = None
        self.assertEqual(self.cacerts(est)[1]["content-type"], "application/pkcs7-mime")

    def test_down_and_up(self):
        est = self.start()
        port = est.port
        self.assertEqual(self.cacerts(est)[0], 200)
        est.down()
        self.assertFalse(est.is_up)
        with self.assertRaises(ConnectionRefusedError):
            self.cacerts(est)
        est.up()
        self.assertEqual(est.port, port)
        self.assertEqual(self.cacerts(est)[0], 200)

    def test_drop_connections(self):
        est = self.start()
        est.drop_connections = True
        with self.assertRaises(TLS_REFUSED):
            self.cacerts(est)
        self.assertEqual(est.tls_errors(), ["dropped by drop_connections"])
        est.drop_connections = False
        self.assertEqual(self.cacerts(est)[0], 200)

    def test_wait_for_requests(self):
        est = self.start()
        with self.assertRaises(TimeoutError):
            est.wait_for_requests(1, timeout=0.1)
        self.cacerts(est)
        self.assertEqual(est.wait_for_requests(1, op="cacerts")[0].path, "/.well-known/est/cacerts")


def pkcs7_der_certs(der):
    from cryptography.hazmat.primitives.serialization import pkcs7
    return pkcs7.load_der_pkcs7_certificates(der)


class TestCli(EstTestCase):
    def test_cli(self):
        d = os.path.join(self.tmp, "cli")
        p, info = self.start_script("mock_est.py", "--dir", d, "--port", "0", "--basic", f"{USER}:{PASS}",
                                    "--client-cert-auth", "--control", "--validity", "2m",
                                    "--bootstrap-cert", "boot:dev-boot",
                                    "--label", "plain:nocert:nobasic", "--fail-status", "503", "--fail-count", "1",
                                    "--fail-ops", "cacerts")
        self.assertTrue(info["URL"].startswith("https://127.0.0.1:"))
        url, ca = info["URL"], info["SERVER_CA"]
        self.assertEqual(est_request(url + "/cacerts", cafile=ca)[0], 503)
        status, _, body = est_request(url + "/cacerts", cafile=ca)
        self.assertEqual(decode_pkcs7(body)[0].subject,
                         x509.load_pem_x509_certificate(read(info["EST_CA"])).subject)
        csr = make_csr(make_key(), "cli-device")
        status, _, body = est_request(url + "/simpleenroll", "POST", encode_csr(csr), cafile=ca,
                                      basic=(USER, PASS), cert=info["BOOTSTRAP_CERT_boot"],
                                      key=info["BOOTSTRAP_KEY_boot"])
        self.assertEqual(status, 200, body)
        leaf = decode_pkcs7(body)[0]
        self.assertEqual((leaf.not_valid_after - leaf.not_valid_before).total_seconds(), 120)
        self.assertEqual(est_request(url + "/simpleenroll", "POST", encode_csr(csr), cafile=ca,
                                     basic=(USER, PASS))[0], 403)
        self.assertEqual(est_request(url + "/plain/simpleenroll", "POST", encode_csr(csr), cafile=ca)[0], 200)
        self.assertEqual(est_request(url + "/nolabel/cacerts", cafile=ca)[0], 404)
        p.send_signal(signal.SIGUSR1)
        self.assertGoesDown(lambda: est_request(url + "/cacerts", cafile=ca))
        p.send_signal(signal.SIGUSR2)
        self.assertEqual(self.comes_up(lambda: est_request(url + "/cacerts", cafile=ca))[0], 200)
        # the control channel
        ctl = info["CONTROL_URL"]

        def control(path, obj=None):
            status, _, body = est_request(ctl + path, "POST", json.dumps(obj or {}).encode(),
                                          headers={"Content-Type": "application/json"})
            return status, json.loads(body)
        self.assertEqual(control("/config", {"fail": {"status": 500, "count": 1}, "body_mode": "pem",
                                             "policy": {"validity": "3m"},
                                             "labels": {"plain": {"basic": ["a", "b"], "validity": 240}}})[0],
                         200)
        self.assertEqual(control("/config", {"nonsense": 1})[0], 400)
        self.assertEqual(control("/config", {"body_mode": "nonsense"})[0], 400)
        self.assertEqual(est_request(url + "/cacerts", cafile=ca)[0], 500)
        self.assertTrue(est_request(url + "/cacerts", cafile=ca)[2].startswith(b"-----BEGIN PKCS7"))
        self.assertEqual(est_request(url + "/plain/simpleenroll", "POST", encode_csr(csr), cafile=ca)[0], 401)
        status, _, body = est_request(url + "/plain/simpleenroll", "POST", encode_csr(csr), cafile=ca,
                                      basic=("a", "b"))
        leaf = decode_pkcs7(body)[0]
        self.assertEqual((leaf.not_valid_after - leaf.not_valid_before).total_seconds(), 240)
        status, paths = control("/client-cert", {"name": "ctl", "cn": "ctl-boot"})
        status, _, body = est_request(url + "/simpleenroll", "POST", encode_csr(csr), cafile=ca,
                                      basic=(USER, PASS), cert=paths["cert"], key=paths["key"])
        leaf = decode_pkcs7(body)[0]
        self.assertEqual((leaf.not_valid_after - leaf.not_valid_before).total_seconds(), 180)
        self.assertEqual(control("/down"), (200, {"up": False}))
        with self.assertRaises(ConnectionRefusedError):
            est_request(url + "/cacerts", cafile=ca)
        self.assertEqual(control("/up"), (200, {"up": True}))
        control("/clear-faults")
        body = est_request(url + "/cacerts", cafile=ca)[2]
        self.assertNotIn(b"BEGIN", body)  # back to base64
        self.assertEqual(len(decode_pkcs7(body)), 1)
        status, _, body = est_request(ctl + "/requests")
        logged = json.loads(body)
        self.assertEqual(logged[-1]["op"], "cacerts")
        self.assertEqual([e["client_cert_subject"] for e in logged if e["op"] == "simpleenroll"][-1],
                         "CN=ctl-boot")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)
        with open(info["LOG"]) as f:
            log = [json.loads(line) for line in f]
        enrolls = [e for e in log if e["op"] == "simpleenroll"]
        self.assertEqual(enrolls[0]["auth"], ["basic", "cert"])
        self.assertEqual(enrolls[0]["client_cert_subject"], "CN=dev-boot")
        self.assertEqual(enrolls[0]["csr_subject"], "CN=cli-device")
        self.assertIn("BEGIN CERTIFICATE", enrolls[0]["issued_pem"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
