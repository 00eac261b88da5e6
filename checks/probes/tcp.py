"""TCP connect, optionally send and expect (Piranha's send/expect, ldirectord's "connect").

- no send, no expect: up when the three-way handshake completes.
- send only: up once the bytes are written. The kernel accepts them even when the application
  is frozen, so this cannot tell a hung server from a healthy one: give ``expect`` too.
- expect (with or without send): up when the bytes read so far contain ``expect`` (bytes) or
  match it (a compiled ``re.Pattern[bytes]``, searched). ``b""`` means "any reply". Reading
  stops at ``read_bytes``. A server that accepts and never answers is down by timeout.

The probe runs on a bare non-blocking socket and the loop's add_writer / sock_recv (no
transport or streams): the cheapest way to a verdict, shared with the HTTP probe (``connect``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
from dataclasses import dataclass

from checks.probes.result import ProbeFailed, ProbeResult, Step, Target, guarded, preview


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
        loop = asyncio.get_running_loop()
        sock = new_socket(target)
        try:
            first = spec.send or b""
            sent = await connect(loop, sock, str(target.address), target.port, first)
            step.connected = True
            if spec.send is not None:
                step.doing = f"sending {len(spec.send)} bytes to {target}"
                if sent < len(first):
                    await loop.sock_sendall(sock, first[sent:])
            if spec.expect is not None:
                await expect_reply(loop, sock, spec.expect, spec.read_bytes, step)
        finally:
            sock.close()

    return await guarded(target, timeout, check)


def new_socket(target: Target) -> socket.socket:
    """A non-blocking TCP socket of the target address's family."""
    family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)


async def connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: str, port: int, first: bytes
) -> int:
    """Connect the non-blocking ``sock`` with the loop's add_writer (no transport, no name
    resolution: ``address`` is numeric) and return how much of ``first`` was already sent.

    A near server (same host, a LAN segment in a VM) has often completed the handshake by the
    time connect() returns: ``first`` is then sent at once, with no wait for writability. A
    failed connect raises its OSError (ECONNREFUSED ...)."""
    error = sock.connect_ex((address, port))
    if error == errno.EINPROGRESS:
        if first:
            try:
                return sock.send(first)
            except BlockingIOError:
                pass
        fd = sock.fileno()
        writable = loop.create_future()
        loop.add_writer(fd, _wake, writable)
        try:
            await writable
        finally:
            loop.remove_writer(fd)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))
    return 0


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def expect_reply(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    expect: bytes | re.Pattern[bytes],
    limit: int,
    step: Step,
) -> None:
    wanted = describe_expect(expect)
    received = b""
    step.doing = f"waiting for a reply {wanted} from {step.target}"
    while True:
        chunk = await loop.sock_recv(sock, limit - len(received))
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
