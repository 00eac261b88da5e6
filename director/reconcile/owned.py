"""Which kernel services belong to the daemon, remembered across restarts.

The daemon deletes a service only when it owns it: it wants it now or wanted it in an earlier
run. The set is kept in a small JSON file in the state directory, replaced atomically.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Protocol as TypingProtocol

import structlog

from director.ipvs.model import Family, Protocol, ServiceKey
from director.statefile import StateFileError, load_json, set_aside, write_json

log = structlog.get_logger("director")


class OwnedStore(TypingProtocol):
    def load(self) -> frozenset[ServiceKey]: ...

    def save(self, keys: frozenset[ServiceKey]) -> None: ...


def encode_key(key: ServiceKey) -> str:
    if key.fwmark:
        return f"fwm:{key.family.label}:{key.fwmark}"
    assert key.protocol is not None and key.address is not None
    return f"{key.protocol.label}:{key.address}:{key.port}"


def decode_key(text: str) -> ServiceKey:
    """The key :func:`encode_key` wrote; ValueError for anything else."""
    kind, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"not a service key: {text!r}")
    if kind == "fwm":
        family, mark = rest.split(":")
        if family not in ("ipv4", "ipv6"):
            raise ValueError(f"not a service key: {text!r}")
        if not 0 < int(mark) < 2**32:
            raise ValueError(f"not a service key: {text!r}")
        return ServiceKey.mark(int(mark), Family.INET if family == "ipv4" else Family.INET6)
    address, port = rest.rsplit(":", 1)
    if kind.upper() not in Protocol.__members__ or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a service key: {text!r}")
    return ServiceKey.inet(Protocol[kind.upper()], ipaddress.ip_address(address), int(port))


class MemoryOwnedStore:
    def __init__(self, keys: frozenset[ServiceKey] = frozenset()) -> None:
        self.keys = keys

    def load(self) -> frozenset[ServiceKey]:
        return self.keys

    def save(self, keys: frozenset[ServiceKey]) -> None:
        self.keys = keys


class FileOwnedStore:
    """``<state_dir>/owned-services.json``: ``{"services": ["tcp:198.18.0.10:80", ...]}``.

    A missing file means nothing owned. A file that cannot be read or has entries that are not
    service keys is reported (``problem``, and a log line naming the file and the fault), set
    aside as ``owned-services.json.corrupt-<time>`` for the operator, and only the entries that
    can be read are taken as owned: the daemon never deletes a service it cannot prove it
    created. What the config wants is owned again from the next sync on, and the file is
    written anew then.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "owned-services.json"
        self._cache: frozenset[ServiceKey] | None = None
        self.problem: str | None = None

    def load(self) -> frozenset[ServiceKey]:
        if self._cache is None:
            try:
                loaded = load_json(self.path, _parse)
            except StateFileError as exc:
                self._bad(str(exc), frozenset())
            else:
                if loaded is None:
                    self._cache = frozenset()
                else:
                    keys, bad = loaded
                    if bad:
                        shown = ", ".join(repr(b) for b in bad[:3])
                        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
                        self._bad(
                            f"{self.path}: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} "
                            f"not service keys ({shown}{more})",
                            keys,
                        )
                    else:
                        self._cache = keys
        assert self._cache is not None
        return self._cache

    def _bad(self, problem: str, salvaged: frozenset[ServiceKey]) -> None:
        aside = set_aside(self.path)
        self.problem = (
            f"{problem}; owning only the {len(salvaged)} service(s) it names correctly and "
            "those in the config"
            + (f" (the file was kept as {aside.name})" if aside is not None else "")
        )
        log.error("state_file_corrupt", path=str(self.path), problem=self.problem)
        self._cache = salvaged
        self._dirty = True

    def save(self, keys: frozenset[ServiceKey]) -> None:
        if keys == self._cache and not self._dirty:
            # the caller's key objects (the config's) instead of those parsed from the file at
            # start: one copy of 10,000 keys, not two (~2.8 MB after a restart at 10,000)
            self._cache = keys
            return
        body = {"services": sorted(encode_key(k) for k in keys)}
        write_json(self.path, body)
        self._cache = keys
        self._dirty = False

    _dirty = False


def _parse(document: object) -> tuple[frozenset[ServiceKey], list[object]]:
    """The keys a document names and the entries that are not keys."""
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise ValueError('expected {"services": [KEY, ...]}, found ' + _short(document))
    keys: set[ServiceKey] = set()
    bad: list[object] = []
    for entry in document["services"]:
        try:
            if not isinstance(entry, str):
                raise ValueError(entry)
            keys.add(decode_key(entry))
        except (ValueError, KeyError, IndexError):
            bad.append(entry)
    return frozenset(keys), bad


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
