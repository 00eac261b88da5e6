"""An external check program (keepalived's MISC_CHECK, ldirectord's "external").

``argv`` is run directly with ``asyncio.create_subprocess_exec``, never through a shell. In each
element, ``{address}`` and ``{port}`` are replaced by the target's (plain text replacement, so
other braces are left alone). The environment is directord's plus ``env``; stdin is
/dev/null; stdout and stderr go to an unlinked temporary file whose last line is quoted in the
error when the check fails.

Exit status: 0 = up. With ``weight_from_exit``: 0..254 = up, with that exit code as the weight
to give the real server (``ProbeResult.weight``); 255 = down. Killed by a signal = down.

The program runs in its own session (process group). On timeout, or if the probe is cancelled,
the whole group is killed with SIGKILL and the program is reaped before the probe returns, so
nothing it started outlives the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import IO

from checks.probes.result import ProbeFailed, ProbeResult, Step, Target, guarded, os_reason

OUTPUT_TAIL = 4096
DOWN_EXIT = 255


@dataclass(frozen=True)
class ScriptSpec:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    weight_from_exit: bool = False

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise ValueError(
                "argv must name a program, e.g. ('/usr/lib/director/check', '{address}')"
            )


def command_line(argv: tuple[str, ...], target: Target) -> list[str]:
    address, port = str(target.address), str(target.port)
    return [arg.replace("{address}", address).replace("{port}", port) for arg in argv]


def verdict(returncode: int, weight_from_exit: bool) -> tuple[bool, int | None]:
    """(up?, weight) from the exit status (negative: killed by that signal)."""
    if returncode < 0:
        return False, None
    if weight_from_exit:
        return (returncode != DOWN_EXIT, returncode if returncode != DOWN_EXIT else None)
    return returncode == 0, None


def last_line(output: IO[bytes]) -> str:
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - OUTPUT_TAIL))
    lines = output.read().decode(errors="replace").strip().splitlines()
    return lines[-1].strip()[:200] if lines else ""


def describe_exit(program: str, returncode: int, output: str) -> str:
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exited {returncode}"
    return f"check {program} {how}: {output}" if output else f"check {program} {how} (no output)"


async def probe(
    target: Target,
    spec: ScriptSpec,
    timeout: float,  # noqa: ASYNC109
) -> ProbeResult:
    argv = command_line(spec.argv, target)
    env = {**os.environ, **dict(spec.env)}

    async def check(step: Step) -> int | None:
        step.connected = True  # no connection: OSErrors are the program's, not a connect's
        with tempfile.TemporaryFile() as output:
            step.doing = f"starting {argv[0]}"
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProbeFailed(f"cannot run {argv[0]}: {os_reason(exc)}") from exc
            step.doing = f"waiting for {argv[0]} (pid {process.pid}) to exit"
            try:
                returncode = await process.wait()
            finally:
                if process.returncode is None:  # timed out or cancelled: kill the whole group
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()
            up, weight = verdict(returncode, spec.weight_from_exit)
            if not up:
                raise ProbeFailed(describe_exit(argv[0], returncode, last_line(output)))
            return weight

    return await guarded(target, timeout, check)
