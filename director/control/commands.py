"""What the control API's commands do inside the daemon, and the status they report.

:func:`handlers` builds the table :class:`director.control.server.ControlServer` serves from two
collaborators of the application object: how to read the status, and how to ask for an intent.
The status itself is built by :func:`director.status.build_status`, the one model behind
``directorctl status`` and the HTTP status page.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any

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
from director.maintenance import MaintenanceError

Summary = Callable[[], list[dict[str, object]]]


def _text(args: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise RequestError(f"{name}: expected a non-empty string, found {value!r}")
    return value


Ask = Callable[[Intent], Awaitable[object]]


def handlers(
    status: Callable[[], dict[str, object] | Awaitable[object]], ask: Ask
) -> dict[str, Handler]:
    """The control commands: ``status`` reads (it never waits behind a reload; it may be a
    coroutine, e.g. one building the status in a worker thread); the others are intents,
    applied one at a time by the application object, each awaited for its result."""

    async def do_status(args: dict[str, Any]) -> object:
        result = status()
        return await result if inspect.isawaitable(result) else result

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
