#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A strict mock Azure IoT Hub registry (module identities) for the tests of the Identity service.

What identityd sends and accepts: /work/shared/spec/cloud-protocols.md §1, §2, §4 (and §6 for what
upstream's own mock lacks); upstream-api.md §4.7-§4.8 for how identityd uses it.

    with MockHub(directory) as hub:           # HTTPS on 127.0.0.1, server cert for localhost/127.0.0.1
        hub.hostname                          "localhost:PORT" unless given: the SAS audience host
        hub.url, hub.server_ca_path           where to connect; the CA to trust (e.g. SSL_CERT_FILE)
        dev = hub.registry.add_device("dev1")                 # SAS, random keys (or primary_key=…)
        hub.registry.add_device("dev2", thumbprint=cert)      # X.509 self-signed / by thumbprint
        hub.registry.add_device("dev3", ca=ca_cert)           # X.509 CA-signed (CN = device id)
        hub.verify_token(token, "dev1", "mod1")               # as the real Hub would: SasResult
        hub.fail(429, retry_after=5, count=1) / hub.fail(500) / hub.fail(404, network_error=True)
        hub.delay = 5 / hub.down(); hub.up() / hub.requests / hub.wait_for_requests(2)

One Registry can be shared with the mock DPS (mock_dps.MockDps(..., hub=hub)): the DPS creates or
updates the device there when it assigns a registration to this hub.

Routes (api-version 2017-11-08-preview):
    GET    /devices/{d}/modules               list-modules    200 [Module]
    PUT    /devices/{d}/modules/{m}           put-module      200 Module (create; If-Match: update)
    GET    /devices/{d}/modules/{m}           get-module      200 Module
    DELETE /devices/{d}/modules/{m}           delete-module   204 (If-Match required)
    POST   /devices/{d}[/modules/{m}]/messages/events  send-event  204 (device or module credentials;
           not in the spec: the real Hub's HTTPS telemetry route, so a host agent can prove its token)

Strictness: every registry call authenticates as the device in the path — a SAS token with audience
"<hostname>/devices/<d>", no skn, signed with the device's primary or secondary key, unexpired; or a
TLS client cert matching the device's thumbprint or chaining to its CA with CN = device id. Anything
else → 401 ErrorCode:IotHubUnauthorizedAccess. PUT without If-Match on an existing module → 409
ModuleAlreadyExistsOnDevice (put_replaces=True: replace it, as spec §4.4 allows); If-Match other than
"*" or the current etag → 412 PreconditionFailed; unknown module → 404 ModuleNotFound; body ids not
the path's, bad keys (not base64 of 16-64 bytes) or an unsupported authentication type → 400
ArgumentInvalid; a body that is not JSON → 400, not declared JSON → 415. Error bodies are
{"Message": "ErrorCode:<code>;<text>", "ExceptionMessage": "Tracking ID:…"} (spec §4.3).

As a script:
    mock_hub.py --dir D [--port P] [--hostname H] [--device ID[=KEY]] [--device-x509 ID=CERT.pem]
                [--device-ca ID=CA.pem] [--control]
prints KEY=VALUE lines (URL, PORT, HOSTNAME, SERVER_CA, DEVICE_KEY_<id>, CONTROL_URL, LOG) then
READY; SIGUSR1 takes it down, SIGUSR2 up; SIGTERM stops it.
"""

import base64
import binascii
import os
import re
import secrets
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_cloud import (MockServer, Refusal, SasResult, add_script_options, check_sas,  # noqa: E402
                        common_name, load_certs, module_keys, normalize_thumbprint, random_key,
                        run_script_servers, script_parser, thumbprints, utc_iso, verify_chain)

__all__ = ["MockHub", "Registry", "Device", "Module", "API_VERSION"]

API_VERSION = "2017-11-08-preview"
_ID = r"[^/]+"
_MODULE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}")
_NEVER = "0001-01-01T00:00:00Z"


def _etag(n):
    return base64.b64encode(str(n).encode()).decode()


def _generation_id():
    return "63" + "".join(str(secrets.randbelow(10)) for _ in range(16))


def _check_key(value, what):
    """A symmetric key as the Hub accepts it: base64 of 16 to 64 bytes (ValueError otherwise)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None
    if not 16 <= len(raw) <= 64:
        raise ValueError(f"{what} must be 16 to 64 bytes, got {len(raw)}")
    return value


class Module:
    """A module identity: generation_id, etag (changes on every update), the SAS keys, managed_by."""

    def __init__(self, device_id, module_id, primary_key=None, secondary_key=None, auth_type="sas",
                 managed_by=None):
        self.device_id = device_id
        self.module_id = module_id
        self.generation_id = _generation_id()
        self.version = 1
        self.auth_type = auth_type
        self.primary_key = primary_key or (random_key() if auth_type == "sas" else None)
        self.secondary_key = secondary_key or (random_key() if auth_type == "sas" else None)
        self.managed_by = managed_by
        self.updates = 0           # PUTs with If-Match

    @property
    def etag(self):
        return _etag(self.version)

    @property
    def keys(self):
        return (self.primary_key, self.secondary_key)

    def keys_derived_from(self, master_key):
        """Whether the keys are those identityd derives from `master_key` (spec §2.3)."""
        return self.keys == module_keys(master_key, self.module_id, self.generation_id)

    def to_json(self):
        auth = {"symmetricKey": {"primaryKey": self.primary_key, "secondaryKey": self.secondary_key},
                "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                "type": self.auth_type}
        d = {"moduleId": self.module_id, "deviceId": self.device_id, "generationId": self.generation_id,
             "etag": self.etag, "connectionState": "Disconnected", "connectionStateUpdatedTime": _NEVER,
             "lastActivityTime": _NEVER, "cloudToDeviceMessageCount": 0, "authentication": auth}
        if self.managed_by is not None:
            d["managedBy"] = self.managed_by
        return d


class Device:
    """A device identity: SAS keys, X.509 thumbprints and/or CA certs it may authenticate with, its
    modules {id: Module}, and enabled (a disabled device is refused)."""

    def __init__(self, device_id, primary_key=None, secondary_key=None, thumbprints=(), ca_certs=(),
                 enabled=True):
        self.device_id = device_id
        self.primary_key = primary_key
        self.secondary_key = secondary_key
        self.thumbprints = [normalize_thumbprint(t) for t in thumbprints if t]
        self.ca_certs = list(ca_certs)
        self.enabled = enabled
        self.generation_id = _generation_id()
        self.modules = {}

    @property
    def auth_type(self):
        if self.primary_key or self.secondary_key:
            return "sas"
        if self.thumbprints:
            return "selfSigned"
        if self.ca_certs:
            return "certificateAuthority"
        return "none"

    @property
    def keys(self):
        return (self.primary_key, self.secondary_key)

    def to_json(self):
        return {"deviceId": self.device_id, "generationId": self.generation_id,
                "status": "enabled" if self.enabled else "disabled", "authenticationType": self.auth_type,
                "primaryKey": self.primary_key, "secondaryKey": self.secondary_key,
                "thumbprints": self.thumbprints,
                "caSubjects": [c.subject.rfc4514_string() for c in self.ca_certs],
                "modules": [m.to_json() for m in self.modules.values()]}


def _thumbprint_of(value):
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f:\s]{40,}", value):
        return value
    return thumbprints(load_certs(value)[0])[0]


class Registry:
    """The devices of one hub. hostname: the hub's name as SAS audiences carry it (a MockHub sets
    "localhost:PORT" when none is given). Thread-safe; `lock` guards compound changes."""

    def __init__(self, hostname=None):
        self.hostname = hostname
        self.devices = {}
        self.lock = threading.RLock()

    def add_device(self, device_id, primary_key=None, secondary_key=None, thumbprint=None,
                   secondary_thumbprint=None, ca=None, enabled=True):
        """Creates (or replaces, dropping its modules) a device. With no credential given it gets
        random SAS keys. thumbprint: a hex thumbprint, or a cert (object, PEM, path) to take it from;
        ca: the CA cert(s) its X.509 certs chain to."""
        tps = [_thumbprint_of(thumbprint), _thumbprint_of(secondary_thumbprint)]
        cas = load_certs(ca)
        if primary_key is None and secondary_key is None and not any(tps) and not cas:
            primary_key, secondary_key = random_key(), random_key()
        dev = Device(device_id, primary_key, secondary_key, [t for t in tps if t], cas, enabled)
        with self.lock:
            self.devices[device_id] = dev
        return dev

    def provision_device(self, device_id, keys=None, thumbprints=(), ca_certs=()):
        """What the DPS does on assignment: create the device, or update the credentials of an
        existing one (its modules stay)."""
        with self.lock:
            dev = self.devices.get(device_id)
            if dev is None:
                dev = Device(device_id)
                self.devices[device_id] = dev
            dev.primary_key, dev.secondary_key = keys if keys else (None, None)
            dev.thumbprints = [normalize_thumbprint(t) for t in thumbprints if t]
            dev.ca_certs = list(ca_certs)
            dev.enabled = True
            return dev

    def device(self, device_id):
        with self.lock:
            return self.devices.get(device_id)

    def remove_device(self, device_id):
        with self.lock:
            return self.devices.pop(device_id, None)

    def module(self, device_id, module_id):
        with self.lock:
            dev = self.devices.get(device_id)
            return dev.modules.get(module_id) if dev else None

    def add_module(self, device_id, module_id, primary_key=None, secondary_key=None, managed_by=None):
        """Creates (or replaces) a module directly, as another tool would have (e.g. edgeAgent)."""
        with self.lock:
            mod = Module(device_id, module_id, primary_key, secondary_key, managed_by=managed_by)
            self.devices[device_id].modules[module_id] = mod
            return mod

    def audience(self, device_id, module_id=None):
        return f"{self.hostname}/devices/{device_id}" + (f"/modules/{module_id}" if module_id else "")

    def verify_token(self, token, device_id, module_id=None):
        """As the real Hub checks a device or module SAS token for its own resource: audience
        "<hostname>/devices/<d>[/modules/<m>]", no skn, unexpired, signed with the identity's primary
        or secondary key. Returns a SasResult (truthy when accepted, else .reason)."""
        with self.lock:
            dev = self.devices.get(device_id)
            ident = dev.modules.get(module_id) if (dev and module_id is not None) else dev
            keys = ident.keys if ident is not None else ()
        if ident is None:
            what = f"device {device_id}" if module_id is None else f"module {module_id} on device {device_id}"
            return SasResult(False, f"unknown {what}")
        if dev is not None and not dev.enabled:
            return SasResult(False, f"device {device_id} is disabled")
        res = check_sas(token, self.audience(device_id, module_id), keys)
        if not res and res.reason == "signature mismatch" and not any(keys):
            res.reason = "the identity has no symmetric keys"
        return res

    def to_json(self):
        with self.lock:
            return {"hostname": self.hostname, "devices": [d.to_json() for d in self.devices.values()]}


class MockHub(MockServer):
    """The mock IoT Hub; see the module docstring. Besides MockServer's switches:
    put_replaces (PUT without If-Match on an existing module replaces it instead of 409),
    require_if_match_on_delete (DELETE without If-Match → 412; default True)."""

    name = "mock-hub"
    api_versions = (API_VERSION,)
    ROUTES = (
        ("GET", rf"/devices/(?P<d>{_ID})/modules", "list-modules", "_list_modules"),
        ("PUT", rf"/devices/(?P<d>{_ID})/modules/(?P<m>{_ID})", "put-module", "_put_module"),
        ("GET", rf"/devices/(?P<d>{_ID})/modules/(?P<m>{_ID})", "get-module", "_get_module"),
        ("DELETE", rf"/devices/(?P<d>{_ID})/modules/(?P<m>{_ID})", "delete-module", "_delete_module"),
        ("POST", rf"/devices/(?P<d>{_ID})/messages/events", "send-event", "_send_event"),
        ("POST", rf"/devices/(?P<d>{_ID})/modules/(?P<m>{_ID})/messages/events", "send-event", "_send_event"),
    )
    CONFIG_KEYS = MockServer.CONFIG_KEYS + ("put_replaces", "require_if_match_on_delete")
    CODES = {400: "ArgumentInvalid", 401: "IotHubUnauthorizedAccess", 404: "NotFound",
             405: "MethodNotAllowed", 409: "Conflict", 412: "PreconditionFailed",
             413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 429: "ThrottlingException",
             500: "ServerError", 503: "ServiceUnavailable"}

    def __init__(self, directory, hostname=None, registry=None, **kw):
        super().__init__(directory, **kw)
        self.registry = registry if registry is not None else Registry()
        if hostname is not None:
            self.registry.hostname = hostname
        self.put_replaces = False
        self.require_if_match_on_delete = True

    @property
    def hostname(self):
        return self.registry.hostname

    def up(self):
        super().up()
        if self.registry.hostname is None:
            self.registry.hostname = f"localhost:{self.port}"

    def verify_token(self, token, device_id, module_id=None):
        """Registry.verify_token: the Hub's decision on a device or module SAS token."""
        return self.registry.verify_token(token, device_id, module_id)

    # ---- errors

    def code_for(self, status, what):
        if status == 400 and what == "api-version":
            return "InvalidProtocolVersion"
        return self.CODES.get(status, "ServerError")

    def error_body(self, status, code, message, network_error=False):
        body = {"Message": f"ErrorCode:{code};{message}",
                "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{utc_iso()}"}
        if network_error:
            body["networkError"] = True
        return body

    # ---- authentication

    def _authenticate(self, call, device_id, module_id=None):
        """The identity in the path, by SAS token or TLS client certificate; 401 otherwise."""
        rec = call.rec
        value = call.header("Authorization")
        dev = self.registry.device(device_id)
        if value is not None:
            rec.auth = "sas"
            res = self.registry.verify_token(value, device_id, module_id)
            rec.sas = res.fields
            rec.expired_token = res.expired
            if not res:
                raise Refusal(401, "Unauthorized", reason=res.reason)
            rec.principal = device_id if module_id is None else f"{device_id}/{module_id}"
            return dev
        if call.client_cert is None:
            raise Refusal(401, "Unauthorized", reason="no SAS token and no client certificate")
        rec.auth = "x509"
        if module_id is not None:
            raise Refusal(401, "Unauthorized", reason="module X.509 authentication is not supported")
        if dev is None:
            raise Refusal(401, "Unauthorized", reason=f"unknown device {device_id}")
        if not dev.enabled:
            raise Refusal(401, "Unauthorized", reason=f"device {device_id} is disabled")
        leaf = call.client_cert
        if dev.thumbprints and set(thumbprints(leaf)) & set(dev.thumbprints):
            _, reason = verify_chain(call.chain, [leaf])  # validity and purpose
        elif dev.ca_certs:
            _, reason = verify_chain(call.chain, dev.ca_certs)
            if reason is None and common_name(leaf) != device_id:
                reason = f"certificate CN {common_name(leaf)!r} is not the device id"
        else:
            reason = "client certificate does not match the device's thumbprints or CA"
        if reason:
            raise Refusal(401, "Unauthorized", reason=reason)
        rec.principal = device_id
        return dev

    # ---- routes

    @staticmethod
    def _check_ids(d, m=None):
        if not _DEVICE_ID.fullmatch(d):
            raise Refusal(400, f"invalid device id {d!r}")
        if m is not None and not _MODULE_ID.fullmatch(m):
            raise Refusal(400, f"invalid module id {m!r}")

    def _device_or_404(self, d):
        dev = self.registry.device(d)
        if dev is None:
            raise Refusal(404, f"Device {d} not found", code="DeviceNotFound")
        return dev

    @staticmethod
    def _module_not_found(d, m):
        return Refusal(404, f"Module {m} on device {d} not found", code="ModuleNotFound")

    def _list_modules(self, call):
        d = call.params["d"]
        self._authenticate(call, d)
        dev = self._device_or_404(d)
        with self.registry.lock:
            return 200, [mod.to_json() for mod in dev.modules.values()], []

    def _get_module(self, call):
        d, m = call.params["d"], call.params["m"]
        self._authenticate(call, d)
        dev = self._device_or_404(d)
        with self.registry.lock:
            mod = dev.modules.get(m)
            if mod is None:
                raise self._module_not_found(d, m)
            return 200, mod.to_json(), []

    @staticmethod
    def _parse_module_body(body, d, m):
        """(auth_type, primary, secondary, managed_by) of a PUT body; 400 when it is not acceptable."""
        if not isinstance(body, dict):
            raise Refusal(400, "the module must be a JSON object")
        if body.get("moduleId") != m:
            raise Refusal(400, f"moduleId {body.get('moduleId')!r} in the body is not {m!r} of the URI")
        if body.get("deviceId") != d:
            raise Refusal(400, f"deviceId {body.get('deviceId')!r} in the body is not {d!r} of the URI")
        managed_by = body.get("managedBy")
        if managed_by is not None and not isinstance(managed_by, str):
            raise Refusal(400, "managedBy must be a string")
        auth = body.get("authentication")
        if auth is None:
            return None, None, None, managed_by
        if not isinstance(auth, dict):
            raise Refusal(400, "authentication must be an object")
        kind = auth.get("type", "sas")
        if kind not in ("sas", "none"):
            raise Refusal(400, f"authentication type {kind!r} is not supported by this mock")
        sym = auth.get("symmetricKey") or {}
        if not isinstance(sym, dict):
            raise Refusal(400, "symmetricKey must be an object")
        if kind == "none":
            if sym.get("primaryKey") or sym.get("secondaryKey"):
                raise Refusal(400, "keys given with authentication type none")
            return "none", None, None, managed_by
        try:
            keys = [_check_key(sym[k], k) if sym.get(k) is not None else None
                    for k in ("primaryKey", "secondaryKey")]
        except ValueError as e:
            raise Refusal(400, str(e)) from None
        return "sas", keys[0], keys[1], managed_by

    @staticmethod
    def _if_match(value):
        """The etag of an If-Match value, "*" for any; quotes and a weak W/ are dropped."""
        v = value.strip()
        if v.startswith("W/"):
            v = v[2:]
        return v.strip('"')

    def _put_module(self, call):
        d, m = call.params["d"], call.params["m"]
        self._check_ids(d, m)
        self._authenticate(call, d)
        dev = self._device_or_404(d)
        kind, primary, secondary, managed_by = self._parse_module_body(call.json_body(), d, m)
        if_match = call.header("If-Match")
        with self.registry.lock:
            existing = dev.modules.get(m)
            if if_match is None:
                if existing is not None and not self.put_replaces:
                    raise Refusal(409, f"A module with ID '{m}' already exists on device '{d}'",
                                  code="ModuleAlreadyExistsOnDevice")
                mod = Module(d, m, primary, secondary, auth_type=kind or "sas", managed_by=managed_by)
                dev.modules[m] = mod
                call.rec.principal = f"{d}/{m}"
                return 200, mod.to_json(), []
            if existing is None:
                raise self._module_not_found(d, m)
            tag = self._if_match(if_match)
            if tag != "*" and tag != existing.etag:
                raise Refusal(412, f"Precondition failed: etag {tag!r} is not {existing.etag!r}",
                              code="PreconditionFailed")
            if kind is not None:
                existing.auth_type = kind
                existing.primary_key = primary if kind == "sas" else None
                existing.secondary_key = secondary if kind == "sas" else None
            if managed_by is not None:
                existing.managed_by = managed_by
            existing.version += 1
            existing.updates += 1
            return 200, existing.to_json(), []

    def _delete_module(self, call):
        d, m = call.params["d"], call.params["m"]
        self._authenticate(call, d)
        dev = self._device_or_404(d)
        if_match = call.header("If-Match")
        with self.registry.lock:
            mod = dev.modules.get(m)
            if mod is None:
                raise self._module_not_found(d, m)
            if if_match is None:
                if self.require_if_match_on_delete:
                    raise Refusal(412, "Precondition failed: If-Match is required (use * to delete "
                                       "unconditionally)", code="PreconditionFailed")
            elif self._if_match(if_match) not in ("*", mod.etag):
                raise Refusal(412, f"Precondition failed: etag {self._if_match(if_match)!r} is not "
                                   f"{mod.etag!r}", code="PreconditionFailed")
            del dev.modules[m]
        return 204, None, []

    def _send_event(self, call):
        d, m = call.params["d"], call.params.get("m")
        self._authenticate(call, d, m)
        return 204, None, []

    # ---- control channel

    def control(self, method, path, arg):
        if method == "GET" and path == "/registry":
            return self.registry.to_json()
        if method == "POST" and path == "/devices":
            dev = self.registry.add_device(arg["deviceId"], arg.get("primaryKey"), arg.get("secondaryKey"),
                                           thumbprint=arg.get("thumbprint"), ca=arg.get("ca"),
                                           enabled=arg.get("enabled", True))
            return dev.to_json()
        if method == "POST" and path == "/remove-device":
            return {"removed": self.registry.remove_device(arg["deviceId"]) is not None}
        if method == "POST" and path == "/modules":
            return self.registry.add_module(arg["deviceId"], arg["moduleId"], arg.get("primaryKey"),
                                            arg.get("secondaryKey"), arg.get("managedBy")).to_json()
        if method == "POST" and path == "/verify-token":
            res = self.verify_token(arg["token"], arg["deviceId"], arg.get("moduleId"))
            return {"ok": res.ok, "reason": res.reason, "keyIndex": res.key_index}
        raise KeyError(path)


# ------------------------------------------------------------------------------------------------
# CLI

def add_device_args(ap):
    ap.add_argument("--device", action="append", default=[], metavar="ID[=KEY]",
                    help="a SAS device (random key unless given)")
    ap.add_argument("--device-x509", action="append", default=[], metavar="ID=CERT.pem",
                    help="an X.509 device authenticated by the thumbprint of CERT")
    ap.add_argument("--device-ca", action="append", default=[], metavar="ID=CA.pem",
                    help="an X.509 device whose certs chain to CA (CN = ID)")


def apply_device_args(registry, a):
    """Adds the --device* devices; returns KEY=VALUE lines for the generated keys."""
    lines = []
    for spec in a.device:
        did, _, key = spec.partition("=")
        dev = registry.add_device(did, primary_key=key or random_key(), secondary_key=random_key())
        lines.append(f"DEVICE_KEY_{did}={dev.primary_key}")
    for spec in a.device_x509:
        did, _, path = spec.partition("=")
        registry.add_device(did, thumbprint=path)
    for spec in a.device_ca:
        did, _, path = spec.partition("=")
        registry.add_device(did, ca=path)
    return lines


def main(argv=None):
    ap = script_parser("Mock Azure IoT Hub registry for the identityd tests.")
    ap.add_argument("--hostname", help="the hub name in SAS audiences (default localhost:PORT)")
    add_device_args(ap)
    ap.add_argument("--put-replaces", action="store_true", help="PUT on an existing module replaces it")
    add_script_options(ap, "hub-requests.jsonl")
    a = ap.parse_args(argv)

    hub = MockHub(a.dir, hostname=a.hostname, port=a.port, host=a.host, verbose=a.verbose,
                  log_path=a.log or os.path.join(a.dir, "hub-requests.jsonl"))
    hub.put_replaces = a.put_replaces
    keys = apply_device_args(hub.registry, a)

    def lines():
        out = [f"URL={hub.url}", f"PORT={hub.port}", f"HOSTNAME={hub.hostname}",
               f"SERVER_CA={hub.server_ca_path}", f"LOG={hub.log_path}"] + keys
        if a.control:
            out.append(f"CONTROL_URL={hub.start_control(a.control_port)}")
        return out
    return run_script_servers([hub], lines)


if __name__ == "__main__":
    sys.exit(main())
