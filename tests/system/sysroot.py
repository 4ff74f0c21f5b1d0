# SPDX-License-Identifier: MIT
"""The installed tree of aziot-dbus, and a machine made of it, for the system tests.

    dest = install(tmpdir)                      # `meson install --destdir` of the build under test
    units = read_unit(path)                     # {section: {key: [values]}}
    with InstalledRoot(dest, scratch) as root:  # this process enters a private mount namespace
        root.apply_sysusers()                   # the installed sysusers.d file, for real
        root.apply_tmpfiles()                   # the installed tmpfiles.d file, for real
        ...                                     # /usr, /etc, /var are the host's with the
                                                # installed tree over them; /run is empty

Inside the namespace the installed files are at the paths they were installed for (overlay mounts
of DEST/usr over /usr, DEST/etc over /etc, …; what is written there lands in scratch), so the
installed D-Bus activation files, bus policy, units and configuration are used exactly as on a
device, without a byte written to the host's /usr, /etc, /var or /run. The namespace is the
process's for good: use one InstalledRoot per test process (each meson test is one).

Environment (set by tests/system/meson.build): AZIOT_BUILD_DIR, AZIOT_MESON (the meson program),
and AZIOT_INSTALL_* (where the build installs what). Needs root (mounts, users).
"""

import ctypes
import os
import shutil
import subprocess
import sys
import time

CLONE_NEWNS = 0x00020000
PR_SET_CHILD_SUBREAPER = 36
DEFAULT_TIMEOUT = 10.0

SERVICES = ("keyd", "certd", "identityd", "tpmd")

# Upstream's users (spec §6.1), the bus names and the groups that gate each socket.
SERVICE_USERS = {"keyd": "aziotks", "certd": "aziotcs", "identityd": "aziotid",
                 "tpmd": "aziottpm"}
BUS_NAMES = {"keyd": "org.aziot.Keys1", "certd": "org.aziot.Certificates1",
             "identityd": "org.aziot.Identity1", "tpmd": "org.aziot.Tpm1"}
# Supplementary groups of each service's user: upstream's memberships, and tss for the TPM's
# resource manager device.
MEMBERSHIPS = {"aziotks": set(), "aziotcs": {"aziotks"},
               "aziotid": {"aziotcs", "aziotks", "aziottpm"}, "aziottpm": {"tss"}}


class SysrootError(Exception):
    """Something the system tests stand on could not be set up; the message says why."""


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SysrootError(f"{name} is not set: run this test through meson test")
    return value


def installed_paths():
    """Where the build under test installs what (absolute paths, as on the device)."""
    return {key: env("AZIOT_INSTALL_" + key.upper())
            for key in ("bindir", "libexecdir", "sysconfdir", "localstatedir", "datadir",
                        "unitdir", "sysusersdir", "tmpfilesdir", "modulesdir", "socket_dir",
                        "gateway_user", "mandir", "man")}


def in_dest(dest, path):
    """path (absolute, as installed) inside the tree dest."""
    return os.path.join(dest, path.lstrip("/"))


def run(argv, check=True, **kwargs):
    """Runs argv, output captured as text; SysrootError with its output when check and it fails."""
    kwargs.setdefault("timeout", 60)
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise SysrootError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}"
                           f"{result.stderr}")
    return result


def install(directory):
    """`meson install --destdir directory` of the build under test; returns directory."""
    run([env("AZIOT_MESON"), "install", "-C", env("AZIOT_BUILD_DIR"), "--no-rebuild", "--quiet",
         "--destdir", directory])
    return directory


def read_unit(path):
    """A systemd unit (or any file of its ini syntax) as {section: {key: [value, …]}}: every
    assignment of a key, in order (an empty assignment is kept as "")."""
    sections = {}
    current = None
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], {})
                continue
            if current is None or "=" not in line:
                raise SysrootError(f"{path}:{number}: not a unit file line: {line!r}")
            key, value = line.split("=", 1)
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def read_sysusers(path):
    """The lines of a sysusers.d file as lists of fields (quoted fields unquoted)."""
    import shlex
    with open(path) as f:
        return [shlex.split(line) for line in f if line.strip() and not line.startswith("#")]


def user_exists(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def wait_until(predicate, what, timeout=DEFAULT_TIMEOUT, interval=0.02):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise SysrootError(f"timed out waiting for {what}")
        time.sleep(interval)


def proc_status(pid):
    """/proc/PID/status as {field: value}."""
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def process_identity(pid):
    """(real uid, real gid, set of supplementary gids) of process pid; uid and gid must be the
    same in all four columns (real, effective, saved, fs) or SysrootError."""
    status = proc_status(pid)
    uids = set(status["Uid"].split())
    gids = set(status["Gid"].split())
    if len(uids) != 1 or len(gids) != 1:
        raise SysrootError(f"process {pid} has mixed ids: Uid {status['Uid']}, Gid {status['Gid']}")
    return int(uids.pop()), int(gids.pop()), {int(g) for g in status["Groups"].split()}


class InstalledRoot:
    """This process, in a private mount namespace where the installed tree dest is the system.

    /usr, /etc, /var and every other top-level directory of dest become overlays: dest's files
    over the host's, with writes going to scratch; /run is an empty tmpfs. Processes started
    afterwards (dbus-daemon, the launch helper, the daemons) share the namespace. close() stops
    every process still in it (they can only be this test's) and removes scratch."""

    def __init__(self, dest, scratch):
        self.dest = os.path.abspath(dest)
        self.scratch = os.path.abspath(scratch)
        self._entered = False

    def __enter__(self):
        self.enter()
        return self

    def __exit__(self, *exc):
        self.close()

    def enter(self):
        if os.geteuid() != 0:
            raise SysrootError("the system tests need root (mounts, users)")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise SysrootError(f"unshare(CLONE_NEWNS): {os.strerror(err)} (needs CAP_SYS_ADMIN)")
        self._entered = True
        self.namespace = os.readlink("/proc/self/ns/mnt")
        # Daemons orphaned by stop_all() (an activated service's parent is the bus) become our
        # children, to be reaped, rather than zombies of an init that may not reap.
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise SysrootError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
        run(["mount", "--make-rprivate", "/"])
        tops = {"usr", "etc", "var"} | set(os.listdir(self.dest))
        for top in sorted(tops):
            self._overlay(top)
        run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", "/run"])
        os.mkdir("/run/dbus", 0o755)

    def _overlay(self, top):
        target = "/" + top
        if not os.path.isdir(target):
            raise SysrootError(f"{target} is installed to but does not exist on this machine")
        upper = os.path.join(self.scratch, "upper", top)
        work = os.path.join(self.scratch, "work", top)
        os.makedirs(upper)
        os.makedirs(work)
        lower = target
        if os.path.isdir(os.path.join(self.dest, top)):
            lower = os.path.join(self.dest, top) + ":" + target
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={upper},workdir={work}", target])

    def apply_sysusers(self):
        """systemd-sysusers with the installed file only; returns its CompletedProcess."""
        paths = installed_paths()
        return run(["systemd-sysusers", os.path.join(paths["sysusersdir"], "aziot-dbus.conf")])

    def apply_tmpfiles(self):
        """systemd-tmpfiles --create with the installed file only; returns its CompletedProcess."""
        paths = installed_paths()
        return run(["systemd-tmpfiles", "--create",
                    os.path.join(paths["tmpfilesdir"], "aziot-dbus.conf")])

    def processes(self):
        """The pids in this namespace other than this process."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == self.namespace:
                    pids.append(int(entry))
            except OSError:
                pass
        return pids

    def stop_all(self, timeout=5.0):
        """SIGTERM, then SIGKILL, to every process left in the namespace (all started by this
        test: the namespace is its own)."""
        for sig in (15, 9):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                _reap_children()
                if not self.processes():
                    return
                time.sleep(0.02)

    def close(self):
        if self._entered:
            self.stop_all()
            for top in ["run"] + sorted({"usr", "etc", "var"} | set(os.listdir(self.dest))):
                run(["umount", "-l", "/" + top], check=False)
            self._entered = False
        shutil.rmtree(self.scratch, ignore_errors=True)


def _reap_children():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def python():
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
