# SPDX-License-Identifier: MIT
"""What the tests of the mock cloud servers share (test_mock_dps.py, test_mock_hub.py,
test_mock_est.py): a temporary directory per class with the PKI directory the mocks make once and
then load, and a mock run as its script (its command line, its signals)."""

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
NETWORK_ERRORS = (ConnectionError, ssl.SSLError, OSError)


class MockTestCase(unittest.TestCase):
    """cls.tmp, removed after the class, and cls.pki_dir in it. A class sets TMP_PREFIX."""

    TMP_PREFIX = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix=cls.TMP_PREFIX)
        cls.pki_dir = os.path.join(cls.tmp, "pki")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def start_script(self, script, *args):
        """Runs tests/cloud/<script> with args (killed at the test's end if still running) until
        it prints READY: (its Popen, the KEY=value lines it printed before, as a dict)."""
        p = subprocess.Popen([sys.executable, os.path.join(HERE, script), *args],
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait(), p.stdout.close()))
        info = {}
        for line in p.stdout:
            line = line.strip()
            if line == "READY":
                break
            k, _, v = line.partition("=")
            info[k] = v
        return p, info

    def assertGoesDown(self, request, timeout=5):
        """request() is refused (ConnectionRefusedError) within timeout s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                request()
            except ConnectionRefusedError:
                return
            except OSError:
                pass  # accepted by the kernel while going down
            self.assertLess(time.monotonic(), deadline, "the server did not go down")
            time.sleep(0.05)

    def comes_up(self, request, timeout=5):
        """What request() returns once it is not refused any more, within timeout s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return request()
            except ConnectionRefusedError:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
