#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What `meson install` puts where: the exact list of files with their modes, the default
configurations (installed once, never over the device's own), and that the pieces name each other
consistently (activation files and units, units and users, sockets and the gateway, bus policy and
the gateway's user)."""

import os
import shutil
import stat
import sys
import tempfile
import tomllib
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sysroot  # noqa: E402
from sysroot import BUS_NAMES, MEMBERSHIPS, SERVICE_USERS, SERVICES  # noqa: E402

ACTIVATION_NAMES = {"keyd": "org.aziot.Keys1", "certd": "org.aziot.Certificates1",
                    "identityd": "org.aziot.Identity1", "tpmd": "org.aziot.Tpm1"}
POLKIT = ("keys", "certs", "identity", "tpm")
EXECUTABLE = 0o755
READABLE = 0o644


def expected_tree(p):
    """{installed path: mode} of everything the build installs."""
    files = {}
    for name in ("aziot-keyd", "aziot-certd", "aziot-identityd", "aziot-tpmd", "aziot-gatewayd"):
        files[os.path.join(p["libexecdir"], name)] = EXECUTABLE
    files[os.path.join(p["bindir"], "aziotctl")] = EXECUTABLE
    files[os.path.join(p["modulesdir"], "aziot.so")] = EXECUTABLE
    dbus = os.path.join(p["datadir"], "dbus-1")
    for name in BUS_NAMES.values():
        files[os.path.join(dbus, "interfaces", name + ".xml")] = READABLE
        files[os.path.join(dbus, "system.d", name + ".conf")] = READABLE
        files[os.path.join(dbus, "system-services", name + ".service")] = READABLE
    for name in POLKIT:
        files[os.path.join(p["datadir"], "polkit-1", "actions", f"org.aziot.{name}.policy")] = \
            READABLE
    files[os.path.join(p["datadir"], "polkit-1", "rules.d", "org.aziot.tpm.rules")] = READABLE
    for svc in SERVICES:
        files[os.path.join(p["unitdir"], f"aziot-{svc}.service")] = READABLE
        files[os.path.join(p["unitdir"], f"aziot-{svc}.socket")] = READABLE
        files[os.path.join(p["sysconfdir"], "aziot", svc, "config.toml.default")] = READABLE
        files[os.path.join(p["sysconfdir"], "aziot", svc, "config.toml")] = 0o600
    files[os.path.join(p["sysconfdir"], "aziot", "config.toml.template")] = 0o600
    files[os.path.join(p["unitdir"], "aziot-gatewayd.service")] = READABLE
    files[os.path.join(p["sysusersdir"], "aziot-dbus.conf")] = READABLE
    if p["man"] == "true":
        for page in os.listdir(os.path.join(sysroot.env("AZIOT_SOURCE_DIR"), "docs", "man")):
            section = page.rsplit(".", 1)[-1]
            if section.isdigit():
                files[os.path.join(p["mandir"], "man" + section, page)] = READABLE
    files[os.path.join(p["tmpfilesdir"], "aziot-dbus.conf")] = READABLE
    return files


def single(unit, section, key):
    values = unit.get(section, {}).get(key, [])
    if len(values) != 1:
        raise AssertionError(f"{section}/{key}: expected one value, got {values}")
    return values[0]


class InstallTreeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="aziot-install-")
        cls.dest = sysroot.install(os.path.join(cls.tmp, "dest"))
        cls.p = sysroot.installed_paths()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, *parts):
        return sysroot.in_dest(self.dest, os.path.join(*parts))

    def unit(self, name):
        return sysroot.read_unit(self.path(self.p["unitdir"], name))

    def etc(self, svc, name):
        return self.path(self.p["sysconfdir"], "aziot", svc, name)

    # --- the tree ---------------------------------------------------------------------------

    def test_installed_files_and_modes(self):
        found = {}
        for root, dirs, files in os.walk(self.dest):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                full = os.path.join(root, name)
                st = os.lstat(full)
                self.assertTrue(stat.S_ISREG(st.st_mode), f"{full} is not a regular file")
                self.assertEqual((st.st_uid, st.st_gid), (0, 0), full)
                found["/" + os.path.relpath(full, self.dest)] = stat.S_IMODE(st.st_mode)
        expected = expected_tree(self.p)
        self.assertEqual(sorted(set(found) - set(expected)), [], "installed but not expected")
        self.assertEqual(sorted(set(expected) - set(found)), [], "expected but not installed")
        wrong = {f: (oct(found[f]), oct(m)) for f, m in expected.items() if found[f] != m}
        self.assertEqual(wrong, {}, "(installed mode, expected mode)")

    def test_default_configurations(self):
        state = os.path.join(self.p["localstatedir"], "lib", "aziot")
        defaults = {}
        for svc in SERVICES:
            with open(self.etc(svc, "config.toml.default"), "rb") as f:
                defaults[svc] = tomllib.load(f)
            with open(self.etc(svc, "config.toml"), "rb") as f:
                self.assertEqual(tomllib.load(f), defaults[svc], svc)
        self.assertEqual(defaults["keyd"],
                         {"aziot_keys": {"homedir_path": os.path.join(state, "keyd")}})
        self.assertEqual(defaults["certd"], {"homedir_path": os.path.join(state, "certd")})
        self.assertEqual(defaults["identityd"],
                         {"hostname": "localhost", "homedir": os.path.join(state, "identityd"),
                          "provisioning": {"source": "none"}})
        self.assertEqual(defaults["tpmd"], {"tcti": "device"})

    def test_reinstall_keeps_the_configuration(self):
        dest = os.path.join(self.tmp, "again")
        sysroot.install(dest)
        keyd = sysroot.in_dest(dest, os.path.join(self.p["sysconfdir"], "aziot", "keyd"))
        certd = sysroot.in_dest(dest, os.path.join(self.p["sysconfdir"], "aziot", "certd"))
        mine = '[aziot_keys]\nhomedir_path = "/srv/keys"\n'
        with open(os.path.join(keyd, "config.toml"), "w") as f:
            f.write(mine)
        os.chmod(os.path.join(keyd, "config.toml"), 0o640)
        with open(os.path.join(keyd, "config.toml.default"), "a") as f:
            f.write("# changed\n")
        os.unlink(os.path.join(certd, "config.toml"))

        sysroot.install(dest)
        with open(os.path.join(keyd, "config.toml")) as f:
            self.assertEqual(f.read(), mine)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(keyd, "config.toml")).st_mode), 0o640)
        with open(os.path.join(keyd, "config.toml.default")) as f, \
                open(self.etc("keyd", "config.toml.default")) as g:
            self.assertEqual(f.read(), g.read(), "the reference is brought up to date")
        with open(os.path.join(certd, "config.toml")) as f, \
                open(self.etc("certd", "config.toml.default")) as g:
            self.assertEqual(f.read(), g.read(), "a missing configuration is installed again")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(certd, "config.toml")).st_mode), 0o600)

    # --- how the pieces name each other -----------------------------------------------------

    def test_activation_files_match_the_units(self):
        for svc in SERVICES:
            name = ACTIVATION_NAMES[svc]
            activation = sysroot.read_unit(
                self.path(self.p["datadir"], "dbus-1", "system-services", name + ".service"))
            unit_name = single(activation, "D-BUS Service", "SystemdService")
            self.assertEqual(unit_name, f"aziot-{svc}.service")
            unit = self.unit(unit_name)
            self.assertEqual(single(activation, "D-BUS Service", "Name"), name)
            self.assertEqual(single(unit, "Service", "Type"), "dbus")
            self.assertEqual(single(unit, "Service", "BusName"), name)
            self.assertEqual(single(unit, "Service", "ExecStart"),
                             single(activation, "D-BUS Service", "Exec"))
            self.assertEqual(single(unit, "Service", "ExecStart"),
                             os.path.join(self.p["libexecdir"], f"aziot-{svc}"))
            self.assertEqual(single(unit, "Service", "User"), SERVICE_USERS[svc])
            self.assertEqual(single(unit, "Service", "Group"), SERVICE_USERS[svc])
            self.assertEqual(single(activation, "D-BUS Service", "User"), SERVICE_USERS[svc])

    def test_service_units(self):
        state = {"keyd": "aziot/keyd", "certd": "aziot/certd", "identityd": "aziot/identityd"}
        families = {"keyd": "AF_UNIX", "tpmd": "AF_UNIX", "certd": "AF_UNIX AF_INET AF_INET6",
                    "identityd": "AF_UNIX AF_INET AF_INET6"}
        for svc in SERVICES:
            with self.subTest(svc=svc):
                s = self.unit(f"aziot-{svc}.service")["Service"]
                self.assertEqual(s.get("StateDirectory"), [state[svc]] if svc in state else None)
                if svc in state:
                    self.assertEqual(s["StateDirectoryMode"], ["0700"])
                self.assertEqual(s["ConfigurationDirectory"], [f"aziot/{svc}"])
                self.assertEqual(s["RestrictAddressFamilies"], [families[svc]])
                network_free = svc in ("keyd", "tpmd")
                self.assertEqual(s.get("PrivateNetwork"), ["yes"] if network_free else None)
                self.assertEqual(s["PrivateDevices"], ["no" if svc == "tpmd" else "yes"])
                self.assertEqual(s.get("DeviceAllow"),
                                 ["/dev/tpm0 rw", "/dev/tpmrm0 rw"] if svc == "tpmd" else None)
                for key, value in (("CapabilityBoundingSet", ""), ("NoNewPrivileges", "yes"),
                                   ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                                   ("PrivateTmp", "yes"), ("ProtectKernelTunables", "yes"),
                                   ("ProtectKernelModules", "yes"),
                                   ("ProtectControlGroups", "yes"),
                                   ("RestrictNamespaces", "yes"), ("LockPersonality", "yes"),
                                   ("MemoryDenyWriteExecute", "yes"),
                                   ("SystemCallArchitectures", "native"),
                                   ("Restart", "on-failure")):
                    self.assertEqual(s.get(key), [value], key)
        identityd = self.unit("aziot-identityd.service")
        self.assertEqual(identityd["Install"]["WantedBy"], ["multi-user.target"])
        for svc in ("keyd", "certd", "tpmd"):
            self.assertNotIn("Install", self.unit(f"aziot-{svc}.service"),
                             f"{svc} is started by D-Bus activation, not enabled")

    def test_socket_units_feed_the_gateway(self):
        gateway = self.unit("aziot-gatewayd.service")
        sockets = [f"aziot-{svc}.socket" for svc in SERVICES]
        self.assertEqual(single(gateway, "Service", "Sockets").split(), sockets)
        self.assertEqual(single(gateway, "Unit", "Requires").split(), sockets)
        self.assertEqual(single(gateway, "Unit", "After").split(), sockets)
        self.assertEqual(single(gateway, "Service", "Type"), "notify")
        self.assertEqual(single(gateway, "Service", "ExecStart"),
                         os.path.join(self.p["libexecdir"], "aziot-gatewayd"))
        self.assertEqual(single(gateway, "Service", "User"), self.p["gateway_user"])
        for svc in SERVICES:
            with self.subTest(svc=svc):
                s = self.unit(f"aziot-{svc}.socket")
                self.assertEqual(s["Socket"]["ListenStream"],
                                 [os.path.join(self.p["socket_dir"], f"{svc}.sock")])
                self.assertEqual(s["Socket"]["FileDescriptorName"], [svc])
                self.assertEqual(s["Socket"]["SocketMode"], ["0660"])
                self.assertEqual(s["Socket"]["SocketGroup"], [SERVICE_USERS[svc]])
                self.assertEqual(s["Socket"]["Service"], ["aziot-gatewayd.service"])
                self.assertEqual(s["Install"]["WantedBy"], ["sockets.target"])

    def test_users_on_a_fresh_system(self):
        """systemd-sysusers with the installed file on an empty /etc: the users, homes, shells
        and memberships a new device gets."""
        root = os.path.join(self.tmp, "sysusers-root")
        os.makedirs(os.path.join(root, "etc"))
        sysroot.run(["systemd-sysusers", f"--root={root}",
                     self.path(self.p["sysusersdir"], "aziot-dbus.conf")])
        with open(os.path.join(root, "etc", "passwd")) as f:
            users = {e[0]: e for e in (line.rstrip("\n").split(":") for line in f)}
        with open(os.path.join(root, "etc", "group")) as f:
            groups = {e[0]: e for e in (line.rstrip("\n").split(":") for line in f)}
        state = os.path.join(self.p["localstatedir"], "lib", "aziot")
        gateway = self.p["gateway_user"]
        homes = {"aziotks": os.path.join(state, "keyd"), "aziotcs": os.path.join(state, "certd"),
                 "aziotid": os.path.join(state, "identityd"), "aziottpm": "/", gateway: "/"}
        self.assertEqual(sorted(users), sorted(homes))
        for name, (_, _, uid, gid, _, home, shell) in users.items():
            with self.subTest(user=name):
                self.assertLess(int(uid), 1000)
                self.assertEqual(groups[name][2], gid, "its own group")
                self.assertEqual(home, homes[name])
                self.assertEqual(shell, "/usr/sbin/nologin")
        members = {name: set(filter(None, e[3].split(","))) for name, e in groups.items()}
        member_of = {u: {g for g, m in members.items() if u in m} for u in users}
        self.assertEqual(member_of, {**MEMBERSHIPS, gateway: set()})

    def test_bus_policy_names_the_gateway_user(self):
        for name in BUS_NAMES.values():
            with open(self.path(self.p["datadir"], "dbus-1", "system.d", name + ".conf")) as f:
                text = f.read()
            self.assertIn(f'<policy user="{self.p["gateway_user"]}">', text, name)

    def test_tmpfiles(self):
        with open(self.path(self.p["tmpfilesdir"], "aziot-dbus.conf")) as f:
            lines = [line.split() for line in f if line.strip() and not line.startswith("#")]
        entries = {(t, path): (mode, user, group) for t, path, mode, user, group, _ in lines}
        state = os.path.join(self.p["localstatedir"], "lib", "aziot")
        etc = os.path.join(self.p["sysconfdir"], "aziot")
        expected = {("d", self.p["socket_dir"]): ("0755", "root", "root"),
                    ("d", state): ("0755", "root", "root"),
                    ("d", etc): ("0755", "root", "root")}
        for svc in SERVICES:
            user = SERVICE_USERS[svc]
            if svc != "tpmd":
                expected[("d", os.path.join(state, svc))] = ("0700", user, user)
            expected[("d", os.path.join(etc, svc, "config.d"))] = ("0700", user, user)
            expected[("z", os.path.join(etc, svc, "config.toml"))] = ("0600", user, user)
        self.assertEqual(entries, expected)


if __name__ == "__main__":
    unittest.main(verbosity=2)
