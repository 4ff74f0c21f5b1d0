#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The OpenSSL provider "aziot" (provider/) end to end: the real aziot-keyd on a private system bus
with our restrictive policy and the real polkitd, and the real openssl command line (req, x509,
s_server, s_client, genpkey) plus tests/provider/tls-client.c (SSL_CTX_use_PrivateKey with a key
from OSSL_STORE, or from services/common's aziot_key_evp_pkey()).

Every signature made through the provider is checked against the public key keyd reports
(GetKeyPairPublicParameter, rebuilt with python-cryptography), or by an openssl that does not load
the provider; TLS client authentication is checked by the server (s_server -Verify 1
-verify_return_error), whose -www page says which signature the client made.

Keys live on keyd's file store (FileStoreTest) and on a SoftHSM2 token (SoftHsmTest). Unauthorized
callers run as the harness users in their own processes.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_KEYD, AZIOT_PROVIDER_DIR,
AZIOT_TLS_CLIENT, AZIOT_SANITIZE (the build's b_sanitize: the openssl command line then gets the
sanitizer runtimes preloaded, since the provider it loads was built with them).
"""

import datetime
import hashlib
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
KEYD = os.environ.get("AZIOT_KEYD") or os.path.join(BUILD_DIR, "services", "keys", "aziot-keyd")
PROVIDER_DIR = os.environ.get("AZIOT_PROVIDER_DIR") or os.path.join(BUILD_DIR, "provider")
TLS_CLIENT = os.environ.get("AZIOT_TLS_CLIENT") or \
    os.path.join(BUILD_DIR, "tests", "provider", "tls-client")
SANITIZE = os.environ.get("AZIOT_SANITIZE", "none")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import aziot_harness  # noqa: E402
import aziot_tokens  # noqa: E402

import dbus  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils  # noqa: E402
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID  # noqa: E402

KEYS_NAME, KEYS_PATH, KEYS_IFACE = "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1"
KEYS_GROUP = "aziotks"
USER_A, USER_B = aziot_harness.TEST_USERS
PROVIDER = ["-provider-path", PROVIDER_DIR, "-provider", "aziot", "-provider", "default"]
TIMEOUT = 60
RELOAD_TIMEOUT = 10

# The provider's error reasons (services/common/aziot-key.c).
UNREACHABLE = "keyd is not reachable"
NOT_AUTHORIZED = "keyd refused: not authorized to use the key"
BUS_DENIED = "the bus refused the call to keyd"
NOT_FOUND = "keyd has no such key"
BAD_URI = "malformed aziot-key URI"
REJECTED = "keyd rejected the request"


def sanitizer_env():
    """What a non-sanitized program (openssl) needs to load a sanitized provider."""
    if "address" not in SANITIZE and "undefined" not in SANITIZE:
        return {}
    libs = []
    for name, wanted in (("libasan.so", "address"), ("libubsan.so", "undefined")):
        if wanted in SANITIZE:
            path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                                  text=True).stdout.strip()
            if os.path.isabs(path):
                libs.append(path)
    # openssl's own allocations at exit are not ours to judge; tls-client keeps leak checks.
    return {"LD_PRELOAD": " ".join(libs), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pem(path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    return path


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def make_cert(subject, public_key, issuer_name, issuer_key, ca=False):
    now = datetime.datetime.utcnow()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def verify_signature(public_key, signature, data, hash_algorithm, pss_salt=None):
    """Raises InvalidSignature unless signature is a signature of data by public_key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif pss_salt is not None:
        public_key.verify(signature, data, padding.PSS(padding.MGF1(hash_algorithm), pss_salt),
                          hash_algorithm)
    else:
        public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)


class Server:
    """openssl s_server that demands a client certificate from our CA and answers each client
    with its -www page (which says which signature the client made)."""

    def __init__(self, stack, name, cert, key, ca):
        self.port = free_port()
        self.process = stack.start_process(name, [
            "openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", cert,
            "-key", key, "-CAfile", ca, "-Verify", "1", "-verify_return_error", "-www"])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or not self.process.alive():
                    raise AssertionError(f"s_server did not start:\n{self.process.log()}")
                time.sleep(0.05)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"


class ProviderTestCase(aziot_harness.StackTestMixin, unittest.TestCase):
    """One stack and one keyd (started by the test class, not activatable) per class; the keys
    of KEYS are created once, as root. Subclasses say where keyd keeps keys (token())."""

    KEYS = {"dev-ec": "ec-p256", "dev-rsa": "rsa-2048"}
    backend = "filesystem"

    @classmethod
    def setUpClass(cls):
        for path in (KEYD, TLS_CLIENT, os.path.join(PROVIDER_DIR, "aziot.so")):
            if not os.access(path, os.R_OK):
                raise unittest.SkipTest(f"{path} is not built")
        cls.users = aziot_harness.ensure_test_users()
        cls.keys_gid = aziot_harness.ensure_group(KEYS_GROUP).gr_gid
        cls.uid_a = cls.users[USER_A].pw_uid
        cls.run_dir = tempfile.mkdtemp(prefix="aziot-prov-")
        os.chmod(cls.run_dir, 0o755)
        cls.files = os.path.join(cls.run_dir, "files")
        os.makedirs(cls.files, mode=0o755)
        cls.stack = aziot_harness.Stack(cls.run_dir, SOURCE_DIR, BUILD_DIR)
        cls.failed = False
        cls.token = None
        try:
            cls.stack.start()
            cls.token = cls.make_token()
            cls.prepare_keyd()
            cls.start_keyd()
            for key_id, algorithm in cls.KEYS.items():
                cls.keyd("CreateKeyPairIfNotExists", "sasa{sv}", key_id, [algorithm], {})
            cls.prepare_pki()
        except BaseException:
            cls.stack.stop()
            if cls.token:
                cls.token.close()
            print(f"stack logs kept in {cls.run_dir}", file=sys.stderr)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        if cls.token:
            cls.token.close()
        if cls.failed:
            print(f"\nstack logs kept in {cls.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.run_dir, ignore_errors=True)

    # -- keyd ---------------------------------------------------------------------------------

    @classmethod
    def make_token(cls):
        return None

    @classmethod
    def prepare_keyd(cls):
        cls.keyd_dir = os.path.join(cls.run_dir, "keyd")
        cls.keyd_config = os.path.join(cls.keyd_dir, "config.toml")
        cls.keyd_config_d = os.path.join(cls.keyd_dir, "config.d")
        os.makedirs(cls.keyd_config_d)
        lines = ["[aziot_keys]", f'homedir_path = "{os.path.join(cls.keyd_dir, "home")}"']
        if cls.token:
            lines += [f'pkcs11_lib_path = "{cls.token.module}"',
                      f'pkcs11_base_slot = "{cls.token.uri()}"']
        with open(cls.keyd_config, "w") as f:
            f.write("\n".join(lines) + "\n")

    @classmethod
    def start_keyd(cls):
        env = {"AZIOT_KEYD_CONFIG": cls.keyd_config, "AZIOT_KEYD_CONFIG_DIR": cls.keyd_config_d,
               "AZIOT_LOG": "debug", **(cls.token.env if cls.token else {})}
        cls.keyd_process = cls.stack.start_process("keyd", [KEYD, "--idle-timeout=0"], env=env,
                                                    wait_bus_name=KEYS_NAME)

    @classmethod
    def stop_keyd(cls):
        status = cls.stack.stop_process("keyd")
        cls.stack.wait_for_name_gone(KEYS_NAME)
        return status

    @classmethod
    def keyd(cls, method, signature, *args):
        return cls.stack.bus().call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE, method, signature,
                                             args, timeout=TIMEOUT, byte_arrays=True)

    @classmethod
    def public_key(cls, key_id):
        """The public key of a key pair, rebuilt from what keyd reports."""
        handle = str(cls.keyd("LoadKeyPair", "sa{sv}", key_id, {}))

        def param(name):
            return cls.keyd("GetKeyPairPublicParameter", "ssa{sv}", handle, name, {})
        if str(param("algorithm")) == "ECDSA":
            assert bytes(param("ec-curve-oid")) == bytes.fromhex("06082a8648ce3d030107")
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                                bytes(param("ec-point")))
        n = int.from_bytes(bytes(param("rsa-modulus")), "big")
        e = int.from_bytes(bytes(param("rsa-exponent")), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()

    # -- certificates -------------------------------------------------------------------------

    @classmethod
    def prepare_pki(cls):
        """A CA (file key), a server certificate from it, and for every keyd key a client
        certificate from it (made here, from keyd's public key: independent of the provider)."""
        cls.ca_key = ec.generate_private_key(ec.SECP256R1())
        cls.ca_pem = write_pem(os.path.join(cls.files, "ca.pem"),
                               make_cert("test CA", cls.ca_key.public_key(), "test CA",
                                         cls.ca_key, ca=True))
        server_key = ec.generate_private_key(ec.SECP256R1())
        cls.server_key = write_pem(os.path.join(cls.files, "server.key"), pem_key(server_key))
        cls.server_pem = write_pem(os.path.join(cls.files, "server.pem"),
                                   make_cert("localhost", server_key.public_key(), "test CA",
                                             cls.ca_key))
        cls.client_pem = {}
        for key_id in cls.KEYS:
            cls.client_pem[key_id] = write_pem(
                os.path.join(cls.files, f"{key_id}.pem"),
                make_cert(key_id, cls.public_key(key_id), "test CA", cls.ca_key))
        cls.server = Server(cls.stack, "s_server", cls.server_pem, cls.server_key, cls.ca_pem)

    # -- running clients ----------------------------------------------------------------------

    def env(self, extra=None):
        env = self.stack.child_env({"OPENSSL_MODULES": PROVIDER_DIR, **sanitizer_env()})
        env.pop("OPENSSL_CONF", None)
        env.update(extra or {})
        return env

    def run_tool(self, argv, user=None, groups=None, env=None, input=None):
        """Runs argv (as user with groups, default root); returns the CompletedProcess (text)."""
        if user is None:
            return subprocess.run(argv, env=self.env(env), capture_output=True, text=True,
                                  input=input, timeout=TIMEOUT, cwd=self.files)
        return self.stack.run_as(user, argv, groups=groups, input=input, timeout=TIMEOUT,
                                 env={"OPENSSL_MODULES": PROVIDER_DIR, **sanitizer_env(),
                                      **(env or {})})

    def openssl(self, *args, **kwargs):
        return self.run_tool(["openssl", *args], **kwargs)

    def assertOk(self, result, what):
        self.assertEqual(result.returncode, 0,
                         f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                         f"\nkeyd log tail:\n{self.keyd_log()}")

    def assertCleanFailure(self, result, message, what, status=1):
        """A failure with an exit status (no signal, no sanitizer report) and the provider's
        message on stderr."""
        self.assertEqual(result.returncode, status,
                         f"{what}: expected exit status {status}, got {result.returncode}:\n"
                         f"{result.stdout}\n{result.stderr}")
        self.assertIn(message, result.stderr, what)
        for word in ("AddressSanitizer", "runtime error", "Segmentation", "Aborted"):
            self.assertNotIn(word, result.stderr, what)

    def keyd_log(self):
        return "\n".join(self.keyd_process.log().splitlines()[-20:])

    def csr(self, key_uri, *extra, **kwargs):
        path = os.path.join(self.files, f"req-{time.monotonic_ns()}.csr")
        r = self.openssl("req", "-new", *PROVIDER, "-key", key_uri, "-subj", "/CN=test",
                         "-out", path, *extra, **kwargs)
        self.assertOk(r, f"openssl req -key {key_uri}")
        with open(path, "rb") as f:
            return x509.load_pem_x509_csr(f.read())

    def assertCsrSignedBy(self, csr, key_id, hash_algorithm, pss_salt=None):
        public_key = self.public_key(key_id)
        self.assertEqual(spki(csr.public_key()), spki(public_key))
        verify_signature(public_key, csr.signature, csr.tbs_certrequest_bytes, hash_algorithm,
                         pss_salt)
        with self.assertRaises(InvalidSignature):
            verify_signature(public_key, csr.signature, csr.tbs_certrequest_bytes + b"x",
                             hash_algorithm, pss_salt)

    def s_client(self, key_id, *extra, key_uri=None, user=None, groups=None, env=None):
        return self.openssl("s_client", *PROVIDER, "-connect", self.server.address,
                            "-cert", self.client_pem[key_id],
                            "-key", key_uri or f"aziot-key:pair/{key_id}",
                            "-CAfile", self.ca_pem, "-verify_return_error", "-ign_eof", *extra,
                            input="GET / HTTP/1.0\r\n\r\n", user=user, groups=groups, env=env)

    def tls_client(self, key_id, *extra, by_id=False, **kwargs):
        key = ["--key-pair-id", key_id] if by_id else ["--key-uri", f"aziot-key:pair/{key_id}"]
        return self.run_tool([TLS_CLIENT, *key, "--connect", self.server.address,
                              "--cert", self.client_pem[key_id], "--ca", self.ca_pem, *extra],
                             **kwargs)

    def assertAuthenticated(self, result, protocol, signature_type, digest="SHA256", what=""):
        """The server accepted the client and saw a signature of this type."""
        self.assertOk(result, what)
        page = result.stdout
        self.assertIn(f"Protocol  : {protocol}", page, f"{what}:\n{page}")
        self.assertRegex(page, rf"(?m)^Peer signature type: {re.escape(signature_type)}$", what)
        self.assertRegex(page, rf"(?m)^Peer signing digest: {digest}$", what)


class SigningTests:
    """What every key store must do: CSRs, certificates, TLS client authentication."""

    def test_csr_ec(self):
        for digest, algorithm in (("-sha256", hashes.SHA256()), ("-sha384", hashes.SHA384())):
            with self.subTest(digest=digest):
                csr = self.csr("aziot-key:pair/dev-ec", digest)
                self.assertCsrSignedBy(csr, "dev-ec", algorithm)
                self.assertOk(self.openssl("req", "-in", self.files_path(csr), "-verify",
                                           "-noout"), "openssl req -verify")

    def test_csr_rsa_pkcs1(self):
        csr = self.csr("aziot-key:pair/dev-rsa")
        self.assertEqual(csr.signature_algorithm_oid, SignatureAlgorithmOID.RSA_WITH_SHA256)
        self.assertCsrSignedBy(csr, "dev-rsa", hashes.SHA256())

    def test_csr_rsa_pss(self):
        # Salt as long as the digest, and OpenSSL's default (the maximum): the AlgorithmIdentifier
        # must say what the signature really used, or strict verification fails.
        for opts, salt in ((["-sigopt", "rsa_pss_saltlen:digest"], 32), ([], 256 - 32 - 2)):
            with self.subTest(opts=opts):
                csr = self.csr("aziot-key:pair/dev-rsa", "-sigopt", "rsa_padding_mode:pss", *opts)
                self.assertEqual(csr.signature_algorithm_oid, SignatureAlgorithmOID.RSASSA_PSS)
                self.assertCsrSignedBy(csr, "dev-rsa", hashes.SHA256(), pss_salt=salt)
                self.assertOk(self.openssl("req", "-in", self.files_path(csr), "-verify",
                                           "-noout"), "openssl req -verify (PSS)")

    def files_path(self, csr):
        path = os.path.join(self.files, f"check-{time.monotonic_ns()}.csr")
        return write_pem(path, csr.public_bytes(serialization.Encoding.PEM))

    def test_certificate_issued_with_ca_key_in_keyd(self):
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf_key_path = write_pem(os.path.join(self.files, "leaf.key"), pem_key(leaf_key))
        leaf_csr = os.path.join(self.files, "leaf.csr")
        self.assertOk(self.openssl("req", "-new", "-key", leaf_key_path, "-subj", "/CN=leaf",
                                   "-out", leaf_csr), "leaf CSR")
        for key_id in ("dev-ec", "dev-rsa"):
            with self.subTest(ca=key_id):
                ca_pem = os.path.join(self.files, f"keyd-ca-{key_id}.pem")
                leaf_pem = os.path.join(self.files, f"leaf-{key_id}.pem")
                self.assertOk(self.openssl("req", "-new", "-x509", *PROVIDER, "-key",
                                           f"aziot-key:pair/{key_id}", "-subj", f"/CN={key_id} CA",
                                           "-days", "1", "-out", ca_pem), "self-signed CA")
                self.assertOk(self.openssl("x509", "-req", *PROVIDER, "-in", leaf_csr,
                                           "-CA", ca_pem, "-CAkey", f"aziot-key:pair/{key_id}",
                                           "-CAcreateserial", "-days", "1", "-out", leaf_pem),
                              "openssl x509 -req -CAkey <uri>")
                with open(leaf_pem, "rb") as f:
                    leaf = x509.load_pem_x509_certificate(f.read())
                verify_signature(self.public_key(key_id), leaf.signature,
                                 leaf.tbs_certificate_bytes, hashes.SHA256())
                self.assertEqual(spki(leaf.public_key()), spki(leaf_key.public_key()))
                r = self.openssl("verify", "-CAfile", ca_pem, leaf_pem)
                self.assertOk(r, "openssl verify")
                self.assertIn(": OK", r.stdout)

    def test_raw_signatures(self):
        """EVP_PKEY_sign() of a digest the caller computed (openssl pkeyutl): ECDSA, PKCS#1 v1.5
        (DigestInfo made by the provider) and PSS."""
        digest = hashlib.sha256(b"signed by keyd").digest()
        digest_path = write_pem(os.path.join(self.files, "digest.bin"), digest)
        cases = [("dev-ec", []), ("dev-rsa", ["-pkeyopt", "digest:sha256"]),
                 ("dev-rsa", ["-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pss",
                              "-pkeyopt", "rsa_pss_saltlen:digest"])]
        for key_id, opts in cases:
            with self.subTest(key=key_id, opts=opts):
                sig_path = os.path.join(self.files, f"raw-{time.monotonic_ns()}.sig")
                self.assertOk(self.openssl("pkeyutl", "-sign", *PROVIDER, "-inkey",
                                           f"aziot-key:pair/{key_id}", "-in", digest_path,
                                           "-out", sig_path, *opts), "pkeyutl -sign")
                with open(sig_path, "rb") as f:
                    signature = f.read()
                public_key = self.public_key(key_id)
                prehashed = utils.Prehashed(hashes.SHA256())
                if key_id == "dev-ec":
                    public_key.verify(signature, digest, ec.ECDSA(prehashed))
                elif "rsa_padding_mode:pss" in opts:
                    public_key.verify(signature, digest,
                                      padding.PSS(padding.MGF1(hashes.SHA256()), 32), prehashed)
                else:
                    public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)

    def test_tls_ec_s_client(self):
        for version in ("-tls1_2", "-tls1_3"):
            with self.subTest(version=version):
                self.assertAuthenticated(self.s_client("dev-ec", version),
                                         "TLSv1." + version[-1], "ECDSA", what=version)

    def test_tls_rsa_s_client(self):
        cases = [
            ("-tls1_3", [], "RSA-PSS"),  # TLS 1.3 signs with PSS only
            ("-tls1_2", ["-client_sigalgs", "RSA+SHA256"], "RSA"),
            ("-tls1_2", ["-client_sigalgs", "rsa_pss_rsae_sha256"], "RSA-PSS"),
            ("-tls1_2", ["-client_sigalgs", "RSA+SHA384"], "RSA"),
        ]
        for version, extra, kind in cases:
            with self.subTest(version=version, sigalgs=extra):
                digest = "SHA384" if "RSA+SHA384" in extra else "SHA256"
                self.assertAuthenticated(self.s_client("dev-rsa", version, *extra),
                                         "TLSv1." + version[-1], kind, digest=digest,
                                         what=f"{version} {extra}")

    def test_tls_c_client(self):
        cases = [
            ("dev-ec", "--tls1_3", [], "ECDSA"),
            ("dev-ec", "--tls1_2", [], "ECDSA"),
            ("dev-rsa", "--tls1_3", [], "RSA-PSS"),
            ("dev-rsa", "--tls1_2", ["--client-sigalgs", "RSA+SHA256"], "RSA"),
            ("dev-rsa", "--tls1_2", ["--client-sigalgs", "rsa_pss_rsae_sha256"], "RSA-PSS"),
        ]
        for key_id, version, extra, kind in cases:
            for by_id in (False, True):  # OSSL_STORE, then aziot_key_evp_pkey()
                with self.subTest(key=key_id, version=version, extra=extra, by_id=by_id):
                    r = self.tls_client(key_id, version, *extra, by_id=by_id)
                    self.assertAuthenticated(r, "TLSv1." + version[-1], kind,
                                             what=f"tls-client {key_id} {version} {extra}")
                    self.assertIn("handshake 1: ok", r.stdout)

    def test_public_parameters(self):
        """EVP_PKEY_get_*_param() on the provider's key give keyd's public key, never a private
        one."""
        for key_id in ("dev-ec", "dev-rsa"):
            for by in ("--key-uri", "--key-pair-id"):
                with self.subTest(key=key_id, by=by):
                    value = f"aziot-key:pair/{key_id}" if by == "--key-uri" else key_id
                    r = self.run_tool([TLS_CLIENT, by, value, "--describe"])
                    self.assertOk(r, "tls-client --describe")
                    public_key = self.public_key(key_id)
                    if key_id == "dev-ec":
                        point = public_key.public_bytes(
                            serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)
                        self.assertIn("type=EC bits=256 security-bits=128", r.stdout)
                        self.assertIn("group=prime256v1", r.stdout)
                        self.assertIn(f"pub={point.hex()}", r.stdout)
                    else:
                        numbers = public_key.public_numbers()
                        self.assertIn("type=RSA bits=2048 security-bits=112 size=256", r.stdout)
                        self.assertIn(f"n={numbers.n:X}\n", r.stdout)
                        self.assertIn(f"e={numbers.e:06X}\n", r.stdout)


class FileStoreTest(ProviderTestCase, SigningTests):
    """Keys on keyd's file store; also everything about URIs, authorization and failures."""

    KEYS = {"dev-ec": "ec-p256", "dev-rsa": "rsa-2048", "dev-rsa4096": "rsa-4096"}

    def test_rsa4096(self):
        csr = self.csr("aziot-key:pair/dev-rsa4096", "-sigopt", "rsa_padding_mode:pss",
                       "-sigopt", "rsa_pss_saltlen:digest")
        self.assertCsrSignedBy(csr, "dev-rsa4096", hashes.SHA256(), pss_salt=32)
        csr = self.csr("aziot-key:pair/dev-rsa4096", "-sha512")
        self.assertCsrSignedBy(csr, "dev-rsa4096", hashes.SHA512())
        self.assertAuthenticated(self.s_client("dev-rsa4096", "-tls1_3"), "TLSv1.3", "RSA-PSS")

    def test_handle_uri(self):
        """A key handle names the key without a further check: a caller that was given one may
        use it, even one that may not load the key by its id."""
        handle = str(self.keyd("LoadKeyPair", "sa{sv}", "dev-ec", {}))
        uri = "aziot-key:handle/" + handle
        self.assertCsrSignedBy(self.csr(uri), "dev-ec", hashes.SHA256())
        r = self.openssl("req", "-new", *PROVIDER, "-key", uri, "-subj", "/CN=x", "-out",
                         "/dev/null", user=USER_A, groups=[self.keys_gid])
        self.assertOk(r, "a handle as an unauthorized user")
        # A forged handle: keyd refuses it, and the message does not repeat it.
        forged = handle[:-6] + ("AAAA==" if not handle.endswith("AAAA==") else "BBBB==")
        r = self.openssl("req", "-new", *PROVIDER, "-key", "aziot-key:handle/" + forged,
                         "-subj", "/CN=x", "-out", "/dev/null")
        self.assertCleanFailure(r, REJECTED, "forged handle")
        ours = [line for line in r.stderr.splitlines() if ":aziot:" in line]
        self.assertTrue(ours, r.stderr)
        self.assertNotIn(forged, "\n".join(ours))  # openssl's own line repeats the URI

    def test_openssl_config_file(self):
        """Loaded by an OpenSSL configuration file, with no -provider option."""
        conf = os.path.join(self.files, "openssl.cnf")
        with open(conf, "w") as f:
            f.write("openssl_conf = openssl_init\n[openssl_init]\nproviders = providers\n"
                    "[providers]\naziot = aziot_section\ndefault = default_section\n"
                    f"[aziot_section]\nmodule = {os.path.join(PROVIDER_DIR, 'aziot.so')}\n"
                    "activate = 1\n[default_section]\nactivate = 1\n")
        path = os.path.join(self.files, "conf.csr")
        r = self.openssl("req", "-new", "-key", "aziot-key:pair/dev-ec", "-subj", "/CN=conf",
                         "-out", path,
                         env={"OPENSSL_CONF": conf, "OPENSSL_MODULES": "/nonexistent"})
        self.assertOk(r, "openssl req with OPENSSL_CONF")
        with open(path, "rb") as f:
            self.assertCsrSignedBy(x509.load_pem_x509_csr(f.read()), "dev-ec", hashes.SHA256())
        r = self.openssl("list", "-providers", env={"OPENSSL_CONF": conf})
        self.assertIn("aziot: private keys held by aziot-keyd", r.stdout)

    def test_ordinary_keys_unaffected(self):
        """With the provider loaded first, keys that are not keyd's still work: key generation,
        ECDHE on P-256 (its keys go through our key management), a client key from a file."""
        for algorithm, opt in (("EC", "ec_paramgen_curve:P-256"), ("RSA", "rsa_keygen_bits:2048")):
            r = self.openssl("genpkey", *PROVIDER, "-algorithm", algorithm, "-pkeyopt", opt)
            self.assertOk(r, f"genpkey {algorithm}")
            self.assertIn("BEGIN PRIVATE KEY", r.stdout)
        for version in ("-tls1_2", "-tls1_3"):
            r = self.s_client("dev-ec", version, "-groups", "P-256")
            self.assertAuthenticated(r, "TLSv1." + version[-1], "ECDSA", what=f"P-256 {version}")
        file_key = ec.generate_private_key(ec.SECP256R1())
        key_path = write_pem(os.path.join(self.files, "file-client.key"), pem_key(file_key))
        self.client_pem["file"] = write_pem(
            os.path.join(self.files, "file-client.pem"),
            make_cert("file", file_key.public_key(), "test CA", self.ca_key))
        for version in ("-tls1_2", "-tls1_3"):
            r = self.s_client("file", version, "-groups", "P-256:X25519", key_uri=key_path)
            self.assertAuthenticated(r, "TLSv1." + version[-1], "ECDSA", what=f"file {version}")

    def test_unauthorized_user(self):
        """A caller that may reach keyd but not use the key gets keyd's refusal; one that may not
        reach keyd at all gets the bus's. Clean exits, the reason on stderr."""
        req = ["req", "-new", *PROVIDER, "-key", "aziot-key:pair/dev-ec", "-subj", "/CN=x",
               "-out", "/dev/null"]
        r = self.openssl(*req, user=USER_A, groups=[self.keys_gid])
        self.assertCleanFailure(r, NOT_AUTHORIZED, "openssl req as an unauthorized user")
        self.assertIn(f"user {self.uid_a} is not authorized to access the key dev-ec", r.stderr)
        r = self.s_client("dev-ec", "-tls1_3", user=USER_A, groups=[self.keys_gid])
        self.assertCleanFailure(r, NOT_AUTHORIZED, "s_client as an unauthorized user")
        r = self.run_tool([TLS_CLIENT, "--key-pair-id", "dev-ec", "--describe"], user=USER_A,
                          groups=[self.keys_gid])
        self.assertCleanFailure(r, "Permission denied (keyd refused: not authorized",
                                "aziot_key_evp_pkey() as an unauthorized user", status=2)
        r = self.openssl(*req, user=USER_A, groups=None)
        self.assertCleanFailure(r, BUS_DENIED, "openssl req outside group aziotks")

    def test_principal_authorizes_user(self):
        """Authorization is the caller's own: a [[principal]] entry for its uid lets it in."""
        path = os.path.join(self.keyd_config_d, "50-provider-test.toml")
        with open(path, "w") as f:
            f.write(f'[[principal]]\nuid = {self.uid_a}\nkeys = ["dev-ec"]\n')
        try:
            deadline = time.monotonic() + RELOAD_TIMEOUT
            while True:
                r = self.s_client("dev-ec", "-tls1_3", user=USER_A, groups=[self.keys_gid])
                if r.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertAuthenticated(r, "TLSv1.3", "ECDSA", what="s_client as a principal")
            r = self.openssl("req", "-new", *PROVIDER, "-key", "aziot-key:pair/dev-rsa", "-subj",
                             "/CN=x", "-out", "/dev/null", user=USER_A, groups=[self.keys_gid])
            self.assertCleanFailure(r, NOT_AUTHORIZED, "a key the principal does not list")
        finally:
            os.unlink(path)

    def test_bad_uris_and_missing_keys(self):
        cases = [
            ("aziot-key:pair/no-such-key", NOT_FOUND),
            ("aziot-key:pair/a b", BAD_URI),
            ("aziot-key:pair/", BAD_URI),
            ("aziot-key:pairs/dev-ec", BAD_URI),
            ("aziot-key:pair/dev%2", BAD_URI),
            ("aziot-key:handle/not-a-handle", REJECTED),
        ]
        for uri, message in cases:
            with self.subTest(uri=uri):
                r = self.openssl("req", "-new", *PROVIDER, "-key", uri, "-subj", "/CN=x",
                                 "-out", "/dev/null")
                self.assertCleanFailure(r, message, uri)

    def test_bus_unreachable(self):
        r = self.openssl("req", "-new", *PROVIDER, "-key", "aziot-key:pair/dev-ec", "-subj",
                         "/CN=x", "-out", "/dev/null",
                         env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.files}/no-bus"})
        self.assertCleanFailure(r, UNREACHABLE, "no bus")
        self.assertIn("cannot connect to the system bus", r.stderr)

    def test_keyd_stopped(self):
        """keyd gone before the key is loaded, and between two handshakes of one process: clean
        failures; once keyd is back, the same process signs again (same handle, new call)."""
        client = subprocess.Popen(
            [TLS_CLIENT, "--key-uri", "aziot-key:pair/dev-ec", "--connect", self.server.address,
             "--cert", self.client_pem["dev-ec"], "--ca", self.ca_pem, "--tls1_3",
             "--handshakes", "3", "--pause"],
            env=self.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1)
        try:
            self.assertEqual(self.read_line(client, "ready"), "ready 1")
            client.stdin.write("\n")
            client.stdin.flush()
            self.assertEqual(self.read_line(client, "handshake"), "handshake 1: ok")
            self.assertEqual(self.read_line(client, "ready"), "ready 2")
            self.stop_keyd()
            r = self.openssl("req", "-new", *PROVIDER, "-key", "aziot-key:pair/dev-ec", "-subj",
                             "/CN=x", "-out", "/dev/null")
            self.assertCleanFailure(r, UNREACHABLE, "openssl req with keyd stopped")
            self.assertIn("org.freedesktop.DBus.Error.ServiceUnknown", r.stderr)
            client.stdin.write("\n")
            client.stdin.flush()
            self.assertEqual(self.read_line(client, "handshake"), "handshake 2: failed")
            self.assertEqual(self.read_line(client, "ready"), "ready 3")
            self.start_keyd()
            client.stdin.write("\n")
            client.stdin.close()
            self.assertEqual(self.read_line(client, "handshake"), "handshake 3: ok")
            client.wait(TIMEOUT)
            stderr = client.stderr.read()
            self.assertEqual(client.returncode, 1, stderr)  # one handshake failed
            self.assertIn(UNREACHABLE, stderr)
            self.assertNotIn("AddressSanitizer", stderr)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            client.stdout.close()
            client.stderr.close()
            if "keyd" not in self.stack.processes:
                self.start_keyd()

    def read_line(self, process, prefix):
        """The next line of process's stdout that starts with prefix (read unbuffered, so that
        select() sees what is really left)."""
        buffered = self.__dict__.setdefault("_pending", {}).setdefault(process.pid, b"")
        fd = process.stdout.fileno()
        deadline = time.monotonic() + TIMEOUT
        while True:
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                if line.startswith(prefix.encode()):
                    self._pending[process.pid] = buffered
                    return line.decode().strip()
            left = deadline - time.monotonic()
            chunk = os.read(fd, 65536) if left > 0 and select.select([fd], [], [], left)[0] \
                else b""
            if not chunk:
                self.fail(f"no line starting with {prefix!r} from tls-client")
            buffered += chunk


class SoftHsmTest(ProviderTestCase, SigningTests):
    """The same with keyd keeping its key pairs on a SoftHSM2 token (pkcs11_base_slot)."""

    backend = "softhsm2"

    @classmethod
    def make_token(cls):
        return aziot_tokens.SoftHsmToken(os.path.join(cls.run_dir, "softhsm"), label="aziot",
                                         pin="Pin" + os.urandom(6).hex())

    def test_keys_are_on_the_token(self):
        objects = self.token.objects()
        for key_id in self.KEYS:
            self.assertIn(key_id, objects)
            self.assertIn("never extractable", self.token.key_access(key_id))


if __name__ == "__main__":
    unittest.main(verbosity=2)
