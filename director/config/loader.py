"""Reading a config: file -> TOML -> validated :class:`Config`, or a :class:`ConfigError`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from director.config import rules
from director.config.errors import (
    ConfigError,
    Problem,
    located,
    ordered,
    syntax_problem,
    validation_problems,
)
from director.config.model import Config, VirtualServer

DEFAULT_PATH = "/etc/director/director.toml"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at ``path``."""
    source = os.fspath(path)
    return parse_config(read_config(path), source)


def read_config(path: str | os.PathLike[str]) -> str:
    """The text of the config file at ``path``, or a :class:`ConfigError` saying why it cannot
    be read."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(source, [Problem("", "cannot read the config: no such file")]) from None
    except IsADirectoryError:
        raise ConfigError(
            source, [Problem("", "cannot read the config: it is a directory")]
        ) from None
    except UnicodeDecodeError as exc:
        message = f"cannot read the config: not UTF-8 text (bad byte at offset {exc.start})"
        raise ConfigError(source, [Problem("", message)]) from None
    except OSError as exc:
        message = f"cannot read the config: {exc.strerror or exc}"
        raise ConfigError(source, [Problem("", message)]) from None
    return text


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate config ``text``; ``source`` names it in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [syntax_problem(exc)]) from None
    try:
        return Config.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        # its regular expressions compiled for an invalid config only (0.04 s of an emulated
        # guest's start with a valid one, under a profiler)
        from director.config.lines import LineMap

        lines = LineMap(text)
        problems = validation_problems(exc, Config, lines)
        problems += located(_duplicates_among_valid(raw), lines)
        raise ConfigError(source, ordered(problems)) from None


def _duplicates_among_valid(raw: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Duplicate services among those that are valid on their own.

    The whole-config check only runs when everything else is valid; this one keeps a duplicate
    from hiding behind an unrelated mistake. (Found twice, it is reported once.)
    """
    items = raw.get("virtual_server")
    if not isinstance(items, list):
        return []
    valid = []
    for i, item in enumerate(items):
        try:
            valid.append((i, VirtualServer.model_validate(item, by_alias=True, by_name=False)))
        except ValidationError:
            continue
    return rules.duplicate_services(valid)


def check_config(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """(True, "FILE: OK (...)") or (False, every problem): for ``--check-config``."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return False, str(exc)
    services, servers = config.count()
    return True, (
        f"{os.fspath(path)}: OK ({services} virtual service{'' if services == 1 else 's'}, "
        f"{servers} real server{'' if servers == 1 else 's'})"
    )
