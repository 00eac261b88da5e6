"""No input crashes the keepalived or lvs.cf importer: thousands of mutated real-looking files.

Each seed (the sample configs here, the field configs in ``data/field/`` with their sources
noted in their first lines, and keepalived's own samples where Debian's package is installed)
is mutated a few lines at a time (:mod:`tests.helpers.mutations`) and run through
``directorctl import`` in-process, as the command runs it. Every variant must either print a
config that ``directord --check-config`` accepts, or be refused with exit 1 and
``directorctl import: FILE:LINE: ...`` (an :class:`ImportParseError`). Any other exception, an
accepted config the daemon refuses, or a refusal without its line, fails the test with the
variant and the seed that made it, so it can be replayed.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest

from director.config import check_config
from director.importers import command
from tests.helpers.memory import memory_cap
from tests.helpers.mutations import Syntax, mutate
from tests.importers.conftest import DATA

FIELD = DATA / "field"
SAMPLES = Path("/usr/share/doc/keepalived/samples")  # Debian's keepalived package
SEEDS: dict[Syntax, list[Path]] = {
    "keepalived": [
        *sorted(DATA.glob("*.conf")),
        *sorted(FIELD.glob("*.conf")),
        *sorted(SAMPLES.glob("keepalived.conf.*")),
    ],
    "lvs.cf": [*sorted(DATA.glob("*.cf")), *sorted(FIELD.glob("*.cf"))],
}
RUNS = 5000  # variants per format: about 6 s each on the project's 2-core machine
MAX_FAILURES = 10  # enough to show a regression, before its runaway variants take minutes


def _run(fmt: Syntax, path: Path) -> tuple[int, str, str]:
    """``directorctl import FMT PATH`` in-process: (exit status, stdout, stderr)."""
    args = argparse.Namespace(format=fmt, file=path, node="primary", config_id=None)
    out, err = io.StringIO(), io.StringIO()
    status = command.run(args, out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("fmt", ["keepalived", "lvs.cf"])
def test_mutated_files_import_or_are_refused_with_their_line(tmp_path: Path, fmt: Syntax) -> None:
    seeds = [(p, p.read_text(encoding="utf-8", errors="replace")) for p in SEEDS[fmt]]
    assert len(seeds) >= 4
    donors = [line for _, text in seeds for line in text.split("\n") if line.strip()]
    rng = random.Random(f"import mutations {fmt}")
    path = tmp_path / ("keepalived.conf" if fmt == "keepalived" else "lvs.cf")
    toml = tmp_path / "director.toml"
    refused = re.compile(rf"directorctl import: {re.escape(str(path))}:[1-9][0-9]*: \S")
    outcome: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    for i in range(RUNS):
        if len(failures) >= MAX_FAILURES:
            break
        seed, text = seeds[i % len(seeds)]
        variant = mutate(text, rng, fmt, donors)
        path.write_text(variant, encoding="utf-8", errors="surrogatepass")
        what = f"variant {i} of {seed.name}"
        try:
            with memory_cap():  # a runaway import fails here, not the machine
                status, out, err = _run(fmt, path)
        except Exception:
            failures.append(f"{what} crashed:\n{traceback.format_exc()}\n{variant}")
            continue
        if status == 1:
            outcome["refused"] += 1
            if out or not refused.match(err):
                failures.append(f"{what}: refused without FILE:LINE: {err!r}\n{variant}")
            continue
        outcome["imported"] += 1
        toml.write_text(out)
        ok, message = check_config(toml)
        if not ok:
            failures.append(f"{what}: imported, but check-config refuses it:\n{message}\n{out}")
    elapsed = time.monotonic() - started
    print(f"{fmt}: {i + 1} variants in {elapsed:.1f} s: {dict(outcome)}")
    assert not failures, f"{len(failures)} variants failed (of {i + 1}); the first:\n{failures[0]}"
    # the mutations must leave many files importable, or the check above proves little
    assert outcome["imported"] > RUNS // 5
    assert outcome["refused"] > RUNS // 5
