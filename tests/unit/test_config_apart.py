"""director.config.apart: a large config validated in a child process gives what a validation
here gives, and leaves the daemon's heap as if only the result had been made."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import director.offload
from director.config import ConfigError, apart, machine, parse_config
from director.config.apart import load_config_apart, parse_config_apart
from director.config.startcache import FILE_NAME, StartCache

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.toml"))


def big(services: int, dests: int = 10) -> str:
    """A config of ``services`` x ``dests`` with a check on each (as bench.scale's)."""
    servers = "".join(
        f'  [[virtual_server.real_server]]\n  address = "198.19.0.{j}"\n  port = 80\n'
        for j in range(dests)
    )
    return "".join(
        f'[[virtual_server]]\nname = "svc{i:05}"\nprotocol = "tcp"\n'
        f'address = "198.18.{i // 250}.{i % 250}"\nport = 80\n'
        '  [virtual_server.check]\n  type = "tcp"\n  interval = 10\n' + servers
        for i in range(services)
    )


def outcome(parse: object, text: str) -> object:
    try:
        return parse(text, "d.toml")  # type: ignore[operator]
    except ConfigError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_an_example_validated_apart_is_the_config_validated_here(example: Path) -> None:
    text = example.read_text()
    here = parse_config(text, "d.toml")
    there = parse_config_apart(text, "d.toml", above=0)
    assert there == here
    assert there is not here


MUTATIONS = [
    ("port = 80", "port = 0"),
    ('type = "tcp"', 'type = "nope"'),
    ("198.19.0.3", "198.19.0.300"),
    ('name = "svc00001"', 'name = "svc00000"'),
    ("[[virtual_server]]", "[[virtual_server"),
]


@pytest.mark.parametrize(("old", "new"), MUTATIONS, ids=[m[1] for m in MUTATIONS])
def test_an_invalid_config_gives_the_same_errors_apart(old: str, new: str) -> None:
    text = big(3).replace(old, new, 1)
    assert outcome(parse_config, text)[0] == "error"  # type: ignore[index]
    assert outcome(lambda t, s: parse_config_apart(t, s, above=0), text) == outcome(
        parse_config, text
    )


def test_whether_the_validation_read_the_machine_is_told_back(tmp_path: Path) -> None:
    """The start cache keeps no config whose validation read the machine (a user looked up):
    validated in a child, the parent still knows."""
    text = '[daemon]\nscript_user = "nobody"\n'
    reads = machine.reads
    parse_config_apart(text, above=0)
    assert machine.reads > reads
    reads = machine.reads
    parse_config_apart(big(2), above=0)
    assert machine.reads == reads


@pytest.mark.parametrize(
    "text", ['[daemon]\nscript_user = "nobody"\n', big(2)], ids=["reads the machine", "does not"]
)
def test_the_start_cache_keeps_what_it_kept_when_validating_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    path = tmp_path / "d.toml"
    path.write_text(text)
    kept = []
    for above in (1 << 30, 0):
        monkeypatch.setattr(apart, "APART_ABOVE", above)
        cache = StartCache(tmp_path / str(above) / FILE_NAME, b"f" * 32)
        config = cache.load(path)
        assert config == parse_config(text, str(path))
        kept.append(cache.save())
    assert kept[0] == kept[1]


def test_without_a_child_it_is_validated_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(director.offload, "_fork", no_fork)
    assert parse_config_apart(big(2), above=0) == parse_config(big(2))


def test_a_child_that_dies_leaves_it_to_a_validation_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(text: str, source: str) -> bytes:
        os._exit(3)

    monkeypatch.setattr(apart, "_validated", dies)
    assert parse_config_apart(big(2), above=0) == parse_config(big(2))
    with pytest.raises(ConfigError, match="port"):
        parse_config_apart(big(2).replace("port = 80", "port = 0", 1), above=0)


def test_a_reload_validates_apart_from_a_worker_thread(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(big(20))
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(load_config_apart(path, above=0)))
    thread.start()
    thread.join(60)
    assert box == [parse_config(big(20), str(path))]


def test_a_missing_file_says_so() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config_apart("/nonexistent/director.toml", above=0)


HEAP = """
import gc, os, sys, tempfile
from director.config.apart import parse_config_apart
text = open(sys.argv[1]).read()
config = parse_config_apart(text, above=int(sys.argv[2]))
gc.collect()
with tempfile.TemporaryFile() as out:
    os.dup2(out.fileno(), 2)
    sys._debugmallocstats()
    out.seek(0)
    stats = out.read().decode()
free = [l for l in stats.splitlines() if l.startswith("# bytes in available blocks")][0]
print(int(free.split("=")[1].replace(",", "")), len(config.virtual_servers))
"""


def test_validated_apart_the_heap_keeps_no_free_blocks_of_the_validation(tmp_path: Path) -> None:
    """The reason for the child: 1,000 services validated here leave megabytes of free blocks
    in the Python allocator's arenas (kept resident by the survivors scattered over them);
    validated apart, the heap holds what the config keeps."""
    path = tmp_path / "d.toml"
    path.write_text(big(1000))

    def free_blocks(above: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", HEAP, str(path), str(above)],
            capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
        ).stdout.split()  # fmt: skip
        assert out[1] == "1000"
        return int(out[0])

    here, there = free_blocks(1 << 30), free_blocks(0)
    assert here > 5_000_000
    assert there < here / 5


PUBLIC = [
    *sorted(Path("/usr/share/doc/keepalived/samples").glob("keepalived.conf.*")),
    *sorted((ROOT / "tests/importers/data/field").glob("*.conf")),
]


@pytest.mark.skipif(len(PUBLIC) < 20, reason="Debian's keepalived samples are not installed")
def test_public_configs_imported_validate_apart_as_here() -> None:
    """keepalived's own samples and the field configs (tests/importers/data/field), imported:
    apart, the same config or the same errors."""
    from director.importers.emit import dumps
    from director.importers.from_keepalived import import_keepalived
    from director.importers.notes import ImportParseError

    compared = 0
    for path in PUBLIC:
        try:
            text = dumps(import_keepalived(path).config)
        except ImportParseError:
            continue  # refused by the import (its own tests say why)
        here = outcome(parse_config, text)
        there = outcome(lambda t, s: parse_config_apart(t, s, above=0), text)
        assert there == here, path
        compared += 1
    assert compared >= 20
