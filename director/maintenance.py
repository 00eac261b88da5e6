"""Maintenance overrides: ``directorctl drain`` / ``enable``. Pure, apart from the JSON file.

A drain names a real server by its ``name``, its address or address:port, optionally within one
virtual service (its name or ``TCP 198.18.0.10:80`` form). While the drain stands, every real
server it matches has weight 0: existing connections continue, new ones go elsewhere. A drain
with a timeout goes further: each matched destination is removed from the table once it is idle
(no active connection; for UDP and fwmark services no connection at all) or when the timeout
passes, whichever comes first. Only ``enable`` lifts a drain.

Drains are kept in ``maintenance.json`` in the state directory and matched against the config at
every compile, so they survive a reload (even one that renames or moves services) and a restart.
Times are wall-clock seconds (``time.time()``), because a deadline must mean the same after a
restart; they come in as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import structlog

from director.config.model import Config, RealServer, VirtualServer
from director.ipvs.model import DestKey, Protocol, ServiceKey
from director.ipvs.stats import StatsSnapshot
from director.statefile import StateFileError, load_json, set_aside, write_json

log = structlog.get_logger("director")

Override = Literal["drain", "remove"]
Overrides = dict[tuple[ServiceKey, DestKey], Override]


class MaintenanceError(Exception):
    """A drain or enable that cannot be done; the message says why and changes nothing."""


@dataclass(frozen=True)
class Drain:
    """A drain in force."""

    server: str
    service: str | None = None
    since: float = 0.0
    deadline: float | None = None
    # "SERVICE|DEST" -> why it left the table ("idle" or "timeout").
    removed: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str | None]:
        return self.server, self.service

    def describe(self) -> str:
        where = f" in {self.service}" if self.service else ""
        return f"{self.server}{where}"

    def to_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "service": self.service,
            "since": self.since,
            "deadline": self.deadline,
            "removed": dict(self.removed),
        }

    @classmethod
    def from_json(cls, data: object) -> Drain:
        """A drain as :meth:`to_json` wrote it; ValueError naming the fault otherwise."""
        if not isinstance(data, dict) or not isinstance(data.get("server"), str):
            raise ValueError(f"not a drain (no server name): {_short(data)}")
        service, deadline = data.get("service"), data.get("deadline")
        since, removed = data.get("since") or 0.0, data.get("removed") or {}
        if service is not None and not isinstance(service, str):
            raise ValueError(f"drain of {data['server']!r}: service is not text: {_short(service)}")
        for name, value in (("since", since), ("deadline", deadline)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"drain of {data['server']!r}: {name} is not a time: {value!r}")
        if not isinstance(removed, dict):
            raise ValueError(f"drain of {data['server']!r}: removed is not a mapping")
        return cls(
            server=data["server"],
            service=service,
            since=float(since),
            deadline=float(deadline) if deadline is not None else None,
            removed={str(k): str(v) for k, v in removed.items()},
        )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_drains(document: object) -> tuple[list[Drain], list[str]]:
    """The drains a document holds, and what is wrong with the entries that are not drains."""
    if not isinstance(document, dict) or not isinstance(document.get("drains", []), list):
        raise ValueError('expected {"drains": [...]}, found ' + _short(document))
    drains: list[Drain] = []
    bad: list[str] = []
    for entry in document.get("drains", []):
        try:
            drains.append(Drain.from_json(entry))
        except ValueError as exc:
            bad.append(str(exc))
    return drains, bad


def dest_id(service: ServiceKey, dest: DestKey) -> str:
    return f"{service}|{dest}"


def server_matches(selector: str, vs: VirtualServer, rs: RealServer) -> bool:
    return selector in (rs.name, str(rs.address), str(rs.dest_key(vs)))


def service_matches(selector: str | None, vs: VirtualServer) -> bool:
    return selector is None or selector in (vs.name, vs.display_name, str(vs.service_key()))


def matches(
    config: Config, server: str, service: str | None
) -> Iterator[tuple[VirtualServer, RealServer]]:
    for vs in config.virtual_servers:
        if service_matches(service, vs):
            for rs in vs.real_servers:
                if server_matches(server, vs, rs):
                    yield vs, rs


def _idle(service: ServiceKey, active: int, inactive: int) -> bool:
    if service.protocol in (Protocol.TCP, Protocol.SCTP):
        return active == 0
    return active + inactive == 0  # UDP counts every connection inactive; fwmark: unknown


class Maintenance:
    """The standing drains, optionally persisted to ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.drains: dict[tuple[str, str | None], Drain] = {}
        self.problem: str | None = None  # what was wrong with the file at load

    def load(self) -> Maintenance:
        """Read the file; a missing file is no drains. Never raises: a file that cannot be read
        is reported in ``problem`` and set aside (``maintenance.json.corrupt-<time>``), and the
        drains that can be read stand; the others are lost, and ``problem`` says so (status,
        ``directorctl doctor``). Running with fewer drains beats not running at all."""
        if self.path is None:
            return self
        try:
            loaded = load_json(self.path, _parse_drains)
        except StateFileError as exc:
            self._bad(str(exc), [])
            return self
        if loaded is None:
            return self
        drains, bad = loaded
        if bad:
            self._bad(f"{self.path}: {len(bad)} drain(s) cannot be read ({bad[0]})", drains)
        else:
            self.drains = {d.key: d for d in drains}
        return self

    def _bad(self, problem: str, salvaged: list[Drain]) -> None:
        assert self.path is not None
        aside = set_aside(self.path)
        kept = ", ".join(d.describe() for d in salvaged) or "none"
        self.problem = (
            f"{problem}; drains kept: {kept}; re-issue the others with directorctl drain"
            + (f" (the file was kept as {aside.name})" if aside is not None else "")
        )
        log.error("state_file_corrupt", path=str(self.path), problem=self.problem)
        self.drains = {d.key: d for d in salvaged}
        try:
            self.save()
        except OSError as exc:
            log.error("state_file_write_failed", path=str(self.path), error=str(exc))

    def save(self) -> None:
        if self.path is None:
            return
        write_json(self.path, {"drains": [d.to_json() for d in self.drains.values()]})

    # -- operator commands ------------------------------------------------------------------

    def drain(
        self,
        config: Config,
        server: str,
        service: str | None,
        timeout: float | None,
        now: float,
    ) -> Drain:
        """Start (or restart, with a new timeout) a drain. Nothing changes when it is refused."""
        if timeout is not None and not timeout > 0:
            raise MaintenanceError(f"the timeout must be a number of seconds > 0, not {timeout}")
        if not any(True for _ in matches(config, server, service)):
            where = f" in virtual server {service!r}" if service else ""
            known = sorted(
                {
                    rs.name or str(rs.address)
                    for vs in config.virtual_servers
                    for rs in vs.real_servers
                }
            )
            hint = f"; real servers: {', '.join(known)}" if known else "; the config has none"
            raise MaintenanceError(f"no real server matches {server!r}{where}{hint}")
        drain = Drain(server, service, now, None if timeout is None else now + timeout)
        self.drains[drain.key] = drain
        return drain

    def enable(self, server: str, service: str | None) -> list[Drain]:
        """Lift the drains of ``server`` (in ``service``, or all of its drains when None)."""
        lifted = [
            d
            for d in self.drains.values()
            if d.server == server and (service is None or d.service == service)
        ]
        if not lifted:
            standing = ", ".join(d.describe() for d in self.drains.values()) or "none"
            raise MaintenanceError(f"{server!r} is not drained (drains: {standing})")
        for d in lifted:
            del self.drains[d.key]
        return lifted

    # -- what the compiler and the engine need ----------------------------------------------

    def overrides(self, config: Config) -> Overrides:
        out: Overrides = {}
        for drain in self.drains.values():
            for vs, rs in matches(config, drain.server, drain.service):
                skey, dkey = vs.service_key(), rs.dest_key(vs)
                gone = dest_id(skey, dkey) in drain.removed
                if gone or out.get((skey, dkey)) != "remove":
                    out[(skey, dkey)] = "remove" if gone else "drain"
        return out

    def settle(self, config: Config, snapshot: StatsSnapshot, now: float) -> list[str]:
        """Mark the timed drains' destinations that are idle (or past the deadline) removed.

        Only a reading taken after the drain began, showing weight 0 already in the kernel,
        can prove a destination idle. Returns what was removed, for the log.
        """
        done: list[str] = []
        for key, drain in list(self.drains.items()):
            if drain.deadline is None:
                continue
            removed = dict(drain.removed)
            for vs, rs in matches(config, drain.server, drain.service):
                skey, dkey = vs.service_key(), rs.dest_key(vs)
                ident = dest_id(skey, dkey)
                if ident in removed:
                    continue
                if now >= drain.deadline:
                    removed[ident] = "timeout"
                    continue
                ds = snapshot.dest(skey, dkey)
                if (
                    ds is not None
                    and snapshot.at >= drain.since
                    and ds.dest.weight == 0
                    and _idle(skey, ds.active, ds.inactive)
                ):
                    removed[ident] = "idle"
            if removed != drain.removed:
                done += [f"{i} ({removed[i]})" for i in removed if i not in drain.removed]
                self.drains[key] = replace(drain, removed=removed)
        return done

    def describe(self, config: Config, now: float) -> list[dict[str, object]]:
        """Every drain with what it matches, for ``directorctl status``."""
        out: list[dict[str, object]] = []
        for d in self.drains.values():
            targets = [
                dest_id(vs.service_key(), rs.dest_key(vs))
                for vs, rs in matches(config, d.server, d.service)
            ]
            out.append(
                {
                    **d.to_json(),
                    "remaining": None if d.deadline is None else max(0.0, d.deadline - now),
                    "matches": targets,
                }
            )
        return out
