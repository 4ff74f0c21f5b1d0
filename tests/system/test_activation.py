#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The installed tree as a device runs it, without systemd: the users made by the installed
sysusers.d file, the directories by the installed tmpfiles.d file, the distribution's own system
bus (`dbus-daemon --system`: Debian's system.conf with the setuid launch helper) reading the
installed bus policy and activation files, and each service started by D-Bus activation as its
own user with its installed configuration (tpmd on a swtpm); then the gateway started the way
systemd starts it from the installed socket units, serving the four sockets as its own user.

Everything runs in a private mount namespace where the installed tree is /usr and /etc
(tests/system/sysroot.py), so nothing of the host's /usr, /etc, /var or /run changes."""

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import sysroot  # noqa: E402
from sysroot import BUS_NAMES, MEMBERSHIPS, SERVICE_USERS, SERVICES, SysrootError  # noqa: E402
import aziot_http  # noqa: E402
import aziot_tpm  # noqa: E402

import dbus  # noqa: E402

BUS_SOCKET = "/run/dbus/system_bus_socket"
TPM_SOCKET_DIR = "/run/aziot-test-tpm"
NOTIFY_SOCKET = "/run/aziot-test-notify.sock"
NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin")
EMPTY_OPTIONS = dbus.Dictionary({}, signature="sv")

# Sets up the sockets passed by socket activation at fds 3… and becomes the service: what systemd
# does for the gateway's unit. argv: FDNAMES FD,FD,… USER GROUP COMMAND…
ACTIVATE = r"""
import fcntl, os, pwd, grp, sys
names, fds, user, group, argv = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4], \
    sys.argv[5:]
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in fds]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.set_inheritable(3 + i, True)
    os.close(fd)
gid = grp.getgrnam(group).gr_gid
os.initgroups(user, gid)
os.setgid(gid)
os.setuid(pwd.getpwnam(user).pw_uid)
env = {"PATH": "/usr/bin:/bin", "LISTEN_FDS": str(len(high)), "LISTEN_PID": str(os.getpid()),
       "LISTEN_FDNAMES": names, "NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}
os.execve(argv[0], argv, env)
"""


def self_signed_pem(directory):
    key = os.path.join(directory, "cert.key")
    return sysroot.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=aziot-system-test",
                        "-days", "1", "-keyout", key]).stdout


class InstalledBus:
    """Debian's system bus on the installed tree (cls.tmp holds its log), the services on it,
    and the gateway as systemd starts it from the installed socket units; for the tests of the
    installed tree."""

    @classmethod
    def start_bus(cls):
        cls.bus_log = os.path.join(cls.tmp, "bus.log")
        with open(cls.bus_log, "w") as log:
            cls.bus_process = subprocess.Popen(
                ["dbus-daemon", "--system", "--nofork", "--nopidfile", "--nosyslog"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def connected():
            if cls.bus_process.poll() is not None:
                raise SysrootError(f"dbus-daemon --system exited:\n{cls.read_bus_log()}")
            try:
                return dbus.bus.BusConnection("unix:path=" + BUS_SOCKET)
            except dbus.exceptions.DBusException:
                return None
        cls.bus = sysroot.wait_until(connected, "the system bus")

    @classmethod
    def read_bus_log(cls):
        with open(cls.bus_log) as f:
            return f.read()

    def dbus_proxy(self):
        return dbus.Interface(self.bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus"),
                              "org.freedesktop.DBus")

    def owner_pid(self, name):
        return int(self.dbus_proxy().GetConnectionUnixProcessID(name))

    def has_owner(self, name):
        return bool(self.dbus_proxy().NameHasOwner(name))

    def call(self, svc, method, *args, interface=None):
        name = BUS_NAMES[svc]
        path = "/" + name.replace(".", "/")
        try:
            obj = self.bus.get_object(name, path)
            return obj.get_dbus_method(method, interface or name)(*args)
        except dbus.exceptions.DBusException as e:
            raise AssertionError(f"{name}.{method}: {e}\n--- bus log ---\n"
                                 f"{self.read_bus_log()}") from None

    def stop_service(self, svc):
        name = BUS_NAMES[svc]
        if not self.has_owner(name):
            return
        os.kill(self.owner_pid(name), signal.SIGTERM)
        sysroot.wait_until(lambda: not self.has_owner(name), f"{name} to go")

    def start_gateway(self):
        """What systemd does on the first connection to one of the sockets: binds each socket
        unit's ListenStream= as it says, and starts aziot-gatewayd.service with them (named by
        FileDescriptorName=, in the order of its Sockets=) as its User=/Group=. Returns (the
        process, {socket name: path})."""
        unitdir = self.p["unitdir"]
        service = sysroot.read_unit(os.path.join(unitdir, "aziot-gatewayd.service"))["Service"]
        listeners, names, paths = [], [], {}
        for unit in service["Sockets"][0].split():
            s = sysroot.read_unit(os.path.join(unitdir, unit))["Socket"]
            (path,), (name,) = s["ListenStream"], s["FileDescriptorName"]
            os.makedirs(os.path.dirname(path), int(s["DirectoryMode"][0], 8), exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, int(s["SocketMode"][0], 8))
            os.chown(path, pwd.getpwnam(s["SocketUser"][0]).pw_uid,
                     grp.getgrnam(s["SocketGroup"][0]).gr_gid)
            sock.listen(128)
            listeners.append(sock)
            names.append(name)
            paths[name] = path

        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(NOTIFY_SOCKET)
        os.chmod(NOTIFY_SOCKET, 0o666)
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        log = open(os.path.join(self.tmp, "gatewayd.log"), "w")
        fds = [s.fileno() for s in listeners]
        process = subprocess.Popen(
            [sysroot.python(), "-c", ACTIVATE, ":".join(names), ",".join(map(str, fds)),
             service["User"][0], service["Group"][0], *shlex.split(service["ExecStart"][0])],
            pass_fds=fds, env={"NOTIFY_SOCKET": NOTIFY_SOCKET}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log)
        log.close()
        for s in listeners:
            s.close()
        self.addCleanup(self.stop_gateway, process, notify)

        notify.settimeout(0.05)
        end = time.monotonic() + sysroot.DEFAULT_TIMEOUT
        while True:
            try:
                msg, anc, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(12))
                break
            except socket.timeout:
                if process.poll() is not None or time.monotonic() > end:
                    self.fail(f"no READY=1 from aziot-gatewayd:\n{self.gateway_log()}")
        self.assertIn("READY=1", msg.decode().split("\n"))
        sender = int.from_bytes(anc[0][2][:4], sys.byteorder)
        self.assertEqual(sender, process.pid, "READY=1 from the main process (NotifyAccess=main)")
        return process, paths

    def stop_gateway(self, process, notify):
        process.terminate()
        process.wait(timeout=10)
        notify.close()
        os.unlink(NOTIFY_SOCKET)

    def gateway_log(self):
        with open(os.path.join(self.tmp, "gatewayd.log")) as f:
            return f.read()


class InstalledSystemTest(InstalledBus, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="aziot-system-")
        os.chmod(cls.tmp, 0o755)
        cls.p = sysroot.installed_paths()
        cls.root = None
        cls.swtpm = None
        cls.bus_process = None
        try:
            cls.dest = sysroot.install(os.path.join(cls.tmp, "dest"))
            cls.root = sysroot.InstalledRoot(cls.dest, os.path.join(cls.tmp, "scratch"))
            cls.root.enter()
            cls.users = list(SERVICE_USERS.values()) + [cls.p["gateway_user"]]
            cls.host_users = {u for u in cls.users if sysroot.user_exists(u)}
            cls.sysusers = cls.root.apply_sysusers()
            cls.tmpfiles = cls.root.apply_tmpfiles()
            cls.start_swtpm()
            cls.start_bus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.swtpm:
            cls.swtpm.close()
        if cls.root:
            cls.root.close()
        if cls.bus_process:
            cls.bus_process.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def start_swtpm(cls):
        os.mkdir(TPM_SOCKET_DIR, 0o755)
        cls.swtpm = aziot_tpm.Swtpm(os.path.join(cls.tmp, "swtpm"), socket_dir=TPM_SOCKET_DIR,
                                    install=False)
        cls.swtpm.start()
        tpm = pwd.getpwnam("aziottpm")
        for path in (cls.swtpm.socket, cls.swtpm.ctrl_socket):
            os.chown(path, tpm.pw_uid, tpm.pw_gid)
        # Where the device's operator puts settings: the service's config.d, readable by it only.
        path = os.path.join(cls.p["sysconfdir"], "aziot", "tpmd", "config.d", "50-swtpm.toml")
        with open(path, "w") as f:
            f.write(f'tcti = "{cls.swtpm.tcti}"\n')
        os.chown(path, tpm.pw_uid, tpm.pw_gid)
        os.chmod(path, 0o600)

    # --- helpers ----------------------------------------------------------------------------

    def assertRunsAs(self, pid, user):
        uid, gid, groups = sysroot.process_identity(pid)
        pw = pwd.getpwnam(user)
        self.assertEqual((uid, gid), (pw.pw_uid, pw.pw_gid), f"pid {pid} is not {user}")
        names = {grp.getgrgid(g).gr_name for g in groups if g != pw.pw_gid}
        # Exactly upstream's groups, unless the machine had the user already in other groups.
        expected = MEMBERSHIPS.get(user, set())
        if user in self.host_users:
            self.assertLessEqual(expected, names, f"supplementary groups of {user}")
        else:
            self.assertEqual(names, expected, f"supplementary groups of {user}")

    def files_under(self, directory):
        found = []
        for root, _, files in os.walk(directory):
            found += [os.path.join(root, f) for f in files]
        return found

    # --- what the installed sysusers.d and tmpfiles.d files made -----------------------------

    def test_users_and_groups(self):
        """The users the installed sysusers.d file made, or completed when the machine had them
        already (sysusers then leaves their home and shell alone)."""
        state = os.path.join(self.p["localstatedir"], "lib", "aziot")
        homes = {"aziotks": os.path.join(state, "keyd"), "aziotcs": os.path.join(state, "certd"),
                 "aziotid": os.path.join(state, "identityd"), "aziottpm": "/",
                 self.p["gateway_user"]: "/"}
        service_groups = set(SERVICE_USERS.values())
        for user in self.users:
            with self.subTest(user=user):
                pw = pwd.getpwnam(user)
                self.assertEqual(grp.getgrgid(pw.pw_gid).gr_name, user)
                member_of = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
                self.assertLessEqual(MEMBERSHIPS.get(user, set()), member_of)
                if user == self.p["gateway_user"]:
                    self.assertEqual(member_of & service_groups, set())
                if user not in self.host_users:
                    self.assertLess(pw.pw_uid, 1000, "a system user")
                    self.assertIn(pw.pw_shell, NOLOGIN)
                    self.assertEqual(pw.pw_dir, homes[user])

    def test_directories(self):
        state = os.path.join(self.p["localstatedir"], "lib", "aziot")
        etc = os.path.join(self.p["sysconfdir"], "aziot")
        expected = {self.p["socket_dir"]: (0o755, "root"), state: (0o755, "root")}
        for svc in SERVICES:
            user = SERVICE_USERS[svc]
            if svc != "tpmd":
                expected[os.path.join(state, svc)] = (0o700, user)
            expected[os.path.join(etc, svc, "config.d")] = (0o700, user)
            expected[os.path.join(etc, svc, "config.toml")] = (0o600, user)
            expected[os.path.join(etc, svc, "config.toml.default")] = (0o644, "root")
        for path, (mode, user) in expected.items():
            with self.subTest(path=path):
                st = os.stat(path)
                self.assertEqual(stat.S_IMODE(st.st_mode), mode)
                self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, user)
                self.assertEqual(grp.getgrgid(st.st_gid).gr_name, user)

    # --- the bus --------------------------------------------------------------------------------

    def config_problems(self, log):
        """What dbus-daemon said about our configuration files in log: (users and groups it did
        not know, our files it could not read). The host's other policies are not under test."""
        ours = set(SERVICE_USERS.values()) | {self.p["gateway_user"]}
        unknown = set(re.findall(r'Unknown (?:username|group) "([^"]*)"', log))
        unreadable = re.findall(r"Encountered error .* while parsing '([^']*)'", log)
        return ({u for u in unknown if u.startswith(tuple(ours))},
                [os.path.basename(f) for f in unreadable if "org.aziot." in f])

    def test_bus_reads_the_policy_and_activation_files(self):
        log = self.read_bus_log()
        self.assertEqual(self.config_problems(log), (set(), []), log)
        activatable = set(self.dbus_proxy().ListActivatableNames())
        self.assertLessEqual(set(BUS_NAMES.values()), activatable)

    def test_bus_reports_a_broken_policy(self):
        """The check above is not blind: dbus-daemon starts anyway when an included policy file
        cannot be read or names an unknown user, and says so."""
        system_d = os.path.join(self.p["datadir"], "dbus-1", "system.d")
        broken_d = os.path.join(self.tmp, "broken.d")
        shutil.copytree(system_d, broken_d)
        for name, old, new in (("org.aziot.Keys1.conf", "send_interface=", "send_interfase="),
                               ("org.aziot.Tpm1.conf", f'user="{self.p["gateway_user"]}"',
                                f'user="{self.p["gateway_user"]}-missing"')):
            path = os.path.join(broken_d, name)
            with open(path) as f:
                text = f.read()
            self.assertIn(old, text)
            with open(path, "w") as f:
                f.write(text.replace(old, new, 1))
        config = os.path.join(self.tmp, "broken-bus.conf")
        with open(config, "w") as f:
            f.write(f"""<busconfig><type>system</type>
<listen>unix:path={self.tmp}/broken-bus.sock</listen>
<includedir>{broken_d}</includedir></busconfig>
""")
        bus = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork",
                                "--print-address=1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            self.assertTrue(bus.stdout.readline().startswith("unix:"), "it starts anyway")
        finally:
            bus.terminate()
            _, log = bus.communicate(timeout=10)
        self.assertEqual(self.config_problems(log),
                         ({self.p["gateway_user"] + "-missing"}, ["org.aziot.Keys1.conf"]), log)

    # --- D-Bus activation, each service as its own user --------------------------------------

    def test_keyd(self):
        handle = self.call("keyd", "CreateKeyIfNotExists", "system-test", ["sign"], EMPTY_OPTIONS)
        self.assertTrue(str(handle).startswith("sr="), handle)
        self.assertRunsAs(self.owner_pid("org.aziot.Keys1"), "aziotks")
        home = os.path.join(self.p["localstatedir"], "lib", "aziot", "keyd")
        files = self.files_under(home)
        self.assertTrue(files, "keyd wrote nothing to its home")
        for path in files:
            st = os.stat(path)
            self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, "aziotks", path)
            self.assertEqual(stat.S_IMODE(st.st_mode) & 0o077, 0, path)

    def test_certd(self):
        pem = self_signed_pem(self.tmp)
        self.call("certd", "ImportCertificate", "system-test", pem, EMPTY_OPTIONS)
        self.assertEqual(str(self.call("certd", "GetCertificate", "system-test", EMPTY_OPTIONS)),
                         pem)
        self.assertRunsAs(self.owner_pid("org.aziot.Certificates1"), "aziotcs")
        home = os.path.join(self.p["localstatedir"], "lib", "aziot", "certd")
        files = self.files_under(home)
        self.assertTrue(files, "certd wrote nothing to its home")
        for path in files:
            self.assertEqual(pwd.getpwuid(os.stat(path).st_uid).pw_name, "aziotcs", path)

    def test_identityd(self):
        state = self.call("identityd", "Get", "org.aziot.Identity1", "ProvisioningState",
                          interface="org.freedesktop.DBus.Properties")
        self.assertEqual(str(state), "unprovisioned")
        self.assertRunsAs(self.owner_pid("org.aziot.Identity1"), "aziotid")

    def test_tpmd_on_swtpm(self):
        ek, srk = self.call("tpmd", "GetTpmKeys", EMPTY_OPTIONS)
        self.assertGreater(len(ek), 256)
        self.assertGreater(len(srk), 256)
        tcti = self.call("tpmd", "Get", "org.aziot.Tpm1", "Tcti",
                         interface="org.freedesktop.DBus.Properties")
        self.assertEqual(str(tcti), self.swtpm.tcti, "the setting of config.d/ applies")
        self.assertRunsAs(self.owner_pid("org.aziot.Tpm1"), "aziottpm")

    # --- the gateway, started from the installed socket units --------------------------------

    def connects_as(self, user, path):
        """Whether user (with its groups) may connect to the socket path."""
        result = subprocess.run(
            ["setpriv", "--reuid", user, "--regid", user, "--init-groups", sysroot.python(), "-c",
             "import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(3)\n",
             path], capture_output=True, text=True, timeout=30)
        self.assertIn(result.returncode, (0, 3), result.stderr)
        return result.returncode == 0

    def test_gateway(self):
        self.stop_service("keyd")
        process, paths = self.start_gateway()
        self.assertEqual(sorted(paths), sorted(SERVICES))
        self.assertRunsAs(process.pid, self.p["gateway_user"])

        # keyd.sock: the gateway calls keyd as its own user, which starts keyd on the bus.
        conn = aziot_http.UnixHTTPConnection(paths["keyd"], host="keyd.sock")
        conn.request("POST", "/key?api-version=2021-05-01",
                     body=json.dumps({"keyId": "system-test-gw", "usage": "sign"}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        self.assertEqual(response.status, 200, f"{body!r}\n{self.gateway_log()}")
        self.assertIn("keyHandle", json.loads(body))
        self.assertRunsAs(self.owner_pid("org.aziot.Keys1"), "aziotks")

        # Every socket is served (a request the gateway answers by itself).
        for name, path in paths.items():
            with self.subTest(socket=name):
                conn = aziot_http.UnixHTTPConnection(path, host=f"{name}.sock")
                conn.request("GET", "/nowhere?api-version=2020-09-01")
                response = conn.getresponse()
                body = response.read()
                conn.close()
                self.assertGreaterEqual(response.status, 400)
                self.assertIn("message", json.loads(body))

        # Who may connect: upstream's groups (aziotcs is in aziotks, aziottpm is not).
        self.assertTrue(self.connects_as("aziotcs", paths["keyd"]))
        self.assertFalse(self.connects_as("aziottpm", paths["keyd"]))
        self.assertTrue(self.connects_as("aziotid", paths["tpmd"]))
        self.assertFalse(self.connects_as(self.p["gateway_user"], paths["identityd"]))
        self.assertIsNone(process.poll(), self.gateway_log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
