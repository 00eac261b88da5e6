"""What a probe checks (Target), what it returns (ProbeResult), and the guard every probe runs in.

The guard (``guarded``) gives each probe the same contract: the whole check runs under one
``asyncio.timeout``, time is the running loop's clock, and no exception escapes: a failure
becomes ``ProbeResult(ok=False, error=...)`` whose error says what was being done and why it
failed, e.g. ``connect to 198.18.1.11:3389: connection refused`` or ``timed out after 2 s
waiting for the X.224 Connection Confirm from 198.18.1.11:3389``. Cancellation from outside
(the scheduler stopping) is not a failure and propagates. A failure of this director's own
(out of file descriptors, ports, memory: :mod:`checks.local`) is a result with ``local`` set.

(ruff's ASYNC109 is silenced on the probes' ``timeout`` parameters: it is the probe's own
deadline, enforced inside with ``asyncio.timeout``, as the probe contract requires.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from checks.local import local_error, local_reason

# One verdict type for the probes, the scheduler and the runner (no copy between them).
from checks.model import ProbeResult as ProbeResult


@dataclass(frozen=True)
class Target:
    """A real server's address and port, as a probe connects to it."""

    address: IPv4Address | IPv6Address
    port: int

    def __str__(self) -> str:
        if isinstance(self.address, IPv6Address):
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


class ProbeFailed(Exception):
    """The server answered, but not as expected; the message is the whole error."""


class LocalFailure(Exception):
    """This director could not run the probe (``reason``: an errno name, see
    :mod:`checks.local`); the message is the error. The verdict does not change."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason


class Step:
    """What a probe is doing now, so that a timeout or a socket error can say so."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.doing = f"connecting to {target}"
        self.connected = False
        self.deadline = float("inf")  # the loop time at which the probe times out


Check = Callable[[Step], Awaitable[int | None]]


async def guarded(
    target: Target,
    timeout: float,  # noqa: ASYNC109
    check: Check,
    *,
    step: Step | None = None,
) -> ProbeResult:
    """Run check under the timeout; its return value is the weight (usually None)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    step = step or Step(target)
    step.deadline = start + timeout
    deadline = asyncio.timeout_at(step.deadline)
    local: str | None = None
    try:
        async with deadline:
            weight = await check(step)
    except TimeoutError as exc:
        if deadline.expired():
            error = f"timed out after {timeout:g} s {step.doing}"
        else:
            error = describe(exc, step)
    except LocalFailure as exc:
        error, local = str(exc), exc.reason
    except ProbeFailed as exc:
        error = str(exc)
        local = local_reason(exc.__cause__, connected=step.connected)
    except Exception as exc:  # a probe never raises: any failure is a verdict
        error = describe(exc, step)
        local = local_reason(exc, connected=step.connected)
    else:
        return ProbeResult(ok=True, latency=loop.time() - start, error=None, weight=weight)
    if local is not None:
        error = local_error(local, error)
    return ProbeResult(ok=False, latency=loop.time() - start, error=one_line(error), local=local)


def one_line(text: str) -> str:
    """Errors are log fields: whitespace runs (a parser's multi-line message) become one space."""
    return " ".join(text.split())


def os_reason(exc: OSError) -> str:
    """ "connection refused" from ConnectionRefusedError(111, "Connect call failed ...")."""
    text = os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    reason = str(getattr(exc, "reason", None) or exc)
    if reason == "WRONG_VERSION_NUMBER":
        return "the server did not answer in TLS (is the port plain text?)"
    return reason


def describe(exc: BaseException, step: Step) -> str:
    """One line for an unexpected exception, naming what the probe was doing."""
    where = step.target
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed: {tls_reason(exc)}"
    if isinstance(exc, asyncio.IncompleteReadError):
        got = f"after {len(exc.partial)} bytes " if exc.partial else ""
        return f"{where} closed the connection {got}while {step.doing}"
    if isinstance(exc, OSError):
        if not step.connected:
            return f"connect to {where}: {os_reason(exc)}"
        return f"{os_reason(exc)} while {step.doing}"
    return f"{type(exc).__name__} while {step.doing}: {exc}"


def preview(data: bytes, limit: int = 60) -> str:
    """A short printable form of bytes received, for error messages."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}... ({len(data)} bytes)"


@contextlib.asynccontextmanager
async def stream(step: Step) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP connection to step.target; aborted on failure, closed (FIN) on success.

    The close is not awaited: with nothing left to send the socket closes at once, and a TLS
    close_notify is bounded by ``ssl_shutdown_timeout``; the verdict does not wait for either.
    """
    target = step.target
    reader, writer = await asyncio.open_connection(str(target.address), target.port)
    step.connected = True
    try:
        yield reader, writer
    except BaseException:
        writer.transport.abort()
        raise
    writer.close()
