"""Kernel settings the daemon applies at start and then verifies.

``plan_sysctls`` is pure: wanted values + current values -> the writes to make. The thin I/O part
reads and writes ``/proc/sys`` (the root is a parameter so tests can point it elsewhere).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC_SYS = Path("/proc/sys")


@dataclass(frozen=True)
class SysctlProblem:
    """A sysctl that does not have the value wanted."""

    name: str
    wanted: str
    found: str | None  # None: the setting does not exist (module not loaded, wrong name)

    def __str__(self) -> str:
        if self.found is None:
            return f"{self.name}: wanted {self.wanted}, but the setting does not exist"
        return f"{self.name}: wanted {self.wanted}, found {self.found}"


def plan_sysctls(
    wanted: Sequence[tuple[str, str]], current: Mapping[str, str | None]
) -> list[tuple[str, str]]:
    """The (name, value) writes that bring ``current`` to ``wanted``; whitespace-insensitive."""
    return [
        (name, value)
        for name, value in wanted
        if current.get(name) is not None and _norm(current[name]) != _norm(value)
    ]


def _norm(value: str | None) -> str:
    return " ".join((value or "").split())


def sysctl_path(name: str, root: Path = PROC_SYS) -> Path:
    return root / name.replace(".", "/")


def read_sysctl(name: str, root: Path = PROC_SYS) -> str | None:
    try:
        return sysctl_path(name, root).read_text().strip()
    except OSError:
        return None


def apply_sysctls(
    wanted: Sequence[tuple[str, str]], root: Path = PROC_SYS
) -> tuple[list[tuple[str, str]], list[SysctlProblem]]:
    """Write what differs, read everything back; returns (writes made, problems left)."""
    current = {name: read_sysctl(name, root) for name, _ in wanted}
    writes = plan_sysctls(wanted, current)
    for name, value in writes:
        with contextlib.suppress(OSError):  # a failed write shows in the read-back below
            sysctl_path(name, root).write_text(value + "\n")
    problems = []
    for name, value in wanted:
        found = read_sysctl(name, root)
        if found is None or _norm(found) != _norm(value):
            problems.append(SysctlProblem(name, value, found))
    return writes, problems
