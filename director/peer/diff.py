"""The difference between two canonical forms, in config terms (pure).

:func:`differences` walks both forms together; :func:`describe` prints one difference the way
``directorctl diff-peer`` shows it::

    virtual_service TCP 198.18.0.10:443: real_server 198.18.1.12:443: weight: here 1, peer 3
    only here: virtual_service TCP 198.18.0.11:80
    only on the peer: vrrp_instance VI_2
    vrrp_instance VI_1: password: differs (secret; compared as keyed hashes)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from director.peer.canonical import SECRET_PREFIX


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(frozen=True)
class Difference:
    """One place where this director's config and the peer's differ."""

    path: tuple[str, ...]
    here: object  # MISSING when only the peer has it
    peer: object  # MISSING when only this director has it

    @property
    def section(self) -> str:
        """The top-level entry it is in: ``virtual_service TCP 198.18.0.10:443``, ``kernel``."""
        return self.path[0]


def differences(here: Mapping[str, object], peer: Mapping[str, object]) -> list[Difference]:
    """Every difference between the two forms, in a stable order (sorted by path)."""
    out: list[Difference] = []
    _walk((), here, peer, out)
    return out


def _walk(
    path: tuple[str, ...],
    here: Mapping[str, object],
    peer: Mapping[str, object],
    out: list[Difference],
) -> None:
    for key in sorted(set(here) | set(peer)):
        at = (*path, key)
        a = here.get(key, MISSING)
        b = peer.get(key, MISSING)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            _walk(at, a, b, out)
        elif a != b:
            out.append(Difference(at, a, b))


def describe(diff: Difference) -> str:
    where = ": ".join(diff.path)
    if diff.here is MISSING:
        return f"only on the peer: {where}{_tail(diff.peer)}"
    if diff.peer is MISSING:
        return f"only here: {where}{_tail(diff.here)}"
    if _secret(diff.here) or _secret(diff.peer):
        return f"{where}: differs (secret; compared as keyed hashes)"
    return f"{where}: here {show(diff.here)}, peer {show(diff.peer)}"


def _tail(value: object) -> str:
    """`` = VALUE`` for a plain value; nothing for a whole table."""
    if isinstance(value, Mapping):
        return ""
    if _secret(value):
        return " (secret)"
    return f" = {show(value)}"


def _secret(value: object) -> bool:
    return value == "set" or (isinstance(value, str) and value.startswith(SECRET_PREFIX))


def show(value: object) -> str:
    """A value as the config would write it: ``1``, ``"wlc"``, ``true``, ``none``, ``[a, b]``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sections(diffs: list[Difference]) -> list[str]:
    """The top-level entries that differ, each once, in order."""
    seen: list[str] = []
    for diff in diffs:
        if diff.section not in seen:
            seen.append(diff.section)
    return seen


def summary(names: list[str], limit: int = 5) -> str:
    """``virtual_service A, virtual_service B and 3 more``."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
