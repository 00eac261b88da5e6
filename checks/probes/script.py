"""An external check program (keepalived's MISC_CHECK, ldirectord's "external").

``argv`` is run directly, never through a shell (:mod:`checks.process`). In each element,
``{address}`` and ``{port}`` are replaced by the target's (plain text replacement, so other
braces are left alone). The program runs as ``user`` (its uid, gid and supplementary groups;
None: as directord) with a clean environment: ``PATH``, ``HOME``, ``USER``, ``LOGNAME`` and
``env`` (:mod:`checks.identity`), never directord's own. stdin is /dev/null; stdout and stderr
go to a pipe of which only the last 4 KiB are kept (the rest is read and dropped: a program
that prints gigabytes costs no memory and no file); its last line is quoted in the error when
the check fails.

Exit status: 0 = up. With ``weight_from_exit``: 0..254 = up, with that exit code as the weight
to give the real server (``ProbeResult.weight``); 255 = down. Killed by a signal = down. A
program that cannot be started for lack of resources (no fd, process or memory for it) is a
local failure (:mod:`checks.local`): no verdict.

The program runs in its own session (process group). On timeout, or if the probe is cancelled,
the whole group is killed with SIGKILL and the program is reaped before the probe returns, so
nothing it started outlives the check.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from checks.identity import RunAs, environment
from checks.local import local_error, local_reason
from checks.probes.result import (
    LocalFailure,
    ProbeFailed,
    ProbeResult,
    Step,
    Target,
    guarded,
    os_reason,
)
from checks.process import Output, start

OUTPUT_TAIL = 4096
DOWN_EXIT = 255


@dataclass(frozen=True)
class ScriptSpec:
    """The command a script check runs, and how its exit is read."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    weight_from_exit: bool = False
    user: RunAs | None = None

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


def last_line(output: bytes) -> str:
    lines = output[-OUTPUT_TAIL:].decode(errors="replace").strip().splitlines()
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
    env = environment(spec.user, spec.env)

    async def check(step: Step) -> int | None:
        step.connected = True  # no connection: OSErrors are the program's, not a connect's
        step.doing = f"starting {argv[0]}"
        output = Output(tail=OUTPUT_TAIL)
        try:
            program = await start(argv, env=env, user=spec.user, output=output)
        except OSError as exc:
            error = f"cannot run {argv[0]}: {os_reason(exc)}"
            reason = local_reason(exc)  # fork, pipe, memory: this machine's, not the server's
            if reason is not None:
                raise LocalFailure(reason, local_error(reason, error)) from exc
            raise ProbeFailed(error) from exc
        async with program:
            step.doing = f"waiting for {argv[0]} (pid {program.pid}) to exit"
            returncode = await program.wait()
        up, weight = verdict(returncode, spec.weight_from_exit)
        if not up:
            raise ProbeFailed(describe_exit(argv[0], returncode, last_line(output.tail)))
        return weight

    return await guarded(target, timeout, check)
