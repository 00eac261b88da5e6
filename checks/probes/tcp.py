"""TCP connect, optionally send and expect (Piranha's send/expect, ldirectord's "connect").

- no send, no expect: up when the three-way handshake completes.
- send only: up once the bytes are written. The kernel accepts them even when the application
  is frozen, so this cannot tell a hung server from a healthy one: give ``expect`` too.
- expect (with or without send): up when the bytes read so far contain ``expect`` (bytes) or
  match it (a ``Regex[bytes]``, searched: RE2, linear time in the bytes whatever the pattern,
  see :mod:`checks.regex`). ``b""`` means "any reply". Reading stops at ``read_bytes``. A
  server that accepts and never answers is down by timeout.

The probe is a callback-driven state machine on a bare non-blocking socket, run by a
:class:`checks.probes.poller.Poller` (no task, transport or streams): the cheapest way to a
verdict. ``TcpPlan`` is a probe prepared once per check; ``probe()`` is the coroutine form.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from checks.model import ProbeResult
from checks.probes.poller import (
    CONNECTING,
    READING,
    SENDING,
    FastProbe,
    Poller,
)
from checks.probes.result import Target, preview
from checks.regex import Regex


@dataclass(frozen=True)
class TcpSpec:
    """What a TCP check sends and expects."""

    send: bytes | None = None
    expect: bytes | Regex[bytes] | None = None
    read_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.read_bytes < 1:
            raise ValueError(f"read_bytes must be at least 1, not {self.read_bytes}")


def matches(expect: bytes | Regex[bytes], received: bytes) -> bool:
    """Whether the reply so far satisfies expect (an empty expect needs one byte)."""
    if not received:
        return False
    if isinstance(expect, bytes):
        return expect in received
    return expect.search(received)


def describe_expect(expect: bytes | Regex[bytes]) -> str:
    if isinstance(expect, bytes):
        return f"containing {expect!r}" if expect else "(any reply)"
    return f"matching /{expect.pattern.decode(errors='replace')}/"


async def probe(
    target: Target,
    spec: TcpSpec,
    timeout: float,  # noqa: ASYNC109
    *,
    poller: Poller | None = None,
) -> ProbeResult:
    """One TCP probe on ``poller`` (a temporary one if not given)."""
    plan = TcpPlan.of(target, spec, timeout)
    if poller is not None:
        return await poller.run(plan)
    temporary = Poller(asyncio.get_running_loop())
    try:
        return await temporary.run(plan)
    finally:
        temporary.close()


def family(target: Target) -> int:
    return socket.AF_INET6 if target.address.version == 6 else socket.AF_INET


@dataclass(frozen=True, slots=True, eq=False)
class TcpPlan:
    """A TCP probe, prepared once per check (see :mod:`checks.probes.poller`)."""

    target: Target
    timeout: float
    spec: TcpSpec
    family: int
    sockaddr: tuple[str, int]
    first: bytes  # sent at once on connect; b"" tests whether the handshake is complete

    @classmethod
    def of(cls, target: Target, spec: TcpSpec, timeout: float) -> TcpPlan:
        sockaddr = (str(target.address), target.port)
        return cls(target, timeout, spec, family(target), sockaddr, spec.send or b"")

    @property
    def probe_type(self) -> type[_TcpProbe]:
        return _TcpProbe


class _TcpProbe(FastProbe):
    __slots__ = ()
    plan: TcpPlan

    def sent(self, now: float) -> None:
        """Connect-only, or send without expect: up once the bytes are out."""
        if self.plan.spec.expect is None:
            self.succeed(now)
        else:
            self.state = READING

    def read(self, now: float) -> None:
        spec = self.plan.spec
        expect, limit = spec.expect, spec.read_bytes
        assert expect is not None
        sock, received = self.sock, self.buffer
        while True:
            try:
                chunk = sock.recv(limit - len(received))
            except BlockingIOError:
                self.buffer = received
                return
            if not chunk:
                self.fail(
                    f"{self.target} closed the connection without a reply "
                    f"{describe_expect(expect)} (received {preview(received)})",
                    now,
                )
                return
            received += chunk
            self.buffer = received
            if matches(expect, received):
                self.succeed(now)
                return
            if len(received) >= limit:
                self.fail(
                    f"no reply {describe_expect(expect)} in the first {limit} bytes from "
                    f"{self.target} (received {preview(received)})",
                    now,
                )
                return

    def doing(self) -> str:
        if self.state == CONNECTING:
            return f"connecting to {self.target}"
        spec = self.plan.spec
        if self.state == SENDING or spec.expect is None:
            return f"sending {len(spec.send or b'')} bytes to {self.target}"
        waiting = f"waiting for a reply {describe_expect(spec.expect)} from {self.target}"
        if self.buffer:
            return f"{waiting} (received {preview(self.buffer)})"
        return waiting
