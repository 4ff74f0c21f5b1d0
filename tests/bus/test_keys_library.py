#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""aziot-keyd with a libaziot-keys loaded by configuration (aziot_keys_library), on a private
system bus with the real polkitd, as in test_keys.py (whose fixture this reuses).

The library is tests/keys-lib/test-aziot-keys.c, written from services/keys/aziot-keys.h alone:
symmetric keys in memory, key pairs and encryption refused with ERR_INVALID_PARAMETER, and every
call appended as "<function> <id>" to the file named by its only parameter, test_log_path. That log
is what proves the library, and not the built-in store, served a call. TEST_AZIOT_KEYS_VERSION=2.0
in keyd's environment makes it offer function list 2.0.0.0 only.

Environment (set by meson): AZIOT_SOURCE_DIR, AZIOT_BUILD_DIR, AZIOT_KEYD, AZIOT_TEST_KEYS_LIB.
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keys import (  # noqa: E402
    BAD_VALUE, BUILD_DIR, HVK, INVALID_HANDLE, INVALID_PARAMETER, KEYD, KEYS_NAME, NOT_FOUND,
    OPTS, KeydState, KeydTestCase, hmac256)

LIB = os.environ.get("AZIOT_TEST_KEYS_LIB") or \
    os.path.join(BUILD_DIR, "tests", "keys-lib", "libtest-aziot-keys.so")
EXIT_TIMEOUT = 10
WARNING_2_0 = (f"The key library {LIB} offers function list 2.0.0.0 only: keys cannot be moved "
               "or deleted.")


def toml_string(s):
    return json.dumps(s)  # a TOML basic string, for the ASCII paths of the tests


def log_lines(log, level, text):
    """The lines of a keyd log at level (its tag: "ERR!", "WARN", "INFO") that contain text."""
    return [line for line in log.splitlines() if f"[{level}] aziot-keyd: " in line and text in line]


def library_without_entry_point():
    """A real shared library that does not export aziot_keys_get_function_list: libz as the
    task suggests, else the libc this interpreter runs on (always there)."""
    mapped = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if path.startswith("/"):
                mapped.add(path)
    for name in ("libz.so", "libc.so"):
        for path in sorted(mapped):
            if os.path.basename(path).startswith(name):
                return path
    raise AssertionError("neither libz nor libc is mapped in this process")


class LibraryState(KeydState):
    """A keyd configuration naming a key library, and the library's call log."""

    def __init__(self, directory, library=LIB):
        self.library = library
        self.lib_log = os.path.join(directory, "aziot-keys-calls.log")
        super().__init__(directory)

    def write_config(self, extra=""):
        # The top-level key must come before the first table.
        with open(self.config, "w") as f:
            f.write(f"aziot_keys_library = {toml_string(self.library)}\n\n"
                    f"[aziot_keys]\ntest_log_path = {toml_string(self.lib_log)}\n{extra}")

    def write_library_only(self):
        self.write_raw_config(f"aziot_keys_library = {toml_string(self.library)}\n")

    def write_raw_config(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    def lib_calls(self):
        """The library's log as [(function, id)]."""
        try:
            with open(self.lib_log) as f:
                return [tuple(line.rstrip("\n").split(" ", 1)) for line in f]
        except FileNotFoundError:
            return []


class LibraryTestCase(KeydTestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(LIB):
            raise unittest.SkipTest(f"{LIB} is not built")
        super().setUpClass()

    @classmethod
    def new_state(cls):
        cls.serial += 1
        return LibraryState(os.path.join(cls.run_dir, f"t{cls.serial}"))

    def assertCalled(self, function, key_id):
        self.assertIn((function, key_id), self.state.lib_calls(),
                      f"the library did not log {function} {key_id}")

    def assertLogged(self, log, level, text):
        self.assertTrue(log_lines(log, level, text), f"keyd did not log [{level}] {text}:\n{log}")

    def assertNotCalled(self, function):
        self.assertNotIn(function, [c[0] for c in self.state.lib_calls()],
                         f"the library logged {function}")


class Library21Test(LibraryTestCase):
    """The library offers 2.1.0.0: keyd uses all of it."""

    keyd_env = {"TEST_AZIOT_KEYS_VERSION": ""}  # whatever the caller's environment says

    def test_library_in_use(self):
        log = self.keyd.log()
        self.assertLogged(log, "INFO", f"Using the key library {LIB} (function list 2.1.0.0).")
        self.assertNotIn("2.0.0.0 only", log)
        # keyd handed the [aziot_keys] entries to the library, and no built-in store was set up.
        self.assertEqual(self.state.lib_calls()[0], ("set_parameter", "test_log_path"))
        self.assertFalse(os.path.exists(self.state.home))

    def test_create_key_and_sign(self):
        handle = self.call("CreateKeyIfNotExists", "k1", ["sign"], OPTS)
        sig = self.call("Sign", handle, "HMAC-SHA256", b"message", OPTS)
        self.assertEqual(len(sig), 32)
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"message", OPTS), sig)
        self.assertNotEqual(self.call("Sign", handle, "HMAC-SHA256", b"other", OPTS), sig)
        # The same key again: create_key_if_not_exists left it alone.
        again = self.call("CreateKeyIfNotExists", "k1", ["sign"], OPTS)
        self.assertEqual(self.call("Sign", again, "HMAC-SHA256", b"message", OPTS), sig)

        self.assertCalled("create_key_if_not_exists", "k1")
        self.assertCalled("sign", "k1")
        # The handles were MACed with the library's handle-validation-key, made on first use.
        self.assertCalled("create_key_if_not_exists", HVK)
        self.assertCalled("sign", HVK)

        self.assertIsInstance(self.call("LoadKey", "k1", OPTS), str)
        self.assertCalled("load_key", "k1")
        self.assertFails(NOT_FOUND, "key missing does not exist", self.root, "LoadKey",
                         "missing", OPTS)
        self.assertCalled("load_key", "missing")

    def test_import_key_signs_as_hmac(self):
        key = bytes(range(32)) + b"imported key bytes"
        handle = self.call("ImportKey", "imported", key, ["sign"], OPTS)
        for data in (b"", b"message", os.urandom(3000)):
            self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", data, OPTS),
                             hmac256(key, data))
        self.assertCalled("import_key", "imported")
        self.assertCalled("sign", "imported")

        # Derived keys: derive_key, and sign with the DERIVED mechanism.
        derived = self.call("CreateDerivedKey", handle, b"derivation data", OPTS)
        derived_key = hmac256(key, b"derivation data")
        self.assertEqual(self.call("ExportDerivedKey", derived, OPTS), derived_key)
        self.assertCalled("derive_key", "imported")
        self.assertEqual(self.call("Sign", derived, "HMAC-SHA256", b"m", OPTS),
                         hmac256(derived_key, b"m"))

        # Importing again replaces the key.
        handle = self.call("ImportKey", "imported", b"another key", ["sign"], OPTS)
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(b"another key", b"m"))

    def test_delete_key(self):
        handle = self.call("ImportKey", "doomed", b"k" * 32, ["sign"], OPTS)
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"m", OPTS),
                         hmac256(b"k" * 32, b"m"))
        self.assertIsNone(self.call("DeleteKey", handle, OPTS))
        self.assertCalled("delete_key", "doomed")
        # Gone from the library: its ERR_INVALID_PARAMETER reaches the client.
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Sign", handle, "HMAC-SHA256",
                         b"m", OPTS)
        self.assertFails(NOT_FOUND, "key doomed does not exist", self.root, "LoadKey", "doomed",
                         OPTS)
        # Deleting a missing key is not an error.
        self.assertIsNone(self.call("DeleteKey", handle, OPTS))

    def test_key_pairs_refused_by_library(self):
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "CreateKeyPairIfNotExists",
                         "pair", ["ec-p256"], OPTS)
        self.assertCalled("create_key_pair_if_not_exists", "pair")
        self.assertFails(NOT_FOUND, "key pair pair does not exist", self.root, "LoadKeyPair",
                         "pair", OPTS)
        self.assertCalled("load_key_pair", "pair")
        # move_key_pair is in 2.1.0.0: the library's refusal reaches the client.
        self.assertFails(NOT_FOUND, "key pair pair does not exist", self.root, "MoveKeyPair",
                         "pair", "elsewhere", OPTS)
        self.assertCalled("move_key_pair", "pair")
        self.assertKeydAlive()

    def test_encryption_refused_by_library(self):
        handle = self.call("CreateKeyIfNotExists", "enc", ["encrypt"], OPTS)
        self.assertFails(INVALID_PARAMETER, BAD_VALUE, self.root, "Encrypt", handle, "AEAD",
                         b"plaintext", {"iv": b"0" * 12, "aad": b""})
        self.assertCalled("encrypt", "enc")
        self.assertKeydAlive()

    def test_keys_live_in_library_memory(self):
        handle = self.call("ImportKey", "volatile", b"v" * 32, ["sign"], OPTS)
        self.stack.stop_process("keyd")
        self.keyd = self.start_keyd(self.state)
        # A new process, a new library instance: the handle-validation-key is a new one, so the
        # old handle no longer verifies, and the key itself is gone.
        self.assertFails(INVALID_PARAMETER, INVALID_HANDLE, self.root, "Sign", handle,
                         "HMAC-SHA256", b"m", OPTS)
        self.assertFails(NOT_FOUND, "key volatile does not exist", self.root, "LoadKey",
                         "volatile", OPTS)


class Library20Test(LibraryTestCase):
    """The library offers 2.0.0.0 only: keyd moves and deletes nothing and says so."""

    keyd_env = {"TEST_AZIOT_KEYS_VERSION": "2.0"}

    def test_warning_logged(self):
        log = self.keyd.log()
        self.assertLogged(log, "WARN", WARNING_2_0)
        self.assertLogged(log, "INFO", f"Using the key library {LIB} (function list 2.0.0.0).")

    def test_keys_work(self):
        key = os.urandom(32)
        handle = self.call("ImportKey", "imported", key, ["sign"], OPTS)
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"data", OPTS),
                         hmac256(key, b"data"))
        self.assertCalled("import_key", "imported")
        self.assertCalled("sign", "imported")

        created = self.call("CreateKeyIfNotExists", "created", ["sign"], OPTS)
        self.assertEqual(len(self.call("Sign", created, "HMAC-SHA256", b"data", OPTS)), 32)
        self.assertCalled("create_key_if_not_exists", "created")

    def test_delete_is_a_noop(self):
        key = os.urandom(32)
        handle = self.call("ImportKey", "kept", key, ["sign"], OPTS)
        self.assertIsNone(self.call("DeleteKey", handle, OPTS))
        # Reported done, but nothing reached the library and the key still signs.
        self.assertNotCalled("delete_key")
        self.assertEqual(self.call("Sign", handle, "HMAC-SHA256", b"after", OPTS),
                         hmac256(key, b"after"))
        self.assertIsInstance(self.call("LoadKey", "kept", OPTS), str)

    def test_move_is_a_noop(self):
        # With 2.1.0.0 the library refuses this (see Library21Test); here keyd answers alone.
        self.assertIsNone(self.call("MoveKeyPair", "pair", "elsewhere", OPTS))
        self.assertNotCalled("move_key_pair")


class BadLibraryTest(LibraryTestCase):
    """aziot_keys_library naming something keyd cannot use: keyd refuses to start."""

    keyd_scope = None

    def start_failing_keyd(self, state):
        """Starts keyd, expects it to exit on its own; returns (exit status, its log)."""
        name = f"keyd-{self._testMethodName}"
        process = self.stack.start_process(name, [KEYD, "--idle-timeout=0"], env=state.env())
        try:
            process.popen.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        exited = process.popen.poll() is not None
        status = self.stack.stop_process(name)
        log = process.log()
        self.assertTrue(exited, f"keyd kept running:\n{log}")
        self.assertNotEqual(status, 0, log)
        self.assertNotIn("Serving org.aziot.Keys1.", log)
        self.assertFalse(self.stack.name_has_owner(KEYS_NAME))
        return status, log

    # The libraries keyd cannot load are named alone, with no [aziot_keys] entry that a fallback
    # to the built-in store would trip over: such a keyd would start, and fail the test.

    def test_missing_file(self):
        self.state.library = os.path.join(self.state.dir, "missing.so")
        self.state.write_library_only()
        _, log = self.start_failing_keyd(self.state)
        self.assertLogged(log, "ERR!", f"Cannot load the key library {self.state.library}:")

    def test_not_a_library(self):
        self.state.library = os.path.join(self.state.dir, "text.so")
        with open(self.state.library, "w") as f:
            f.write("this is not an ELF shared object\n" * 10)
        self.state.write_library_only()
        _, log = self.start_failing_keyd(self.state)
        self.assertLogged(log, "ERR!", f"Cannot load the key library {self.state.library}:")

    def test_no_entry_point(self):
        self.state.library = library_without_entry_point()
        self.state.write_library_only()
        _, log = self.start_failing_keyd(self.state)
        self.assertLogged(log, "ERR!",
                          f"{self.state.library} does not export aziot_keys_get_function_list()")

    def test_relative_path(self):
        self.state.library = "tests/keys-lib/libtest-aziot-keys.so"
        self.state.write_config()
        _, log = self.start_failing_keyd(self.state)
        self.assertLogged(log, "ERR!", "aziot_keys_library must be an absolute path")
        self.assertLogged(log, "ERR!", "Invalid configuration")
        self.assertNotIn("Cannot load the key library", log)

    def test_not_a_string(self):
        self.state.write_raw_config("aziot_keys_library = 7\n")
        _, log = self.start_failing_keyd(self.state)
        self.assertLogged(log, "ERR!", "Invalid configuration")
        self.assertLogged(log, "ERR!", "aziot_keys_library")

    def test_parameter_refused_by_library(self):
        # The built-in store would take homedir_path; this library takes test_log_path only.
        self.state.write_config(f"homedir_path = {toml_string(self.state.home)}\n")
        _, log = self.start_failing_keyd(self.state)
        self.assertLogged(log, "ERR!", 'The key store rejected parameter "homedir_path".')
        self.assertEqual(self.state.lib_calls(), [("set_parameter", "test_log_path")])
        self.assertFalse(os.path.exists(self.state.home))


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
