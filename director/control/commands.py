"""What the control API's commands do inside the daemon, and the status they report.

:func:`handlers` builds the table :class:`director.control.server.ControlServer` serves from two
collaborators of the application object: how to read the status, and how to ask for an intent.
:func:`status_view` is the one model of ``directorctl status`` (pure: everything comes in as an
argument).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from director.config.model import Config
from director.control.protocol import Handler, RequestError
from director.intents import (
    Drain,
    DrainDirector,
    Enable,
    EnableDirector,
    Intent,
    Reload,
    ReloadRejected,
)
from director.ipvs.stats import StatsSnapshot
from director.maintenance import Maintenance, MaintenanceError, dest_id

Summary = Callable[[], list[dict[str, object]]]


def status_view(
    config: Config,
    engine_status: dict[str, Any],
    stats: StatsSnapshot | None,
    checks: list[dict[str, object]],
    maintenance: Maintenance,
    role: str | None,
    vrrp: list[dict[str, object]],
    now: float,
) -> dict[str, object]:
    """Everything ``directorctl status`` shows: the config's services joined with the kernel's
    last reading, each real server's health and maintenance state, and the VRRP instances."""
    by_check = {(str(c.get("service")), str(c.get("destination"))): c for c in checks}
    overrides = maintenance.overrides(config)
    drains = maintenance.describe(config, now)
    removed_why = {i: why for d in maintenance.drains.values() for i, why in d.removed.items()}
    services: list[dict[str, object]] = []
    for vs in config.virtual_servers:
        key = vs.service_key()
        kernel = stats.dests.get(key, {}) if stats is not None else {}
        in_kernel = stats is not None and key in stats.services
        servers: list[dict[str, object]] = []
        listed = set()
        for rs in vs.real_servers:
            dkey = rs.dest_key(vs)
            listed.add(dkey)
            servers.append(
                _server(
                    str(dkey), rs.name, rs.fwd(vs).label, rs.weight, kernel.get(dkey),
                    by_check.get((str(key), str(dkey))), overrides.get((key, dkey)),
                    removed_why.get(dest_id(key, dkey)),
                )
            )  # fmt: skip
        for dkey, ds in kernel.items():  # e.g. the sorry server
            if dkey not in listed:
                sorry = vs.sorry_server is not None and vs.sorry_server.dest_key(vs) == dkey
                servers.append(
                    _server(str(dkey), "sorry" if sorry else None, ds.dest.fwd_method.label,
                            ds.dest.weight, ds, None, None, None)
                )  # fmt: skip
        services.append(
            {
                "name": vs.display_name,
                "key": str(key),
                "scheduler": vs.scheduler,
                "persistence_timeout": vs.persistence_timeout,
                "in_kernel": in_kernel,
                "servers": servers,
            }
        )
    return {
        **engine_status,
        "role": role,
        "vrrp": vrrp,
        "services": services,
        "drains": drains,
        "stats_at": stats.at if stats is not None else None,
    }


def _server(
    address: str,
    name: str | None,
    forwarding: str,
    config_weight: int,
    ds: Any,
    check: dict[str, object] | None,
    override: str | None,
    removed_why: str | None,
) -> dict[str, object]:
    if override == "remove":
        maintenance = f"removed ({removed_why or 'drained'})"
    elif override == "drain":
        maintenance = "draining"
    else:
        maintenance = None
    return {
        "address": address,
        "name": name,
        "forwarding": forwarding,
        "config_weight": config_weight,
        "in_kernel": ds is not None,
        "weight": ds.dest.weight if ds is not None else None,
        "active": ds.active if ds is not None else None,
        "inactive": ds.inactive if ds is not None else None,
        "persistent": ds.persistent if ds is not None else None,
        "health": None
        if check is None
        else {
            "up": check.get("up"),
            "type": check.get("type"),
            "latency_ms": check.get("last_latency_ms"),
            "last_error": check.get("last_error"),
        },
        "maintenance": maintenance,
    }


def _text(args: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise RequestError(f"{name}: expected a non-empty string, found {value!r}")
    return value


Ask = Callable[[Intent], Awaitable[object]]


def handlers(status: Callable[[], dict[str, object]], ask: Ask) -> dict[str, Handler]:
    """The control commands: ``status`` reads (it never waits behind a reload); the others are
    intents, applied one at a time by the application object, each awaited for its result."""

    async def do_status(args: dict[str, Any]) -> object:
        return status()

    async def drain(args: dict[str, Any]) -> object:
        server = _text(args, "server")
        service = _text(args, "service", required=False)
        timeout = args.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
        ):
            raise RequestError(f"timeout: expected a number of seconds, found {timeout!r}")
        assert server is not None
        try:
            return await ask(Drain(server, service, float(timeout) if timeout else None))
        except MaintenanceError as exc:
            raise RequestError(str(exc)) from exc

    async def enable(args: dict[str, Any]) -> object:
        server = _text(args, "server")
        service = _text(args, "service", required=False)
        assert server is not None
        try:
            return await ask(Enable(server, service))
        except MaintenanceError as exc:
            raise RequestError(str(exc)) from exc

    async def reload(args: dict[str, Any]) -> object:
        try:
            return await ask(Reload("control"))
        except ReloadRejected as exc:
            raise RequestError(
                f"the config was rejected; still running the previous one:\n{exc}"
            ) from exc

    async def drain_director(args: dict[str, Any]) -> object:  # [bgp]
        timeout = args.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise RequestError(f"timeout: expected a number of seconds, found {timeout!r}")
        return await ask(DrainDirector(float(timeout) if timeout is not None else None))

    async def enable_director(args: dict[str, Any]) -> object:
        return await ask(EnableDirector())

    return {
        "status": do_status,
        "drain": drain,
        "enable": enable,
        "reload": reload,
        "drain-director": drain_director,
        "enable-director": enable_director,
    }
