"""director.codecache: dataclasses built from cached code behave exactly as without it; a changed
class is compiled afresh; a missing, foreign or corrupt file changes nothing; a read-only
directory is no error. Each case runs in a fresh interpreter (the cache patches dataclasses
for the whole process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from director import codecache

ROOT = Path(__file__).resolve().parents[2]

# Creates dataclasses of every kind with the cache at argv[1] installed, checks their behaviour,
# saves, and prints what the cache did.
SCRIPT = """
import dataclasses, json, sys
from pathlib import Path
from director import codecache
cache = codecache.install(Path(sys.argv[1]))
assert cache is not None
extra = sys.argv[2]

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()

@dataclasses.dataclass(order=True, slots=True)
class Item:
    name: str
    weight: float = 1.0
    seen: list[int] = dataclasses.field(default_factory=list, compare=False)

Options = dataclasses.make_dataclass(  # a field named by the caller: its methods' text
    "Options", [("a", int), (extra, str, dataclasses.field(default=extra))], kw_only=True
)

p = Point(1, 2)
assert (p, hash(p) == hash(Point(1, 2)), repr(p)) == (Point(1, 2), True, "Point(x=1, y=2, tags=())")
try:
    p.x = 3
except dataclasses.FrozenInstanceError:
    pass
else:
    raise AssertionError("frozen")
assert Item("a") < Item("b", 0.5) and Item("a").seen == [] and Item("a").seen is not Item("a").seen
assert not hasattr(Item("a"), "__dict__")
assert getattr(Options(a=1), extra) == extra
assert repr(Options(a=2, **{extra: "z"})) == f"Options(a=2, {extra}='z')"
try:
    Options(1)
except TypeError:
    pass
else:
    raise AssertionError("kw_only")
print(json.dumps({"hits": cache.hits, "new": len(cache.new), "saved": codecache.save()}))
"""


def run(cache: Path, extra: str = "x") -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache), extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_second_run_takes_every_method_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "dc.bin"
    first = run(cache)
    assert first["hits"] == 0 and isinstance(first["new"], int) and first["new"] >= 10
    assert first["saved"] is True and cache.read_bytes().startswith(codecache.HEADER)
    second = run(cache)
    assert second == {"hits": first["new"], "new": 0, "saved": False}  # nothing compiled
    # a class whose methods' text changed (another field) gets new code, the rest is cached
    third = run(cache, extra="y")
    assert third["new"] == 3  # __init__, __repr__, __eq__ of Options
    assert third["hits"] == first["new"] - 3 and third["saved"] is True


@pytest.mark.parametrize(
    "content",
    [b"", b"not a cache", codecache.HEADER + b"\x00garbage", b"director-dataclass-code\nXXXX{}"],
)
def test_a_corrupt_or_foreign_file_is_ignored_and_replaced(tmp_path: Path, content: bytes) -> None:
    cache = tmp_path / "dc.bin"
    cache.write_bytes(content)
    first = run(cache)
    assert first["hits"] == 0 and first["saved"] is True
    assert run(cache)["hits"] == first["new"]


def test_a_read_only_directory_is_no_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anyway: a path under a regular file cannot be created
        cache = tmp_path / "file" / "dc.bin"
        (tmp_path / "file").write_text("")
    else:
        tmp_path.chmod(0o500)
        cache = tmp_path / "dc.bin"
    result = run(cache)
    assert result["saved"] is False and not cache.exists()


def test_the_daemon_installs_it_and_its_classes_come_from_the_shipped_cache(tmp_path: Path) -> None:
    """``python -m director.codecache`` writes the file the daemon reads: every method of the
    daemon's dataclasses then comes from it."""
    cache = tmp_path / "dc.bin"
    code = f"""
import sys
from pathlib import Path
from director import codecache
codecache.install.__defaults__ = (Path({str(cache)!r}),)  # main() installs the default file
sys.exit(codecache.main())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "(written)" in done.stdout, done.stderr
    check = f"""
import gc, sys
from pathlib import Path
from director import codecache, lean
cache = codecache.install(Path({str(cache)!r}))
lean.lean_imports()
import director.app, director.daemon
print(cache.hits, len(cache.new))
"""
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    hits, new = map(int, done.stdout.split())
    assert hits > 500 and new == 0, done.stderr
