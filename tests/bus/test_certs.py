#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-certd over D-Bus: the real daemon on a private system bus with our restrictive policy
(dbus/org.aziot.Certificates1.conf) and the real polkitd with polkit/org.aziot.certs.policy, next to
the real aziot-keyd, which holds the issuer's key.

The issuer. The test CA's key pair "ca-key" is made by keyd (CreateKeyPairIfNotExists); the CA
certificate is self-signed with that key by the real openssl command line through our provider
(`openssl req -new -x509 -key aziot-key:pair/ca-key`, as root, so keyd signs), and imported into
certd as "ca". CreateCertificate then names the issuer as ("ca", <a key handle of ca-key>), as
upstream's {certId, privateKeyHandle}: certd loads that key from keyd through the provider
(aziot-key:handle/…); a key pair id in its place is refused. Nothing in the test depends on certd to
make its own issuer. ConfiguredIssuanceTest then checks [cert_issuance] on its own: a self-signed
local CA made by certd (CSR from keyd's key through the provider), leaves issued by it
(method "local_ca"), self_signed leaves, subject and expiry overrides, hot reload.

Results are checked independently: `openssl verify` against the CA, python-cryptography for what
the certificate says, the upstream file name rule (spec §3.6) for where it is stored. Clients other
than root run as the harness users in their own processes (setpriv), so the bus and certd see
their real uids and groups.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_CERTD, AZIOT_KEYD,
AZIOT_PROVIDER_DIR.
"""

import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
CERTD = os.environ.get("AZIOT_CERTD") or os.path.join(BUILD_DIR, "services", "certs",
                                                      "aziot-certd")
KEYD = os.environ.get("AZIOT_KEYD") or os.path.join(BUILD_DIR, "services", "keys", "aziot-keyd")
PROVIDER_DIR = os.environ.get("AZIOT_PROVIDER_DIR") or os.path.join(BUILD_DIR, "provider")
XML_PATH = os.path.join(SOURCE_DIR, "dbus", "org.aziot.Certificates1.xml")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import aziot_harness  # noqa: E402

import dbus  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

CERTS_NAME, CERTS_PATH, CERTS_IFACE = \
    "org.aziot.Certificates1", "/org/aziot/Certificates1", "org.aziot.Certificates1"
KEYS_NAME, KEYS_PATH, KEYS_IFACE = "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1"

CERT_IFACE = "org.aziot.Certificates1.Certificate"
CERT_PATH_PREFIX = "/org/aziot/Certificates1/certificate"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"

INVALID_PARAMETER = "org.aziot.Certificates1.Error.InvalidParameter"
NOT_FOUND = "org.aziot.Certificates1.Error.NotFound"
NOT_AUTHORIZED = "org.aziot.Certificates1.Error.NotAuthorized"
FAILED = "org.aziot.Certificates1.Error.Failed"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"

CERTS_GROUP = "aziotcs"
KEYS_GROUP = "aziotks"
USER_A, USER_B = aziot_harness.TEST_USERS
PYTHON = "/usr/bin/python3"
CALL_TIMEOUT = 20
RELOAD_TIMEOUT = 10
PROVIDER = ["-provider-path", PROVIDER_DIR, "-provider", "aziot", "-provider", "default"]

IN_SIGNATURES = {
    "CreateCertificate": "ssa{sv}", "ImportCertificate": "ssa{sv}", "GetCertificate": "sa{sv}",
    "DeleteCertificate": "sa{sv}", "ListCertificates": "a{sv}",
}

# One call as another user: argv[1] is JSON [method, args, options]; prints the outcome as JSON.
USER_CALL = r'''
import json, os, sys
import dbus
method, args, signature = json.loads(sys.argv[1])
for a in args:
    if isinstance(a, dict) and "issuer" in a:
        a["issuer"] = dbus.Struct(a["issuer"], signature="ss")
conn = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
try:
    r = conn.call_blocking("org.aziot.Certificates1", "/org/aziot/Certificates1",
                           "org.aziot.Certificates1", method, signature, args, timeout=20)
    if isinstance(r, (list, tuple)):
        r = [str(x) for x in r]
    elif r is not None:
        r = str(r)
    print(json.dumps({"ok": r}))
except dbus.DBusException as e:
    print(json.dumps({"error": e.get_dbus_name(), "message": e.get_dbus_message()}))
'''



CallError = aziot_harness.CallError


def upstream_file_name(cert_id):
    """Spec §3.6: the id's ASCII letters and digits, "-", hex SHA-256 of the id, ".cer"."""
    alnum = "".join(c for c in cert_id if c.isascii() and c.isalnum())
    return f"{alnum}-{hashlib.sha256(cert_id.encode()).hexdigest()}.cer"


def pem_blocks(pem):
    """The certificates of a PEM text, in order."""
    end = "-----END CERTIFICATE-----"
    blocks = [b + end for b in pem.split(end) if "-----BEGIN CERTIFICATE-----" in b]
    return [x509.load_pem_x509_certificate(b.encode()) for b in blocks]


def make_csr(common_name="device", ca=False, san=None, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                        critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]),
                                        critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def describe_interface(text, name):
    """The methods (with their arguments), properties (with type and access) and signals of the
    interface name in an introspection document."""
    ifaces = [i for i in ET.fromstring(text).findall("interface") if i.get("name") == name]
    if len(ifaces) != 1:
        raise AssertionError(f"{len(ifaces)} interface(s) {name}")
    methods = {m.get("name"): [(a.get("name"), a.get("type"), a.get("direction", "in"))
                               for a in m.findall("arg")]
               for m in ifaces[0].findall("method")}
    return (methods,
            sorted((p.get("name"), p.get("type"), p.get("access"))
                   for p in ifaces[0].findall("property")),
            sorted(s.get("name") for s in ifaces[0].findall("signal")))


def utc_seconds(naive_utc):
    """Seconds since the epoch of a naive UTC datetime (python-cryptography's not_valid_*)."""
    return int(naive_utc.replace(tzinfo=datetime.timezone.utc).timestamp())


def cert_path(cert_id):
    """sd_bus_path_encode(): every byte but an ASCII letter, or a digit not in first place, as
    "_xx"; the empty id as "_"."""
    out = []
    for i, b in enumerate(cert_id.encode()):
        c = chr(b)
        if (c.isascii() and c.isalpha()) or (i > 0 and c.isascii() and c.isdigit()):
            out.append(c)
        else:
            out.append(f"_{b:02x}")
    return f"{CERT_PATH_PREFIX}/{''.join(out) or '_'}"


wait_until = aziot_harness.wait_until


class CertdTestCase(aziot_harness.StackTestMixin, unittest.TestCase):
    """One stack (bus, polkitd) and one keyd (holding ca-key) per class; a fresh certd with a fresh
    home for every test, with the test CA imported as "ca"."""

    @classmethod
    def setUpClass(cls):
        for path in (CERTD, KEYD):
            if not os.access(path, os.X_OK):
                raise unittest.SkipTest(f"{path} is not built")
        if not os.path.isdir(PROVIDER_DIR):
            raise unittest.SkipTest(f"{PROVIDER_DIR} is not built")
        cls.users = aziot_harness.ensure_test_users()
        aziot_harness.ensure_group(CERTS_GROUP)
        aziot_harness.ensure_group(KEYS_GROUP)
        cls.uid_a = cls.users[USER_A].pw_uid
        cls.run_dir = tempfile.mkdtemp(prefix="aziot-certs-")
        os.chmod(cls.run_dir, 0o755)
        cls.stack = aziot_harness.Stack(cls.run_dir, SOURCE_DIR, BUILD_DIR)
        cls.failed = False
        cls.serial = 0
        try:
            cls.stack.start()
            cls.conn = cls.stack.bus()
            keyd_dir = os.path.join(cls.run_dir, "keyd")
            os.makedirs(os.path.join(keyd_dir, "config.d"))
            with open(os.path.join(keyd_dir, "config.toml"), "w") as f:
                f.write(f'[aziot_keys]\nhomedir_path = "{keyd_dir}/home"\n'
                        f'{cls.keyd_extra_config()}')
            cls.stack.start_process(
                "keyd", [KEYD, "--idle-timeout=0"],
                env={"AZIOT_KEYD_CONFIG": os.path.join(keyd_dir, "config.toml"),
                     "AZIOT_KEYD_CONFIG_DIR": os.path.join(keyd_dir, "config.d"),
                     "AZIOT_LOG": "debug"},
                wait_bus_name=KEYS_NAME)
            # Key handles, as upstream's privateKeyHandle: holding one entitles to its key.
            cls.handles = {
                key_id: str(cls.conn.call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE,
                                                   "CreateKeyPairIfNotExists", "sasa{sv}",
                                                   [key_id, ["ec-p256"], {}],
                                                   timeout=CALL_TIMEOUT))
                for key_id in ("ca-key", "other-key")}
            cls.ca_pem = cls.make_ca("ca-key", "test CA")
        except BaseException:
            cls.stack.stop()
            print(f"stack logs kept in {cls.run_dir}", file=sys.stderr)
            raise

    @classmethod
    def keyd_extra_config(cls):
        """More of keyd's config.toml (a subclass's [preloaded_keys])."""
        return ""

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        if cls.failed:
            print(f"\nstack logs kept in {cls.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.run_dir, ignore_errors=True)

    @classmethod
    def openssl(cls, *args, check=True):
        env = cls.stack.child_env({"OPENSSL_MODULES": PROVIDER_DIR})
        env.pop("OPENSSL_CONF", None)
        r = subprocess.run(["openssl", *args], env=env, capture_output=True, text=True,
                           timeout=CALL_TIMEOUT, cwd=cls.run_dir)
        if check and r.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    @classmethod
    def make_ca(cls, key_pair_id, name):
        """A self-signed CA certificate for a keyd key pair, signed by keyd through the provider."""
        out = os.path.join(cls.run_dir, f"{key_pair_id}.pem")
        cls.openssl("req", "-new", "-x509", *PROVIDER, "-key", f"aziot-key:pair/{key_pair_id}",
                    "-subj", f"/CN={name}", "-days", "365", "-sha256",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                    "-out", out)
        with open(out) as f:
            return f.read()

    def setUp(self):
        self.rules = []
        self.serial_dir()
        self.write_config()
        self.certd = self.start_certd()
        self.call("ImportCertificate", "ca", self.ca_pem, {})

    def serial_dir(self):
        type(self).serial += 1
        self.dir = os.path.join(self.run_dir, f"t{type(self).serial}")
        self.home = os.path.join(self.dir, "home")
        self.certs_dir = os.path.join(self.home, "certs")
        self.config = os.path.join(self.dir, "config.toml")
        self.config_dir = os.path.join(self.dir, "config.d")
        os.makedirs(self.config_dir)
        os.chmod(self.dir, 0o755)

    def write_config(self, extra=""):
        with open(self.config, "w") as f:
            f.write(f'homedir_path = "{self.home}"\n{extra}')

    def start_certd(self, idle_timeout=0, env=None):
        return self.stack.start_process(
            "certd", [CERTD, f"--idle-timeout={idle_timeout}"],
            env={"AZIOT_CERTD_CONFIG": self.config, "AZIOT_CERTD_CONFIG_DIR": self.config_dir,
                 "AZIOT_LOG": "debug", "OPENSSL_MODULES": PROVIDER_DIR, **(env or {})},
            wait_bus_name=CERTS_NAME)

    def tearDown(self):
        self.remove_test_rules()
        if "certd" in self.stack.processes:
            status = self.stack.stop_process("certd")
            self.assertEqual(status, 0, "certd did not exit cleanly on SIGTERM")

    # -- calls --------------------------------------------------------------------------------

    def call(self, method, *args, signature=None):
        iface, member = (method.rsplit(".", 1) if "." in method else (CERTS_IFACE, method))
        signature = IN_SIGNATURES.get(method, "") if signature is None else signature
        try:
            return self.conn.call_blocking(CERTS_NAME, CERTS_PATH, iface, member, signature,
                                           list(args), timeout=CALL_TIMEOUT)
        except dbus.DBusException as e:
            raise CallError(e.get_dbus_name(), e.get_dbus_message()) from None

    def call_as(self, user, method, *args, groups=(CERTS_GROUP,)):
        r = self.stack.run_as(user, [PYTHON, "-c", USER_CALL,
                                     json.dumps([method, list(args), IN_SIGNATURES[method]])],
                              groups=list(groups) if groups is not None else None)
        if r.returncode != 0:
            raise AssertionError(f"the client as {user} failed:\n{r.stdout}\n{r.stderr}")
        outcome = json.loads(r.stdout)
        if "error" in outcome:
            raise CallError(outcome["error"], outcome["message"])
        return outcome["ok"]

    def assertFails(self, name, message, fn, *args, **kwargs):
        with self.assertRaises(CallError, msg=f"{args!r} succeeded") as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.name, name, str(cm.exception))
        if message is not None:
            self.assertEqual(cm.exception.message, message)
        return cm.exception

    def write_principals(self, entries):
        text = "".join(f"[[principal]]\nuid = {uid}\ncerts = {json.dumps(globs)}\n\n"
                       for uid, globs in entries)
        tmp = os.path.join(self.dir, ".principals.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.config_dir, "principals.toml"))

    def issue(self, cert_id, csr_pem, issuer=None):
        issuer = issuer or ("ca", self.handles["ca-key"])
        return str(self.call("CreateCertificate", cert_id, csr_pem,
                             {"issuer": dbus.Struct(issuer, signature="ss")}))

    def verify(self, pem):
        """openssl verify of the first certificate of pem against the test CA."""
        leaf = os.path.join(self.dir, "leaf.pem")
        ca = os.path.join(self.dir, "ca.pem")
        with open(leaf, "w") as f:
            f.write(pem_blocks(pem)[0].public_bytes(serialization.Encoding.PEM).decode())
        with open(ca, "w") as f:
            f.write(self.ca_pem)
        return self.openssl("verify", "-CAfile", ca, leaf, check=False)

    def stored(self, cert_id):
        with open(os.path.join(self.certs_dir, upstream_file_name(cert_id))) as f:
            return f.read()


class IssuanceTest(CertdTestCase):
    def test_issued_certificate_verifies_against_the_ca(self):
        key, csr = make_csr("device-1", san="device-1.example")
        pem = self.issue("device-1", csr)
        r = self.verify(pem)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        certs = pem_blocks(pem)
        self.assertEqual(len(certs), 2)  # the new certificate, then the issuer chain
        leaf, ca = certs
        self.assertEqual(ca, x509.load_pem_x509_certificate(self.ca_pem.encode()))
        self.assertEqual(leaf.subject.rfc4514_string(), "CN=device-1")
        self.assertEqual(leaf.issuer, ca.subject)
        self.assertEqual(leaf.public_key().public_numbers(), key.public_key().public_numbers())
        self.assertEqual(leaf.version, x509.Version.v3)
        self.assertGreater(leaf.serial_number, 0)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["device-1.example"])
        lifetime = leaf.not_valid_after - leaf.not_valid_before
        self.assertLessEqual(abs(lifetime.total_seconds() - 30 * 86400), 60)
        self.assertEqual(self.call("GetCertificate", "device-1", {}), pem)
        self.assertEqual(self.stored("device-1"), pem)

    def test_serials_differ(self):
        _, csr = make_csr("device")
        serials = {pem_blocks(self.issue(f"d{i}", csr))[0].serial_number for i in range(3)}
        self.assertEqual(len(serials), 3)

    def test_ca_requested_is_a_leaf(self):
        _, csr = make_csr("sneaky", ca=True)
        leaf = pem_blocks(self.issue("sneaky", csr))[0]
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(bc.critical)
        self.assertFalse(bc.value.ca)

    def test_bad_csr_signature(self):
        key, csr = make_csr("device")
        der = bytearray(x509.load_pem_x509_csr(csr.encode()).public_bytes(
            serialization.Encoding.DER))
        der[-5] ^= 0x01  # inside the signature
        bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
        self.assertFails(INVALID_PARAMETER, 'parameter "csr" has an invalid value',
                         self.issue, "device", bad)
        self.assertFails(INVALID_PARAMETER, 'parameter "csr" has an invalid value',
                         self.issue, "device", "not a CSR")
        self.assertFails(NOT_FOUND, None, self.call, "GetCertificate", "device", {})

    def test_unknown_issuer(self):
        _, csr = make_csr("device")
        self.assertFails(INVALID_PARAMETER,
                         'parameter "issuer.certId" has an invalid value\ncaused by: not found',
                         self.issue, "device", csr, ("no-such-ca", self.handles["ca-key"]))
        self.assertFails(INVALID_PARAMETER,
                         'parameter "issuer.privateKeyHandle" has an invalid value\n'
                         'caused by: invalid handle',
                         self.issue, "device", csr, ("ca", "sr=Zm9yZ2Vk&sig=" + "A" * 43 + "="))
        # A key pair id is not a handle: it must not open the key.
        self.assertFails(INVALID_PARAMETER,
                         'parameter "issuer.privateKeyHandle" has an invalid value\n'
                         'caused by: invalid handle',
                         self.issue, "device", csr, ("ca", "ca-key"))
        # A key pair that exists but is not the issuer certificate's.
        self.assertFails(INVALID_PARAMETER, None, self.issue, "device", csr,
                         ("ca", self.handles["other-key"]))
        self.assertFails(NOT_FOUND, None, self.call, "GetCertificate", "device", {})

    def test_issuer_is_required(self):
        _, csr = make_csr("device")
        self.assertFails(FAILED, "issuer is required for locally-issued certs",
                         self.call, "CreateCertificate", "device", csr, {})

    def test_bad_options(self):
        _, csr = make_csr("device")
        self.assertFails(INVALID_ARGS, None, self.call, "CreateCertificate", "device", csr,
                         {"issuer": "ca"})
        self.assertFails(INVALID_ARGS, None, self.call, "GetCertificate", "ca", {"nope": 1})
        self.assertFails(INVALID_ARGS, None, self.call, "ImportCertificate", "x", self.ca_pem,
                         {"issuer": dbus.Struct(("ca", self.handles["ca-key"]),
                                                signature="ss")})


class ConfiguredIssuanceTest(CertdTestCase):
    """CreateCertificate without "issuer": [cert_issuance] of the configuration decides."""

    ISSUANCE = """
[cert_issuance.local_ca]
cert = "my-ca"
pk = "my-ca"

[cert_issuance.my-ca]
method = "self_signed"
common_name = "My Local CA"

[cert_issuance.selfie]
method = "self_signed"
common_name = "Selfie"

[cert_issuance.dev-local]
method = "local_ca"
expiry_days = 7
subject = { O = "Org", CN = "dev", L = "AQ" }

[cert_issuance.dev-est]
method = "est"
"""

    def setUp(self):
        super().setUp()
        self.stack.stop_process("certd")
        self.write_config(self.ISSUANCE)
        self.certd = self.start_certd()
        for key_id in ("my-ca", "selfie"):
            self.conn.call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE, "CreateKeyPairIfNotExists",
                                    "sasa{sv}", [key_id, ["ec-p256"], {}], timeout=CALL_TIMEOUT)

    def keyd_csr(self, key_pair_id, *extra):
        """A CSR for a keyd key pair, signed by keyd through the provider."""
        out = os.path.join(self.dir, f"{key_pair_id}.csr")
        self.openssl("req", "-new", *PROVIDER, "-key", f"aziot-key:pair/{key_pair_id}",
                     "-subj", "/CN=from the csr", *extra, "-out", out)
        with open(out) as f:
            return f.read()

    def assertSelfSigned(self, cert):
        self.assertEqual(cert.issuer, cert.subject)
        cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                 ec.ECDSA(cert.signature_hash_algorithm))

    def test_self_signed_leaf(self):
        pem = str(self.call("CreateCertificate", "selfie", self.keyd_csr("selfie"), {}))
        certs = pem_blocks(pem)
        self.assertEqual(len(certs), 1)
        cert = certs[0]
        self.assertEqual(cert.subject.rfc4514_string(), "CN=Selfie")
        self.assertSelfSigned(cert)
        self.assertFalse(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertEqual(self.stored("selfie"), pem)

    def test_self_signed_needs_the_ids_key(self):
        _, csr = make_csr("x")  # not the key pair "selfie"
        self.assertFails(INVALID_PARAMETER, None, self.call, "CreateCertificate", "selfie", csr,
                         {})

    def test_local_ca(self):
        ca_pem = str(self.call("CreateCertificate", "my-ca",
                               self.keyd_csr("my-ca", "-addext",
                                             "basicConstraints=critical,CA:TRUE"), {}))
        ca = pem_blocks(ca_pem)[0]
        self.assertSelfSigned(ca)
        self.assertEqual(ca.subject.rfc4514_string(), "CN=My Local CA")
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(bc.critical)
        self.assertTrue(bc.value.ca)

        key, csr = make_csr("device", ca=True)
        pem = str(self.call("CreateCertificate", "dev-local", csr, {}))
        leaf, issuer = pem_blocks(pem)
        self.assertEqual(issuer, ca)
        self.assertEqual([a.oid for a in leaf.subject],
                         [NameOID.COMMON_NAME, NameOID.LOCALITY_NAME, NameOID.ORGANIZATION_NAME])
        self.assertEqual(leaf.issuer, ca.subject)
        self.assertFalse(leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        lifetime = leaf.not_valid_after - leaf.not_valid_before
        self.assertLessEqual(abs(lifetime.total_seconds() - 7 * 86400), 60)
        ca_path, leaf_path = os.path.join(self.dir, "my-ca.pem"), os.path.join(self.dir, "l.pem")
        with open(ca_path, "w") as f:
            f.write(ca_pem)
        with open(leaf_path, "w") as f:
            f.write(leaf.public_bytes(serialization.Encoding.PEM).decode())
        r = self.openssl("verify", "-CAfile", ca_path, leaf_path, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_local_ca_missing(self):
        _, csr = make_csr("device")
        self.assertFails(FAILED, None, self.call, "CreateCertificate", "dev-local", csr, {})
        self.assertFails(NOT_FOUND, None, self.call, "GetCertificate", "dev-local", {})

    def test_est_without_url_says_so(self):
        # EST itself: tests/bus/test_certs_est.py. Without any [cert_issuance.est], as upstream.
        _, csr = make_csr("device")
        self.assertFails(FAILED, "EST URL is not configured", self.call,
                         "CreateCertificate", "dev-est", csr, {})

    def test_issuance_options_are_reloaded(self):
        _, csr = make_csr("device")

        def message():
            try:
                self.call("CreateCertificate", "later", csr, {})
            except CallError as e:
                return e.message
        self.assertEqual(message(), "issuer is required for locally-issued certs")
        tmp = os.path.join(self.dir, ".later.tmp")
        with open(tmp, "w") as f:
            f.write('[cert_issuance.later]\nmethod = "est"\n')
        os.rename(tmp, os.path.join(self.config_dir, "later.toml"))
        wait_until(lambda: message() == "EST URL is not configured", RELOAD_TIMEOUT,
                   "the issuance options to be reloaded")
        # A broken file keeps what is in force.
        with open(tmp, "w") as f:
            f.write('[cert_issuance.later]\nmethod = "magic"\n')
        os.rename(tmp, os.path.join(self.config_dir, "later.toml"))
        wait_until(lambda: "Keeping the previous configuration" in self.certd.log(),
                   RELOAD_TIMEOUT, "the broken configuration to be refused")
        self.assertEqual(message(), "EST URL is not configured")

    def test_invalid_configuration_is_refused(self):
        self.stack.stop_process("certd")
        for bad in ('[cert_issuance.x]\nmethod = "magic"\n',
                    '[cert_issuance.x]\nmethod = "local_ca"\nexpiry_days = 0\n',
                    '[cert_issuance.x]\nmethod = "local_ca"\ncommon_name = "a"\n'
                    'subject = { CN = "b" }\n',
                    '[cert_issuance.x]\nmethod = "local_ca"\nsubject = { NOPE = "b" }\n',
                    '[cert_issuance.local_ca]\ncert = "c"\n'):
            with self.subTest(config=bad):
                self.write_config(bad)
                with self.assertRaises(aziot_harness.HarnessError):
                    self.stack.start_process(
                        "certd", [CERTD, "--idle-timeout=0"],
                        env={"AZIOT_CERTD_CONFIG": self.config,
                             "AZIOT_CERTD_CONFIG_DIR": self.config_dir},
                        wait_bus_name=CERTS_NAME)
                self.stack.processes.pop("certd", None)


class StoreTest(CertdTestCase):
    def test_import_get_list_delete(self):
        self.assertEqual(list(self.call("ListCertificates", {})), ["ca"])
        self.call("ImportCertificate", "my cert", self.ca_pem, {})
        self.assertEqual(self.call("GetCertificate", "my cert", {}), self.ca_pem)
        self.assertEqual(self.stored("my cert"), self.ca_pem)  # byte for byte
        names = sorted(os.listdir(self.certs_dir))
        self.assertIn(upstream_file_name("my cert"), names)
        self.assertEqual(list(self.call("ListCertificates", {})), ["ca", "my cert"])
        self.call("DeleteCertificate", "my cert", {})
        self.assertFails(NOT_FOUND,
                         'parameter "id" has an invalid value\ncaused by: not found',
                         self.call, "GetCertificate", "my cert", {})
        self.assertFalse(os.path.exists(os.path.join(self.certs_dir,
                                                     upstream_file_name("my cert"))))
        self.call("DeleteCertificate", "my cert", {})  # already gone: fine, as upstream
        self.assertEqual(list(self.call("ListCertificates", {})), ["ca"])

    def test_survives_a_restart(self):
        self.call("ImportCertificate", "kept", self.ca_pem, {})
        self.stack.stop_process("certd")
        self.certd = self.start_certd()
        self.assertEqual(self.call("GetCertificate", "kept", {}), self.ca_pem)
        self.assertEqual(list(self.call("ListCertificates", {})), ["ca", "kept"])

    def test_bad_pem(self):
        key = ec.generate_private_key(ec.SECP256R1())
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        for pem in ("", "garbage", private, self.ca_pem + private,
                    self.ca_pem.replace("MII", "MIX", 1)):
            with self.subTest(pem=pem[:40]):
                self.assertFails(INVALID_PARAMETER, None, self.call, "ImportCertificate", "x",
                                 pem, {})
        self.assertFails(NOT_FOUND, None, self.call, "GetCertificate", "x", {})

    def test_path_tricks(self):
        for cert_id in ("../../../../etc/passwd", "/abs", "a/b", ".."):
            with self.subTest(id=cert_id):
                self.call("ImportCertificate", cert_id, self.ca_pem, {})
                self.assertEqual(self.stored(cert_id), self.ca_pem)
                self.assertEqual(self.call("GetCertificate", cert_id, {}), self.ca_pem)
        for name in os.listdir(self.certs_dir):
            self.assertTrue(name == "index" or name.endswith(".cer"), name)
        for cert_id in ("", "a\x01b", "a\nb", "x" * 1025):
            with self.subTest(id=cert_id[:10]):
                self.assertFails(INVALID_PARAMETER, None, self.call, "ImportCertificate",
                                 cert_id, self.ca_pem, {})
                self.assertFails(INVALID_PARAMETER, None, self.call, "GetCertificate", cert_id,
                                 {})

    def test_preloaded_certificates_are_read_only(self):
        path = os.path.join(self.dir, "preloaded.pem")
        with open(path, "w") as f:
            f.write(self.ca_pem)
        self.stack.stop_process("certd")
        self.write_config(f'[preloaded_certs]\npre = "file://{path}"\nbundle = ["pre", "ca"]\n')
        self.certd = self.start_certd()
        self.assertEqual(self.call("GetCertificate", "pre", {}), self.ca_pem)
        self.assertEqual(self.call("GetCertificate", "bundle", {}), self.ca_pem + self.ca_pem)
        self.assertEqual(list(self.call("ListCertificates", {})), ["bundle", "ca", "pre"])
        self.assertFails(INVALID_PARAMETER, None, self.call, "ImportCertificate", "pre",
                         self.ca_pem, {})
        self.assertFails(INVALID_PARAMETER, None, self.call, "DeleteCertificate", "bundle", {})
        with open(path) as f:
            self.assertEqual(f.read(), self.ca_pem)

    def test_idle_exit(self):
        self.stack.stop_process("certd")
        self.certd = self.start_certd(idle_timeout=1)
        self.assertEqual(self.call("GetCertificate", "ca", {}), self.ca_pem)
        wait_until(lambda: not self.certd.alive(), 10, "certd to exit when idle")
        self.assertEqual(self.certd.popen.poll(), 0)
        self.stack.processes.pop("certd")

    def test_introspection_matches_the_xml(self):
        with open(XML_PATH) as f:
            documented = describe_interface(f.read(), CERTS_IFACE)
        running = describe_interface(
            str(self.call("org.freedesktop.DBus.Introspectable.Introspect")), CERTS_IFACE)
        self.assertEqual(running, documented)


class AuthorizationTest(CertdTestCase):
    def test_reading_is_open(self):
        self.assertEqual(self.call_as(USER_A, "GetCertificate", "ca", {}), self.ca_pem)
        self.assertEqual(self.call_as(USER_A, "ListCertificates", {}), ["ca"])

    def test_bus_policy_refuses_other_groups(self):
        self.assertFails(ACCESS_DENIED, None, self.call_as, USER_A, "GetCertificate", "ca", {},
                         groups=None)

    def test_changes_are_denied(self):
        _, csr = make_csr("device")
        message = f"user {self.uid_a} is not authorized to modify the cert x"
        self.assertFails(NOT_AUTHORIZED, message, self.call_as, USER_A, "ImportCertificate", "x",
                         self.ca_pem, {})
        self.assertFails(NOT_AUTHORIZED, None, self.call_as, USER_A, "DeleteCertificate", "ca",
                         {})
        self.assertFails(NOT_AUTHORIZED, None, self.call_as, USER_A, "CreateCertificate", "x",
                         csr, {"issuer": ["ca", self.handles["ca-key"]]})
        self.assertEqual(self.call("GetCertificate", "ca", {}), self.ca_pem)
        self.assertFails(NOT_FOUND, None, self.call, "GetCertificate", "x", {})

    def wait_for_import(self, user, cert_id, expected_error):
        last = []

        def reached():
            try:
                self.call_as(user, "ImportCertificate", cert_id, self.ca_pem, {})
                last[:] = [None]
            except CallError as e:
                last[:] = [e.name]
            return last[0] == expected_error
        try:
            wait_until(reached, RELOAD_TIMEOUT, f"the import of {cert_id} to give "
                       f"{expected_error}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last outcome {last!r}") from None

    def test_principal_glob(self):
        self.write_principals([(self.uid_a, ["dev-*"])])
        self.wait_for_import(USER_A, "dev-1", None)
        self.assertEqual(self.call("GetCertificate", "dev-1", {}), self.ca_pem)
        self.assertFails(NOT_AUTHORIZED, None, self.call_as, USER_A, "ImportCertificate",
                         "other", self.ca_pem, {})
        self.call_as(USER_A, "DeleteCertificate", "dev-1", {})
        self.assertFails(NOT_FOUND, None, self.call, "GetCertificate", "dev-1", {})
        # Issuing needs the issuer's certificate id too.
        _, csr = make_csr("dev-2")
        self.assertFails(NOT_AUTHORIZED,
                         f"user {self.uid_a} is not authorized to modify the cert ca",
                         self.call_as, USER_A, "CreateCertificate", "dev-2", csr,
                         {"issuer": ["ca", self.handles["ca-key"]]})
        self.write_principals([(self.uid_a, ["dev-*", "ca"])])
        pem = None

        def issued():
            nonlocal pem
            try:
                pem = self.call_as(USER_A, "CreateCertificate", "dev-2", csr,
                                   {"issuer": ["ca", self.handles["ca-key"]]})
                return True
            except CallError as e:
                if e.name != NOT_AUTHORIZED:
                    raise
                return False
        wait_until(issued, RELOAD_TIMEOUT, "the issuance as a principal")
        self.assertEqual(self.verify(pem).returncode, 0)
        # The principal is gone: denied again.
        os.unlink(os.path.join(self.config_dir, "principals.toml"))
        self.wait_for_import(USER_A, "dev-1", NOT_AUTHORIZED)

    def test_polkit_rule(self):
        self.add_rules(f"""
polkit.addRule(function(action, subject) {{
    if (action.id == "org.aziot.certs.manage" && subject.user == "{USER_A}" &&
        action.lookup("cert_id") == "by-polkit")
        return polkit.Result.YES;
}});
""")
        self.call_as(USER_A, "ImportCertificate", "by-polkit", self.ca_pem, {})
        self.assertEqual(self.call("GetCertificate", "by-polkit", {}), self.ca_pem)
        self.assertFails(NOT_AUTHORIZED, None, self.call_as, USER_A, "ImportCertificate",
                         "other", self.ca_pem, {})
        self.assertFails(NOT_AUTHORIZED, None, self.call_as, USER_B, "ImportCertificate",
                         "by-polkit", self.ca_pem, {})
        self.call_as(USER_A, "DeleteCertificate", "by-polkit", {})
        self.assertFails(NOT_FOUND, None, self.call, "GetCertificate", "by-polkit", {})

    def peer_as(self, user):
        """A process running as user, connected to a socket we accept: (popen, our end)."""
        peer, conn = self.stack.connected_peer_as(user)
        self.addCleanup(peer.wait, 10)
        self.addCleanup(conn.close)
        # UnixFd arguments hold duplicates of our end: shut it down for the peer to see the end.
        self.addCleanup(conn.shutdown, socket.SHUT_RDWR)
        return peer, conn

    def test_client_socket_delegation(self):
        """Root (as the gateway would) passes a client's socket: the client is authorized."""
        _, conn = self.peer_as(USER_A)
        fd = {"client-socket": dbus.types.UnixFd(conn.fileno())}
        self.assertEqual(self.call("GetCertificate", "ca", fd), self.ca_pem)
        self.assertFails(NOT_AUTHORIZED,
                         f"user {self.uid_a} is not authorized to modify the cert x",
                         self.call, "ImportCertificate", "x", self.ca_pem, fd)
        self.write_principals([(self.uid_a, ["x"])])

        def allowed():
            try:
                self.call("ImportCertificate", "x", self.ca_pem, fd)
                return True
            except CallError as e:
                if e.name != NOT_AUTHORIZED:
                    raise
                return False
        wait_until(allowed, RELOAD_TIMEOUT, "the import for the delegating client")
        # Not a socket: refused.
        with open(os.devnull) as f:
            self.assertFails(INVALID_PARAMETER, None, self.call, "ImportCertificate", "x",
                             self.ca_pem, {"client-socket": dbus.types.UnixFd(f.fileno())})


# Properties.GetAll on one certificate object as another user: argv[1] is the path.
USER_GET_ALL = r'''
import json, os, sys
import dbus
conn = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
try:
    r = conn.call_blocking("org.aziot.Certificates1", sys.argv[1],
                           "org.freedesktop.DBus.Properties", "GetAll", "s",
                           ["org.aziot.Certificates1.Certificate"], timeout=20)
    print(json.dumps({"ok": {str(k): (int(v) if isinstance(v, dbus.UInt64) else str(v))
                             for k, v in r.items()}}))
except dbus.DBusException as e:
    print(json.dumps({"error": e.get_dbus_name(), "message": e.get_dbus_message()}))
'''


class CertificateObjectTest(CertdTestCase):
    """One object per certificate, org.aziot.Certificates1.Certificate."""

    def get_all(self, cert_id):
        try:
            return self.conn.call_blocking(CERTS_NAME, cert_path(cert_id), PROPERTIES_IFACE,
                                           "GetAll", "s", [CERT_IFACE], timeout=CALL_TIMEOUT)
        except dbus.DBusException as e:
            raise CallError(e.get_dbus_name(), e.get_dbus_message()) from None

    def tree(self):
        r = subprocess.run(["busctl", "--system", "--list", "tree", CERTS_NAME],
                           env=self.stack.child_env(), capture_output=True, text=True,
                           timeout=CALL_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        return set(r.stdout.split())

    def assertMatchesPem(self, props, cert_id, pem):
        cert = pem_blocks(pem)[0]
        epoch_us = 1_000_000
        self.assertEqual(str(props["Id"]), cert_id)
        self.assertEqual(str(props["Subject"]), cert.subject.rfc4514_string())
        self.assertEqual(str(props["Issuer"]), cert.issuer.rfc4514_string())
        self.assertEqual(int(props["NotBefore"]), utc_seconds(cert.not_valid_before) * epoch_us)
        self.assertEqual(int(props["NotAfter"]), utc_seconds(cert.not_valid_after) * epoch_us)
        self.assertEqual(int(str(props["Serial"]), 16), cert.serial_number)
        self.assertEqual(str(props["Serial"]), str(props["Serial"]).upper())
        self.assertEqual(str(props["RenewalState"]), "none")

    def test_tree_and_properties(self):
        _, csr = make_csr("device-1")
        issued = self.issue("dev-1.x", csr)
        self.call("ImportCertificate", "a/b", self.ca_pem, {})
        self.call("ImportCertificate", "1st cert", self.ca_pem, {})
        tree = self.tree()
        for cert_id in ("ca", "dev-1.x", "a/b", "1st cert"):
            with self.subTest(id=cert_id):
                self.assertIn(cert_path(cert_id), tree)
        self.assertEqual(cert_path("dev-1.x"), CERT_PATH_PREFIX + "/dev_2d1_2ex")
        props = self.get_all("dev-1.x")
        self.assertMatchesPem(props, "dev-1.x", issued)
        self.assertEqual(str(props["Issuer"]), "CN=test CA")
        self.assertMatchesPem(self.get_all("a/b"), "a/b", self.ca_pem)
        self.assertMatchesPem(self.get_all("1st cert"), "1st cert", self.ca_pem)
        # One property by itself, as busctl get-property does.
        r = subprocess.run(["busctl", "--system", "get-property", CERTS_NAME,
                            cert_path("dev-1.x"), CERT_IFACE, "Subject"],
                           env=self.stack.child_env(), capture_output=True, text=True,
                           timeout=CALL_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), 's "CN=device-1"')

    def test_deleted_certificate_has_no_object(self):
        self.call("ImportCertificate", "gone", self.ca_pem, {})
        self.assertIn(cert_path("gone"), self.tree())
        self.call("DeleteCertificate", "gone", {})
        self.assertNotIn(cert_path("gone"), self.tree())
        self.assertFails(UNKNOWN_OBJECT, None, self.get_all, "gone")
        # Never stored, or not a valid id (a control character): no object either.
        self.assertFails(UNKNOWN_OBJECT, None, self.get_all, "never")
        self.assertFails(UNKNOWN_OBJECT, None, self.get_all, "a\x01b")

    def test_object_manager_and_signals(self):
        manager = dbus.Interface(self.conn.get_object(CERTS_NAME, CERTS_PATH),
                                 "org.freedesktop.DBus.ObjectManager")
        objects = manager.GetManagedObjects(timeout=CALL_TIMEOUT)
        self.assertEqual(set(map(str, objects)), {cert_path("ca")})
        self.assertEqual(str(objects[cert_path("ca")][CERT_IFACE]["Id"]), "ca")
        # The signals, as a subscriber sees them (gdbus monitor: plain match rules).
        monitor = subprocess.Popen(["gdbus", "monitor", "--system", "--dest", CERTS_NAME],
                                   env=self.stack.child_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        self.addCleanup(monitor.wait, 10)
        self.addCleanup(monitor.terminate)
        for _ in range(3):  # a banner, then the owner: the match rules are in place
            if "is owned by" in monitor.stdout.readline():
                break
        else:
            self.fail("gdbus monitor did not see certd")
        self.call("ImportCertificate", "new", self.ca_pem, {})
        self.call("ImportCertificate", "new", self.ca_pem, {})
        self.call("DeleteCertificate", "new", {})
        self.call("DeleteCertificate", "new", {})  # nothing to remove: no signal
        self.call("ListCertificates", {})
        lines = []
        for _ in range(3):
            lines.append(monitor.stdout.readline())
        monitor.terminate()
        rest, _ = monitor.communicate(timeout=10)
        lines += rest.splitlines()
        signals = [line.split(":", 1)[1].split("(", 1)[0].strip() for line in lines
                   if line.strip()]
        self.assertEqual(signals, ["org.freedesktop.DBus.ObjectManager.InterfacesAdded",
                                   "org.freedesktop.DBus.Properties.PropertiesChanged",
                                   "org.freedesktop.DBus.ObjectManager.InterfacesRemoved"],
                         lines)
        self.assertIn(f"objectpath '{cert_path('new')}'", lines[0])
        self.assertTrue(lines[1].startswith(cert_path("new") + ":"), lines[1])
        self.assertIn(f"objectpath '{cert_path('new')}'", lines[2])

    def test_readable_by_an_unprivileged_member_of_the_group(self):
        r = self.stack.run_as(USER_A, [PYTHON, "-c", USER_GET_ALL, cert_path("ca")],
                              groups=[CERTS_GROUP])
        self.assertEqual(r.returncode, 0, r.stderr)
        outcome = json.loads(r.stdout)
        self.assertIn("ok", outcome, outcome)
        self.assertMatchesPem(outcome["ok"], "ca", self.ca_pem)
        r = self.stack.run_as(USER_A, [PYTHON, "-c", USER_GET_ALL, cert_path("ca")])
        self.assertEqual(json.loads(r.stdout).get("error"), ACCESS_DENIED, r.stdout)

    def test_introspection_matches_the_xml(self):
        with open(XML_PATH) as f:
            documented = describe_interface(f.read(), CERT_IFACE)
        text = self.conn.call_blocking(CERTS_NAME, cert_path("ca"),
                                       "org.freedesktop.DBus.Introspectable", "Introspect", "",
                                       [], timeout=CALL_TIMEOUT)
        self.assertEqual(describe_interface(str(text), CERT_IFACE), documented)


if __name__ == "__main__":
    unittest.main(verbosity=2)
