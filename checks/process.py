"""External programs (check scripts, notify hooks) with bounded output, on the event loop.

A program runs from an argument list (never a shell), with stdin from /dev/null, in its own
session (so a kill reaches whatever it started), as a given user with a clean environment
(:mod:`checks.identity`). Its stdout and stderr go to one pipe that the loop reads as the output
comes, into an :class:`Output` that keeps only the first ``head`` and the last ``tail`` bytes:
the rest is read and dropped, so a program that prints gigabytes costs the daemon a pipe's
worth of memory, and no file. Reading never makes the program wait (its verdict must not
depend on how much it prints).

The program is done when it exits, not when the pipe closes: what it wrote before exiting is
read at once; something it left running in the background may keep the pipe open, and is no
longer read. Leaving ``async with`` a :class:`Program` (from :func:`start`) kills the program's
whole session with SIGKILL if it has not exited (a timeout, a cancellation) and reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from checks.identity import RunAs

READ_SIZE = 65536  # one read (a pipe holds 64 KiB unless the writer enlarged it)
READS_PER_WAKE = 16  # then let the loop run something else (VRRP)
READS_AFTER_EXIT = 16  # at most a 1 MiB pipe's worth, even if a leftover child keeps writing


class Output:
    """What a program printed: the first ``head`` and the last ``tail`` bytes; ``total`` is
    everything read, kept or not."""

    def __init__(self, *, head: int = 0, tail: int = 0) -> None:
        if head < 0 or tail < 0:
            raise ValueError("head and tail are sizes: 0 or more")
        self.head_limit, self.tail_limit = head, tail
        self._head = bytearray()
        self._tail = b""
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data and self.tail_limit:
            self._tail = (self._tail + data)[-self.tail_limit :]

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    @property
    def tail(self) -> bytes:
        """The last ``tail`` bytes (of what came after the head)."""
        return self._tail

    @property
    def dropped(self) -> int:
        """Bytes read and not kept."""
        return self.total - len(self._head) - len(self._tail)


class Program:
    """A running program and the pipe its output comes through."""

    def __init__(self, process: asyncio.subprocess.Process, fd: int, output: Output) -> None:
        self.process = process
        self.output = output
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal), once the output written before
        the exit is read."""
        returncode = await self.process.wait()
        self._read(READS_AFTER_EXIT)
        self.close()
        return returncode

    def _readable(self) -> None:
        self._read(READS_PER_WAKE)

    def _read(self, reads: int) -> None:
        if self._fd < 0:
            return
        for _ in range(reads):
            try:
                data = os.read(self._fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # not expected from a pipe; stop reading, keep the program
                self.close()
                return
            if not data:
                self.close()
                return
            self.output.feed(data)

    def close(self) -> None:
        """Stop reading (the program, if still running, gets EPIPE or SIGPIPE on its next
        write)."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    async def kill(self) -> None:
        """SIGKILL to the program's whole session, then reap it."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    async def __aenter__(self) -> Program:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.kill()
        finally:
            self.close()


async def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    user: RunAs | None,
    output: Output,
) -> Program:
    """Start ``argv`` (OSError if it cannot be). Use the result as ``async with``: leaving it
    kills the program if it is still running."""
    read_end, write_end = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            extra_groups=None if user is None else list(user.groups),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    os.set_blocking(read_end, False)
    return Program(process, read_end, output)
