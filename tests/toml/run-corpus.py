#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs the TOML corpus through toml-decode.

usage: run-corpus.py PATH-TO-TOML-DECODE CORPUS-DIR

valid/NAME.toml must decode (exit status 0, nothing on stderr) to the JSON tree of valid/NAME.json.
The trees are compared structurally: object keys in the same order, integers and floats as numbers
(so "1.0" and "1" are the same float, every NaN equals every NaN, -0 differs from 0), everything
else as strings.

invalid/NAME.toml must be rejected: exit status 1, nothing on stdout, and one line on stderr of the
form "line L, column C: message". When invalid/NAME.err exists, stderr must start with its content
(the expected "line L, column C").

Prints one line per failure, then "N passed, M failed"; the exit status is 1 when anything failed.
"""

import json
import math
import pathlib
import re
import subprocess
import sys

TIMEOUT = 20
ERROR_LINE = re.compile(r"line [0-9]+, column [0-9]+: [^\n]+\n\Z")
LEAF_KEYS = {"type", "value"}
LEAF_TYPES = {"string", "integer", "float", "bool", "datetime", "datetime-local", "date-local",
              "time-local"}


def is_leaf(v):
    return isinstance(v, dict) and set(v) == LEAF_KEYS and isinstance(v["value"], str) \
        and v["type"] in LEAF_TYPES


def same_float(a, b):
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def same_leaf(got, want):
    if got["type"] != want["type"]:
        return False
    if want["type"] == "integer":
        return int(got["value"]) == int(want["value"])
    if want["type"] == "float":
        return same_float(got["value"], want["value"])
    return got["value"] == want["value"]


def compare(got, want, path="$"):
    """Returns None when equal, else a description of the first difference."""
    if is_leaf(want):
        if not is_leaf(got):
            return f"{path}: expected a {want['type']} leaf, got {json.dumps(got)[:80]}"
        try:
            if same_leaf(got, want):
                return None
        except ValueError:
            pass
        return f"{path}: expected {json.dumps(want)}, got {json.dumps(got)}"
    if isinstance(want, dict):
        if not isinstance(got, dict) or is_leaf(got):
            return f"{path}: expected a table, got {json.dumps(got)[:80]}"
        if list(got) != list(want):
            return f"{path}: expected keys {list(want)}, got {list(got)}"
        for key in want:
            diff = compare(got[key], want[key], f"{path}.{key}")
            if diff:
                return diff
        return None
    if isinstance(want, list):
        if not isinstance(got, list):
            return f"{path}: expected an array, got {json.dumps(got)[:80]}"
        if len(got) != len(want):
            return f"{path}: expected {len(want)} elements, got {len(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            diff = compare(g, w, f"{path}[{i}]")
            if diff:
                return diff
        return None
    return f"{path}: the expected JSON holds {json.dumps(want)[:80]}, which is not a TOML value"


def decode(program, document):
    with open(document, "rb") as f:
        return subprocess.run([program], stdin=f, capture_output=True, timeout=TIMEOUT)


def check_valid(program, document):
    expected = document.with_suffix(".json")
    if not expected.exists():
        return f"{expected.name} is missing"
    try:
        want = json.loads(expected.read_text(encoding="utf-8"))
    except ValueError as e:
        return f"{expected.name} is not JSON: {e}"
    p = decode(program, document)
    if p.returncode != 0:
        return f"exit status {p.returncode}: {p.stderr.decode(errors='replace').strip()}"
    if p.stderr:
        return f"unexpected stderr: {p.stderr.decode(errors='replace').strip()}"
    try:
        got = json.loads(p.stdout.decode("utf-8"))
    except ValueError as e:
        return f"output is not JSON: {e}"
    return compare(got, want)


def check_invalid(program, document):
    p = decode(program, document)
    stderr = p.stderr.decode(errors="replace")
    if p.returncode != 1:
        return f"exit status {p.returncode}, expected 1 (stderr: {stderr.strip()[:120]})"
    if p.stdout:
        return f"unexpected stdout: {p.stdout[:80]!r}"
    if not ERROR_LINE.match(stderr):
        return f"stderr is not 'line L, column C: message': {stderr[:120]!r}"
    expected = document.with_suffix(".err")
    if expected.exists():
        prefix = expected.read_text(encoding="utf-8").strip()
        if not stderr.startswith(prefix + ":"):
            return f"expected '{prefix}: …', got '{stderr.strip()}'"
    return None


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    program = sys.argv[1]
    corpus = pathlib.Path(sys.argv[2])

    cases = [(d, check_valid) for d in sorted((corpus / "valid").glob("*.toml"))]
    cases += [(d, check_invalid) for d in sorted((corpus / "invalid").glob("*.toml"))]
    if not cases:
        print(f"no documents under {corpus}/valid or {corpus}/invalid")
        print("0 passed, 1 failed")
        return 1

    passed = failed = 0
    for document, check in cases:
        name = f"{document.parent.name}/{document.name}"
        try:
            failure = check(program, document)
        except subprocess.TimeoutExpired:
            failure = f"timed out after {TIMEOUT} s"
        if failure:
            failed += 1
            print(f"FAIL {name}: {failure}")
        else:
            passed += 1

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
