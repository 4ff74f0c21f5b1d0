#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziotctl config (mp, apply) and aziotctl system.

config apply: each case under tests/tools/expected/apply/<case>/ holds a super-config
(config.toml) and the four 00-super.toml files upstream's translation (spec §7.3) gives for it,
with the service users' uids as @AZIOTID_UID@ / @AZIOTCS_UID@. The tool writes under
$AZIOTCTL_ROOT (a temporary directory). The generated files are then loaded by the real keyd,
certd and identityd on a private bus. Bad super-configs fail naming the key and write nothing.
The shipped template is checked by uncommenting each provisioning block.

system: set-log-level drop-ins, the answers without systemd (this test never runs with systemd as
PID 1 touching real units: restart/stop/logs are only checked where systemd is absent), status
from the bus, and reprovision against identityd provisioned by the mock DPS (and refused by polkit
to an unprivileged user).

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOTCTL, AZIOT_IDENTITYD,
AZIOT_KEYD, AZIOT_CERTD, AZIOT_TPMD, AZIOT_PROVIDER_DIR.
"""

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cloud"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "bus"))
import aziot_harness  # noqa: E402
from aziot_identity_suite import CERTD, IDENTITYD, KEYD, PROVIDER_DIR  # noqa: E402

AZIOTCTL = os.environ.get("AZIOT_AZIOTCTL") or os.path.join(BUILD_DIR, "tools", "aziotctl", "aziotctl")
EXPECTED = os.path.join(SOURCE_DIR, "tests", "tools", "expected", "apply")
TEMPLATE = os.path.join(SOURCE_DIR, "config", "config.toml.template")
SERVICE_USERS = {"keyd": "aziotks", "certd": "aziotcs", "identityd": "aziotid",
                 "tpmd": "aziottpm"}
SERVICES = ("keyd", "certd", "identityd", "tpmd")
SECRET = "var/secrets/aziot/keyd/device-id"
SYSTEMD = os.path.isdir("/run/systemd/system")

# The inline keys of the cases, as written to /var/secrets/aziot/keyd/device-id.
SECRETS = {
    "manual-connection-string": b"Aziure IoT Identity Service",
    "manual-sas-value": b"abcd",
    "dps-symmetric-key": b"abc",
    "nested": b"abcd",
}


def ensure_service_users():
    """The four service users (and their groups), created when missing (idempotent)."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root: config apply writes files owned by service users")
    for name in SERVICE_USERS.values():
        try:
            pwd.getpwnam(name)
            continue
        except KeyError:
            pass
        try:
            grp.getgrnam(name)
            group = ["-g", name]
        except KeyError:
            group = ["-U"]
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", *group, name], capture_output=True, text=True)
        if r.returncode != 0:
            try:
                pwd.getpwnam(name)  # created meanwhile by another test
            except KeyError:
                raise AssertionError(f"useradd {name}: {r.stderr}") from None


def aziotctl(*args, root=None, env=None, **kwargs):
    full_env = {k: v for k, v in os.environ.items() if k != "AZIOTCTL_ROOT"}
    if root is not None:
        full_env["AZIOTCTL_ROOT"] = root
    full_env.update(env or {})
    return subprocess.run([AZIOTCTL, *args], capture_output=True, text=True, env=full_env,
                          timeout=120, **kwargs)


def cases():
    return sorted(d for d in os.listdir(EXPECTED)
                  if os.path.isfile(os.path.join(EXPECTED, d, "config.toml")))


def expected_text(case, service):
    with open(os.path.join(EXPECTED, case, f"{service}.toml")) as f:
        text = f.read()
    return (text.replace("@AZIOTID_UID@", str(pwd.getpwnam("aziotid").pw_uid))
                .replace("@AZIOTCS_UID@", str(pwd.getpwnam("aziotcs").pw_uid)))


def files_under(root):
    found = []
    for d, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(found)


class TempRootMixin:
    def setUp(self):
        ensure_service_users()
        self.root = tempfile.mkdtemp(prefix="aziotctl-test-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)

    def write(self, name, text, mode=0o600):
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def apply(self, text):
        """Applies super-config text under a fresh destination root; (result, dest root)."""
        dest = tempfile.mkdtemp(dir=self.root)
        src = self.write(f"config-{os.path.basename(dest)}.toml", text)
        return aziotctl("config", "apply", "-c", src, root=dest), dest


class ApplyTest(TempRootMixin, unittest.TestCase):
    def check_case(self, case):
        dest = os.path.join(self.root, case)
        os.mkdir(dest)
        r = aziotctl("config", "apply", "-c", os.path.join(EXPECTED, case, "config.toml"),
                     root=dest)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Azure IoT Identity Service has been configured successfully!", r.stdout)
        self.assertIn("AZIOTCTL_ROOT is set: the services were not restarted.", r.stdout)
        for service in SERVICES:
            path = os.path.join(dest, "etc", "aziot", service, "config.d", "00-super.toml")
            with open(path) as f:
                self.assertEqual(f.read(), expected_text(case, service), f"{case}: {service}")
            st = os.stat(path)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
            self.assertEqual(st.st_uid, pwd.getpwnam(SERVICE_USERS[service]).pw_uid)
            st = os.stat(os.path.dirname(path))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o700)
            self.assertEqual(st.st_uid, pwd.getpwnam(SERVICE_USERS[service]).pw_uid)
        secret = os.path.join(dest, SECRET)
        if case in SECRETS:
            with open(secret, "rb") as f:
                self.assertEqual(f.read(), SECRETS[case])
            st = os.stat(secret)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
            self.assertEqual(st.st_uid, pwd.getpwnam("aziotks").pw_uid)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(secret)).st_mode), 0o700)
        else:
            self.assertFalse(os.path.exists(secret))

    def test_cases(self):
        self.assertGreaterEqual(len(cases()), 14)
        for case in cases():
            with self.subTest(case=case):
                self.check_case(case)

    def test_worked_example_matches_the_spec(self):
        # Spec §7.3's worked example, spelled out here too (not only in the expected files).
        dest = os.path.join(self.root, "example")
        os.mkdir(dest)
        r = aziotctl("config", "apply", "-c", os.path.join(
            EXPECTED, "dps-x509-est-bootstrap-auto-renew", "config.toml"), root=dest)
        self.assertEqual(r.returncode, 0, r.stderr)
        d = os.path.join(dest, "etc", "aziot")
        with open(os.path.join(d, "keyd", "config.d", "00-super.toml")) as f:
            keyd = f.read()
        with open(os.path.join(d, "certd", "config.d", "00-super.toml")) as f:
            certd = f.read()
        aziotid, aziotcs = pwd.getpwnam("aziotid").pw_uid, pwd.getpwnam("aziotcs").pw_uid
        self.assertIn(f'uid = {aziotid}\nkeys = ["aziot_identityd_master_id", "device-id"]\n',
                      keyd)
        self.assertIn(f'uid = {aziotcs}\nkeys = ["est-bootstrap-id-device-id", '
                      f'"est-id-device-id-temp", "est-id-device-id"]\n', keyd)
        self.assertIn(f'uid = {aziotid}\ncerts = ["device-id-temp", "device-id"]\n', certd)
        self.assertIn('[preloaded_certs]\nest-bootstrap-id-device-id = "file:///var/secrets/'
                      'est-bootstrap-id.pem"\nest-server-ca-1 = "file:///var/secrets/'
                      'est-id-ca.pem"\n', certd)

    def test_hostname_defaults_to_the_machine(self):
        r, dest = self.apply('[provisioning]\nsource = "none"\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(dest, "etc/aziot/identityd/config.d/00-super.toml")) as f:
            self.assertTrue(f.read().startswith(f'hostname = "{os.uname().nodename}"\n'))

    def test_empty_tcti_is_the_default_tcti(self):
        r, dest = self.apply('[provisioning]\nsource = "none"\n[tpm]\ntcti = ""\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(dest, "etc/aziot/tpmd/config.d/00-super.toml")) as f:
            self.assertEqual(f.read(), 'tcti = ""\n')

    def test_reapply_replaces(self):
        r, dest = self.apply('hostname = "a"\n[provisioning]\nsource = "none"\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        src = self.write("again.toml", 'hostname = "b"\n[provisioning]\nsource = "none"\n')
        r = aziotctl("config", "apply", "--config", src, root=dest)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(dest, "etc/aziot/identityd/config.d/00-super.toml")) as f:
            self.assertTrue(f.read().startswith('hostname = "b"\n'))
        self.assertFalse([n for n in os.listdir(os.path.join(dest, "etc/aziot/identityd/config.d"))
                          if n != "00-super.toml"])

    def test_not_root(self):
        src = self.write("c.toml", '[provisioning]\nsource = "none"\n', mode=0o644)
        os.chmod(self.root, 0o755)
        dest = tempfile.mkdtemp(dir=self.root)
        os.chmod(dest, 0o777)
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            AZIOTCTL, "config", "apply", "-c", src],
                           env={**os.environ, "AZIOTCTL_ROOT": dest}, capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("must run as root", r.stderr)
        self.assertEqual(files_under(dest), [])

    def test_missing_config(self):
        r = aziotctl("config", "apply", "-c", os.path.join(self.root, "nope.toml"), root=self.root)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.toml", r.stderr)
        r = aziotctl("config", "apply", root=self.root)  # default path under the root
        self.assertEqual(r.returncode, 1)
        self.assertIn(os.path.join(self.root, "etc/aziot/config.toml"), r.stderr)


# (super-config, words the error must contain)
BAD = [
    ("", "provisioning: missing"),
    ("[provisioning\n", ":1:"),
    ('[provisioning]\n', "provisioning.source: missing"),
    ('[provisioning]\nsource = "magic"\n', "provisioning.source: 'magic'"),
    ('[provisioning]\nsource = 5\n', "provisioning.source: expected a string"),
    ('hostname = 1\n[provisioning]\nsource = "none"\n', "hostname: expected a string"),
    ('cloud_timeout_sec = 69\n[provisioning]\nsource = "none"\n',
     "cloud_timeout_sec: 69 is out of range"),
    ('cloud_retries = -1\n[provisioning]\nsource = "none"\n', "cloud_retries: -1 is out of range"),
    ('prefer_module_identity_cache = "yes"\n[provisioning]\nsource = "none"\n',
     "prefer_module_identity_cache: expected a bool"),
    ('[provisioning]\nsource = "none"\n[aziot_max_requests]\nkeyd = 1\ncertd = 1\nidentityd = 1\n',
     "aziot_max_requests.tpmd: missing"),
    ('[provisioning]\nsource = "none"\n[aziot_max_requests]\nkeyd = 0\ncertd = 1\nidentityd = 1\n'
     'tpmd = 1\n', "aziot_max_requests.keyd: 0 is out of range"),
    ('[provisioning]\nsource = "none"\n[localid]\n', "localid.domain: missing"),
    ('[provisioning]\nsource = "manual"\nconnection_string = "HostName=h;DeviceId=d"\n',
     "SharedAccessKey is missing"),
    ('[provisioning]\nsource = "manual"\nconnection_string = "DeviceId=d;SharedAccessKey=YWJj"\n',
     "HostName is missing"),
    ('[provisioning]\nsource = "manual"\n'
     'connection_string = "HostName=h;DeviceId=d;SharedAccessKey=!!!"\n',
     "SharedAccessKey: not a valid base64 key"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\n', "provisioning.device_id: missing"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "sas"\n',
     "provisioning.authentication.device_id_pk: missing"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "sas"\ndevice_id_pk = { value = "YWJj", uri = '
     '"file:///k" }\n', "provisioning.authentication.device_id_pk: give exactly one"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "sas"\ndevice_id_pk = { uri = "http://k" }\n',
     "provisioning.authentication.device_id_pk.uri: 'http://k' is not a valid"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "kerberos"\n',
     "provisioning.authentication.method: 'kerberos'"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "x509"\nidentity_cert = "file:///c.pem"\n',
     "provisioning.authentication.identity_pk: missing"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "x509"\nidentity_pk = "file:///k.pem"\n'
     '[provisioning.authentication.identity_cert]\nmethod = "est"\n',
     "provisioning.authentication.identity_pk: not allowed"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "x509"\n'
     '[provisioning.authentication.identity_cert]\nmethod = "local_ca"\nurl = "https://e"\n',
     "provisioning.authentication.identity_cert.url: only valid with method = \"est\""),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "x509"\n'
     '[provisioning.authentication.identity_cert]\nmethod = "est"\nexpiry_days = 0\n',
     "provisioning.authentication.identity_cert.expiry_days: 0 is out of range"),
    ('[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
     '[provisioning.authentication]\nmethod = "x509"\n'
     '[provisioning.authentication.identity_cert]\nmethod = "est"\n'
     'bootstrap_identity_cert = "file:///b.pem"\n',
     "provisioning.authentication.identity_cert.bootstrap_identity_pk: missing"),
    ('[provisioning]\nsource = "dps"\nid_scope = "s"\n', "provisioning.global_endpoint: missing"),
    ('[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g/"\n',
     "provisioning.id_scope: missing"),
    ('[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g/"\nid_scope = "s"\n',
     "provisioning.attestation: missing"),
    ('[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g/"\nid_scope = "s"\n'
     '[provisioning.attestation]\nmethod = "tpm"\n',
     "provisioning.attestation.registration_id: missing"),
    ('[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g/"\nid_scope = "s"\n'
     'payload = { uri = "payload.json" }\n[provisioning.attestation]\nmethod = "tpm"\n'
     'registration_id = "r"\n', "provisioning.payload.uri: 'payload.json' is not a valid"),
    ('[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g/"\nid_scope = "s"\n'
     '[provisioning.attestation]\nmethod = "x509"\n[provisioning.attestation.identity_cert]\n'
     'method = "est"\n[provisioning.attestation.identity_cert.auto_renew]\nrotate_key = true\n'
     'threshold = "120%"\nretry = "4%"\n',
     "provisioning.attestation.identity_cert.auto_renew.threshold: '120%'"),
    ('[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g/"\nid_scope = "s"\n'
     '[provisioning.attestation]\nmethod = "x509"\n[provisioning.attestation.identity_cert]\n'
     'method = "est"\n[provisioning.attestation.identity_cert.auto_renew]\nthreshold = "80%"\n'
     'retry = "4%"\n', "provisioning.attestation.identity_cert.auto_renew.rotate_key: missing"),
    ('parent_hostname = "p"\n[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g/"\n'
     'id_scope = "s"\n[provisioning.attestation]\nmethod = "tpm"\nregistration_id = "r"\n',
     "parent_hostname: DPS provisioning is not supported in nested mode"),
    ('local_gateway_hostname = "p"\n[provisioning]\nsource = "dps"\n'
     'global_endpoint = "https://g/"\nid_scope = "s"\n[provisioning.attestation]\nmethod = "tpm"\n'
     'registration_id = "r"\n', "local_gateway_hostname: DPS provisioning is not supported"),
    ('[provisioning]\nsource = "none"\n[cert_issuance.est]\ntrusted_certs = ["/ca.pem"]\n',
     "cert_issuance.est.trusted_certs[0]: '/ca.pem' is not a valid file:// URI"),
    ('[provisioning]\nsource = "none"\n[cert_issuance.est.urls]\ndefault = "ftp://e"\n',
     "cert_issuance.est.urls.default: 'ftp://e'"),
    ('[provisioning]\nsource = "none"\n[cert_issuance.est.auth]\nidentity_cert = "file:///c"\n',
     "cert_issuance.est.auth.identity_pk: missing"),
    ('[provisioning]\nsource = "none"\n[cert_issuance.local_ca]\ncert = "file:///c.pem"\n',
     "cert_issuance.local_ca.pk: missing"),
    ('[provisioning]\nsource = "none"\n[cert_issuance.magic]\n', "cert_issuance.magic: unknown"),
    ('[provisioning]\nsource = "none"\n[preloaded_keys]\nk = "/k.pem"\n',
     "preloaded_keys.k: '/k.pem' is not a valid"),
    ('[provisioning]\nsource = "none"\n[preloaded_certs]\nc = 5\n',
     "preloaded_certs.c: expected a URI or an array"),
    ('[provisioning]\nsource = "none"\n[cert_issuance.local_ca]\ncert = "file:///c.pem"\n'
     'pk = "file:///k.pem"\n[preloaded_keys]\nlocal-ca = "file:///other.pem"\n',
     "preloaded_keys: the id 'local-ca' is defined twice"),
    ('[provisioning]\nsource = "none"\n[aziot_keys]\npkcs11_base_slot = 1\n',
     "aziot_keys.pkcs11_base_slot: expected a string"),
    ('[provisioning]\nsource = "none"\n[tpm]\nauth_key_index = "0x00_01_00"\n',
     "tpm.auth_key_index: expected an integer"),
    ('[provisioning]\nsource = "none"\n[tpm]\nauth_key_index = 0x800000\n',
     "tpm.auth_key_index: 8388608 is out of range"),
]


class BadInputTest(TempRootMixin, unittest.TestCase):
    def test_bad_inputs(self):
        for text, words in BAD:
            with self.subTest(config=text):
                r, dest = self.apply(text)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(words, r.stderr)
                self.assertNotIn("configured successfully", r.stdout)
                self.assertEqual(files_under(dest), [])


class MpTest(TempRootMixin, unittest.TestCase):
    CS = "HostName=example.azure-devices.net;DeviceId=my-device;SharedAccessKey=YWJjZA"

    def test_writes_then_applies(self):
        out = os.path.join(self.root, "config.toml")
        r = aziotctl("config", "mp", "-c", self.CS, "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"sudo aziotctl config apply -c '{out}'", r.stdout)
        with open(out) as f:
            self.assertEqual(f.read(), '[provisioning]\nsource = "manual"\n'
                                       f'connection_string = "{self.CS}"\n')
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        dest = os.path.join(self.root, "dest")
        os.mkdir(dest)
        r = aziotctl("config", "apply", "-c", out, root=dest)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(dest, SECRET), "rb") as f:
            self.assertEqual(f.read(), b"abcd")

    def test_default_path_and_force(self):
        r = aziotctl("config", "mp", "--connection-string", self.CS, root=self.root)
        self.assertEqual(r.returncode, 0, r.stderr)
        path = os.path.join(self.root, "etc/aziot/config.toml")
        self.assertTrue(os.path.exists(path))
        r = aziotctl("config", "mp", "-c", self.CS.replace("my-device", "other"), root=self.root)
        self.assertEqual(r.returncode, 1)
        self.assertIn("already exists; use --force", r.stderr)
        with open(path) as f:
            self.assertIn("my-device", f.read())
        r = aziotctl("config", "mp", "-c", self.CS.replace("my-device", "other"), "--force",
                     root=self.root)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(path) as f:
            self.assertIn("DeviceId=other", f.read())

    def test_bad_connection_strings(self):
        out = os.path.join(self.root, "c.toml")
        for cs, words in (("DeviceId=d;SharedAccessKey=YWJj", "HostName is missing"),
                          ("HostName=h;SharedAccessKey=YWJj", "DeviceId is missing"),
                          ("HostName=h;DeviceId=d", "SharedAccessKey is missing"),
                          ("HostName=h;DeviceId=d;SharedAccessKey=*x*",
                           "SharedAccessKey: not a valid base64 key"),
                          # what config apply refuses, mp refuses before writing it
                          ("HostName=h;DeviceId=d;SharedAccessKey=YWJjZ",
                           "SharedAccessKey: not a valid base64 key"),
                          ("HostName=h;junk;DeviceId=d;SharedAccessKey=YWJj",
                           "'junk' is not KEY=VALUE")):
            with self.subTest(cs=cs):
                r = aziotctl("config", "mp", "-c", cs, "-o", out)
                self.assertEqual(r.returncode, 1)
                self.assertIn(words, r.stderr)
                self.assertFalse(os.path.exists(out))


class UsageTest(unittest.TestCase):
    def test_help(self):
        for args in (["config", "--help"], ["config", "mp", "--help"],
                     ["config", "apply", "--help"], ["system", "--help"],
                     ["system", "status", "--help"], ["system", "restart", "--help"],
                     ["system", "stop", "--help"], ["system", "logs", "--help"],
                     ["system", "set-log-level", "--help"], ["system", "reprovision", "--help"]):
            with self.subTest(args=args):
                r = aziotctl(*args)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("Usage: aziotctl " + args[0], r.stdout)
        r = aziotctl("config", "--help")
        self.assertIn("AZIOTCTL_ROOT", r.stdout)

    def test_usage_errors(self):
        for args in (["config"], ["config", "import"], ["config", "mp"],
                     ["config", "mp", "-c"], ["config", "mp", "-c", "x", "extra"],
                     ["config", "apply", "--bogus"], ["config", "apply", "extra"],
                     ["system"], ["system", "frobnicate"], ["system", "status", "extra"],
                     ["system", "set-log-level"], ["system", "set-log-level", "loud"],
                     ["system", "set-log-level", "info", "debug"], ["system", "logs", "-f"]):
            with self.subTest(args=args):
                r = aziotctl(*args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertTrue(r.stderr)


class TemplateTest(TempRootMixin, unittest.TestCase):
    """Each provisioning block of the template, uncommented (with the first of alternative lines
    for the same key), gives a super-config that apply accepts."""

    TOML_LINE = re.compile(r"^# ((\[[^\]]+\])|([A-Za-z0-9_-]+) = .*)$")

    def blocks(self):
        with open(TEMPLATE) as f:
            text = f.read()
        parts = re.split(r"\n# -{20,}\n# (.+)\n# -{20,}\n", text)
        blocks = {}
        for title, body in zip(parts[1::2], parts[2::2]):
            body = body.split("\n# ====")[0]
            blocks[title] = body
        return blocks

    def uncomment(self, body, prefer_tables=False):
        """The TOML lines of body; of two alternatives for one key (a value, then a table of the
        same name), the first, or with prefer_tables the table."""
        tables = {m.group(2).strip("[]") for m in map(self.TOML_LINE.match, body.splitlines())
                  if m and m.group(2)}
        lines, keys, table, skipping = [], set(), "", False
        for line in body.splitlines():
            m = self.TOML_LINE.match(line)
            if not m:
                continue
            if m.group(2):
                table = m.group(2).strip("[]")
                # an alternative spelled as a table to a key already set: leave it out
                skipping = any(table == k or table.startswith(k + ".") for k in keys)
                if not skipping:
                    lines.append(m.group(2))
                continue
            key = f"{table}.{m.group(3)}" if table else m.group(3)
            if skipping or key in keys:
                continue
            if prefer_tables and key in tables:
                continue
            if prefer_tables and key.endswith("identity_pk") and \
                    key.replace("identity_pk", "identity_cert") in tables:
                continue  # an issued identity certificate has no key file
            keys.add(key)
            lines.append(m.group(1).split("   #")[0])
        return "\n".join(lines) + "\n"

    def test_template_blocks_apply(self):
        blocks = self.blocks()
        provisioning = [t for t in blocks if "provisioning" in t.lower()]
        self.assertEqual(len(provisioning), 7, list(blocks))
        for title in provisioning:
            with self.subTest(block=title):
                text = 'hostname = "my-device"\n' + self.uncomment(blocks[title])
                self.assertIn("[provisioning]", text)
                r, dest = self.apply(text)
                self.assertEqual(r.returncode, 0, f"{text}\n{r.stderr}")
            if "X.509" in title:
                with self.subTest(block=title, alternative="issued certificate"):
                    text = ('hostname = "my-device"\n'
                            + self.uncomment(blocks[title], prefer_tables=True)
                            + '[cert_issuance.est.urls]\ndefault = "https://example.org/est"\n')
                    self.assertIn(".identity_cert]", text)
                    r, dest = self.apply(text)
                    self.assertEqual(r.returncode, 0, f"{text}\n{r.stderr}")
        # The certificate issuance blocks, next to a none provisioning.
        for title in ("EST (Enrollment over Secure Transport, RFC 7030)", "Local CA"):
            with self.subTest(block=title):
                text = '[provisioning]\nsource = "none"\n' + self.uncomment(blocks[title])
                r, dest = self.apply(text)
                self.assertEqual(r.returncode, 0, f"{text}\n{r.stderr}")

    def test_everything_is_commented_out(self):
        with open(TEMPLATE) as f:
            for n, line in enumerate(f, 1):
                self.assertTrue(line.startswith("#") or not line.strip(), f"line {n}: {line}")

    def test_documents_every_option(self):
        with open(TEMPLATE) as f:
            text = f.read()
        for option in ("hostname", "local_gateway_hostname", "cloud_timeout_sec", "cloud_retries",
                       "prefer_module_identity_cache", "connection_string", "device_id_pk",
                       "identity_cert", "identity_pk", "symmetric_key", "payload",
                       "auto_renew", "trusted_certs", "identity_auto_renew", "urls",
                       "bootstrap_identity_cert", "local_ca", "tcti", "auth_key_index",
                       "hierarchy_authorization", "pkcs11_lib_path", "pkcs11_base_slot",
                       "localid", "preloaded_keys", "preloaded_certs", "aziot_max_requests"):
            self.assertIn(option, text)


class SystemWithoutBusTest(TempRootMixin, unittest.TestCase):
    def test_set_log_level(self):
        for level in ("error", "warn", "info", "debug", "trace"):
            r = aziotctl("system", "set-log-level", level, root=self.root)
            self.assertEqual(r.returncode, 0, r.stderr)
            for svc in ("aziot-keyd", "aziot-certd", "aziot-identityd", "aziot-tpmd"):
                path = os.path.join(self.root, "etc/systemd/system", f"{svc}.service.d",
                                    "log-level.conf")
                with open(path) as f:
                    self.assertEqual(f.read(), f"[Service]\nEnvironment=AZIOT_LOG={level}\n")
        r = aziotctl("system", "set-log-level", "verbose", root=self.root)
        self.assertEqual(r.returncode, 2)
        self.assertIn("'verbose' is not a log level", r.stderr)

    @unittest.skipIf(SYSTEMD, "systemd is running: these would touch the real units")
    def test_without_systemd(self):
        for verb in ("restart", "stop", "logs"):
            with self.subTest(verb=verb):
                r = aziotctl("system", verb)
                self.assertEqual(r.returncode, 1)
                self.assertIn("systemd is not running on this machine", r.stderr)


class BusTestCase(aziot_harness.StackTestCase):
    RUN_DIR_PREFIX = "aziot-ctl-"
    REQUIRED = (AZIOTCTL, KEYD, CERTD, IDENTITYD)

    @classmethod
    def start_class(cls):
        ensure_service_users()
        aziot_harness.ensure_test_users()
        cls.stack.start()

    def ctl(self, *args, **kwargs):
        return aziotctl(*args, env={"DBUS_SYSTEM_BUS_ADDRESS": self.stack.bus_address}, **kwargs)


class GeneratedConfigLoadsTest(BusTestCase):
    """Every case's generated files, loaded by the real keyd, certd and identityd."""

    DAEMONS = (("keyd", KEYD, "org.aziot.Keys1", "[aziot_keys]\nhomedir_path = \"{home}\"\n"),
               ("certd", CERTD, "org.aziot.Certificates1", "homedir_path = \"{home}\"\n"),
               ("identityd", IDENTITYD, "org.aziot.Identity1", "homedir = \"{home}\"\n"))

    def start_daemon(self, case, dest, name, binary, bus_name, override):
        d = os.path.join(self.run_dir, case, name)
        conf_d = os.path.join(d, "config.d")
        os.makedirs(conf_d)
        home = os.path.join(d, "home")
        os.makedirs(home, mode=0o700)
        shutil.copy(os.path.join(dest, "etc/aziot", name, "config.d/00-super.toml"), conf_d)
        # The paths of a real device, moved into the test's directory.
        with open(os.path.join(conf_d, "99-test.toml"), "w") as f:
            f.write(override.format(home=home))
        process = self.stack.start_process(
            f"{case}-{name}", [binary, "--idle-timeout=0"],
            env={f"AZIOT_{name.upper()}_CONFIG": os.path.join(d, "config.toml"),
                 f"AZIOT_{name.upper()}_CONFIG_DIR": conf_d, "AZIOT_LOG": "debug",
                 "OPENSSL_MODULES": PROVIDER_DIR},
            wait_bus_name=bus_name, timeout=20)
        return process

    @classmethod
    def start_class(cls):
        super().start_class()
        # Files for every file:// URI of the cases (certd reads its certificates at start-up).
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import datetime
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aziotctl test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        cls.key_pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        cls.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        cls.secrets = os.path.join(cls.run_dir, "secrets")
        os.makedirs(cls.secrets)
        os.chmod(cls.secrets, 0o755)

    def localized_config(self, case):
        """The case's super-config with its files moved into the test's directory, created."""
        with open(os.path.join(EXPECTED, case, "config.toml")) as f:
            text = f.read()
        text = text.replace("file:///var/secrets/", f"file://{self.secrets}/")
        text = text.replace("file:///etc/aziot/", f"file://{self.secrets}/")
        for path in re.findall(r"file://(/[^\"]+)", text):
            base = os.path.basename(path)
            data = (b"{}" if base.endswith(".json") else
                    self.key_pem if "key" in base else self.cert_pem)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o644)
        path = os.path.join(self.run_dir, f"{case}.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_cases_load(self):
        for case in cases():
            with self.subTest(case=case):
                dest = os.path.join(self.run_dir, case, "root")
                os.makedirs(dest)
                r = aziotctl("config", "apply", "-c", self.localized_config(case), root=dest)
                self.assertEqual(r.returncode, 0, r.stderr)
                for name, binary, bus_name, override in self.DAEMONS:
                    process = self.start_daemon(case, dest, name, binary, bus_name, override)
                    try:
                        self.assertTrue(process.alive(), process.log())
                        self.assertNotRegex(process.log(), r"(?i)invalid config|config.*error")
                    finally:
                        self.stack.stop_process(f"{case}-{name}")

    def test_status_from_the_bus(self):
        if SYSTEMD:
            self.skipTest("systemd is running: status asks systemd")
        r = self.ctl("system", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("systemd is not running on this machine", r.stdout)
        self.assertIn("aziot-keyd (org.aziot.Keys1): not running", r.stdout)
        d = os.path.join(self.run_dir, "status-keyd")
        os.makedirs(os.path.join(d, "config.d"))
        with open(os.path.join(d, "config.toml"), "w") as f:
            f.write(f'[aziot_keys]\nhomedir_path = "{d}"\n')
        self.stack.start_process(
            "status-keyd", [KEYD, "--idle-timeout=0"],
            env={"AZIOT_KEYD_CONFIG": os.path.join(d, "config.toml"),
                 "AZIOT_KEYD_CONFIG_DIR": os.path.join(d, "config.d")},
            wait_bus_name="org.aziot.Keys1")
        try:
            r = self.ctl("system", "status")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("aziot-keyd (org.aziot.Keys1): running", r.stdout)
            self.assertIn("aziot-identityd (org.aziot.Identity1): not running", r.stdout)
        finally:
            self.stack.stop_process("status-keyd")

    def test_status_without_a_bus(self):
        if SYSTEMD:
            self.skipTest("systemd is running: status asks systemd")
        r = aziotctl("system", "status", env={
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.run_dir}/no-such-socket"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("could not connect to the system bus", r.stderr)

    def test_reprovision_without_identityd(self):
        r = self.ctl("system", "reprovision")
        self.assertEqual(r.returncode, 1)
        self.assertIn("reprovisioning failed: ", r.stderr)


try:
    import test_identity  # noqa: E402
    _IdentityBase = test_identity.IdentityTestCase
except ImportError as e:  # python3-dbus or the mocks missing: reported as a skip
    _import_error = e

    class _IdentityBase(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            raise unittest.SkipTest(f"identity test fixtures unavailable: {_import_error}")


class ReprovisionTest(_IdentityBase):
    """`aziotctl system reprovision` against identityd provisioned by the mock DPS."""

    RUN_DIR_PREFIX = "aziot-ctl-reprov-"

    def ctl(self, *args, user=None):
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.stack.bus_address}
        env.pop("AZIOTCTL_ROOT", None)
        if user:
            return self.stack.run_as(user, [AZIOTCTL, *args], groups=["aziotid"],
                                     env={"DBUS_SYSTEM_BUS_ADDRESS": self.stack.bus_address})
        return subprocess.run([AZIOTCTL, *args], capture_output=True, text=True, env=env,
                              timeout=120)

    def test_reprovision(self):
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        registrations = len(self.dps.http_requests("register"))
        r = self.ctl("system", "reprovision")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "Successfully reprovisioned with IoT Hub.\n")
        self.assertEqual(len(self.dps.http_requests("register")), registrations + 1)

    def test_reprovision_fails_when_dps_is_down(self):
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        self.dps.down()
        r = self.ctl("system", "reprovision")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("aziotctl: reprovisioning failed: DPS client error", r.stderr)
        self.assertNotIn("Successfully", r.stdout)

    def test_unauthorized_user(self):
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        user = aziot_harness.TEST_USERS[0]
        r = self.ctl("system", "reprovision", user=user)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("aziotctl: reprovisioning failed: ", r.stderr)
        self.assertIn("this user is not authorized to reprovision the device", r.stderr)
        self.assertNotIn("Successfully", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
