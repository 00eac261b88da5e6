"""What an import carried, changed or left behind, each with where it was in the source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["not carried", "changed", "carried"]


class ImportParseError(Exception):
    """The source file cannot be read as its format: ``file:line: message``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Note:
    """One setting of the source: where it was, what it was, and what became of it."""

    where: str  # "file:line"
    setting: str  # the keyword path, e.g. "virtual_server 198.18.0.10 80 > real_server > digest"
    kind: Kind
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.setting}: {self.message}"


@dataclass
class Notes:
    items: list[Note] = field(default_factory=list)

    def add(self, where: str, setting: str, kind: Kind, message: str) -> None:
        self.items.append(Note(where, setting, kind, message))

    def dropped(self, where: str, setting: str, why: str) -> None:
        self.add(where, setting, "not carried", why)

    def changed(self, where: str, setting: str, how: str) -> None:
        self.add(where, setting, "changed", how)

    def carried(self, where: str, setting: str, how: str) -> None:
        self.add(where, setting, "carried", how)

    def ordered(self) -> list[Note]:
        """By file (in the order first noted) and line."""
        files: dict[str, int] = {}
        for n in self.items:
            files.setdefault(n.where.rpartition(":")[0], len(files))

        def order(n: Note) -> tuple[int, int]:
            file, _, line = n.where.rpartition(":")
            return files[file], int(line) if line.isdigit() else 0

        return sorted(self.items, key=order)

    def of(self, kind: Kind) -> list[Note]:
        return [n for n in self.items if n.kind == kind]


@dataclass
class Imported:
    """An imported config as TOML data, and its notes."""

    config: dict[str, Any]
    notes: Notes
