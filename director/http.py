"""The daemon's HTTP listener (``[daemon] metrics_address``): ``GET /metrics`` for Prometheus,
and the read-only status page: ``GET /`` (HTML) and ``GET /status.json`` (its data).

A small HTTP/1.1 server of its own on the daemon's event loop (:class:`HttpServer`): it serves a
few fixed paths to a handful of local clients, and importing a web framework for that took a
sixth of the daemon's start in an emulated guest (``bench/startup.py``). The values are taken
on the loop and the (slow, pure) rendering - metrics text, the status model, JSON, HTML - runs
in a worker thread, so a scrape or a page never stalls VRRP or the checks.

It is exposed to the network, so it is strict and bounded:

- the listening socket is the daemon's own (:class:`director.listener.Listener`): at most
  ``max_connections`` clients at once, idle ones closed (no request in progress for ``idle``
  seconds, a request sent a byte at a time included), so a local process cannot take the
  daemon's descriptors;
- a request's line and headers are at most :data:`MAX_HEAD` bytes and :data:`MAX_HEADERS`
  fields, its body at most ``max_body`` bytes (given by ``Content-Length``; no chunked bodies):
  more is refused (431, 413, 501) and the connection closed; a malformed request is a 400 and
  the connection is closed;
- only the routes' methods are served (GET routes answer HEAD too): another method is 405 with
  ``Allow``, another path 404; requests on one connection are answered one at a time, in order
  (keep-alive as HTTP/1.1 and 1.0 ask; ``Connection: close`` honoured); the next one is read
  only once the client has taken the answer (the transport's write buffer drained below its
  high-water mark), so a client that pipelines requests and reads nothing holds one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import structlog

from director.config.model import listen_address
from director.listener import Listener
from director.metrics import Metrics
from director.offload import forked, forked_bytes
from director.status import StatusInputs, build_status, encode_status

StatusSource = Callable[[], StatusInputs]

log = structlog.get_logger("director")


MAX_CONNECTIONS = 16
STATUS_MAX_AGE = 1.0  # seconds a rendered status is served again (the page polls every 2 s)
IDLE = 10.0  # seconds a connection may stay open without a request in progress
MAX_HEAD = 16384  # bytes of a request line and its headers
MAX_HEADERS = 64  # header fields of one request
MAX_BODY = 0  # bytes of a request body the metrics server takes (its routes are GET only)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[\x21-\x7e]*) HTTP/1\.([01])")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class Headers(Mapping[str, str]):
    """A request's header fields, looked up case-insensitively (the first of repeated ones)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields: dict[str, str] = {}
        for name, value in fields:
            self._fields.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields


@dataclass(frozen=True)
class Request:
    """An HTTP request as the handlers see it."""

    method: str
    path: str  # without the query string
    headers: Headers
    body: bytes = b""
    remote: str | None = None

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class Response:
    """What a handler answers."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    # a body sent as it is made, instead of ``body``: chunked to an HTTP/1.1 client, to the
    # connection's close to an HTTP/1.0 one (a GET's; a HEAD is answered with ``body``)
    chunks: Callable[[], AsyncGenerator[bytes, None]] | None = None

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


Handler = Callable[[Request], Awaitable[Response]]
Routes = dict[str, dict[str, Handler]]  # path -> method -> handler


class _Refused(Exception):
    """A request the server answers itself, then closes the connection."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class _Head:
    """A request's line and headers, as read."""

    method: str
    path: str
    keep_alive: bool
    headers: Headers
    length: int  # of the body that follows
    http11: bool = True  # HTTP/1.1 (else 1.0: no chunked answers)


def parse_head(head: bytes, max_body: int) -> _Head:
    """A request's line and header fields (without the blank line); :class:`_Refused` if it is
    malformed or asks for more than this server takes."""
    lines = head.split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        version = re.fullmatch(rb"\S+ \S+ (HTTP/\d\.\d)", lines[0])
        if version is not None and version[1] not in (b"HTTP/1.0", b"HTTP/1.1"):
            raise _Refused(505, "HTTP/1.0 and HTTP/1.1 only")
        raise _Refused(400, "malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise _Refused(431, f"more than {MAX_HEADERS} header fields")
    fields: list[tuple[str, str]] = []
    for raw in lines[1:]:
        name, colon, value = raw.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:  # obs-fold and spaces before ":" too
            raise _Refused(400, "malformed header field")
        value = value.strip(b" \t")
        if _VALUE.fullmatch(value) is None:
            raise _Refused(400, "malformed header field")
        fields.append((name.decode("ascii"), value.decode("latin-1")))
    headers = Headers(fields)
    if any(name.lower() == "transfer-encoding" for name, _ in fields):
        raise _Refused(501, "no chunked or encoded request bodies")
    lengths = {value for name, value in fields if name.lower() == "content-length"}
    if len(lengths) > 1 or not all(v.isdigit() and v.isascii() for v in lengths):
        raise _Refused(400, "malformed Content-Length")
    length = int(lengths.pop()) if lengths else 0
    if length > max_body:
        raise _Refused(413, "request too large")
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    keep_alive = "close" not in tokens if line[3] == b"1" else "keep-alive" in tokens
    target = line[2].decode("ascii")
    path = target.partition("?")[0]
    return _Head(line[1].decode("ascii"), path, keep_alive, headers, length, line[3] == b"1")


def encode_response(
    response: Response, *, head_only: bool, close: bool, chunked: bool = False
) -> bytes:
    """The answer's head and body; with ``chunked``, its head only, for a body sent as
    :meth:`Response.chunks` makes it (``Transfer-Encoding: chunked``; without ``close`` too, the
    body ends at the connection's close)."""
    reason = REASONS.get(response.status, "")
    out = [f"HTTP/1.1 {response.status} {reason}"]
    out += [f"{name}: {value}" for name, value in response.headers.items()]
    if chunked:
        out.append("Transfer-Encoding: chunked")
    elif response.chunks is None or head_only:
        out.append(f"Content-Length: {len(response.body)}")
    if close:
        out.append("Connection: close")
    head = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return head if head_only or response.chunks is not None else head + response.body


class _HttpConnection(asyncio.Protocol):
    """One accepted connection: requests read, answered by the server's routes one at a time.
    Busy (for the listener's idle timer) while a request is being answered."""

    def __init__(self, server: HttpServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None  # connecting, then answering a request
        self._buffer = bytearray()
        self._answering = False
        self._done = False  # no more requests on this connection
        self._eof = False  # the client sent all it will
        self._writing_paused = False  # the client is not reading our answers fast enough
        self._drained: asyncio.Future[None] | None = None  # a streamed answer waits for it
        self._remote: str | None = None

    # -- the listener's view --------------------------------------------------------------------

    def busy(self) -> bool:
        return self._answering

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

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) and peer else None

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        if not self._answering:
            self._next()

    def eof_received(self) -> bool | None:
        self._eof = True
        return self._answering  # half-closed: the request in progress is still answered

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self._answering and not self._done and self.transport is not None:
            self.transport.resume_reading()
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.server._lost()

    # -- requests -------------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the next whole request in the buffer, if there is one."""
        assert self.transport is not None
        end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self._refuse(_Refused(431, "request head too large"))
            return
        try:
            head = parse_head(bytes(self._buffer[:end]), self.server.max_body)
        except _Refused as refused:
            self._refuse(refused)
            return
        if len(self._buffer) < end + 4 + head.length:
            return  # the body is still coming
        body = bytes(self._buffer[end + 4 : end + 4 + head.length])
        del self._buffer[: end + 4 + head.length]
        self._answering = True
        self.transport.pause_reading()
        request = Request(head.method, head.path, head.headers, body, self._remote)
        answer = self._answer(request, head.keep_alive, head.http11)
        self.task = asyncio.get_running_loop().create_task(answer)

    async def _answer(self, request: Request, keep_alive: bool, http11: bool = True) -> None:
        assert self.transport is not None
        methods = self.server.router.get(request.path)
        handler = None
        if methods is not None:
            handler = methods.get(request.method)
            if handler is None and request.method == "HEAD":
                handler = methods.get("GET")
        if methods is None:
            response = Response.text(404, "not found")
        elif handler is None:
            allow = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            response = Response(405, b"method not allowed", {"Allow": allow})
        else:
            try:
                response = await handler(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("http_request_failed", path=request.path, listener=self.server.label)
                response = Response.text(500, "internal error")
        close = not keep_alive or self._done or self._eof
        head_only = request.method == "HEAD"
        streamed = response.chunks is not None and not head_only
        if streamed and not http11:
            close = True  # an HTTP/1.0 client: the body ends at the close
        try:
            data = encode_response(
                response, head_only=head_only, close=close, chunked=streamed and http11
            )
        except (UnicodeEncodeError, ValueError):  # a header a handler got wrong: still answered
            log.exception("http_response_invalid", path=request.path, listener=self.server.label)
            close = True
            data = encode_response(
                Response.text(500, "internal error"), head_only=False, close=True
            )
        if not self.transport.is_closing():
            self.transport.write(data)
            if streamed and not await self._stream(response, request, chunked=http11):
                close = True  # cut short: the client sees an unfinished body, not a whole one
                self.transport.abort()
        self._answering = False
        self.server._touched(self)
        if close:
            self._done = True
            self.transport.close()
            return
        if self._writing_paused:  # no next request until the client took this answer
            return
        self.transport.resume_reading()
        if self._buffer:
            self._next()

    async def _stream(self, response: Response, request: Request, *, chunked: bool) -> bool:
        """Send :attr:`Response.chunks` as they are made, each once the client took the ones
        before (the transport's buffer below its high-water mark); False if the body could not
        be sent whole: its maker failed, or the client took nothing for ``idle`` seconds (a
        client that stops reading holds no rendering)."""
        assert self.transport is not None and response.chunks is not None
        loop = asyncio.get_running_loop()
        try:
            async with contextlib.aclosing(response.chunks()) as chunks:
                async for chunk in chunks:
                    if self.transport.is_closing():
                        return False
                    if not chunk:
                        continue
                    if chunked:
                        self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                    else:
                        self.transport.write(chunk)
                    while self._writing_paused and not self.transport.is_closing():
                        self._drained = loop.create_future()
                        try:
                            async with asyncio.timeout(self.server.idle):
                                await self._drained
                        except TimeoutError:
                            log.warning("http_client_stalled", path=request.path)
                            return False
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("http_stream_failed", path=request.path, listener=self.server.label)
            return False
        if chunked and not self.transport.is_closing():
            self.transport.write(b"0\r\n\r\n")
        return not self.transport.is_closing()

    def _refuse(self, refused: _Refused) -> None:
        assert self.transport is not None
        self._done = True
        self._buffer.clear()
        response = Response.text(refused.status, refused.text)
        self.transport.write(encode_response(response, head_only=False, close=True))
        self.transport.close()


class HttpServer:
    """Serves :meth:`routes` on ``address`` ("HOST:PORT"), on the daemon's event loop, with at
    most ``max_connections`` clients at once and idle ones closed (:class:`Listener`)."""

    what = "http"  # the listening event: <what>_listening
    label = "http"  # the listener's name in its own log lines
    max_body = MAX_BODY

    def __init__(
        self, address: str, *, max_connections: int = MAX_CONNECTIONS, idle: float = IDLE
    ) -> None:
        self.host, self.port = listen_address(address)
        self.max_connections = max_connections
        self.idle = idle
        self.listener: Listener | None = None
        self.router: Routes = {}

    def routes(self) -> Routes:
        """What is served: path -> method -> handler."""
        return {}

    async def start(self) -> None:
        self.router = self.routes()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except BaseException:
            sock.close()
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

    def _accepted(self, sock: socket.socket) -> _HttpConnection:
        conn = _HttpConnection(self, sock)
        conn.task = asyncio.get_running_loop().create_task(self._connect(conn))
        return conn

    async def _connect(self, conn: _HttpConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: conn, conn.sock)
        except OSError:
            conn.sock.close()

    def _touched(self, conn: _HttpConnection) -> None:
        if self.listener is not None:
            self.listener.touched(conn)

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


class MetricsServer(HttpServer):
    """``GET /metrics``; with ``status`` (how to take the status' inputs on the loop), the
    status page too."""

    what = "metrics"

    def __init__(
        self,
        metrics: Metrics,
        address: str,
        *,
        status: StatusSource | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle: float = IDLE,
    ) -> None:
        super().__init__(address, max_connections=max_connections, idle=idle)
        self.metrics = metrics
        self.status = status
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._rendering: dict[str, asyncio.Task[bytes]] = {}
        self._taken: tuple[float, StatusInputs] | None = None

    def routes(self) -> Routes:
        routes: Routes = {"/metrics": {"GET": self._handle}}
        if self.status is not None:
            routes["/"] = {"GET": self._page}
            routes["/status.json"] = {"GET": self._status_json}
        return routes

    async def _handle(self, request: Request) -> Response:
        # Values are taken on the loop; the (slow, pure) text is rendered in a child process
        # (director.offload) and sent a chunk at a time as it is made (chunked encoding).
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        sources = self.metrics.frozen_sources()
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        if request.method == "HEAD":  # its Content-Length: the whole text's
            body = await forked_bytes(functools.partial(self.metrics.render, sources))
            return Response(body=body, headers=headers)
        return Response(
            headers=headers, chunks=lambda: forked(functools.partial(self.metrics.chunks, sources))
        )

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
            # A waiting request gets a failure as a 500 (logged); retrieved here too, so
            # asyncio does not warn when every waiting request went away.
            running.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(running)

    def _inputs(self, now: float) -> StatusInputs:
        """The status' inputs, taken on the loop (snapshots and small copies), shared by the
        JSON and the page for ``STATUS_MAX_AGE``."""
        assert self.status is not None
        if self._taken is None or now - self._taken[0] >= STATUS_MAX_AGE:
            self._taken = (now, self.status())
        return self._taken[1]

    async def _status_json(self, request: Request) -> Response:
        body = await self._rendered("json", status_json)
        return Response(body=body, headers={**NO_STORE, "Content-Type": "application/json"})

    async def _page(self, request: Request) -> Response:
        # The page's module (its script, styles and html) at the first page, not at start: 0.04 s
        # of an emulated guest's start (-X importtime); here, before the rendering is forked.
        from director.status_page import CSP

        body = await self._rendered("html", status_html)
        headers = {
            **NO_STORE,
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": CSP,
            "X-Frame-Options": "DENY",
        }
        return Response(body=body, headers=headers)


NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _yield() -> None:
    time.sleep(0)  # releases the GIL: the event loop's thread takes it now if it waits


def status_json(inputs: StatusInputs) -> bytes:
    """``/status.json``: the status model as JSON (worker thread), a service at a time."""
    return encode_status(inputs, _yield, services_last=True).encode()


def status_html(inputs: StatusInputs) -> bytes:
    """``/``: the status page (worker thread); the model is freed a service at a time."""
    from director.status_page import render_page  # imported by MetricsServer._page already

    st = build_status(inputs, _yield)
    page = render_page(st, _yield)
    services = st.get("services")
    while isinstance(services, list) and services:
        services.pop()
        _yield()
    return page
