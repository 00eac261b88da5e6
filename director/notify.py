"""Notify hooks: external programs run on VRRP state changes, never through a shell.

``HookRunner.run(key, argv)`` returns at once; the program runs in the background with stdin
from /dev/null, in its own session (so a timeout kills it and whatever it started), and its
output is logged line by line. Hooks with the same ``key`` (an instance or group name) run one
after the other, in the order asked, so ``notify_backup`` never overtakes the ``notify_master``
before it; different keys run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

import structlog

log = structlog.get_logger("director")

DEFAULT_TIMEOUT = 30.0
MAX_OUTPUT = 64 * 1024  # bytes of a hook's output that are logged


class HookRunner:
    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.started = 0
        self.failed = 0  # exit status != 0, timeouts and programs that could not start
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[int | None]] = set()

    def run(self, key: str, argv: Sequence[str]) -> asyncio.Task[int | None]:
        """Start ``argv`` in the background (after earlier hooks of ``key``); its exit status."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        task = asyncio.get_running_loop().create_task(self._run(lock, key, tuple(argv)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self) -> None:
        """Wait for the hooks running now (each is bounded by the hook timeout)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _run(self, lock: asyncio.Lock, key: str, argv: tuple[str, ...]) -> int | None:
        async with lock:
            self.started += 1
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                self.failed += 1
                log.error("hook_failed", hook=key, argv=list(argv), error=str(exc))
                return None
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                self.failed += 1
                log.error("hook_timeout", hook=key, argv=list(argv), timeout=self.timeout)
                return None
            for line in output[:MAX_OUTPUT].decode(errors="replace").splitlines():
                log.info("hook_output", hook=key, program=argv[0], line=line)
            status = proc.returncode
            if status != 0:
                self.failed += 1
                log.error("hook_exit", hook=key, argv=list(argv), status=status)
            else:
                log.info("hook_done", hook=key, argv=list(argv))
            return status
