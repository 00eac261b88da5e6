"""Each dataclass the daemon creates before READY has a docstring: without one, ``@dataclass``
writes one from ``inspect.signature(cls)`` as the class is created (39 classes: 0.05 s of an
emulated guest's start, under a profiler; ``bench/startup.py``)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The daemon's modules as a start with checks imports them; prints the dataclasses of the
# project whose docstring dataclasses wrote.
LIST = """
import dataclasses, sys
from director import lean
lean.lean_imports()
import director.app, director.daemon, checks.probes.dispatch
for name, module in sorted(sys.modules.items()):
    if module is None or not name.startswith(("director", "vrrp", "checks")):
        continue
    for value in list(vars(module).values()):
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            if value.__module__ == name and (value.__doc__ or "").startswith(value.__name__ + "("):
                print(f"{name}.{value.__qualname__}")
"""


def test_the_daemons_dataclasses_have_docstrings() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIST], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_a_dataclass_without_one_gets_its_signature() -> None:  # what the test above looks for
    @dataclasses.dataclass
    class Point:
        x: int

    assert (Point.__doc__ or "").startswith("Point(")
