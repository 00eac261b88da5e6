"""HTTP and HTTPS probes: status ranges, body substring or regex, basic auth.

The probe connects to the target's address and port directly, whatever the Host header: a
name-based virtual host is reached with ``host`` (the Host header) and, over TLS,
``server_name`` (SNI and the name the certificate must carry; defaults to ``host``'s name).

Like keepalived's HTTP_GET/SSL_GET, every probe is a fresh connection: no keep-alive to real
servers, so a server that stopped accepting is noticed. Redirects are not followed (a 302 is a
status to judge) and cookies are not kept. At most 64 KiB of the body is read, and only when
the body is checked. ``body_regex`` is an RE2 pattern (:mod:`checks.regex`): matching takes
time linear in the body, whatever the pattern, and over more than 4 KiB it runs in a worker
thread, so neither a server nor a pattern can stall the event loop.

How (CPU per probe matters with thousands of servers; see ``bench/checks`` and
``bench/checks_keepalived``): no aiohttp session. A plain-HTTP check of the status alone (the
common case, keepalived's ``status_code``) runs on a bare non-blocking socket: connect, send the
request, read until the status line, close. Anything else is read by aiohttp's
``ResponseHandler`` and its llhttp parser, so verdicts and errors are aiohttp's: a reply that is
not a plain ``HTTP/1.x 2xx-5xx`` status line (on the same socket), and checks of a body or over
TLS (on an asyncio connection). That protocol class is aiohttp's internal API: aiohttp is pinned
(==) in pyproject.toml; check it on upgrades.

``verify`` defaults to off, as in keepalived's SSL_GET: a health check proves that the service
answers, and real servers often carry certificates only the clients' CA knows. With ``verify``
on, the certificate is checked against ``ca_file`` (or the system's CAs) and the name.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http import RawResponseMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from yarl import URL

from checks.local import local_reason
from checks.model import ProbeResult
from checks.probes import tcp
from checks.probes.poller import (
    CONNECTING,
    FastProbe,
    Plan,
    Poller,
    log,
)
from checks.probes.result import ProbeFailed, Step, Target, describe, guarded, os_reason
from checks.regex import Regex

T = TypeVar("T")

BODY_LIMIT = 64 * 1024
INLINE_MATCH = 4096  # characters of body a body_regex searches on the loop; more: in a thread
READ_SIZE = 16384  # one recv; a status-only probe stops once the head is in
MSG_PEEK = socket.MSG_PEEK
HEAD_LIMIT = 8192  # bytes read looking for the end of the head
MAX_LINE, MAX_HEADERS = 8190, 128  # aiohttp's limits for llhttp
# Replies judged by the fast probe, remembered by their bytes (Poller.known: a farm's servers
# answer alike, and within one second their Date headers match too): the same peeked bytes
# get the status read from them before, without matching the head again. At most this many,
# of at most KNOWN_BYTES each (a head with a short body; longer replies are not remembered).
KNOWN_HEADS, KNOWN_BYTES = 64, 2048
# The head a status-only probe judges by itself: an HTTP/1.x final status, then well-formed
# header lines (token ":" value, no control characters). Anything else goes to llhttp.
_PLAIN_HEAD = re.compile(
    rb"HTTP/1\.[01] ([2-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?\r\n"
    rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*\r\n"
)
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:([^\r\n]*)", re.IGNORECASE)
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)
USER_AGENT = "directord-health-check"
StatusRanges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class HttpSpec:
    """What an HTTP(S) check sends and what it accepts."""

    method: Literal["GET", "HEAD"] = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: StatusRanges = ((200, 299),)
    body_contains: str | None = None
    body_regex: Regex[str] | None = None  # RE2: linear time over what the server sends
    basic_auth: tuple[str, str] | None = None
    http_version: Literal["1.0", "1.1"] = "1.1"
    tls: bool = False
    server_name: str | None = None
    verify: bool = False
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', not {self.path!r}")
        if not self.expect_status or any(lo > hi for lo, hi in self.expect_status):
            raise ValueError(f"expect_status needs (low, high) ranges, not {self.expect_status}")
        if self.basic_auth is not None and ":" in self.basic_auth[0]:
            raise ValueError("a basic_auth user name cannot contain ':' (RFC 7617)")

    @property
    def sni(self) -> str | None:
        """The TLS server name: server_name, else host without its port (unless an IP)."""
        if self.server_name is not None:
            return self.server_name
        if self.host is None or self.host.startswith("["):
            return None
        return self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host


def status_ok(status: int, ranges: StatusRanges) -> bool:
    return any(lo <= status <= hi for lo, hi in ranges)


def describe_ranges(ranges: StatusRanges) -> str:
    """((200, 299), (302, 302)) -> "200-299, 302"."""
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def body_problem(spec: HttpSpec, text: str, matched: bool | None = None) -> str | None:
    """Why the body does not satisfy the spec, or None (``matched``: body_regex's answer, if
    already known)."""
    if spec.body_contains is not None and spec.body_contains not in text:
        return f"does not contain {spec.body_contains!r}"
    if matched is None and spec.body_regex is not None:
        matched = spec.body_regex.search(text)
    if spec.body_regex is not None and not matched:
        return f"does not match /{spec.body_regex.pattern}/"
    return None


class _HttpStep(Step):
    """What an HTTP probe is doing. After the connection, ``doing`` is only formatted when an
    error asks for it (a probe that succeeds formats nothing): set ``phase``."""

    WAITING, READING = 1, 2

    def __init__(self, target: Target, spec: HttpSpec) -> None:
        self.spec = spec
        self.phase = 0
        super().__init__(target)
        if spec.tls:
            self.doing = f"connecting to {target} (TCP and TLS handshakes)"

    @property
    def request(self) -> str:
        return f"{self.spec.method} {self.spec.path}"  # "GET /owa/healthcheck.htm"

    @property
    def doing(self) -> str:
        if self.phase == self.WAITING:
            return f"waiting for the response to {self.request} from {self.target}"
        if self.phase == self.READING:
            return f"reading the body of {self.request} from {self.target}"
        return self._doing

    @doing.setter
    def doing(self, text: str) -> None:
        self._doing, self.phase = text, 0


class HttpProber:
    """Runs HTTP(S) probes; close it when done.

    Each probe is one connection made with ``loop.create_connection`` to the target's address
    (no name resolution) and one prepared request (its bytes are built once per spec and
    target). The response is read by aiohttp's ``ResponseHandler``: the protocol and C (llhttp)
    parser an aiohttp session itself uses, without the session, connector and request machinery
    around them, which cost most of a probe's CPU (``bench/checks``). The prober keeps the TLS
    contexts (one per verify / ca_file) and the prepared requests.
    """

    def __init__(self) -> None:
        self._contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}
        self._poller: Poller | None = None
        self._matcher: ThreadPoolExecutor | None = None  # body_regex over large bodies
        self._matching = asyncio.Lock()  # one such search at a time

    async def __aenter__(self) -> HttpProber:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the poller (and any fast probe still in flight); forget the TLS contexts."""
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._matcher is not None:
            self._matcher.shutdown(wait=False, cancel_futures=True)
            self._matcher = None
        self._contexts.clear()

    def poller(self) -> Poller:
        """The fast probes' poller of the running loop (made on first use)."""
        loop = asyncio.get_running_loop()
        poller = self._poller
        if poller is None or poller.loop is not loop or poller.closed:
            poller = self._poller = Poller(loop)
        return poller

    def start(
        self,
        plan: Plan,
        done: Callable[[T, ProbeResult], None],
        tag: T,
        now: float | None = None,
    ) -> FastProbe:
        """Start a fast probe (an ``HttpPlan`` or a ``tcp.TcpPlan``); ``done(tag, result)``
        gets its verdict. See :meth:`checks.probes.poller.Poller.start`."""
        poller = self._poller
        if poller is None or poller.closed:
            poller = self.poller()
        return poller.start(plan, done, tag, now)

    async def _search(self, regex: Regex[str], text: str) -> bool:
        """``regex.search(text)``; over more than :data:`INLINE_MATCH` characters, in a worker
        thread (RE2 releases the GIL), one search at a time: however long a pattern takes
        over 64 KiB, the loop does not wait, and a probe that times out waiting for its turn
        never runs its search."""
        if len(text) <= INLINE_MATCH:
            return regex.search(text)
        if self._matcher is None:
            self._matcher = ThreadPoolExecutor(1, thread_name_prefix="director-body-regex")
        loop = asyncio.get_running_loop()
        async with self._matching:
            return await loop.run_in_executor(self._matcher, regex.search, text)

    def _context(self, spec: HttpSpec) -> ssl.SSLContext:
        key = (spec.verify, spec.ca_file if spec.verify else None)
        context = self._contexts.get(key)
        if context is None:
            if spec.verify:
                try:
                    context = ssl.create_default_context(cafile=spec.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ProbeFailed(f"cannot load ca_file {spec.ca_file}: {exc}") from exc
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                context.options |= ssl.OP_NO_COMPRESSION
            context.set_alpn_protocols(("http/1.1",))
            self._contexts[key] = context
        return context

    async def probe(
        self,
        target: Target,
        spec: HttpSpec,
        timeout: float,  # noqa: ASYNC109
    ) -> ProbeResult:
        plan = HttpPlan.of(target, spec, timeout)
        if plan is not None:
            return await self.poller().run(plan)
        step = _HttpStep(target, spec)

        async def check(_step: Step) -> None:
            try:
                await self._check(step, spec)
            except (aiohttp.ClientError, ssl.SSLCertVerificationError, HttpProcessingError) as exc:
                text = _http_error(exc, step, spec)
                assert text is not None
                raise ProbeFailed(text) from exc

        return await guarded(target, timeout, check, step=step)

    async def _check(self, step: _HttpStep, spec: HttpSpec) -> None:
        loop = asyncio.get_running_loop()
        address = str(step.target.address)
        request = request_bytes(spec, step.target, address)
        handler = _handler(loop, spec)
        target = step.target
        if spec.tls:
            context = self._context(spec)
            server_hostname = spec.sni or address
            transport, _ = await loop.create_connection(
                lambda: handler, address, target.port, ssl=context, server_hostname=server_hostname
            )
        else:
            transport, _ = await loop.create_connection(lambda: handler, address, target.port)
        try:
            step.connected = True
            step.phase = step.WAITING
            transport.write(request)
            await _judge(step, spec, handler, self._search)
        except BaseException:
            transport.abort()
            raise
        finally:
            transport.close()  # a no-op after abort; otherwise a FIN, as keepalived does


@functools.lru_cache(maxsize=1024)
def _encoded_path(path: str) -> str:
    """The path (and query) as sent: percent-encoded where needed, as aiohttp (yarl) would."""
    return URL(f"http://localhost{path}").raw_path_qs


def _handler(loop: asyncio.AbstractEventLoop, spec: HttpSpec) -> ResponseHandler:
    """aiohttp's response protocol with its llhttp parser, set for a probe's response."""
    handler = ResponseHandler(loop)
    handler.set_response_params(
        skip_payload=spec.method == "HEAD", read_until_eof=True, auto_decompress=False
    )
    return handler


def _plain_head(head: bytes) -> re.Match[bytes] | None:
    """The head's match if it is plain enough to judge here, within llhttp's limits as aiohttp
    sets them (a line of at most 8190 bytes, at most 128 headers, at most one Content-Length,
    a number, and not next to a Transfer-Encoding)."""
    match = _PLAIN_HEAD.match(head)
    if match is None:
        return None
    end = match.end()
    if end > MAX_LINE:
        return None
    # (a head of fewer bytes than that cannot have more lines: no count on the hot path)
    if end > MAX_HEADERS + 2 and head.count(b"\n", 0, end) > MAX_HEADERS + 2:
        return None
    lengths = _CONTENT_LENGTH.findall(head, 0, end)
    if lengths and (
        len(lengths) > 1
        or not lengths[0].strip(b" \t").isdigit()
        or b"\ntransfer-encoding:" in head[:end].lower()
    ):
        return None  # llhttp refuses: two Content-Lengths, not a number, or with chunking
    return match


def _peeked_status(data: bytes, known: dict[bytes, int], limit: int = KNOWN_HEADS) -> int | None:
    """The status of the plain head (:func:`_plain_head`) that ``data``, the first bytes of a
    reply, starts with; None if they hold no whole head yet, or not a plain one (the probe then
    reads on, and may hand the reply to llhttp). ``known`` maps the bytes of replies judged
    before to their status (at most ``limit`` replies of at most :data:`KNOWN_BYTES`): the
    same bytes again are not matched again (``tests/checks_core/test_fast_verdicts.py`` holds
    it to the reference)."""
    code = known.get(data)
    if code is not None:
        return code
    if b"\r\n\r\n" in data or b"\n\n" in data or len(data) >= HEAD_LIMIT:
        match = _plain_head(data)
        if match is not None:
            code = int(match[1])
            if len(data) <= KNOWN_BYTES:
                if len(known) >= limit:
                    known.clear()
                known[data] = code
            return code
    return None


async def _final(handler: ResponseHandler) -> tuple[RawResponseMessage, StreamReader]:
    """The final response, past any interim 1xx (as aiohttp's ClientResponse does)."""
    while True:
        message, payload = await handler.read()
        if not 100 <= message.code <= 199 or message.code == 101:
            return message, payload


def _reads_body(spec: HttpSpec) -> bool:
    return spec.method != "HEAD" and (spec.body_contains is not None or spec.body_regex is not None)


Search = Callable[[Regex[str], str], Awaitable[bool]]


async def _judge(step: _HttpStep, spec: HttpSpec, handler: ResponseHandler, search: Search) -> None:
    """Wait for the response's head, check the status and, if asked, the body."""
    target = step.target
    message, payload = await _final(handler)
    if not status_ok(message.code, spec.expect_status):
        raise ProbeFailed(
            f"HTTP {message.code} from {target} {spec.path} "
            f"(expected {describe_ranges(spec.expect_status)})"
        )
    if not _reads_body(spec):
        return
    step.phase = step.READING
    body = await _read_limited(payload, BODY_LIMIT)
    text = body.decode(_charset(message.headers.get("Content-Type")), errors="replace")
    matched = None if spec.body_regex is None else await search(spec.body_regex, text)
    problem = body_problem(spec, text, matched)
    if problem is not None:
        more = f" (first {BODY_LIMIT // 1024} KiB)" if len(body) >= BODY_LIMIT else ""
        raise ProbeFailed(f"body of {target} {spec.path}{more} {problem}")


@dataclass(frozen=True, slots=True, eq=False)
class HttpPlan:
    """A plain-HTTP status-only probe, prepared once per check (see
    :mod:`checks.probes.poller`): the request's bytes, the socket address, the expected
    statuses."""

    target: Target
    timeout: float
    spec: HttpSpec
    family: int
    sockaddr: tuple[str, int]
    first: bytes  # the request

    @classmethod
    def of(cls, target: Target, spec: HttpSpec, timeout: float) -> HttpPlan | None:
        """The plan, or None if the spec needs more than a status line (TLS, a body check)."""
        if spec.tls or _reads_body(spec):
            return None
        address = str(target.address)
        request = request_bytes(spec, target, address)
        return cls(target, timeout, spec, tcp.family(target), (address, target.port), request)

    @property
    def probe_type(self) -> type[_StatusProbe]:
        return _StatusProbe


FALLBACK = 3  # after CONNECTING, SENDING, READING: the reply went to llhttp


class _StatusProbe(FastProbe):
    """Plain HTTP that needs only the status, the hot path of a large farm: connect, send the
    request (at once if the handshake is already complete), read until the head is in, judge a
    well-formed status line (``HTTP/1.x 2xx-5xx``) here, as keepalived's status_code does, and
    close. Any other reply goes to llhttp (aiohttp's parser) on a task, as in the full path, so
    malformed or unusual responses get the same verdict and error."""

    __slots__ = ("reader", "task")  # set when the reply goes to llhttp
    plan: HttpPlan
    reader: _Reader | None
    task: asyncio.Task[int] | None
    LINGER_AT_CONNECT = False  # the hot path peeks: its close resets (see FastProbe.rst)

    def read(self, now: float) -> None:
        sock = self.sock
        if not self.rst:
            # The first bytes: peeked at, not read. A plain head, judged here, is the common
            # case: the socket closes with those bytes unread, which resets the connection
            # without a setsockopt of the linger. Anything else is read as below (with the
            # linger set: same bytes, same verdicts).
            try:
                data = sock.recv(READ_SIZE, MSG_PEEK)  # (an OSError: nothing was read)
            except (BlockingIOError, InterruptedError):
                return
            poller = self.poller
            code = poller.known.get(data)  # _peeked_status's memo, inline
            if code is None:
                code = _peeked_status(data, poller.known)
            if code is not None:
                self.rst = True
                for low, high in self.plan.spec.expect_status:  # _judge, inline
                    if low <= code <= high:
                        break
                else:
                    self._judge(code, now)
                    return
                ok = self.ok
                if ok is None:
                    self.succeed(now)
                    return
                # succeed(), inline for the hot path (a runner's probe, state READING: no
                # cleanup; not finished, or the poller would not have called): close, then
                # the verdict straight to the runner. One function per reply.
                self.finished = True
                self.sock = None
                poller._probes.pop(self.fd, None)
                sock.close()
                tag = self.tag
                self.done = self.tag = self.ok = None
                try:
                    ok(tag, now - self.began, now)
                except Exception:
                    log.exception("probe result handler failed", target=str(self.target))
                return
            self.linger()
        buffer = self.buffer
        eof, error = False, None
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                self.buffer = buffer
                return
            except OSError as exc:
                if not buffer:
                    raise  # "connection reset by peer while waiting for the response to ..."
                # bytes, then an error: judge the bytes (a garbage answer is a garbage answer)
                data, error = b"", exc
            if not data:
                eof = True
                break
            buffer += data
            if b"\r\n\r\n" in buffer or b"\n\n" in buffer or len(buffer) >= HEAD_LIMIT:
                break
        self.buffer = buffer
        match = _plain_head(buffer)
        if match is not None:
            self._judge(int(match[1]), now)
        else:
            self._fall_back(eof, error)

    def _judge(self, code: int, now: float) -> None:
        spec = self.plan.spec
        for low, high in spec.expect_status:  # status_ok(), inline: the hot path
            if low <= code <= high:
                self.succeed(now)
                return
        self.fail(
            f"HTTP {code} from {self.target} {spec.path} "
            f"(expected {describe_ranges(spec.expect_status)})",
            now,
        )

    def _fall_back(self, eof: bool, error: OSError | None) -> None:
        """Hand the reply so far, and the socket, to aiohttp's parser on a task."""
        self.state = FALLBACK
        self.reader = None
        loop = self.poller.loop
        self.poller.unwatch(self.fd)
        handler = _handler(loop, self.plan.spec)
        if self.buffer:
            handler.data_received(self.buffer)
        if eof:
            handler.connection_lost(error)
        else:
            self.reader = _Reader(loop, self.sock, handler)
            loop.add_reader(self.fd, self.reader)
        task = loop.create_task(_final_code(handler))
        self.task = task
        task.add_done_callback(self._fallback_done)
        self.cleanup = self._stop_fallback

    def _fallback_done(self, task: asyncio.Task[int]) -> None:
        if self.finished or task.cancelled():
            return
        now = self.poller.loop.time()
        exc = task.exception()
        if exc is None:
            self._judge(task.result(), now)
            return
        step = _HttpStep(self.target, self.plan.spec)
        step.connected, step.phase = True, step.WAITING
        text = _http_error(exc, step, self.plan.spec)
        local = local_reason(exc, connected=True)
        if local is not None:
            self.fail_locally(local, text or describe(exc, step), now)
        elif text is not None:
            self.fail(text, now)
        elif isinstance(exc, ProbeFailed):
            self.fail(str(exc), now)
        else:
            self.fail(describe(exc, step), now)

    def _stop_fallback(self) -> None:
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
        task = self.task
        if task is not None:
            self.task = None
            if not task.done():
                task.cancel()

    def doing(self) -> str:
        if self.state == CONNECTING:
            return f"connecting to {self.target}"
        spec = self.plan.spec
        return f"waiting for the response to {spec.method} {spec.path} from {self.target}"


async def _final_code(handler: ResponseHandler) -> int:
    return (await _final(handler))[0].code


class _Reader:
    """add_reader callback: feeds the socket's bytes (and EOF) to aiohttp's response handler."""

    __slots__ = ("handler", "loop", "reading", "sock")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, handler: ResponseHandler
    ) -> None:
        self.loop, self.sock, self.handler = loop, sock, handler
        self.reading = True

    def __call__(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.stop()
            self.handler.connection_lost(exc)
            return
        if data:
            self.handler.data_received(data)
        else:
            self.stop()
            self.handler.connection_lost(None)  # EOF: ends the head, or "closed by the server"

    def stop(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sock.fileno())


def request_bytes(spec: HttpSpec, target: Target, address: str | None = None) -> bytes:
    """The request a probe sends: Host (spec.host, else the target's address and port unless
    the scheme's default), User-Agent, Accept, optional Authorization; HTTP/1.1 also says
    ``Connection: close`` (a probe never reuses a connection); no Accept-Encoding."""
    host = spec.host
    if host is None:
        address = address or str(target.address)
        host = f"[{address}]" if target.address.version == 6 else address
        if target.port != (443 if spec.tls else 80):
            host = f"{host}:{target.port}"
    path = _encoded_path(spec.path)
    lines = [
        f"{spec.method} {path} HTTP/{spec.http_version}",
        f"Host: {host}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
    ]
    if spec.basic_auth is not None:
        lines.append(f"Authorization: {aiohttp.encode_basic_auth(*spec.basic_auth)}")
    if spec.http_version == "1.1":
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def probe(
    target: Target,
    spec: HttpSpec,
    timeout: float,  # noqa: ASYNC109
    *,
    prober: HttpProber | None = None,
) -> ProbeResult:
    """One HTTP(S) probe; without a prober, a temporary one (and session) is used."""
    if prober is not None:
        return await prober.probe(target, spec, timeout)
    async with HttpProber() as temporary:
        return await temporary.probe(target, spec, timeout)


async def _read_limited(content: aiohttp.StreamReader, limit: int) -> bytes:
    body = b""
    while len(body) < limit:
        chunk = await content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return body


def _charset(content_type: str | None) -> str:
    """The charset a Content-Type declares, if Python knows it, else UTF-8."""
    match = _CHARSET.search(content_type or "")
    try:
        return codecs.lookup(match[1] if match else "utf-8").name
    except LookupError:
        return "utf-8"


def _http_error(exc: BaseException, step: _HttpStep, spec: HttpSpec) -> str | None:
    """The error of an exception from aiohttp's parser or the TLS handshake, else None."""
    if isinstance(exc, aiohttp.ClientError):
        return _client_error(exc, step, spec)
    if isinstance(exc, ssl.SSLCertVerificationError):
        against = spec.ca_file or "the system CA store"
        return (
            f"TLS certificate of {step.target} not trusted: {exc.verify_message} "
            f"(verified against {against})"
        )
    if isinstance(exc, HttpProcessingError):
        return f"invalid HTTP response from {step.target} to {step.request}: {exc.message}"
    return None


def _client_error(exc: aiohttp.ClientError, step: _HttpStep, spec: HttpSpec) -> str:
    """The errors aiohttp's ResponseHandler raises, as one line."""
    target = step.target
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"connection closed by the server while {step.doing}"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"{os_reason(exc)} while {step.doing}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"bad response body from {target} {spec.path}: {exc}"
    return f"{type(exc).__name__} while {step.doing}: {exc}"
