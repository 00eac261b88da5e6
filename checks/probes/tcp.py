"""TCP connect, optionally send and expect (Piranha's send/expect, ldirectord's "connect").

- no send, no expect: up when the three-way handshake completes.
- send only: up once the bytes are written. The kernel accepts them even when the application
  is frozen, so this cannot tell a hung server from a healthy one: give ``expect`` too.
- expect (with or without send): up when the bytes read so far contain ``expect`` (bytes) or
  match it (a compiled ``re.Pattern[bytes]``, searched). ``b""`` means "any reply". Reading
  stops at ``read_bytes``. A server that accepts and never answers is down by timeout.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from checks.probes.result import ProbeFailed, ProbeResult, Step, Target, guarded, preview, stream


@dataclass(frozen=True)
class TcpSpec:
    send: bytes | None = None
    expect: bytes | re.Pattern[bytes] | None = None
    read_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.read_bytes < 1:
            raise ValueError(f"read_bytes must be at least 1, not {self.read_bytes}")


def matches(expect: bytes | re.Pattern[bytes], received: bytes) -> bool:
    """Whether the reply so far satisfies expect (an empty expect needs one byte)."""
    if not received:
        return False
    if isinstance(expect, bytes):
        return expect in received
    return expect.search(received) is not None


def describe_expect(expect: bytes | re.Pattern[bytes]) -> str:
    if isinstance(expect, bytes):
        return f"containing {expect!r}" if expect else "(any reply)"
    return f"matching /{expect.pattern.decode(errors='replace')}/"


async def probe(
    target: Target,
    spec: TcpSpec,
    timeout: float,  # noqa: ASYNC109
) -> ProbeResult:
    async def check(step: Step) -> None:
        async with stream(step) as (reader, writer):
            if spec.send is not None:
                step.doing = f"sending {len(spec.send)} bytes to {target}"
                writer.write(spec.send)
                await writer.drain()
            if spec.expect is not None:
                await expect_reply(reader, spec.expect, spec.read_bytes, step)

    return await guarded(target, timeout, check)


async def expect_reply(
    reader: asyncio.StreamReader, expect: bytes | re.Pattern[bytes], limit: int, step: Step
) -> None:
    wanted = describe_expect(expect)
    received = b""
    step.doing = f"waiting for a reply {wanted} from {step.target}"
    while True:
        chunk = await reader.read(limit - len(received))
        if not chunk:
            raise ProbeFailed(
                f"{step.target} closed the connection without a reply {wanted} "
                f"(received {preview(received)})"
            )
        received += chunk
        if matches(expect, received):
            return
        if len(received) >= limit:
            raise ProbeFailed(
                f"no reply {wanted} in the first {limit} bytes from {step.target} "
                f"(received {preview(received)})"
            )
        step.doing = (
            f"waiting for a reply {wanted} from {step.target} (received {preview(received)})"
        )
