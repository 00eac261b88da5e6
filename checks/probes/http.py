"""HTTP and HTTPS probes over aiohttp: status ranges, body substring or regex, basic auth.

The probe connects to the target's address and port directly, whatever the Host header: a
name-based virtual host is reached with ``host`` (the Host header) and, over TLS,
``server_name`` (SNI and the name the certificate must carry; defaults to ``host``'s name).

Like keepalived's HTTP_GET/SSL_GET, every probe is a fresh connection (``force_close``): no
keep-alive to real servers, so a server that stopped accepting is noticed. Redirects are not
followed (a 302 is a status to judge) and cookies are not kept. At most 64 KiB of the body is
read, and only when the body is checked.

``verify`` defaults to off, as in keepalived's SSL_GET: a health check proves that the service
answers, and real servers often carry certificates only the clients' CA knows. With ``verify``
on, the certificate is checked against ``ca_file`` (or the system's CAs) and the name.
"""

from __future__ import annotations

import codecs
import re
import ssl
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

import aiohttp
from yarl import URL

from checks.probes.result import (
    ProbeFailed,
    ProbeResult,
    Step,
    Target,
    guarded,
    os_reason,
    tls_reason,
)

BODY_LIMIT = 64 * 1024
USER_AGENT = "directord-health-check"
StatusRanges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class HttpSpec:
    method: Literal["GET", "HEAD"] = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: StatusRanges = ((200, 299),)
    body_contains: str | None = None
    body_regex: re.Pattern[str] | None = None
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


def body_problem(spec: HttpSpec, text: str) -> str | None:
    """Why the body does not satisfy the spec, or None."""
    if spec.body_contains is not None and spec.body_contains not in text:
        return f"does not contain {spec.body_contains!r}"
    if spec.body_regex is not None and spec.body_regex.search(text) is None:
        return f"does not match /{spec.body_regex.pattern}/"
    return None


class _HttpStep(Step):
    def __init__(self, target: Target, request: str, tls: bool) -> None:
        super().__init__(target)
        self.request = request  # "GET /owa/healthcheck.htm"
        if tls:
            self.doing = f"connecting to {target} (TCP and TLS handshakes)"


async def _connected(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionCreateEndParams,
) -> None:
    step = context.trace_request_ctx
    if isinstance(step, _HttpStep):
        step.connected = True
        step.doing = f"waiting for the response to {step.request} from {step.target}"


class HttpProber:
    """Runs HTTP(S) probes; close it when done.

    It owns one aiohttp session per (verify, ca_file, http_version): aiohttp sets TLS
    verification on the connector and the HTTP version on the session.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[bool, str | None, str], aiohttp.ClientSession] = {}

    async def __aenter__(self) -> HttpProber:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def _session(self, spec: HttpSpec) -> aiohttp.ClientSession:
        verify, ca_file = spec.verify, spec.ca_file
        key = (verify, ca_file if verify else None, spec.http_version)
        session = self._sessions.get(key)
        if session is None:
            tls: ssl.SSLContext | bool = False
            if verify:
                try:
                    tls = ssl.create_default_context(cafile=ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ProbeFailed(f"cannot load ca_file {ca_file}: {exc}") from exc
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(_connected)
            version = aiohttp.HttpVersion10 if spec.http_version == "1.0" else aiohttp.HttpVersion11
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls, force_close=True, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                trace_configs=[trace],
                version=version,
            )
            self._sessions[key] = session
        return session

    async def probe(
        self,
        target: Target,
        spec: HttpSpec,
        timeout: float,  # noqa: ASYNC109
    ) -> ProbeResult:
        step = _HttpStep(target, f"{spec.method} {spec.path}", spec.tls)

        async def check(_step: Step) -> None:
            try:
                await self._check(step, spec)
            except aiohttp.ClientError as exc:
                raise ProbeFailed(_client_error(exc, step, spec)) from exc

        return await guarded(target, timeout, check, step=step)

    async def _check(self, step: _HttpStep, spec: HttpSpec) -> None:
        target = step.target
        session = self._session(spec)
        scheme = "https" if spec.tls else "http"
        url = URL(f"{scheme}://{target}{spec.path}")
        headers = {"Host": spec.host} if spec.host is not None else {}
        if spec.basic_auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(*spec.basic_auth)
        async with session.request(
            spec.method,
            url,
            headers=headers,
            allow_redirects=False,
            server_hostname=spec.sni if spec.tls else None,
            trace_request_ctx=step,
        ) as response:
            if not status_ok(response.status, spec.expect_status):
                raise ProbeFailed(
                    f"HTTP {response.status} from {target} {spec.path} "
                    f"(expected {describe_ranges(spec.expect_status)})"
                )
            if spec.method == "HEAD" or (spec.body_contains is None and spec.body_regex is None):
                return
            step.doing = f"reading the body of {step.request} from {target}"
            body = await _read_limited(response.content, BODY_LIMIT)
            text = body.decode(_charset(response), errors="replace")
            problem = body_problem(spec, text)
            if problem is not None:
                more = f" (first {BODY_LIMIT // 1024} KiB)" if len(body) >= BODY_LIMIT else ""
                raise ProbeFailed(f"body of {target} {spec.path}{more} {problem}")


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


def _charset(response: aiohttp.ClientResponse) -> str:
    """The response's declared charset if Python knows it, else UTF-8."""
    try:
        return codecs.lookup(response.charset or "utf-8").name
    except LookupError:
        return "utf-8"


def _client_error(exc: aiohttp.ClientError, step: _HttpStep, spec: HttpSpec) -> str:
    target = step.target
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = error.verify_message if isinstance(error, ssl.SSLCertVerificationError) else error
        against = spec.ca_file or "the system CA store"
        return f"TLS certificate of {target} not trusted: {reason} (verified against {against})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError) and isinstance(exc.os_error, ssl.SSLError):
        return f"TLS handshake with {target} failed: {tls_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect to {target}: {os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"connection closed by the server while {step.doing}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid HTTP response from {target} to {step.request}: {exc.message}"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"{os_reason(exc)} while {step.doing}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"bad response body from {target} {spec.path}: {exc}"
    return f"{type(exc).__name__} while {step.doing}: {exc}"
