#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The installed tree under a real systemd: systemd 252 booted as PID 1 of a private PID, mount,
UTS, IPC and cgroup namespace (a container, `container=` set), over the installed tree of
tests/system/sysroot.py, with its own journald and the distribution's dbus.socket/dbus.service.
Then the INSTALLED aziotctl drives the installed units through it: `aziotctl system status`,
`restart`, `set-log-level`, `stop` and `logs`, and a service started by systemd (through D-Bus
activation by the bus) runs in the sandbox its unit describes.

The machine boots a minimal default target (basic.target and nothing of the host's: the host's
/etc/systemd/system is hidden by a tmpfs, and every unit that would touch the kernel or the
host's devices — udev, sysctl, modules, binfmt, random seed, pstore, timesyncd, … — is masked).
It has its own /run, /tmp, /dev (a tmpfs with the basic nodes and its own devpts), a read-only
/sys and its own cgroup2 subtree (/sys/fs/cgroup/unified/aziot-test-systemd-PID on the host,
removed afterwards). Every command of the test runs inside it (nsenter into its namespaces), as
an administrator would on the device."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sysroot  # noqa: E402
from sysroot import SERVICE_USERS, SERVICES, SysrootError  # noqa: E402

UNITS = [f"aziot-{svc}.service" for svc in SERVICES]
SOCKETS = [f"aziot-{svc}.socket" for svc in SERVICES]
CGROUP2 = "/sys/fs/cgroup/unified"
BOOT_TIMEOUT = 30.0
SYSTEMD = os.path.realpath("/lib/systemd/systemd")

# Units of a Debian system that act on the kernel or the host's devices, or are of no use here.
MASKED = [
    "systemd-udevd.service", "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "systemd-udevd-control.socket", "systemd-udevd-kernel.socket", "systemd-sysctl.service",
    "systemd-modules-load.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "kmod-static-nodes.service", "systemd-random-seed.service", "systemd-pstore.service",
    "systemd-timesyncd.service", "systemd-firstboot.service", "systemd-repart.service",
    "systemd-pcrphase.service", "systemd-pcrphase-sysinit.service",
    "systemd-machine-id-commit.service", "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup.service", "systemd-tmpfiles-clean.timer", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount", "dev-mqueue.mount", "systemd-journald-audit.socket", "getty.target",
    "console-getty.service", "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path", "systemd-hwdb-update.service",
    "systemd-journal-catalog-update.service", "systemd-sysusers.service", "ldconfig.service",
    "systemd-update-done.service", "cryptsetup.target", "integritysetup.target",
    "veritysetup.target", "systemd-remount-fs.service", "swap.target", "systemd-logind.service",
    "systemd-networkd.service", "systemd-resolved.service", "tpm2-abrmd.service",
]

# Run by `unshare` in the new namespaces (its PID 1 to be), then becomes systemd.
# The console is bound before /tmp is replaced (it lives in the test's directory under /tmp).
SETUP = r"""
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
cd /etc/systemd/system
for unit in $AZIOT_TEST_MASKED; do ln -s /dev/null "$unit"; done
printf '[Unit]\nDescription=aziot-dbus test machine\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n' > aziot-test.target
ln -s aziot-test.target default.target
cd /
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
touch /dev/console
mount --bind "$AZIOT_TEST_CONSOLE" /dev/console
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -o remount,bind,ro,nosuid,nodev,noexec /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
exec /lib/systemd/systemd --log-level=info --show-status=no
"""


class Machine:
    """systemd as PID 1 of its own namespaces, in the installed tree (the caller's mount
    namespace, an InstalledRoot, is the one copied)."""

    def __init__(self, directory):
        self.console = os.path.join(directory, "console.log")
        self.cgroup = os.path.join(CGROUP2, f"aziot-test-systemd-{os.getpid()}")
        self.unshare = None
        self.pid = None

    def boot(self):
        for need in (SYSTEMD, shutil.which("nsenter"), shutil.which("unshare"),
                     os.path.join(CGROUP2, "cgroup.procs")):
            if not need or not os.path.exists(need):
                raise unittest.SkipTest(f"cannot boot systemd here: {need} missing")
        os.mkdir(self.cgroup)
        open(self.console, "w").close()
        procs = os.path.join(self.cgroup, "cgroup.procs")

        def enter_cgroup():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        env = {"container": "aziot-test", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "TERM": "dumb", "AZIOT_TEST_MASKED": " ".join(MASKED),
               "AZIOT_TEST_CONSOLE": self.console}
        with open(self.console, "a") as out:
            self.unshare = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--uts", "--ipc",
                 "--cgroup", "/bin/sh", "-c", SETUP],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                preexec_fn=enter_cgroup, start_new_session=True)

        def pid1():
            if self.unshare.poll() is not None:
                raise SysrootError(f"the machine exited {self.unshare.returncode}:\n"
                                   f"{self.read_console()}")
            try:
                with open(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children") as f:
                    children = f.read().split()
                if children and os.readlink(f"/proc/{children[0]}/exe") == SYSTEMD:
                    return int(children[0])
            except OSError:
                pass
            return None
        self.pid = sysroot.wait_until(pid1, "systemd as the machine's PID 1")
        state = None

        def booted():
            nonlocal state
            if self.unshare.poll() is not None:
                raise SysrootError(f"the machine exited {self.unshare.returncode}:\n"
                                   f"{self.read_console()}")
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            return state in ("running", "degraded")
        try:
            sysroot.wait_until(booted, "systemctl is-system-running: running or degraded",
                               timeout=BOOT_TIMEOUT, interval=0.2)
        except SysrootError as e:
            raise SysrootError(f"{e} (last: {state})\n{self.read_console()}") from None
        return state

    def run(self, argv, check=True, **kwargs):
        """argv inside the machine, as root, in all its namespaces."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "TERM": "dumb",
               "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        return sysroot.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-C", "--"]
                           + argv, check=check, env=env, stdin=subprocess.DEVNULL, **kwargs)

    def read_console(self):
        with open(self.console, errors="replace") as f:
            return f.read()[-6000:]

    def stop(self):
        """Powers the machine off (SIGRTMIN+4), or kills its PID 1 (which kills every process
        of its PID namespace); then removes its cgroup."""
        if self.unshare is not None:
            if self.pid is not None and self.unshare.poll() is None:
                try:
                    os.kill(self.pid, signal.SIGRTMIN + 4)
                    self.unshare.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            if self.unshare.poll() is None:
                for pid in (self.pid, self.unshare.pid):
                    try:
                        if pid:
                            os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.unshare.wait(timeout=15)
        if os.path.isdir(self.cgroup):
            for _ in range(100):
                try:
                    for top, dirs, _files in os.walk(self.cgroup, topdown=False):
                        os.rmdir(top)
                    break
                except OSError:
                    time.sleep(0.05)


class SystemdMachineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="aziot-systemd-")
        os.chmod(cls.tmp, 0o755)
        cls.p = sysroot.installed_paths()
        cls.root = None
        cls.machine = None
        try:
            dest = sysroot.install(os.path.join(cls.tmp, "dest"))
            cls.aziotctl_path = os.path.join(cls.p["bindir"], "aziotctl")
            if not os.path.exists(sysroot.in_dest(dest, cls.aziotctl_path)):
                raise SysrootError(f"{cls.aziotctl_path} is not installed")
            cls.root = sysroot.InstalledRoot(dest, os.path.join(cls.tmp, "scratch"))
            cls.root.enter()
            cls.root.apply_sysusers()
            cls.root.apply_tmpfiles()
            cls.machine = Machine(cls.tmp)
            start = time.monotonic()
            cls.boot_state = cls.machine.boot()
            cls.boot_seconds = time.monotonic() - start
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.machine is not None:
                cls.machine.stop()
        finally:
            if cls.root is not None:
                cls.root.close()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------------

    def sh(self, argv, check=True):
        return self.machine.run(argv, check=check)

    def aziotctl(self, *args, check=True):
        result = self.sh([self.aziotctl_path, *args], check=False)
        if check and result.returncode != 0:
            self.fail(f"aziotctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}"
                      f"{result.stderr}\n--- journal ---\n{self.journal()}")
        return result

    def journal(self):
        return self.sh(["journalctl", "--no-pager", "-n", "80"], check=False).stdout

    def show(self, unit, *props):
        out = self.sh(["systemctl", "show", "-p", ",".join(props), unit]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def active_state(self, unit):
        return self.show(unit, "ActiveState")["ActiveState"]

    def wait_state(self, unit, wanted, timeout=10.0):
        sysroot.wait_until(lambda: self.active_state(unit) == wanted, f"{unit} {wanted}",
                           timeout=timeout, interval=0.1)

    def proc_status(self, pid):
        out = self.sh(["cat", f"/proc/{pid}/status"]).stdout
        return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)

    def user_of(self, pid):
        uid = self.proc_status(pid)["Uid"].split()
        self.assertEqual(len(set(uid)), 1, uid)
        return self.sh(["id", "-nu", uid[0]]).stdout.strip()

    def main_pid(self, unit):
        props = self.show(unit, "ActiveState", "MainPID")
        self.assertEqual(props["ActiveState"], "active", f"{unit}: {props}\n{self.journal()}")
        pid = int(props["MainPID"])
        self.assertGreater(pid, 0, f"{unit} has no main process")
        return pid

    # --- the tests, in order (each builds on the state the previous left) -------------------

    def test_0_boot(self):
        """systemd is PID 1 of the machine, knows it is in a container, and runs journald and
        the system bus's socket."""
        self.assertIn(self.boot_state, ("running", "degraded"), self.machine.read_console())
        if self.boot_state == "degraded":
            failed = self.sh(["systemctl", "--failed", "--no-legend", "--plain"]).stdout
            self.fail(f"the machine booted degraded:\n{failed}")
        self.assertEqual(self.sh(["cat", "/proc/1/comm"]).stdout.strip(), "systemd")
        self.assertEqual(self.sh(["systemd-detect-virt", "--container"], check=False)
                         .stdout.strip(), "container-other")
        self.assertEqual(self.active_state("systemd-journald.service"), "active")
        self.assertEqual(self.active_state("dbus.socket"), "active")
        # The installed units are where systemd looks, and loaded from there.
        for unit in UNITS + SOCKETS + ["aziot-gatewayd.service"]:
            props = self.show(unit, "LoadState", "FragmentPath")
            self.assertEqual(props["LoadState"], "loaded", unit)
            installed = os.path.join(self.p["unitdir"], unit)
            self.assertEqual(self.sh(["realpath", props["FragmentPath"]]).stdout,
                             self.sh(["realpath", installed]).stdout, unit)
        print(f"\nbooted {self.boot_state} in {self.boot_seconds:.1f} s", file=sys.stderr)

    def test_1_status_before(self):
        """`aziotctl system status` shows each unit's real state: nothing started yet."""
        result = self.aziotctl("system", "status")
        for unit in UNITS + SOCKETS:
            block = re.search(r"^\S*\s*" + re.escape(unit) + r" - .*?(?=^\S*\s*aziot-|\Z)",
                              result.stdout, re.M | re.S)
            self.assertIsNotNone(block, f"{unit} missing from:\n{result.stdout}")
            self.assertRegex(block.group(0), r"Loaded: loaded \((/usr)?/lib/systemd/system/"
                             + re.escape(unit) + ";")
            self.assertIn("Active: inactive (dead)", block.group(0))

    def test_2_restart(self):
        """`aziotctl system restart`: the services stopped, their sockets listening (bound by
        systemd as their units say), identityd started by systemd as aziotid."""
        result = self.aziotctl("system", "restart")
        self.assertIn("Done.", result.stdout)
        for sock in SOCKETS:
            props = self.show(sock, "ActiveState", "SubState")
            self.assertEqual(props, {"ActiveState": "active", "SubState": "listening"}, sock)
        for svc in SERVICES:
            path = os.path.join(self.p["socket_dir"], f"{svc}.sock")
            out = self.sh(["stat", "-c", "%F %a %U %G", path]).stdout.split()
            user = SERVICE_USERS[svc]
            self.assertEqual(out, ["socket", "660", user, user], path)
        pid = self.main_pid("aziot-identityd.service")
        self.assertEqual(self.user_of(pid), "aziotid")
        self.assertEqual(self.show("aziot-identityd.service", "SubState")["SubState"],
                         "running")
        self.assertEqual(self.active_state("aziot-tpmd.service"), "inactive")
        # Type=dbus: systemd saw it take its name on the bus it started.
        owner = self.sh(["busctl", "--system", "status", "org.aziot.Identity1"]).stdout
        self.assertIn(f"PID={pid}", owner)

        status = self.aziotctl("system", "status").stdout
        self.assertRegex(status, r"aziot-identityd\.service - [^\n]*\n(?:[^\n]*\n)*?"
                                 r"\s*Active: active \(running\)")
        self.assertRegex(status, r"aziot-keyd\.socket - [^\n]*\n(?:[^\n]*\n)*?"
                                 r"\s*Active: active \(listening\)")

    def test_3_set_log_level(self):
        """`aziotctl system set-log-level debug` writes the drop-ins and reloads systemd."""
        result = self.aziotctl("system", "set-log-level", "debug")
        for svc in SERVICES:
            path = f"/etc/systemd/system/aziot-{svc}.service.d/log-level.conf"
            self.assertIn(f"Wrote {path}", result.stdout)
            self.assertEqual(self.sh(["cat", path]).stdout,
                             "[Service]\nEnvironment=AZIOT_LOG=debug\n")
            props = self.show(f"aziot-{svc}.service", "Environment", "NeedDaemonReload",
                              "DropInPaths")
            self.assertIn("AZIOT_LOG=debug", props["Environment"].split(), svc)
            self.assertEqual(props["NeedDaemonReload"], "no", svc)
            self.assertIn(path, props["DropInPaths"].split())
        # The running identityd keeps its level until restarted; a restart applies it.
        self.aziotctl("system", "restart")
        pid = self.main_pid("aziot-identityd.service")
        environ = self.sh(["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
        self.assertIn("AZIOT_LOG=debug", environ)

    def test_4_keyd_sandbox(self):
        """keyd, started by systemd when the bus activates org.aziot.Keys1, runs in its unit's
        sandbox: its user, no new privileges, a seccomp filter, no capabilities, only lo."""
        reply = self.sh(["busctl", "--system", "call", "org.aziot.Keys1", "/org/aziot/Keys1",
                         "org.aziot.Keys1", "CreateKeyIfNotExists", "sasa{sv}", "system-test",
                         "1", "sign", "0"]).stdout
        self.assertRegex(reply, r'^s "sr=')
        pid = self.main_pid("aziot-keyd.service")
        status = self.proc_status(pid)
        self.assertEqual(self.user_of(pid), "aziotks")
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        self.assertEqual(status["Seccomp"].strip(), "2")
        self.assertEqual(int(status["CapEff"], 16), 0)
        self.assertEqual(int(status["CapBnd"], 16), 0)
        net = self.sh(["cat", f"/proc/{pid}/net/dev"]).stdout.splitlines()[2:]
        self.assertEqual([line.split(":")[0].strip() for line in net], ["lo"])
        # Not the machine's network namespace: the machine (the host's) has more than lo.
        host_net = self.sh(["cat", "/proc/1/net/dev"]).stdout.splitlines()[2:]
        self.assertGreater(len(host_net), 1)
        # ProtectSystem=strict: /usr read-only; PrivateTmp: its own /tmp.
        mounts = self.sh(["cat", f"/proc/{pid}/mountinfo"]).stdout
        self.assertRegex(mounts, r"(?m)^\S+ \S+ \S+ \S+ /usr (ro|\S*,ro)[ ,]")
        self.assertNotEqual(self.sh(["readlink", f"/proc/{pid}/ns/mnt"]).stdout,
                            self.sh(["readlink", "/proc/1/ns/mnt"]).stdout)
        environ = self.sh(["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
        self.assertIn("AZIOT_LOG=debug", environ)
        # Its state, in the StateDirectory= systemd made, as its user.
        home = os.path.join(self.p["localstatedir"], "lib", "aziot", "keyd")
        self.assertEqual(self.sh(["stat", "-c", "%U %a", home]).stdout.split(), ["aziotks", "700"])

    def test_5_stop(self):
        """`aziotctl system stop` stops the services and leaves the sockets listening."""
        self.aziotctl("system", "stop")
        for unit in UNITS:
            self.assertEqual(self.active_state(unit), "inactive", unit)
        for sock in SOCKETS:
            self.assertEqual(self.active_state(sock), "active", sock)
        self.assertNotEqual(self.sh(["busctl", "--system", "status", "org.aziot.Identity1"],
                                    check=False).returncode, 0, "identityd still on the bus")

    def test_6_logs(self):
        """`aziotctl system logs` is the services' journal, from journald in the machine: what
        systemd logged of them and what they logged themselves (at debug, as set)."""
        result = self.aziotctl("system", "logs")
        out = result.stdout
        for what in ("Started aziot-identityd.service", "Stopped aziot-identityd.service",
                     "Started aziot-keyd.service", "Stopped aziot-keyd.service"):
            self.assertIn(what, out)
        self.assertRegex(out, r"aziot-keyd\[\d+\]: ")
        self.assertRegex(out, r"aziot-identityd\[\d+\]: ")
        self.assertNotIn("dbus-daemon[", out, "only the services' units")
        # journalctl arguments after --.
        last = self.aziotctl("system", "logs", "--", "--no-pager", "-n", "1", "-o", "cat")
        self.assertEqual(len(last.stdout.strip().splitlines()), 1, last.stdout)

    def test_7_status_failed(self):
        """A service that fails to start (a broken config.d file): `aziotctl system status`
        reports it failed, with its last journal lines, and exits non-zero."""
        broken = "/etc/aziot/certd/config.d/99-broken.toml"
        # No Restart=on-failure for this one start, so that the unit stays failed.
        dropin = "/run/systemd/system/aziot-certd.service.d/no-restart.conf"
        self.sh(["sh", "-c", f"umask 077; echo 'this is not toml = = =' > {broken}; "
                             f"chown aziotcs: {broken}; mkdir -p {os.path.dirname(dropin)}; "
                             f"printf '[Service]\\nRestart=no\\n' > {dropin}; "
                             "systemctl daemon-reload"])
        try:
            start = self.sh(["systemctl", "start", "aziot-certd.service"], check=False)
            self.assertNotEqual(start.returncode, 0, "certd started with a broken config")
            self.assertEqual(self.active_state("aziot-certd.service"), "failed")
            result = self.aziotctl("system", "status", check=False)
            self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
            self.assertRegex(result.stdout, r"aziot-certd\.service - [^\n]*\n(?:[^\n]*\n)*?"
                                            r"\s*Active: failed")
            # The journal lines of the failed unit: certd's own words about the file.
            self.assertRegex(result.stdout, r"aziot-certd\[\d+\]: [^\n]*99-broken\.toml")
        finally:
            self.sh(["sh", "-c", f"rm -f {broken} {dropin}; systemctl daemon-reload; "
                                 "systemctl reset-failed aziot-certd.service"])
        self.assertEqual(self.aziotctl("system", "status").returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
