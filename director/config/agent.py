"""``[virtual_server.agent]`` and ``[virtual_server.real_server.agent]``: feedback weights.

An HAProxy-style agent on each real server (:mod:`checks.agent`) says how much of its configured
weight it wants (``75%``), or ``drain``, ``maint``, ``down``, ``ready``, ``up``, ``maxconn:N``.
A service's table applies to each of its real servers; a real server's own table overrides
single keys of it, and ``enabled = false`` turns the agent off for that server.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainValidator

from checks.agent import MAX_LINE, MAX_PERCENT
from director.config.fields import Address, Bool, Seconds, fail, show

DEFAULT_INTERVAL = 2.0  # HAProxy's agent-inter defaults to inter, 2 s
DEFAULT_TIMEOUT = 1.0


def _int_in(lo: int, hi: int, what: str) -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(f"expected {what} from {lo} to {hi}, found {show(value)}")
        return value

    return PlainValidator(check)


def _points(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        fail(f"expected percentage points from 0 to 100, found {show(value)}")
    return float(value)


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        fail(f"expected a number of seconds from 0 to 86400, found {show(value)}")
    return float(value)


def _send(value: object) -> str:
    if not isinstance(value, str):
        fail(f'expected a string like "state\\n", found {show(value)}')
    try:
        size = len(value.encode("latin-1"))
    except UnicodeEncodeError:
        fail(f"expected bytes 0 to 255 (latin-1 text), found {show(value)}")
    if size > MAX_LINE:
        fail(f"expected at most {MAX_LINE} bytes, found {size}")
    return value


AgentPort = Annotated[int, _int_in(1, 65535, "a port")]
Percent = Annotated[int, _int_in(0, MAX_PERCENT, "a percentage")]
Points = Annotated[float, PlainValidator(_points)]
Rate = Annotated[float, PlainValidator(_rate)]
Send = Annotated[str, PlainValidator(_send)]


class AgentConfig(BaseModel):
    """One agent table. All keys optional so a real server's table can override a few."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    enabled: Bool | None = None
    port: AgentPort | None = None
    address: Address | None = None
    interval: Seconds | None = None
    timeout: Seconds | None = None
    send: Send | None = None
    min_percent: Percent | None = None
    max_percent: Percent | None = None
    threshold: Points | None = None
    rate_limit: Rate | None = None
    maxconn: Bool | None = None

    def merged(self, override: AgentConfig | None) -> AgentConfig:
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class ResolvedAgent(BaseModel):
    """A complete agent for one real server, every default filled in."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    port: int
    address: str  # the real server's when not given
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    send: str = ""
    min_percent: int = 0
    max_percent: int = 100
    threshold: float = 0.0
    rate_limit: float = 0.0
    maxconn: bool = True


def agent_problems(table: AgentConfig) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong with a (merged) agent table that is enabled."""
    findings: list[tuple[tuple[str, ...], str]] = []
    if table.port is None:
        findings.append((("port",), "an agent needs a port: expected agent.port, found none"))
    lo = table.min_percent if table.min_percent is not None else 0
    hi = table.max_percent if table.max_percent is not None else 100
    if lo > hi:
        findings.append(
            (("min_percent",), f"expected min_percent at most max_percent ({hi}), found {lo}")
        )
    interval = table.interval if table.interval is not None else DEFAULT_INTERVAL
    if table.timeout is not None and table.timeout > interval:
        findings.append(
            (
                ("timeout",),
                f"expected timeout at most interval ({interval} s), found {table.timeout} s",
            )
        )
    return findings


def resolve(table: AgentConfig | None, server_address: str) -> ResolvedAgent | None:
    """The agent of a real server from its merged table (validated), or None without one."""
    if table is None or table.enabled is False or table.port is None:
        return None
    values = table.model_dump(exclude_none=True, exclude={"enabled", "address"})
    values["address"] = str(table.address) if table.address is not None else server_address
    interval = values.get("interval", DEFAULT_INTERVAL)
    values.setdefault("timeout", min(DEFAULT_TIMEOUT, interval))
    return ResolvedAgent(**values)
