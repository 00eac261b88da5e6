"""The daemon's state files: one atomic write, one loader that validates and names the fault.

Every state file (``owned-services.json``, ``maintenance.json``, ``status.json``) is written the
same way: a temporary file in the same directory, written and fsync'd, renamed over the old one,
then the directory fsync'd; a crash leaves either the old file or the new one, never half of
one. Reading goes through :func:`load_json`, which hands the parsed document to a validator and
turns every way of failing (unreadable, not JSON, wrong shape) into a :class:`StateFileError`
that names the file and says what is wrong. What the daemon then does is the caller's choice,
documented where it is made: it never crashes on a state file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class StateFileError(Exception):
    """A state file that cannot be used; the message names it and says what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file next to ``path`` (``.NAME.RANDOM``, mode 0600), open for writing: what
    ``tempfile.mkstemp`` does, without importing tempfile (and shutil, bz2, lzma) at start."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}")
        with contextlib.suppress(FileExistsError):
            return os.open(tmp, flags, 0o600), tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def write_json(path: Path, document: object, *, compact: bool = False) -> None:
    if compact:
        text = json.dumps(document, separators=(",", ":"), default=str)
    else:
        text = json.dumps(document, indent=1, default=str) + "\n"
    write_atomic(path, text.encode())


def load_json(path: Path, validate: Callable[[object], T]) -> T | None:
    """The validated document at ``path``; None when there is no file.

    ``validate`` raises ``ValueError`` (or ``TypeError``) with what is wrong; that, a file that
    cannot be read and one that is not JSON all become :class:`StateFileError`.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise StateFileError(path, f"not JSON ({exc})") from None
    try:
        return validate(document)
    except (ValueError, TypeError, KeyError) as exc:
        raise StateFileError(path, str(exc)) from None


def set_aside(path: Path, now: float | None = None) -> Path | None:
    """Rename a bad state file to ``NAME.corrupt-<time>`` (kept for the operator); its new
    name, or None when it could not be moved."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now if now is not None else time.time()))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        os.replace(path, target)
    except OSError:
        return None
    return target


def _write_made(path: Path, data: bytes | Callable[[], bytes]) -> None:
    write_atomic(path, data() if callable(data) else data)


class LatestWriter:
    """Writes a file that changes often (``status.json``) off the event loop, latest first.

    :meth:`put` takes the new bytes and returns at once; one task writes them with
    :func:`write_atomic` in a worker thread. Bytes put while a write is in progress replace
    any not yet written, so a burst of updates costs one or two writes, never a queue.
    ``run``: how a write of content made by a callable is run instead of a worker thread
    (:func:`director.offload.forked_call`: a large ``status.json`` made and written in a child
    process, so its encoding never holds the daemon's interpreter lock).
    """

    def __init__(
        self,
        path: Path,
        on_error: Callable[[OSError], None],
        *,
        run: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
    ) -> None:
        self.path = path
        self.on_error = on_error
        self.run = run
        self.writes = 0
        self._pending: bytes | Callable[[], bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def put(self, data: bytes | Callable[[], bytes]) -> None:
        """The new content, or how to make it (then made in the worker thread, at the write:
        a large ``status.json`` is encoded off the event loop)."""
        self._pending = data
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending is not None:
            data, self._pending = self._pending, None
            try:
                if self.run is not None and callable(data):
                    await self.run(functools.partial(_write_made, self.path, data))
                else:
                    await asyncio.to_thread(_write_made, self.path, data)
            except OSError as exc:
                self.on_error(exc)
            self.writes += 1

    async def flush(self) -> None:
        """Wait until everything put so far is on disk."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
