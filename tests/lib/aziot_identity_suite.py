# SPDX-License-Identifier: MIT
"""What the suites of aziot-identityd share: the D-Bus suites (tests/bus/test_identity.py,
test_identity_modules.py) their fixture, IdentityBusTestCase; they and the HTTP suite
(tests/gateway/test_identity_http.py) the local CA and the checks of the local identities it
issues (local_ca_certificate(), LocalIdentityChecks), and keyd's signature of a SAS token.

    class IdentityTestCase(IdentityBusTestCase):
        RUN_DIR_PREFIX = "aziot-identity-"

        @classmethod
        def start_class(cls):                # cls.stack is made: start the mocks (cls.mocks),
            ...                              # the stack (cls.conn), start_keyd(), run_certd()

Binaries (env, else below AZIOT_BUILD_DIR): AZIOT_IDENTITYD, AZIOT_KEYD, AZIOT_CERTD, AZIOT_TPMD,
AZIOT_PROVIDER_DIR.
"""

import datetime
import os

import aziot_harness
from aziot_harness import BUILD_DIR

import dbus
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _binary(env, *path):
    return os.environ.get(env) or os.path.join(BUILD_DIR, *path)


IDENTITYD = _binary("AZIOT_IDENTITYD", "services", "identity", "aziot-identityd")
KEYD = _binary("AZIOT_KEYD", "services", "keys", "aziot-keyd")
CERTD = _binary("AZIOT_CERTD", "services", "certs", "aziot-certd")
TPMD = _binary("AZIOT_TPMD", "services", "tpm", "aziot-tpmd")
PROVIDER_DIR = _binary("AZIOT_PROVIDER_DIR", "provider")

ID_NAME, ID_PATH, ID_IFACE = "org.aziot.Identity1", "/org/aziot/Identity1", "org.aziot.Identity1"
KEYS_NAME, KEYS_PATH, KEYS_IFACE = "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1"
CERTS_NAME = "org.aziot.Certificates1"
ERR = "org.aziot.Identity1.Error."
CALL_TIMEOUT = 30


def keyd_sign(bus, key_handle, data):
    """HMAC-SHA256 of data by keyd, with a key handle (of identityd's: a SAS token's sig)."""
    return bytes(bus.call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE, "Sign", "ssaya{sv}",
                                   [key_handle, "HMAC-SHA256", dbus.ByteArray(data), {}],
                                   timeout=CALL_TIMEOUT, byte_arrays=True))


def local_ca_certificate(ca_key):
    """The local identities' CA: self-signed with ca_key, a year from yesterday."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Local identity CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(ca_key, hashes.SHA256()))


class LocalIdentityChecks:
    """For TestCases with ca_cert, the local CA's certificate."""

    def assertIssuedByLocalCa(self, private_key_pem, certificate_pem, common_name, server):
        """A local identity's key (a new RSA-2048 key, PKCS#8 PEM) and the first certificate of
        its chain: issued by the local CA (its signature verifies with the CA's key) for that
        key and common_name, for client (and server) authentication. Returns (key, leaf)."""
        self.assertTrue(private_key_pem.startswith("-----BEGIN PRIVATE KEY-----\n"))
        key = serialization.load_pem_private_key(private_key_pem.encode(), None)
        self.assertEqual(key.key_size, 2048)
        end = "-----END CERTIFICATE-----"
        leaf = x509.load_pem_x509_certificate((certificate_pem.split(end)[0] + end).encode())
        self.assertEqual(leaf.issuer, self.ca_cert.subject)
        self.ca_cert.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                                         ec.ECDSA(leaf.signature_hash_algorithm))
        self.assertEqual(leaf.public_key().public_numbers(), key.public_key().public_numbers())
        self.assertEqual(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                         common_name)
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        self.assertTrue(eku.critical)
        self.assertEqual(list(eku.value), [ExtendedKeyUsageOID.CLIENT_AUTH] +
                         ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []))
        return key, leaf


class IdentityBusTestCase(aziot_harness.StackTestCase):
    """One stack per class (aziot_harness.StackTestCase: run_dir kept when a test failed) with
    keyd and certd started on its bus (no idle exit, debug log) and the mock clouds of
    cls.mocks; identityd and its home per test: self.dir, with self.home, self.config and
    self.config_d in it. Between tests the mocks are reset (no faults, up, an empty log) and
    identityd must exit cleanly on SIGTERM."""

    REQUIRED = (IDENTITYD, KEYD, CERTD)
    mocks = ()

    @classmethod
    def setUpClass(cls):
        cls.serial = 0  # the tests of the class so far
        super().setUpClass()

    @classmethod
    def stop_class(cls):
        super().stop_class()
        for mock in cls.mocks:
            mock.stop()

    @classmethod
    def write_secrets(cls, secrets):
        """Files run_dir/secrets/<id>.key with the bytes of secrets {id: bytes}: {id: path}."""
        secrets_dir = os.path.join(cls.run_dir, "secrets")
        os.makedirs(secrets_dir, mode=0o700)
        paths = {}
        for key_id, data in secrets.items():
            paths[key_id] = os.path.join(secrets_dir, f"{key_id}.key")
            with open(paths[key_id], "wb") as f:
                f.write(data)
        return paths

    @classmethod
    def start_daemon(cls, name, binary, bus_name, config, env=None):
        """A service named name (no idle exit, debug log, and env) on run_dir/<name>/config.toml
        holding config and an empty config.d beside it, waited for on the bus as bus_name."""
        config_dir = os.path.join(cls.run_dir, name)
        os.makedirs(os.path.join(config_dir, "config.d"))
        with open(os.path.join(config_dir, "config.toml"), "w") as f:
            f.write(config)
        variable = f"AZIOT_{name.upper()}_CONFIG"
        cls.stack.start_process(
            name, [binary, "--idle-timeout=0"],
            env={variable: os.path.join(config_dir, "config.toml"),
                 f"{variable}_DIR": os.path.join(config_dir, "config.d"), "AZIOT_LOG": "debug",
                 **(env or {})},
            wait_bus_name=bus_name)

    @classmethod
    def start_keyd(cls, preloaded):
        """keyd with the keys of preloaded {id: path} (file:// URIs), home run_dir/keyd/home."""
        home = os.path.join(cls.run_dir, "keyd", "home")
        cls.start_daemon("keyd", KEYD, KEYS_NAME,
                         f'[aziot_keys]\nhomedir_path = "{home}"\n\n[preloaded_keys]\n'
                         + "".join(f'{k} = "file://{p}"\n' for k, p in preloaded.items()))

    @classmethod
    def run_certd(cls, config):
        """certd (with our OpenSSL provider, for the keys keyd holds) with config after its
        homedir_path, run_dir/certd/home."""
        home = os.path.join(cls.run_dir, "certd", "home")
        cls.start_daemon("certd", CERTD, CERTS_NAME, f'homedir_path = "{home}"\n\n' + config,
                         {"OPENSSL_MODULES": PROVIDER_DIR})

    def setUp(self):
        type(self).serial += 1
        self.dir = os.path.join(self.run_dir, f"t{type(self).serial}")
        self.home = os.path.join(self.dir, "home")
        self.config = os.path.join(self.dir, "config.toml")
        self.config_d = os.path.join(self.dir, "config.d")
        os.makedirs(self.config_d)
        for mock in self.mocks:
            mock.clear_faults()
            mock.up()
            mock.clear_log()

    def tearDown(self):
        self.remove_test_rules()
        for mock in self.mocks:
            mock.clear_faults()
            mock.up()
        if "identityd" in self.stack.processes:
            status = self.stack.stop_process("identityd")
            self.assertEqual(status, 0, "identityd did not exit cleanly on SIGTERM")

    def run_identityd(self, env, **kwargs):
        """identityd on self.config and self.config_d (debug log, and env), waited for on the
        bus (kwargs: for aziot_harness.Stack.start_process)."""
        self.identityd = self.stack.start_process(
            "identityd", [IDENTITYD],
            env={"AZIOT_IDENTITYD_CONFIG": self.config,
                 "AZIOT_IDENTITYD_CONFIG_DIR": self.config_d, "AZIOT_LOG": "debug", **env},
            wait_bus_name=ID_NAME, **kwargs)
        return self.identityd

    def state(self):
        return str(self.conn.call_blocking(ID_NAME, ID_PATH, "org.freedesktop.DBus.Properties",
                                           "Get", "ss", [ID_IFACE, "ProvisioningState"],
                                           timeout=CALL_TIMEOUT))
