"""``[virtual_server.check]`` and ``[virtual_server.real_server.check]``: health checks.

A service's check applies to each of its real servers; a real server's own ``check`` table
overrides single keys of it (``port``, ``path``, ``host``...) or, with ``type``, replaces its kind.
Every key that applies to only some kinds is refused on the others, so a ``path`` on a ``tcp``
check is an error and not silently ignored. Regular expressions (``body_regex``, ``expect``
with ``expect_regex``) are RE2's (:mod:`checks.regex`): a pattern RE2 cannot run (a
backreference, lookaround) is an error that says so. A ``user`` must exist on this machine.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, PlainValidator, model_validator

from checks import identity
from director.config import machine
from director.config.fields import Bool, Name, Port, Seconds, fail, raise_findings, show

CheckType = Literal["tcp", "http", "https", "rdp", "exchange", "smtp", "script", "none"]

EXCHANGE_VDIRS = (
    "owa",
    "ecp",
    "ews",
    "Microsoft-Server-ActiveSync",
    "autodiscover",
    "oab",
    "rpc",
    "mapi",
)


def _count(lo: int, hi: int) -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(f"expected an integer from {lo} to {hi}, found {show(value)}")
        return value

    return PlainValidator(check)


def _delay(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        fail(f"expected a number of seconds (0 or more), found {show(value)}")
    return float(value)


def _statuses(value: object) -> tuple[tuple[int, int], ...]:
    """``[200, "300-399"]`` -> ((200, 200), (300, 399))."""
    items = value if isinstance(value, list | tuple) else [value]
    out: list[tuple[int, int]] = []
    for item in items:
        lo = hi = None
        if isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif isinstance(item, str) and (m := re.fullmatch(r"\s*(\d{3})\s*-\s*(\d{3})\s*", item)):
            lo, hi = int(m.group(1)), int(m.group(2))
        if lo is None or hi is None or not 100 <= lo <= hi <= 599:
            fail(f'expected status codes like 200 or "200-399" (100 to 599), found {show(item)}')
        out.append((lo, hi))
    if not out:
        fail("expected at least one status code or range, found an empty list")
    return tuple(out)


def regex_problem(pattern: str, *, raw: bool = False) -> str | None:
    """Why ``pattern`` is no regular expression a check can use (RE2, linear time), or None;
    ``raw``: matched against bytes (a tcp ``expect``). RE2 is imported by the first pattern
    (a config without one loads without it)."""
    from checks import regex

    machine.read()  # RE2's verdict: not kept by the start cache
    why = regex.problem(pattern.encode()) if raw else regex.problem(pattern)
    if why is None:
        return None
    return (
        "expected a valid regular expression that RE2 can run (linear time), "
        f"found {show(pattern)}: {why}"
    )


def _regex(value: object) -> str:
    if not isinstance(value, str):
        fail(f"expected a regular expression as a string, found {show(value)}")
    problem = regex_problem(value)
    if problem is not None:
        fail(problem)
    return value


def _user(value: object) -> str:
    """``"nobody"`` or ``"nobody:nogroup"``: a user (and group) that exists on this machine."""
    if isinstance(value, str):
        machine.read()  # the user database's answer: not kept by the start cache
        try:
            identity.resolve(value)
        except ValueError as exc:
            fail(
                'expected a user, or "USER:GROUP", that exists on this machine, like "nobody" '
                f'or "nobody:nogroup", found {show(value)} ({exc})'
            )
        return value
    fail(f'expected a user name like "nobody" or "nobody:nogroup", found {show(value)}')


def _argv(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(a, str) for a in value)
    ):
        fail(
            'expected a command as a list of strings, like ["/usr/local/bin/check", '
            f'"{{address}}", "{{port}}"] (never a shell string), found {show(value)}'
        )
    if not value[0].startswith("/"):
        fail(f"expected the program as an absolute path, found {show(value[0])}")
    return tuple(value)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        fail(f"expected a non-empty string, found {show(value)}")
    return value


Count = Annotated[int, _count(1, 100)]
Attempts = Annotated[int, _count(1, 10)]
Delay = Annotated[float, PlainValidator(_delay)]
Statuses = Annotated[tuple[tuple[int, int], ...], PlainValidator(_statuses)]
Regex = Annotated[str, PlainValidator(_regex)]
Argv = Annotated[tuple[str, ...], PlainValidator(_argv)]
Text = Annotated[str, PlainValidator(_text)]
User = Annotated[str, PlainValidator(_user)]

# Which kinds each kind-specific key applies to.
_APPLIES: dict[str, frozenset[str]] = {
    "path": frozenset({"http", "https"}),
    "method": frozenset({"http", "https"}),
    "expect_status": frozenset({"http", "https"}),
    "body_contains": frozenset({"http", "https"}),
    "body_regex": frozenset({"http", "https"}),
    "username": frozenset({"http", "https"}),
    "password": frozenset({"http", "https"}),
    "http_version": frozenset({"http", "https"}),
    "host": frozenset({"http", "https", "exchange"}),
    "sni": frozenset({"https", "exchange", "smtp"}),
    "verify": frozenset({"https", "exchange", "smtp"}),
    "ca_file": frozenset({"https", "exchange", "smtp"}),
    "send": frozenset({"tcp"}),
    "expect": frozenset({"tcp"}),
    "expect_regex": frozenset({"tcp"}),
    "vdirs": frozenset({"exchange"}),
    "mode": frozenset({"exchange"}),
    "helo_name": frozenset({"smtp"}),
    "starttls": frozenset({"smtp"}),
    "command": frozenset({"script"}),
    "weight_from_exit": frozenset({"script"}),
    "user": frozenset({"script"}),
}


class CheckConfig(BaseModel):
    """One check table. All keys are optional so a real server's table can override a few."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    type: CheckType | None = None
    port: Port | None = None
    interval: Seconds | None = None
    timeout: Seconds | None = None
    rise: Count | None = None
    fall: Count | None = None
    attempts: Attempts | None = None
    retry_delay: Delay | None = None
    reentry: Delay | None = None
    initial: Literal["up", "down"] | None = None
    # http / https / exchange
    path: Text | None = None
    method: Literal["GET", "HEAD"] | None = None
    host: Text | None = None
    expect_status: Statuses | None = None
    body_contains: Text | None = None
    body_regex: Regex | None = None
    username: Text | None = None
    password: str | None = None
    http_version: Literal["1.0", "1.1"] | None = None
    sni: Name | None = None
    verify: Bool | None = None
    ca_file: Text | None = None
    # tcp
    send: str | None = None
    expect: str | None = None
    expect_regex: Bool | None = None
    # exchange
    vdirs: tuple[Text, ...] | None = None
    mode: Literal["all", "any"] | None = None
    # smtp
    helo_name: Name | None = None
    starttls: Bool | None = None
    # script
    command: Argv | None = None
    weight_from_exit: Bool | None = None
    user: User | None = None  # default: [daemon] script_user

    def merged(self, override: CheckConfig | None) -> CheckConfig:
        """This table with the keys ``override`` sets replacing ours."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class ResolvedCheck(BaseModel):
    """A complete check for one real server, every default filled in."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    type: CheckType
    port: int
    interval: float = 5.0
    timeout: float = 3.0
    rise: int = 2
    fall: int = 3
    attempts: int = 1
    retry_delay: float = 1.0
    reentry: float = 0.0
    initial: Literal["up", "down"] = "up"
    path: str = "/"
    method: Literal["GET", "HEAD"] = "GET"
    host: str | None = None
    expect_status: tuple[tuple[int, int], ...] = ((200, 399),)
    body_contains: str | None = None
    body_regex: str | None = None
    username: str | None = None
    password: str | None = None
    http_version: Literal["1.0", "1.1"] = "1.1"
    sni: str | None = None
    verify: bool = True
    ca_file: str | None = None
    send: str | None = None
    expect: str | None = None
    expect_regex: bool = False
    vdirs: tuple[str, ...] = EXCHANGE_VDIRS
    mode: Literal["all", "any"] = "all"
    helo_name: str = "director"
    starttls: bool = False
    command: tuple[str, ...] = ()
    weight_from_exit: bool = False
    user: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.type == "script" and not self.command:
            raise_findings("check", [(("command",), "a script check needs command = [...]")])
        return self


def check_problems(check: CheckConfig, kind: str | None) -> list[tuple[tuple[str, ...], str]]:
    """Keys that do not apply to the check's kind, and inconsistent timings."""
    findings: list[tuple[tuple[str, ...], str]] = []
    if kind is not None:
        for key, kinds in _APPLIES.items():
            if getattr(check, key) is not None and kind not in kinds:
                findings.append(
                    (
                        (key,),
                        f"{key} applies to {', '.join(sorted(kinds))} checks, "
                        f'found it on a check of type "{kind}"',
                    )
                )
    if check.timeout is not None and check.interval is not None and check.timeout > check.interval:
        findings.append(
            (
                ("timeout",),
                f"expected timeout at most interval ({check.interval} s), found {check.timeout} s",
            )
        )
    if check.type == "script" and check.command is None:  # (an override may keep the base's)
        findings.append((("command",), 'a check of type "script" needs command = [...]'))
    if (check.username is None) != (check.password is None):
        findings.append((("username",), "basic auth needs both username and password"))
    if check.expect_regex and check.expect is not None:
        problem = regex_problem(check.expect, raw=True)
        if problem is not None:
            findings.append((("expect",), problem))
    return findings


def merged_problems(table: CheckConfig) -> list[tuple[tuple[str, ...], str]]:
    """Problems only the merged table of a real server shows (its ``expect`` from one level,
    ``expect_regex`` from the other)."""
    if table.expect_regex and table.expect is not None:
        problem = regex_problem(table.expect, raw=True)
        if problem is not None:
            return [(("expect",), problem)]
    return []


def resolve(check: CheckConfig, default_port: int) -> ResolvedCheck:
    """A validated table (kind known) with its defaults; ``default_port`` when port is unset."""
    values = check.model_dump(exclude_none=True)
    values["port"] = check.port if check.port is not None else default_port
    if check.type in ("https", "exchange") and check.port is None and default_port == 0:
        values["port"] = 443
    return ResolvedCheck(**values)
