"""A small TOML writer for imported configs (no dependency; read back with ``tomllib``).

Tables are written the way ``docs/configuration.md`` writes them: ``[[virtual_server]]`` with its
scalars, then ``[virtual_server.check]``, then each ``[[virtual_server.real_server]]`` indented;
small tables (``sorry_server``, a virtual address with a device) and lists of them stay inline.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Lists of tables written as [[...]] sections; every other list is written inline.
TABLE_ARRAYS = frozenset({"virtual_server", "real_server", "vrrp_instance", "vrrp_sync_group"})
TABLE_ARRAYS |= {"fwmark", "snat", "masquerade", "policy_route"}
# Tables always written as [sections], however small.
SECTIONS = frozenset({"check"})
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_INLINE_MAX = 90


def key(name: str) -> str:
    return name if _BARE.fullmatch(name) else string(name)


def string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def value(v: Any) -> str:
    """One value, inline."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} in TOML config")
        return repr(v) if v != int(v) or abs(v) >= 1e16 else f"{v:.1f}"
    if isinstance(v, str):
        return string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} in TOML: {v!r}")


def _is_table_array(name: str, v: Any) -> bool:
    return (
        name in TABLE_ARRAYS
        and isinstance(v, list)
        and bool(v)
        and all(isinstance(x, dict) for x in v)
    )


def _is_section(name: str, v: Any, top: bool = False) -> bool:
    """A dict written as a [section] rather than inline (always at the top level)."""
    if not isinstance(v, dict):
        return False
    if top or name in SECTIONS:
        return True
    if any(isinstance(x, dict) or _is_table_array(k, x) for k, x in v.items()):
        return True
    return len(value(v)) + len(name) + 3 > _INLINE_MAX


def _table(lines: list[str], path: list[str], data: dict[str, Any], depth: int) -> None:
    pad = "  " * depth
    for name, v in data.items():
        if v is None or _is_table_array(name, v) or _is_section(name, v, not path):
            continue
        lines.append(f"{pad}{key(name)} = {value(v)}")
    for name, v in data.items():
        if v is not None and _is_section(name, v, not path):
            lines.append("")
            lines.append(f"{pad}[{'.'.join(key(p) for p in [*path, name])}]")
            _table(lines, [*path, name], v, depth)
    for name, v in data.items():
        if v is not None and _is_table_array(name, v):
            inner = depth + (1 if path else 0)
            for item in v:
                lines.append("")
                lines.append(f"{'  ' * inner}[[{'.'.join(key(p) for p in [*path, name])}]]")
                _table(lines, [*path, name], item, inner)


def dumps(data: dict[str, Any], header: list[str] | None = None) -> str:
    """``data`` as a TOML document, with ``header`` lines as comments at the top."""
    lines = [f"# {h}" if h else "#" for h in header or ()]
    _table(lines, [], data, 0)
    while lines and lines[0] == "":
        lines.pop(0)
    return "\n".join(lines) + "\n"
