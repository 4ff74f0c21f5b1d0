#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziotctl check and check-list (spec §7.2) on configurations written under a temporary
AZIOTCTL_ROOT: each check good and bad, the three output formats, the exit codes, --dont-run and
--warnings-as-errors; the connectivity checks against the mock IoT Hub's TLS server (and a closed
port), host-local-time against a small SNTP server in this process.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_AZIOTCTL, AZIOT_PROJECT_VERSION.
"""

import datetime
import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cloud"))
import mock_hub  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

AZIOTCTL = os.environ["AZIOT_AZIOTCTL"]
VERSION = os.environ.get("AZIOT_PROJECT_VERSION", "0.0.0")
RESULTS = {"ok", "warning", "ignored", "skipped", "fatal", "error"}

# Everything that needs the bus, the network or the clock of the internet.
OFFLINE = ("keyd-running certd-running tpmd-running identityd-running certs-read key-pairs-read "
           "host-local-time aziot-version host-connect-dps-endpoint host-connect-iothub-amqp "
           "host-connect-iothub-https host-connect-iothub-mqtt")
MACHINE = socket.gethostname().lower()
DAY = datetime.timedelta(days=1)


def make_key():
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(key, cn="device", not_before=None, not_after=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - DAY).not_valid_after(not_after or now + 365 * DAY)
            .sign(key, hashes.SHA256()))


class SntpServer:
    """Answers SNTP requests with its clock shifted by offset seconds."""

    def __init__(self, offset=0.0):
        self.offset = offset
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            t = time.time() + self.offset + 2208988800
            stamp = struct.pack("!II", int(t), int((t % 1) * 2**32))
            reply = bytes([0x24, 1, 0, 0]) + bytes(20) + data[40:48] + stamp + stamp
            self.sock.sendto(reply, peer)

    def close(self):
        self.sock.close()


class CheckBase(unittest.TestCase):
    """A temporary AZIOTCTL_ROOT with the four service configurations, and aziotctl on it."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="aziotctl-check-")
        self.secrets = os.path.join(self.root, "secrets")
        os.makedirs(self.secrets)
        for svc in ("keyd", "certd", "tpmd", "identityd"):
            os.makedirs(self.path(f"etc/aziot/{svc}/config.d"))
        self.keyd, self.certd = {}, {}
        self.certd_extra = ""
        self.write_configs()

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------

    def path(self, rel):
        return os.path.join(self.root, rel)

    def write(self, rel, text):
        with open(self.path(rel), "w") as f:
            f.write(text)

    def write_configs(self, identity=None, hostname=None):
        keys = "".join(f'"{k}" = "{v}"\n' for k, v in self.keyd.items())
        certs = "".join(f'"{k}" = "{v}"\n' for k, v in self.certd.items())
        self.write("etc/aziot/keyd/config.toml",
                   '[aziot_keys]\n\n[preloaded_keys]\n' + keys)
        self.write("etc/aziot/certd/config.toml",
                   f'homedir_path = "{self.path("var/lib/aziot/certd")}"\n\n'
                   '[preloaded_certs]\n' + certs + self.certd_extra)
        self.write("etc/aziot/tpmd/config.toml", "")
        self.write("etc/aziot/identityd/config.toml",
                   f'hostname = "{hostname or MACHINE}"\n'
                   f'homedir = "{self.path("var/lib/aziot/identityd")}"\n\n' +
                   (identity or '[provisioning]\nsource = "manual"\n'
                    'iothub_hostname = "example.azure-devices.net"\ndevice_id = "dev1"\n\n'
                    '[provisioning.authentication]\nmethod = "sas"\n'
                    'device_id_pk = "device-id"\n'))

    def preload_cert(self, id_, cert):
        p = os.path.join(self.secrets, f"{id_}.pem")
        with open(p, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        self.certd[id_] = f"file://{p}"
        return p

    def preload_key(self, id_, key):
        p = os.path.join(self.secrets, f"{id_}.key.pem")
        with open(p, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        self.keyd[id_] = f"file://{p}"

    def run_ctl(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("AZIOT_")}
        e.update({"AZIOTCTL_ROOT": self.root,
                  "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.root}/no-bus"})
        e.update(env or {})
        return subprocess.run([AZIOTCTL] + list(args), capture_output=True, text=True, env=e,
                              timeout=60)

    def check(self, *args, dont_run=OFFLINE, env=None):
        r = self.run_ctl("check", "-o", "json", "--dont-run", dont_run, *args, env=env)
        out = json.loads(r.stdout)
        return r.returncode, out["checks"], out

    def result(self, checks, id_):
        return checks[id_]["result"]["result"]

    def details(self, checks, id_):
        return "\n".join(checks[id_]["result"].get("details", []))



class CheckTest(CheckBase):
    # -- shape, formats, exit codes ----------------------------------------------------------

    def test_check_list(self):
        r = self.run_ctl("check-list", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        sections = json.loads(r.stdout)["checks"]
        self.assertEqual(list(sections), ["Configuration checks", "Connectivity checks"])
        ids = [c["id"] for s in sections.values() for c in s]
        for id_ in ("keyd-config-well-formed", "identityd-config-well-formed", "hostname",
                    "certs-match-private-keys", "host-connect-iothub-mqtt"):
            self.assertIn(id_, ids)
        self.assertEqual(len(ids), len(set(ids)))
        text = self.run_ctl("check-list")
        self.assertEqual(text.returncode, 0)
        self.assertIn("certs-preloaded", text.stdout)
        self.assertEqual(self.run_ctl("check-list", "-o", "yaml").returncode, 2)

    def test_good_configuration_json_shape(self):
        rc, checks, out = self.check()
        self.assertEqual(rc, 0, checks)
        self.assertIsInstance(out["additional_info"], dict)
        self.assertIn("now", out["additional_info"])
        listed = json.loads(self.run_ctl("check-list", "-o", "json").stdout)["checks"]
        self.assertEqual(sorted(checks), sorted(c["id"] for s in listed.values() for c in s))
        for id_, c in checks.items():
            self.assertIn(c["result"]["result"], RESULTS, id_)
            self.assertIn("additional_info", c)
        for svc in ("keyd", "certd", "tpmd", "identityd"):
            self.assertEqual(self.result(checks, f"{svc}-config-well-formed"), "ok")
        self.assertEqual(self.result(checks, "hostname"), "ok")
        self.assertEqual(self.result(checks, "keyd-running"), "ignored")
        self.assertEqual(self.result(checks, "identity-certificate-expiry"), "ignored")
        self.assertEqual(self.result(checks, "configs-up-to-date"), "ignored")

    def test_text_output(self):
        self.write_configs(hostname="not-this-machine")
        r = self.run_ctl("check", "--dont-run", OFFLINE)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Configuration checks (aziot-identity-service)\n-----", r.stdout)
        self.assertIn("\u2713 keyd configuration is well-formed - OK", r.stdout)
        self.assertIn("\u00d7 identityd config toml file specifies a valid hostname - Error\n"
                      "    configuration has hostname not-this-machine", r.stdout)
        self.assertIn("check(s) raised errors", r.stdout)
        self.assertNotIn("keyd is running", r.stdout)  # ignored: only with --verbose
        v = self.run_ctl("check", "--dont-run", OFFLINE, "--verbose")
        self.assertIn("keyd is running - ignored", v.stdout)

    def test_json_stream(self):
        r = self.run_ctl("check", "-o", "json-stream", "--dont-run", OFFLINE)
        self.assertEqual(r.returncode, 0, r.stdout)
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        kinds = [x["kind"] for x in lines]
        self.assertEqual(kinds[0], "additional_info")
        self.assertEqual([x["name"] for x in lines if x["kind"] == "section"],
                         ["Configuration checks", "Connectivity checks"])
        checks = {x["id"]: x for x in lines if x["kind"] == "check"}
        self.assertEqual(checks["hostname"]["result"], {"result": "ok"})
        self.assertIn(checks["certd-running"]["result"]["result"], RESULTS)
        self.assertEqual(len(checks), kinds.count("check"))

    def test_usage(self):
        self.assertEqual(self.run_ctl("check", "-o", "xml").returncode, 2)
        self.assertEqual(self.run_ctl("check", "extra").returncode, 2)
        self.assertEqual(self.run_ctl("check", "--bogus").returncode, 2)

    def test_dont_run(self):
        rc, checks, _ = self.check(dont_run=OFFLINE + " hostname keyd-config-well-formed")
        self.assertEqual(self.result(checks, "hostname"), "ignored")
        self.assertEqual(self.result(checks, "keyd-config-well-formed"), "ignored")
        # without the keyd configuration, what needs it is skipped
        self.assertEqual(self.result(checks, "certs-match-private-keys"), "skipped")

    def test_warnings_as_errors(self):
        self.certd_extra = ('\n[cert_issuance.est]\n[cert_issuance.est.urls]\n'
                            'default = "http://est.example.org/.well-known/est"\n')
        self.write_configs()
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "est-server-https"), "warning")
        self.assertIn("http://est.example.org", self.details(checks, "est-server-https"))
        self.assertEqual(rc, 0)
        rc, checks, _ = self.check("--warnings-as-errors")
        self.assertEqual(rc, 1)

    def test_est_https_ok(self):
        self.certd_extra = ('\n[cert_issuance.est]\n[cert_issuance.est.urls]\n'
                            'default = "https://est.example.org/.well-known/est"\n')
        self.write_configs()
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "est-server-https"), "ok")

    # -- configuration -----------------------------------------------------------------------

    def test_malformed_toml_names_file_and_line(self):
        self.write("etc/aziot/certd/config.d/50-bad.toml", "[preloaded_certs]\nx = \n")
        rc, checks, _ = self.check()
        self.assertEqual(rc, 1)
        self.assertEqual(self.result(checks, "certd-config-well-formed"), "error")
        details = self.details(checks, "certd-config-well-formed")
        self.assertIn("50-bad.toml:2", details)
        for id_ in ("certs-preloaded", "est-server-https", "local-ca-certificate-expiry"):
            self.assertEqual(self.result(checks, id_), "skipped", id_)
        self.assertEqual(self.result(checks, "keyd-config-well-formed"), "ok")

    def test_wrong_type_names_key(self):
        self.write("etc/aziot/identityd/config.d/10-timeout.toml", 'cloud_timeout_sec = "soon"\n')
        rc, checks, _ = self.check()
        self.assertEqual(rc, 1)
        details = self.details(checks, "identityd-config-well-formed")
        self.assertIn("cloud_timeout_sec", details)
        self.assertIn("10-timeout.toml", details)
        self.assertEqual(self.result(checks, "hostname"), "skipped")

    def test_certd_wrong_type(self):
        # well-formed TOML that certd's own parser refuses (it takes the tree also on failure)
        self.write("etc/aziot/certd/config.d/10-home.toml", "homedir_path = 5\n")
        rc, checks, _ = self.check()
        self.assertEqual(rc, 1)
        self.assertEqual(self.result(checks, "certd-config-well-formed"), "error")
        self.assertIn("homedir_path", self.details(checks, "certd-config-well-formed"))
        self.assertEqual(self.result(checks, "certs-preloaded"), "skipped")
        self.assertEqual(self.result(checks, "keyd-config-well-formed"), "ok")

    def test_keyd_and_tpmd_malformed(self):
        self.write("etc/aziot/keyd/config.toml", "[preloaded_keys]\nk = 5\n")
        self.write("etc/aziot/tpmd/config.toml", 'auth_key_index = "x"\n')
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "keyd-config-well-formed"), "error")
        self.assertIn("config.toml", self.details(checks, "keyd-config-well-formed"))
        self.assertEqual(self.result(checks, "tpmd-config-well-formed"), "error")
        self.assertIn("auth_key_index", self.details(checks, "tpmd-config-well-formed"))

    def test_configs_up_to_date(self):
        self.write("etc/aziot/config.toml", "")
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "configs-up-to-date"), "warning")
        self.assertIn("00-super.toml does not exist", self.details(checks, "configs-up-to-date"))
        past = time.time() - 100
        os.utime(self.path("etc/aziot/config.toml"), (past, past))
        for svc in ("keyd", "certd", "tpmd", "identityd"):
            self.write(f"etc/aziot/{svc}/config.d/00-super.toml", "")
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "configs-up-to-date"), "ok")
        os.utime(self.path("etc/aziot/certd/config.d/00-super.toml"), (past - 10, past - 10))
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "configs-up-to-date"), "warning")
        self.assertRegex(self.details(checks, "configs-up-to-date"),
                         r"^\S+/etc/aziot/config.toml was modified after "
                         r"\S+/certd/config.d/00-super.toml\. Did you run")

    def test_hostname(self):
        self.write_configs(hostname="other-host")
        rc, checks, _ = self.check()
        self.assertEqual((rc, self.result(checks, "hostname")), (1, "error"))
        self.assertIn(f"device reports hostname {MACHINE}", self.details(checks, "hostname"))
        self.write_configs(hostname=f"{MACHINE.upper()}.example.com")
        rc, checks, _ = self.check()
        self.assertEqual((rc, self.result(checks, "hostname")), (0, "ok"))
        self.write_configs(hostname="10.1.2.3")
        self.assertEqual(self.result(self.check()[1], "hostname"), "ok")
        self.write_configs(hostname=f"{MACHINE}.under_score")
        rc, checks, _ = self.check()
        self.assertEqual((rc, self.result(checks, "hostname")), (0, "warning"))
        self.assertIn("RFC 1035", self.details(checks, "hostname"))
        self.write_configs(hostname=f"{MACHINE}." + "a" * 60 + ".example.com")
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "hostname"), "warning")
        self.assertIn("64 characters", self.details(checks, "hostname"))

    # -- certificates ------------------------------------------------------------------------

    X509_MANUAL = ('[provisioning]\nsource = "manual"\n'
                   'iothub_hostname = "example.azure-devices.net"\ndevice_id = "dev1"\n\n'
                   '[provisioning.authentication]\nmethod = "x509"\n'
                   'identity_cert = "device-id"\nidentity_pk = "device-id"\n')

    def identity_cert_result(self, **validity):
        key = make_key()
        self.preload_cert("device-id", make_cert(key, **validity))
        self.preload_key("device-id", key)
        self.write_configs(identity=self.X509_MANUAL)
        rc, checks, _ = self.check()
        return rc, checks

    def test_identity_certificate_valid(self):
        rc, checks = self.identity_cert_result()
        self.assertEqual(self.result(checks, "identity-certificate-expiry"), "ok")
        self.assertEqual(self.result(checks, "certs-preloaded"), "ok")
        self.assertEqual(self.result(checks, "certs-match-private-keys"), "ok")
        self.assertEqual(rc, 0, checks)

    def test_identity_certificate_expired(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        rc, checks = self.identity_cert_result(not_before=now - 10 * DAY, not_after=now - DAY)
        self.assertEqual(rc, 1)
        self.assertEqual(self.result(checks, "identity-certificate-expiry"), "error")
        self.assertIn("device identity certificate device-id expired",
                      self.details(checks, "identity-certificate-expiry"))
        self.assertEqual(self.result(checks, "certs-preloaded"), "error")

    def test_identity_certificate_expiring_soon(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        rc, checks = self.identity_cert_result(not_after=now + 3 * DAY)
        self.assertEqual(rc, 0)
        self.assertEqual(self.result(checks, "identity-certificate-expiry"), "warning")
        self.assertIn("will expire soon", self.details(checks, "identity-certificate-expiry"))

    def test_identity_certificate_not_yet_valid(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        rc, checks = self.identity_cert_result(not_before=now + DAY)
        self.assertEqual(self.result(checks, "identity-certificate-expiry"), "error")
        self.assertIn("is not valid until", self.details(checks, "identity-certificate-expiry"))

    def test_local_ca_expiry(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        key = make_key()
        self.preload_cert("local-ca", make_cert(key, cn="ca", not_after=now - DAY,
                                                not_before=now - 9 * DAY))
        self.preload_key("local-ca", key)
        self.certd_extra = '\n[cert_issuance.local_ca]\ncert = "local-ca"\npk = "local-ca"\n'
        self.write_configs()
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "local-ca-certificate-expiry"), "error")
        self.assertIn("local CA certificate local-ca expired",
                      self.details(checks, "local-ca-certificate-expiry"))

    def test_local_ca_absent_is_ignored(self):
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "local-ca-certificate-expiry"), "ignored")
        self.assertEqual(self.result(checks, "est-identity-and-bootstrap-certificate-expiry"),
                         "ignored")

    def test_est_bootstrap_expiry(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        key = make_key()
        self.preload_cert("est-bootstrap-id", make_cert(key, not_after=now + 2 * DAY))
        self.preload_key("est-bootstrap-id", key)
        self.certd_extra = (
            '\n[cert_issuance.est]\nidentity_cert = "est-id"\nidentity_pk = "est-id"\n'
            'bootstrap_identity_cert = "est-bootstrap-id"\n'
            'bootstrap_identity_pk = "est-bootstrap-id"\n'
            '[cert_issuance.est.urls]\ndefault = "https://est.example.org/.well-known/est"\n')
        self.write_configs()
        rc, checks, _ = self.check()
        id_ = "est-identity-and-bootstrap-certificate-expiry"
        self.assertEqual(self.result(checks, id_), "warning", checks[id_])
        self.assertIn("EST bootstrap identity certificate est-bootstrap-id will expire soon",
                      self.details(checks, id_))

    def test_preloaded_non_file_uri(self):
        self.certd["weird"] = "https://example.org/cert.pem"
        self.write_configs()
        rc, checks, _ = self.check()
        self.assertEqual(rc, 1)
        self.assertEqual(self.result(checks, "certs-preloaded"), "error")
        self.assertIn("only file://", self.details(checks, "certs-preloaded"))

    def test_preloaded_missing_file_and_garbage(self):
        self.certd["gone"] = f"file://{self.secrets}/gone.pem"
        with open(os.path.join(self.secrets, "junk.pem"), "w") as f:
            f.write("not a certificate\n")
        self.certd["junk"] = f"file://{self.secrets}/junk.pem"
        self.write_configs()
        rc, checks, _ = self.check()
        details = self.details(checks, "certs-preloaded")
        self.assertIn("gone.pem", details)
        self.assertIn("holds no PEM certificate", details)

    def test_preloaded_unreadable_by_certd(self):
        try:
            pwd.getpwnam("aziotcs")
        except KeyError:
            self.skipTest("no user aziotcs")
        path = self.preload_cert("device-id", make_cert(make_key()))
        self.write_configs()
        os.chmod(path, 0o644)
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "certs-preloaded"), "ok")
        os.chown(path, 0, 0)
        os.chmod(path, 0o600)
        rc, checks, _ = self.check()
        self.assertEqual(self.result(checks, "certs-preloaded"), "warning")
        self.assertIn("not readable by user aziotcs", self.details(checks, "certs-preloaded"))

    def test_certs_do_not_match_keys(self):
        self.preload_cert("device-id", make_cert(make_key()))
        self.preload_key("device-id", make_key())
        self.write_configs()
        rc, checks, _ = self.check()
        self.assertEqual(rc, 1)
        self.assertEqual(self.result(checks, "certs-match-private-keys"), "error")
        self.assertIn("certificate device-id does not match the private key device-id",
                      self.details(checks, "certs-match-private-keys"))

    # -- time and version --------------------------------------------------------------------

    def test_host_local_time(self):
        only = OFFLINE.replace("host-local-time", "")
        for offset, expected in ((0, "ok"), (120, "warning")):
            server = SntpServer(offset)
            try:
                rc, checks, _ = self.check("--ntp-server", server.address, dont_run=only)
            finally:
                server.close()
            self.assertEqual(self.result(checks, "host-local-time"), expected, checks)
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        rc, checks, _ = self.check("--ntp-server", f"127.0.0.1:{port}", dont_run=only)
        self.assertEqual(self.result(checks, "host-local-time"), "warning")
        self.assertIn("could not query NTP server", self.details(checks, "host-local-time"))

    def test_aziot_version(self):
        only = OFFLINE.replace("aziot-version", "")
        rc, checks, _ = self.check(dont_run=only)
        self.assertEqual(self.result(checks, "aziot-version"), "skipped")
        major_minor = ".".join(VERSION.split(".")[:2])
        rc, checks, _ = self.check("--expected-aziot-version", major_minor + ".99", dont_run=only)
        self.assertEqual(self.result(checks, "aziot-version"), "ok")
        rc, checks, _ = self.check("--expected-aziot-version", "99.1.0", dont_run=only)
        self.assertEqual(self.result(checks, "aziot-version"), "warning")


class ConnectivityTest(CheckBase):
    """The host-connect-* checks against the mock IoT Hub's HTTPS server (its own CA, trusted
    through SSL_CERT_FILE) and against a port nobody listens on."""

    CONNECT = ("host-connect-iothub-amqp", "host-connect-iothub-https",
               "host-connect-iothub-mqtt", "host-connect-dps-endpoint")

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="aziotctl-connect-")
        cls.hub = mock_hub.MockHub(os.path.join(cls.dir, "hub"))
        cls.hub.start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def connect(self, hub_host, dps_url, *args, env=None):
        self.write_configs(identity=(
            'cloud_timeout_sec = 70\n[provisioning]\nsource = "dps"\n'
            f'global_endpoint = "{dps_url}"\nscope_id = "0ne00000A1"\n\n'
            '[provisioning.attestation]\nmethod = "symmetric_key"\n'
            'registration_id = "dev1"\nsymmetric_key = "device-id"\n'))
        skip = " ".join(i for i in OFFLINE.split() if i not in self.CONNECT)
        hub_args = ("--iothub-hostname", hub_host) if hub_host else ()
        return self.check(*hub_args, *args, dont_run=skip,
                          env={"SSL_CERT_FILE": self.hub.server_ca_path, **(env or {})})

    def test_connect_ok(self):
        rc, checks, _ = self.connect(self.hub.hostname, self.hub.url + "/")
        for id_ in self.CONNECT:
            self.assertEqual(self.result(checks, id_), "ok", checks[id_])
        self.assertEqual(rc, 0)

    def test_connect_closed_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        rc, checks, _ = self.connect(f"localhost:{port}", f"https://localhost:{port}/")
        self.assertEqual(rc, 1)
        for id_ in self.CONNECT:
            self.assertEqual(self.result(checks, id_), "error", id_)
            self.assertIn(f"could not connect to localhost:{port}", self.details(checks, id_))

    def test_connect_untrusted(self):
        rc, checks, _ = self.connect(self.hub.hostname, self.hub.url + "/",
                                     env={"SSL_CERT_FILE": "/dev/null"})
        self.assertEqual(self.result(checks, "host-connect-iothub-https"), "error")
        self.assertIn("TLS handshake failed", self.details(checks, "host-connect-iothub-https"))

    def test_hub_unknown_before_provisioning(self):
        rc, checks, _ = self.connect(None, self.hub.url + "/")
        self.assertEqual(self.result(checks, "host-connect-iothub-mqtt"), "warning")
        self.assertIn("--iothub-hostname", self.details(checks, "host-connect-iothub-mqtt"))
        # identityd's prev_state names the hub it provisioned to
        os.makedirs(self.path("var/lib/aziot/identityd"), exist_ok=True)
        self.write("var/lib/aziot/identityd/prev_state",
                   f'[device]\nhub_name = "{self.hub.hostname}"\ndevice_id = "dev1"\n')
        rc, checks, _ = self.connect(None, self.hub.url + "/")
        self.assertEqual(self.result(checks, "host-connect-iothub-mqtt"), "ok", checks)

    def test_proxy_refusing(self):
        # a "proxy" that answers 403 to CONNECT
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]

        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                c.recv(4096)
                c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                c.close()
        threading.Thread(target=serve, daemon=True).start()
        try:
            rc, checks, _ = self.connect(self.hub.hostname, self.hub.url + "/",
                                         "--proxy-uri", f"http://127.0.0.1:{port}")
        finally:
            srv.close()
        self.assertEqual(self.result(checks, "host-connect-iothub-https"), "error")
        self.assertIn("403", self.details(checks, "host-connect-iothub-https"))
        self.assertEqual(self.result(checks, "host-connect-iothub-mqtt"), "ok")


if __name__ == "__main__":
    unittest.main(verbosity=2)
