#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-identityd's provisioning over D-Bus: the real daemon on a private system bus with our
policy and the real polkitd, next to the real keyd (the device key, the master key), certd (a
local CA for X.509 identities, the DPS trust bundle) and tpmd on swtpm, against the strict mock
DPS and IoT Hub (tests/cloud/mock_dps.py, mock_hub.py; HTTPS with their own CA, given to identityd
as its trust store through SSL_CERT_FILE).

What identityd says is checked against what the mocks saw and decide: the DPS request log (SAS
with skn=registration, TLS client certificates, the TPM challenge), the device the DPS created in
the mock Hub, and the mock Hub's verdict on a SAS token signed with the key handle identityd
hands out.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_IDENTITYD, AZIOT_KEYD,
AZIOT_CERTD, AZIOT_TPMD, AZIOT_PROVIDER_DIR.
"""

import base64
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
import aziot_tpm  # noqa: E402
import mock_dps  # noqa: E402
import mock_hub  # noqa: E402
from aziot_identity_suite import CALL_TIMEOUT, CERTS_NAME, ERR, ID_IFACE, ID_NAME, ID_PATH, \
    KEYS_IFACE, KEYS_NAME, KEYS_PATH, PROVIDER_DIR, TPMD, IdentityBusTestCase, \
    keyd_sign  # noqa: E402
from aziot_proxy import ConnectProxy  # noqa: E402

import dbus  # noqa: E402
from cryptography import x509  # noqa: E402

TPM_NAME = "org.aziot.Tpm1"
ID_GROUP = "aziotid"
USER_A, USER_B = aziot_harness.TEST_USERS
PYTHON = "/usr/bin/python3"
PROVISION_TIMEOUT = 40

USER_CALL = r'''
import json, os, sys
import dbus
method, signature, args = json.loads(sys.argv[1])
conn = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
try:
    r = conn.call_blocking("org.aziot.Identity1", "/org/aziot/Identity1", "org.aziot.Identity1",
                           method, signature, args, timeout=30)
    print(json.dumps({"ok": {str(k): str(v) for k, v in r.items()} if isinstance(r, dict) else None}))
except dbus.DBusException as e:
    print(json.dumps({"error": e.get_dbus_name(), "message": e.get_dbus_message()}))
'''


CallError = aziot_harness.CallError


wait_until = aziot_harness.wait_until


def sas_encode(s):
    return urllib.parse.quote(s, safe="/:%+&!$'()*,;@")


class IdentityTestCase(IdentityBusTestCase):
    """One stack, mock DPS + IoT Hub (one registry), keyd and certd per class; identityd (and its
    home) per test."""

    RUN_DIR_PREFIX = "aziot-idprov-"
    SCOPE = "0ne00000A1"
    TPM = False
    swtpm = None

    @classmethod
    def start_class(cls):
        aziot_harness.ensure_test_users()
        aziot_harness.ensure_group(ID_GROUP)
        cls.hub = mock_hub.MockHub(os.path.join(cls.run_dir, "hub"))
        cls.dps = mock_dps.MockDps(os.path.join(cls.run_dir, "dps"), id_scope=cls.SCOPE,
                                   hub=cls.hub)
        cls.mocks = (cls.dps, cls.hub)
        cls.hub.start()
        cls.dps.start()
        cls.ca_bundle = os.path.join(cls.run_dir, "cloud-ca.pem")
        with open(cls.ca_bundle, "w") as out:
            for path in (cls.hub.server_ca_path, cls.dps.server_ca_path):
                with open(path) as f:
                    out.write(f.read())
        cls.enrollment = cls.dps.add_symmetric_key("dev1")
        cls.group = cls.dps.add_symmetric_key_group("grp")
        cls.stack.start()
        cls.conn = cls.stack.bus()
        cls.start_keyd(cls.write_secrets({
            "device-id": base64.b64decode(cls.enrollment.primary_key),
            "group-key": base64.b64decode(cls.group.primary_key)}))
        cls.start_certd()
        if cls.TPM:
            cls.swtpm = aziot_tpm.Swtpm(os.path.join(cls.run_dir, "swtpm")).start()
            cls.start_tpmd()

    @classmethod
    def start_certd(cls):
        """certd with a local CA issuing the X.509 device identities."""
        cls.conn.call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE, "CreateKeyPairIfNotExists",
                               "sasa{sv}", ["local-ca", ["ec-p256"], {}], timeout=CALL_TIMEOUT)
        cls.run_certd('[cert_issuance.local_ca]\ncert = "local-ca"\npk = "local-ca"\n\n'
                      '[cert_issuance.local-ca]\nmethod = "self_signed"\n'
                      'common_name = "Device CA"\n\n'
                      '[cert_issuance.device-id]\nmethod = "local_ca"\n\n'
                      '[cert_issuance.device-id-temp]\nmethod = "local_ca"\n')

    @classmethod
    def start_tpmd(cls):
        cls.start_daemon("tpmd", TPMD, TPM_NAME, f'tcti = "{cls.swtpm.tcti}"\n')

    @classmethod
    def stop_class(cls):
        super().stop_class()
        if cls.swtpm:
            cls.swtpm.stop()

    # -- configuration and daemon ---------------------------------------------------------------

    def dps_config(self, attestation, principals="", payload=None):
        text = (f'hostname = "testhost"\nhomedir = "{self.home}"\n\n'
                f'[provisioning]\nsource = "dps"\nglobal_endpoint = "{self.dps.url}/ignored/path"\n'
                f'scope_id = "{self.SCOPE}"\n')
        if payload is not None:
            path = os.path.join(self.dir, "payload.json")
            with open(path, "w") as f:
                f.write(payload)
            text += f'payload = {{ uri = "file://{path}" }}\n'
        return text + "\n[provisioning.attestation]\n" + attestation + "\n" + principals

    def symmetric(self, rid="dev1"):
        return f'method = "symmetric_key"\nregistration_id = "{rid}"\nsymmetric_key = "device-id"\n'

    def start_identityd(self, config, env=None):
        with open(self.config, "w") as f:
            f.write(config)
        return self.run_identityd({"OPENSSL_MODULES": PROVIDER_DIR,
                                   "SSL_CERT_FILE": self.ca_bundle, **(env or {})})

    def restart_identityd(self):
        self.stack.stop_process("identityd")
        with open(self.config) as f:
            return self.start_identityd(f.read())

    def wait_state(self, *states):
        wait_until(lambda: self.state() in states, PROVISION_TIMEOUT,
                   f"ProvisioningState in {states}")
        return self.state()

    def call(self, method, signature="a{sv}", *args):
        args = args or ({},)
        try:
            r = self.conn.call_blocking(ID_NAME, ID_PATH, ID_IFACE, method, signature, list(args),
                                        timeout=CALL_TIMEOUT)
        except dbus.DBusException as e:
            raise CallError(e.get_dbus_name(), e.get_dbus_message()) from None
        return {str(k): str(v) for k, v in r.items()} if isinstance(r, dict) else r

    def call_as(self, user, method, signature="a{sv}", *args, groups=(ID_GROUP,)):
        args = list(args or ({},))
        r = self.stack.run_as(user, [PYTHON, "-c", USER_CALL, json.dumps([method, signature, args])],
                              groups=list(groups))
        if r.returncode != 0:
            raise AssertionError(f"the client as {user} failed:\n{r.stdout}\n{r.stderr}")
        out = json.loads(r.stdout)
        if "error" in out:
            raise CallError(out["error"], out["message"])
        return out["ok"]

    def assertFails(self, name, message, fn, *args, **kwargs):
        with self.assertRaises(CallError, msg=f"{args!r} succeeded") as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.name, ERR + name, str(cm.exception))
        if message is not None:
            self.assertIn(message, cm.exception.message)
        return cm.exception

    def device_token(self, identity, device_id):
        """A device SAS token signed by keyd with the handle identityd gave, as a client makes it."""
        resource = f"{identity['hubName']}/devices/{device_id}".lower()
        expiry = int(time.time()) + 300
        to_sign = f"{sas_encode(resource)}\n{expiry}".encode()
        sig = keyd_sign(self.conn, identity["keyHandle"], to_sign)
        return (f"SharedAccessSignature sr={sas_encode(resource)}"
                f"&sig={urllib.parse.quote(base64.b64encode(sig).decode(), safe='')}"
                f"&se={expiry}")

    def device_info(self):
        with open(os.path.join(self.home, "device_info")) as f:
            return f.read()


class DpsSymmetricKeyTest(IdentityTestCase):
    def test_registers_and_serves_the_device(self):
        self.start_identityd(self.dps_config(self.symmetric(), payload='{"site": "north"}'))
        self.assertEqual(self.wait_state("provisioned"), "provisioned")
        device = self.call("GetDeviceIdentity")
        self.assertEqual(device["type"], "aziot")
        self.assertEqual(device["hubName"], self.hub.hostname)
        self.assertEqual(device["gatewayHost"], self.hub.hostname)
        self.assertEqual(device["deviceId"], "dev1")
        self.assertEqual(device["authType"], "sas")
        # The handle signs what the Hub accepts as the device.
        verdict = self.hub.verify_token(self.device_token(device, "dev1"), "dev1")
        self.assertTrue(verdict, getattr(verdict, "reason", ""))
        # On the wire: SAS with skn=registration, the payload, the endpoint's path replaced.
        register = self.dps.http_requests("register")
        self.assertEqual(len(register), 1)
        self.assertIn("skn=registration", register[0].headers["authorization"])
        self.assertTrue(register[0].path.startswith(f"/{self.SCOPE}/registrations/dev1/register"))
        self.assertEqual(json.loads(register[0].body)["payload"], {"site": "north"})
        self.assertNotIn("user-agent", register[0].headers)
        # Polled after DPS's Retry-After (1 s here), not upstream's fixed 5 s.
        status = self.dps.http_requests("operation-status")
        self.assertGreaterEqual(len(status), 1)
        self.assertLess(status[0].time - register[0].time, 3)
        # The backup, as upstream writes it.
        self.assertEqual(self.device_info(),
                         f'hub_name = "{self.hub.hostname}"\ndevice_id = "dev1"\n')
        info = self.call("GetProvisioningInfo")
        self.assertEqual(info["source"], "dps")
        self.assertEqual(info["auth"], "symmetric_key")
        self.assertEqual(info["scope_id"], self.SCOPE)
        self.assertEqual(info["registration_id"], "dev1")
        self.assertEqual(json.loads(info["payload"]), {"site": "north"})
        # GetIdentity is the device's for root.
        self.assertEqual(self.call("GetIdentity")["deviceId"], "dev1")

    def test_group_enrollment_key_derived_in_keyd(self):
        self.start_identityd(self.dps_config(
            'method = "symmetric_key"\nregistration_id = "dev-grp"\n'
            'symmetric_key = "group-key"\nenrollment = "group"\n'))
        self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned",
                         self.identityd.log()[-2000:])
        device = self.call("GetDeviceIdentity")
        self.assertEqual(device["deviceId"], "dev-grp")
        # The handle is the derived device key's: the Hub accepts what it signs as dev-grp.
        verdict = self.hub.verify_token(self.device_token(device, "dev-grp"), "dev-grp")
        self.assertTrue(verdict, getattr(verdict, "reason", ""))
        # The group key itself signs nothing the Hub accepts for the device.
        group_handle = str(self.conn.call_blocking(KEYS_NAME, KEYS_PATH, KEYS_IFACE, "LoadKey",
                                                   "sa{sv}", ["group-key", {}],
                                                   timeout=CALL_TIMEOUT))
        verdict = self.hub.verify_token(
            self.device_token(dict(device, keyHandle=group_handle), "dev-grp"), "dev-grp")
        self.assertFalse(verdict)

    def test_polls_every_5_s_without_retry_after(self):
        self.dps.retry_after = None
        try:
            self.start_identityd(self.dps_config(self.symmetric()))
            self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned")
        finally:
            self.dps.retry_after = 1
        register = self.dps.http_requests("register")[0]
        status = self.dps.http_requests("operation-status")[0]
        self.assertGreaterEqual(status.time - register.time, 4.9)

    def test_restart_uses_the_backup_without_dps(self):
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        registered = len(self.dps.http_requests("register"))
        self.dps.down()
        self.restart_identityd()
        self.assertEqual(self.wait_state("provisioned", "offline"), "provisioned")
        self.assertEqual(self.call("GetDeviceIdentity")["deviceId"], "dev1")
        self.assertEqual(len(self.dps.http_requests("register")), registered)

    def test_no_backup_and_dps_down_then_reprovision(self):
        self.dps.down()
        self.start_identityd(self.dps_config(self.symmetric()))
        self.assertEqual(self.wait_state("failed"), "failed")
        self.assertFails("NotFound", "device identity not found", self.call,
                         "GetDeviceIdentity")
        self.assertTrue(self.identityd.alive())
        self.dps.up()
        self.call("ReprovisionDevice")
        self.assertEqual(self.state(), "provisioned")
        self.assertEqual(self.call("GetDeviceIdentity")["deviceId"], "dev1")

    def test_failed_reprovision_keeps_the_backup(self):
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        backup = self.device_info()
        self.dps.down()
        e = self.assertFails("CloudError", "DPS client error", self.call, "ReprovisionDevice")
        self.assertTrue(e.message.startswith("DPS client error\ncaused by: "), e.message)
        self.assertEqual(self.device_info(), backup)
        self.assertEqual(self.call("GetDeviceIdentity")["deviceId"], "dev1")
        # And a restart still serves it, without DPS.
        self.restart_identityd()
        self.assertEqual(self.call("GetDeviceIdentity")["deviceId"], "dev1")

    def test_bad_dps_answers(self):
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        failing = self.dps.add_symmetric_key("dev-fails", outcome="failed",
                                             error_message="Custom allocation failed: no hub")
        for fault, words in [
            (lambda: setattr(self.dps, "body_mode", "garbage"), "not JSON"),
            (lambda: self.dps.fail(400, message="Bad things"), "Bad things"),
        ]:
            with self.subTest(words=words):
                self.dps.clear_faults()
                fault()
                e = self.assertFails("CloudError", words, self.call, "ReprovisionDevice")
                self.assertTrue(e.message.startswith("DPS client error"), e.message)
        self.dps.clear_faults()
        del failing
        self.assertEqual(self.call("GetDeviceIdentity")["deviceId"], "dev1")

    def test_hanging_status_poll_times_out_and_keeps_the_backup(self):
        # DPS status polls are bounded by 30 s and not retried (cloud-protocols §1): a DPS that
        # accepts the registration and then never answers fails the reprovision cleanly.
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        backup = self.device_info()
        self.dps.fault_routes = {"operation-status"}
        self.dps.delay = 600
        started = time.monotonic()
        try:
            with self.assertRaises(dbus.DBusException) as cm:
                self.conn.call_blocking(ID_NAME, ID_PATH, ID_IFACE, "ReprovisionDevice", "a{sv}",
                                        [{}], timeout=90)
        finally:
            self.dps.clear_faults()
        elapsed = time.monotonic() - started
        self.assertEqual(cm.exception.get_dbus_name(), ERR + "CloudError")
        self.assertIn("timed out", cm.exception.get_dbus_message())
        # The register answer's Retry-After (1 s) plus one 30 s poll timeout: a retry would add
        # another 3 s sleep and 30 s.
        self.assertGreaterEqual(elapsed, 30.0)
        self.assertLess(elapsed, 60.0)
        self.assertIn("timed out", self.identityd.log())
        self.assertTrue(self.identityd.alive())
        self.assertEqual(self.device_info(), backup)
        self.assertEqual(self.state(), "provisioned")
        self.assertEqual(self.call("GetDeviceIdentity")["deviceId"], "dev1")

    def test_assignment_failure_is_reported(self):
        self.dps.add_symmetric_key("dev-fails", primary_key=self.enrollment.primary_key,
                                   outcome="failed",
                                   error_message="Custom allocation failed: no hub")
        self.start_identityd(self.dps_config(self.symmetric("dev-fails")))
        self.assertEqual(self.wait_state("failed"), "failed")
        self.assertIn("Custom allocation failed: no hub", self.identityd.log())

    def test_throttled_then_served(self):
        self.dps.fail(429, retry_after=1, count=1, routes=["register"])
        self.start_identityd(self.dps_config(self.symmetric()))
        self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned")
        self.assertIn("throttled (429)", self.identityd.log())

    def test_through_https_proxy(self):
        with ConnectProxy() as proxy:
            self.start_identityd(self.dps_config(self.symmetric()),
                                 env={"HTTPS_PROXY": proxy.url})
            self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned")
            dps_host = f"127.0.0.1:{self.dps.port}"
            self.assertIn(dps_host, proxy.targets)
            # IoT Hub too.
            self.call("CreateModuleIdentity", "ssa{sv}", "aziot", "proxied", {})
            self.assertTrue(any(t.endswith(f":{self.hub.port}") for t in proxy.targets),
                            proxy.targets)

    def test_throttling_storm_is_bounded(self):
        self.dps.fail(429, retry_after=1, routes=["register"])
        start = time.monotonic()
        self.start_identityd(self.dps_config(self.symmetric()))
        self.assertEqual(self.wait_state("failed", "provisioned"), "failed")
        # Upstream's five attempts, each after the service's Retry-After.
        self.assertEqual(len(self.dps.http_requests("register")), 5)
        self.assertLess(time.monotonic() - start, 30)
        self.assertIn("kept answering 429", self.identityd.log())
        self.assertTrue(self.identityd.alive())

    def test_authorization(self):
        uid_a = aziot_harness.ensure_test_users()[USER_A].pw_uid
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        # Not a principal: refused, as upstream ("authorization error").
        with self.assertRaises(CallError) as cm:
            self.call_as(USER_A, "GetDeviceIdentity")
        self.assertEqual((cm.exception.name, cm.exception.message),
                         (ERR + "NotAuthorized", "authorization error"))
        # Provisioning info needs nothing.
        self.assertEqual(self.call_as(USER_A, "GetProvisioningInfo")["source"], "dps")
        # A principal with idtype "device" reads the device identity.
        with open(os.path.join(self.config_d, "principals.toml"), "w") as f:
            f.write(f'[[principal]]\nuid = {uid_a}\nname = "watcher"\nidtype = ["device"]\n')
        wait_until(lambda: "Configuration reloaded" in self.identityd.log(), 10, "the reload")
        self.assertEqual(self.call_as(USER_A, "GetDeviceIdentity")["deviceId"], "dev1")
        # polkit can grant what the principals do not.
        with self.assertRaises(CallError) as cm:
            self.call_as(USER_A, "ReprovisionDevice")
        self.assertEqual(cm.exception.name, ERR + "NotAuthorized")
        self.add_rules(f'''polkit.addRule(function(action, subject) {{
            if (action.id == "org.aziot.identity.manage" && subject.user == "{USER_A}")
                return polkit.Result.YES;
        }});''')
        self.assertIsNone(self.call_as(USER_A, "ReprovisionDevice"))


# A host agent: asks identityd for its module identity, signs a module SAS token with keyd (the
# key handle it was given), and has IoT Hub check it: what an agent on a device does.
AGENT = r'''
import base64, json, os, sys, time, urllib.parse
import dbus
conn = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
ident = conn.call_blocking("org.aziot.Identity1", "/org/aziot/Identity1", "org.aziot.Identity1",
                           "GetIdentity", "a{sv}", [{}], timeout=30)
ident = {str(k): str(v) for k, v in ident.items()}
resource = f"{ident['hubName']}/devices/{ident['deviceId']}/modules/{ident['moduleId']}".lower()
expiry = int(time.time()) + 300
sr = urllib.parse.quote(resource, safe="/:%+&!$'()*,;@")
sig = conn.call_blocking("org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1", "Sign",
                         "ssaya{sv}", [ident["keyHandle"], "HMAC-SHA256",
                                       dbus.ByteArray(f"{sr}\n{expiry}".encode()), {}],
                         timeout=30, byte_arrays=True)
token = (f"SharedAccessSignature sr={sr}&sig="
         f"{urllib.parse.quote(base64.b64encode(bytes(sig)).decode(), safe='')}&se={expiry}")
print(json.dumps({"identity": ident, "token": token}))
'''


class HostAgentTest(IdentityTestCase):
    def test_principal_added_at_runtime_gets_a_working_module_identity(self):
        uid_a = aziot_harness.ensure_test_users()[USER_A].pw_uid
        aziot_harness.ensure_group("aziotks")
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        device = self.hub.registry.device("dev1")
        self.assertNotIn("agent", device.modules)
        # The configuration gains a principal: its module is made in IoT Hub, no restart.
        with open(os.path.join(self.config_d, "agent.toml"), "w") as f:
            f.write(f'[[principal]]\nuid = {uid_a}\nname = "agent"\nidtype = ["module"]\n')
        wait_until(lambda: "agent" in device.modules, 15, "the agent's module in IoT Hub")
        pid = self.identityd.pid
        # The agent, as its own uid, gets its module identity and a token IoT Hub accepts.
        r = self.stack.run_as(USER_A, [PYTHON, "-c", AGENT], groups=[ID_GROUP, "aziotks"])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["identity"]["moduleId"], "agent")
        self.assertEqual(out["identity"]["deviceId"], "dev1")
        self.assertEqual(out["identity"]["genId"], device.modules["agent"].generation_id)
        verdict = self.hub.verify_token(out["token"], "dev1", "agent")
        self.assertTrue(verdict, getattr(verdict, "reason", ""))
        self.assertEqual(self.identityd.pid, pid)
        # The principal goes: so does its module.
        os.unlink(os.path.join(self.config_d, "agent.toml"))
        wait_until(lambda: "agent" not in device.modules, 15, "the module's removal")


class ModuleObjectTest(IdentityTestCase):
    def tree(self):
        r = subprocess.run(["busctl", "--system", "--list", "tree", ID_NAME],
                           env=self.stack.child_env(), capture_output=True, text=True,
                           timeout=CALL_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        return set(r.stdout.split())

    def test_modules_are_objects(self):
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        self.call("CreateModuleIdentity", "ssa{sv}", "aziot", "tree-mod", {})
        path = f"{ID_PATH}/module/tree_2dmod"
        self.assertIn(path, self.tree())
        props = self.conn.call_blocking(ID_NAME, path, "org.freedesktop.DBus.Properties",
                                        "GetAll", "s", [ID_IFACE + ".Module"],
                                        timeout=CALL_TIMEOUT)
        hub_module = self.hub.registry.device("dev1").modules["tree-mod"]
        self.assertEqual({str(k): str(v) for k, v in props.items()},
                         {"ModuleId": "tree-mod", "DeviceId": "dev1",
                          "GenerationId": hub_module.generation_id, "ManagedBy": ""})
        manager = dbus.Interface(self.conn.get_object(ID_NAME, ID_PATH),
                                 "org.freedesktop.DBus.ObjectManager")
        self.assertIn(path, set(map(str, manager.GetManagedObjects(timeout=CALL_TIMEOUT))))
        # Readable by a member of the group, without keys.
        r = self.stack.run_as(USER_A, ["busctl", "--system", "get-property", ID_NAME, path,
                                       ID_IFACE + ".Module", "ModuleId"], groups=[ID_GROUP])
        self.assertEqual(r.stdout.strip(), 's "tree-mod"', r.stderr)
        self.call("DeleteModuleIdentity", "sa{sv}", "tree-mod", {})
        self.assertNotIn(path, self.tree())


class IntrospectionTest(IdentityTestCase):
    def test_introspection_matches_the_xml(self):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from test_certs import describe_interface
        self.start_identityd(self.dps_config(self.symmetric()))
        self.wait_state("provisioned")
        with open(os.path.join(SOURCE_DIR, "dbus", "org.aziot.Identity1.xml")) as f:
            documented = describe_interface(f.read(), ID_IFACE)
        text = self.conn.call_blocking(ID_NAME, ID_PATH, "org.freedesktop.DBus.Introspectable",
                                       "Introspect", "", [], timeout=CALL_TIMEOUT)
        self.assertEqual(describe_interface(str(text), ID_IFACE), documented)
        self.call("CreateModuleIdentity", "ssa{sv}", "aziot", "intro", {})
        with open(os.path.join(SOURCE_DIR, "dbus", "org.aziot.Identity1.xml")) as f:
            documented = describe_interface(f.read(), ID_IFACE + ".Module")
        text = self.conn.call_blocking(ID_NAME, f"{ID_PATH}/module/intro",
                                       "org.freedesktop.DBus.Introspectable", "Introspect", "",
                                       [], timeout=CALL_TIMEOUT)
        self.assertEqual(describe_interface(str(text), ID_IFACE + ".Module"), documented)


class X509TestCase(IdentityTestCase):
    def _make_local_ca(self):
        """The local CA's certificate, self-signed by certd with the key keyd holds."""
        env = self.stack.child_env({"OPENSSL_MODULES": PROVIDER_DIR})
        env.pop("OPENSSL_CONF", None)
        r = subprocess.run(["openssl", "req", "-new", "-provider-path", PROVIDER_DIR, "-provider",
                            "aziot", "-provider", "default", "-key", "aziot-key:pair/local-ca",
                            "-subj", "/CN=Device CA"], env=env, capture_output=True, text=True,
                           timeout=CALL_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        return str(self.conn.call_blocking(CERTS_NAME, "/org/aziot/Certificates1", CERTS_NAME,
                                           "CreateCertificate", "ssa{sv}",
                                           ["local-ca", r.stdout, {}], timeout=CALL_TIMEOUT))


class ManualX509Test(X509TestCase):
    def test_manual_x509_device_uses_its_certificate_with_iot_hub(self):
        ca_pem = self._make_local_ca()
        self.hub.registry.add_device("dev-mx", ca=ca_pem)
        self.start_identityd(
            f'hostname = "testhost"\nhomedir = "{self.home}"\n\n[provisioning]\n'
            f'source = "manual"\niothub_hostname = "{self.hub.hostname}"\n'
            'device_id = "dev-mx"\n[provisioning.authentication]\nmethod = "x509"\n'
            'identity_cert = "device-id"\nidentity_pk = "device-id"\n')
        self.assertEqual(self.wait_state("provisioned", "failed", "offline"), "provisioned",
                         self.identityd.log()[-3000:])
        device = self.call("GetDeviceIdentity")
        self.assertEqual((device["deviceId"], device["authType"], device["certId"]),
                         ("dev-mx", "x509", "device-id"))
        info = self.call("GetProvisioningInfo")
        self.assertEqual((info["source"], info["auth"]), ("manual", "x509"))
        # IoT Hub calls authenticate with the certificate (CN = the device id, by the CA).
        self.call("CreateModuleIdentity", "ssa{sv}", "aziot", "x509-mod", {})
        put = [r for r in self.hub.http_requests("put-module")][-1]
        self.assertEqual(put.auth, "x509")
        self.assertEqual(put.client_cert.subject.rfc4514_string(), "CN=dev-mx")
        self.assertIn("x509-mod", self.hub.registry.device("dev-mx").modules)


class DpsX509Test(X509TestCase):
    def test_identity_certificate_made_then_registered(self):
        ca_pem = self._make_local_ca()
        self.dps.add_x509_group("x509-group", ca=[x509.load_pem_x509_certificate(ca_pem.encode())])
        self.start_identityd(self.dps_config(
            'method = "x509"\nregistration_id = "dev-x509"\nidentity_cert = "device-id"\n'
            'identity_pk = "device-id"\n'))
        self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned",
                         self.identityd.log()[-3000:])
        device = self.call("GetDeviceIdentity")
        self.assertEqual(device["deviceId"], "dev-x509")
        self.assertEqual(device["authType"], "x509")
        self.assertEqual(device["certId"], "device-id")
        register = self.dps.http_requests("register")[-1]
        self.assertNotIn("authorization", register.headers)
        self.assertEqual(register.client_cert.subject.rfc4514_string(), "CN=dev-x509")
        self.assertEqual(self.call("GetProvisioningInfo")["auth"], "x509")

class DpsX509RenewalTest(X509TestCase):
    def identity_cert(self):
        pem = str(self.conn.call_blocking(CERTS_NAME, "/org/aziot/Certificates1", CERTS_NAME,
                                          "GetCertificate", "sa{sv}", ["device-id", {}],
                                          timeout=CALL_TIMEOUT))
        return x509.load_pem_x509_certificate(pem.encode())

    def key_spki(self, key_id):
        env = self.stack.child_env({"OPENSSL_MODULES": PROVIDER_DIR})
        env.pop("OPENSSL_CONF", None)
        r = subprocess.run(["openssl", "pkey", "-provider-path", PROVIDER_DIR, "-provider",
                            "aziot", "-provider", "default", "-in", f"aziot-key:pair/{key_id}",
                            "-pubout", "-outform", "DER"], env=env, capture_output=True,
                           timeout=CALL_TIMEOUT)
        return r.stdout if r.returncode == 0 else None

    def test_identity_certificate_renewed_and_registered(self):
        from cryptography.hazmat.primitives import serialization
        ca_pem = self._make_local_ca()
        self.dps.add_x509_group("x509-group", ca=[x509.load_pem_x509_certificate(ca_pem.encode())])
        # 30-day certificates, a 31-day threshold: due as soon as it exists.
        self.start_identityd(self.dps_config(
            'method = "x509"\nregistration_id = "dev-x509"\nidentity_cert = "device-id"\n'
            'identity_pk = "device-id"\n'
            '[provisioning.attestation.identity_auto_renew]\nthreshold = "31day"\n'
            'retry = "10min"\n'))
        self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned",
                         self.identityd.log()[-3000:])
        wait_until(lambda: "Renewed the identity certificate" in self.identityd.log(), 30,
                   "the renewal")
        register = self.dps.http_requests("register")
        self.assertEqual(len(register), 2)
        first, second = register[0].client_cert, register[1].client_cert
        self.assertNotEqual(first.serial_number, second.serial_number)
        self.assertEqual(first.subject, second.subject)
        now = self.identity_cert()
        self.assertEqual(now.serial_number, second.serial_number)
        # Key rotated: the new certificate is for the key keyd now holds as device-id, not the
        # first one's; the temporary key and certificate are gone.
        spki = now.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        self.assertEqual(self.key_spki("device-id"), spki)
        self.assertNotEqual(first.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo), spki)
        self.assertIsNone(self.key_spki("device-id-temp"))
        with self.assertRaises(dbus.DBusException):
            self.conn.call_blocking(CERTS_NAME, "/org/aziot/Certificates1", CERTS_NAME,
                                    "GetCertificate", "sa{sv}", ["device-id-temp", {}],
                                    timeout=CALL_TIMEOUT)
        self.assertFalse(os.path.exists(os.path.join(self.home, "renewed_identity.pem")))
        self.assertEqual(self.call("GetDeviceIdentity")["certId"], "device-id")


class DpsX509EstTest(IdentityTestCase):
    """DPS X.509 with the device identity certificate that certd gets from an EST server (the mock
    EST, Basic auth): DPS trusts the EST CA for the enrollment group."""

    BASIC = ("device", "est-pass")

    @classmethod
    def start_certd(cls):
        import mock_est
        from cryptography.x509.oid import ExtendedKeyUsageOID
        cls.est = mock_est.MockEst(os.path.join(cls.run_dir, "est"), basic=cls.BASIC,
                                   default_eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        cls.est.start()
        cls.run_certd(f'[preloaded_certs]\nest-server-ca = "file://{cls.est.server_ca_path}"\n\n'
                      '[cert_issuance.est]\ntrusted_certs = ["est-server-ca"]\n'
                      f'username = "{cls.BASIC[0]}"\npassword = "{cls.BASIC[1]}"\n'
                      f'[cert_issuance.est.urls]\ndefault = "{cls.est.url}"\n\n'
                      '[cert_issuance.device-id]\nmethod = "est"\n')

    @classmethod
    def stop_class(cls):
        if getattr(cls, "est", None):
            cls.est.stop()
        super().stop_class()

    def test_identity_certificate_from_est_then_registered(self):
        with open(self.est.est_ca_path) as f:
            end = "-----END CERTIFICATE-----"
            est_ca = [x509.load_pem_x509_certificate((b + end).encode())
                      for b in f.read().split(end) if "BEGIN CERTIFICATE" in b]
        self.dps.add_x509_group("est-group", ca=est_ca)
        self.start_identityd(self.dps_config(
            'method = "x509"\nregistration_id = "dev-est"\nidentity_cert = "device-id"\n'
            'identity_pk = "device-id"\n'))
        self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned",
                         self.identityd.log()[-3000:])
        device = self.call("GetDeviceIdentity")
        self.assertEqual((device["deviceId"], device["authType"]), ("dev-est", "x509"))
        # The certificate came from the EST server, for the CSR identityd made.
        enroll = self.est.http_requests("simpleenroll")
        self.assertEqual(len(enroll), 1)
        self.assertEqual(enroll[0].username, self.BASIC[0])
        self.assertEqual(enroll[0].csr.subject.rfc4514_string(), "CN=dev-est")
        register = self.dps.http_requests("register")[-1]
        self.assertEqual(register.client_cert.serial_number, enroll[0].issued.serial_number)
        self.assertEqual(register.client_cert.issuer, est_ca[0].subject)


class DpsTpmTest(IdentityTestCase):
    TPM = True
    REQUIRED = IdentityTestCase.REQUIRED + (TPMD,)

    def test_tpm_challenge_then_registered(self):
        ek, _ = self.conn.call_blocking(TPM_NAME, "/org/aziot/Tpm1", TPM_NAME, "GetTpmKeys",
                                        "a{sv}", [{}], timeout=CALL_TIMEOUT, byte_arrays=True)
        self.dps.add_tpm("dev-tpm", endorsement_key=bytes(ek))
        self.start_identityd(self.dps_config('method = "tpm"\nregistration_id = "dev-tpm"\n'))
        self.assertEqual(self.wait_state("provisioned", "failed"), "provisioned",
                         self.identityd.log()[-3000:])
        device = self.call("GetDeviceIdentity")
        self.assertEqual(device["deviceId"], "dev-tpm")
        self.assertEqual(device["authType"], "tpm")
        self.assertNotIn("keyHandle", device)
        register = self.dps.http_requests("register")
        self.assertEqual([r.status for r in register], [401, 202])
        self.assertNotIn("authorization", register[0].headers)
        self.assertIn("tpm", json.loads(register[0].body))
        self.assertIn("skn=registration", register[1].headers["authorization"])
        self.assertEqual(self.call("GetProvisioningInfo")["auth"], "tpm")


if __name__ == "__main__":
    unittest.main(verbosity=2)
