"""The nft adapter's errors for a run that did not end by itself (no kernel table involved:
the command line is a shell that stands in for nft)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from director.network.nft import Nft, NftError


def test_an_nft_killed_by_a_signal_says_which_signal_and_what_was_being_done() -> None:
    """A Ctrl-C reaches the daemon's whole process group, nft included: the error says so
    instead of "nft failed without a message"."""
    nft = Nft(("sh", "-c", "kill -TERM $$", "nft"))
    with pytest.raises(NftError) as caught:
        asyncio.run(nft.list_table("director"))
    assert str(caught.value) == "reading table inet director: nft was killed by SIGTERM"


def test_an_nft_that_fails_silently_still_says_what_was_being_done() -> None:
    nft = Nft(("sh", "-c", "exit 3", "nft"))
    with pytest.raises(NftError) as caught:
        asyncio.run(nft.apply([{"add": {"table": {"family": "inet", "name": "d"}}}], "applying"))
    assert str(caught.value) == "applying: nft failed without a message"


def test_a_cancelled_run_is_cancelled_and_its_nft_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    nft = Nft(("sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 30', "nft"))

    def written() -> str:
        return pid_file.read_text().strip() if pid_file.exists() else ""

    def running(pid: int) -> bool:
        return Path(f"/proc/{pid}").exists()

    async def cancel_it() -> None:
        task = asyncio.ensure_future(nft.list_table("director"))
        for _ in range(200):
            if written():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pid = int(written())
        for _ in range(200):  # killed, then reaped by asyncio's child watcher
            if not running(pid):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"nft (pid {pid}) still runs after its run was cancelled")

    asyncio.run(cancel_it())
