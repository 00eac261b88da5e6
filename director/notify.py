"""Notify hooks: external programs run on VRRP state changes, never through a shell.

``HookRunner.run(key, argv)`` returns at once; the program runs in the background
(:mod:`checks.process`) with stdin from /dev/null, in its own session (so a timeout kills it and
whatever it started), as the runner's ``user`` (``[daemon] script_user``; None: as directord)
with a clean environment (``PATH``, ``HOME``, ``USER``, ``LOGNAME``: :mod:`checks.identity`).
Its first 64 KiB of output are logged line by line once it exits; the rest is read and dropped
as it comes (counted in ``hook_output_truncated``), so a hook that prints gigabytes costs no
memory. Hooks with the same ``key`` (an instance or group name) run one after the other, in
the order asked, so ``notify_backup`` never overtakes the ``notify_master`` before it;
different keys run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from checks.identity import RunAs, environment
from checks.process import Output, start

log = structlog.get_logger("director")

DEFAULT_TIMEOUT = 30.0
MAX_OUTPUT = 64 * 1024  # bytes of a hook's output that are logged


class HookRunner:
    def __init__(self, timeout: float = DEFAULT_TIMEOUT, *, user: RunAs | None = None) -> None:
        self.timeout = timeout
        self.user = user
        self._env = environment(user)
        self.started = 0
        self.failed = 0  # exit status != 0, timeouts and programs that could not start
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[int | None]] = set()

    def run_as(self, user: RunAs | None) -> None:
        """Hooks started from now on run as ``user`` (a reload changed ``script_user``)."""
        self.user = user
        self._env = environment(user)

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
            output = Output(head=MAX_OUTPUT)
            try:
                program = await start(argv, env=self._env, user=self.user, output=output)
            except OSError as exc:
                self.failed += 1
                log.error("hook_failed", hook=key, argv=list(argv), error=str(exc))
                return None
            async with program:
                status: int | None = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        status = await program.wait()
            self._log_output(key, argv, output)
            if status is None:
                self.failed += 1
                log.error("hook_timeout", hook=key, argv=list(argv), timeout=self.timeout)
            elif status != 0:
                self.failed += 1
                log.error("hook_exit", hook=key, argv=list(argv), status=status)
            else:
                log.info("hook_done", hook=key, argv=list(argv))
            return status

    @staticmethod
    def _log_output(key: str, argv: tuple[str, ...], output: Output) -> None:
        for line in output.head.decode(errors="replace").splitlines():
            log.info("hook_output", hook=key, program=argv[0], line=line)
        if output.dropped:
            log.warning(
                "hook_output_truncated",
                hook=key,
                program=argv[0],
                logged_bytes=len(output.head),
                total_bytes=output.total,
            )
