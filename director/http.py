"""The daemon's HTTP listener (``[daemon] metrics_address``): ``GET /metrics`` for Prometheus,
and the read-only status page: ``GET /`` (HTML) and ``GET /status.json`` (its data).

aiohttp on the daemon's event loop; the values are taken on the loop and the (slow, pure)
rendering - metrics text, the status model, JSON, HTML - runs in a worker thread, so a scrape or
a page never stalls VRRP or the checks. Only GET (and HEAD) is served: any other method is 405.
The listening socket is the daemon's own (:class:`director.listener.Listener`): at most
``max_connections`` clients at once, idle ones closed, so a local process cannot take the
daemon's descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from director.config.model import listen_address
from director.listener import Listener
from director.metrics import Metrics
from director.offload import forked, forked_bytes
from director.status import StatusInputs, build_status, encode_status
from director.status_page import CSP, render_page

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

StatusSource = Callable[[], StatusInputs]

log = structlog.get_logger("director")


MAX_CONNECTIONS = 16
STATUS_MAX_AGE = 1.0  # seconds a rendered status is served again (the page polls every 2 s)
IDLE = 10.0  # seconds a connection may stay open without a request in progress


class _Connection:
    """One accepted HTTP connection handed to aiohttp; busy while a request is handled."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.transport: asyncio.BaseTransport | None = None
        self.task: asyncio.Task[None] | None = None
        self.in_flight = 0

    def busy(self) -> bool:
        return self.in_flight > 0

    def closed(self) -> bool:
        if self.transport is not None:
            return self.transport.is_closing()
        return self.task is not None and self.task.done()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        else:
            if self.task is not None:
                self.task.cancel()
            self.sock.close()


class _Tracked(asyncio.Protocol):
    """aiohttp's request handler, wrapped so the listener hears at once when a connection
    ends (a slot comes free without waiting for the next sweep)."""

    def __init__(self, inner: asyncio.Protocol, lost: Callable[[], None]) -> None:
        self.inner = inner
        self.lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self.lost()


class MetricsServer:
    """``GET /metrics`` on ``address`` ("HOST:PORT"), on the daemon's event loop, with at most
    ``max_connections`` clients at once and idle ones closed (:class:`Listener`); with
    ``status`` (how to take the status' inputs on the loop), the status page too."""

    def __init__(
        self,
        metrics: Metrics,
        address: str,
        *,
        status: StatusSource | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle: float = IDLE,
    ) -> None:
        self.metrics = metrics
        self.status = status
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._rendering: dict[str, asyncio.Task[bytes]] = {}
        self._taken: tuple[float, StatusInputs] | None = None
        self.host, self.port = listen_address(address)
        self.max_connections = max_connections
        self.idle = idle
        self.listener: Listener | None = None
        self._runner: web.AppRunner | None = None
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # Values are taken on the loop; the (slow, pure) text rendering runs in a thread, and
        # is sent a chunk at a time as it is made (chunked transfer encoding).
        sources = self.metrics.frozen_sources()
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        if request.method == "HEAD":
            body = await forked_bytes(functools.partial(self.metrics.render, sources))
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        chunks = forked(functools.partial(self.metrics.chunks, sources))
        async with contextlib.aclosing(chunks) as stream:  # a reset ends it now
            async for chunk in stream:
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _rendered(self, kind: str, render: Callable[[StatusInputs], bytes]) -> bytes:
        """The body of ``/status.json`` or ``/``: taken on the loop (cheap), rendered in a worker
        thread; one rendering at a time per kind, shared by every request that arrives while it
        runs or within ``STATUS_MAX_AGE`` after, so any number of open pages cost one
        rendering a second."""
        assert self.status is not None
        loop = asyncio.get_running_loop()
        cached = self._cache.get(kind)
        if cached is not None and loop.time() - cached[0] < STATUS_MAX_AGE:
            return cached[1]
        running = self._rendering.get(kind)
        if running is None:
            inputs = self._inputs(loop.time())

            async def render_now() -> bytes:
                try:
                    body = await forked_bytes(functools.partial(render, inputs))
                    self._cache[kind] = (loop.time(), body)
                    return body
                finally:
                    del self._rendering[kind]

            running = self._rendering[kind] = loop.create_task(render_now())
            # A waiting request gets a failure as a 500 (logged by aiohttp); retrieved here too,
            # so asyncio does not warn when every waiting request went away.
            running.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(running)

    def _inputs(self, now: float) -> StatusInputs:
        """The status' inputs, taken on the loop (snapshots and small copies), shared by the
        JSON and the page for ``STATUS_MAX_AGE``."""
        assert self.status is not None
        if self._taken is None or now - self._taken[0] >= STATUS_MAX_AGE:
            self._taken = (now, self.status())
        return self._taken[1]

    async def _status_json(self, request: web.Request) -> web.Response:
        body = await self._rendered("json", status_json)
        return web.Response(body=body, headers={**NO_STORE, "Content-Type": "application/json"})

    async def _page(self, request: web.Request) -> web.Response:
        body = await self._rendered("html", status_html)
        headers = {
            **NO_STORE,
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": CSP,
            "X-Frame-Options": "DENY",
        }
        return web.Response(body=body, headers=headers)

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self._by_transport.get(request.transport) if request.transport else None
        if conn is None:
            return await handler(request)
        conn.in_flight += 1
        try:
            return await handler(request)
        finally:
            conn.in_flight -= 1
            if self.listener is not None:
                self.listener.touched(conn)

    what = "metrics"  # the listening event: metrics_listening
    label = "http"  # the listener's name in its own log lines

    def routes(self, app: web.Application) -> None:
        """What is served; a subclass serves other paths on the same capped listener."""
        app.router.add_get("/metrics", self._handle)
        if self.status is not None:
            app.router.add_get("/", self._page)
            app.router.add_get("/status.json", self._status_json)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._track])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.idle)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except BaseException:
            sock.close()
            await self._runner.cleanup()
            self._runner = None
            raise
        self.listener = Listener(
            self.label, sock, self._accepted, limit=self.max_connections, idle=self.idle
        )
        self.listener.start()
        log.info(
            f"{self.what}_listening",
            address=f"{self.host}:{self.bound_port}",
            max_connections=self.max_connections,
        )

    def _accepted(self, sock: socket.socket) -> _Connection:
        assert self._runner is not None
        for transport in [t for t in self._by_transport if t.is_closing()]:
            del self._by_transport[transport]  # never more than the listener's limit left
        conn = _Connection(sock)
        conn.task = asyncio.get_running_loop().create_task(self._connect(conn))
        return conn

    async def _connect(self, conn: _Connection) -> None:
        assert self._runner is not None and self._runner.server is not None
        loop = asyncio.get_running_loop()
        server = self._runner.server

        def protocol() -> _Tracked:
            return _Tracked(server(), self._lost)

        try:
            transport, _ = await loop.connect_accepted_socket(protocol, conn.sock)
        except OSError:
            conn.sock.close()
            return
        conn.transport = transport
        self._by_transport[transport] = conn

    def _lost(self) -> None:
        if self.listener is not None:
            self.listener.wake()

    @property
    def bound_port(self) -> int:
        """The port actually bound (differs from the configured one when that was 0)."""
        if self.listener is None:
            return self.port
        return int(self.listener.sock.getsockname()[1])

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self._by_transport.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _yield() -> None:
    time.sleep(0)  # releases the GIL: the event loop's thread takes it now if it waits


def status_json(inputs: StatusInputs) -> bytes:
    """``/status.json``: the status model as JSON (worker thread), a service at a time."""
    return encode_status(inputs, _yield, services_last=True).encode()


def status_html(inputs: StatusInputs) -> bytes:
    """``/``: the status page (worker thread); the model is freed a service at a time."""
    st = build_status(inputs, _yield)
    page = render_page(st, _yield)
    services = st.get("services")
    while isinstance(services, list) and services:
        services.pop()
        _yield()
    return page
