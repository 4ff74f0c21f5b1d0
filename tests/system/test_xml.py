#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""xmllint on the installed XML: the polkit actions against polkit's DTD, the D-Bus interface
descriptions against the introspection DTD, the bus policy files for well-formedness.

The bus policy files are not validated against busconfig.dtd: the DTD that dbus 1.14 ships
(/usr/share/xml/dbus-1/busconfig.dtd) predates send_destination, send_interface and the other
attributes every policy uses, so it rejects Debian's own /usr/share/dbus-1/system.conf. Whether
dbus-daemon accepts them is checked by dbus-daemon itself (test_activation.py)."""

import glob
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sysroot  # noqa: E402

POLKIT_DTD = "/usr/share/polkit-1/policyconfig-1.dtd"
INTROSPECT_DTD = "/usr/share/xml/dbus-1/introspect.dtd"


class XmlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="aziot-xml-")
        cls.dest = sysroot.install(os.path.join(cls.tmp, "dest"))
        cls.datadir = sysroot.in_dest(cls.dest, sysroot.installed_paths()["datadir"])
        for dtd in (POLKIT_DTD, INTROSPECT_DTD):
            if not os.path.exists(dtd):
                raise sysroot.SysrootError(f"{dtd} is missing (packages polkitd, libdbus-1-dev)")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def files(self, pattern, count):
        paths = sorted(glob.glob(os.path.join(self.datadir, pattern)))
        self.assertEqual(len(paths), count, pattern)
        return paths

    def lint(self, paths, dtd=None):
        argv = ["xmllint", "--noout", "--nonet"]
        if dtd:
            argv += ["--dtdvalid", dtd]
        return sysroot.run(argv + paths, check=False)

    def assertClean(self, result):
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_polkit_actions(self):
        self.assertClean(self.lint(self.files("polkit-1/actions/*.policy", 4), POLKIT_DTD))

    def test_interface_descriptions(self):
        self.assertClean(self.lint(self.files("dbus-1/interfaces/*.xml", 4), INTROSPECT_DTD))

    def test_bus_policy_well_formed(self):
        self.assertClean(self.lint(self.files("dbus-1/system.d/*.conf", 4)))

    def test_validation_catches_what_it_should(self):
        """The DTD checks are not blind: well-formed files with an attribute their DTD does not
        declare are refused."""
        policy = self.files("polkit-1/actions/*.policy", 4)[0]
        iface = self.files("dbus-1/interfaces/*.xml", 4)[0]
        for path, dtd, old, new in ((policy, POLKIT_DTD, "<action id=", '<action colour="red" id='),
                                    (iface, INTROSPECT_DTD, '<arg name=', '<arg nom=')):
            with self.subTest(os.path.basename(path)):
                with open(path) as f:
                    text = f.read()
                self.assertIn(old, text)
                broken = os.path.join(self.tmp, "broken-" + os.path.basename(path))
                with open(broken, "w") as f:
                    f.write(text.replace(old, new, 1))
                self.assertNotEqual(self.lint([broken], dtd).returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
