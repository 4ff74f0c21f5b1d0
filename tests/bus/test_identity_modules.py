#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-identityd's module identities and local identities over D-Bus: the real daemon on a
private system bus (dbus/org.aziot.Identity1.conf, real polkitd), the real aziot-keyd holding the
device key and the master key, the real aziot-certd issuing local identities from a local CA, and
the mock IoT Hub (tests/cloud/mock_hub.py: HTTPS with its own CA, SAS tokens checked as the real
Hub checks them).

Results are checked independently of identityd: module keys against HMAC-SHA256 of the master key
computed here (cloud-protocols.md §2.3), key handles by signing a module SAS token with keyd and
having the mock Hub verify it, backups at the path of spec §4.7 computed here, certificates with
python-cryptography.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_IDENTITYD, AZIOT_KEYD,
AZIOT_CERTD, AZIOT_PROVIDER_DIR.
"""

import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
import unittest
import urllib.parse

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "lib"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cloud"))
import aziot_harness  # noqa: E402
import mock_hub  # noqa: E402
from aziot_identity_suite import CALL_TIMEOUT, CERTS_NAME, ERR, ID_IFACE, ID_NAME, ID_PATH, \
    KEYS_IFACE, KEYS_NAME, KEYS_PATH, IdentityBusTestCase, LocalIdentityChecks, keyd_sign, \
    local_ca_certificate  # noqa: E402
from mock_cloud import module_keys  # noqa: E402

import dbus  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

START_TIMEOUT = 30
DEVICE = "dev1"
HOSTNAME = "testhost"
DOMAIN = "example.com"

IN_SIGNATURES = {
    "GetModuleIdentity": "ssa{sv}", "CreateModuleIdentity": "ssa{sv}",
    "UpdateModuleIdentity": "sa{sv}", "DeleteModuleIdentity": "sa{sv}",
    "ListModuleIdentities": "a{sv}", "GetIdentity": "a{sv}", "GetDeviceIdentity": "a{sv}",
}


CallError = aziot_harness.CallError


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def plain(value):
    """dbus-python values as plain Python ones."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath)):
        return str(value)
    if isinstance(value, (dbus.Int32, dbus.UInt32, dbus.Int64, dbus.UInt64, dbus.Byte)):
        return int(value)
    return value


wait_until = aziot_harness.wait_until


class IdentityTestCase(IdentityBusTestCase, LocalIdentityChecks):
    """One stack, mock Hub, keyd and certd per class; a fresh identityd home for every test."""

    RUN_DIR_PREFIX = "aziot-identity-"
    PRELOAD_MASTER_KEY = True
    # Nested mode (spec §4.11): IoT Hub is "myhub.azure-devices.net" in SAS audiences and
    # identities, and is reached through local_gateway_hostname (the mock's address).
    NESTED = False

    @classmethod
    def start_class(cls):
        cls.hub = mock_hub.MockHub(os.path.join(cls.run_dir, "hub"),
                                   hostname="myhub.azure-devices.net" if cls.NESTED else None)
        cls.mocks = (cls.hub,)
        cls.hub.start()
        cls.gateway = f"localhost:{cls.hub.port}" if cls.NESTED else cls.hub.hostname
        cls.device = cls.hub.registry.add_device(DEVICE)
        cls.master_key = os.urandom(32)
        cls.ca_key = ec.generate_private_key(ec.SECP256R1())
        keys = {"device-id": base64.b64decode(cls.device.primary_key),
                "local-ca": cls.ca_key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())}
        if cls.PRELOAD_MASTER_KEY:
            keys["aziot_identityd_master_id"] = cls.master_key
        paths = cls.write_secrets(keys)
        cls.stack.start()
        cls.conn = cls.stack.bus()
        cls.start_keyd(paths)
        cls.start_certd()

    @classmethod
    def start_certd(cls):
        """certd issuing the local identities' ids with a local CA made here (its key preloaded in
        keyd, its certificate imported)."""
        cls.run_certd('[cert_issuance.local_ca]\ncert = "local-ca"\npk = "local-ca"\n\n'
                      + "".join(f'[cert_issuance.{i}]\nmethod = "local_ca"\n\n'
                                for i in ("loc", "locsrv", "adhoc", "adhoc2")))
        cls.ca_cert = local_ca_certificate(cls.ca_key)
        cls.conn.call_blocking(CERTS_NAME, "/org/aziot/Certificates1", CERTS_NAME,
                               "ImportCertificate", "ssa{sv}",
                               ["local-ca",
                                cls.ca_cert.public_bytes(serialization.Encoding.PEM).decode(), {}],
                               timeout=CALL_TIMEOUT)

    def setUp(self):
        super().setUp()
        with self.hub.registry.lock:
            self.device.modules.clear()
        self.hub.put_replaces = False

    # -- identityd ------------------------------------------------------------------------------

    def write_config(self, principals=(), prefer_cache=False, source="manual"):
        lines = [f'hostname = "{HOSTNAME}"', f'homedir = "{self.home}"',
                 f"prefer_module_identity_cache = {str(prefer_cache).lower()}",
                 "cloud_retries = 0", "", "[provisioning]", f'source = "{source}"']
        if source == "manual":
            if self.NESTED:
                lines.append(f'local_gateway_hostname = "{self.gateway}"')
            lines += [f'iothub_hostname = "{self.hub.hostname}"', f'device_id = "{DEVICE}"',
                      "[provisioning.authentication]", 'method = "sas"',
                      'device_id_pk = "device-id"']
        lines += ["", "[localid]", f'domain = "{DOMAIN}"', ""]
        for i, (name, idtypes, *rest) in enumerate(principals):
            lines += ["[[principal]]", f"uid = {2000 + i}", f'name = "{name}"',
                      "idtype = [" + ", ".join(f'"{t}"' for t in idtypes) + "]"]
            if rest:
                lines.append(f'localid = {{ type = "x509", attributes = "{rest[0]}" }}')
            lines.append("")
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def prev_state_mtime(self):
        try:
            return os.stat(os.path.join(self.home, "prev_state")).st_mtime_ns
        except FileNotFoundError:
            return None

    def start_identityd(self, principals=(), prefer_cache=False, source="manual",
                        wait_reconciled=True, write=True):
        if "identityd" in self.stack.processes:
            self.assertEqual(self.stack.stop_process("identityd"), 0)
        if write:
            self.write_config(principals, prefer_cache, source)
        before = self.prev_state_mtime()
        self.run_identityd({"SSL_CERT_FILE": self.hub.server_ca_path}, timeout=START_TIMEOUT)
        if wait_reconciled:
            # prev_state is written when the reconciliation has ended well.
            wait_until(lambda: self.prev_state_mtime() != before, START_TIMEOUT,
                       "the reconciliation\n" + self.identityd.log()[-3000:])
        return self.identityd

    def call(self, method, *args):
        try:
            return plain(self.conn.call_blocking(ID_NAME, ID_PATH, ID_IFACE, method,
                                                 IN_SIGNATURES[method], list(args),
                                                 timeout=CALL_TIMEOUT))
        except dbus.DBusException as e:
            raise CallError(e.get_dbus_name(), e.get_dbus_message()) from None

    def assertCallError(self, name, message, method, *args):
        with self.assertRaises(CallError) as cm:
            self.call(method, *args)
        self.assertEqual(cm.exception.name, ERR + name, cm.exception.message)
        if message is not None:
            self.assertEqual(cm.exception.message, message)
        return cm.exception

    # -- what to check against ------------------------------------------------------------------

    def hub_module(self, module_id):
        return self.hub.registry.module(DEVICE, module_id)

    def assertDerivedKeys(self, module_id):
        mod = self.hub_module(module_id)
        self.assertIsNotNone(mod, f"IoT Hub has no module {module_id}")
        self.assertEqual(mod.keys, module_keys(self.master_key, module_id, mod.generation_id))

    def backup_path(self, module_id):
        alnum = "".join(c for c in module_id if c.isascii() and c.isalnum())
        return os.path.join(self.home, "modules",
                            f"{sha256_hex(self.hub.hostname)}-{sha256_hex(DEVICE)}",
                            f"{alnum}-{sha256_hex(module_id)}")

    def backup(self, module_id):
        try:
            with open(self.backup_path(module_id)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def module_token(self, key_handle, module_id):
        """A module SAS token made as an agent makes it (spec §2.2), signed by keyd."""
        sr = urllib.parse.quote(f"{self.hub.hostname}/devices/{DEVICE}/modules/{module_id}",
                                safe="")
        se = str(int(time.time()) + 600)
        sig = keyd_sign(self.conn, key_handle, f"{sr}\n{se}".encode())
        return (f"SharedAccessSignature sr={sr}&sig="
                f"{urllib.parse.quote(base64.b64encode(sig).decode(), safe='')}&se={se}")

    def assertKeyHandleWorks(self, identity):
        res = self.hub.verify_token(self.module_token(identity["keyHandle"],
                                                      identity["moduleId"]),
                                    DEVICE, identity["moduleId"])
        self.assertTrue(res, res.reason)

    def requests(self, route=None):
        return self.hub.http_requests(route)


class ReconciliationTest(IdentityTestCase):
    """Startup reconciliation (spec §4.7), backups, prev_state."""

    PRINCIPALS = [("mod1", ["module"]), ("mod2", ["module", "local"]), ("loc", ["local"]),
                  ("dev", ["device"])]

    def test_startup_creates_modules_of_principals(self):
        self.start_identityd(self.PRINCIPALS)
        self.assertEqual(sorted(self.device.modules), ["mod1", "mod2"])
        for m in ("mod1", "mod2"):
            self.assertDerivedKeys(m)
            self.assertEqual(self.hub_module(m).updates, 1)
        # On the wire: list, then per module a PUT without If-Match and one with it.
        routes = [(r.route, r.method, r.headers.get("if-match")) for r in self.requests()]
        self.assertEqual(routes[0], ("list-modules", "GET", None))
        self.assertEqual(sorted(routes[1:], key=str),
                         sorted([("put-module", "PUT", None), ("put-module", "PUT", "*")] * 2,
                                key=str))
        for r in self.requests():
            self.assertEqual(r.api_version, "2017-11-08-preview")
            self.assertEqual(r.auth, "sas")
            self.assertEqual(r.status // 100, 2, r)
            self.assertEqual(urllib.parse.unquote(r.sas["sr"]),
                             f"{self.hub.hostname}/devices/{DEVICE}".lower())
            self.assertNotIn("skn", r.sas)
            self.assertNotIn("user-agent", r.headers)
        creates = [json.loads(r.body) for r in self.requests("put-module")
                   if "if-match" not in r.headers]
        self.assertIn({"moduleId": "mod1", "deviceId": DEVICE}, creates)
        updates = [json.loads(r.body) for r in self.requests("put-module")
                   if "if-match" in r.headers]
        for body in updates:
            self.assertEqual(set(body), {"moduleId", "deviceId", "authentication"})
            self.assertEqual(body["authentication"]["type"], "sas")
        # Backups where upstream keeps them, without keys.
        for m in ("mod1", "mod2"):
            self.assertEqual(self.backup(m), {"moduleId": m, "deviceId": DEVICE,
                                              "generationId": self.hub_module(m).generation_id})
        self.assertEqual(os.stat(self.backup_path("mod1")).st_mode & 0o777, 0o600)
        with open(os.path.join(self.home, "prev_state")) as f:
            prev = f.read()
        self.assertIn('name = "mod1"', prev)
        self.assertIn('name = "mod2"', prev)
        self.assertNotIn('name = "loc"', prev)
        with open(os.path.join(self.home, "device_info")) as f:
            info = f.read()
        self.assertIn(f'hub_name = "{self.hub.hostname}"', info)
        self.assertIn(f'device_id = "{DEVICE}"', info)

    def test_restart_keeps_modules(self):
        self.start_identityd(self.PRINCIPALS)
        gens = {m: self.hub_module(m).generation_id for m in ("mod1", "mod2")}
        self.hub.clear_log()
        self.start_identityd(self.PRINCIPALS)
        self.assertEqual([r.route for r in self.requests()], ["list-modules"])
        self.assertEqual({m: self.hub_module(m).generation_id for m in gens}, gens)

    def test_removed_principal_deleted_foreign_untouched(self):
        foreign = self.hub.registry.add_module(DEVICE, "edgeHub", managed_by="IotEdge")
        self.start_identityd(self.PRINCIPALS)
        gen1 = self.hub_module("mod1").generation_id
        self.hub.clear_log()
        self.start_identityd([("mod1", ["module"])])
        self.assertEqual(sorted(self.device.modules), ["edgeHub", "mod1"])
        self.assertIs(self.hub_module("edgeHub"), foreign)
        self.assertEqual(foreign.updates, 0)
        self.assertEqual(self.hub_module("mod1").generation_id, gen1)
        delete, = self.requests("delete-module")
        self.assertEqual(delete.params["m"], "mod2")
        self.assertEqual(delete.headers.get("if-match"), "*")
        self.assertIsNone(self.backup("mod2"))
        self.assertIsNotNone(self.backup("mod1"))

    def test_lost_prev_state_recreates(self):
        self.start_identityd(self.PRINCIPALS)
        gen1 = self.hub_module("mod1").generation_id
        os.unlink(os.path.join(self.home, "prev_state"))
        self.start_identityd(self.PRINCIPALS)
        self.assertNotEqual(self.hub_module("mod1").generation_id, gen1)
        self.assertDerivedKeys("mod1")
        self.assertEqual(self.backup("mod1")["generationId"],
                         self.hub_module("mod1").generation_id)

    def test_principal_already_in_hub_is_recreated(self):
        """A module of that name that this configuration did not create has keys identityd
        cannot derive: deleted and created again."""
        stranger = self.hub.registry.add_module(DEVICE, "mod1")
        self.start_identityd([("mod1", ["module"])])
        self.assertIsNot(self.hub_module("mod1"), stranger)
        self.assertNotEqual(self.hub_module("mod1").generation_id, stranger.generation_id)
        self.assertDerivedKeys("mod1")
        self.assertEqual([r.route for r in self.requests()],
                         ["list-modules", "delete-module", "put-module", "put-module"])

    def test_upstream_prev_state(self):
        """prev_state and device_info as upstream writes them (its whole configuration): the
        modules it kept are kept."""
        self.start_identityd(self.PRINCIPALS)
        gen1 = self.hub_module("mod1").generation_id
        with open(os.path.join(self.home, "prev_state"), "w") as f:
            f.write(f'hostname = "{HOSTNAME}"\nhomedir = "{self.home}"\n'
                    '[provisioning]\nsource = "manual"\n'
                    f'iothub_hostname = "{self.hub.hostname}"\ndevice_id = "{DEVICE}"\n'
                    '[provisioning.authentication]\nmethod = "sas"\n'
                    'device_id_pk = "device-id"\n'
                    '[[principal]]\nuid = 2000\nname = "mod1"\nidtype = ["module"]\n')
        with open(os.path.join(self.home, "device_info"), "w") as f:
            f.write(f'hub_name = "{self.hub.hostname}"\n'
                    f'local_gateway_hostname = "{self.hub.hostname}"\n'
                    f'device_id = "{DEVICE}"\n')
        self.start_identityd(self.PRINCIPALS)
        self.assertEqual(self.hub_module("mod1").generation_id, gen1)
        # mod2 was not in upstream's prev_state: created again.
        self.assertDerivedKeys("mod2")

    def test_other_device_backups_wiped(self):
        stray = os.path.join(self.home, "modules", "0" * 64 + "-" + "1" * 64)
        os.makedirs(stray)
        with open(os.path.join(stray, "x"), "w") as f:
            f.write("{}")
        self.start_identityd([("mod1", ["module"])])
        self.assertFalse(os.path.exists(stray))
        self.assertIsNotNone(self.backup("mod1"))

    def test_not_provisioned(self):
        self.start_identityd([], source="none", wait_reconciled=False)
        wait_until(lambda: self.state() == "unprovisioned", START_TIMEOUT, "unprovisioned")
        for method, args in (("GetModuleIdentity", ("aziot", "mod1", {})),
                             ("ListModuleIdentities", ({},)),
                             ("CreateModuleIdentity", ("aziot", "m", {})),
                             ("UpdateModuleIdentity", ("m", {})),
                             ("DeleteModuleIdentity", ("m", {}))):
            self.assertCallError("NotFound", "device identity not found", method, *args)
        self.assertEqual(self.requests(), [])


class ModuleMethodsTest(IdentityTestCase):
    """The D-Bus methods on IoT Hub module identities (spec §4.3, §4.8)."""

    def setUp(self):
        super().setUp()
        self.start_identityd([("mod1", ["module"]), ("mod2", ["module"])])
        self.hub.clear_log()

    def assertIdentity(self, ident, module_id, with_auth=True):
        expected = {"type": "aziot", "hubName": self.hub.hostname,
                    "gatewayHost": self.gateway, "deviceId": DEVICE,
                    "moduleId": module_id,
                    "genId": self.hub_module(module_id).generation_id}
        if with_auth:
            self.assertEqual(ident.pop("authType"), "sas")
            self.assertTrue(ident.pop("keyHandle"))
        self.assertEqual(ident, expected)

    def test_get(self):
        ident = self.call("GetModuleIdentity", "aziot", "mod1", {})
        self.assertKeyHandleWorks(ident)
        self.assertIdentity(ident, "mod1")
        get, = self.requests()
        self.assertEqual((get.route, get.params["m"]), ("get-module", "mod1"))

    def test_get_unknown(self):
        e = self.assertCallError("CloudError", None, "GetModuleIdentity", "aziot", "nope", {})
        self.assertEqual(e.message, "Hub client error\ncaused by: module nope not found")

    def test_list(self):
        self.hub.registry.add_module(DEVICE, "edgeAgent", managed_by="IotEdge")
        idents = self.call("ListModuleIdentities", {})
        by_id = {i["moduleId"]: i for i in idents}
        self.assertEqual(sorted(by_id), ["edgeAgent", "mod1", "mod2"])
        for m, ident in by_id.items():
            self.assertIdentity(ident, m, with_auth=False)
        # Listing refreshes the backups of every module listed.
        self.assertEqual(self.backup("edgeAgent"),
                         {"moduleId": "edgeAgent", "deviceId": DEVICE, "managedBy": "IotEdge",
                          "generationId": self.hub_module("edgeAgent").generation_id})

    def test_create_update_delete(self):
        ident = self.call("CreateModuleIdentity", "aziot", "m3", {})
        self.assertKeyHandleWorks(ident)
        self.assertIdentity(ident, "m3")
        self.assertDerivedKeys("m3")
        gen = self.hub_module("m3").generation_id
        self.assertEqual(self.backup("m3")["generationId"], gen)

        ident = self.call("UpdateModuleIdentity", "m3", {})
        self.assertIdentity(ident, "m3")
        self.assertEqual(self.hub_module("m3").generation_id, gen)
        self.assertEqual(self.hub_module("m3").updates, 2)
        self.assertDerivedKeys("m3")
        self.assertEqual([(r.route, r.method) for r in self.requests()][-2:],
                         [("get-module", "GET"), ("put-module", "PUT")])

        self.assertEqual(self.call("DeleteModuleIdentity", "m3", {}), None)
        self.assertIsNone(self.hub_module("m3"))
        self.assertIsNone(self.backup("m3"))
        self.assertEqual(self.requests("delete-module")[-1].headers.get("if-match"), "*")

        e = self.assertCallError("CloudError", None, "DeleteModuleIdentity", "m3", {})
        self.assertTrue(e.message.startswith("Hub client error\ncaused by: "
                                             "ErrorCode:ModuleNotFound;"), e.message)
        e = self.assertCallError("CloudError", None, "UpdateModuleIdentity", "m3", {})
        self.assertIn("ErrorCode:ModuleNotFound;", e.message)

    def test_create_existing(self):
        e = self.assertCallError("CloudError", None, "CreateModuleIdentity", "aziot", "mod1", {})
        self.assertIn("ErrorCode:ModuleAlreadyExistsOnDevice;", e.message)

    def test_update_rotates_keys_written_by_others(self):
        mod = self.hub_module("mod1")
        mod.primary_key, mod.secondary_key = mock_hub.random_key(), mock_hub.random_key()
        self.call("UpdateModuleIdentity", "mod1", {})
        self.assertDerivedKeys("mod1")

    def test_path_tricks(self):
        """Ids go into the path encoded (cloud-protocols.md §4.1, and "/" and dot segments
        too): no id names another resource."""
        for module_id, encoded, ok in (("a/b", "a%2Fb", False), ("..", "%2E%2E", True),
                                       ("x?y#z", "x%3Fy%23z", True)):
            self.hub.clear_log()
            if ok:
                self.assertIdentity(self.call("CreateModuleIdentity", "aziot", module_id, {}),
                                    module_id)
                self.assertDerivedKeys(module_id)
            else:
                self.assertCallError("CloudError", None, "CreateModuleIdentity", "aziot",
                                     module_id, {})
            for req in self.requests():
                self.assertEqual(req.path.split("?")[0], f"/devices/{DEVICE}/modules/{encoded}")
        self.assertEqual(sorted(self.device.modules), ["..", "mod1", "mod2", "x?y#z"])

    def test_hub_errors(self):
        self.hub.fail(401, message="nope", code="IotHubUnauthorizedAccess")
        e = self.assertCallError("CloudError", None, "CreateModuleIdentity", "aziot", "m4", {})
        self.assertEqual(e.message, "Hub client error\ncaused by: "
                                    "ErrorCode:IotHubUnauthorizedAccess;nope")
        # A body that is not JSON, an empty one.
        self.hub.fail(400, body=b"<html>")
        e = self.assertCallError("CloudError", None, "DeleteModuleIdentity", "mod1", {})
        self.assertTrue(e.message.startswith("Hub client error\ncaused by: "), e.message)
        self.hub.fail(403, body=b"")
        e = self.assertCallError("CloudError", None, "DeleteModuleIdentity", "mod1", {})
        self.assertEqual(e.message, "Hub client error\ncaused by: HTTP error 403")
        self.hub.clear_faults()
        self.assertIsNotNone(self.hub_module("mod1"))

    def test_unexpected_status(self):
        """Only 200 is accepted for PUT and GET, only 204 for DELETE."""
        self.hub.fail(201, body={"moduleId": "m5", "deviceId": DEVICE, "generationId": "1"})
        e = self.assertCallError("CloudError", None, "CreateModuleIdentity", "aziot", "m5", {})
        self.assertEqual(e.message, "Hub client error\ncaused by: Expected one of [200], got 201")
        self.hub.fail(200, body={})
        e = self.assertCallError("CloudError", None, "DeleteModuleIdentity", "mod1", {})
        self.assertEqual(e.message, "Hub client error\ncaused by: Expected one of [204], got 200")

    def test_module_without_generation_id(self):
        self.hub.fail(200, count=1, body={"moduleId": "mod1", "deviceId": DEVICE})
        self.assertCallError("NotFound", "module identity not found", "GetModuleIdentity",
                             "aziot", "mod1", {})


class NestedModuleMethodsTest(ModuleMethodsTest):
    """The same through a parent: requests go to local_gateway_hostname, SAS tokens and backups
    still name the hub."""

    NESTED = True

    def test_requests_through_parent(self):
        self.call("GetModuleIdentity", "aziot", "mod1", {})
        req, = self.requests()
        self.assertEqual(req.headers["host"], self.gateway)
        self.assertEqual(urllib.parse.unquote(req.sas["sr"]),
                         f"myhub.azure-devices.net/devices/{DEVICE}")
        self.assertIsNotNone(self.backup("mod1"))


class OfflineTest(IdentityTestCase):
    """The backups when IoT Hub cannot be reached or fails (spec §4.7)."""

    def setUp(self):
        super().setUp()
        self.start_identityd([("mod1", ["module"]), ("mod2", ["module"])])
        self.online = self.call("GetModuleIdentity", "aziot", "mod1", {})
        self.hub.clear_log()

    def test_get_and_list_while_down(self):
        self.hub.down()
        ident = self.call("GetModuleIdentity", "aziot", "mod1", {})
        self.assertEqual(ident["genId"], self.online["genId"])
        self.assertKeyHandleWorks(ident)
        idents = self.call("ListModuleIdentities", {})
        self.assertEqual(sorted((i["moduleId"], i["genId"]) for i in idents),
                         sorted((m, self.hub_module(m).generation_id) for m in ("mod1", "mod2")))
        self.assertCallError("CloudError", "Hub client error\ncaused by: module nope not found",
                             "GetModuleIdentity", "aziot", "nope", {})
        # What changes IoT Hub needs it.
        self.assertCallError("CloudError", None, "CreateModuleIdentity", "aziot", "m3", {})

    def test_any_hub_failure_falls_back(self):
        for status, network in ((500, False), (404, True), (404, False)):
            self.hub.fail(status, network_error=network)
            ident = self.call("GetModuleIdentity", "aziot", "mod1", {})
            self.assertEqual(ident["genId"], self.online["genId"])

    def test_restart_offline(self):
        """A restart while IoT Hub is out of reach: the reconciliation fails, the backups
        answer."""
        self.hub.down()
        self.start_identityd([("mod1", ["module"]), ("mod2", ["module"])],
                             wait_reconciled=False)
        wait_until(lambda: self.state() == "offline", START_TIMEOUT, "the offline state")
        ident = self.call("GetModuleIdentity", "aziot", "mod2", {})
        self.assertEqual(ident["genId"], self.hub_module("mod2").generation_id)
        self.assertKeyHandleWorks(ident)

    def test_stop_with_calls_in_flight(self):
        """SIGTERM while IoT Hub has not answered (a call, then a reconciliation): identityd
        drops them and exits cleanly."""
        self.hub.delay = 30
        client = subprocess.Popen(
            ["busctl", "--system", "call", ID_NAME, ID_PATH, ID_IFACE, "GetModuleIdentity",
             "ssa{sv}", "aziot", "mod1", "0"],
            env=self.stack.child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The mock logs a request once it has answered: identityd's log says it was sent.
        wait_until(lambda: "IoT Hub: GET https://" in self.identityd.log().split(
            "GetModuleIdentity")[-1] or "/modules/mod1?" in self.identityd.log(),
            CALL_TIMEOUT, "the request")
        self.assertEqual(self.stack.stop_process("identityd"), 0)
        out, err = client.communicate(timeout=CALL_TIMEOUT)
        self.assertNotEqual(client.returncode, 0, out)
        self.start_identityd([("mod1", ["module"])], wait_reconciled=False)
        wait_until(lambda: "/modules?api-version" in self.identityd.log(), CALL_TIMEOUT,
                   "the reconciliation's list")
        self.assertEqual(self.stack.stop_process("identityd"), 0)

    def test_prefer_cache(self):
        self.start_identityd([("mod1", ["module"]), ("mod2", ["module"])], prefer_cache=True)
        self.hub.clear_log()
        ident = self.call("GetModuleIdentity", "aziot", "mod1", {})
        self.assertEqual(ident["genId"], self.online["genId"])
        self.assertEqual(len(self.call("ListModuleIdentities", {})), 2)
        self.assertEqual(self.requests(), [])
        # Without a backup IoT Hub is asked (and its answer kept).
        self.hub.registry.add_module(DEVICE, "other")
        self.assertEqual(self.call("GetModuleIdentity", "aziot", "other", {})["genId"],
                         self.hub_module("other").generation_id)
        self.assertEqual([r.route for r in self.requests()], ["get-module"])
        self.assertIsNotNone(self.backup("other"))


class GeneratedMasterKeyTest(IdentityTestCase):
    """No master key yet: identityd has keyd create it (usage derive and sign, spec §4.8)."""

    PRELOAD_MASTER_KEY = False

    def keyd(self, method, signature, *args):
        return self.conn.call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE, method, signature,
                                       list(args), timeout=CALL_TIMEOUT, byte_arrays=True)

    def test_master_key_created(self):
        self.start_identityd([("mod1", ["module"])])
        ident = self.call("GetModuleIdentity", "aziot", "mod1", {})
        self.assertKeyHandleWorks(ident)
        # The keys in IoT Hub are keyd's derivation of the master key it now holds.
        master = str(self.keyd("LoadKey", "sa{sv}", "aziot_identityd_master_id", {}))
        gen = self.hub_module("mod1").generation_id
        for which, key in zip(("primary", "secondary"), self.hub_module("mod1").keys):
            derived = str(self.keyd("CreateDerivedKey", "saya{sv}", master,
                                    dbus.ByteArray(f"mod1:{gen}:{which}".encode()), {}))
            self.assertEqual(base64.b64encode(bytes(self.keyd("ExportDerivedKey", "sa{sv}",
                                                              derived, {}))).decode(), key)


class LocalIdentityTest(IdentityTestCase):
    """Local identities (spec §4.9), issued by certd's local CA."""

    def setUp(self):
        super().setUp()
        self.start_identityd([("loc", ["local"]), ("locsrv", ["local"], "server"),
                              ("mod1", ["module"])])

    def check_local(self, ident, module_id, server):
        self.assertEqual(set(ident), {"type", "moduleId", "privateKey", "certificate",
                                      "expiration"})
        self.assertEqual((ident["type"], ident["moduleId"]), ("local", module_id))
        key, leaf = self.assertIssuedByLocalCa(ident["privateKey"], ident["certificate"],
                                               f"{module_id}.{HOSTNAME}.{DOMAIN}", server)
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
        self.assertTrue(ku.critical)
        self.assertTrue(ku.value.digital_signature and ku.value.content_commitment and
                        ku.value.key_encipherment)
        not_after = leaf.not_valid_after  # naive, UTC
        self.assertEqual(ident["expiration"],
                         not_after.strftime("%Y-%m-%dT%H:%M:%S") + "+00:00")
        self.assertEqual(datetime.datetime.fromisoformat(ident["expiration"]),
                         not_after.replace(tzinfo=datetime.timezone.utc))
        return key

    def test_get_local_principal(self):
        key1 = self.check_local(self.call("GetModuleIdentity", "local", "loc", {}), "loc",
                                server=False)
        # A new key on every call: nothing is cached.
        key2 = self.check_local(self.call("GetModuleIdentity", "local", "loc", {}), "loc",
                                server=False)
        self.assertNotEqual(key1.private_numbers(), key2.private_numbers())
        self.check_local(self.call("GetModuleIdentity", "local", "locsrv", {}), "locsrv",
                         server=True)

    def test_rules_of_ids(self):
        self.assertCallError("InvalidParameter",
                             'parameter "moduleId" has an invalid value\n'
                             "caused by: local identity for adhoc doesn't exist",
                             "GetModuleIdentity", "local", "adhoc", {})
        # A module principal is no local principal.
        self.assertCallError("InvalidParameter",
                             'parameter "moduleId" has an invalid value\n'
                             "caused by: local identity for mod1 doesn't exist",
                             "GetModuleIdentity", "local", "mod1", {})
        self.assertCallError("InvalidParameter",
                             'parameter "moduleId" has an invalid value\n'
                             "caused by: local identity for loc already exists",
                             "CreateModuleIdentity", "local", "loc", {})

    def test_create_local(self):
        self.check_local(self.call("CreateModuleIdentity", "local", "adhoc", {}), "adhoc",
                         server=False)

    def test_create_local_server(self):
        ident = self.call("CreateModuleIdentity", "local", "adhoc2",
                          {"attributes": dbus.String("server", variant_level=1)})
        self.check_local(ident, "adhoc2", server=True)
        self.assertCallError("InvalidParameter", None, "CreateModuleIdentity", "local", "adhoc2",
                             {"attributes": dbus.String("both", variant_level=1)})
        # An option only local identities take.
        with self.assertRaises(CallError) as cm:
            self.call("CreateModuleIdentity", "aziot", "adhoc3",
                      {"attributes": dbus.String("server", variant_level=1)})
        self.assertEqual(cm.exception.name, "org.freedesktop.DBus.Error.InvalidArgs")

    def test_certd_refuses(self):
        """No cert_issuance for the id: certd cannot issue, identityd says no more than
        upstream."""
        self.assertCallError("Failed", "internal error", "CreateModuleIdentity", "local",
                             "not-configured", {})


if __name__ == "__main__":
    unittest.main(verbosity=2)
