#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""keyd.sock end to end: HTTP clients (raw sockets, http.client, curl) → aziot-gatewayd → the real
aziot-keyd, D-Bus activated on a private system bus with our policy, next to the real polkitd
(aziot_harness.Stack + aziot_stack.KeysServices; one stack per class).

Every result is checked by independent computation (Python's hmac, python-cryptography, the handle
and file formats of spec §2.5-§2.8: tests/lib/aziot_keys_oracle.py), every status, header and
message against spec §1.3/§1.4/§2.3/§2.4, and every JSON answer against its schema in
interfaces/keys.yaml. Clients other than root run as the harness's test users in processes of their
own (the agent of tests/lib/aziot_http.py), so that the gateway and keyd see their real uids.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, and AZIOT_KEYS_BACKEND, keyd's key
store (tests/lib/aziot_keys_backend.py):

  file (default)  keyd's filesystem store alone: keys are files of its home, read byte for byte.
  softhsm2        a SoftHSM2 token as keyd's pkcs11_base_slot, one per class (tests/lib/
                  aziot_tokens.py): key pairs, symmetric keys and the handle-validation-key on the
                  token, where nothing can read them; they are checked by behaviour instead (HMACs
                  against the token's own CKM_SHA256_HMAC, computed outside keyd; key pairs against
                  the public key read from the token), with the same tests.

What keyd stores is checked through aziot_keys_backend.KeyStoreChecks (assertStored,
assertNotStored, assertStoredIds, listing, fingerprint, expected_hmac, stored_public_key), as in the
D-Bus suite. Differences that are upstream's are asserted as such where they occur: PKCS#11 keys
have one usage, so a new key asked with both sign/derive and encrypt is refused (400) on a token
and the tests that use one key both ways import it twice (key_id, key_id + "-enc"); v1 AEAD
ciphertexts are for filesystem keys only (400 with a token key); an imported sign/derive key
shorter than the token's HMAC takes goes to the file store; ids too long for a file name are ids
like any other on a token.
"""

import hashlib
import json
import os
import re
import signal
import sys
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
import aziot_harness  # noqa: E402
import aziot_http_suite  # noqa: E402
import aziot_openapi  # noqa: E402
import aziot_stack  # noqa: E402
from aziot_http import Connection, Response, UnixHTTPConnection, request_bytes  # noqa: E402
from aziot_http_suite import BUILD_DIR, GATEWAYD, USER_A, USER_B, ServiceHttpTestCase, at, \
    gateway_source  # noqa: E402
from aziot_keys_oracle import BAD_MECHANISM, BAD_VALUE, HVK, INTERNAL, INVALID_HANDLE, NESTED, \
    NOT_A_KEY, NOT_A_KEY_PAIR, NOT_DERIVED, P256_OID_DER, SHA256_DIGEST_INFO, b64, bad_param, \
    emsa_pss_encode_sha256, handle_parts, hmac256, key_file_name, make_handle, tree_listing, \
    unb64, with_sig  # noqa: E402

import aziot_keys_backend  # noqa: E402
from aziot_keys_backend import GENERATED, IMPORTED, PAIR, KeyStoreChecks, \
    backend_from_env  # noqa: E402

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

KEYD = os.path.join(BUILD_DIR, "services", "keys", "aziot-keyd")
BACKEND = backend_from_env(allowed=("file", "softhsm2"))
VERSIONS = ("2020-09-01", "2021-05-01")
V2021 = "2021-05-01"
KEYS_GROUP = "aziotks"
POLL_TIMEOUT = 10
TOO_LARGE = "request body too large"


def not_authorized(uid, key_id):
    return f"user {uid} is not authorized to access the key {key_id}"


def nul_in(name, position):
    """Upstream's answer to an id holding U+0000: Rust's NulError, as the cause."""
    return bad_param(name, f"nul byte found in provided data at position: {position}")


def poll(predicate, what, timeout=POLL_TIMEOUT):
    """Polls predicate (every 10 ms) until it returns a true value, which it returns."""
    return aziot_http_suite.poll(predicate, what, timeout, interval=0.01)


OPENAPI = aziot_openapi.OpenApi(os.path.join(SOURCE_DIR, "interfaces", "keys.yaml"))


# ---------------------------------------------------------------------------------------------
# The fixture


class KeysHttpTestCase(ServiceHttpTestCase, KeyStoreChecks):
    """A stack per class: bus, polkitd, keyd activatable (no idle exit, debug log) and the gateway
    on run_dir/sockets/keyd.sock, which is mode 0660 and group aziotks as a packaged socket unit
    makes it (spec §6.1), so that the test users in that group reach it. With a token backend,
    keyd's base slot is a token of the class's own (run_dir/token)."""

    GROUP = KEYS_GROUP
    RUN_DIR_PREFIX = "aziot-gwk-"
    API = V2021
    OPENAPI = OPENAPI
    REQUIRED = (GATEWAYD, KEYD)
    BUS_POLICY = None  # a bus policy .conf added to the project's, or None
    key_store_backend = BACKEND
    token = None

    @classmethod
    def stack_options(cls):
        policy_dirs = []
        if cls.BUS_POLICY:
            policy_dirs.append(os.path.join(cls.run_dir, "bus-policy"))
            os.makedirs(policy_dirs[0])
            with open(os.path.join(policy_dirs[0], "test.conf"), "w") as f:
                f.write(cls.BUS_POLICY)
        return {"extra_bus_policy_dirs": policy_dirs}

    @classmethod
    def start_stack(cls):
        cls.token = BACKEND.make_token(os.path.join(cls.run_dir, "token"))
        cls.stack.start()
        cls.services = aziot_stack.KeysServices(
            cls.stack, keyd_args=["--idle-timeout=0"], keyd_env={"AZIOT_LOG": "debug"},
            gateway_env=cls.gateway_env(), token=cls.token)
        cls.services.start(max_requests=cls.MAX_REQUESTS)
        cls.sock = cls.services.keyd_socket
        cls.home = cls.services.keyd_home
        cls.keys_dir = cls.key_store_dir = os.path.join(cls.home, "keys")
        cls.key_store_token = cls.token
        # What keyd may change: its home, and its token's files.
        cls.keyd_state_dirs = [cls.home] + ([cls.token.base_dir] if cls.token else [])
        cls.gateway = cls.services.gateway

    @classmethod
    def stop_class(cls):
        super().stop_class()
        if cls.token is not None:
            cls.token.close()

    @classmethod
    def post_from_setup(cls, path, body):
        """A POST as root, from the class's preparation: the JSON of its answer, a 200."""
        c = Connection(cls.sock)
        try:
            c.send(request_bytes("POST", f"{path}?api-version={V2021}", body))
            r = c.read_response()
        finally:
            c.close()
        if r.status != 200:
            raise AssertionError(f"POST {path}: {r.status} {r.body[:300]!r}")
        return r.json()

    @staticmethod
    def key_body(key_id, key, usages):
        return {"keyId": key_id, "usage": ",".join(usages), "keyBytes": b64(key)}

    @classmethod
    def class_import_sign_and_encrypt(cls, key_id, key):
        """aziot_keys_backend.import_sign_and_encrypt through POST /key, from the class's
        preparation: (sign handle, encrypt handle), one key "sign,encrypt" on the filesystem."""
        return aziot_keys_backend.import_sign_and_encrypt(
            BACKEND, lambda *args: cls.post_from_setup("/key", cls.key_body(*args))["keyHandle"],
            key_id, key)

    def import_sign_and_encrypt(self, key_id, key):
        """The same from a test, each answer checked as ok() checks it."""
        return aziot_keys_backend.import_sign_and_encrypt(
            BACKEND, lambda *args: self.ok("POST", "/key", self.key_body(*args))["keyHandle"],
            key_id, key)

    # -- HTTP -------------------------------------------------------------------------------

    def ok(self, method, path, body=None, version=V2021, via=None, conn=None):
        """A 200 with exactly Content-Type: application/json; returns the JSON."""
        r = self.http(method, path, body, version, conn=conn, via=via)
        self.assertEqual(r.status, 200, f"{method} {path}: {r.body[:300]!r}")
        self.assertJsonHeaders(r)
        return r.json()

    # -- keyd's state and the independent checks ---------------------------------------------

    # (Where keys are stored: KeyStoreChecks, on keys_dir and the class's token.)

    def assertHandle(self, handle, key_id):
        """handle is upstream's format (spec §2.5), signed with the handle-validation-key (its
        file, spec §2.8, mode 0600; or the token's, by the token's own HMAC) for key_id (serde's
        KeyId: {"Key": id}, {"KeyPair": id}, {"Derived": [h, [bytes]]})."""
        self.assertRegex(handle, r"^sr=[A-Za-z0-9+/]+=*&sig=[A-Za-z0-9+/]{43}=$")
        sr, sig, sr_json = handle_parts(handle)
        if self.location_of(GENERATED) == "file":
            self.assertKeyFile(HVK)
        self.assertEqual(sig, self.expected_hmac(HVK, sr))
        self.assertEqual(list(sr_json), ["key_id", "nonce"])
        self.assertEqual(sr_json["key_id"], key_id)
        self.assertEqual(len(unb64(sr_json["nonce"])), 64)

    def sign_hmac(self, handle, message, version=V2021, via=None, conn=None):
        body = {"keyHandle": handle, "algorithm": "HMAC-SHA256",
                "parameters": {"message": b64(message)}}
        return unb64(self.ok("POST", "/sign", body, version, via=via, conn=conn)["signature"])

    @staticmethod
    def aead_body(route, handle, data, iv, aad):
        member = "plaintext" if route == "/encrypt" else "ciphertext"
        return {"keyHandle": handle, "algorithm": "AEAD",
                "parameters": {"iv": b64(iv), "aad": b64(aad)}, member: b64(data)}

    def aead(self, route, handle, data, iv, aad, version=V2021, via=None):
        answer = self.ok("POST", route, self.aead_body(route, handle, data, iv, aad), version,
                         via=via)
        self.assertEqual(list(answer), ["ciphertext" if route == "/encrypt" else "plaintext"])
        return unb64(next(iter(answer.values())))

    def parameter(self, handle, name, version=V2021, via=None):
        return self.ok("POST", f"/parameters/{name}", {"keyHandle": handle}, version,
                       via=via)["value"]

    def ec_public_key(self, handle, version=V2021, via=None):
        """The public key rebuilt from /parameters only."""
        self.assertEqual(self.parameter(handle, "algorithm", version, via), "ECDSA")
        self.assertEqual(unb64(self.parameter(handle, "ec-curve-oid", version, via)),
                         P256_OID_DER)
        point = unb64(self.parameter(handle, "ec-point", version, via))
        self.assertEqual(len(point), 33)
        self.assertIn(point[0], (2, 3))  # compressed
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)

    def assertEcdsaVerifies(self, public_key, handle, version=V2021, via=None):
        for data in (b"", b"message", os.urandom(3000)):
            digest = hashlib.sha256(data).digest()
            body = {"keyHandle": handle, "algorithm": "ECDSA",
                    "parameters": {"digest": b64(digest)}}
            sig = unb64(self.ok("POST", "/sign", body, version, via=via)["signature"])
            utils.decode_dss_signature(sig)  # DER ECDSA-Sig-Value, not raw r||s
            public_key.verify(sig, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def keyd_pid(self):
        return self.service_pid(aziot_stack.KEYS_BUS_NAME)

    def keyd_log(self):
        return aziot_harness._read_text(
            os.path.join(self.run_dir, "logs", f"{aziot_stack.KEYS_BUS_NAME}.log"))

    def write_principals(self, name, entries):
        """keyd's config.d/NAME.toml with [[principal]] entries [(uid, [globs])], renamed in."""
        text = "".join(f"[[principal]]\nuid = {uid}\nkeys = {json.dumps(globs)}\n\n"
                       for uid, globs in entries)
        tmp = os.path.join(self.run_dir, f".{name}.toml")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.services.config_d, f"{name}.toml"))
        self.addCleanup(self.remove_principals, name)

    def remove_principals(self, name):
        """Removes config.d/NAME.toml and waits until keyd has reloaded without it, so that the
        next test starts clean (a test has one principals file at a time)."""
        path = os.path.join(self.services.config_d, f"{name}.toml")
        if not os.path.exists(path):
            return
        mark = len(self.keyd_log())
        os.unlink(path)
        poll(lambda: "Configuration reloaded: 0 principal(s)." in self.keyd_log()[mark:],
             "keyd to drop the principals")


# ---------------------------------------------------------------------------------------------
# 1. Every route of spec §2.3, on both api-versions, against independent computation


class RoutesTest(KeysHttpTestCase):
    """Success of every route, shapes, status codes and headers, on 2020-09-01 and 2021-05-01."""

    def each_version(self, check):
        for version in VERSIONS:
            with self.subTest(version=version):
                check(version)

    def test_create_import_load_delete_key(self):
        self.each_version(self.check_symmetric_key)

    def check_symmetric_key(self, v):
        kid, message = f"sym-{v}", os.urandom(100)
        created = self.ok("POST", "/key", {"keyId": kid, "usage": "sign"}, v)
        self.assertEqual(list(created), ["keyHandle"])
        self.assertHandle(created["keyHandle"], {"Key": kid})
        self.assertStored(HVK, GENERATED, usage="sign")
        self.assertStored(kid, GENERATED, usage="sign")
        self.assertEqual(self.secret_length(kid), 32)
        self.assertEqual(self.sign_hmac(created["keyHandle"], message, v),
                         self.expected_hmac(kid, message))
        key = self.fingerprint(kid)

        # Create if not exists: the key stays, the handle is new, whatever the usage asked for.
        again = self.ok("POST", "/key", {"keyId": kid, "usage": "derive,encrypt,sign"}, v)
        self.assertNotEqual(again["keyHandle"], created["keyHandle"])
        self.assertEqual(self.fingerprint(kid), key)
        if BACKEND.on_token:
            # A new key cannot have both: PKCS#11 keys have one usage, sign/derive or encrypt
            # (upstream refuses the mask with InvalidParameter), generated or imported.
            for body in ({"keyId": f"{kid}-both", "usage": "derive,encrypt,sign"},
                         {"keyId": f"{kid}-both", "usage": "sign,encrypt",
                          "keyBytes": b64(os.urandom(32))}):
                self.assertError(self.http("POST", "/key", body, v), 400, BAD_VALUE)
            self.assertNotStored(f"{kid}-both")

        # Import overwrites, at any length; a handle names the id, not the material. (On a
        # token, the 7 bytes its HMAC refuses go to the file store, and the token's key goes.)
        for material in (os.urandom(32), os.urandom(7)):
            imported = self.ok("POST", "/key",
                               {"keyId": kid, "usage": "sign", "keyBytes": b64(material)}, v)
            self.assertHandle(imported["keyHandle"], {"Key": kid})
            self.assertStored(kid, IMPORTED, material, usage="sign")
            for handle in (created["keyHandle"], imported["keyHandle"]):
                self.assertEqual(self.sign_hmac(handle, message, v), hmac256(material, message))

        loaded = self.ok("GET", f"/key/{kid}", None, v)
        self.assertHandle(loaded["keyHandle"], {"Key": kid})
        self.assertEqual(self.sign_hmac(loaded["keyHandle"], b"m", v), hmac256(material, b"m"))

        self.assertNoContent(self.http("DELETE", "/key", {"keyHandle": loaded["keyHandle"]}, v))
        self.assertNotStored(kid)
        self.assertNoContent(self.http("DELETE", "/key", {"keyHandle": loaded["keyHandle"]}, v))
        self.assertError(self.http("GET", f"/key/{kid}", None, v), 400, BAD_VALUE)
        self.assertError(self.http("POST", "/sign", {
            "keyHandle": created["keyHandle"], "algorithm": "HMAC-SHA256",
            "parameters": {"message": ""}}, v), 400, BAD_VALUE)

    def test_ec_key_pairs(self):
        self.each_version(self.check_ec_key_pair)

    def check_ec_key_pair(self, v):
        kid = f"ec-{v}"
        handle = self.ok("POST", "/keypair", {"keyId": kid}, v)["keyHandle"]  # ec-p256:rsa-2048
        self.assertHandle(handle, {"KeyPair": kid})
        stored = self.stored_public_key(kid)  # of the PKCS#8 PEM file, or of the token
        self.assertIsInstance(stored.curve, ec.SECP256R1)
        public = self.ec_public_key(handle, v)
        self.assertEqual(public.public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.CompressedPoint),
                         stored.public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.CompressedPoint))
        pem = self.fingerprint(kid)
        self.assertEcdsaVerifies(public, handle, v)
        for name in ("rsa-modulus", "rsa-exponent", "bogus"):
            self.assertError(self.http("POST", f"/parameters/{name}", {"keyHandle": handle}, v),
                             400, BAD_VALUE)

        # An existing pair is returned as it is, whatever the algorithms asked for.
        again = self.ok("POST", "/keypair", {"keyId": kid, "preferredAlgorithms": "rsa-2048"},
                        v)["keyHandle"]
        self.assertEqual(self.fingerprint(kid), pem)
        loaded = self.ok("GET", f"/keypair/{kid}", None, v)["keyHandle"]
        self.assertHandle(loaded, {"KeyPair": kid})
        for h in (again, loaded):
            self.assertEqual(self.parameter(h, "ec-point", v),
                             self.parameter(handle, "ec-point", v))

        # "*" is ec-p256 first; unknown names are ignored, and nothing left is 400.
        star = self.ok("POST", "/keypair", {"keyId": f"{kid}-star", "preferredAlgorithms": "*"},
                       v)["keyHandle"]
        self.assertEqual(self.parameter(star, "algorithm", v), "ECDSA")
        for algorithms in ("dsa:ec-p384", ""):
            self.assertError(self.http("POST", "/keypair", {
                "keyId": f"{kid}-none", "preferredAlgorithms": algorithms}, v), 400, BAD_VALUE)
        self.assertNotStored(f"{kid}-none")
        null = self.ok("POST", "/keypair", {"keyId": f"{kid}-null", "preferredAlgorithms": None},
                       v)["keyHandle"]
        self.assertEqual(self.parameter(null, "algorithm", v), "ECDSA")

    def test_rsa_key_pairs(self):
        self.each_version(self.check_rsa_key_pair)

    def check_rsa_key_pair(self, v):
        kid = f"rsa-{v}"
        handle = self.ok("POST", "/keypair",
                         {"keyId": kid, "preferredAlgorithms": "rsa-2048:ec-p256"}, v)["keyHandle"]
        self.assertHandle(handle, {"KeyPair": kid})
        stored = self.stored_public_key(kid)
        numbers = stored.public_numbers()
        self.assertEqual((stored.key_size, numbers.e), (2048, 65537))
        self.assertEqual(self.parameter(handle, "algorithm", v), "RSA")
        modulus = unb64(self.parameter(handle, "rsa-modulus", v))
        exponent = unb64(self.parameter(handle, "rsa-exponent", v))
        self.assertEqual((modulus, exponent), (numbers.n.to_bytes(256, "big"), b"\x01\x00\x01"))
        public = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"),
                                      int.from_bytes(modulus, "big")).public_key()
        for name in ("ec-point", "ec-curve-oid"):
            self.assertError(self.http("POST", f"/parameters/{name}", {"keyHandle": handle}, v),
                             400, BAD_VALUE)

        for data in (b"", os.urandom(3000)):
            # RSA-PKCS1 signs a DigestInfo, as the openssl engine passes it.
            digest_info = SHA256_DIGEST_INFO + hashlib.sha256(data).digest()
            body = {"keyHandle": handle, "algorithm": "RSA-PKCS1", "plaintext": b64(digest_info)}
            sig = unb64(self.ok("POST", "/encrypt", body, v)["ciphertext"])
            self.assertEqual(len(sig), 256)
            public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            # RSA-NO-PADDING is the raw operation on a block OpenSSL padded for PSS.
            block = emsa_pss_encode_sha256(data, 2048)
            sig = unb64(self.ok("POST", "/encrypt", {"keyHandle": handle,
                                                     "algorithm": "RSA-NO-PADDING",
                                                     "parameters": None,
                                                     "plaintext": b64(block)}, v)["ciphertext"])
            self.assertEqual(pow(int.from_bytes(sig, "big"), 65537, numbers.n),
                             int.from_bytes(block, "big"))
            public.verify(sig, data, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                          hashes.SHA256())

    def test_move_and_delete_key_pairs(self):
        self.each_version(self.check_move_and_delete)

    def check_move_and_delete(self, v):
        src, dst = f"cert-{v}-temp", f"cert-{v}"
        h_src = self.ok("POST", "/keypair", {"keyId": src}, v)["keyHandle"]
        h_dst = self.ok("POST", "/keypair", {"keyId": dst}, v)["keyHandle"]
        self.assertStored(src, PAIR)
        pem, point = self.fingerprint(src), self.parameter(h_src, "ec-point", v)
        self.assertNotEqual(self.parameter(h_dst, "ec-point", v), point)

        self.assertNoContent(self.http("POST", f"/keypair/{dst}", {"from": src}, v))
        self.assertNotStored(src)
        self.assertStored(dst, PAIR)
        self.assertEqual(self.fingerprint(dst), pem)  # on a token: relabelled, same CKA_IDs
        self.assertError(self.http("GET", f"/keypair/{src}", None, v), 400, BAD_VALUE)
        moved = self.ok("GET", f"/keypair/{dst}", None, v)["keyHandle"]
        # Handles name ids: the destination's old handle reaches the moved pair.
        for handle in (moved, h_dst):
            self.assertEqual(self.parameter(handle, "ec-point", v), point)
        self.assertEcdsaVerifies(self.ec_public_key(moved, v), moved, v)

        self.assertError(self.http("POST", f"/keypair/{dst}", {"from": dst}, v), 400,
                         "source and destination for move are identical")
        self.assertError(self.http("POST", f"/keypair/{src}-elsewhere", {"from": src}, v), 400,
                         BAD_VALUE)
        self.assertNotStored(f"{src}-elsewhere")
        # Only key pairs move: POST /key/{id} matches the route and is refused.
        self.assertError(self.http("POST", f"/key/{src}", {"from": dst}, v), 400,
                         'invalid type "key"')
        self.assertEqual(self.fingerprint(dst), pem)

        self.assertNoContent(self.http("DELETE", "/keypair", {"keyHandle": h_dst}, v))
        self.assertNotStored(dst)
        self.assertNoContent(self.http("DELETE", "/keypair", {"keyHandle": moved}, v))
        self.assertError(self.http("GET", f"/keypair/{dst}", None, v), 400, BAD_VALUE)

    def test_aead(self):
        self.each_version(self.check_aead)

    def check_aead(self, v):
        key = os.urandom(32)
        handle = self.ok("POST", "/key", {"keyId": f"aead-{v}", "usage": "encrypt",
                                          "keyBytes": b64(key)}, v)["keyHandle"]
        self.assertStored(f"aead-{v}", IMPORTED, key, usage="encrypt")
        on_token = self.location_of(IMPORTED, key, "encrypt") == "token"
        for iv, aad, plaintext in ((os.urandom(12), b"aad", b"secret"),
                                   (os.urandom(16), b"", b""),
                                   (os.urandom(12), os.urandom(100), os.urandom(10000))):
            sealed = AESGCM(key).encrypt(iv, plaintext, aad)  # ciphertext || tag
            self.assertEqual(self.aead("/encrypt", handle, plaintext, iv, aad, v),
                             b"\x02" + sealed)
            # v2 (0x02, ciphertext, tag) and the legacy v1 (0x01, tag, ciphertext), made here.
            v2, v1 = b"\x02" + sealed, b"\x01" + sealed[-16:] + sealed[:-16]
            self.assertEqual(self.aead("/decrypt", handle, v2, iv, aad, v), plaintext)
            if on_token:
                # v1 ciphertexts (IoT Edge 1.1) were only ever made with filesystem keys: a token
                # key refuses them, as upstream's does.
                self.assertError(self.http("POST", "/decrypt",
                                           self.aead_body("/decrypt", handle, v1, iv, aad), v),
                                 400, BAD_VALUE)
            else:
                self.assertEqual(self.aead("/decrypt", handle, v1, iv, aad, v), plaintext)

    def test_derived_keys(self):
        self.each_version(self.check_derived_keys)

    def check_derived_keys(self, v):
        base = os.urandom(32)
        h_base = self.ok("POST", "/key", {"keyId": f"master-{v}", "usage": "derive",
                                          "keyBytes": b64(base)}, v)["keyHandle"]
        self.assertStored(f"master-{v}", IMPORTED, base, usage="derive")
        stored = self.listing()
        for data in (b"module-1:gen-7:primary", b""):
            derived = hmac256(base, data)
            handle = self.ok("POST", "/derivedkey",
                             {"baseKeyHandle": h_base, "derivationData": b64(data)},
                             v)["keyHandle"]
            self.assertHandle(handle, {"Derived": [h_base, list(data)]})
            exported = self.ok("POST", "/derivedkey/export", {"keyHandle": handle}, v)
            self.assertEqual(list(exported), ["key"])
            self.assertEqual(unb64(exported["key"]), derived)
            self.assertEqual(self.sign_hmac(handle, b"sas-token", v),
                             hmac256(derived, b"sas-token"))
            iv = os.urandom(12)
            sealed = b"\x02" + AESGCM(derived).encrypt(iv, b"secret", b"a")
            self.assertEqual(self.aead("/encrypt", handle, b"secret", iv, b"a", v), sealed)
            self.assertEqual(self.aead("/decrypt", handle, sealed, iv, b"a", v), b"secret")
            self.assertError(self.http("POST", "/derivedkey",
                                       {"baseKeyHandle": handle, "derivationData": ""}, v),
                             400, NESTED)
        # Nothing is stored for a derived key.
        self.assertEqual(self.listing(), stored)

    def test_curl_as_a_user_would(self):
        created = self.curl("POST", "/key", {"keyId": "curl-key", "usage": "sign"})
        self.assertEqual(created.status, 200, created.body)
        self.assertJsonHeaders(created)
        handle = created.json()["keyHandle"]
        signed = self.curl("POST", "/sign", {"keyHandle": handle, "algorithm": "HMAC-SHA256",
                                             "parameters": {"message": b64(b"hello")}})
        self.assertStored("curl-key", GENERATED, usage="sign")
        self.assertEqual(signed.json(),
                         {"signature": b64(self.expected_hmac("curl-key", b"hello"))})
        # curl -d sends application/x-www-form-urlencoded: upstream then sees no body.
        self.assertError(self.curl("POST", "/key", {"keyId": "curl-form", "usage": "sign"},
                                   json_type=False), 400, "missing request body")
        self.assertNotStored("curl-form")
        self.assertNoContent(self.curl("DELETE", "/key", {"keyHandle": handle}))

    def test_every_route_answers_as_its_document_says(self):
        """A success and an error of each operation of keys.yaml, validated (by http()) against
        its schema; and the validator itself refuses what the document does not allow."""
        key = self.ok("POST", "/key", {"keyId": "doc-key", "usage": "sign"})["keyHandle"]
        doomed_key = self.ok("POST", "/key", {"keyId": "doc-key-2", "usage": "sign"})["keyHandle"]
        pair = self.ok("POST", "/keypair", {"keyId": "doc-pair"})["keyHandle"]
        doomed_pair = self.ok("POST", "/keypair", {"keyId": "doc-pair-2"})["keyHandle"]
        self.ok("POST", "/keypair", {"keyId": "doc-pair-temp"})
        derived = self.ok("POST", "/derivedkey",
                          {"baseKeyHandle": key, "derivationData": "ZA=="})["keyHandle"]
        # PKCS#11 keys have one usage: on a token, AEAD takes a key made to encrypt.
        enc = key if not BACKEND.on_token else \
            self.ok("POST", "/key", {"keyId": "doc-key-enc", "usage": "encrypt"})["keyHandle"]
        aead = {"iv": b64(bytes(12)), "aad": ""}
        sealed = b64(self.aead("/encrypt", enc, b"x", bytes(12), b""))
        cases = [  # method, path, a good body (or None), a bad body, the status of the bad one
            ("POST", "/key", {"keyId": "doc-key", "usage": "sign"}, {}, 422),
            ("DELETE", "/key", {"keyHandle": doomed_key}, {"keyHandle": pair}, 400),
            ("GET", "/key/doc-key", None, None, None),
            ("POST", "/key/doc-pair", None, {"from": "doc-pair-temp"}, 400),
            ("POST", "/keypair", {"keyId": "doc-pair"}, {"keyId": 1}, 422),
            ("DELETE", "/keypair", {"keyHandle": doomed_pair}, {"keyHandle": key}, 400),
            ("GET", "/keypair/doc-pair", None, None, None),
            ("POST", "/keypair/doc-pair", {"from": "doc-pair-temp"}, {"from": "doc-none"}, 400),
            ("POST", "/parameters/algorithm", {"keyHandle": pair}, {"keyHandle": key}, 500),
            ("POST", "/sign", {"keyHandle": key, "algorithm": "HMAC-SHA256",
                               "parameters": {"message": ""}},
             {"keyHandle": key, "algorithm": "ECDSA", "parameters": {"digest": ""}}, 400),
            ("POST", "/encrypt", {"keyHandle": enc, "algorithm": "AEAD", "parameters": aead,
                                  "plaintext": ""}, {"keyHandle": "x"}, 422),
            ("POST", "/decrypt", {"keyHandle": enc, "algorithm": "AEAD", "parameters": aead,
                                  "ciphertext": sealed},
             {"keyHandle": enc, "algorithm": "AEAD", "parameters": aead,
              "ciphertext": b64(b"\x02" + bytes(16))}, 500),
            ("POST", "/derivedkey", {"baseKeyHandle": key, "derivationData": ""},
             {"baseKeyHandle": derived, "derivationData": ""}, 400),
            ("POST", "/derivedkey/export", {"keyHandle": derived}, {"keyHandle": key}, 400)]
        seen = set()
        for method, path, good, bad, status in cases:
            template, _ = OPENAPI.operation(method, path)
            seen.add((method, template))
            with self.subTest(method=method, path=path):
                if method == "GET":
                    self.assertEqual(self.http(method, path).status, 200)
                    self.assertEqual(self.http(method, path + "-none").status, 400)
                    continue
                if good is not None:
                    self.assertIn(self.http(method, path, good).status, (200, 204))
                self.assertEqual(self.http(method, path, bad).status, status)
        self.assertEqual(seen, set(OPENAPI.operations))

        # The validator can fail.
        r = self.http("GET", "/key/doc-key")
        for body in (b'{"keyHandle": 5}', b'{"keyHandle": "h", "more": 1}', b"{}",
                     b'{"message": "x"}'):
            wrong = Response(200, "OK", r.headers, body, r.raw_head)
            self.assertNotEqual(OPENAPI.response_errors("GET", "/key/doc-key", wrong), [], body)
        self.assertNotEqual(OPENAPI.response_errors(
            "GET", "/key/doc-key", Response(418, "", [], b"{}", b"")), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "POST", "/sign", Response(200, "", [], b'{"signature": "aGk"}', b"")), [])
        self.assertNotEqual(OPENAPI.response_errors(
            "DELETE", "/key", Response(204, "", [], b"{}", b"")), [])


class InterfaceDocumentTest(unittest.TestCase):
    def test_document_lists_every_route_of_the_table(self):
        """interfaces/keys.yaml and the route table of gateway/keys-routes.c say the same."""
        table = re.findall(r'\{ HTTP_(\w+), "([^"]+)", ALL,', gateway_source("keys-routes.c"))
        self.assertEqual(len(table), 14)
        documented = {(method, re.sub(r"\{[^}]+\}", "*", template))
                      for method, template in OPENAPI.operations}
        self.assertEqual(set(table), documented)
        # Every operation takes the api-version and documents its JSON answers.
        for (method, template), (_, op) in OPENAPI.operations.items():
            params = op.get("parameters") or OPENAPI.doc["paths"][template].get("parameters")
            self.assertIn({"$ref": "#/components/parameters/ApiVersion"}, params, template)
            self.assertEqual(OPENAPI.resolve(params[0])["schema"]["enum"], list(VERSIONS))
            for status, response in op["responses"].items():
                response = OPENAPI.resolve(response)
                self.assertEqual(status == "204", "content" not in response, (template, status))


# ---------------------------------------------------------------------------------------------
# 2. Bad input


class BadInputTest(KeysHttpTestCase):
    """Malformed, mistyped, forged and misdirected requests, each with upstream's status and
    message. One gateway and one keyd for the class: after every test both still run (keyd with
    the same pid) and nothing was written outside keyd's home."""

    ROUTES = [("POST", "/key"), ("DELETE", "/key"), ("GET", "/key/k"), ("POST", "/keypair"),
              ("DELETE", "/keypair"), ("GET", "/keypair/k"), ("POST", "/keypair/k"),
              ("POST", "/parameters/algorithm"), ("POST", "/sign"), ("POST", "/encrypt"),
              ("POST", "/decrypt"), ("POST", "/derivedkey"), ("POST", "/derivedkey/export")]

    @classmethod
    def prepare_class(cls):
        def ok(path, body):
            return cls.post_from_setup(path, body)["keyHandle"]
        cls.sym_key = os.urandom(32)
        # One key "sign,encrypt" on the filesystem; on a token "sym" signs, "sym-enc" encrypts.
        cls.sym, cls.sym_enc = cls.class_import_sign_and_encrypt("sym", cls.sym_key)
        cls.ec = ok("/keypair", {"keyId": "ec"})
        cls.rsa = ok("/keypair", {"keyId": "rsa", "preferredAlgorithms": "rsa-2048"})
        cls.derived = ok("/derivedkey", {"baseKeyHandle": cls.sym, "derivationData": "ZA=="})

    def setUp(self):
        self.keyd_at_start = self.keyd_pid()
        self.outside_home = tree_listing(self.run_dir, exclude=self.keyd_state_dirs)
        self.stored_at_start = self.listing()

    def tearDown(self):
        # Still serving, the same keyd, and keyd wrote nowhere but its home (and its token).
        self.assertTrue(self.gateway.alive(), "the gateway died")
        self.assertEqual(self.keyd_pid(), self.keyd_at_start, "keyd was replaced")
        self.assertEqual(self.sign_hmac(self.sym, b"m"), hmac256(self.sym_key, b"m"))
        self.assertEqual(tree_listing(self.run_dir, exclude=self.keyd_state_dirs),
                         self.outside_home)
        if BACKEND.on_token:
            # keys/ exists once something went to the file store.
            self.assertLessEqual(set(os.listdir(self.home)), {"keys"})
        else:
            self.assertEqual(os.listdir(self.home), ["keys"])
        self.assertStored("sym", IMPORTED, self.sym_key, usage="sign")
        if self.sym_enc != self.sym:
            self.assertStored("sym-enc", IMPORTED, self.sym_key, usage="encrypt")
        self.assertFalse([p for p in os.listdir("/tmp") if p.startswith("aziot-escape")])

    def test_api_version_missing_or_unknown(self):
        for method, path in self.ROUTES:
            body = {} if method != "GET" else None
            with self.subTest(method=method, path=path):
                self.assertError(self.http(method, path, body, version=None), 400,
                                 "api-version not specified")
                self.assertError(self.http(method, f"{path}?x=1", body, version=None), 400,
                                 "api-version not specified")
                self.assertError(self.http(method, path, body, version="2019-01-01"), 400,
                                 'invalid api-version "2019-01-01"')
                self.assertError(self.http(method, path, body, version="2021-05-01x"), 400,
                                 'invalid api-version "2021-05-01x"')
                # The last api-version wins.
                self.assertError(self.http(method, f"{path}?api-version={V2021}", body,
                                           version="bogus"), 400, 'invalid api-version "bogus"')

    def test_unknown_routes_and_methods(self):
        for path in ("/", "/keys", "/key/", "/key/a/b", "/keypair/a/b", "/parameters/",
                     "/sign/x", "/derivedkey/import", "/Key/k", "/certificates/c"):
            with self.subTest(path=path):
                self.assertError(self.http("GET", path), 404, "not found")
                self.assertError(self.http("POST", path, {}), 404, "not found")
        for method, path in [("GET", "/sign"), ("PUT", "/key"), ("DELETE", "/key/k"),
                             ("GET", "/derivedkey/export"), ("DELETE", "/parameters/algorithm"),
                             ("PATCH", "/keypair"), ("OPTIONS", "/key/k"), ("HEAD", "/encrypt")]:
            with self.subTest(method=method, path=path):
                c = self.connect()
                c.send(request_bytes(method, f"{path}?api-version={V2021}",
                                     {} if method in ("PUT", "DELETE") else None))
                r = c.read_response(head_request=method == "HEAD")
                self.assertEqual(r.status, 400)
                if method != "HEAD":
                    self.assertError(r, 400, "method not allowed")

    def test_malformed_json(self):
        cases = [(b"{x}", "key must be a string at line 1 column 2"),
                 (b"{", "EOF while parsing an object at line 1 column 1"),
                 (b'{"keyId": "k",}', "trailing comma at line 1 column 15"),
                 (b"\xff", "expected value at line 1 column 1"),
                 (b"nul", "EOF while parsing a value at line 1 column 3")]
        for method, path in self.ROUTES:
            if method == "GET":
                continue
            for body, message in cases:
                with self.subTest(path=path, body=body):
                    self.assertError(self.http(method, path, body), 422, message)
        self.assertEqual(self.listing(), self.stored_at_start)

    def test_missing_and_mistyped_fields(self):
        cases = {
            ("POST", "/key"): [
                at(b"{}", None, "missing field `keyId`"),
                at(b'{"keyId":"k"}', None, "missing field `usage`"),
                # An invalid type is reported after what serde has read of the value: all of
                # a scalar, nothing of a sequence or a map.
                at(b'{"usage":"sign","keyId":5}', b"5", "invalid type: integer `5`, expected a "
                   "string"),
                at(b'{"keyId":"k","usage":"verify"}', b'"verify"', "unknown variant `verify`, "
                   "expected one of `derive`, `encrypt`, `sign`"),
                at(b'{"keyId":"k","usage":"sign","keyBytes":5}', b"5",
                   "invalid type: integer `5`, expected a base64-encoded string")],
            ("DELETE", "/key"): [
                at(b"{}", None, "missing field `keyHandle`"),
                at(b'{"keyHandle":[]}', b":", "invalid type: sequence, expected a string")],
            ("POST", "/keypair"): [
                at(b'{"preferredAlgorithms":"*"}', None, "missing field `keyId`"),
                at(b'{"keyId":"p","preferredAlgorithms":true}', b"true",
                   "invalid type: boolean `true`, expected a string")],
            ("DELETE", "/keypair"): [at(b'{"handle":"h"}', None, "missing field `keyHandle`")],
            ("POST", "/keypair/k"): [
                at(b'{"to":"x"}', None, "missing field `from`"),
                at(b'{"from":null}', b"null", "invalid type: null, expected a string")],
            ("POST", "/parameters/algorithm"): [
                at(b'{"keyHandle":{}}', b":", "invalid type: map, expected a string")],
            # Sign, encrypt and decrypt have a flattened enum (algorithm and parameters):
            # serde reads the whole object first, and reports at its end.
            ("POST", "/sign"): [
                at(b"{}", None, "missing field `keyHandle`"),
                at(b'{"keyHandle":"h"}', None, "missing field `algorithm`"),
                at(b'{"keyHandle":"h","algorithm":"RSA"}', None,
                   "unknown variant `RSA`, expected `ECDSA` or `HMAC-SHA256`"),
                at(b'{"keyHandle":"h","algorithm":"ECDSA"}', None, "missing field `parameters`"),
                at(b'{"keyHandle":"h","algorithm":"ECDSA","parameters":{}}', None,
                   "missing field `digest`")],
            ("POST", "/encrypt"): [
                at(b'{"keyHandle":"h","algorithm":"AEAD","plaintext":""}', None,
                   "missing field `parameters`"),
                at(b'{"keyHandle":"h","algorithm":"AEAD","parameters":{"iv":""},"plaintext":""}',
                   None, "missing field `aad`")],
            ("POST", "/decrypt"): [
                at(b'{"keyHandle":"h","algorithm":"AES","ciphertext":""}', None,
                   "unknown variant `AES`, expected one of `AEAD`, `RSA-PKCS1`, `RSA-NO-PADDING`")],
            ("POST", "/derivedkey"): [
                at(b'{"baseKeyHandle":"h"}', None, "missing field `derivationData`"),
                at(b'{"baseKeyHandle":"h","derivationData":1.5}', b"1.5",
                   "invalid type: floating point `1.5`, expected a base64-encoded string")],
            ("POST", "/derivedkey/export"): [at(b"{}", None, "missing field `keyHandle`")],
        }
        for (method, path), bodies in cases.items():
            for body, message in bodies:
                with self.subTest(path=path, body=body):
                    self.assertError(self.http(method, path, body), 422, message)
        # Upstream needs usage even for an import (spec §10.3).
        body = b'{"keyId":"imported","keyBytes":"' + b64(bytes(32)).encode() + b'"}'
        self.assertError(self.http("POST", "/key", body), 422,
                         f"missing field `usage` at line 1 column {len(body)}")
        self.assertNotStored("imported")
        # Bodies that are no body, where one is needed.
        for method, path in self.ROUTES:
            if method != "GET":
                with self.subTest(path=path, body=None):
                    self.assertError(self.http(method, path), 400, "missing request body")
                    self.assertError(self.http(method, path, b"{}", content_type="text/json"),
                                     400, "missing request body")
        # Unknown members are ignored (and "parameters" may be null where there are none).
        body = {"keyHandle": self.rsa, "algorithm": "RSA-PKCS1", "parameters": None,
                "plaintext": b64(SHA256_DIGEST_INFO + bytes(32)), "extra": [1, {"x": None}]}
        self.assertEqual(self.http("POST", "/encrypt", body).status, 200)

    def test_bad_base64(self):
        for text, error in (("aGk", "Invalid padding"), ("!!!!", "Invalid byte 33, offset 0."),
                            ("aGk=x", "Invalid byte 61, offset 3."),
                            ("aGl=", "Invalid last symbol 108, offset 2."),
                            ("a", "Encoded text cannot have a 6-bit remainder.")):
            quoted = json.dumps(text).encode()
            # Where: after the string, or (inside a flattened enum) at the end of the body.
            for method, path, body, flattened in [
                    ("POST", "/key", b'{"keyId":"b64","usage":"sign","keyBytes":%s}', False),
                    ("POST", "/sign", b'{"keyHandle":"h","algorithm":"HMAC-SHA256",'
                                      b'"parameters":{"message":%s}}', True),
                    ("POST", "/sign", b'{"keyHandle":"h","algorithm":"ECDSA",'
                                      b'"parameters":{"digest":%s}}', True),
                    ("POST", "/encrypt", b'{"keyHandle":"h","algorithm":"AEAD","parameters":'
                                         b'{"iv":%s,"aad":""},"plaintext":""}', True),
                    ("POST", "/decrypt", b'{"keyHandle":"h","algorithm":"RSA-PKCS1",'
                                         b'"ciphertext":%s}', False),
                    ("POST", "/derivedkey", b'{"baseKeyHandle":"h","derivationData":%s}', False)]:
                body = body % quoted
                with self.subTest(path=path, text=text):
                    self.assertError(self.http(method, path, body), 422,
                                     at(body, None if flattened else quoted, error)[1])
        self.assertNotStored("b64")

    def test_unknown_key_ids(self):
        for method, path, body in [("GET", "/key/nope", None), ("GET", "/keypair/nope", None),
                                   ("POST", "/keypair/somewhere", {"from": "nope"})]:
            with self.subTest(path=path, body=body):
                self.assertError(self.http(method, path, body), 400, BAD_VALUE)
        self.assertNotStored("somewhere")
        if self.location_of(IMPORTED, self.sym_key) == "file":
            # A key file that holds no key pair is the store failing, as upstream's PEM parser
            # does.
            self.assertError(self.http("GET", "/keypair/sym"), 500, INTERNAL)
        else:
            # On a token a secret key is no key pair, and no file holds one: there is no key
            # pair sym, as upstream finds none in any location.
            self.assertError(self.http("GET", "/keypair/sym"), 400, BAD_VALUE)

    def handle_requests(self, handle):
        """Every route that takes a handle, with otherwise valid bodies."""
        aead = {"iv": b64(bytes(12)), "aad": ""}
        return [("DELETE", "/key", {"keyHandle": handle}),
                ("DELETE", "/keypair", {"keyHandle": handle}),
                ("POST", "/parameters/algorithm", {"keyHandle": handle}),
                ("POST", "/sign", {"keyHandle": handle, "algorithm": "HMAC-SHA256",
                                   "parameters": {"message": ""}}),
                ("POST", "/sign", {"keyHandle": handle, "algorithm": "ECDSA",
                                   "parameters": {"digest": b64(bytes(32))}}),
                ("POST", "/encrypt", {"keyHandle": handle, "algorithm": "AEAD",
                                      "parameters": aead, "plaintext": ""}),
                ("POST", "/encrypt", {"keyHandle": handle, "algorithm": "RSA-PKCS1",
                                      "plaintext": ""}),
                ("POST", "/decrypt", {"keyHandle": handle, "algorithm": "AEAD",
                                      "parameters": aead, "ciphertext": b64(bytes(33))}),
                ("POST", "/derivedkey", {"baseKeyHandle": handle, "derivationData": ""}),
                ("POST", "/derivedkey/export", {"keyHandle": handle})]

    def test_forged_and_truncated_handles(self):
        sr, sig, _ = handle_parts(self.sym)
        flipped = bytearray(sig)
        flipped[5] ^= 0x01
        tampered = sr.replace(b'"Key":"sym"', b'"Key":"ec"')
        forged = [
            with_sig(self.sym, bytes(flipped)),                    # one bit of the MAC
            f"sr={b64(tampered)}&sig={b64(sig)}",                 # another id, the old MAC
            make_handle(os.urandom(32), {"Key": "sym"}),           # signed with another key
            self.sym[:len(self.sym) // 2],                         # truncated
            self.sym[:-2],                                         # the MAC cut short
            self.sym.split("&")[0],                                # no MAC
            "sig=" + b64(sig),                                     # no sr
            "", "garbage", "sr=!!&sig=!!",
            f"sr={b64(b'not json')}&sig={b64(sig)}",
            self.sym + "\u0000",                                   # U+0000 (JSON \\u0000)
            self.sym.replace("&", "\u0000&"),
        ]
        for handle in forged:
            for method, path, body in self.handle_requests(handle):
                with self.subTest(handle=handle[:50], path=path):
                    # Upstream calls the parameter "handle" on every route, derivedkey's
                    # baseKeyHandle included.
                    self.assertError(self.http(method, path, body), 400, INVALID_HANDLE)

    def test_handles_of_the_wrong_kind(self):
        digest = b64(hashlib.sha256(b"m").digest())
        aead = {"iv": b64(bytes(12)), "aad": ""}
        cases = [
            # A symmetric (or derived) handle where a key pair is needed ...
            ("POST", "/sign", {"keyHandle": self.sym, "algorithm": "ECDSA",
                               "parameters": {"digest": digest}}, 400, BAD_MECHANISM),
            ("POST", "/sign", {"keyHandle": self.derived, "algorithm": "ECDSA",
                               "parameters": {"digest": digest}}, 400, BAD_MECHANISM),
            ("POST", "/encrypt", {"keyHandle": self.sym, "algorithm": "RSA-PKCS1",
                                  "plaintext": digest}, 400, BAD_MECHANISM),
            ("POST", "/encrypt", {"keyHandle": self.derived, "algorithm": "RSA-NO-PADDING",
                                  "plaintext": digest}, 400, BAD_MECHANISM),
            ("DELETE", "/keypair", {"keyHandle": self.sym}, 400, NOT_A_KEY_PAIR),
            ("DELETE", "/keypair", {"keyHandle": self.derived}, 400, NOT_A_KEY_PAIR),
            # spec §2.3 #8: the key file is read as a key pair, which fails: 500.
            ("POST", "/parameters/algorithm", {"keyHandle": self.sym}, 500, INTERNAL),
            ("POST", "/parameters/ec-point", {"keyHandle": self.derived}, 500, INTERNAL),
            ("POST", "/parameters/bogus", {"keyHandle": self.sym}, 400, BAD_VALUE),
            # ... and the reverse.
            ("POST", "/sign", {"keyHandle": self.ec, "algorithm": "HMAC-SHA256",
                               "parameters": {"message": ""}}, 400, BAD_MECHANISM),
            ("POST", "/encrypt", {"keyHandle": self.rsa, "algorithm": "AEAD",
                                  "parameters": aead, "plaintext": ""}, 400, BAD_MECHANISM),
            ("POST", "/decrypt", {"keyHandle": self.ec, "algorithm": "AEAD", "parameters": aead,
                                  "ciphertext": b64(bytes(33))}, 400, BAD_MECHANISM),
            ("POST", "/decrypt", {"keyHandle": self.rsa, "algorithm": "RSA-PKCS1",
                                  "ciphertext": digest}, 400, BAD_MECHANISM),
            ("DELETE", "/key", {"keyHandle": self.ec}, 400, NOT_A_KEY),
            ("DELETE", "/key", {"keyHandle": self.derived}, 400, NOT_A_KEY),
            ("POST", "/derivedkey/export", {"keyHandle": self.ec}, 400, NOT_DERIVED),
            ("POST", "/derivedkey/export", {"keyHandle": self.sym}, 400, NOT_DERIVED),
            # The right kind, the wrong algorithm of key pair: the store refuses.
            ("POST", "/sign", {"keyHandle": self.rsa, "algorithm": "ECDSA",
                               "parameters": {"digest": digest}}, 400, BAD_VALUE),
            ("POST", "/encrypt", {"keyHandle": self.ec, "algorithm": "RSA-PKCS1",
                                  "plaintext": digest}, 400, BAD_VALUE),
        ]
        for method, path, body, status, message in cases:
            with self.subTest(path=path, handle=body.get("keyHandle", "")[:20]):
                self.assertError(self.http(method, path, body), status, message)
        # Nothing was deleted on the way.
        self.assertEqual(self.listing(), self.stored_at_start)
        self.assertEqual(self.parameter(self.ec, "algorithm"), "ECDSA")

    def test_aead_failures(self):
        iv, aad = os.urandom(12), b"aad"
        sym = self.sym_enc
        on_token = self.location_of(IMPORTED, self.sym_key, "encrypt") == "token"
        good = self.aead("/encrypt", sym, b"plaintext", iv, aad)

        def flip(data, index):
            out = bytearray(data)
            out[index] ^= 0x80
            return bytes(out)
        for what, ct, iv_used, aad_used in [("tag", flip(good, -1), iv, aad),
                                            ("body", flip(good, 1), iv, aad),
                                            ("aad", good, iv, b"other"),
                                            ("iv", good, os.urandom(12), aad),
                                            ("v1 reading of v2", b"\x01" + good[1:], iv, aad)]:
            with self.subTest(what=what):
                body = {"keyHandle": sym, "algorithm": "AEAD", "ciphertext": b64(ct),
                        "parameters": {"iv": b64(iv_used), "aad": b64(aad_used)}}
                if what.startswith("v1") and on_token:
                    # Token keys read v2 only (upstream): a v1 ciphertext is a bad value there.
                    self.assertError(self.http("POST", "/decrypt", body), 400, BAD_VALUE)
                    continue
                self.assertError(self.http("POST", "/decrypt", body), 500, INTERNAL)
        # Only "internal error" reaches the client; the cause is logged.
        self.assertIn("!!! internal error\n", self.gateway_log())
        self.assertIn("!!! caused by: org.aziot.Keys1.Error.Failed: internal error",
                      self.gateway_log())
        for what, ct in [("empty", b""), ("16 bytes", b"\x02" + bytes(15)),
                         ("version 3", b"\x03" + good[1:])]:
            with self.subTest(what=what):
                body = {"keyHandle": sym, "algorithm": "AEAD", "ciphertext": b64(ct),
                        "parameters": {"iv": b64(iv), "aad": b64(aad)}}
                self.assertError(self.http("POST", "/decrypt", body), 400, BAD_VALUE)
        self.assertEqual(self.aead("/decrypt", sym, good, iv, aad), b"plaintext")

    def test_path_tricks(self):
        added = {}
        for key_id, encoded in [("a/b", "a%2Fb"), ("..", ".."), ("..", "%2E%2E"),
                                ("../../aziot-escape", "..%2F..%2Faziot-escape"),
                                ("/tmp/aziot-escape", "%2Ftmp%2Faziot-escape"), ("/", "%2F"),
                                ("./.", ".%2F."), ("é ü", "%C3%A9%20%C3%BC"),
                                ("/" * 4096, "%2F" * 4096)]:
            with self.subTest(key_id=key_id[:20]):
                key = os.urandom(32)
                self.ok("POST", "/key", {"keyId": key_id, "usage": "sign", "keyBytes": b64(key)})
                self.assertStored(key_id, IMPORTED, key, usage="sign")
                handle = self.ok("GET", f"/key/{encoded}")["keyHandle"]
                self.assertHandle(handle, {"Key": key_id})
                self.assertEqual(self.sign_hmac(handle, b"m"), hmac256(key, b"m"))
                added[key_id] = IMPORTED
                if len(key_id) > 4000:
                    continue  # keyd takes ids of 4096 bytes at most
                # Key pairs by such ids, moved onto one, loaded, deleted.
                pair_id, source_id = "pair" + key_id, "pair" + key_id + "-temp"
                self.ok("POST", "/keypair", {"keyId": source_id})
                self.assertStored(source_id, PAIR)
                pem = self.fingerprint(source_id)
                self.assertNoContent(self.http("POST", f"/keypair/pair{encoded}",
                                               {"from": source_id}))
                self.assertNotStored(source_id)
                self.assertStored(pair_id, PAIR)
                self.assertEqual(self.fingerprint(pair_id), pem)
                pair = self.ok("GET", f"/keypair/pair{encoded}")["keyHandle"]
                self.assertHandle(pair, {"KeyPair": pair_id})
                self.assertNoContent(self.http("DELETE", "/keypair", {"keyHandle": pair}))
        self.assertEqual(key_file_name("/" * 4096)[0], "-")  # only its hash names the file
        # A raw "/" ends the segment: no route.
        for path in ("/key/a/b", "/keypair/a/b", "/key/%2F/"):
            self.assertError(self.http("GET", path), 404, "not found")
        # An id whose file name would be too long for the file system.
        long_id = "a" * 4096
        if BACKEND.on_token:
            # A token's label has no such limit: there it is an id like any other.
            for kind, route, body, key_id in [
                    (GENERATED, "key", {"keyId": long_id, "usage": "sign"}, {"Key": long_id}),
                    (PAIR, "keypair", {"keyId": long_id}, {"KeyPair": long_id})]:
                with self.subTest(route=route, length=4096):
                    created = self.ok("POST", f"/{route}", body)["keyHandle"]
                    self.assertStored(long_id, kind)
                    self.assertHandle(self.ok("GET", f"/{route}/{long_id}")["keyHandle"], key_id)
                    self.assertNoContent(self.http("DELETE", f"/{route}",
                                                   {"keyHandle": created}))
                    self.assertNotStored(long_id)
        else:
            for method, path, body in [("POST", "/key", {"keyId": long_id, "usage": "sign"}),
                                       ("POST", "/keypair", {"keyId": long_id}),
                                       ("GET", "/key/" + long_id, None),
                                       ("GET", "/keypair/" + long_id, None)]:
                with self.subTest(path=path[:20], length=4096):
                    self.assertError(self.http(method, path, body), 400, BAD_VALUE)
        # U+0000, percent-encoded in the path or escaped in JSON: upstream's C-string check.
        for method, path, body, message in [
                ("GET", "/key/a%00b", None, nul_in("id", 1)),
                ("GET", "/keypair/%00", None, nul_in("id", 0)),
                ("POST", "/key", {"keyId": "ab\u0000", "usage": "sign"}, nul_in("id", 2)),
                ("POST", "/key", {"keyId": "\u0000", "usage": "sign", "keyBytes": ""},
                 nul_in("id", 0)),
                ("POST", "/keypair", {"keyId": "ec\u0000x"}, nul_in("id", 2)),
                ("POST", "/keypair/dst", {"from": "e\u0000c"}, nul_in("from", 1)),
                ("POST", "/keypair/ds%00t", {"from": "ec"}, nul_in("to", 2)),
                ("POST", "/parameters/algo%00rithm", {"keyHandle": self.ec}, BAD_VALUE),
                ("POST", "/parameters/algo%00rithm", {"keyHandle": "x"}, INVALID_HANDLE)]:
            with self.subTest(path=path, body=body):
                self.assertError(self.http(method, path, body), 400, message)
        self.assertIn("!!! caused by: nul byte found in provided data at position: 1",
                      self.gateway_log())
        self.assertStoredIds(added, self.stored_at_start)

    def test_oversized_bodies(self):
        for path in ("/key", "/sign"):
            c, r = self.post_oversized(path, b'{"keyId":"huge","usage":"sign","keyBytes":"',
                                       10 << 20)
            self.assertError(r, 413, TOO_LARGE)
            self.assertEqual(r.header("connection"), b"close")
            self.assertTrue(c.is_closed())
        self.assertNotStored("huge")
        # Just under the limit, a real request goes through to keyd and back.
        message = os.urandom(700 * 1024)
        self.assertEqual(self.sign_hmac(self.sym, message), hmac256(self.sym_key, message))
        key = os.urandom(600 * 1024)
        handle = self.ok("POST", "/key", {"keyId": "big", "usage": "sign",
                                          "keyBytes": b64(key)})["keyHandle"]
        self.assertStored("big", IMPORTED, key, usage="sign")
        self.assertNoContent(self.http("DELETE", "/key", {"keyHandle": handle}))


# ---------------------------------------------------------------------------------------------
# 3. Authorization of the HTTP client by keyd, with real unprivileged uids


class AuthorizationTest(KeysHttpTestCase):
    """keyd authorizes the process at the other end of keyd.sock, not the gateway (root)."""

    def setUp(self):
        self.key = os.urandom(32)
        # One key "sign,encrypt" on the filesystem; on a token "app-sym" and "app-sym-enc".
        self.sym, self.sym_enc = self.import_sign_and_encrypt("app-sym", self.key)
        self.pair = self.ok("POST", "/keypair", {"keyId": "app-pair"})["keyHandle"]
        self.ok("POST", "/key", {"keyId": "other", "usage": "sign"})
        self.a = self.agent_as(USER_A)

    def id_requests(self, key_id, source="app-pair"):
        """Every route that names a key id, with key_id in its place, and the id keyd refuses
        for a caller with no right to key_id: a move is checked for its source first."""
        return [("GET", f"/key/{key_id}", None, key_id),
                ("GET", f"/keypair/{key_id}", None, key_id),
                ("POST", "/key", {"keyId": key_id, "usage": "sign"}, key_id),
                ("POST", "/key", {"keyId": key_id, "usage": "sign", "keyBytes": b64(bytes(32))},
                 key_id),
                ("POST", "/keypair", {"keyId": key_id}, key_id),
                ("POST", "/keypair/app-moved", {"from": key_id}, key_id),
                ("POST", f"/keypair/{key_id}", {"from": source}, source)]

    def assertDenied(self, via, uid, key_id, method, path, body):
        self.assertError(self.http(method, path, body, via=via), 401,
                         not_authorized(uid, key_id))

    def test_the_socket_is_for_its_group(self):
        self.assertOutsiderRefused()
        self.assertEqual(self.http("POST", "/sign", {
            "keyHandle": self.sym, "algorithm": "HMAC-SHA256", "parameters": {"message": ""}},
            via=self.agent_as(USER_B)).status, 200)

    def test_a_user_who_is_no_principal_is_refused(self):
        for method, path, body, refused in self.id_requests("app-sym") + \
                self.id_requests("app-new", source="app-new-temp"):
            with self.subTest(method=method, path=path, body=body):
                self.assertDenied(self.a, self.uid_a, refused, method, path, body)
        self.assertNotStored("app-new")
        self.assertNotStored("app-moved")
        self.assertStored("app-sym", IMPORTED, self.key, usage="sign")
        # As a user types it; logged as upstream logs it.
        r = self.curl("GET", "/key/app-sym", user=USER_A)
        self.assertError(r, 401, not_authorized(self.uid_a, "app-sym"))
        self.assertIn(f"!!! {not_authorized(self.uid_a, 'app-sym')}", self.gateway_log())
        # The same request from root's own connection is allowed: what keyd judged was the
        # client, not the gateway (which runs as root).
        self.assertHandle(self.ok("GET", "/key/app-sym")["keyHandle"], {"Key": "app-sym"})

    def test_principal_globs_are_reloaded(self):
        self.write_principals("50-http", [(self.uid_a, ["app-*", "?ther"])])
        poll(lambda: self.http("GET", "/key/app-sym", via=self.a).status == 200,
             "keyd to load the principal")
        handle = self.ok("GET", "/key/app-sym", via=self.a)["keyHandle"]
        self.assertEqual(self.sign_hmac(handle, b"m", via=self.a), hmac256(self.key, b"m"))
        self.ok("GET", "/key/other", via=self.a)
        # (Ids the other tests do not use: the class's keyd is shared.)
        created = self.ok("POST", "/key", {"keyId": "app-created", "usage": "sign"},
                          via=self.a)["keyHandle"]
        self.assertStored("app-created", GENERATED, usage="sign")
        self.assertEqual(self.sign_hmac(created, b"m", via=self.a),
                         self.expected_hmac("app-created", b"m"))
        self.assertNoContent(self.http("POST", "/keypair/app-renamed", {"from": "app-pair"},
                                       via=self.a))
        for key_id in ("App-sym", "xapp-sym", "others", "ther", HVK):
            self.assertDenied(self.a, self.uid_a, key_id, "GET", f"/key/{key_id}", None)
        # The principal is uid a's: b is still refused.
        self.assertDenied(self.agent_as(USER_B), self.uid_b, "app-sym", "GET", "/key/app-sym",
                          None)

        self.remove_principals("50-http")
        poll(lambda: self.http("GET", "/key/app-sym", via=self.a).status == 401,
             "keyd to drop the principal")
        self.assertDenied(self.a, self.uid_a, "other", "GET", "/key/other", None)

    def test_polkit_rule_for_the_http_client(self):
        self.stack.add_rules("50-http-load", (
            'polkit.addRule(function(action, subject) {\n'
            '    if (action.id == "org.aziot.keys.load" && subject.user == "%s" &&\n'
            '        action.lookup("key_id") == "app-sym")\n'
            '        return polkit.Result.YES;\n'
            '});\n') % USER_A)
        self.addCleanup(self.stack.remove_rules, "50-http-load")
        handle = self.ok("GET", "/key/app-sym", via=self.a)["keyHandle"]
        self.assertEqual(self.sign_hmac(handle, b"m", via=self.a), hmac256(self.key, b"m"))
        r = self.curl("GET", "/key/app-sym", user=USER_A)
        self.assertEqual(r.status, 200, r.body)
        self.assertHandle(r.json()["keyHandle"], {"Key": "app-sym"})
        # Another key, another action on the same key, another user: refused.
        self.assertDenied(self.a, self.uid_a, "other", "GET", "/key/other", None)
        self.assertDenied(self.a, self.uid_a, "app-sym", "POST", "/key",
                          {"keyId": "app-sym", "usage": "sign", "keyBytes": b64(bytes(32))})
        self.assertStored("app-sym", IMPORTED, self.key, usage="sign")
        self.assertDenied(self.agent_as(USER_B), self.uid_b, "app-sym", "GET", "/key/app-sym",
                          None)

    def test_star_principal_cannot_reach_the_handle_validation_key(self):
        hvk = self.fingerprint(HVK)
        self.write_principals("50-star", [(self.uid_a, ["*"])])
        poll(lambda: self.http("GET", "/key/other", via=self.a).status == 200,
             "keyd to load the principal")
        for via, uid in ((self.a, self.uid_a), (None, 0)):
            # The source of the move is allowed here (a's "*", root): HVK is what is refused.
            for method, path, body, _ in self.id_requests(HVK):
                with self.subTest(uid=uid, method=method, path=path):
                    self.assertDenied(via, uid, HVK, method, path, body)
        self.assertEqual(self.fingerprint(HVK), hvk)
        self.assertStored(HVK, GENERATED, usage="sign")
        self.assertEqual(self.sign_hmac(self.sym, b"m"), hmac256(self.key, b"m"))

    def test_handles_work_for_the_user(self):
        """A handle root obtained is a bearer token: the user needs no principal to use it."""
        self.assertDenied(self.a, self.uid_a, "app-sym", "GET", "/key/app-sym", None)
        self.assertEqual(self.sign_hmac(self.sym, b"m", via=self.a), hmac256(self.key, b"m"))
        iv = os.urandom(12)
        sealed = self.aead("/encrypt", self.sym_enc, b"p", iv, b"", via=self.a)
        self.assertEqual(sealed, b"\x02" + AESGCM(self.key).encrypt(iv, b"p", b""))
        self.assertEqual(self.aead("/decrypt", self.sym_enc, sealed, iv, b"", via=self.a), b"p")
        derived = self.ok("POST", "/derivedkey", {"baseKeyHandle": self.sym,
                                                  "derivationData": b64(b"d")},
                          via=self.a)["keyHandle"]
        self.assertEqual(unb64(self.ok("POST", "/derivedkey/export", {"keyHandle": derived},
                                       via=self.a)["key"]), hmac256(self.key, b"d"))
        self.assertEcdsaVerifies(self.ec_public_key(self.pair, via=self.a), self.pair,
                                 via=self.a)
        signed = self.curl("POST", "/sign", {"keyHandle": self.sym, "algorithm": "HMAC-SHA256",
                                             "parameters": {"message": b64(b"curl")}},
                           user=USER_A)
        self.assertEqual(signed.json(), {"signature": b64(hmac256(self.key, b"curl"))})
        self.assertNoContent(self.http("DELETE", "/keypair", {"keyHandle": self.pair},
                                       via=self.a))
        self.assertNotStored("app-pair")


# ---------------------------------------------------------------------------------------------
# 4. Connections: throttling, keep-alive, upstream's synchronous client, the private connection


class ThrottlingTest(KeysHttpTestCase):
    """spec §1.2: max_requests simultaneous connections per uid; the one beyond is closed
    unanswered."""

    MAX_REQUESTS = 3

    def served(self, conn):
        r = self.http("POST", "/sign", {"keyHandle": self.handle, "algorithm": "HMAC-SHA256",
                                        "parameters": {"message": b64(b"m")}}, conn=conn)
        self.assertEqual(r.json(), {"signature": b64(hmac256(self.key, b"m"))})

    def test_connections_per_uid(self):
        self.key = os.urandom(32)
        self.handle = self.ok("POST", "/key", {"keyId": "throttle", "usage": "sign",
                                               "keyBytes": b64(self.key)})["keyHandle"]
        a = self.agent_as(USER_A)
        held = [a.connect(self.sock) for _ in range(self.MAX_REQUESTS)]
        for conn in held:
            self.served(conn)

        self.assertDropped(a.connect(self.sock), "/key/throttle")
        poll(lambda: f"Max simultaneous connections reached for user {self.uid_a}"
             in self.gateway_log(), "the throttling log line")

        # Meanwhile another uid, and root, are served.
        b = self.agent_as(USER_B)
        self.served(b.connect(self.sock))
        self.served(self.connect())
        # The held connections still are.
        for conn in held:
            self.served(conn)

        # One goes: a new one of a's is served, once the gateway has seen it go.
        held.pop().close()

        def a_new_one_is_served():
            conn = a.connect(self.sock)
            try:
                conn.send(request_bytes("GET", f"/key/throttle?api-version={V2021}"))
                return conn.read_response().status == 401  # answered (a is no principal)
            except (EOFError, BrokenPipeError, ConnectionResetError):
                return False
            finally:
                conn.close()
        poll(a_new_one_is_served, "a freed slot to be usable")


class ConnectionTest(KeysHttpTestCase):
    """Keep-alive, and requests exactly as upstream's synchronous key client writes them."""

    @classmethod
    def prepare_class(cls):
        cls.key = os.urandom(32)
        # One key "sign,encrypt" on the filesystem (two on a token): the tests sign with it.
        cls.handle, _ = cls.class_import_sign_and_encrypt("ka", cls.key)

    def test_many_requests_on_one_connection(self):
        conn = self.connect()
        for i in range(60):
            message = os.urandom(i)
            version = VERSIONS[i % 2]
            self.assertEqual(self.sign_hmac(self.handle, message, version, conn=conn),
                             hmac256(self.key, message))
            self.assertHandle(self.ok("GET", "/key/ka", None, version, conn=conn)["keyHandle"],
                              {"Key": "ka"})
            self.assertError(self.http("GET", "/nope", conn=conn), 404, "not found")
            self.assertError(self.http("POST", "/sign", b"{x}", conn=conn), 422,
                             "key must be a string at line 1 column 2")
            self.assertError(self.http("GET", "/key/none", conn=conn), 400, BAD_VALUE)

    def test_http_client_keep_alive(self):
        conn = UnixHTTPConnection(self.sock)
        self.addCleanup(conn.close)
        sockets = set()
        for i in range(30):
            body = json.dumps({"keyHandle": self.handle, "algorithm": "HMAC-SHA256",
                               "parameters": {"message": b64(b"%d" % i)}})
            conn.request("POST", f"/sign?api-version={V2021}", body,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            self.assertEqual((r.status, r.getheader("Content-Type")), (200, "application/json"))
            self.assertFalse(r.will_close)
            self.assertEqual(json.loads(r.read()),
                             {"signature": b64(hmac256(self.key, b"%d" % i))})
            sockets.add(id(conn.sock))
        self.assertEqual(len(sockets), 1, "http.client had to reconnect")

    def test_synchronous_key_client_requests(self):
        """spec §1.6: no Host, content-type and content-length only, one connection each; the
        answer must have Content-Type exactly application/json and few headers."""
        body = json.dumps({"keyHandle": self.handle, "algorithm": "HMAC-SHA256",
                           "parameters": {"message": b64(b"sync")}}).encode()
        for request in [
                b"POST /sign?api-version=2021-05-01 HTTP/1.1\r\ncontent-type: application/json"
                b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
                b"POST /sign?api-version=2021-05-01 HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body)]:
            conn = self.connect()
            conn.send(request)
            r = conn.read_response()
            self.assertEqual(r.status, 200, r.body)
            self.assertJsonHeaders(r)
            self.assertLessEqual(len(r.headers), 4)
            self.assertEqual(r.json(), {"signature": b64(hmac256(self.key, b"sync"))})
        conn = self.connect()
        conn.send(b"GET /key/ka?api-version=2021-05-01 HTTP/1.1\r\n\r\n")
        r = conn.read_response()
        self.assertEqual(r.status, 200)
        self.assertHandle(r.json()["keyHandle"], {"Key": "ka"})
        # A 204 carries no content-length but 0, and no content-type.
        doomed = self.ok("POST", "/key", {"keyId": "gone", "usage": "sign"})["keyHandle"]
        body = json.dumps({"keyHandle": doomed}).encode()
        conn = self.connect()
        conn.send(b"DELETE /key?api-version=2021-05-01 HTTP/1.1\r\ncontent-type: "
                  b"application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.assertNoContent(conn.read_response())


class MonitoredTestCase(KeysHttpTestCase):
    """With dbus-monitor watching the Keys1 calls that go through dbus-daemon."""

    @classmethod
    def prepare_class(cls):
        cls.monitor = cls.stack.start_process(
            "monitor", ["dbus-monitor", "--system", "interface='org.aziot.Keys1'"])
        aziot_harness._wait_until(lambda: "NameAcquired" in cls.monitor.log(), 10,
                                  "dbus-monitor to start")

    def calls_through_the_bus(self):
        """The Keys1 calls dbus-daemon has carried so far, except ours."""
        ours = self.stack.bus().get_unique_name()
        marker = f"monitor-marker-{os.urandom(4).hex()}"
        try:
            self.stack.bus().call_blocking(aziot_stack.KEYS_BUS_NAME, "/org/aziot/Keys1",
                                           "org.aziot.Keys1", "LoadKey", "sa{sv}", (marker, {}))
        except Exception:
            pass  # NotFound: the call is only a marker
        poll(lambda: marker in self.monitor.log(), "the monitor to see the marker")
        calls = re.findall(r"^method call .* sender=(\S+) -> destination=\S+ .*member=(\w+)$",
                           self.monitor.log(), re.M)
        return [member for sender, member in calls if sender != ours]

    def sign(self):
        return self.http("POST", "/sign", {"keyHandle": self.handle, "algorithm": "HMAC-SHA256",
                                           "parameters": {"message": b64(b"p")}})

    def assertSigns(self, times):
        for _ in range(times):
            self.assertEqual(self.sign().json(), {"signature": b64(hmac256(self.key, b"p"))})

    def private_links(self):
        return self.gateway_log().count("Calling org.aziot.Keys1 over a private connection.")

    def setUp(self):
        self.key = os.urandom(32)
        created = self.ok("POST", "/key", {"keyId": "pc", "usage": "sign",
                                           "keyBytes": b64(self.key)})
        self.handle = created["keyHandle"]


class PrivateConnectionTest(MonitoredTestCase):
    """The gateway calls keyd over the peer-to-peer connection keyd hands out
    (OpenPrivateConnection), not through dbus-daemon, and opens a new one when keyd is gone."""

    def test_private_connection_is_used_and_reopened(self):
        # The first call went through the bus (it activated keyd) while the gateway asked for a
        # private connection.
        self.assertEqual(self.calls_through_the_bus()[:2],
                         ["OpenPrivateConnection", "ImportKey"])
        poll(lambda: self.sign().status == 200 and self.private_links() == 1,
             "the private connection")
        keyd = self.keyd_pid()
        poll(lambda: f"Opened a private connection for process {self.gateway.pid} (uid 0)."
             in self.keyd_log(), "keyd's log of the connection")
        before = self.calls_through_the_bus()
        self.assertSigns(20)
        self.assertEqual(self.calls_through_the_bus(), before, "calls went through dbus-daemon")

        # keyd goes: the next calls go through the bus (activating a new keyd), then over a new
        # private connection. A request racing with keyd's end may fail (500), as upstream's
        # in-flight requests do when keyd stops; no more than that.
        os.kill(keyd, signal.SIGTERM)
        self.stack.wait_for_name_gone(aziot_stack.KEYS_BUS_NAME)
        failures = []

        def served():
            r = self.sign()
            if r.status != 200:
                self.assertError(r, 500, INTERNAL)
                failures.append(r)
            return r.status == 200
        poll(served, "a new keyd to answer")
        self.assertLessEqual(len(failures), 1)
        self.assertNotEqual(self.keyd_pid(), keyd)
        self.assertIn("Sign", self.calls_through_the_bus()[len(before):])
        poll(lambda: self.sign().status == 200 and self.private_links() == 2,
             "a new private connection")
        before = self.calls_through_the_bus()
        self.assertSigns(20)
        self.assertEqual(self.calls_through_the_bus(), before, "calls went through dbus-daemon")


class NoPrivateConnectionTest(MonitoredTestCase):
    """A service that offers no private connection (here: the bus refuses the gateway
    OpenPrivateConnection) is called over the bus, every time."""

    BUS_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="mandatory">
    <deny send_destination="org.aziot.Keys1" send_interface="org.aziot.Keys1"
          send_member="OpenPrivateConnection"/>
  </policy>
</busconfig>
"""

    def test_calls_go_over_the_bus(self):
        poll(lambda: "org.aziot.Keys1 offers no private connection "
             "(org.freedesktop.DBus.Error.AccessDenied); calling it over the bus."
             in self.gateway_log(), "the gateway to give up the private connection")
        before = self.calls_through_the_bus().count("Sign")
        conn = self.connect()
        for _ in range(20):
            self.assertEqual(self.sign_hmac(self.handle, b"p", conn=conn), hmac256(self.key, b"p"))
        self.assertEqual(self.calls_through_the_bus().count("Sign"), before + 20)
        self.assertEqual(self.private_links(), 0)


if __name__ == "__main__":
    sys.stderr.write(f"key store backend: {BACKEND}\n")
    unittest.main(verbosity=2)
