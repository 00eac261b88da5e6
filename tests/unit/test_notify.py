"""Notify hooks: argv only, in order per key, killed after the timeout, never blocking."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from director.notify import HookRunner


@pytest.mark.asyncio
async def test_hooks_of_one_key_run_in_order_and_return_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner = HookRunner()
    started = time.monotonic()
    slow = runner.run("VI_1", ["/bin/sh", "-c", f"sleep 0.3; echo first >> {out}"])
    fast = runner.run("VI_1", ["/bin/sh", "-c", f"echo second >> {out}"])
    assert time.monotonic() - started < 0.1  # nothing waited for
    assert await slow == 0 and await fast == 0
    assert out.read_text().split() == ["first", "second"]
    assert (runner.started, runner.failed) == (2, 0)


@pytest.mark.asyncio
async def test_no_shell_arguments_passed_as_they_are(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner = HookRunner()
    status = await runner.run(
        "G", ["/bin/sh", "-c", f'printf "%s|" "$@" > {out}', "x", "a b", "$HOME;"]
    )
    assert status == 0
    assert out.read_text() == "a b|$HOME;|"


@pytest.mark.asyncio
async def test_timeout_kills_the_whole_session_and_failures_are_counted(tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    runner = HookRunner(timeout=0.3)
    started = time.monotonic()
    # the hook starts a child that would write the marker after 1 s: killed with it
    status = await runner.run("VI_1", ["/bin/sh", "-c", f"(sleep 1; touch {marker}) & sleep 10"])
    assert status is None and time.monotonic() - started < 2
    assert await runner.run("VI_1", ["/bin/false"]) == 1
    assert await runner.run("VI_1", ["/nonexistent/hook"]) is None
    assert runner.failed == 3
    await asyncio.sleep(1.2)
    assert not marker.exists()
    await runner.wait()
