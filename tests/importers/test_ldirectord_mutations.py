"""Malformed ldirectord.cf: every line of the real files deleted, doubled, moved to the start,
uncommented, or given another value. Each variant imports as a config directord accepts, or is
refused with ``FILE:LINE: [keyword: ]expected ..., found ...``; never a traceback."""

from __future__ import annotations

import random
import re
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from director.config import ConfigError
from director.importers.ldirectord import import_ldirectord
from director.importers.notes import ImportParseError
from tests.importers.conftest import validated
from tests.importers.test_ldirectord import REAL

# Values put in place of a directive's own: words, numbers out of range, other kinds of
# address, quotes, and the values of other directives.
WORDS = [
    "",
    "zzz",
    "0",
    "-1",
    "70000",
    "9" * 30,
    "yes",
    '"',
    '"unterminated',
    "[::1]:80",
    "192.0.2.1",
    "192.0.2.1:80",
    "999.1.1.1:80",
    "www.example.com:http",
    "gate",
    "a:b",
    "1",
    "fwm",
    "udp",
    "ping",
    "off",
    "external",
    "3",
    "sh",
    "flag-1,sh-port",
    "255.0.255.0",
    '198.51.100.1->198.51.100.3:8080 masq 3 "/x", "(y" l:5 u:4',
    '"/health"',
    "simpletcp",
    "ldap",
    "http_proxy",
    "\uff10",  # fullwidth 0
    "\u00b2",  # superscript 2
    "\u0661\u0662",  # Arabic-Indic 12
    "1.5",
    "0x10",
    "1e3",
    "\u202e",  # right-to-left override
    "\x01",
    "caf\u00e9",
    '192.0.2.1:80 gate 1 "/a" "b"',
]
# Variants per file (sampled with a fixed seed): the big production file costs most per import.
BUDGET = {
    "resource-agents.cf": 1500,
    "populis.cf": 100,
    "radius.cf": 700,
    "mariadb.cf": 500,
    "gprs3.cf": 500,
}
_ERROR = r":[1-9][0-9]*: (?:[A-Za-z][\w-]*: )?expected .+, found "


def mutants(lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    for i, line in enumerate(lines):
        where = f"line {i + 1}"
        yield f"{where} deleted", lines[:i] + lines[i + 1 :]
        yield f"{where} doubled", [*lines[:i], line, *lines[i:]]
        yield f"{where} at the start", [*lines[:i], line.strip(), *lines[i + 1 :]]
        if line.lstrip().startswith("#"):
            yield f"{where} uncommented", [*lines[:i], line.replace("#", "", 1), *lines[i + 1 :]]
        if "=" in line:
            key = line.partition("=")[0]
            for word in WORDS:
                yield f"{where} = {word!r}", [*lines[:i], f"{key}={word}", *lines[i + 1 :]]


def test_mutated_files_import_or_fail_cleanly(tmp_path: Path) -> None:
    rng = random.Random(1999)  # ldirectord's first year
    cases: list[tuple[str, str, list[str]]] = []
    for name, budget in BUDGET.items():
        variants = list(mutants((REAL / name).read_text().splitlines()))
        rng.shuffle(variants)
        cases += [(name, what, lines) for what, lines in variants[:budget]]
    path = tmp_path / "ldirectord.cf"
    error = re.compile(re.escape(str(path)) + _ERROR)
    outcome: Counter[str] = Counter()
    started = time.monotonic()
    for name, what, lines in cases:
        path.write_text("\n".join(lines) + "\n")
        refused = None
        try:
            result = import_ldirectord(path)
        except ImportParseError as exc:
            refused = str(exc)
        except Exception:
            pytest.fail(f"{name}, {what}: a traceback\n{traceback.format_exc()}")
        if refused is not None:
            assert error.match(refused), f"{name}, {what}: {refused}"
            outcome["refused"] += 1
            continue
        try:
            validated(result)
        except ConfigError as exc:
            pytest.fail(f"{name}, {what}: the import is not a valid config\n{exc}")
        outcome["imported"] += 1
    elapsed = time.monotonic() - started
    assert sum(outcome.values()) == len(cases) >= 3000
    # both outcomes are exercised: the mutations are not all fatal, nor all harmless
    assert outcome["refused"] > 500
    assert outcome["imported"] > 1500
    print(f"{len(cases)} mutated files in {elapsed:.1f} s: {dict(outcome)}")
