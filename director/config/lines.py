"""Best-effort line numbers for config locations: ``tomllib`` gives none, so scan the text.

The scanner knows the layouts a config uses: ``[table]`` and ``[[array.of.tables]]`` headers
(counted in order, so the second ``[[virtual_server]]`` is ``virtual_server[1]``) and ``key =``
lines, dotted or quoted keys included. Values spread over several lines (arrays, multi-line
strings) are skipped. A location that the scan did not see (a key inside an inline table, a
missing key) gets the line of the nearest enclosing table or key that it did see.
"""

from __future__ import annotations

import json
import re

from director.config.fields import Loc

_BARE = r"[A-Za-z0-9_-]+"
_KEY = rf"""(?:{_BARE}|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?$")
_TABLE = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY)


def _split(dotted: str) -> list[str]:
    parts = []
    for match in _PART.finditer(dotted):
        part = match.group()
        if part.startswith('"'):
            try:
                part = json.loads(part)
            except ValueError:
                part = part[1:-1]
        elif part.startswith("'"):
            part = part[1:-1]
        parts.append(part)
    return parts


class LineMap:
    """Where each table and key of one TOML text starts (1-based line numbers)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Loc, int] = {}
        self._counts: dict[Loc, int] = {}
        table: Loc = ()
        open_string: str | None = None  # the delimiter of a multi-line string being skipped
        for number, line in enumerate(text.split("\n"), 1):
            if open_string is not None:
                if line.count(open_string) % 2:
                    open_string = None
                continue
            if match := _ARRAY.match(line):
                *parents, last = _split(match[1])
                array = (*self._resolve(parents), last)
                self._counts[array] = self._counts.get(array, 0) + 1
                table = (*array, self._counts[array] - 1)
                self.lines.setdefault(array, number)
                self.lines[table] = number
            elif match := _TABLE.match(line):
                table = self._resolve(_split(match[1]))
                self.lines.setdefault(table, number)
            elif match := _ASSIGN.match(line):
                key = _split(match[1])
                for i in range(1, len(key) + 1):
                    self.lines.setdefault((*table, *key[:i]), number)
                rest = line[match.end() :]
                for delimiter in ('"""', "'''"):
                    if rest.count(delimiter) % 2:
                        open_string = delimiter
                        break

    def _resolve(self, parts: list[str]) -> Loc:
        """A header's dotted key as a location: arrays of tables mean their latest element."""
        loc: Loc = ()
        for part in parts:
            loc = (*loc, part)
            if loc in self._counts:
                loc = (*loc, self._counts[loc] - 1)
        return loc

    def line_for(self, loc: Loc) -> int | None:
        """The line of ``loc``, else of its nearest enclosing location; None if none was seen."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None
