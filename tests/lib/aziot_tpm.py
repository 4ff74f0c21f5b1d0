#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A TPM 2.0 simulator for tests, and the TPM structures a DPS service sends a TPM device.

    with Swtpm(tmp) as tpm:                      # tmp/state, tmp/swtpm.log, tmp/swtpm.sock(.ctrl)
        tpm.tools("tpm2_createek", "-c", "0x81010001", "-G", "rsa", "-u", "ek.pub")
        run(tpmd, env={**os.environ, **tpm.env})  # TPM2TOOLS_TCTI; tpm.tcti for a TCTI loader
        tpm.restart()                            # same state: persistent objects survive
        tpm.pause(); ...; tpm.resume()           # SIGSTOP/SIGCONT: TPM commands hang meanwhile

    blob = make_auth_key_blob(ek_public, srk_public, hmac_key)   # DPS "authenticationKey"

Swtpm is `swtpm socket --tpm2` on a Unix socket, a child process of this one (sent SIGTERM by
the kernel if this process dies), with its state under the directory given. The swtpm TCTI finds
the control channel at <socket>.ctrl, so that is where it listens. There is no resource manager:
tpm2-tools leave the transient objects they load in the TPM (swtpm holds three), so callers flush
them (flush_transients(), or `tpm2_flushcontext -t`) between steps.

The second half builds, with python3-cryptography, what the Azure DPS service answers a TPM
device's first registration (TPM 2.0 Library, Part 1: 11.4.10 KDFa, 24 credential protection,
23 duplication; Part 2 for the structures). The blob is five marshalled TPM2B structures, each
with a big-endian 16-bit size:

    TPM2B_ID_OBJECT         credential blob  } ActivateCredential(activateHandle=SRK, keyHandle=EK)
    TPM2B_ENCRYPTED_SECRET  secret           }   -> K, a 16-byte AES-128 key
    TPM2B_PRIVATE           duplicate        } Import(parent=SRK, encryptionKey=K,
    TPM2B_ENCRYPTED_SECRET  inSymSeed        }        symmetricAlg=AES-128-CFB)
    TPM2B_PUBLIC            objectPublic     }   -> an HMAC-SHA256 key to Load under the SRK

The imported object (AUTH_KEY_ATTRIBUTES and hmac_key_object()): a keyedHash with nameAlg
SHA-256, scheme HMAC(SHA-256), attributes userWithAuth | sign (0x00040040), empty authValue and
authPolicy, no fixedTPM / fixedParent (an imported object cannot have them: TPM_RC_ATTRIBUTES),
no sensitiveDataOrigin (the key comes from outside the TPM), no noDA (the DA lockout protects it
like any user key) and no encryptedDuplication. Its sensitive part has a random seedValue of the
digest size, and unique = SHA-256(seedValue || key), which the TPM checks on import.

EK and SRK are given as marshalled TPM2B_PUBLIC (what `tpm2_readpublic -o` writes and what
GET /get_tpm_keys returns). Only RSA parents are supported (seeds are RSA-OAEP encrypted);
symmetric wrapping is AES-CFB with a zero IV, as the TPM does for both wrappers.

Observed on swtpm 0.7.1 (libtpms 0.9) with tpm2-tools 5.4, and relied on by the tests:
  * tpm2_readpublic -o writes the TPM2B_PUBLIC (size prefix included); tpm2_activatecredential -i
    wants tpm2_tools_credential_file(); tpm2_import -u PUB -i DUPLICATE -s SEED -k K -r OUT
    imports a duplicate (-k implies AES-128-CFB for the inner wrapper).
  * A seed that does not OAEP-decrypt (blob for another EK, seed for another SRK, corrupted
    seed) fails ActivateCredential / Import with TPM_RC_FAILURE (0x101, "commands not being
    accepted because of a TPM failure"), yet the TPM is not in failure mode: the next command
    works. A wrong K fails Import with TPM_RC_SIZE (0x3d5); a corrupted duplicate or a changed
    objectPublic with TPM_RC_INTEGRITY (0x3df); fixedTPM with TPM_RC_ATTRIBUTES (0x2c2); an HMAC
    key longer than a hash block with TPM_RC_KEY_SIZE (0x3c7).

Run with /usr/bin/python3; the structures need python3-cryptography, the swtpm half only the
standard library. Failures of processes and tools raise TpmError with the command and its
output; malformed structures and unsupported keys raise ValueError.
"""

import ctypes
import dataclasses
import fcntl
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import struct
import subprocess
import tempfile
import time

SWTPM_PACKAGES = ["swtpm", "tpm2-tools"]
APT_LOCK = "/run/lock/aziot-tokens-apt.lock"
DEFAULT_TIMEOUT = 10.0
TOOL_TIMEOUT = 120.0
SUN_PATH_MAX = 107

# Persistent handles of the standard EK and SRK.
EK_HANDLE = 0x81010001
SRK_HANDLE = 0x81000001

# TPM_ALG_ID (Part 2, 6.3)
TPM2_ALG_RSA = 0x0001
TPM2_ALG_SHA1 = 0x0004
TPM2_ALG_HMAC = 0x0005
TPM2_ALG_AES = 0x0006
TPM2_ALG_KEYEDHASH = 0x0008
TPM2_ALG_XOR = 0x000A
TPM2_ALG_SHA256 = 0x000B
TPM2_ALG_SHA384 = 0x000C
TPM2_ALG_SHA512 = 0x000D
TPM2_ALG_NULL = 0x0010
TPM2_ALG_RSAES = 0x0015
TPM2_ALG_ECDAA = 0x001A
TPM2_ALG_ECC = 0x0023
TPM2_ALG_SYMCIPHER = 0x0025
TPM2_ALG_CFB = 0x0043

# TPMA_OBJECT (Part 2, 8.3)
TPMA_OBJECT_FIXEDTPM = 1 << 1
TPMA_OBJECT_STCLEAR = 1 << 2
TPMA_OBJECT_FIXEDPARENT = 1 << 4
TPMA_OBJECT_SENSITIVEDATAORIGIN = 1 << 5
TPMA_OBJECT_USERWITHAUTH = 1 << 6
TPMA_OBJECT_ADMINWITHPOLICY = 1 << 7
TPMA_OBJECT_NODA = 1 << 10
TPMA_OBJECT_ENCRYPTEDDUPLICATION = 1 << 11
TPMA_OBJECT_RESTRICTED = 1 << 16
TPMA_OBJECT_DECRYPT = 1 << 17
TPMA_OBJECT_SIGN_ENCRYPT = 1 << 18

# What the imported DPS authentication key is (see the module docstring).
AUTH_KEY_ATTRIBUTES = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT

# TCG EK Credential Profile, template L-1 (RSA 2048): PolicySecret(TPM_RH_ENDORSEMENT).
EK_RSA_ATTRIBUTES = (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                     TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                     TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT)
EK_RSA_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
# TCG Provisioning Guidance, the RSA 2048 SRK under the owner hierarchy.
SRK_RSA_ATTRIBUTES = (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                      TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                      TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT)
AES_128_CFB = (TPM2_ALG_AES, 128, TPM2_ALG_CFB)

# The header tpm2_makecredential puts before TPM2B_ID_OBJECT || TPM2B_ENCRYPTED_SECRET and
# tpm2_activatecredential -i expects: magic, version.
TPM2_TOOLS_CREDENTIAL_HEADER = struct.pack(">II", 0xBADCC0DE, 1)

# TPM hash algorithm -> hashlib (and python-cryptography) name.
_HASHES = {TPM2_ALG_SHA1: "sha1", TPM2_ALG_SHA256: "sha256", TPM2_ALG_SHA384: "sha384",
           TPM2_ALG_SHA512: "sha512"}


class TpmError(RuntimeError):
    """Starting, stopping or talking to the TPM failed; the message has the command and output."""


# ---------------------------------------------------------------------------------------------
# processes and tools (shared with aziot_tokens)


def _fmt_cmd(cmd):
    return " ".join(str(c) for c in cmd)


def _tail(text, limit=4000):
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run_tool(cmd, env=None, what=None, check=True, input=None, timeout=TOOL_TIMEOUT, cwd=None):
    """Runs cmd (text mode) and returns the CompletedProcess; raises TpmError with the command,
    exit status, stdout and stderr when check and it fails, and whenever it cannot be started or
    times out (the tool is killed then)."""
    try:
        proc = subprocess.run([str(c) for c in cmd], env=env, input=input, capture_output=True,
                              text=True, errors="replace", timeout=timeout, cwd=cwd,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise TpmError(f"{what or 'command'}: {cmd[0]} not found ({e}); "
                       f"is its Debian package installed?") from None
    except subprocess.TimeoutExpired as e:
        err = e.stderr if isinstance(e.stderr, str) else ""
        raise TpmError(f"{what or 'command'}: timed out after {timeout}s: {_fmt_cmd(cmd)}\n"
                       f"stderr: {_tail(err)}") from None
    if check and proc.returncode != 0:
        raise TpmError(f"{what or 'command'} failed (exit {proc.returncode}): {_fmt_cmd(cmd)}\n"
                       f"stdout: {_tail(proc.stdout)}\nstderr: {_tail(proc.stderr)}")
    return proc


def missing_packages(packages):
    missing = []
    for p in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if r.returncode != 0 or r.stdout.strip() != "install ok installed":
            missing.append(p)
    return missing


def ensure_packages(packages):
    """Installs the Debian packages that are missing (quietly, idempotently, once at a time across
    processes). Needs root when something is missing."""
    if not missing_packages(packages):
        return
    if os.geteuid() != 0:
        raise TpmError(f"missing Debian packages {' '.join(missing_packages(packages))}; "
                       f"as root run: apt-get install {' '.join(packages)}")
    os.makedirs(os.path.dirname(APT_LOCK), exist_ok=True)
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = missing_packages(packages)
        if not missing:
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                   "-o", "DPkg::Lock::Timeout=300"] + missing
        r = run_tool(install, env=env, check=False, timeout=900)
        if r.returncode != 0:
            # Maybe the package lists are missing or stale: update once and retry.
            run_tool(["apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=300"], env=env,
                     what="apt-get update", timeout=900)
            run_tool(install, env=env, what=f"installing {' '.join(missing)}", timeout=900)
        still = missing_packages(packages)
        if still:
            raise TpmError(f"packages still missing after apt-get install: {' '.join(still)}")


def pdeathsig():
    """preexec_fn: the child gets SIGTERM when the test process dies, so no daemon outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort
        pass


def stop_process(proc, timeout=5.0):
    """SIGTERM, then SIGKILL after timeout; reaps the process."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_until(cond, what, proc, log, timeout=DEFAULT_TIMEOUT):
    """Polls cond() until it is true; TpmError (with the log) if proc exits or time runs out."""
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise TpmError(f"{what}: process exited with {proc.returncode}: {read_text(log)}")
        if time.monotonic() > end:
            raise TpmError(f"{what}: not ready after {timeout}s: {read_text(log)}")
        time.sleep(0.005)


def wait_tpm_ready(env, proc, log, what, timeout=DEFAULT_TIMEOUT):
    """Waits until tpm2_getrandom succeeds with env (which names the TCTI)."""
    env = dict(env, TSS2_LOG="all+NONE")
    last = None

    def ready():
        nonlocal last
        last = run_tool(["tpm2_getrandom", "4", "--hex"], env=env, check=False, timeout=10)
        return last.returncode == 0

    try:
        wait_until(ready, f"{what} (tpm2_getrandom via {env.get('TPM2TOOLS_TCTI')})", proc, log,
                   timeout)
    except TpmError as e:
        raise TpmError(f"{e}\nlast tpm2_getrandom: {last.stderr if last else ''}") from None


# ---------------------------------------------------------------------------------------------
# swtpm


class Swtpm:
    """A TPM 2.0 simulator (swtpm socket --tpm2) with its state in directory.

    Under directory: state/ (the TPM's NV state), swtpm.log (swtpm's log), swtpm.log.out (its
    stdout and stderr), swtpm.pid, and the sockets swtpm.sock and swtpm.sock.ctrl unless
    socket_dir says where they go or directory is too long for a Unix socket path (then a short
    directory in /tmp, removed by close()).

    start() waits until tpm2_getrandom answers; stop() shuts swtpm down cleanly; restart() is
    both, with the same state (persistent objects survive; transient objects and sessions do
    not, as after a reboot). pause()/resume() stop and continue the process, so a TPM command
    sent meanwhile hangs until resume(). close() stops it and removes what it created (the state
    included). As a context manager it starts on entry and closes on exit."""

    def __init__(self, directory, socket_dir=None, install=True):
        if install:
            ensure_packages(SWTPM_PACKAGES)
        self.directory = os.path.abspath(directory)
        self._made = []
        self._closed = False
        self.process = None
        self.paused = False
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, mode=0o700)
            self._made.append(self.directory)
        self.state_dir = os.path.join(self.directory, "state")
        self.log = os.path.join(self.directory, "swtpm.log")
        self.output = self.log + ".out"
        self.pid_file = os.path.join(self.directory, "swtpm.pid")
        sock_dir = os.path.abspath(socket_dir or self.directory)
        if len(os.path.join(sock_dir, "swtpm.sock.ctrl")) > SUN_PATH_MAX:
            sock_dir = tempfile.mkdtemp(prefix="aziot-swtpm-", dir="/tmp")
            self._made.append(sock_dir)
        self.socket = os.path.join(sock_dir, "swtpm.sock")
        self.ctrl_socket = self.socket + ".ctrl"  # where the swtpm TCTI looks for it

    @property
    def tcti(self):
        """The TCTI loader string (Tss2_TctiLdr_Initialize, tpm2-tools -T)."""
        return f"swtpm:path={self.socket}"

    @property
    def env(self):
        """What a tpm2-tools process needs in its environment to use this TPM."""
        return {"TPM2TOOLS_TCTI": self.tcti}

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self):
        return self.process.pid if self.running else None

    def _new_path(self, path):
        if not os.path.lexists(path):
            self._made.append(path)
        return path

    def start(self, timeout=DEFAULT_TIMEOUT):
        """Starts swtpm (if it is not running) and waits until it answers. Returns self."""
        if self._closed:
            raise TpmError("swtpm: start() after close()")
        if self.running:
            return self
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, mode=0o700)
            self._made.append(self.state_dir)
        for path in (self.socket, self.ctrl_socket):  # left by a killed swtpm
            if os.path.lexists(path):
                os.unlink(path)
        self._new_path(self.log)
        self._new_path(self.pid_file)
        cmd = ["swtpm", "socket", "--tpm2", "--flags", "not-need-init,startup-clear",
               "--server", f"type=unixio,path={self.socket}",
               "--ctrl", f"type=unixio,path={self.ctrl_socket}",
               "--tpmstate", f"dir={self.state_dir}", "--pid", f"file={self.pid_file}",
               "--log", f"file={self.log},level=1"]
        with open(self._new_path(self.output), "a") as out:
            try:
                self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=out, preexec_fn=pdeathsig)
            except FileNotFoundError:
                raise TpmError("swtpm not found; install " + " ".join(SWTPM_PACKAGES)) from None
        self.paused = False
        try:
            wait_until(lambda: os.path.exists(self.socket) and os.path.exists(self.ctrl_socket),
                       "swtpm socket", self.process, self.output, timeout)
            wait_tpm_ready(dict(os.environ, **self.env), self.process, self.output, "swtpm",
                           timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Shuts swtpm down (CMD_SHUTDOWN on the control channel, SIGTERM if that fails)."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        if self.process.poll() is None:
            run_tool(["swtpm_ioctl", "--unix", self.ctrl_socket, "-s"], check=False, timeout=5)
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                pass
        stop_process(self.process)

    def restart(self, timeout=DEFAULT_TIMEOUT):
        """stop() and start() on the same state."""
        self.stop()
        return self.start(timeout)

    def pause(self):
        """SIGSTOP: swtpm answers nothing (TPM commands block) until resume()."""
        if not self.running:
            raise TpmError("swtpm: pause() while it is not running")
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True
        # Return only once the kernel has stopped it, so a command sent next surely hangs.
        end = time.monotonic() + DEFAULT_TIMEOUT
        while self._proc_state() not in ("T", "t") and time.monotonic() < end:
            time.sleep(0.001)

    def resume(self):
        """SIGCONT: commands sent while paused are answered now."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def _proc_state(self):
        stat = read_text(f"/proc/{self.process.pid}/stat")
        # pid (comm) state ...: comm may contain spaces, the state follows the last ')'.
        return stat[stat.rfind(")") + 2:][:1] if stat else ""

    def tools(self, *args, check=True, input=None, timeout=TOOL_TIMEOUT, cwd=None):
        """Runs a tpm2-tools command (e.g. tools("tpm2_getrandom", "8", "--hex")) against this
        TPM; returns the CompletedProcess (text mode), TpmError if check and it fails."""
        return run_tool(list(args), env=dict(os.environ, **self.env), what=str(args[0]),
                        check=check, input=input, timeout=timeout, cwd=cwd)

    def flush_transients(self):
        """Flushes every transient object and loaded or saved session (tpm2-tools leave them)."""
        for flag in ("-t", "-l", "-s"):
            self.tools("tpm2_flushcontext", flag, check=False)

    def close(self):
        """Stops swtpm and removes what this object created (the directory if it made it)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        for path in reversed(self._made):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# marshalling (Part 2; every integer big-endian)


def tpm2b(data):
    """A TPM2B: 16-bit size, then the bytes."""
    data = bytes(data)
    if len(data) > 0xFFFF:
        raise ValueError(f"TPM2B of {len(data)} bytes")
    return struct.pack(">H", len(data)) + data


class _Reader:
    def __init__(self, data, what):
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.what}: truncated at byte {self.pos} (needs {n} more, "
                             f"{len(self.data) - self.pos} left)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def tpm2b(self):
        return self.take(self.u16())

    def end(self):
        if self.pos != len(self.data):
            raise ValueError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def split_tpm2b(data, offset=0):
    """(contents, offset after it) of the TPM2B at offset; ValueError if it is truncated."""
    r = _Reader(data, "TPM2B")
    r.pos = offset
    return r.tpm2b(), r.pos


@dataclasses.dataclass
class TpmPublic:
    """TPMT_PUBLIC. symmetric is (algorithm, keyBits, mode) or None (TPM_ALG_NULL); scheme and
    kdf are (algorithm, details...) with every detail a UINT16 (e.g. (TPM2_ALG_HMAC, SHA256),
    (TPM2_ALG_XOR, hash, kdf), (TPM2_ALG_RSAES,)) or None; unique is the RSA modulus, the
    keyedHash/symcipher digest, or (x, y) for ECC."""

    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes = b""
    symmetric: tuple | None = None  # RSA, ECC, SYMCIPHER
    scheme: tuple | None = None  # RSA, ECC, KEYEDHASH
    key_bits: int = 0  # RSA
    exponent: int = 0  # RSA; 0 means 65537
    curve: int = 0  # ECC
    kdf: tuple | None = None  # ECC
    unique: bytes | tuple = b""


def _read_sym_def(r):
    alg = r.u16()
    if alg == TPM2_ALG_NULL:
        return None
    return (alg, r.u16(), r.u16())


def _read_scheme(r):
    alg = r.u16()
    if alg == TPM2_ALG_NULL:
        return None
    if alg == TPM2_ALG_RSAES:  # TPMS_ENC_SCHEME_RSAES is empty
        return (alg,)
    if alg in (TPM2_ALG_XOR, TPM2_ALG_ECDAA):  # hash + kdf / hash + count
        return (alg, r.u16(), r.u16())
    return (alg, r.u16())


def _write_sym_def(sym):
    return struct.pack(">H", TPM2_ALG_NULL) if sym is None else struct.pack(">HHH", *sym)


def _write_scheme(scheme):
    if scheme is None:
        return struct.pack(">H", TPM2_ALG_NULL)
    return struct.pack(f">{len(scheme)}H", *scheme)


def parse_tpmt_public(data):
    """TPMT_PUBLIC bytes (no size prefix) -> TpmPublic."""
    r = _Reader(data, "TPMT_PUBLIC")
    pub = TpmPublic(type=r.u16(), name_alg=r.u16(), attributes=r.u32(), auth_policy=r.tpm2b())
    if pub.type == TPM2_ALG_RSA:
        pub.symmetric = _read_sym_def(r)
        pub.scheme = _read_scheme(r)
        pub.key_bits = r.u16()
        pub.exponent = r.u32()
        pub.unique = r.tpm2b()
    elif pub.type == TPM2_ALG_ECC:
        pub.symmetric = _read_sym_def(r)
        pub.scheme = _read_scheme(r)
        pub.curve = r.u16()
        pub.kdf = _read_scheme(r)
        pub.unique = (r.tpm2b(), r.tpm2b())
    elif pub.type == TPM2_ALG_KEYEDHASH:
        pub.scheme = _read_scheme(r)
        pub.unique = r.tpm2b()
    elif pub.type == TPM2_ALG_SYMCIPHER:
        pub.symmetric = _read_sym_def(r)
        pub.unique = r.tpm2b()
    else:
        raise ValueError(f"TPMT_PUBLIC: unknown type 0x{pub.type:04x}")
    r.end()
    return pub


def parse_public(blob):
    """Marshalled TPM2B_PUBLIC (with its size) -> TpmPublic; ValueError if the size does not
    match or anything is malformed."""
    r = _Reader(blob, "TPM2B_PUBLIC")
    inner = r.tpm2b()
    r.end()
    return parse_tpmt_public(inner)


def marshal_tpmt_public(pub):
    """TpmPublic -> TPMT_PUBLIC bytes (what a Name is computed over)."""
    out = struct.pack(">HHI", pub.type, pub.name_alg, pub.attributes) + tpm2b(pub.auth_policy)
    if pub.type == TPM2_ALG_RSA:
        out += (_write_sym_def(pub.symmetric) + _write_scheme(pub.scheme) +
                struct.pack(">HI", pub.key_bits, pub.exponent) + tpm2b(pub.unique))
    elif pub.type == TPM2_ALG_ECC:
        out += (_write_sym_def(pub.symmetric) + _write_scheme(pub.scheme) +
                struct.pack(">H", pub.curve) + _write_scheme(pub.kdf) +
                tpm2b(pub.unique[0]) + tpm2b(pub.unique[1]))
    elif pub.type == TPM2_ALG_KEYEDHASH:
        out += _write_scheme(pub.scheme) + tpm2b(pub.unique)
    elif pub.type == TPM2_ALG_SYMCIPHER:
        out += _write_sym_def(pub.symmetric) + tpm2b(pub.unique)
    else:
        raise ValueError(f"TPMT_PUBLIC: unknown type 0x{pub.type:04x}")
    return out


def marshal_public(pub):
    """TpmPublic -> marshalled TPM2B_PUBLIC."""
    return tpm2b(marshal_tpmt_public(pub))


def _as_public(pub):
    return parse_public(pub) if isinstance(pub, (bytes, bytearray)) else pub


def _hash_name(alg):
    if alg not in _HASHES:
        raise ValueError(f"unsupported hash algorithm 0x{alg:04x}")
    return _HASHES[alg]


def digest_size(alg):
    return hashlib.new(_hash_name(alg)).digest_size


def compute_name(pub):
    """The Name of an object: nameAlg (UINT16) || H_nameAlg(TPMT_PUBLIC). pub is a TpmPublic or
    a marshalled TPM2B_PUBLIC."""
    pub = _as_public(pub)
    data = marshal_tpmt_public(pub)
    return struct.pack(">H", pub.name_alg) + hashlib.new(_hash_name(pub.name_alg), data).digest()


def tpm2b_public_rsa_modulus(blob):
    """The RSA modulus (unique.rsa) of a marshalled TPM2B_PUBLIC."""
    pub = _as_public(blob)
    if pub.type != TPM2_ALG_RSA:
        raise ValueError(f"not an RSA key (type 0x{pub.type:04x})")
    return pub.unique


def rsa_public_key(pub):
    """A python-cryptography RSAPublicKey for an RSA TpmPublic or TPM2B_PUBLIC."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    pub = _as_public(pub)
    n = int.from_bytes(tpm2b_public_rsa_modulus(pub), "big")
    return rsa.RSAPublicNumbers(pub.exponent or 65537, n).public_key()


def ek_rsa_public(modulus):
    """The standard RSA-2048 EK (TCG EK template L-1) with this modulus."""
    return TpmPublic(type=TPM2_ALG_RSA, name_alg=TPM2_ALG_SHA256, attributes=EK_RSA_ATTRIBUTES,
                     auth_policy=EK_RSA_POLICY, symmetric=AES_128_CFB, scheme=None,
                     key_bits=2048, exponent=0, unique=bytes(modulus))


def srk_rsa_public(modulus):
    """The standard RSA-2048 SRK (storage primary under the owner) with this modulus."""
    return TpmPublic(type=TPM2_ALG_RSA, name_alg=TPM2_ALG_SHA256, attributes=SRK_RSA_ATTRIBUTES,
                     auth_policy=b"", symmetric=AES_128_CFB, scheme=None, key_bits=2048,
                     exponent=0, unique=bytes(modulus))


# ---------------------------------------------------------------------------------------------
# protection (Part 1)


def kdfa(hash_alg, key, label, context_u, context_v, bits):
    """KDFa (Part 1, 11.4.10.2): SP800-108 counter mode with HMAC. label is given without its
    terminating zero (b"STORAGE"); the zero is part of the input, as the TPM uses it."""
    name = _hash_name(hash_alg)
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hmac.new(key, struct.pack(">I", counter) + label + b"\0" + context_u + context_v +
                        struct.pack(">I", bits), name).digest()
    out = out[:(bits + 7) // 8]
    if bits % 8:  # keep only the low bits of the first byte
        out = bytes([out[0] & ((1 << (bits % 8)) - 1)]) + out[1:]
    return out


def _aes_cfb_encrypt(key, data):
    # python-cryptography only here and for RSA, so that the swtpm half needs the stdlib alone.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    op = Cipher(algorithms.AES(key), modes.CFB(b"\0" * 16)).encryptor()
    return op.update(data) + op.finalize()


def _storage_parent(parent, what):
    """Checks parent is a storage key whose seeds this module can encrypt; returns its AES key
    size in bytes."""
    if parent.type != TPM2_ALG_RSA:
        raise ValueError(f"{what}: only RSA keys are supported (type 0x{parent.type:04x})")
    want = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT
    if parent.attributes & want != want:
        raise ValueError(f"{what}: not a restricted decryption (storage) key "
                         f"(attributes 0x{parent.attributes:08x})")
    if parent.symmetric is None or parent.symmetric[0] != TPM2_ALG_AES or \
            parent.symmetric[2] != TPM2_ALG_CFB:
        raise ValueError(f"{what}: symmetric definition {parent.symmetric} is not AES-CFB")
    return parent.symmetric[1] // 8


def encrypt_seed(parent, label, seed=None):
    """A seed for a secret shared with parent (RSA: Part 1, Annex B): random, the size of the
    parent's nameAlg digest, RSA-OAEP encrypted with H = nameAlg and label (given without its
    terminating zero, which is part of the OAEP label). Returns (seed, TPM2B_ENCRYPTED_SECRET)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    parent = _as_public(parent)
    _storage_parent(parent, "encrypt_seed")
    if seed is None:
        seed = secrets.token_bytes(digest_size(parent.name_alg))
    h = getattr(hashes, _hash_name(parent.name_alg).upper())
    encrypted = rsa_public_key(parent).encrypt(
        seed, padding.OAEP(mgf=padding.MGF1(h()), algorithm=h(), label=label + b"\0"))
    return seed, tpm2b(encrypted)


def make_credential(ek_public, credential, object_name):
    """TPM2_MakeCredential in software (Part 1, 24): protects credential for the object named
    object_name on the TPM whose EK is ek_public; only ActivateCredential(activateHandle=that
    object, keyHandle=EK) recovers it. Returns (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET)."""
    ek = _as_public(ek_public)
    sym_bytes = _storage_parent(ek, "EK")
    if len(credential) > digest_size(ek.name_alg):
        raise ValueError(f"credential of {len(credential)} bytes is larger than a digest")
    seed, secret = encrypt_seed(ek, b"IDENTITY")
    sym_key = kdfa(ek.name_alg, seed, b"STORAGE", object_name, b"", sym_bytes * 8)
    enc_identity = _aes_cfb_encrypt(sym_key, tpm2b(credential))  # the size field is encrypted too
    hmac_key = kdfa(ek.name_alg, seed, b"INTEGRITY", b"", b"", digest_size(ek.name_alg) * 8)
    integrity = hmac.new(hmac_key, enc_identity + object_name, _hash_name(ek.name_alg)).digest()
    return tpm2b(tpm2b(integrity) + enc_identity), secret


def tpm2_tools_credential_file(credential_blob, secret):
    """The file tpm2_makecredential -o writes and tpm2_activatecredential -i reads."""
    return TPM2_TOOLS_CREDENTIAL_HEADER + credential_blob + secret


def hmac_key_object(hmac_key, attributes=AUTH_KEY_ATTRIBUTES, name_alg=TPM2_ALG_SHA256,
                    seed_value=None):
    """A keyedHash HMAC key holding hmac_key: (TpmPublic, TPMT_SENSITIVE bytes). seedValue is
    random (digest size) unless given; unique = H_nameAlg(seedValue || key). The key may be as
    long as a block of the hash (64 bytes for SHA-256): the TPM refuses longer HMAC keys
    (TPM_RC_KEY_SIZE from Import)."""
    hmac_key = bytes(hmac_key)
    block = hashlib.new(_hash_name(name_alg)).block_size
    if not 0 < len(hmac_key) <= block:
        raise ValueError(f"an HMAC key must have 1..{block} bytes, not {len(hmac_key)}")
    if seed_value is None:
        seed_value = secrets.token_bytes(digest_size(name_alg))
    public = TpmPublic(type=TPM2_ALG_KEYEDHASH, name_alg=name_alg, attributes=attributes,
                       auth_policy=b"", scheme=(TPM2_ALG_HMAC, name_alg),
                       unique=hashlib.new(_hash_name(name_alg), seed_value + hmac_key).digest())
    sensitive = (struct.pack(">H", TPM2_ALG_KEYEDHASH) + tpm2b(b"")  # authValue
                 + tpm2b(seed_value) + tpm2b(hmac_key))
    return public, sensitive


def duplicate(object_public, sensitive, parent_public, inner_key=None):
    """TPM2_Duplicate in software (Part 1, 23.3): wraps the object (TpmPublic or TPM2B_PUBLIC,
    and its TPMT_SENSITIVE) for import under parent_public. With inner_key (an AES-128 key) an
    inner wrapper first: AES-128-CFB over H_nameAlg(TPM2B_SENSITIVE || Name) and the sensitive
    area, which Import undoes with encryptionKey = inner_key and symmetricAlg = AES-128-CFB.
    The outer wrapper uses a seed encrypted to the parent with label "DUPLICATE", the parent's
    symmetric algorithm and an HMAC over the result and the object's Name.
    Returns (TPM2B_PRIVATE duplicate, TPM2B_ENCRYPTED_SECRET inSymSeed)."""
    obj = _as_public(object_public)
    parent = _as_public(parent_public)
    sym_bytes = _storage_parent(parent, "parent")
    if obj.attributes & (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT):
        raise ValueError("an object with fixedTPM or fixedParent cannot be duplicated")
    name = compute_name(obj)
    data = tpm2b(sensitive)
    if inner_key is not None:
        if len(inner_key) != 16:
            raise ValueError(f"the inner key is an AES-128 key, not {len(inner_key)} bytes")
        integrity = hashlib.new(_hash_name(obj.name_alg), data + name).digest()
        data = _aes_cfb_encrypt(bytes(inner_key), tpm2b(integrity) + data)
    seed, in_sym_seed = encrypt_seed(parent, b"DUPLICATE")
    sym_key = kdfa(parent.name_alg, seed, b"STORAGE", name, b"", sym_bytes * 8)
    dup_sensitive = _aes_cfb_encrypt(sym_key, data)
    hmac_key = kdfa(parent.name_alg, seed, b"INTEGRITY", b"", b"",
                    digest_size(parent.name_alg) * 8)
    outer = hmac.new(hmac_key, dup_sensitive + name, _hash_name(parent.name_alg)).digest()
    return tpm2b(tpm2b(outer) + dup_sensitive), in_sym_seed


@dataclasses.dataclass
class AuthKeyBlob:
    """The parts of a DPS authenticationKey, each a marshalled TPM2B (with its size).
    inner_key (K) is known only to whoever made the blob; split_auth_key_blob() leaves it None."""

    credential_blob: bytes  # TPM2B_ID_OBJECT, for ActivateCredential
    secret: bytes  # TPM2B_ENCRYPTED_SECRET, for ActivateCredential
    duplicate: bytes  # TPM2B_PRIVATE, for Import
    in_sym_seed: bytes  # TPM2B_ENCRYPTED_SECRET, for Import
    public: bytes  # TPM2B_PUBLIC of the imported object
    inner_key: bytes | None = None

    def to_bytes(self):
        return (self.credential_blob + self.secret + self.duplicate + self.in_sym_seed +
                self.public)


def make_auth_key(ek_public, srk_public, hmac_key, attributes=AUTH_KEY_ATTRIBUTES):
    """Everything make_auth_key_blob() sends, as an AuthKeyBlob (with inner_key)."""
    srk = _as_public(srk_public)
    inner_key = secrets.token_bytes(16)
    public, sensitive = hmac_key_object(hmac_key, attributes)
    dup, in_sym_seed = duplicate(public, sensitive, srk, inner_key)
    credential_blob, secret = make_credential(ek_public, inner_key, compute_name(srk))
    return AuthKeyBlob(credential_blob, secret, dup, in_sym_seed, marshal_public(public),
                       inner_key)


def make_auth_key_blob(ek_public: bytes, srk_public: bytes, hmac_key: bytes) -> bytes:
    """The DPS "authenticationKey" for the TPM with this EK and SRK (marshalled TPM2B_PUBLIC):
    TPM2B_ID_OBJECT || TPM2B_ENCRYPTED_SECRET || TPM2B_PRIVATE || TPM2B_ENCRYPTED_SECRET ||
    TPM2B_PUBLIC; importing it makes an HMAC-SHA256 key holding hmac_key under the SRK."""
    return make_auth_key(ek_public, srk_public, hmac_key).to_bytes()


def split_auth_key_blob(blob):
    """The five TPM2Bs of an authenticationKey (what a TPM device unmarshals); ValueError if one
    is truncated or bytes follow the last."""
    parts = []
    offset = 0
    for _ in range(5):
        _, end = split_tpm2b(blob, offset)
        parts.append(bytes(blob[offset:end]))
        offset = end
    if offset != len(blob):
        raise ValueError(f"authenticationKey: {len(blob) - offset} trailing bytes")
    return AuthKeyBlob(*parts)
