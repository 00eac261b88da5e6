"""The thin nftables adapter: one ``nft -j -f`` run per batch, and ``nft -j list table``.

A batch is one netlink transaction: the kernel applies all of it or none of it, so a rejected
rule leaves the previous ruleset in force. Only the daemon's own table is ever named; the
command line (``argv``) is a parameter so tests can run it in a network namespace
(``ip netns exec NS nft``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Sequence
from typing import Any

from director.network.ruleset import FAMILY, JSON, batch

TIMEOUT = 30.0


class NftError(Exception):
    """nft failed or refused a batch; the message says what we were doing and what nft said."""


class Nft:
    def __init__(self, argv: Sequence[str] = ("nft",), timeout: float = TIMEOUT) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        self.batches = 0  # transactions sent (for tests and status)
        self.runs = 0  # nft processes started (listings, checks and transactions)

    async def _run(self, args: Sequence[str], stdin: bytes | None, doing: str) -> str:
        self.runs += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NftError(f"{doing}: cannot run {self.argv[0]}: {exc.strerror or exc}") from exc
        try:
            # asyncio.timeout, not wait_for: on 3.11, wait_for returns the result of an nft run
            # that ends as the caller is cancelled and swallows the cancellation (a stop that
            # cancels a role change hung on it when a Ctrl-C killed nft at the same moment)
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NftError(f"{doing}: nft did not finish within {self.timeout:g} s") from None
        except asyncio.CancelledError:  # a stop: the run is not left behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode is not None and proc.returncode < 0:  # a signal, e.g. a Ctrl-C's
            raise NftError(f"{doing}: nft was killed by {_signal_name(-proc.returncode)}")
        if proc.returncode != 0:
            raise NftError(f"{doing}: {_clean(err.decode(errors='replace'))}")
        return out.decode(errors="replace")

    async def apply(self, commands: Sequence[JSON], doing: str) -> None:
        """Send ``commands`` as one transaction; NftError (nothing changed) if nft refuses."""
        if not commands:
            return
        document = json.dumps(batch(commands)).encode()
        self.batches += 1
        # Not "-f -": nft opens /dev/stdin for that, which minimal systems (initramfs guests,
        # some containers) lack; /proc/self/fd/0 is the same pipe wherever /proc is mounted.
        await self._run(("-j", "-f", "/proc/self/fd/0"), document, doing)

    async def check(self, commands: Sequence[JSON], doing: str) -> None:
        """Have nft and the kernel validate ``commands`` without committing (``nft -c``)."""
        document = json.dumps(batch(commands)).encode()
        await self._run(("-c", "-j", "-f", "/proc/self/fd/0"), document, doing)

    async def list_table(self, table: str, family: str = FAMILY) -> dict[str, Any] | None:
        """Our table as nft's JSON, or None when it does not exist."""
        try:
            text = await self._run(
                ("-j", "list", "table", family, table), None, f"reading table {family} {table}"
            )
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise NftError(f"reading table {family} {table}: nft printed no JSON: {exc}") from None
        return data

    async def show_table(self, table: str, family: str = FAMILY) -> str | None:
        """Our table as ``nft list table`` prints it (with counters), or None when absent."""
        try:
            return await self._run(
                ("list", "table", family, table), None, f"listing table {family} {table}"
            )
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _clean(stderr: str) -> str:
    """nft's error text on one line: ``internal:0:0-0: Error: X`` -> ``X``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    messages = [line.split("Error: ", 1)[1] if "Error: " in line else line for line in lines]
    return "; ".join(messages) or "nft failed without a message"
