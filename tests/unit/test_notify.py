"""Notify hooks: argv only, in order per key, killed after the timeout, never blocking."""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from checks import identity
from director.notify import MAX_OUTPUT, HookRunner
from tests.checks.footprint import footprint


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


BIG = 256 * 1024 * 1024
MIB = 1024 * 1024


@pytest.mark.asyncio
async def test_a_hook_printing_hundreds_of_mib_is_read_and_dropped_past_the_limit() -> None:
    runner = HookRunner(timeout=30)
    code = f'yes "hook line" | head -c {BIG}; exit 4'
    with capture_logs() as logs:
        async with footprint() as seen:
            status = await runner.run("VI_1", ["/bin/sh", "-c", code])
    assert status == 4 and runner.failed == 1
    assert seen.samples >= 3
    assert seen.rss_growth < 32 * MIB, f"RSS grew {seen.rss_growth / MIB:.0f} MiB"
    lines = [e["line"] for e in logs if e["event"] == "hook_output"]
    # the first 64 KiB, logged line by line: whole lines, then the part of one that fits
    assert len(lines) == MAX_OUTPUT // 10 + 1
    assert set(lines[:-1]) == {"hook line"} and lines[-1] == "hook line"[: MAX_OUTPUT % 10]
    [truncated] = [e for e in logs if e["event"] == "hook_output_truncated"]
    assert (truncated["logged_bytes"], truncated["total_bytes"]) == (MAX_OUTPUT, BIG)
    assert [e["status"] for e in logs if e["event"] == "hook_exit"] == [4]


@pytest.mark.asyncio
async def test_hooks_run_as_the_script_user_with_a_clean_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing user needs root")
    monkeypatch.setenv("DIRECTOR_TEST_SECRET", "the daemon's own")
    nobody = pwd.getpwnam("nobody")
    runner = HookRunner(user=identity.resolve("nobody"), timeout=2.0)
    hook = 'echo "$(id -u) $(id -g) [$(id -G)] ${DIRECTOR_TEST_SECRET:-none} $USER $HOME $PATH"'
    with capture_logs() as logs:
        assert await runner.run("VI_1", ["/bin/sh", "-c", hook, "MASTER"]) == 0
        # a hook of another user that hangs is still killed at the timeout
        assert await runner.run("VI_1", ["/bin/sh", "-c", "sleep 10"]) is None
    assert [e["line"] for e in logs if e["event"] == "hook_output"] == [
        f"{nobody.pw_uid} {nobody.pw_gid} [{nobody.pw_gid}] none nobody {nobody.pw_dir} "
        f"{identity.PATH}"
    ]
    assert [e["event"] for e in logs if e["event"].startswith("hook_t")] == ["hook_timeout"]
