"""Which kernel services belong to the daemon, remembered across restarts.

The daemon deletes a service only when it owns it: it wants it now or wanted it in an earlier
run. The set is kept in a small JSON file in the state directory, replaced atomically.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol as TypingProtocol

from director.ipvs.model import Family, Protocol, ServiceKey


class OwnedStore(TypingProtocol):
    def load(self) -> frozenset[ServiceKey]: ...

    def save(self, keys: frozenset[ServiceKey]) -> None: ...


def encode_key(key: ServiceKey) -> str:
    if key.fwmark:
        return f"fwm:{key.family.label}:{key.fwmark}"
    assert key.protocol is not None and key.address is not None
    return f"{key.protocol.label}:{key.address}:{key.port}"


def decode_key(text: str) -> ServiceKey:
    kind, rest = text.split(":", 1)
    if kind == "fwm":
        family, mark = rest.split(":")
        return ServiceKey.mark(int(mark), Family.INET if family == "ipv4" else Family.INET6)
    address, port = rest.rsplit(":", 1)
    return ServiceKey.inet(Protocol[kind.upper()], ipaddress.ip_address(address), int(port))


class MemoryOwnedStore:
    def __init__(self, keys: frozenset[ServiceKey] = frozenset()) -> None:
        self.keys = keys

    def load(self) -> frozenset[ServiceKey]:
        return self.keys

    def save(self, keys: frozenset[ServiceKey]) -> None:
        self.keys = keys


class FileOwnedStore:
    """``<state_dir>/owned-services.json``; a missing or unreadable file means nothing owned."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "owned-services.json"
        self._cache: frozenset[ServiceKey] | None = None

    def load(self) -> frozenset[ServiceKey]:
        if self._cache is None:
            try:
                data = json.loads(self.path.read_text())
                self._cache = frozenset(decode_key(k) for k in data["services"])
            except (OSError, ValueError, KeyError, TypeError):
                self._cache = frozenset()
        return self._cache

    def save(self, keys: frozenset[ServiceKey]) -> None:
        if keys == self._cache:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"services": sorted(encode_key(k) for k in keys)}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".owned-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._cache = keys
