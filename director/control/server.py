"""The control server: the daemon's end of the control socket.

The socket is created mode 0600 in a root-owned directory, and the daemon also checks the
caller's uid with ``SO_PEERCRED``: only root (and the daemon's own uid) may talk to it. At most
``max_connections`` clients are served at once and a client has ``idle`` seconds to send its
request (:class:`director.listener.Listener`), so a local process cannot hold the daemon's file
descriptors. The server knows nothing about the daemon: the composition root hands it a table of
handlers, and each handler is what the application object does with the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

import structlog

from director.control.protocol import (
    MAX_REQUEST,
    OK_HEAD,
    OK_TAIL,
    ControlError,
    Handler,
    RequestError,
    Streamed,
    decode_request,
    ok,
    refused,
)
from director.listener import Listener

log = structlog.get_logger("director")

_UCRED = struct.Struct("=iII")  # pid, uid, gid
MAX_CONNECTIONS = 8
IDLE = 5.0  # seconds a client has to send its request line


def peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


class _Client:
    """One connection: its task, and whether a command is running (then it is not idle)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.handling = False

    def busy(self) -> bool:
        return self.handling

    def closed(self) -> bool:
        return self.task is not None and self.task.done()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class ControlServer:
    """Serves ``handlers`` on ``path`` until :meth:`stop`."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        allowed_uids: frozenset[int] | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle: float = IDLE,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.allowed_uids = allowed_uids or frozenset({0, os.geteuid()})
        self.max_connections = max_connections
        self.idle = idle
        self.listener: Listener | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)  # the socket is born 0600: no window with wider access
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
        self.listener = Listener(
            "control", sock, self._accepted, limit=self.max_connections, idle=self.idle
        )
        self.listener.start()
        log.info("control_listening", path=str(self.path), max_connections=self.max_connections)

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
        if self.listener is not None:
            listener, self.listener = self.listener, None
            listener.close()  # cancels every client; each closes its socket as it ends
            await asyncio.gather(*self._clients, return_exceptions=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # -- one client -----------------------------------------------------------------------------

    def _accepted(self, sock: socket.socket) -> _Client:
        client = _Client()
        client.task = asyncio.get_running_loop().create_task(self._serve(sock, client))
        self._clients.add(client.task)
        client.task.add_done_callback(self._clients.discard)
        return client

    async def _serve(self, sock: socket.socket, client: _Client) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_REQUEST)
            reply = await self._answer(sock, reader, client)
            client.handling = True  # a slow reader of a big status gets the idle time again
            if isinstance(reply, Streamed):
                await self._send_streamed(writer, reply)
            else:
                writer.write(reply)
                async with asyncio.timeout(self.idle):
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            client.handling = False
            if writer is not None:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            else:
                sock.close()
            if self.listener is not None:
                self.listener.wake()

    async def _send_streamed(self, writer: asyncio.StreamWriter, reply: Streamed) -> None:
        """Each chunk written as it comes, the reader's pace holding the next one back; the
        idle time applies to each (see :class:`Streamed`)."""
        writer.write(OK_HEAD)
        try:
            async with contextlib.aclosing(reply.chunks()) as chunks:
                async for chunk in chunks:
                    writer.write(chunk)
                    async with asyncio.timeout(self.idle):
                        await writer.drain()
        except (ConnectionError, TimeoutError):
            raise
        except Exception:  # a bug or a failed rendering: the client gets an incomplete line
            log.exception("control_reply_failed")
            return
        writer.write(OK_TAIL)
        async with asyncio.timeout(self.idle):
            await writer.drain()

    async def _answer(
        self, sock: socket.socket, reader: asyncio.StreamReader, client: _Client
    ) -> bytes | Streamed:
        uid = peer_uid(sock)
        if uid not in self.allowed_uids:
            log.warning("control_refused", uid=uid)
            return refused(f"permission denied: uid {uid} may not control directord")
        try:
            line = await reader.readline()
        except ValueError:
            return refused(f"request longer than {MAX_REQUEST} bytes")
        try:
            name, arguments = decode_request(line)
        except RequestError as exc:
            return refused(str(exc))
        handler = self.handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return refused(f"unknown command {name!r} (known: {known})")
        client.handling = True
        try:
            result = await handler(arguments)
        except RequestError as exc:
            return refused(str(exc))
        except Exception as exc:  # a bug must not kill the daemon; the caller gets told
            log.exception("control_command_failed", command=name)
            return refused(f"{name} failed inside directord: {exc!r}")
        log.info("control_command", command=name, uid=uid)
        return result if isinstance(result, Streamed) else ok(result)
