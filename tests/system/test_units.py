#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""systemd's own checks of the installed units: `systemd-analyze verify` (syntax, every directive
known, the ExecStart= binaries present and executable, dependencies resolvable) and
`systemd-analyze security --offline` (the exposure each service's sandbox leaves), run in a mount
namespace where the installed tree is /usr and /etc, so that the units are checked as installed."""

import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sysroot  # noqa: E402
from sysroot import SERVICES  # noqa: E402

UNITS = [f"aziot-{svc}.service" for svc in SERVICES] + ["aziot-gatewayd.service"] + \
        [f"aziot-{svc}.socket" for svc in SERVICES]

# systemd-analyze security's exposure, on its 0-100 scale (it prints a tenth of it): 20 is
# "2.0 OK". The services are at 0.9 to 1.6; a unit above 2.0 has lost part of its sandbox.
EXPOSURE_THRESHOLD = 20


class UnitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="aziot-units-")
        cls.dest = sysroot.install(os.path.join(cls.tmp, "dest"))
        cls.root = sysroot.InstalledRoot(cls.dest, os.path.join(cls.tmp, "scratch"))
        cls.root.enter()
        cls.unitdir = sysroot.installed_paths()["unitdir"]

    @classmethod
    def tearDownClass(cls):
        cls.root.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def verify(self, paths):
        return sysroot.run(["systemd-analyze", "verify", "--man=no", *paths], check=False)

    def test_verify_passes_without_a_word(self):
        result = self.verify([os.path.join(self.unitdir, u) for u in UNITS])
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_verify_catches_what_it_should(self):
        """The check above is not blind: a misspelt directive and a missing binary are both
        reported about a copy of a unit."""
        with open(os.path.join(self.unitdir, "aziot-keyd.service")) as f:
            text = f.read()
        cases = {"misspelt": text.replace("ProtectHome=yes", "ProtectHom=yes"),
                 "missing binary": text.replace("/aziot-keyd\n", "/aziot-keyd-nowhere\n")}
        for what, broken in cases.items():
            with self.subTest(what):
                self.assertNotEqual(broken, text)
                directory = tempfile.mkdtemp(dir=self.tmp)
                path = os.path.join(directory, "aziot-keyd.service")
                with open(path, "w") as f:
                    f.write(broken)
                result = self.verify([path])
                self.assertIn("aziot-keyd.service", result.stdout + result.stderr)

    def test_sandbox_exposure(self):
        for svc in [*SERVICES, "gatewayd"]:
            with self.subTest(svc=svc):
                result = sysroot.run(
                    ["systemd-analyze", "security", "--offline=true", "--no-pager",
                     f"--threshold={EXPOSURE_THRESHOLD}",
                     os.path.join(self.unitdir, f"aziot-{svc}.service")], check=False)
                overall = [line for line in result.stdout.splitlines() if "Overall" in line]
                self.assertEqual(result.returncode, 0, "\n".join(overall) or result.stderr)
                self.assertEqual(len(overall), 1, result.stdout)

    def test_sandbox_exposure_threshold_bites(self):
        """A service without its sandbox is over the threshold."""
        with open(os.path.join(self.unitdir, "aziot-keyd.service")) as f:
            lines = f.read().split("[Service]\n")[1].splitlines()
        bare = [line for line in lines if line.split("=")[0] in
                ("Type", "BusName", "ExecStart", "User", "Group")]
        path = os.path.join(tempfile.mkdtemp(dir=self.tmp), "aziot-keyd.service")
        with open(path, "w") as f:
            f.write("[Service]\n" + "\n".join(bare) + "\n")
        result = sysroot.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                              f"--threshold={EXPOSURE_THRESHOLD}", path], check=False)
        self.assertNotEqual(result.returncode, 0, result.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
