#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A strict mock Azure IoT Hub Device Provisioning Service (DPS) for the tests of the Identity service.

What identityd sends and accepts: /work/shared/spec/cloud-protocols.md §1, §2, §3 (and §6 for what
upstream's own mock lacks); upstream-api.md §4.6 for the provisioning modes.

    with MockDps(directory, id_scope="0ne00000001", hub=hub) as dps:   # hub: a MockHub or Registry
        dps.url, dps.server_ca_path          global_endpoint; the CA to trust (e.g. SSL_CERT_FILE)
        e = dps.add_symmetric_key("dev1")                    # e.primary_key, e.secondary_key
        g = dps.add_symmetric_key_group("grp")               # device key: derive_device_key(key, rid)
        dps.add_x509("dev2", cert=device_cert)               # individual, by the cert's thumbprint
        dps.add_x509("dev3", ca=ca_cert)                     # individual, CA-signed
        dps.add_x509_group("grp2", ca=[ca_cert])             # group: the chain must reach the CA
        dps.add_tpm("dev4", endorsement_key=ek_tpm2b_public)
        options of every add_*: assigned_hub, device_id (NEW_UUID: a fresh one per registration),
        assigning_polls, outcome ("assigned" | "failed" | "disabled" | any status), error_code,
        error_message, response_payload, enabled, tpm_reissue_key, issue_client_cert, trust_bundle
        dps.registration("dev1")             the DPS's record of the registration (after assignment)
        dps.fail(429, retry_after=5, count=1) / dps.fail(500) / dps.body_mode = "garbage" /
        dps.content_type = "text/html" / dps.delay = 5 / dps.down(); dps.up() / dps.requests
        dps.retry_after = 1 (default) / None     Retry-After of "assigning" answers (202)

Flows (spec §3.3, §3.4):
    PUT /{scope}/registrations/{rid}/register?api-version=2021-06-01      route "register"
        SAS (Authorization, skn=registration, audience "{scope}/registrations/{rid}"), or a TLS client
        certificate, or (TPM) no credential but a "tpm" member → 401 {"authenticationKey": blob}
        made for the EK and SRK with a fresh HMAC key; then the SAS signed with that key.
        → 202 {"operationId", "status": "assigning"}
    GET /{scope}/registrations/{rid}/operations/{op}?api-version=…          route "operation-status"
        the same credential; → 202 "assigning" for `assigning_polls` polls, then 200 with the outcome.
        The device is created in (or updated in) the assigned hub's Registry at that moment.
    §3.8 (the feature/dps_certs branch, api-version 2021-11-01-preview): a "clientCertificateCsr" is
    answered with "issuedClientCertificate" (base64 DER) and "trustBundle" when the enrollment has
    issue_client_cert, else refused with 400 / 400000 "Device sent CSR but it is not configured in the
    service."; server certificates: POST /{scope}/devices/{rid}/certificates/issue (TLS client auth
    with the issued identity cert) → 202 {"operationId"}, GET /{scope}/devices/{rid}/operations/{op}
    → {"status": "running" | "succeeded", "resourceLocation"}, GET resourceLocation →
    {"issuedCertificate", "certificateChain"}.

Strictness: a SAS token must be well-formed, signed with the enrollment's primary or secondary key (a
group's: derived for the registration id), unexpired, for the audience above, with skn=registration;
an X.509 client certificate must match the enrollment's thumbprint or chain to its CA, be valid and
for client auth, and have CN = registration id; the body must be JSON (415 when not declared so, 400
when not parsable) with registrationId equal to the path's. Refusals: 401 {"errorCode": 401002,
"message": "Unauthorized", …} (the reason is in the request log), 400 {"errorCode": 400000, …},
unknown operation 404 {"errorCode": 404000}. The operation-status route accepts an expired token
(spec §3.3: identityd polls with the register request's token) unless check_expiry_on_status.

As a script:
    mock_dps.py --dir D [--port P] [--scope S] [--with-hub [--hub-port P] [--hub-hostname H]]
                [--symmetric RID[=KEY]] [--group GID[=KEY]] [--x509 RID=CERT.pem] [--x509-ca RID=CA.pem]
                [--x509-group GID=CA.pem] [--tpm RID=EK.pub] [--assigning-polls N] [--control]
prints KEY=VALUE lines (URL, PORT, SCOPE, SERVER_CA, KEY_<rid>, GROUP_KEY_<gid>, HUB_URL, HUB_HOSTNAME,
CONTROL_URL, HUB_CONTROL_URL, LOG) then READY; SIGUSR1 takes it (and its hub) down, SIGUSR2 up.
"""

import base64
import binascii
import copy
import os
import secrets
import sys
import threading
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from mock_cloud import (MockServer, Refusal, add_script_options, check_sas, common_name,  # noqa: E402
                        derive_device_key, load_certs, random_key, run_script_servers, script_parser,
                        thumbprints, utc_iso, verify_chain, normalize_thumbprint, _pem)
import mock_hub  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

__all__ = ["MockDps", "Enrollment", "Operation", "NEW_UUID", "API_VERSION", "CERTS_API_VERSION"]

API_VERSION = "2021-06-01"
CERTS_API_VERSION = "2021-11-01-preview"
NEW_UUID = "new-uuid"
CSR_NOT_CONFIGURED = "Device sent CSR but it is not configured in the service."
_UNSET = object()
_ID = r"[^/]+"


class Enrollment:
    """An individual enrollment (name = registration id) or an enrollment group (name = group id).

    kind "symmetric": primary_key/secondary_key (base64; a group's are the group keys);
    kind "x509": thumbprints (of the device cert) and/or ca_certs (the CA(s) the chain must reach);
    kind "tpm": endorsement_key (the EK's marshalled TPM2B_PUBLIC, bytes).
    Assignment: assigned_hub (None: the DPS's first hub) and device_id (None: the registration id;
    NEW_UUID: a fresh UUID per registration) — either may be fn(registration_id, payload) → value;
    assigning_polls (polls answered "assigning" before the outcome); outcome "assigned" | "failed"
    (with error_code, error_message) | any other status string (e.g. "disabled"); response_payload
    (the registration state's payload: by default the request's, echoed; a fn(payload) → value);
    enabled (False: outcome "disabled"); tpm_reissue_key (TPM: the assigned state carries a new
    authenticationKey, which becomes the device's Hub key; False: the challenge key is the Hub key);
    issue_client_cert, trust_bundle (PEM certs), server_certificates (spec §3.8)."""

    def __init__(self, kind, name, group=False, primary_key=None, secondary_key=None, thumbprints=(),
                 ca_certs=(), endorsement_key=None, assigned_hub=None, device_id=None, assigning_polls=0,
                 outcome="assigned", error_code=400209, error_message="Custom allocation failed",
                 response_payload=_UNSET, enabled=True, tpm_reissue_key=True, issue_client_cert=False,
                 trust_bundle=(), server_certificates=False):
        self.kind = kind
        self.name = name
        self.group = group
        self.primary_key = primary_key
        self.secondary_key = secondary_key
        self.thumbprints = [normalize_thumbprint(t) for t in thumbprints if t]
        self.ca_certs = load_certs(list(ca_certs))
        self.endorsement_key = endorsement_key
        self.assigned_hub = assigned_hub
        self.device_id = device_id
        self.assigning_polls = assigning_polls
        self.outcome = outcome
        self.error_code = error_code
        self.error_message = error_message
        self.response_payload = response_payload
        self.enabled = enabled
        self.tpm_reissue_key = tpm_reissue_key
        self.issue_client_cert = issue_client_cert
        self.trust_bundle = load_certs(list(trust_bundle))
        self.server_certificates = server_certificates

    def keys_for(self, registration_id):
        """The (primary, secondary) device keys a registration signs with: derived for a group."""
        if self.group:
            return tuple(derive_device_key(k, registration_id) if k else None
                         for k in (self.primary_key, self.secondary_key))
        return (self.primary_key, self.secondary_key)

    def to_json(self):
        d = {"kind": self.kind, "name": self.name, "group": self.group, "enabled": self.enabled,
             "assigningPolls": self.assigning_polls, "outcome": self.outcome}
        if self.kind == "symmetric":
            d.update(primaryKey=self.primary_key, secondaryKey=self.secondary_key)
        if self.thumbprints:
            d["thumbprints"] = self.thumbprints
        if self.ca_certs:
            d["caSubjects"] = [c.subject.rfc4514_string() for c in self.ca_certs]
        if self.endorsement_key is not None:
            d["endorsementKey"] = base64.b64encode(self.endorsement_key).decode()
        for k in ("assigned_hub", "device_id"):
            v = getattr(self, k)
            if isinstance(v, str):
                d[k] = v
        return d


class Operation:
    """A registration in progress: who registered how (auth "sas" | "x509" | "tpm", keys or cert),
    polls left before the outcome, the request payload, and the final answer once decided."""

    def __init__(self, scope, registration_id, enrollment, auth, keys=(), cert_der=None, payload=_UNSET,
                 csr=None, tpm=None):
        self.id = f"4.{secrets.token_hex(8)}.{uuid.uuid4()}"
        self.scope = scope
        self.registration_id = registration_id
        self.enrollment = enrollment
        self.auth = auth
        self.keys = tuple(keys)
        self.cert_der = cert_der
        self.payload = payload
        self.csr = csr
        self.tpm = tpm                  # (ek, srk) for a new authenticationKey
        self.polls_left = enrollment.assigning_polls
        self.polls = 0
        self.created = utc_iso()
        self.result = None


class MockDps(MockServer):
    """The mock DPS; see the module docstring. Besides MockServer's switches:
    check_expiry_on_status (refuse expired tokens on operation polls too; default False, spec §3.3),
    x509_cn_must_match (the client cert's CN must be the registration id; default True),
    issue_polls (§3.8 server-cert operations answered "running" this many times)."""

    name = "mock-dps"
    api_versions = (API_VERSION, CERTS_API_VERSION)
    ROUTES = (
        ("PUT", rf"/(?P<scope>{_ID})/registrations/(?P<rid>{_ID})/register", "register", "_register"),
        ("GET", rf"/(?P<scope>{_ID})/registrations/(?P<rid>{_ID})/operations/(?P<op>{_ID})",
         "operation-status", "_operation_status"),
        ("POST", rf"/(?P<scope>{_ID})/devices/(?P<rid>{_ID})/certificates/issue", "issue-certificate",
         "_issue_certificate"),
        ("GET", rf"/(?P<scope>{_ID})/devices/(?P<rid>{_ID})/operations/(?P<op>{_ID})", "issue-status",
         "_issue_status"),
        ("GET", rf"/(?P<scope>{_ID})/devices/(?P<rid>{_ID})/certificates/(?P<cid>{_ID})",
         "issued-certificate", "_issued_certificate"),
    )
    CONFIG_KEYS = MockServer.CONFIG_KEYS + ("check_expiry_on_status", "x509_cn_must_match", "issue_polls",
                                            "retry_after")
    CODES = {400: 400000, 401: 401002, 404: 404000, 405: 405000, 409: 409000, 412: 412000, 413: 413000,
             415: 415000, 429: 429001, 500: 500000, 503: 503000}

    def __init__(self, directory, id_scope="0ne00000001", hub=None, default_hub=None, **kw):
        super().__init__(directory, **kw)
        self.id_scope = id_scope
        hubs = hub if isinstance(hub, (list, tuple)) else ([hub] if hub is not None else [])
        self.hubs = [h.registry if isinstance(h, mock_hub.MockHub) else h for h in hubs]
        self.default_hub = default_hub
        self.individual = {}          # lower-cased registration id -> Enrollment
        self.groups = {}              # group id -> Enrollment
        self.operations = {}
        self.registrations = {}       # lower-cased registration id -> registration state (dict)
        self.check_expiry_on_status = False
        self.x509_cn_must_match = True
        self.issue_polls = 0
        # The Retry-After of "assigning" answers (202): the real service sends one (3 s); the mock's
        # is shorter. None: no header.
        self.retry_after = 1
        self._tpm_challenges = {}     # lower-cased registration id -> (hmac key, ek, srk)
        self._issue_ops = {}
        self._issued = {}
        self._state_lock = threading.RLock()

    # ---- enrollments

    def _add(self, enr):
        with self._state_lock:
            if enr.group:
                self.groups[enr.name] = enr
            else:
                self.individual[enr.name.lower()] = enr
        return enr

    def add_symmetric_key(self, registration_id, primary_key=None, secondary_key=None, **opts):
        """An individual symmetric-key enrollment (random keys unless given)."""
        return self._add(Enrollment("symmetric", registration_id, False, primary_key or random_key(64),
                                    secondary_key or random_key(64), **opts))

    def add_symmetric_key_group(self, group_id, primary_key=None, secondary_key=None, **opts):
        """A symmetric-key enrollment group: each device signs with derive_device_key(group key, rid)."""
        return self._add(Enrollment("symmetric", group_id, True, primary_key or random_key(64),
                                    secondary_key or random_key(64), **opts))

    def add_x509(self, registration_id, cert=None, thumbprint=None, secondary_thumbprint=None, ca=None,
                 **opts):
        """An individual X.509 enrollment: by the device cert's thumbprint (cert, or a hex thumbprint),
        or by the CA(s) its chain must reach (ca)."""
        tps = [thumbprint, secondary_thumbprint]
        if cert is not None:
            tps.append(thumbprints(load_certs(cert)[0])[0])
        if not any(tps) and ca is None:
            raise ValueError("an X.509 enrollment needs a cert, a thumbprint or a CA")
        return self._add(Enrollment("x509", registration_id, False, thumbprints=tps,
                                    ca_certs=load_certs(ca), **opts))

    def add_x509_group(self, group_id, ca, **opts):
        """An X.509 enrollment group: devices whose chain reaches one of `ca` (CN = registration id)."""
        return self._add(Enrollment("x509", group_id, True, ca_certs=load_certs(ca), **opts))

    def add_tpm(self, registration_id, endorsement_key, **opts):
        """An individual TPM enrollment: endorsement_key is the EK's marshalled TPM2B_PUBLIC (bytes,
        or its base64), as DPS stores it."""
        if isinstance(endorsement_key, str):
            endorsement_key = base64.b64decode(endorsement_key, validate=True)
        return self._add(Enrollment("tpm", registration_id, False, endorsement_key=bytes(endorsement_key),
                                    **opts))

    def add_enrollment(self, spec):
        """An enrollment from a JSON object (control channel): {"kind": "symmetric" | "symmetric-group" |
        "x509" | "x509-group" | "tpm", "name", and the add_* arguments in camelCase or snake_case}."""
        spec = {_snake(k): v for k, v in spec.items()}
        kind, name = spec.pop("kind"), spec.pop("name")
        adders = {"symmetric": self.add_symmetric_key, "symmetric-group": self.add_symmetric_key_group,
                  "x509": self.add_x509, "x509-group": self.add_x509_group, "tpm": self.add_tpm}
        if kind not in adders:
            raise ValueError(f"unknown enrollment kind {kind!r}")
        return adders[kind](name, **spec)

    def remove_enrollment(self, name, group=False):
        with self._state_lock:
            return (self.groups.pop(name, None) if group else self.individual.pop(name.lower(), None))

    def registration(self, registration_id):
        """The DPS's record of a registration's last outcome (a dict as in registrationState)."""
        with self._state_lock:
            return copy.deepcopy(self.registrations.get(registration_id.lower()))

    # ---- errors

    def code_for(self, status, what):
        return self.CODES.get(status, status * 1000)

    def error_body(self, status, code, message, network_error=False):
        body = {"errorCode": code, "trackingId": str(uuid.uuid4()), "message": message,
                "timestampUtc": utc_iso()}
        if network_error:
            body["networkError"] = True
        return body

    @staticmethod
    def _unauthorized(reason):
        return Refusal(401, "Unauthorized", reason=reason)

    # ---- register

    def _register(self, call):
        scope, rid = call.params["scope"], call.params["rid"]
        rec = call.rec
        rec.registration_id = rid
        body = call.json_body()
        if not isinstance(body, dict):
            raise Refusal(400, "the registration request must be a JSON object")
        body_rid = body.get("registrationId")
        if not isinstance(body_rid, str):
            raise Refusal(400, "registrationId is required")
        if scope != self.id_scope:
            raise self._unauthorized(f"unknown ID scope {scope!r}")
        audience = f"{scope}/registrations/{rid}"
        token = call.header("Authorization")
        tpm_challenge = None
        if token is not None:
            enr, keys = self._authenticate_sas(call, token, audience, rid)
            auth = "tpm" if enr.kind == "tpm" else "sas"
            cert_der = None
        elif "tpm" in body:
            rec.auth = "tpm"
            enr, tpm_challenge = self._tpm_enrollment(rid, body["tpm"])
            keys, cert_der, auth = (), None, "tpm"
        elif call.client_cert is not None:
            enr = self._authenticate_x509(call, rid)
            keys, cert_der, auth = (), call.client_cert.public_bytes(serialization.Encoding.DER), "x509"
        else:
            raise self._unauthorized("no SAS token, no client certificate and no tpm member")
        rec.principal = enr.name
        if body_rid != rid:
            raise Refusal(400, f"registrationId {body_rid!r} in the body is not {rid!r} of the URI")
        if tpm_challenge is not None:
            ek, srk = tpm_challenge
            return self._tpm_challenge(rid, ek, srk)
        csr = self._csr(body, enr, rid)
        with self._state_lock:
            tpm = self._tpm_challenges.get(rid.lower()) if enr.kind == "tpm" else None
            op = Operation(scope, rid, enr, auth, keys, cert_der, body.get("payload", _UNSET), csr,
                           tpm=tpm[1:] if tpm else None)
            self.operations[op.id] = op
        rec.operation_id = op.id
        return 202, {"operationId": op.id, "status": "assigning"}, self._retry_after_headers()

    def _retry_after_headers(self):
        return [("Retry-After", str(self.retry_after))] if self.retry_after is not None else []

    def _authenticate_sas(self, call, token, audience, rid):
        """(enrollment, keys) whose key signed the token; 401 otherwise."""
        rec = call.rec
        rec.auth = "sas"
        pre = check_sas(token, audience, (), skn="registration")
        rec.sas = pre.fields
        rec.expired_token = pre.expired
        if pre.reason != "signature mismatch":
            raise self._unauthorized(pre.reason)
        with self._state_lock:
            enr = self.individual.get(rid.lower())
            if enr is not None:
                if enr.kind == "symmetric":
                    candidates = [(enr, enr.keys_for(rid))]
                elif enr.kind == "tpm":
                    challenge = self._tpm_challenges.get(rid.lower())
                    if challenge is None:
                        raise self._unauthorized("TPM enrollment: no authenticationKey issued yet")
                    candidates = [(enr, (challenge[0],))]
                else:
                    raise self._unauthorized("X.509 enrollment: a SAS token is not accepted")
            else:
                candidates = [(g, g.keys_for(rid)) for g in self.groups.values() if g.kind == "symmetric"]
        if not candidates:
            raise self._unauthorized(f"no enrollment for registration {rid!r}")
        for enr, keys in candidates:
            res = check_sas(token, audience, keys, skn="registration")
            if res.reason not in (None, "signature mismatch"):
                raise self._unauthorized(res.reason)
            if res.ok:
                return enr, keys
        raise self._unauthorized("signature mismatch")

    def _authenticate_x509(self, call, rid):
        rec = call.rec
        rec.auth = "x509"
        leaf = call.client_cert
        with self._state_lock:
            enr = self.individual.get(rid.lower())
            groups = [g for g in self.groups.values() if g.kind == "x509"]
        if enr is not None:
            if enr.kind != "x509":
                raise self._unauthorized(f"{enr.kind} enrollment: a client certificate is not accepted")
            if enr.thumbprints and set(thumbprints(leaf)) & set(enr.thumbprints):
                _, reason = verify_chain(call.chain, [leaf])
            elif enr.ca_certs:
                _, reason = verify_chain(call.chain, enr.ca_certs)
            else:
                reason = "client certificate does not match the enrollment's thumbprint"
            if reason:
                raise self._unauthorized(reason)
        else:
            reason = f"no enrollment for registration {rid!r}"
            for g in groups:
                _, reason = verify_chain(call.chain, g.ca_certs)
                if reason is None:
                    enr = g
                    break
            if enr is None:
                raise self._unauthorized(reason)
        if self.x509_cn_must_match and common_name(leaf) != rid:
            raise self._unauthorized(f"certificate CN {common_name(leaf)!r} is not the registration id")
        return enr

    def _tpm_enrollment(self, rid, tpm):
        """The TPM enrollment of rid and the (EK, SRK) of the request; 401 unless the EK is enrolled."""
        with self._state_lock:
            enr = self.individual.get(rid.lower())
        if enr is None or enr.kind != "tpm":
            raise self._unauthorized(f"no TPM enrollment for registration {rid!r}")
        if not isinstance(tpm, dict):
            raise Refusal(400, "tpm must be an object")
        try:
            ek = base64.b64decode(tpm["endorsementKey"], validate=True)
            srk = base64.b64decode(tpm["storageRootKey"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise Refusal(400, "tpm needs endorsementKey and storageRootKey in base64") from None
        if ek != enr.endorsement_key:
            raise self._unauthorized("endorsementKey is not the enrolled one")
        return enr, (ek, srk)

    def _tpm_challenge(self, rid, ek, srk):
        import aziot_tpm
        key = secrets.token_bytes(32)
        try:
            blob = aziot_tpm.make_auth_key_blob(ek, srk, key)
        except ValueError as e:
            raise Refusal(400, f"storageRootKey: {e}") from None
        with self._state_lock:
            self._tpm_challenges[rid.lower()] = (key, ek, srk)
        return 401, {"authenticationKey": base64.b64encode(blob).decode()}, []

    def _csr(self, body, enr, rid):
        b64 = body.get("clientCertificateCsr")
        if b64 is None:
            return None
        if not enr.issue_client_cert:
            raise Refusal(400, CSR_NOT_CONFIGURED, code=400000)
        try:
            csr = x509.load_der_x509_csr(base64.b64decode(b64, validate=True))
        except (TypeError, ValueError, binascii.Error):
            raise Refusal(400, "clientCertificateCsr is not a base64 DER PKCS#10 request") from None
        if not csr.is_signature_valid:
            raise Refusal(400, "clientCertificateCsr: bad signature")
        if common_name(csr) != rid:
            raise Refusal(400, f"clientCertificateCsr: CN {common_name(csr)!r} is not the registration id")
        return csr

    # ---- operation status

    def _operation_status(self, call):
        scope, rid, op_id = call.params["scope"], call.params["rid"], call.params["op"]
        rec = call.rec
        rec.registration_id, rec.operation_id = rid, op_id
        with self._state_lock:
            op = self.operations.get(op_id)
        if op is None or op.scope != scope or op.registration_id.lower() != rid.lower():
            raise Refusal(404, f"operation {op_id} not found for registration {rid}")
        rec.principal = op.enrollment.name
        if op.auth in ("sas", "tpm"):
            rec.auth = "sas"
            token = call.header("Authorization")
            if token is None:
                raise self._unauthorized("no SAS token")
            res = check_sas(token, f"{scope}/registrations/{rid}", op.keys, skn="registration",
                            check_expiry=self.check_expiry_on_status)
            rec.sas, rec.expired_token = res.fields, res.expired
            if not res:
                raise self._unauthorized(res.reason)
        else:
            rec.auth = "x509"
            if call.client_cert is None:
                raise self._unauthorized("no client certificate")
            if call.client_cert.public_bytes(serialization.Encoding.DER) != op.cert_der:
                raise self._unauthorized("not the certificate the registration was made with")
        with self._state_lock:
            op.polls += 1
            if op.polls_left > 0:
                op.polls_left -= 1
                return 202, {"operationId": op.id, "status": "assigning",
                             "registrationState": {"registrationId": rid, "status": "assigning"}}, \
                    self._retry_after_headers()
            if op.result is None:
                op.result = self._finish(op)
            return 200, copy.deepcopy(op.result), []

    def _finish(self, op):
        """The outcome of an operation; on assignment, the device is created in the hub's registry."""
        enr, rid = op.enrollment, op.registration_id
        payload = None if op.payload is _UNSET else op.payload
        now = utc_iso()
        state = {"registrationId": rid, "createdDateTimeUtc": op.created}
        outcome = enr.outcome if enr.enabled else "disabled"
        if outcome == "assigned":
            hub = enr.assigned_hub(rid, payload) if callable(enr.assigned_hub) else enr.assigned_hub
            if hub is None:
                hub = self.default_hub or (self.hubs[0].hostname if self.hubs else "localhost")
            dev = enr.device_id(rid, payload) if callable(enr.device_id) else enr.device_id
            if dev is None:
                dev = rid
            elif dev == NEW_UUID:
                dev = str(uuid.uuid4())
            state.update(assignedHub=hub, deviceId=dev, status="assigned", substatus="initialAssignment")
            if enr.response_payload is _UNSET:
                if op.payload is not _UNSET:
                    state["payload"] = op.payload
            else:
                rp = enr.response_payload
                state["payload"] = rp(payload) if callable(rp) else rp
            hub_keys, hub_thumbprints, hub_cas = None, (), ()
            if enr.kind == "symmetric":
                hub_keys = enr.keys_for(rid)
            elif enr.kind == "tpm":
                key = op.keys[0]
                if enr.tpm_reissue_key and op.tpm is not None:
                    import aziot_tpm
                    key = secrets.token_bytes(32)
                    blob = aziot_tpm.make_auth_key_blob(op.tpm[0], op.tpm[1], key)
                    state["tpm"] = {"authenticationKey": base64.b64encode(blob).decode()}
                hub_keys = (base64.b64encode(key).decode(), random_key())
            elif enr.thumbprints and op.cert_der is not None and set(
                    thumbprints(x509.load_der_x509_certificate(op.cert_der))) & set(enr.thumbprints):
                hub_thumbprints = (thumbprints(x509.load_der_x509_certificate(op.cert_der))[0],)
            else:
                hub_cas = enr.ca_certs
            if op.csr is not None:
                issuing = self.issuing_ca
                cert = self.pki.sign_csr(op.csr, issuing)
                state["issuedClientCertificate"] = base64.b64encode(
                    cert.public_bytes(serialization.Encoding.DER)).decode()
                hub_cas = list(hub_cas) + [issuing.cert]
                state["trustBundle"] = {"certificates": [{"certificate": _pem(c).decode()}
                                                         for c in enr.trust_bundle],
                                        "etag": secrets.token_hex(4)}
                state["deviceCertificateIssuanceSettings"] = {
                    "certificateType": "serverCertificate" if enr.server_certificates else "none"}
            registry = self._registry_for(hub)
            if registry is not None:
                registry.provision_device(dev, keys=hub_keys, thumbprints=hub_thumbprints, ca_certs=hub_cas)
        elif outcome == "failed":
            state.update(status="failed", errorCode=enr.error_code, errorMessage=enr.error_message)
        else:
            state["status"] = outcome
        state.update(lastUpdatedDateTimeUtc=now, etag=f'"{secrets.token_hex(8)}"')
        with self._state_lock:
            self.registrations[rid.lower()] = copy.deepcopy(state)
        return {"operationId": op.id, "status": outcome, "registrationState": state}

    def _registry_for(self, hostname):
        for r in self.hubs:
            if r.hostname is not None and r.hostname.lower() == str(hostname).lower():
                return r
        return None

    # ---- §3.8 server certificate issuance

    @property
    def issuing_ca(self):
        """The CA that signs DPS-issued certificates (§3.8), created on first use."""
        if getattr(self, "_issuing_ca", None) is None:
            self._issuing_ca = self.pki.make_ca("dps-issuing-ca", "Mock DPS Issuing CA", reuse=True)
        return self._issuing_ca

    def _authenticate_issued(self, call, rid):
        call.rec.auth = "x509"
        _, reason = verify_chain(call.chain, [self.issuing_ca.cert])
        if reason is None and common_name(call.client_cert) != rid:
            reason = "certificate CN is not the registration id"
        if reason:
            raise self._unauthorized(reason)
        call.rec.principal = rid

    def _issue_certificate(self, call):
        scope, rid = call.params["scope"], call.params["rid"]
        self._authenticate_issued(call, rid)
        body = call.json_body()
        if not isinstance(body, dict) or body.get("certificateType") != "serverCertificate":
            raise Refusal(400, "certificateType must be serverCertificate")
        try:
            csr = x509.load_der_x509_csr(base64.b64decode(body.get("csr") or "", validate=True))
        except (TypeError, ValueError, binascii.Error):
            raise Refusal(400, "csr is not a base64 DER PKCS#10 request") from None
        if not csr.is_signature_valid:
            raise Refusal(400, "csr: bad signature")
        op_id = str(uuid.uuid4())
        with self._state_lock:
            self._issue_ops[op_id] = dict(scope=scope, rid=rid, csr=csr, polls_left=self.issue_polls,
                                          cid=None)
        return 202, {"operationId": op_id}, []

    def _issue_status(self, call):
        scope, rid, op_id = call.params["scope"], call.params["rid"], call.params["op"]
        self._authenticate_issued(call, rid)
        with self._state_lock:
            op = self._issue_ops.get(op_id)
            if op is None or op["scope"] != scope or op["rid"] != rid:
                raise Refusal(404, f"operation {op_id} not found")
            if op["polls_left"] > 0:
                op["polls_left"] -= 1
                return 202, {"status": "running"}, []
            if op["cid"] is None:
                cert = self.pki.sign_csr(op["csr"], self.issuing_ca, eku=(ExtendedKeyUsageOID.SERVER_AUTH,),
                                         copy_san=True)
                op["cid"] = secrets.token_hex(8)
                self._issued[op["cid"]] = (rid, cert)
        host = call.header("Host") or f"{self.host}:{self.port}"
        return 200, {"status": "succeeded",
                     "resourceLocation": f"https://{host}/{scope}/devices/{rid}/certificates/{op['cid']}"}, []

    def _issued_certificate(self, call):
        rid, cid = call.params["rid"], call.params["cid"]
        self._authenticate_issued(call, rid)
        with self._state_lock:
            got = self._issued.get(cid)
        if got is None or got[0] != rid:
            raise Refusal(404, f"certificate {cid} not found")
        return 200, {"issuedCertificate": _pem(got[1]).decode(),
                     "certificateChain": [_pem(c).decode() for c in self.issuing_ca.chain]}, []

    # ---- control channel

    def control(self, method, path, arg):
        if method == "GET" and path == "/enrollments":
            with self._state_lock:
                return [e.to_json() for e in list(self.individual.values()) + list(self.groups.values())]
        if method == "POST" and path == "/enrollments":
            return self.add_enrollment(arg).to_json()
        if method == "POST" and path == "/remove-enrollment":
            return {"removed": self.remove_enrollment(arg["name"], arg.get("group", False)) is not None}
        if method == "GET" and path == "/registrations":
            with self._state_lock:
                return copy.deepcopy(self.registrations)
        raise KeyError(path)


def _snake(name):
    """assigningPolls → assigning_polls (snake_case passes through)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


# ------------------------------------------------------------------------------------------------
# CLI

def main(argv=None):
    ap = script_parser("Mock Azure DPS for the identityd tests.")
    ap.add_argument("--scope", default="0ne00000001", help="the ID scope")
    ap.add_argument("--with-hub", action="store_true", help="also run a mock IoT Hub sharing the registry")
    ap.add_argument("--hub-port", type=int, default=0)
    ap.add_argument("--hub-hostname", help="the hub name assigned and in SAS audiences (localhost:PORT)")
    ap.add_argument("--symmetric", action="append", default=[], metavar="RID[=KEY]")
    ap.add_argument("--group", action="append", default=[], metavar="GID[=KEY]", help="a symmetric-key group")
    ap.add_argument("--x509", action="append", default=[], metavar="RID=CERT.pem", help="by thumbprint")
    ap.add_argument("--x509-ca", action="append", default=[], metavar="RID=CA.pem",
                    help="individual, CA-signed")
    ap.add_argument("--x509-group", action="append", default=[], metavar="GID=CA.pem")
    ap.add_argument("--tpm", action="append", default=[], metavar="RID=EK.pub",
                    help="EK.pub: the EK's marshalled TPM2B_PUBLIC (tpm2_readpublic -o)")
    ap.add_argument("--assigning-polls", type=int, default=0)
    ap.add_argument("--device-id", help="assigned device id for every enrollment (new-uuid: fresh each time)")
    add_script_options(ap, "dps-requests.jsonl", control_help="start the control channel(s)")
    a = ap.parse_args(argv)

    hub = None
    if a.with_hub:
        hub = mock_hub.MockHub(a.dir, hostname=a.hub_hostname, port=a.hub_port, host=a.host,
                               verbose=a.verbose, log_path=os.path.join(a.dir, "hub-requests.jsonl"))
    dps = MockDps(a.dir, id_scope=a.scope, hub=hub, port=a.port, host=a.host, verbose=a.verbose,
                  log_path=a.log or os.path.join(a.dir, "dps-requests.jsonl"))
    opts = dict(assigning_polls=a.assigning_polls, device_id=a.device_id)
    keys = []
    for spec in a.symmetric:
        rid, _, key = spec.partition("=")
        e = dps.add_symmetric_key(rid, primary_key=key or None, **opts)
        keys.append(f"KEY_{rid}={e.primary_key}")
    for spec in a.group:
        gid, _, key = spec.partition("=")
        e = dps.add_symmetric_key_group(gid, primary_key=key or None, **opts)
        keys.append(f"GROUP_KEY_{gid}={e.primary_key}")
    for spec in a.x509:
        rid, _, path = spec.partition("=")
        dps.add_x509(rid, cert=path, **opts)
    for spec in a.x509_ca:
        rid, _, path = spec.partition("=")
        dps.add_x509(rid, ca=path, **opts)
    for spec in a.x509_group:
        gid, _, path = spec.partition("=")
        dps.add_x509_group(gid, ca=path, **opts)
    for spec in a.tpm:
        rid, _, path = spec.partition("=")
        with open(path, "rb") as f:
            dps.add_tpm(rid, f.read(), **opts)

    def lines():
        out = [f"URL={dps.url}", f"PORT={dps.port}", f"SCOPE={dps.id_scope}",
               f"SERVER_CA={dps.server_ca_path}", f"LOG={dps.log_path}"] + keys
        if hub is not None:
            out += [f"HUB_URL={hub.url}", f"HUB_PORT={hub.port}", f"HUB_HOSTNAME={hub.hostname}",
                    f"HUB_LOG={hub.log_path}"]
        if a.control:
            out.append(f"CONTROL_URL={dps.start_control(a.control_port)}")
            if hub is not None:
                out.append(f"HUB_CONTROL_URL={hub.start_control()}")
        return out
    return run_script_servers([s for s in (hub, dps) if s is not None], lines)


if __name__ == "__main__":
    sys.exit(main())
