"""Script probe: real programs (sh) that succeed, fail, hang (killed with their process group),
print nothing, or report a weight through their exit code."""

from __future__ import annotations

import os
import pwd
from ipaddress import ip_address
from pathlib import Path

import pytest

from checks import identity
from checks.probes import script
from checks.probes.result import Target
from checks.probes.script import ScriptSpec
from tests.checks.footprint import footprint

TARGET = Target(ip_address("198.18.1.11"), 8080)
WAIT, SHORT = 5.0, 0.3
pytestmark = pytest.mark.asyncio


def sh(
    code: str,
    *args: str,
    env: tuple[tuple[str, str], ...] = (),
    weight_from_exit: bool = False,
) -> ScriptSpec:
    """A check that runs code with /bin/sh, with args as $1, $2, ..."""
    return ScriptSpec(("/bin/sh", "-c", code, "check", *args), env, weight_from_exit)


async def test_exit_zero_is_up_and_placeholders_are_substituted() -> None:
    spec = sh(
        'test "$1" = 198.18.1.11 && test "$2" = 8080 && test "$3" = "{x}:8080"',
        "{address}",
        "{port}",
        "{x}:{port}",
    )
    result = await script.probe(TARGET, spec, WAIT)
    assert result.ok, result.error
    assert result.weight is None
    assert 0 < result.latency < WAIT


async def test_failure_quotes_the_last_line_of_output() -> None:
    result = await script.probe(
        TARGET, sh('echo "checking"; echo "backend not ready" >&2; exit 2'), WAIT
    )
    assert not result.ok
    assert result.error == "check /bin/sh exited 2: backend not ready"


async def test_failure_without_output() -> None:
    result = await script.probe(TARGET, sh("exit 1"), WAIT)
    assert result.error == "check /bin/sh exited 1 (no output)"


async def test_killed_by_a_signal_is_down() -> None:
    result = await script.probe(TARGET, sh("kill -TERM $$"), WAIT)
    assert result.error == "check /bin/sh killed by SIGTERM (no output)"


async def test_environment_additions() -> None:
    spec = sh('test "$CHECK_MODE" = strict && test -n "$PATH"', env=(("CHECK_MODE", "strict"),))
    result = await script.probe(TARGET, spec, WAIT)
    assert result.ok, result.error


def _gone(pid: int) -> bool:
    """True once pid has exited (reaped, or a zombie waiting for its new parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


async def test_hanging_script_is_killed_with_its_children(tmp_path: Path) -> None:
    code = 'echo $$ > "$1/parent"; sleep 60 & echo $! > "$1/child"; wait'
    result = await script.probe(TARGET, sh(code, str(tmp_path)), SHORT)
    assert not result.ok
    parent = int((tmp_path / "parent").read_text())
    child = int((tmp_path / "child").read_text())
    assert result.error == f"timed out after {SHORT:g} s waiting for /bin/sh (pid {parent}) to exit"
    assert SHORT <= result.latency < SHORT + 0.5
    with pytest.raises(ProcessLookupError):  # reaped by the probe, not a zombie
        os.kill(parent, 0)
    assert _gone(child), "the script's child survived the probe"


@pytest.mark.parametrize(
    ("code", "ok", "weight"), [(0, True, 0), (7, True, 7), (254, True, 254), (255, False, None)]
)
async def test_exit_code_as_weight(code: int, ok: bool, weight: int | None) -> None:
    result = await script.probe(TARGET, sh(f"exit {code}", weight_from_exit=True), WAIT)
    assert (result.ok, result.weight) == (ok, weight)


async def test_missing_program() -> None:
    result = await script.probe(TARGET, ScriptSpec(("/nonexistent/check", "{address}")), WAIT)
    assert result.error == "cannot run /nonexistent/check: no such file or directory"


BIG = 256 * 1024 * 1024  # bytes a script prints, far past what the probe keeps
MIB = 1024 * 1024


async def test_a_script_printing_hundreds_of_mib_costs_no_memory_and_no_file() -> None:
    code = f'yes "some progress output" | head -c {BIG}; echo; echo "the last line"; exit 3'
    async with footprint() as seen:
        result = await script.probe(TARGET, sh(code), 30.0)
    assert result.error == "check /bin/sh exited 3: the last line"
    assert result.latency < 30.0
    assert seen.samples >= 3  # the loop ran meanwhile
    assert seen.rss_growth < 32 * MIB, f"RSS grew {seen.rss_growth / MIB:.0f} MiB"
    assert seen.largest_file < MIB, f"a {seen.largest_file / MIB:.0f} MiB file held the output"


async def test_a_script_runs_as_its_user_with_a_clean_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing user needs root")
    monkeypatch.setenv("DIRECTOR_TEST_SECRET", "the daemon's own")
    nobody = pwd.getpwnam("nobody")
    spec = ScriptSpec(
        (
            "/bin/sh",
            "-c",
            'echo "$(id -u) $(id -g) [$(id -G)] ${DIRECTOR_TEST_SECRET:-none} '
            '$USER $HOME $PATH $(env | wc -l)"; exit 1',
        ),
        env=(("CHECK_MODE", "strict"),),
        user=identity.resolve("nobody"),
    )
    result = await script.probe(TARGET, spec, WAIT)
    assert result.error == (
        f"check /bin/sh exited 1: {nobody.pw_uid} {nobody.pw_gid} [{nobody.pw_gid}] none "
        f"nobody {nobody.pw_dir} {identity.PATH} 6"  # PATH HOME USER LOGNAME CHECK_MODE PWD
    )
