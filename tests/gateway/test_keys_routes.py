#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""keyd.sock's routes (spec §2.3) against a stand-in for keyd (mock_keyd.py): each request must
become the org.aziot.Keys1 call of dbus/org.aziot.Keys1.xml, with the client's socket as option
"client-socket", and each reply or error the upstream response."""

import base64
import json
import os
import re
import subprocess
import time
import unittest

from gatewaytest import API, BUILD_DIR, SOURCE_DIR, GatewayTestCase, main, request_bytes

MOCK_KEYD_C = os.path.join(BUILD_DIR, "gateway", "measure", "mock-keyd")

V2020 = "api-version=2020-09-01"


def b64(data):
    return base64.b64encode(data).decode()


class KeysRoutes(GatewayTestCase):
    WITH_KEYD = True

    def last_call(self):
        with open(self.calls_path) as f:
            lines = f.read().splitlines()
        return json.loads(lines[-1])

    def call(self, method, target, body=None):
        r = self.request(method, target, body=body)
        self.assertEqual(r.header("content-type") if r.status != 204 else b"application/json",
                         b"application/json")
        return r

    def assertCall(self, method, args, options=None):
        call = self.last_call()
        self.assertEqual(call["method"], method)
        self.assertEqual(call["args"], args)
        self.assertEqual(call["options"], dict({"client-socket": "fd"}, **(options or {})))
        self.assertEqual(call["client_uid"], os.getuid())

    def test_create_key(self):
        r = self.call("POST", f"/key?{API}", {"keyId": "k1", "usage": "sign,derive"})
        self.assertEqual((r.status, r.json()), (200, {"keyHandle": "handle-key-k1"}))
        self.assertCall("CreateKeyIfNotExists", ["k1", ["sign", "derive"]])

    def test_import_key(self):
        r = self.call("POST", f"/key?{V2020}", {"keyId": "k2", "usage": "encrypt", "keyBytes": b64(b"\0\1\2")})
        self.assertEqual((r.status, r.json()), (200, {"keyHandle": "handle-imported-k2"}))
        self.assertCall("ImportKey", ["k2", [0, 1, 2], ["encrypt"]])

    def test_create_key_bad_usage(self):
        for usage, bad in [("sign,", ""), ("verify", "verify"), ("sign, derive", " derive"), ("", "")]:
            r = self.call("POST", f"/key?{API}", {"keyId": "k", "usage": usage})
            self.assertEqual(r.status, 422)
            self.assertTrue(r.json()["message"].startswith(
                f"unknown variant `{bad}`, expected one of `derive`, `encrypt`, `sign` at line 1"), r.body)
        self.assertError(self.call("POST", f"/key?{API}", {"keyId": "k"}), 422,
                         "missing field `usage` at line 1 column 14")

    def test_nul_in_id(self):
        self.assertError(self.call("POST", f"/key?{API}", {"keyId": "a\u0000b", "usage": "sign"}), 400,
                         'parameter "id" has an invalid value')
        self.assertError(self.call("GET", f"/key/a%00b?{API}"), 400, 'parameter "id" has an invalid value')

    def test_delete_key_is_204_without_body(self):
        r = self.call("DELETE", f"/key?{API}", {"keyHandle": "h1"})
        self.assertEqual(r.status, 204)
        self.assertEqual(r.body, b"")
        self.assertIn(r.header("content-length"), (None, b"0"))
        self.assertIsNone(r.header("content-type"))
        self.assertCall("DeleteKey", ["h1"])

    def test_key_pairs(self):
        r = self.call("POST", f"/keypair?{API}", {"keyId": "p1", "preferredAlgorithms": "rsa-2048:*:x"})
        self.assertEqual((r.status, r.json()), (200, {"keyHandle": "handle-pair-p1"}))
        self.assertCall("CreateKeyPairIfNotExists", ["p1", ["rsa-2048", "*", "x"]])
        self.call("POST", f"/keypair?{API}", {"keyId": "p2"})
        self.assertCall("CreateKeyPairIfNotExists", ["p2", []])
        self.call("POST", f"/keypair?{API}", {"keyId": "p3", "preferredAlgorithms": None})
        self.assertCall("CreateKeyPairIfNotExists", ["p3", []])
        self.call("POST", f"/keypair?{API}", {"keyId": "p4", "preferredAlgorithms": ""})
        self.assertCall("CreateKeyPairIfNotExists", ["p4", [""]])

        self.assertEqual(self.call("DELETE", f"/keypair?{API}", {"keyHandle": "hp"}).status, 204)
        self.assertCall("DeleteKeyPair", ["hp"])

    def test_loads_with_encoded_ids(self):
        r = self.call("GET", f"/keypair/a%2Fb%20c?{API}")
        self.assertEqual(r.json(), {"keyHandle": "handle-pair-a/b c"})
        self.assertCall("LoadKeyPair", ["a/b c"])
        r = self.call("GET", f"/key/device-id?{V2020}")
        self.assertEqual(r.json(), {"keyHandle": "handle-key-device-id"})
        self.assertCall("LoadKey", ["device-id"])

    def test_move(self):
        r = self.call("POST", f"/keypair/to-id?{API}", {"from": "from-id"})
        self.assertEqual((r.status, r.body), (204, b""))
        self.assertCall("MoveKeyPair", ["from-id", "to-id"])
        self.assertError(self.call("POST", f"/keypair/same?{API}", {"from": "same"}), 400,
                         "source and destination for move are identical")
        self.assertError(self.call("POST", f"/key/to?{API}", {"from": "x"}), 400, 'invalid type "key"')
        self.assertError(self.call("POST", f"/key/to?{API}"), 400, "missing request body")
        self.assertError(self.call("POST", f"/keypair/to?{API}", {"to": "x"}), 422,
                         "missing field `from` at line 1 column 11")

    def test_parameters(self):
        r = self.call("POST", f"/parameters/algorithm?{API}", {"keyHandle": "hp"})
        self.assertEqual(r.json(), {"value": "ECDSA"})
        self.assertCall("GetKeyPairPublicParameter", ["hp", "algorithm"])
        r = self.call("POST", f"/parameters/ec-point?{API}", {"keyHandle": "hp"})
        self.assertEqual(r.json(), {"value": b64(b"\x02\x01\xff")})
        self.assertCall("GetKeyPairPublicParameter", ["hp", "ec-point"])

    def test_sign(self):
        body = {"keyHandle": "hs", "algorithm": "ECDSA", "parameters": {"digest": b64(b"d" * 32)}}
        r = self.call("POST", f"/sign?{API}", body)
        self.assertEqual(r.json(), {"signature": b64(b"sig:" + b"d" * 32)})
        self.assertCall("Sign", ["hs", "ECDSA", list(b"d" * 32)])
        body = {"parameters": {"message": b64(b"hi")}, "algorithm": "HMAC-SHA256", "keyHandle": "hs"}
        self.assertEqual(self.call("POST", f"/sign?{API}", body).json(), {"signature": b64(b"sig:hi")})
        self.assertCall("Sign", ["hs", "HMAC-SHA256", list(b"hi")])

    def test_encrypt_decrypt(self):
        body = {"keyHandle": "he", "algorithm": "AEAD", "parameters": {"iv": b64(b"i" * 12), "aad": ""},
                "plaintext": b64(b"secret")}
        r = self.call("POST", f"/encrypt?{API}", body)
        self.assertEqual(r.json(), {"ciphertext": b64(b"\x02secret")})
        self.assertCall("Encrypt", ["he", "AEAD", list(b"secret")], {"iv": list(b"i" * 12), "aad": []})

        body = {"keyHandle": "he", "algorithm": "RSA-PKCS1", "plaintext": b64(b"digestinfo")}
        self.assertEqual(self.call("POST", f"/encrypt?{API}", body).status, 200)
        self.assertCall("Encrypt", ["he", "RSA-PKCS1", list(b"digestinfo")])

        body = {"keyHandle": "he", "algorithm": "AEAD", "parameters": {"iv": "", "aad": b64(b"a")},
                "ciphertext": b64(b"\x02abc")}
        self.assertEqual(self.call("POST", f"/decrypt?{API}", body).json(), {"plaintext": b64(b"abc")})
        self.assertCall("Decrypt", ["he", "AEAD", list(b"\x02abc")], {"iv": [], "aad": list(b"a")})

        self.assertError(self.call("POST", f"/encrypt?{API}", {"keyHandle": "he", "algorithm": "AEAD",
                                                              "plaintext": ""}),
                         422, "missing field `parameters` at line 1 column 57")

    def test_derived_keys(self):
        r = self.call("POST", f"/derivedkey?{API}", {"baseKeyHandle": "hb", "derivationData": b64(b"m:1")})
        self.assertEqual(r.json(), {"keyHandle": "handle-derived"})
        self.assertCall("CreateDerivedKey", ["hb", list(b"m:1")])
        r = self.call("POST", f"/derivedkey/export?{API}", {"keyHandle": "hd"})
        self.assertEqual(r.json(), {"key": b64(b"\0" * 32)})
        self.assertCall("ExportDerivedKey", ["hd"])

    def test_error_mapping(self):
        self.assertError(self.call("GET", f"/key/err-invalid?{API}"), 400,
                         'parameter "handle" has an invalid value\ncaused by: invalid handle')
        self.assertError(self.call("GET", f"/key/err-notfound?{API}"), 400,
                         "a parameter has an invalid value")
        self.assertError(self.call("GET", f"/key/err-auth?{API}"), 401,
                         "user 1000 is not authorized to access the key err-auth")
        self.assertError(self.call("GET", f"/key/err-failed?{API}"), 500, "internal error")
        self.assertError(self.call("GET", f"/key/err-args?{API}"), 500, "internal error")
        log = self.log()
        self.assertIn("!!! caused by: org.aziot.Keys1.Error.Failed: the store failed", log)
        self.assertIn("!!! user 1000 is not authorized to access the key err-auth", log)

    def test_client_socket_is_the_client(self):
        # keyd must see the HTTP client, not the gateway: ask as another user.
        os.chmod(self.socket_path, 0o666)
        script = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(5); "
                  "s.connect(sys.argv[1]); s.sendall(b'GET /key/by-nobody?%s HTTP/1.1\\r\\n\\r\\n'); "
                  "print(s.recv(200).split(b'\\r\\n')[0].decode())" % API)
        out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                              "/usr/bin/python3", "-c", script, self.socket_path],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.stdout.strip(), "HTTP/1.1 200 OK", out.stderr)
        call = self.last_call()
        self.assertEqual(call["args"], ["by-nobody"])
        self.assertNotEqual(call["client_uid"], os.getuid())

    def test_keep_alive_through_the_bus(self):
        c = self.connect()
        for i in range(20):
            r = self.request("GET", f"/key/k{i}?{API}", conn=c)
            self.assertEqual(r.json(), {"keyHandle": f"handle-key-k{i}"})
        # The stand-in has no OpenPrivateConnection: everything went over the bus.
        self.assertIn("org.aziot.Keys1 offers no private connection", self.log())


class PrivateConnection(GatewayTestCase):
    """A service offering OpenPrivateConnection is called over it once it has handed one out, and
    over the bus again when it is gone. The peer is gateway/measure/mock-keyd (Sign only)."""

    SIGN = {"keyHandle": "h", "algorithm": "HMAC-SHA256", "parameters": {"message": "aGk="}}

    @classmethod
    def setUpClass(cls):
        if not os.access(MOCK_KEYD_C, os.X_OK):
            raise unittest.SkipTest(f"{MOCK_KEYD_C} not built")
        super().setUpClass()

    def start_mock(self):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus_address)
        p = subprocess.Popen([MOCK_KEYD_C, "--verbose"], env=env, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        self.assertEqual(p.stdout.readline().strip(), "ready")
        return p

    def sign(self, conn):
        r = self.request("POST", f"/sign?{API}", body=self.SIGN, conn=conn)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(len(base64.b64decode(r.json()["signature"])), 32)

    def test_private_connection(self):
        mock = self.start_mock()
        c = self.connect()
        self.sign(c)
        self.assertEqual(mock.stdout.readline().strip(), "sign bus")
        for _ in range(20):
            self.sign(c)
        seen = [mock.stdout.readline().strip() for _ in range(20)]
        self.assertIn("sign private", seen)
        self.assertEqual(seen[-1], "sign private")

        # The service goes (and its private connection with it); the next one is reached over
        # the bus, then privately again.
        mock.terminate()
        mock.wait(5)
        mock.stdout.close()
        time.sleep(0.2)
        mock = self.start_mock()
        for _ in range(10):
            self.sign(c)
        seen = [mock.stdout.readline().strip() for _ in range(10)]
        self.assertEqual(seen[0], "sign bus")
        self.assertEqual(seen[-1], "sign private")
        mock.terminate()
        mock.wait(5)
        mock.stdout.close()
        self.assertIn("Calling org.aziot.Keys1 over a private connection.", self.log())


class Interface(unittest.TestCase):
    def test_openapi_document_lists_every_route(self):
        """interfaces/keys.yaml and the route table of gateway/keys-routes.c say the same."""
        with open(os.path.join(SOURCE_DIR, "gateway", "keys-routes.c")) as f:
            table = re.findall(r'\{ HTTP_(\w+), "([^"]+)", ALL,', f.read())
        # The document keeps one layout: paths at two spaces, their methods at four.
        documented, path = set(), None
        with open(os.path.join(SOURCE_DIR, "interfaces", "keys.yaml")) as f:
            for line in f:
                m = re.match(r"^  '(/[^']*)':$", line)
                if m:
                    path = re.sub(r"\{[^}]+\}", "*", m.group(1))
                m = re.match(r"^    (get|post|put|delete):$", line)
                if m and path:
                    documented.add((m.group(1).upper(), path))
                if line.startswith("components:"):
                    break
        self.assertEqual(len(table), 14)
        self.assertEqual(set(table), documented)


if __name__ == "__main__":
    main()
