"""director.config.startcache: the last start's validated config, never different from a fresh
validation."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest

from director.config import ConfigError, load_config
from director.config.startcache import FILE_NAME, HEADER, StartCache, code_fingerprint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.toml"))
FINGERPRINT = b"f" * 32  # the code's, fixed: the tests change configs, not code


def cache_in(tmp_path: Path, fingerprint: bytes = FINGERPRINT) -> StartCache:
    return StartCache(tmp_path / "state" / FILE_NAME, fingerprint)


def write(tmp_path: Path, text: str | bytes, name: str = "director.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def fresh_or_error(path: Path) -> object:
    try:
        return load_config(path)
    except ConfigError as exc:
        return ("error", str(exc))


def through(cache: StartCache, path: Path) -> object:
    try:
        config = cache.load(path)
    except ConfigError as exc:
        return ("error", str(exc))
    cache.save()
    return config


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_a_second_start_of_the_same_file_takes_the_config_from_the_cache(
    tmp_path: Path, example: Path
) -> None:
    path = write(tmp_path, example.read_text())
    first = cache_in(tmp_path)
    config = first.load(path)
    assert not first.hit
    assert first.save()
    second = cache_in(tmp_path)
    cached = second.load(path)
    assert second.hit
    assert cached == config == load_config(path)
    assert repr(cached) == repr(config)
    assert not second.save()  # nothing new to write


def test_mutated_configs_give_what_a_fresh_validation_gives(tmp_path: Path) -> None:
    """Each mutation of a valid config (a character changed, dropped or doubled) is a new key:
    the cache gives the fresh validation's config or its very error, never the last one."""
    base = (ROOT / "docs" / "examples" / "exchange.toml").read_text()
    rng = random.Random(18)
    cache = cache_in(tmp_path)
    path = write(tmp_path, base)
    through(cache, path)
    hits = 0
    for n in range(60):
        i = rng.randrange(len(base))
        kind = n % 3
        if kind == 0:
            text = base[:i] + rng.choice('0123456789az=[]"\n ') + base[i + 1 :]
        elif kind == 1:
            text = base[:i] + base[i + 1 :]
        else:
            text = base[:i] + base[i] + base[i:]
        path = write(tmp_path, text)
        for _ in range(2):  # the second time from the cache, when the first was valid
            cache = cache_in(tmp_path)
            got = through(cache, path)
            assert got == fresh_or_error(path), (n, i)
            hits += cache.hit
    assert hits > 0  # some mutations stay valid (in comments, values): those were cache hits


def test_an_invalid_config_gives_its_errors_and_is_not_kept(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nlog_level = "loud"\n')
    cache = cache_in(tmp_path)
    with pytest.raises(ConfigError) as caught:
        cache.load(path)
    with pytest.raises(ConfigError) as fresh:
        load_config(path)
    assert str(caught.value) == str(fresh.value)
    assert not cache.save()
    assert not cache.path.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", HEADER, HEADER + b"k" * 32 + b"not a pickle"],
    ids=["empty", "foreign", "header only", "corrupt"],
)
def test_a_corrupt_or_foreign_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, (ROOT / "docs" / "examples" / "webfarm.toml").read_text())
    cache = cache_in(tmp_path)
    cache.path.parent.mkdir()
    cache.path.write_bytes(content)
    os.chmod(cache.path, 0o600)
    assert cache.load(path) == load_config(path)
    assert not cache.hit
    assert cache.save()  # replaced by a good one
    assert cache_in(tmp_path).load(path) == load_config(path)


def test_a_file_with_a_corrupt_pickle_under_the_right_key_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, (ROOT / "docs" / "examples" / "webfarm.toml").read_text())
    cache = cache_in(tmp_path)
    cache.load(path)
    cache.save()
    data = cache.path.read_bytes()
    cache.path.write_bytes(data[: len(data) // 2])
    again = cache_in(tmp_path)
    assert again.load(path) == load_config(path)
    assert not again.hit


def test_another_object_under_the_right_key_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, (ROOT / "docs" / "examples" / "webfarm.toml").read_text())
    cache = cache_in(tmp_path)
    key = cache.key(path.read_bytes())
    cache.path.parent.mkdir()
    cache.path.write_bytes(HEADER + key + pickle.dumps({"not": "a config"}))
    os.chmod(cache.path, 0o600)
    assert cache.load(path) == load_config(path)
    assert not cache.hit


def test_a_file_others_can_write_is_never_read(tmp_path: Path) -> None:
    path = write(tmp_path, (ROOT / "docs" / "examples" / "webfarm.toml").read_text())
    cache = cache_in(tmp_path)
    cache.load(path)
    cache.save()
    assert cache.path.stat().st_mode & 0o777 == 0o600
    os.chmod(cache.path, 0o622)
    again = cache_in(tmp_path)
    again.load(path)
    assert not again.hit


def test_other_code_is_another_key(tmp_path: Path) -> None:
    path = write(tmp_path, (ROOT / "docs" / "examples" / "webfarm.toml").read_text())
    cache = cache_in(tmp_path)
    cache.load(path)
    cache.save()
    other = cache_in(tmp_path, fingerprint=b"g" * 32)
    other.load(path)
    assert not other.hit


def test_the_code_fingerprint_follows_a_source_file(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    module = package / "sub" / "m.py"
    module.write_text("x = 1\n")
    before = code_fingerprint((package,))
    assert code_fingerprint((package,)) == before
    os.utime(module, ns=(1, 1))
    assert code_fingerprint((package,)) != before
    touched = code_fingerprint((package,))
    (package / "n.py").write_text("")
    assert code_fingerprint((package,)) != touched


@pytest.mark.parametrize(
    "extra",
    [
        '[daemon]\nscript_user = "nobody"\n',
        '[[virtual_server]]\nprotocol = "tcp"\naddress = "198.18.0.10"\nport = 80\n'
        '  [[virtual_server.real_server]]\n  address = "198.18.1.11"\n'
        '  [virtual_server.real_server.check]\n  type = "tcp"\n  send = "x"\n'
        '  expect = "ok.*"\n  expect_regex = true\n',
    ],
    ids=["a user", "a regular expression"],
)
def test_a_config_that_read_the_machine_is_not_kept(tmp_path: Path, extra: str) -> None:
    """Its verdict may change with the machine (a user deleted, another RE2): validated at
    every start."""
    path = write(tmp_path, extra)
    cache = cache_in(tmp_path)
    cache.load(path)
    assert not cache.save()
    assert not cache.path.exists()


def test_a_config_naming_a_peer_key_file_is_not_kept(tmp_path: Path) -> None:
    """The key file is checked when the config is validated (mode 0600, length): a chmod 644
    between two starts must fail the second as a fresh validation would."""
    key = tmp_path / "peer.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    path = write(
        tmp_path,
        '[peer_check]\nlisten_address = "198.18.0.1:9470"\npeers = ["198.18.0.2:9470"]\n'
        f'key_file = "{key}"\n',
    )
    cache = cache_in(tmp_path)
    cache.load(path)
    assert not cache.save()
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        cache_in(tmp_path).load(path)


def test_the_daemon_validates_once_then_takes_the_cache(tmp_path: Path) -> None:
    """directord's start: the file in --state-dir, written after READY; here through run()'s
    loading as a subprocess would (the real module, a real file)."""
    state = tmp_path / "state"
    config = write(tmp_path, (ROOT / "docs" / "examples" / "webfarm.toml").read_text())
    script = (
        "import sys; from pathlib import Path\n"
        "from director import early\n"
        "from director.config.startcache import FILE_NAME, StartCache\n"
        "c = Path(sys.argv[1]); s = Path(sys.argv[2])\n"
        "cache = StartCache(early.state_dir_of(early.daemon_table(c), s) / FILE_NAME)\n"
        "cache.load(c); cache.save(); print('hit' if cache.hit else 'miss')\n"
    )
    argv = [sys.executable, "-c", script, str(config), str(state)]
    runs = [subprocess.run(argv, capture_output=True, text=True, check=True) for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["miss", "hit"]
    assert (state / FILE_NAME).is_file()


def test_a_state_directory_that_cannot_be_written_keeps_nothing_and_loads_as_always(
    tmp_path: Path,
) -> None:
    """A full or broken state directory (here: a file where the directory should be): the
    write fails quietly, the next start validates afresh and gets the same config."""
    path = write(tmp_path, (ROOT / "docs" / "examples" / "webfarm.toml").read_text())
    (tmp_path / "state").write_text("not a directory")
    cache = cache_in(tmp_path)
    config = cache.load(path)
    assert not cache.save()
    again = cache_in(tmp_path)
    assert again.load(path) == config == load_config(path)
    assert not again.hit
