#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A private test stack for aziot-dbus: its own system bus and the real polkitd.

Every test that crosses a process uses this, and so does `./dev up`.

    stack = Stack(run_dir, source_dir, build_dir,
                  extra_bus_policy_dirs=[...], extra_actions=[...])
    with stack:                        # start() ... stop()
        stack.add_rules("50-test", "polkit.addRule(...);")
        proc = stack.start_process("keyd", [exe], wait_bus_name="org.aziot.Keys1")
        stack.run_as("aziot-test-a", ["busctl", "--system", "list"])

What it runs, all under run_dir and nothing global, so stacks can run side by side:

  * dbus-daemon with a default-deny system-bus policy (tests/lib/system.conf.in) that includes
    /usr/share/dbus-1/system.d (polkitd's own policy), the project's dbus/ directory and the
    test's extra policy directories; listening on run_dir/bus/system_bus_socket;
  * /usr/lib/polkit-1/polkitd, as root (it switches to user polkitd itself), in a private mount
    namespace where run_dir/polkit/actions is /usr/share/polkit-1/actions (the project's
    polkit/*.policy plus the test's actions), run_dir/polkit/rules.d is /etc/polkit-1/rules.d and
    an empty directory hides the distribution's /usr/share/polkit-1/rules.d, so decisions depend
    only on the test's rules.

Needs root (polkitd must start as root; users are switched with setpriv) and the right to create a
mount namespace (CAP_SYS_ADMIN). It never writes to /usr/share or /etc, except /etc/passwd and
/etc/group through useradd in ensure_test_users() and groupadd in ensure_group().

Every process is started by pid, logged to run_dir/logs/NAME.log, and stopped and reaped by
stop(); an atexit hook and a SIGTERM/SIGHUP handler stop stacks a failing test leaves behind.
Standard library and dbus-python only; run it with /usr/bin/python3.
"""

import argparse
import atexit
import errno
import fcntl
import grp
import os
import pwd
import runpy
import secrets
import select
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
from xml.sax.saxutils import escape as xml_escape

try:
    import dbus
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.exit("aziot_harness needs dbus-python: run it with /usr/bin/python3")

POLKITD = "/usr/lib/polkit-1/polkitd"
POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_ACTIONS_DIR = "/usr/share/polkit-1/actions"
POLKIT_ETC_RULES_DIR = "/etc/polkit-1/rules.d"
POLKIT_VENDOR_RULES_DIR = "/usr/share/polkit-1/rules.d"
POLKITD_USER = "polkitd"

TEST_USERS = ("aziot-test-a", "aziot-test-b")
USERS_LOCK = "/run/lock/aziot-test-users.lock"

DEFAULT_TIMEOUT = 10.0
# Waiting for polkitd to reload its rules: generous, as a loaded CI machine can be slow.
RULES_TIMEOUT = 30.0
POLL_INTERVAL = 0.01
STOP_TIMEOUT = 10.0  # daemons under LeakSanitizer take a while to exit
SUN_PATH_MAX = 107

# The rules file written after every rules change: when polkitd logs its marker, it has re-read
# the directory after the change. It sorts last so that it never shadows a test's rule.
SYNC_RULES = "zz-aziot-harness-sync.rules"
FINISHED_LOADING = "Finished loading, compiling and executing"

HERE = os.path.dirname(os.path.abspath(__file__))
# The source tree and the build that tests run: AZIOT_SOURCE_DIR and AZIOT_BUILD_DIR, else this
# tree and its build/.
SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")


# Connects to an abstract Unix socket and stays there until the other end closes it.
_PEER_SCRIPT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("\0" + sys.argv[1])
s.recv(1)
"""


class HarnessError(Exception):
    """The stack could not be set up or did not behave; the message says why."""


# ---------------------------------------------------------------------------------------------
# Users


def ensure_test_users(names=TEST_USERS):
    """Creates the unprivileged system users the tests switch to, when they do not exist yet.

    Idempotent and safe when several test processes call it at once (an fcntl lock serialises the
    useradd calls). Returns {name: pwd entry}. Call it before Stack.start(): dbus-daemon ignores a
    <policy user="…"> naming a user that does not exist when it loads its configuration.
    """
    if os.geteuid() != 0:
        missing = [n for n in names if not _getpwnam(n)]
        if missing:
            raise HarnessError(f"test users {', '.join(missing)} are missing and only root can "
                               "create them")
        return {n: pwd.getpwnam(n) for n in names}

    with open(_users_lock_path(), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in names:
            if _getpwnam(name):
                continue
            result = subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 name], capture_output=True, text=True)
            if result.returncode != 0 and not _getpwnam(name):
                raise HarnessError(f"useradd {name} failed: {result.stderr.strip()}")
    return {n: pwd.getpwnam(n) for n in names}


def ensure_group(name):
    """Creates the system group name when it does not exist yet (groupadd --system).

    Idempotent and safe when several test processes call it at once (the lock of
    ensure_test_users() serialises every change to /etc/group). Returns the grp entry. Like the
    users, call it before Stack.start(): dbus-daemon ignores a <policy group="…"> naming a group
    that does not exist when it loads its configuration.
    """
    if _getgrnam(name):
        return grp.getgrnam(name)
    if os.geteuid() != 0:
        raise HarnessError(f"group {name} is missing and only root can create it")

    with open(_users_lock_path(), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _getgrnam(name):
            result = subprocess.run(["groupadd", "--system", name], capture_output=True,
                                    text=True)
            if result.returncode != 0 and not _getgrnam(name):
                raise HarnessError(f"groupadd {name} failed: {result.stderr.strip()}")
    return grp.getgrnam(name)


def _users_lock_path():
    """The lock ensure_test_users() takes (the same path, so both serialise)."""
    return USERS_LOCK if os.path.isdir(os.path.dirname(USERS_LOCK)) else \
        "/tmp/aziot-test-users.lock"


def _getgrnam(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def _getpwnam(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def setpriv_argv(user, groups=None, pdeathsig=None):
    """The setpriv prefix that runs a command as user (a name or a uid).

    groups: None clears the supplementary groups; "init" gives the user's own groups (from
    /etc/group); "keep" keeps ours; a list of group names or gids sets exactly those.
    pdeathsig: a signal name ("TERM") the command gets when its parent dies.
    """
    argv = ["setpriv"]
    if pdeathsig:
        argv += ["--pdeathsig", pdeathsig]
    if user is not None:
        pw = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
        argv += ["--reuid", str(pw.pw_uid), "--regid", str(pw.pw_gid)]
        if groups is None:
            argv.append("--clear-groups")
        elif groups == "init":
            argv.append("--init-groups")
        elif groups == "keep":
            argv.append("--keep-groups")
        else:
            argv += ["--groups", ",".join(str(g) for g in groups)]
    return argv


# ---------------------------------------------------------------------------------------------
# Processes


class Process:
    """A process the stack started: name, Popen object, log file (shared by the processes of the
    same name, one after the other; log() is this one's part, from log_offset)."""

    def __init__(self, name, popen, log_path, log_offset=0):
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.log_offset = log_offset

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log(self):
        return _read_text(self.log_path, self.log_offset)

    def __repr__(self):
        return f"<Process {self.name} pid={self.pid}>"


def _read_text(path, offset=0):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def _wait_until(predicate, timeout, what, on_timeout=None):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:g} s waiting for {what}"
                               + (f"\n{detail}" if detail else ""))
        time.sleep(POLL_INTERVAL)


def _terminate(popen, timeout=STOP_TIMEOUT):
    """SIGTERM, then SIGKILL; always reaps. Returns the exit status."""
    if popen.poll() is None:
        try:
            popen.send_signal(signal.SIGTERM)
            popen.send_signal(signal.SIGCONT)  # a stopped process (a test froze it) must see it
            return popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
    return popen.wait()


def _children_of(pid):
    """Pids of the live descendants of pid (zombies excluded), deepest first."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z":
            parent[int(entry)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found = kids + found
        todo += kids
    return found


# ---------------------------------------------------------------------------------------------
# The stack

_live_stacks = []


class Stack:
    """A private system bus plus the real polkitd, everything under run_dir.

    Construct, then start() (or use as a context manager); stop() ends everything. Later suites add
    their own processes with start_process() and extend env() with set_env().

    extra_bus_policy_dirs: more directories of bus policy .conf files, besides source_dir/dbus.
    extra_actions: more polkit .policy files, besides source_dir/polkit/*.policy.
    service_dir: a directory of bus activation files, besides run_dir/services (which
    write_service_file() fills).
    """

    def __init__(self, run_dir, source_dir, build_dir, extra_bus_policy_dirs=(),
                 extra_actions=(), service_dir=None):
        self.run_dir = os.path.abspath(run_dir)
        self.source_dir = os.path.abspath(source_dir)
        self.build_dir = os.path.abspath(build_dir)
        self.extra_bus_policy_dirs = [os.path.abspath(d) for d in extra_bus_policy_dirs]
        self.extra_actions = [os.path.abspath(a) for a in extra_actions]
        self.service_dir = os.path.abspath(service_dir) if service_dir else None

        self.logs_dir = os.path.join(self.run_dir, "logs")
        self.bus_dir = os.path.join(self.run_dir, "bus")
        self.bus_socket = os.path.join(self.bus_dir, "system_bus_socket")
        self.bus_config = os.path.join(self.bus_dir, "system.conf")
        self.services_dir = os.path.join(self.run_dir, "services")
        self.polkit_dir = os.path.join(self.run_dir, "polkit")
        self.actions_dir = os.path.join(self.polkit_dir, "actions")
        self.rules_dir = os.path.join(self.polkit_dir, "rules.d")
        self.vendor_rules_dir = os.path.join(self.polkit_dir, "vendor-rules.d")
        self.staging_dir = os.path.join(self.polkit_dir, "staging")

        # Put children in their own process group (`up` does, so that Ctrl-C reaches only the
        # harness, which then stops them in order). Tests leave them in the test's group, so
        # that a test runner that kills the group kills them too.
        self.own_process_group = False

        self.bus_address = None
        self.bus_process = None
        self.polkitd_process = None
        self.processes = {}  # name -> Process, started with start_process()
        self._extra_popens = []  # popen_as()
        self._env = {}
        self._conn = None
        self._lock = None
        self._started = False

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        """Starts the bus and polkitd; returns self. On failure stops what it started."""
        if self._started:
            raise HarnessError("stack already started")
        if os.geteuid() != 0:
            raise HarnessError("the test stack must run as root: polkitd has to start as root")
        _install_safety_net()
        _live_stacks.append(self)
        self._started = True
        try:
            self._prepare_dirs()
            self._prepare_polkit_dirs()
            self._start_bus()
            self.start_polkitd()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stops everything this stack started, by pid, and reaps it. Idempotent."""
        if self in _live_stacks:
            _live_stacks.remove(self)
        for popen in reversed(self._extra_popens):
            _terminate(popen)
        self._extra_popens.clear()
        for name in reversed(list(self.processes)):
            _terminate(self.processes.pop(name).popen)
        self.stop_polkitd()
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        self._stop_bus()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self._started = False

    # -- environment --------------------------------------------------------------------------

    def env(self):
        """What a client of this stack needs in its environment."""
        env = {"DBUS_SYSTEM_BUS_ADDRESS": self.bus_address or f"unix:path={self.bus_socket}",
               "AZIOT_TEST_RUN_DIR": self.run_dir}
        env.update(self._env)
        return env

    def set_env(self, **variables):
        """Adds variables to env() (and so to every process started afterwards)."""
        self._env.update({k: str(v) for k, v in variables.items()})

    def child_env(self, extra=None):
        """os.environ, minus any other bus, plus env() and extra."""
        env = dict(os.environ)
        for key in ("DBUS_STARTER_ADDRESS", "DBUS_STARTER_BUS_TYPE"):
            env.pop(key, None)
        env.update(self.env())
        env.update(extra or {})
        return env

    def write_env_file(self, path=None):
        """Writes env() as shell export lines (default run_dir/env); returns the path."""
        path = path or os.path.join(self.run_dir, "env")
        with open(path, "w") as f:
            for key, value in sorted(self.env().items()):
                f.write(f"export {key}={shlex.quote(value)}\n")
        return path

    # -- the bus ------------------------------------------------------------------------------

    def bus(self):
        """A dbus-python connection (as root) to this stack's bus, opened once."""
        if self._conn is None:
            self._conn = dbus.bus.BusConnection(self.bus_address)
        return self._conn

    def name_has_owner(self, name):
        return bool(self.bus().call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "NameHasOwner", "s", (name,)))

    def wait_for_name(self, name, timeout=DEFAULT_TIMEOUT, process=None):
        """Waits until name is owned. Fails early, with its log, when process dies first."""
        def ready():
            if process is not None and not process.alive():
                raise HarnessError(f"{process.name} exited with status {process.popen.poll()} "
                                   f"before owning {name}:\n{_tail(process.log())}")
            return self.name_has_owner(name)
        _wait_until(ready, timeout, f"{name} on the bus",
                    lambda: _tail(process.log()) if process else "")

    def wait_for_name_gone(self, name, timeout=DEFAULT_TIMEOUT):
        _wait_until(lambda: not self.name_has_owner(name), timeout, f"{name} to leave the bus")

    def reload_bus_config(self):
        """Makes dbus-daemon re-read its configuration, policies and service files now."""
        self.bus().call_blocking("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                 "org.freedesktop.DBus", "ReloadConfig", "", ())

    def write_service_file(self, bus_name, argv, env=None):
        """Makes bus_name activatable on this bus: run_dir/services/BUS_NAME.service runs argv
        (as root: this bus has no launch helper), stdout and stderr to logs/BUS_NAME.log."""
        os.makedirs(self.services_dir, exist_ok=True)
        script = os.path.join(self.services_dir, f"{bus_name}.sh")
        log = os.path.join(self.logs_dir, f"{bus_name}.log")
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        with open(script, "w") as f:
            f.write("#!/bin/sh\n"
                    f"exec env {assignments} {shlex.join(argv)} >>{shlex.quote(log)} 2>&1\n")
        os.chmod(script, 0o755)
        with open(os.path.join(self.services_dir, f"{bus_name}.service"), "w") as f:
            f.write(f"[D-BUS Service]\nName={bus_name}\nExec={script}\n")
        self.reload_bus_config()

    # -- processes ----------------------------------------------------------------------------

    def start_process(self, name, argv, env=None, user=None, groups=None, wait_bus_name=None,
                      timeout=DEFAULT_TIMEOUT, cwd=None):
        """Starts argv in the background as NAME, logging to run_dir/logs/NAME.log.

        env is added to child_env(); user/groups as in setpriv_argv() (default: root). With
        wait_bus_name, returns once that name is owned. The process is stopped by stop() or
        stop_process(name).
        """
        if name in self.processes and self.processes[name].alive():
            raise HarnessError(f"a process named {name} is already running")
        try:
            offset = os.path.getsize(os.path.join(self.logs_dir, f"{name}.log"))
        except FileNotFoundError:
            offset = 0
        popen, log_path = self._spawn(name, argv, self.child_env(env), user=user, groups=groups,
                                      cwd=cwd)
        process = Process(name, popen, log_path, offset)
        self.processes[name] = process
        if wait_bus_name:
            try:
                self.wait_for_name(wait_bus_name, timeout, process)
            except BaseException:
                self.stop_process(name)
                raise
        return process

    def stop_process(self, name, timeout=STOP_TIMEOUT):
        """SIGTERM (then SIGKILL after timeout) to a process from start_process(); returns its
        exit status."""
        process = self.processes.pop(name)
        return _terminate(process.popen, timeout)

    def run_as(self, user, argv, groups=None, env=None, **kwargs):
        """subprocess.run(argv) as user (see setpriv_argv() for groups) with this stack's
        environment. Captures text output and times out after 30 s unless told otherwise."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("cwd", "/")
        return subprocess.run(setpriv_argv(user, groups, pdeathsig="TERM") + list(argv),
                              env=self._user_env(user, env), **kwargs)

    def popen_as(self, user, argv, groups=None, env=None, **kwargs):
        """subprocess.Popen(argv) as user; stop() terminates it if it is still running."""
        kwargs.setdefault("cwd", "/")
        popen = subprocess.Popen(setpriv_argv(user, groups, pdeathsig="TERM") + list(argv),
                                 env=self._user_env(user, env), **kwargs)
        self._extra_popens.append(popen)
        return popen

    def connected_peer_as(self, user, groups=None):
        """A process running as user, connected to a Unix socket this process accepted: returns
        (popen, our end of the connection), whose SO_PEERCRED names that process, which stays until
        our end is shut down. For passing a client's socket ("client-socket") in tests."""
        address = f"aziot-peer-{secrets.token_hex(8)}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind("\0" + address)
            server.listen(1)
            server.settimeout(10)
            peer = self.popen_as(user, [sys.executable, "-c", _PEER_SCRIPT, address],
                                 groups=groups)
            conn, _ = server.accept()
        return peer, conn

    def _user_env(self, user, extra):
        pw = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": pw.pw_dir, "USER": pw.pw_name,
               "LOGNAME": pw.pw_name}
        env.update(self.env())
        env.update(extra or {})
        return env

    def _spawn(self, name, argv, env, user=None, groups=None, cwd=None, pass_fds=()):
        log_path = os.path.join(self.logs_dir, f"{name}.log")
        prefix = setpriv_argv(user, groups, pdeathsig="TERM")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(prefix + list(argv), env=env, cwd=cwd or self.run_dir,
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, pass_fds=pass_fds,
                                     process_group=0 if self.own_process_group else None)
        return popen, log_path

    # -- polkitd ------------------------------------------------------------------------------

    def start_polkitd(self, timeout=DEFAULT_TIMEOUT):
        """Starts polkitd (again) in its private mount namespace and waits for its name."""
        if self.polkitd_process and self.polkitd_process.alive():
            raise HarnessError("polkitd is already running")
        mounts = " && ".join(
            f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}"
            for src, dst in ((self.actions_dir, POLKIT_ACTIONS_DIR),
                             (self.rules_dir, POLKIT_ETC_RULES_DIR),
                             (self.vendor_rules_dir, POLKIT_VENDOR_RULES_DIR)))
        # exec: the pid we hold is polkitd's own, not a shell's. No --no-debug: its log tells
        # when rules were reloaded.
        argv = ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", f"{mounts} && exec {POLKITD}"]
        with open(os.path.join(self.logs_dir, "polkitd.log"), "a") as log:
            log.write(f"--- aziot_harness: starting polkitd at {time.strftime('%H:%M:%S')}\n")
        popen, log_path = self._spawn("polkitd", argv, self.child_env())
        self.polkitd_process = Process("polkitd", popen, log_path)
        try:
            self.wait_for_name(POLKIT_NAME, timeout, self.polkitd_process)
        except BaseException:
            self.stop_polkitd()
            raise
        exe = os.readlink(f"/proc/{popen.pid}/exe")
        if os.path.basename(exe) != "polkitd":
            raise HarnessError(f"pid {popen.pid} is {exe}, not polkitd")

    def stop_polkitd(self):
        """Stops polkitd and waits until its name has left the bus."""
        if self.polkitd_process is None:
            return
        _terminate(self.polkitd_process.popen)
        self.polkitd_process = None
        if self.bus_process and self.bus_process.alive():
            self.wait_for_name_gone(POLKIT_NAME)

    def polkitd_running(self):
        return bool(self.polkitd_process and self.polkitd_process.alive())

    def add_rules(self, name, js_text, timeout=RULES_TIMEOUT):
        """Installs (or replaces) rules.d/NAME.rules and returns once polkitd has loaded it."""
        path = self._rules_path(name)
        self._install_file(path, js_text)
        self._sync_rules(timeout)
        return path

    def remove_rules(self, name, timeout=RULES_TIMEOUT):
        """Removes rules.d/NAME.rules (if present) and returns once polkitd has reloaded."""
        try:
            os.unlink(self._rules_path(name))
        except FileNotFoundError:
            pass
        self._sync_rules(timeout)

    def polkitd_log(self):
        return _read_text(os.path.join(self.logs_dir, "polkitd.log"))

    def _rules_path(self, name):
        if not name.endswith(".rules"):
            name += ".rules"
        if "/" in name or name.startswith(".") or name == SYNC_RULES:
            raise HarnessError(f"invalid rules file name {name!r}")
        return os.path.join(self.rules_dir, name)

    def _install_file(self, path, text):
        # Written aside and renamed in, so that polkitd never reads half a file.
        tmp = os.path.join(self.staging_dir, f"{os.path.basename(path)}.{secrets.token_hex(4)}")
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)

    def _sync_rules(self, timeout):
        """Returns once polkitd has re-read rules.d after the last change.

        A change makes polkitd reload (once or twice) within milliseconds, but there is no reply to
        wait for. So a sync file with a fresh marker is renamed in after the change: the marker in
        polkitd's log, followed by the end-of-loading line, proves a complete reload that saw it.
        """
        if not self.polkitd_running():
            return
        # A reload that polkitd folds into one it is already doing can miss the sync file: then a
        # new sync file (a new marker) is renamed in, up to three times within the timeout.
        attempts = 3
        for attempt in range(attempts):
            marker = f"aziot-harness rules sync {secrets.token_hex(8)}"
            self._install_file(os.path.join(self.rules_dir, SYNC_RULES),
                               f"/* written by tests/lib/aziot_harness.py */\n"
                               f"polkit.log({marker!r});\n")

            def loaded():
                log = self.polkitd_log()
                at = log.find(marker)
                return at >= 0 and log.find(FINISHED_LOADING, at) >= 0
            try:
                _wait_until(loaded, timeout / attempts, "polkitd to reload its rules",
                            lambda: _tail(self.polkitd_log()))
                return
            except HarnessError:
                if attempt == attempts - 1:
                    raise

    # -- set-up details -----------------------------------------------------------------------

    def _prepare_dirs(self):
        if len(self.bus_socket) > SUN_PATH_MAX:
            raise HarnessError(f"run dir too deep for a Unix socket path: {self.bus_socket} is "
                               f"longer than {SUN_PATH_MAX} bytes; use a shorter run_dir")
        os.makedirs(self.run_dir, exist_ok=True)
        # One stack per run_dir.
        self._lock = open(os.path.join(self.run_dir, ".stack.lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._lock.close()
            self._lock = None
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise HarnessError(f"another stack is running in {self.run_dir}") from None
            raise
        # polkitd (as user polkitd) reads the actions and the rules below run_dir, and test users
        # connect to the socket in it: the way there must be open to others.
        for d in (self.run_dir, self.logs_dir, self.bus_dir, self.services_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        _check_reachable(self.run_dir)
        if os.path.exists(self.bus_socket):  # left by a killed run; we hold the lock
            os.unlink(self.bus_socket)

    def _prepare_polkit_dirs(self):
        shutil.rmtree(self.polkit_dir, ignore_errors=True)
        os.makedirs(self.actions_dir)
        os.makedirs(self.staging_dir)
        os.chmod(self.polkit_dir, 0o755)
        os.chmod(self.actions_dir, 0o755)
        os.chmod(self.staging_dir, 0o700)
        project_policy = os.path.join(self.source_dir, "polkit")
        actions = sorted(os.path.join(project_policy, f) for f in os.listdir(project_policy)
                         if f.endswith(".policy")) if os.path.isdir(project_policy) else []
        for path in actions + self.extra_actions:
            if not os.path.isfile(path):
                raise HarnessError(f"polkit action file {path} does not exist")
            dest = os.path.join(self.actions_dir, os.path.basename(path))
            shutil.copyfile(path, dest)
            os.chmod(dest, 0o644)
        pw = pwd.getpwnam(POLKITD_USER)
        for d in (self.rules_dir, self.vendor_rules_dir):
            os.makedirs(d)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700)
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            raise HarnessError(
                "cannot create a private mount namespace for polkitd (unshare --mount: "
                f"{probe.stderr.strip()}). It needs CAP_SYS_ADMIN; in a container run with "
                "--privileged or --cap-add SYS_ADMIN. The harness will not install test "
                "policy into /usr/share/polkit-1 or /etc/polkit-1.")

    def _write_bus_config(self):
        with open(os.path.join(HERE, "system.conf.in")) as f:
            template = f.read()
        servicedirs = [self.services_dir] + ([self.service_dir] if self.service_dir else [])
        includedirs = [os.path.join(self.source_dir, "dbus")] + self.extra_bus_policy_dirs
        config = (template
                  .replace("@LISTEN@", xml_escape(f"unix:path={self.bus_socket}"))
                  .replace("@SERVICEDIRS@", "\n".join(
                      f"  <servicedir>{xml_escape(d)}</servicedir>" for d in servicedirs))
                  .replace("@INCLUDEDIRS@", "\n".join(
                      f"  <includedir>{xml_escape(d)}</includedir>" for d in includedirs)))
        with open(self.bus_config, "w") as f:
            f.write(config)

    def _start_bus(self, timeout=DEFAULT_TIMEOUT):
        self._write_bus_config()
        # No --fork: the daemon stays our child, so stop() can reap it (PID 1 may not).
        # It prints its address on a pipe once it listens.
        read_end, write_end = os.pipe()
        try:
            popen, log_path = self._spawn(
                "dbus-daemon",
                ["dbus-daemon", f"--config-file={self.bus_config}", "--nofork",
                 f"--print-address={write_end}"],
                self.child_env(), pass_fds=(write_end,))
            self.bus_process = Process("dbus-daemon", popen, log_path)
            os.close(write_end)
            write_end = -1
            address = b""
            deadline = time.monotonic() + timeout
            while not address.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([read_end], [], [], left)[0]:
                    raise HarnessError(f"dbus-daemon did not start within {timeout:g} s:\n"
                                       f"{_tail(self.bus_process.log())}")
                chunk = os.read(read_end, 4096)
                if not chunk:
                    popen.wait(1)
                    raise HarnessError(f"dbus-daemon exited with status {popen.poll()}:\n"
                                       f"{_tail(self.bus_process.log())}")
                address += chunk
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        self.bus_address = address.decode().strip()

    def _stop_bus(self):
        if self.bus_process is None:
            return
        pid = self.bus_process.pid
        # Services the bus activated are its children: stop them while it can still reap them.
        if self.bus_process.alive():
            for child in _children_of(pid):
                try:
                    os.kill(child, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                _wait_until(lambda: not _children_of(pid), STOP_TIMEOUT, "activated services")
            except HarnessError:
                for child in _children_of(pid):
                    try:
                        os.kill(child, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        _terminate(self.bus_process.popen)
        self.bus_process = None
        if os.path.exists(self.bus_socket):
            os.unlink(self.bus_socket)

    # -- reporting ----------------------------------------------------------------------------

    def describe(self):
        """A human-readable summary: what runs, with pids, and how to talk to it."""
        lines = [f"run dir:      {self.run_dir}",
                 f"bus:          {self.bus_address}",
                 f"dbus-daemon:  pid {self.bus_process.pid if self.bus_process else '-'}"
                 f"  (log {os.path.join(self.logs_dir, 'dbus-daemon.log')})",
                 f"polkitd:      pid {self.polkitd_process.pid if self.polkitd_process else '-'}"
                 f"  (log {os.path.join(self.logs_dir, 'polkitd.log')}; rules in "
                 f"{self.rules_dir})"]
        for process in self.processes.values():
            lines.append(f"{process.name + ':':13} pid {process.pid}  (log {process.log_path})")
        addr = shlex.quote(self.env()["DBUS_SYSTEM_BUS_ADDRESS"])
        lines += ["",
                  "Talk to it:",
                  f"  . {os.path.join(self.run_dir, 'env')}",
                  "  busctl --system list",
                  f"  or: DBUS_SYSTEM_BUS_ADDRESS={addr} busctl --system list",
                  f"  as a test user: setpriv --reuid=aziot-test-a --regid=aziot-test-a "
                  f"--clear-groups env DBUS_SYSTEM_BUS_ADDRESS={addr} busctl --system list"]
        return "\n".join(lines)


class CallError(Exception):
    """A D-Bus error reply, as the suites compare it: its name and its message."""

    def __init__(self, name, message):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def wait_until(predicate, timeout, what, interval=0.02):
    """Polls predicate until it is true; AssertionError (a test failure) after timeout s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class StackTestMixin:
    """For unittest.TestCase classes that run on one Stack (cls.stack): a failed test marks the
    class (cls.failed = True) so that tearDownClass keeps its logs, and add_rules() installs
    polkit rules named after the test, which remove_test_rules() (call it in tearDown) takes
    away again."""

    failed = False

    def run(self, result=None):
        def problems(r):
            return len(r.failures) + len(r.errors) if r is not None else 0
        before = problems(result)
        result = super().run(result)
        if problems(result) > before:
            type(self).failed = True
        return result

    def add_rules(self, js):
        if not hasattr(self, "rules"):
            self.rules = []
        name = f"50-{self.id().rsplit('.', 1)[-1]}-{len(self.rules)}"
        self.stack.add_rules(name, js)
        self.rules.append(name)
        return name

    def remove_test_rules(self):
        for name in getattr(self, "rules", []):
            self.stack.remove_rules(name)
        self.rules = []


class StackTestCase(StackTestMixin, unittest.TestCase):
    """A TestCase class with a Stack of its own (cls.stack, on cls.run_dir). setUpClass() checks
    that what REQUIRED names is built (else raises NOT_BUILT), makes run_dir (RUN_DIR_PREFIX, in
    RUN_DIR_PARENT or the default temporary directory; searchable by the test users and polkitd)
    and the stack (with stack_options()), then calls start_class(); when that fails,
    stop_class(), and run_dir is kept. tearDownClass() calls stop_class() and keeps run_dir when a
    test failed or, with SANITIZER_REPORTS, when a log holds a sanitizer's report (which fails
    the class); else removes it."""

    RUN_DIR_PREFIX = "aziot-test-"
    RUN_DIR_PARENT = None
    REQUIRED = ()
    NOT_BUILT = unittest.SkipTest  # AssertionError: a suite that must not be skipped
    SANITIZER_REPORTS = False

    @classmethod
    def setUpClass(cls):
        for path in cls.REQUIRED:
            if not os.access(path, os.X_OK):
                raise cls.NOT_BUILT(f"{path} is not built")
        cls.run_dir = tempfile.mkdtemp(prefix=cls.RUN_DIR_PREFIX, dir=cls.RUN_DIR_PARENT)
        os.chmod(cls.run_dir, 0o755)
        cls.failed = False
        cls.stack = Stack(cls.run_dir, SOURCE_DIR, BUILD_DIR, **cls.stack_options())
        try:
            cls.start_class()
        except BaseException:
            cls.stop_class()
            print(f"stack logs kept in {cls.run_dir}", file=sys.stderr)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stop_class()
        reports = []
        if cls.SANITIZER_REPORTS:
            logs = os.path.join(cls.run_dir, "logs")
            for name in sorted(os.listdir(logs)):
                text = _read_text(os.path.join(logs, name))
                if "Sanitizer" in text or "runtime error:" in text:
                    reports.append(f"--- {name}\n{text}")
        if cls.failed or reports:
            print(f"\nstack logs kept in {cls.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.run_dir, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports:\n" + "\n".join(reports))

    @classmethod
    def stack_options(cls):
        """Keyword arguments of the class's Stack, besides its directories (run_dir exists)."""
        return {}

    @classmethod
    def start_class(cls):
        """Starts the stack and what the class tests on it."""
        raise NotImplementedError

    @classmethod
    def stop_class(cls):
        """Stops what start_class() started, also when it did not get far."""
        cls.stack.stop()


def _check_reachable(path):
    """polkitd and the test users must be able to walk down to path."""
    p = os.path.abspath(path)
    while True:
        mode = os.stat(p).st_mode
        if not mode & stat.S_IXOTH:
            raise HarnessError(f"{p} is not searchable by other users (mode {stat.filemode(mode)}"
                               f"), so polkitd and test users cannot reach {path}; use a run "
                               "dir under /tmp")
        if p == "/":
            return
        p = os.path.dirname(p)


# ---------------------------------------------------------------------------------------------
# Safety net: a test that dies without stopping its stack still leaves no process behind.

_safety_net_installed = False


def _stop_all_stacks():
    for stack in list(_live_stacks):
        try:
            stack.stop()
        except Exception as e:  # keep stopping the others
            print(f"aziot_harness: stopping {stack.run_dir} failed: {e}", file=sys.stderr)


def _exit_on_signal(signum, frame):
    # Stop the stacks here: a test runner may swallow SystemExit as a test error. Then die of
    # the signal itself, so that the parent sees what happened.
    _stop_all_stacks()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_safety_net():
    global _safety_net_installed
    if _safety_net_installed:
        return
    _safety_net_installed = True
    atexit.register(_stop_all_stacks)
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _exit_on_signal)
    except ValueError:  # not the main thread: atexit still applies
        pass


# ---------------------------------------------------------------------------------------------
# Command line: `up` runs a stack until SIGINT/SIGTERM.


class _StopRequested(Exception):
    pass


def _request_stop(signum, frame):
    # Once: a second Ctrl-C must not cut the orderly stop short.
    for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(other, signal.SIG_IGN)
    raise _StopRequested(signal.Signals(signum).name)


def _cmd_up(args):
    # Handlers, not a blocked mask: children inherit a signal mask, and dbus-daemon must still
    # die on SIGTERM. Children run in their own process group, so Ctrl-C reaches only us.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _request_stop)
    if args.test_users:
        ensure_test_users()
    stack = Stack(args.run_dir, args.source_dir, args.build_dir,
                  extra_bus_policy_dirs=args.extra_bus_policy_dir,
                  extra_actions=args.extra_action, service_dir=args.service_dir)
    stack.own_process_group = True
    try:
        with stack:
            started = []  # what the hooks return lives as long as the stack
            for hook in args.hook:
                # A hook is a Python file defining up(stack): it starts more of the stack.
                namespace = runpy.run_path(hook)
                if "up" not in namespace:
                    raise HarnessError(f"hook {hook} defines no up(stack)")
                started.append(namespace["up"](stack))
            stack.write_env_file()
            print(stack.describe(), flush=True)
            print("\nCtrl-C (SIGINT) or SIGTERM stops everything.", flush=True)
            reported = set()
            while True:
                time.sleep(1)
                for process in [stack.bus_process, stack.polkitd_process,
                                *stack.processes.values()]:
                    if process and not process.alive() and process.name not in reported:
                        reported.add(process.name)
                        print(f"warning: {process.name} (pid {process.pid}) exited with "
                              f"status {process.popen.poll()}; see {process.log_path}",
                              flush=True)
    except _StopRequested as e:
        print(f"\nGot {e}, stopped everything.", flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a stack and run it until SIGINT/SIGTERM")
    up.add_argument("--run-dir", required=True, help="where sockets, logs and state go")
    up.add_argument("--source-dir", required=True, help="the source tree (dbus/, polkit/)")
    up.add_argument("--build-dir", required=True, help="the meson build directory")
    up.add_argument("--extra-bus-policy-dir", action="append", default=[],
                    help="another directory of bus policy .conf files")
    up.add_argument("--extra-action", action="append", default=[],
                    help="another polkit .policy file")
    up.add_argument("--service-dir", help="another directory of bus activation files")
    up.add_argument("--hook", action="append", default=[],
                    help="a Python file defining up(stack), run once the stack is up")
    up.add_argument("--test-users", action="store_true",
                    help=f"create the test users ({', '.join(TEST_USERS)}) first")
    args = parser.parse_args(argv)
    try:
        return _cmd_up(args)
    except HarnessError as e:
        print(f"aziot_harness: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
