"""The control API: JSON lines over a Unix socket, for ``directorctl``.

One request per connection: the client sends ``{"command": NAME, ...arguments}`` and a newline,
the daemon answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}`` and closes.
The socket is created mode 0600 in a root-owned directory, and the daemon also checks the
caller's uid with ``SO_PEERCRED``: only root (and the daemon's own uid) may talk to it.

The server knows nothing about the daemon: the composition root hands it a table of handlers.
The client is synchronous (``directorctl`` is a short-lived command) and turns every way of not
reaching the daemon into a :class:`ControlError` that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("director")

Handler = Callable[[dict[str, Any]], Awaitable[object]]
MAX_REQUEST = 64 * 1024
_UCRED = struct.Struct("=iII")  # pid, uid, gid


class ControlError(Exception):
    """The request could not be made or the daemon refused it; the message is for people."""


class RequestError(Exception):
    """Raised by a handler: bad arguments or a refused action (reported, nothing changed)."""


def peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


class ControlServer:
    """Serves ``handlers`` on ``path`` until :meth:`stop`."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        allowed_uids: frozenset[int] | None = None,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.allowed_uids = allowed_uids or frozenset({0, os.geteuid()})
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._remove_stale()
        old = os.umask(0o177)  # the socket is born 0600: no window with wider access
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.info("control_listening", path=str(self.path))

    def _remove_stale(self) -> None:
        """Remove a socket left by a daemon that died; refuse when one is still answering."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path} exists and is not a socket; remove it or pick another")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink(missing_ok=True)
                return
        raise ControlError(f"another directord is listening on {self.path}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._answer(reader, writer)
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, object]:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else -1
        if uid not in self.allowed_uids:
            log.warning("control_refused", uid=uid)
            return {"ok": False, "error": f"permission denied: uid {uid} may not control directord"}
        try:
            line = await reader.readline()
        except ValueError:
            return {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "the request is not one line of JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'expected {"command": NAME, ...}'}
        name = request.pop("command")
        handler = self.handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {name!r} (known: {known})"}
        try:
            result = await handler(request)
        except RequestError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not kill the daemon; the caller gets told
            log.exception("control_command_failed", command=name)
            return {"ok": False, "error": f"{name} failed inside directord: {exc!r}"}
        log.info("control_command", command=name, uid=uid)
        return {"ok": True, "result": result}


def request(
    path: Path, command: str, arguments: dict[str, object] | None = None, *, wait: float = 120.0
) -> Any:
    """Send one command and return its result; :class:`ControlError` with advice otherwise.
    ``wait`` bounds the whole exchange (seconds); ``arguments`` go to the command."""
    body = json.dumps({**(arguments or {}), "command": command}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"directord is not running (no one answers on {path}: {exc.strerror}); "
                "start it with: systemctl start directord"
            ) from exc
        except PermissionError as exc:
            raise ControlError(
                f"permission denied on {path}: the control socket is for root only "
                "(run directorctl as root, e.g. with sudo)"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise ControlError(f"{path}: not a socket path ({exc.strerror})") from exc
            raise ControlError(f"cannot connect to directord at {path}: {exc}") from exc
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(body)  # a refusal may arrive (and the socket close) first
            with sock.makefile("rb") as f:
                line = f.readline()
        except TimeoutError as exc:
            raise ControlError(f"directord did not answer {command!r} within {wait:g} s") from exc
        except OSError as exc:
            raise ControlError(f"lost the connection to directord: {exc}") from exc
    if not line:
        raise ControlError("directord closed the connection without an answer")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")))
    return reply.get("result")
