# SPDX-License-Identifier: MIT
"""The aziot-dbus services on a test Stack (aziot_harness.Stack): what `./dev up`, `./dev bench` and
the gateway tests run.

    stack = aziot_harness.Stack(run_dir, source_dir, build_dir)
    with stack:
        services = KeysServices(stack)
        services.start()                 # keyd (D-Bus activatable) + the gateway on keyd.sock
        services.keyd_socket             # path of the HTTP socket

State lives under run_dir: keyd's home in run_dir/keyd, its configuration in run_dir/config/keyd,
sockets in run_dir/sockets.

With token= (an aziot_tokens token: softhsm2, tpm2-pkcs11), keyd's configuration names its module
(pkcs11_lib_path) and the token as pkcs11_base_slot, so new keys are created on the token.

CertsServices and TpmServices do the same for certd (certd.sock) and tpmd (tpmd.sock, with the
TPM named by a TCTI string: aziot_tpm.Swtpm(...).tcti for a simulator); IdentityServices for
identityd (identityd.sock), whose configuration the caller writes, next to keyd and certd.
"""

import json
import os
import shutil
import subprocess
import sys

import aziot_harness

KEYS_BUS_NAME = "org.aziot.Keys1"


class _Service:
    """What a service on the test stack has: its home run_dir/<name>, its configuration
    run_dir/config/<name> (config.toml + config.d), its socket run_dir/sockets/<name>.sock served
    by a gateway, and the AZIOT_<NAME>_CONFIG variables that point both at that configuration."""

    name = None         # "keyd", "certd", "tpmd"
    bus_name = None
    binary_path = None  # below the build directory

    def __init__(self, stack, args=(), env=None, gateway_env=None, principals=()):
        self.stack = stack
        self.run_dir = stack.run_dir
        self.build_dir = stack.build_dir
        self.home = os.path.join(self.run_dir, self.name)
        self.config_dir = os.path.join(self.run_dir, "config", self.name)
        self.config_file = os.path.join(self.config_dir, "config.toml")
        self.config_d = os.path.join(self.config_dir, "config.d")
        self.socket_dir = os.path.join(self.run_dir, "sockets")
        self.socket = os.path.join(self.socket_dir, f"{self.name}.sock")
        self.args = list(args)
        self.env = dict(env or {})
        self.gateway_env = dict(gateway_env or {})
        self.principals = list(principals)
        self.gateway = None

    @property
    def binary(self):
        return os.path.join(self.build_dir, *self.binary_path)

    @property
    def gateway_binary(self):
        return os.path.join(self.build_dir, "gateway", "aziot-gatewayd")

    def config_env(self):
        upper = self.name.upper()
        return {f"AZIOT_{upper}_CONFIG": self.config_file,
                f"AZIOT_{upper}_CONFIG_DIR": self.config_d}

    def make_dirs(self):
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        os.makedirs(self.config_d, mode=0o700, exist_ok=True)
        os.makedirs(self.socket_dir, mode=0o755, exist_ok=True)

    def write_service_file(self, extra_env=None):
        env = {**self.config_env(), **(extra_env or {}), **self.env}
        self.stack.write_service_file(self.bus_name, [self.binary, *self.args], env=env)

    def start_gateway(self, process_name="gateway"):
        env = {**self.config_env(), **self.gateway_env}
        self.gateway = self.stack.start_process(
            process_name, [self.gateway_binary, f"--{self.name}-socket", self.socket], env=env)
        aziot_harness._wait_until(lambda: os.path.exists(self.socket), 10,
                                  f"the gateway's {self.name} socket",
                                  on_timeout=lambda: self.gateway.log())
        return self.gateway


class KeysServices(_Service):
    name = "keyd"
    bus_name = KEYS_BUS_NAME
    binary_path = ("services", "keys", "aziot-keyd")

    def __init__(self, stack, keyd_args=(), keyd_env=None, gateway_env=None, principals=(),
                 token=None, extra_config=""):
        super().__init__(stack, keyd_args, keyd_env, gateway_env, principals)
        self.keyd_home, self.keyd_socket = self.home, self.socket
        self.token = token
        self.extra_config = extra_config
        if token is not None:
            self.env = {**token.env, **self.env}

    @property
    def keyd_binary(self):
        return self.binary

    def write_config(self, max_requests=None):
        self.make_dirs()
        lines = []
        if max_requests is not None:
            lines.append(f"max_requests = {int(max_requests)}")
        lines += ["[aziot_keys]", f'homedir_path = "{self.keyd_home}"']
        if self.token is not None:
            lines += [f'pkcs11_lib_path = "{self.token.module}"',
                      f'pkcs11_base_slot = "{self.token.uri()}"']
        lines.append("")
        if self.extra_config:
            lines += [self.extra_config, ""]
        for uid, globs in self.principals:
            quoted = ", ".join(f'"{g}"' for g in globs)
            lines += ["[[principal]]", f"uid = {int(uid)}", f"keys = [{quoted}]", ""]
        with open(self.config_file, "w") as f:
            f.write("\n".join(lines))

    def start(self, max_requests=None, gateway=True):
        self.write_config(max_requests)
        self.write_service_file()
        if gateway:
            self.start_gateway()

    def describe(self):
        sock = self.keyd_socket
        token = []
        if self.token is not None:
            env = " ".join(f"{k}={v}" for k, v in self.token.env.items())
            token = [f"              new keys on PKCS#11 token {self.token.uri(pin=False)}",
                     f"              list them: {env} pkcs11-tool --module {self.token.module} "
                     f"--token-label {self.token.label} --login --pin {self.token.pin} -O"]
        return "\n".join([
            f"  keyd        D-Bus activatable as {KEYS_BUS_NAME}, home {self.keyd_home}",
            f"              config {self.config_file} (+ {self.config_d}/*.toml)",
            *token,
            f"  gateway     {sock}",
            "",
            "Try:",
            f"  curl -s --unix-socket {sock} -X POST -H 'Content-Type: application/json' \\",
            "       -d '{\"keyId\": \"demo\", \"usage\": \"sign\"}' \\",
            "       'http://keyd.sock/key?api-version=2021-05-01'",
            f"  curl -s --unix-socket {sock} -X POST -H 'Content-Type: application/json' \\",
            "       -d '{\"keyHandle\": \"<keyHandle from above>\", \"algorithm\": \"HMAC-SHA256\", "
            "\"parameters\": {\"message\": \"aGVsbG8=\"}}' \\",
            "       'http://keyd.sock/sign?api-version=2021-05-01'",
            "  busctl --system introspect org.aziot.Keys1 /org/aziot/Keys1",
        ])


def apply_super_config(stack, services, super_config):
    """What an administrator does, under run_dir/root: the super-config written to
    etc/aziot/config.toml there and `aziotctl config apply` run on it (AZIOTCTL_ROOT), each
    service's 00-super.toml then put into its config.d, with 99-run-dir.toml after it for what
    names the device's real paths (homes under /var/lib/aziot, /var/secrets): the run directory's
    instead. services: {"keyd": KeysServices, …}."""
    root = os.path.join(stack.run_dir, "root")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "etc", "aziot"), mode=0o755)
    with open(os.path.join(root, "etc", "aziot", "config.toml"), "w") as f:
        f.write(super_config)
    aziot_harness.ensure_test_users(("aziotks", "aziotcs", "aziotid", "aziottpm"))
    r = subprocess.run([os.path.join(stack.build_dir, "tools", "aziotctl", "aziotctl"), "config",
                        "apply"], env={**os.environ, "AZIOTCTL_ROOT": root},
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"aziotctl config apply failed:\n{r.stdout}{r.stderr}")
    secret = os.path.join(root, "var", "secrets", "aziot", "keyd", "device-id")
    overrides = {
        "keyd": ["[aziot_keys]", f"homedir_path = {_toml_string(services['keyd'].home)}", "",
                 "[preloaded_keys]", f"device-id = {_toml_string('file://' + secret)}"],
        "certd": [f"homedir_path = {_toml_string(services['certd'].home)}"],
        "identityd": [f"homedir = {_toml_string(services['identityd'].home)}"],
    }
    for name, service in services.items():
        service.make_dirs()
        shutil.copyfile(os.path.join(root, "etc", "aziot", name, "config.d", "00-super.toml"),
                        os.path.join(service.config_d, "00-super.toml"))
        with open(os.path.join(service.config_d, "99-run-dir.toml"), "w") as f:
            f.write("\n".join(overrides[name]) + "\n")


def up(stack):
    """Hook for `aziot_harness.py up --hook`: what `./dev up` runs — keyd, certd and identityd (D-Bus
    activatable), the mock DPS and IoT Hub (tests/cloud, in this process) with an enrollment for
    the device, and one gateway serving keyd.sock, certd.sock and identityd.sock. identityd
    provisions the device through DPS with a symmetric key held by keyd, so that the identity
    routes answer with a real identity; the services' configuration is what `aziotctl config
    apply` makes of a super-config (run_dir/root/etc/aziot/config.toml). AZIOT_UP_PKCS11=1 (`./dev up --pkcs11`): keys on a
    softhsm2 token made for the occasion under the run directory."""
    sys.path.insert(0, os.path.join(stack.source_dir, "tests", "cloud"))
    import mock_dps
    import mock_hub

    token = None
    if os.environ.get("AZIOT_UP_PKCS11") == "1":
        import aziot_tokens
        token = aziot_tokens.SoftHsmToken(os.path.join(stack.run_dir, "softhsm"), label="aziot")
    cloud_dir = os.path.join(stack.run_dir, "cloud")
    hub = mock_hub.MockHub(os.path.join(cloud_dir, "hub"))
    dps = mock_dps.MockDps(os.path.join(cloud_dir, "dps"), id_scope="0ne00000DEV", hub=hub)
    hub.start()
    dps.start()
    enrollment = dps.add_symmetric_key("my-device")
    ca_bundle = os.path.join(cloud_dir, "ca.pem")
    with open(ca_bundle, "w") as out:
        for path in (hub.server_ca_path, dps.server_ca_path):
            with open(path) as f:
                out.write(f.read())

    keys = KeysServices(stack, token=token)
    certs = CertsServices(stack)
    identity = IdentityServices(stack, "", ssl_cert_file=ca_bundle)
    apply_super_config(stack, {"keyd": keys, "certd": certs, "identityd": identity}, (
        'hostname = "my-device"\n\n[provisioning]\nsource = "dps"\n'
        f'global_endpoint = "{dps.url}/"\nid_scope = "0ne00000DEV"\n\n'
        '[provisioning.attestation]\nmethod = "symmetric_key"\nregistration_id = "my-device"\n'
        f'symmetric_key = {{ value = "{enrollment.primary_key}" }}\n'))
    keys.start(gateway=False)
    certs.start(gateway=False)
    identity.start(gateway=False)
    sockets = (keys.keyd_socket, certs.certd_socket, identity.identityd_socket)
    gateway = stack.start_process(
        "gateway", [keys.gateway_binary, "--keyd-socket", keys.keyd_socket,
                    "--certd-socket", certs.certd_socket,
                    "--identityd-socket", identity.identityd_socket],
        env={**keys.config_env(), **certs.config_env(), **identity.config_env()})
    for sock in sockets:
        aziot_harness._wait_until(lambda: os.path.exists(sock), 10, f"the gateway's {sock}",
                                  on_timeout=gateway.log)
    state = identity.wait_state("provisioned", "failed")
    print(keys.describe(), flush=True)
    print("\n".join([
        f"  certd       D-Bus activatable as {CERTS_BUS_NAME}, home {certs.certd_home}",
        f"              config {certs.config_file} (+ {certs.config_d}/*.toml)",
        f"  identityd   D-Bus activatable as {IDENTITY_BUS_NAME}, home {identity.identityd_home}",
        f"              config {identity.config_file} (+ {identity.config_d}/*.toml): {state}",
        f"  super-config {os.path.join(stack.run_dir, 'root', 'etc', 'aziot', 'config.toml')}"
        " (aziotctl config apply, AZIOTCTL_ROOT=" + os.path.join(stack.run_dir, "root") + ")",
        f"  mock DPS    {dps.url} (scope 0ne00000DEV, enrollment my-device)",
        f"  mock Hub    {hub.url} ({hub.hostname})",
        f"  gateway     {', '.join(sockets[1:])}",
        "",
        "Try:",
        f"  curl -s --unix-socket {identity.identityd_socket} "
        "'http://identityd.sock/identities/identity?api-version=2020-09-01'",
        f"  curl -s --unix-socket {certs.certd_socket} "
        "'http://certd.sock/certificates/demo?api-version=2020-09-01'",
        "  busctl --system tree org.aziot.Identity1",
    ]), flush=True)
    return keys, certs, identity, dps, hub, token


CERTS_BUS_NAME = "org.aziot.Certificates1"


class CertsServices(_Service):
    """certd (D-Bus activatable, with the OpenSSL provider of the build for keys held by keyd) and
    the gateway on certd.sock, next to a KeysServices started without its gateway. certd's home is
    run_dir/certd, its configuration run_dir/config/certd (principals: config.d/principals.toml,
    rewritable by tests), its socket run_dir/sockets/certd.sock. extra_config: TOML appended to
    config.toml after certd's own keys (tables such as [preloaded_certs], [cert_issuance.*])."""

    name = "certd"
    bus_name = CERTS_BUS_NAME
    binary_path = ("services", "certs", "aziot-certd")

    def __init__(self, stack, certd_args=(), certd_env=None, gateway_env=None, principals=(),
                 extra_config=""):
        super().__init__(stack, certd_args, certd_env, gateway_env, principals)
        self.certd_home, self.certd_socket = self.home, self.socket
        self.extra_config = extra_config

    @property
    def certd_binary(self):
        return self.binary

    @property
    def provider_dir(self):
        return os.path.join(self.build_dir, "provider")

    def write_principals(self, entries):
        """Replaces config.d/principals.toml (atomically) with [[principal]] uid, certs globs."""
        text = "".join(f"[[principal]]\nuid = {int(uid)}\ncerts = [" +
                       ", ".join(f'"{g}"' for g in globs) + "]\n\n" for uid, globs in entries)
        tmp = os.path.join(self.config_dir, ".principals.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.config_d, "principals.toml"))

    def write_config(self, max_requests=None):
        self.make_dirs()
        lines = []
        if max_requests is not None:
            lines.append(f"max_requests = {int(max_requests)}")
        lines += [f'homedir_path = "{self.certd_home}"', ""]
        if self.extra_config:
            lines += [self.extra_config, ""]
        with open(self.config_file, "w") as f:
            f.write("\n".join(lines))
        self.write_principals(self.principals)

    def start(self, max_requests=None, gateway=True):
        self.write_config(max_requests)
        self.write_service_file({"OPENSSL_MODULES": self.provider_dir})
        if gateway:
            self.start_gateway("gateway-certd")


TPM_BUS_NAME = "org.aziot.Tpm1"


def _toml_string(text):
    """A TOML basic string: JSON escapes the quote, the backslash and the control characters as
    TOML does, except DEL, which TOML wants escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


class TpmServices(_Service):
    """tpmd (D-Bus activatable) on the TPM that tcti names (a TCTI loader string, such as
    aziot_tpm.Swtpm(...).tcti), and the gateway on tpmd.sock. tpmd keeps its state in the TPM
    alone: it has no home. Its configuration is run_dir/config/tpmd/config.toml: max_requests
    (tpmd's MaxRequests), tcti, then extra_config (auth_key_index, [hierarchy_authorization]);
    its socket run_dir/sockets/tpmd.sock. tpmd_binary: the tpmd to run, if not the one below the
    build directory."""

    name = "tpmd"
    bus_name = TPM_BUS_NAME
    binary_path = ("services", "tpm", "aziot-tpmd")

    def __init__(self, stack, tcti, tpmd_args=(), tpmd_env=None, gateway_env=None,
                 extra_config="", tpmd_binary=None):
        super().__init__(stack, tpmd_args, tpmd_env, gateway_env)
        self.tpmd_socket = self.socket
        self.tcti = tcti
        self.extra_config = extra_config
        self._tpmd_binary = tpmd_binary

    @property
    def binary(self):
        """tpmd_binary if given, else tpmd below the build directory."""
        return self._tpmd_binary or super().binary

    @property
    def tpmd_binary(self):
        return self.binary

    def make_dirs(self):
        os.makedirs(self.config_d, mode=0o700, exist_ok=True)
        os.makedirs(self.socket_dir, mode=0o755, exist_ok=True)

    def write_config(self, max_requests=None):
        self.make_dirs()
        lines = []
        if max_requests is not None:
            lines.append(f"max_requests = {int(max_requests)}")
        lines += [f"tcti = {_toml_string(self.tcti)}", ""]
        if self.extra_config:
            lines += [self.extra_config, ""]
        with open(self.config_file, "w") as f:
            f.write("\n".join(lines))

    def start(self, max_requests=None, gateway=True):
        self.write_config(max_requests)
        self.write_service_file()
        if gateway:
            self.start_gateway("gateway-tpmd")


IDENTITY_BUS_NAME = "org.aziot.Identity1"


class IdentityServices(_Service):
    """identityd (D-Bus activatable, with the OpenSSL provider of the build for keys held by keyd)
    and the gateway on identityd.sock, next to KeysServices and CertsServices started without
    their gateways. identityd's home is run_dir/identityd, its configuration
    run_dir/config/identityd: config.toml is max_requests (identityd's MaxRequests), homedir, then
    the given config text (hostname, [provisioning], [localid], [[principal]] …, everything but
    homedir); config.d/principals.toml is for write_principals(). ssl_cert_file: the CA bundle
    identityd trusts for DPS and IoT Hub (SSL_CERT_FILE), e.g. the mock clouds' CAs. Its socket
    is run_dir/sockets/identityd.sock.

    identityd provisions the device when it starts, that is when it is first called: state()
    reads its ProvisioningState (starting it), wait_state() waits for one of the given states."""

    name = "identityd"
    bus_name = IDENTITY_BUS_NAME
    binary_path = ("services", "identity", "aziot-identityd")

    def __init__(self, stack, config, identityd_args=(), identityd_env=None, gateway_env=None,
                 ssl_cert_file=None):
        super().__init__(stack, identityd_args, identityd_env, gateway_env)
        self.identityd_home, self.identityd_socket = self.home, self.socket
        self.config = config
        self.ssl_cert_file = ssl_cert_file

    @property
    def identityd_binary(self):
        return self.binary

    @property
    def provider_dir(self):
        return os.path.join(self.build_dir, "provider")

    def write_config(self, config=None, max_requests=None):
        """Writes config.toml (atomically: identityd reloads it when it changes) from config, or
        the text given at construction."""
        if config is not None:
            self.config = config
        self.make_dirs()
        lines = []
        if max_requests is not None:
            lines.append(f"max_requests = {int(max_requests)}")
        lines += [f"homedir = {_toml_string(self.identityd_home)}", "", self.config, ""]
        tmp = os.path.join(self.config_dir, ".config.tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(lines))
        os.rename(tmp, self.config_file)

    def write_principals(self, text):
        """Replaces config.d/principals.toml (atomically) with text ([[principal]] tables)."""
        self.make_dirs()
        tmp = os.path.join(self.config_dir, ".principals.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.config_d, "principals.toml"))

    def start(self, max_requests=None, gateway=True):
        self.write_config(max_requests=max_requests)
        env = {"OPENSSL_MODULES": self.provider_dir}
        if self.ssl_cert_file is not None:
            env["SSL_CERT_FILE"] = self.ssl_cert_file
        self.write_service_file(env)
        if gateway:
            self.start_gateway("gateway-identityd")

    def state(self):
        """identityd's ProvisioningState ("provisioning", "provisioned", "offline", …)."""
        return str(self.stack.bus().call_blocking(
            IDENTITY_BUS_NAME, "/org/aziot/Identity1", "org.freedesktop.DBus.Properties", "Get",
            "ss", ("org.aziot.Identity1", "ProvisioningState"), timeout=30))

    def wait_state(self, *states, timeout=60):
        """Waits until ProvisioningState is one of states; returns it."""
        aziot_harness._wait_until(lambda: self.state() in states, timeout,
                                  f"identityd's ProvisioningState in {states}")
        return self.state()
