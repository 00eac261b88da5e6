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


# Forward references (typing.ForwardRef compiles their text) with the cache at argv[1]: the
# same types, the same errors, other compilations untouched; prints what the cache did.
FORWARD = """
import json, sys, typing
from pathlib import Path
import pydantic
from director import codecache
cache = codecache.install(Path(sys.argv[1]))
assert cache is not None

class Node:
    value: "int | None"
    children: "dict[str, list[Node]]"

assert typing.get_type_hints(Node) == {"value": int | None, "children": dict[str, list[Node]]}
try:
    typing.ForwardRef("1 +")
except SyntaxError as exc:
    assert str(exc) == "Forward reference must be an expression -- got '1 +'", exc
else:
    raise AssertionError("a forward reference that is no expression")
# any other compilation is the builtin's, uncached
assert typing.compile("x = 1", "<string>", "exec").co_filename == "<string>"
assert typing.compile("x", "file.py", "eval").co_filename == "file.py"

class Model(pydantic.BaseModel):
    count: "int | None" = None
    names: "list[str]" = []

assert Model(count="3", names=["a"]) == Model(count=3, names=["a"])
try:
    Model(count="x")
except pydantic.ValidationError:
    pass
else:
    raise AssertionError("validation")
hits, new = cache.hits, len(cache.new)
codecache.uninstall()
assert "compile" not in typing.__dict__ and typing.ForwardRef("int").__forward_code__
print(json.dumps({"hits": hits, "new": new, "saved": cache.save()}))
"""


def test_forward_references_come_from_the_cache_and_evaluate_the_same(tmp_path: Path) -> None:
    cache = tmp_path / "dc.bin"

    def forward() -> dict[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", FORWARD, str(cache)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, int] = json.loads(done.stdout)
        return result

    first = forward()
    assert first["new"] >= 4 and first["saved"]  # this script's own four texts at least
    second = forward()
    assert second["new"] == 0 and second["hits"] >= first["new"] and not second["saved"]


def test_importing_the_daemon_installs_it_before_the_daemon_module_imports_the_rest() -> None:
    """``director.daemon``'s own imports (structlog, director.logs, vrrp through
    director.early) create dataclasses too: their methods come from the cache."""
    code = (
        "import sys, director.daemon; from director import codecache; c = codecache._cache;"
        " print('vrrp.actions' in sys.modules, -1 if c is None else len(c.used))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded, used = done.stdout.split()
    assert loaded == "True" and int(used) >= 100  # 110 texts today
