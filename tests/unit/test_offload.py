"""Renderings in a forked child process (director.offload): the bytes, the failures, the
descriptors the child must not keep, and the child always reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import director.offload
from director.offload import RenderFailed, forked, forked_bytes


async def collect(make: object) -> list[bytes]:
    chunks: list[bytes] = []
    async with contextlib.aclosing(forked(make)) as stream:  # type: ignore[arg-type]
        async for chunk in stream:
            chunks.append(chunk)
    return chunks


def gone(pid: int) -> bool:
    """The process is reaped (a zombie still answers kill 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.asyncio
async def test_the_chunks_are_made_in_another_process() -> None:
    big = bytes(range(256)) * 20_000  # 5 MB: more than the pipe holds

    def make() -> Iterator[bytes]:
        yield f"{os.getpid()}\n".encode()
        yield big
        yield b"end"

    body = b"".join(await collect(make))
    pid, rest = body.split(b"\n", 1)
    assert int(pid) != os.getpid()
    assert rest == big + b"end"
    assert gone(int(pid))


@pytest.mark.asyncio
async def test_a_failed_rendering_is_an_error_after_what_was_written() -> None:
    def make() -> Iterator[bytes]:
        yield f"{os.getpid()}".encode()
        raise ValueError("bad")

    chunks: list[bytes] = []

    async def read() -> None:
        async with contextlib.aclosing(forked(make)) as stream:
            async for chunk in stream:
                chunks.append(chunk)

    with pytest.raises(RenderFailed, match="status 1"):
        await read()
    assert gone(int(b"".join(chunks)))


@pytest.mark.asyncio
async def test_a_reader_that_stops_ends_the_child() -> None:
    def make() -> Iterator[bytes]:
        yield f"{os.getpid()}\n".encode()
        while True:
            yield b"x" * 65536

    async with contextlib.aclosing(forked(make)) as stream:
        pid = int((await anext(stream)).split(b"\n")[0])
        await anext(stream)
    assert gone(pid)


@pytest.mark.asyncio
async def test_a_socket_the_daemon_closes_is_not_kept_open_by_the_child() -> None:
    """A probe's or a client's socket closed while a rendering runs is closed for its peer at
    once (a copy in the child would keep it open, its port taken, until the rendering ends)."""
    ours, peer = socket.socketpair()

    def make() -> Iterator[bytes]:
        yield " ".join(sorted(os.listdir("/proc/self/fd"))).encode()
        time.sleep(2)
        yield b"done"

    loop = asyncio.get_running_loop()
    async with contextlib.aclosing(forked(make)) as stream:
        fds = (await anext(stream)).split()
        ours.close()
        peer.settimeout(1.0)
        t0 = loop.time()
        assert await asyncio.to_thread(peer.recv, 10) == b""  # EOF: no other copy is open
        assert loop.time() - t0 < 1.0
        assert await anext(stream) == b"done"
    peer.close()
    assert str(peer.fileno() if peer.fileno() >= 0 else -1).encode() not in fds
    assert len(fds) <= 5, fds  # 0, 1, 2, the pipe, and listdir's own


@pytest.mark.asyncio
async def test_without_fork_it_renders_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(director.offload, "_fork", no_fork)
    pids: list[int] = []

    def make() -> bytes:
        pids.append(os.getpid())
        return b"body"

    assert await forked_bytes(make) == b"body"
    assert pids == [os.getpid()]


@pytest.mark.asyncio
async def test_renderings_leave_no_descriptor_or_process() -> None:
    before = len(os.listdir("/proc/self/fd"))
    pids = []
    for n in range(20):
        body = await forked_bytes(lambda n=n: f"{os.getpid()} {n}".encode())  # type: ignore[misc]
        pid, got = body.split()
        assert got == str(n).encode()
        pids.append(int(pid))
    assert len(os.listdir("/proc/self/fd")) == before
    assert all(gone(pid) for pid in pids)


@pytest.mark.asyncio
async def test_at_most_max_children_render_at_once(tmp_path: Path) -> None:
    """Six renderings asked for at once: each child marks itself running, waits, and says how
    many were running; never more than MAX_CHILDREN (each would be a copy of a large daemon's
    touched pages), and every one still gets its body."""

    def make() -> bytes:
        mark = tmp_path / str(os.getpid())
        mark.touch()
        time.sleep(0.3)
        running = len(os.listdir(tmp_path))
        mark.unlink()
        return str(running).encode()

    bodies = await asyncio.gather(*(forked_bytes(make) for _ in range(6)))
    seen = [int(body) for body in bodies]
    assert max(seen) == director.offload.MAX_CHILDREN
    assert director.offload.FORKS.count >= 6


@pytest.mark.asyncio
async def test_the_child_renders_at_the_lowest_cpu_priority() -> None:
    """The rendering child is niced to CHILD_NICE (19, the lowest), the daemon is not: the
    event loop's thread gets a CPU first when they compete for one."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    body = await forked_bytes(lambda: str(os.getpriority(os.PRIO_PROCESS, 0)).encode())
    assert int(body) == director.offload.CHILD_NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == before < 19


# Its own process group (start_new_session): a SIGTERM to the group while a child renders is
# the parent's (a stop) and the rendering still completes.
GROUP_SIGNAL = """
import asyncio, os, signal, sys, time
from director.offload import forked_bytes

def make():
    time.sleep(0.5)  # the signal arrives meanwhile
    return b"rendered"

async def main():
    stops = []
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stops.append, "stop")
    rendering = asyncio.ensure_future(forked_bytes(make))
    await asyncio.sleep(0.2)
    os.killpg(0, signal.SIGTERM)
    body = await rendering
    print(body.decode(), stops)

asyncio.run(main())
"""


def test_a_signal_to_the_process_group_is_the_parents_and_the_rendering_completes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", GROUP_SIGNAL],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rendered", "['stop']"]
