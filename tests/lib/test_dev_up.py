#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What `./dev up` brings up (tests/lib/aziot_stack.py up(), through `aziot_harness.py up --hook`):
the services, the mock DPS and IoT Hub, and the gateway; on a fresh run directory the device is
provisioned through DPS, so identityd.sock answers with a real device identity, as a user would
ask for it with curl."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or \
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("AZIOT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
PYTHON = "/usr/bin/python3"
START_TIMEOUT = 90


class DevUpTest(unittest.TestCase):
    def setUp(self):
        self.run_dir = tempfile.mkdtemp(prefix="aziot-devup-")
        os.chmod(self.run_dir, 0o755)
        self.log = os.path.join(self.run_dir, "up.log")
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(SOURCE_DIR, "tests", "lib", "aziot_harness.py"), "up",
             "--run-dir", os.path.join(self.run_dir, "run"), "--source-dir", SOURCE_DIR,
             "--build-dir", BUILD_DIR, "--hook",
             os.path.join(SOURCE_DIR, "tests", "lib", "aziot_stack.py")],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def tearDown(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def output(self):
        with open(self.log) as f:
            return f.read()

    def test_identity_served_through_dps_out_of_the_box(self):
        deadline = time.monotonic() + START_TIMEOUT
        while "stops everything" not in self.output():
            self.assertIsNone(self.proc.poll(), f"up exited:\n{self.output()}")
            self.assertLess(time.monotonic(), deadline, f"up did not come up:\n{self.output()}")
            time.sleep(0.2)
        out = self.output()
        self.assertRegex(out, r"identityd +D-Bus activatable[^\n]*\n[^\n]*: provisioned\n")
        # The services' configuration is aziotctl's, from the super-config.
        super_config = re.search(r"super-config (\S+) \(aziotctl config apply", out)
        self.assertIsNotNone(super_config, out)
        with open(super_config.group(1)) as f:
            self.assertIn('method = "symmetric_key"', f.read())
        keyd_super = os.path.join(self.run_dir, "run", "config", "keyd", "config.d",
                                  "00-super.toml")
        with open(keyd_super) as f:
            self.assertIn('device-id = "file:///var/secrets/aziot/keyd/device-id"', f.read())
        command = re.search(r"curl -s --unix-socket (\S+) '(http://identityd\.sock/[^']+)'", out)
        self.assertIsNotNone(command, out)
        r = subprocess.run(["curl", "-s", "--unix-socket", command.group(1), command.group(2)],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        identity = json.loads(r.stdout)
        self.assertEqual(identity["type"], "aziot")
        self.assertEqual(identity["spec"]["deviceId"], "my-device")
        self.assertEqual(identity["spec"]["auth"]["type"], "sas")
        self.assertTrue(identity["spec"]["auth"]["keyHandle"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
