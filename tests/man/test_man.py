#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The manual pages under docs/man: each one formats without a single groff warning (and passes
mandoc's lint), has the sections every page needs, is installed by
docs/man/meson.build, and keeps up with the code it documents: the aziotctl page names every
command of aziotctl's dispatch table, and each daemon's page names every environment variable
that the daemon's sources read.

The source tree is AZIOT_SOURCE_DIR, else the tree this file is in."""

import glob
import os
import re
import shutil
import subprocess
import unittest

SOURCE_DIR = os.environ.get("AZIOT_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
)
MAN_DIR = os.path.join(SOURCE_DIR, "docs", "man")

REQUIRED_SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO")

# Each daemon's page and the folder of its own sources; all of them link services/common.
DAEMONS = {
    "aziot-keyd.8": "services/keys",
    "aziot-certd.8": "services/certs",
    "aziot-identityd.8": "services/identity",
    "aziot-tpmd.8": "services/tpm",
    "aziot-gatewayd.8": "gateway",
}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def pages():
    return sorted(
        p for p in glob.glob(os.path.join(MAN_DIR, "*")) if re.search(r"\.[1-8]$", p)
    )


def render(path):
    """The page as a terminal shows it, without overstriking."""
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-P-cbou", path],
        check=True,
        capture_output=True,
        env=dict(os.environ, LC_ALL="C.UTF-8"),
    ).stdout.decode("utf-8")
    # Hyphenation at line ends would hide words; the page is for checking words, not layout.
    out = re.sub(r"[\u2010-]\n\s*", "", out)
    return re.sub(r"\s+", " ", out)


def roff_text(path):
    """The roff source with the escapes that matter for names undone (\\- and font changes)."""
    text = read(path)
    text = text.replace("\\-", "-")
    text = re.sub(r"\\f[BIRP]|\\f\[[A-Z]*\]|\\c|\\&", "", text)
    return text


def sections(path):
    found = []
    for line in read(path).splitlines():
        m = re.match(r"^\.SH\s+(.*)$", line)
        if m:
            found.append(m.group(1).strip().strip('"').replace("\\-", "-"))
    return found


def c_sources(folder):
    """The .c files of a daemon: its folder, services/common, and the HTTP client library when
    the folder's meson.build links it."""
    files = glob.glob(os.path.join(SOURCE_DIR, folder, "*.c"))
    meson = read(os.path.join(SOURCE_DIR, folder, "meson.build"))
    common = os.path.join(SOURCE_DIR, "services", "common")
    common_meson = read(os.path.join(common, "meson.build"))
    block = re.search(r"common_sources\s*=\s*files\((.*?)\)", common_meson, re.S)
    assert block, "services/common/meson.build: no common_sources"
    files += [os.path.join(common, n) for n in re.findall(r"'([\w.-]+\.c)'", block.group(1))]
    if "http_client_dep" in meson:
        files.append(os.path.join(common, "http-client.c"))
    return sorted(files)


GETENV_CALL = re.compile(r"\b(?:secure_)?getenv(?:_nonempty)?\s*\(([^;]*?)\)\s*[;?:)|&!=]")


def env_vars(folder):
    """Every variable the sources read: getenv() of a literal, and for getenv() of a name built
    at run time ("AZIOT_%s_CONFIG"), the templates expanded with the configurations the daemon
    loads (its ServiceDescription's .config, or the gateway's socket table)."""
    files = c_sources(folder)
    names, templates = set(), set()
    for path in files:
        text = read(path)
        for m in GETENV_CALL.finditer(text):
            literals = re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', m.group(1))
            names.update(literals)
            if not literals and not re.match(r"\s*\"", m.group(1)):
                # getenv(var): the names are the templates the same file formats.
                templates.update(re.findall(r'"([A-Z_]+%s[A-Z_]*|[A-Z_]*%s[A-Z_]+)"', text))
    configs = set()
    for path in glob.glob(os.path.join(SOURCE_DIR, folder, "*.c")):
        text = read(path)
        configs.update(re.findall(r'\.config\s*=\s*"(\w+)"', text))
        configs.update(re.findall(r'\{\s*"(\w+)",\s*&\w+_service\s*\}', text))
    if templates:
        assert configs, f"{folder}: reads AZIOT_<SVC>_CONFIG but names no configuration"
    for t in templates:
        for c in configs:
            names.add(t.replace("%s", c.upper()))
    return names


class ManPagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("groff"):
            raise RuntimeError("groff is missing: install the Debian package groff-base")
        cls.pages = pages()

    def test_pages_exist(self):
        names = {os.path.basename(p) for p in self.pages}
        for name in ["aziotctl.1", "aziot-config.toml.5", *DAEMONS]:
            self.assertIn(name, names)

    def test_groff_without_warnings(self):
        for page in self.pages:
            for device in ([], ["-Tutf8"]):
                with self.subTest(page=os.path.basename(page), device=device):
                    r = subprocess.run(
                        ["groff", "-man", "-ww", "-z", *device, page],
                        capture_output=True,
                        text=True,
                        env=dict(os.environ, LC_ALL="C.UTF-8"),
                    )
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertEqual(r.stderr, "", "groff warned")

    def test_mandoc_lint(self):
        self.assertIsNotNone(shutil.which("mandoc"), "mandoc is not installed (./dev installs it)")
        for page in self.pages:
            with self.subTest(page=os.path.basename(page)):
                r = subprocess.run(
                    ["mandoc", "-Tlint", "-Wwarning", page], capture_output=True, text=True
                )
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_title_and_name(self):
        for page in self.pages:
            base = os.path.basename(page)
            name, section = base.rsplit(".", 1)
            with self.subTest(page=base):
                th = re.search(r"^\.TH\s+(\S+)\s+(\S+)", read(page), re.M)
                self.assertIsNotNone(th, "no .TH")
                self.assertEqual(th.group(1).replace("\\-", "-"), name.upper())
                self.assertEqual(th.group(2), section)
                m = re.search(r"^\.SH NAME\n(.*)$", read(page), re.M)
                self.assertIsNotNone(m)
                self.assertTrue(
                    m.group(1).replace("\\-", "-").startswith(name + " - "),
                    f"NAME line {m.group(1)!r}",
                )

    def test_required_sections(self):
        for page in self.pages:
            with self.subTest(page=os.path.basename(page)):
                found = sections(page)
                for s in REQUIRED_SECTIONS:
                    self.assertIn(s, found)
                # In the usual order, SEE ALSO last.
                order = [found.index(s) for s in REQUIRED_SECTIONS]
                self.assertEqual(order, sorted(order))
                self.assertEqual(found[-1], "SEE ALSO")

    def test_see_also_of_ours_exist(self):
        names = {os.path.basename(p) for p in self.pages}
        for page in self.pages:
            text = roff_text(page)
            see_also = text.split('.SH "SEE ALSO"', 1)[-1]
            for ref, sec in re.findall(r"(aziot[\w.-]*)\s*\((\d)\)", see_also):
                with self.subTest(page=os.path.basename(page), ref=ref):
                    self.assertIn(f"{ref}.{sec}", names)

    def test_meson_installs_every_page(self):
        meson = read(os.path.join(MAN_DIR, "meson.build"))
        listed = set(re.findall(r"'([\w.-]+\.[1-8])'", meson))
        self.assertEqual(listed, {os.path.basename(p) for p in self.pages})
        self.assertIn("install_man(", meson)
        self.assertIn("get_option('man')", meson)

    def test_aziotctl_names_every_command(self):
        source = read(os.path.join(SOURCE_DIR, "tools", "aziotctl", "aziotctl.c"))
        table = re.search(r"\bcommands\[\]\s*=\s*\{(.*?)\n\};", source, re.S)
        self.assertIsNotNone(table, "no dispatch table in aziotctl.c")
        commands = re.findall(r'\{\s*"([\w-]+)"\s*,\s*aziotctl_\w+', table.group(1))
        self.assertGreaterEqual(len(commands), 8, commands)
        text = render(os.path.join(MAN_DIR, "aziotctl.1"))
        for command in commands:
            with self.subTest(command=command):
                self.assertTrue(
                    re.search(rf"aziotctl {re.escape(command)}(?![\w-])", text),
                    f"aziotctl.1 does not describe \"aziotctl {command}\"",
                )

    def test_daemons_name_their_environment(self):
        for page, folder in DAEMONS.items():
            variables = env_vars(folder)
            # AZIOT_LOG and the configuration variables at the least: the scan works.
            self.assertIn("AZIOT_LOG", variables, folder)
            text = roff_text(os.path.join(MAN_DIR, page))
            env = text.split(".SH ENVIRONMENT", 1)
            self.assertEqual(len(env), 2, f"{page}: no ENVIRONMENT section")
            env_section = env[1].split("\n.SH ", 1)[0]
            for var in sorted(variables):
                with self.subTest(page=page, variable=var):
                    self.assertTrue(
                        re.search(rf"(?<!\w){re.escape(var)}(?!\w)", env_section),
                        f"{page} does not name {var} under ENVIRONMENT",
                    )


if __name__ == "__main__":
    unittest.main(verbosity=2)
