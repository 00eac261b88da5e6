"""The ExaBGP text API as a sans-I/O dialogue: lines in, commands out, acknowledgements tracked.

ExaBGP 4.2 runs an API process and reads commands from its stdout, one per line; with
``exabgp.api.ack = true`` it answers every command with ``done`` or ``error`` on the process's
stdin, in order. With ``neighbor-changes`` and the text encoder it also reports sessions
(``neighbor 198.18.1.254 up``, ``... connected``, ``... down - REASON``) and, when it stops,
``shutdown PID PPID``.

:class:`ExaBgpApi` is level-triggered: :meth:`ExaBgpApi.want` takes the routes that should be
announced now and returns the commands that take ExaBGP there from what was already sent;
:meth:`ExaBgpApi.receive` takes bytes read from ExaBGP and returns events. It never does I/O
and never reads the clock (``now`` is passed in, for session uptimes). A restarted ExaBGP
starts with nothing announced: :meth:`ExaBgpApi.reset` forgets what was sent, and the next
:meth:`want` sends everything again.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from director.config.bgp import HostPrefix
from director.config.fields import IPAddress

MAX_LINE = 65536  # a line longer than this is not ExaBGP talking to us: dropped and counted


@dataclass(frozen=True)
class Route:
    """One announcement as ExaBGP is told it."""

    prefix: HostPrefix
    next_hop: IPAddress | Literal["self"] = "self"
    communities: tuple[str, ...] = ()
    med: int | None = None

    def announce_command(self) -> str:
        words = ["announce route", str(self.prefix), "next-hop", str(self.next_hop)]
        if self.communities:
            words += ["community", f"[{' '.join(self.communities)}]"]
        if self.med is not None:
            words += ["med", str(self.med)]
        return " ".join(words)

    def withdraw_command(self) -> str:
        return f"withdraw route {self.prefix} next-hop {self.next_hop}"


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandDone:
    command: str


@dataclass(frozen=True)
class CommandFailed:
    command: str


@dataclass(frozen=True)
class SessionChanged:
    peer: IPAddress
    state: Literal["connected", "up", "down"]
    reason: str = ""


@dataclass(frozen=True)
class ExaBgpStopping:
    """ExaBGP said ``shutdown``: it is going away with its sessions."""


@dataclass(frozen=True)
class Unexpected:
    """A line that is none of the above (logged and counted, never raised)."""

    line: str


Event = CommandDone | CommandFailed | SessionChanged | ExaBgpStopping | Unexpected


@dataclass
class Session:
    state: Literal["idle", "connected", "up", "down"] = "idle"
    since: float = 0.0
    reason: str = ""
    flaps: int = 0


@dataclass
class ExaBgpApi:
    """One ExaBGP's state as seen through its pipe."""

    sent: dict[HostPrefix, Route] = field(default_factory=dict)  # announced, acked or not
    acked: dict[HostPrefix, Route] = field(default_factory=dict)  # ExaBGP said done
    pending: collections.deque[tuple[str, Route, bool]] = field(
        default_factory=collections.deque
    )  # (command, route, announce) awaiting done/error, in order
    sessions: dict[IPAddress, Session] = field(default_factory=dict)
    failed: int = 0  # commands ExaBGP answered with error
    unexpected: int = 0
    _buffer: bytes = b""

    def want(self, routes: Iterable[Route]) -> list[str]:
        """Commands (without newline) that make ExaBGP announce exactly ``routes``:
        withdrawals first, then announcements (new or changed)."""
        wanted = {r.prefix: r for r in routes}
        commands: list[str] = []
        for prefix, route in list(self.sent.items()):
            if prefix not in wanted:
                commands.append(self._queue(route.withdraw_command(), route, False))
                del self.sent[prefix]
        for prefix, route in wanted.items():
            if self.sent.get(prefix) != route:
                commands.append(self._queue(route.announce_command(), route, True))
                self.sent[prefix] = route
        return commands

    def _queue(self, command: str, route: Route, announce: bool) -> str:
        self.pending.append((command, route, announce))
        return command

    def reset(self) -> None:
        """ExaBGP (re)started: it announces nothing and owes no acknowledgement."""
        self.sent.clear()
        self.acked.clear()
        self.pending.clear()
        self._buffer = b""
        for session in self.sessions.values():
            session.state = "idle"

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes read from ExaBGP; complete lines become events."""
        self._buffer += data
        events: list[Event] = []
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            events.append(self._line(raw.decode("utf-8", "replace").strip(), now))
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self.unexpected += 1
            events.append(Unexpected("(a line longer than 64 KiB, dropped)"))
        return [e for e in events if not (isinstance(e, Unexpected) and not e.line)]

    def _line(self, line: str, now: float) -> Event:
        if line in ("done", "error"):
            if not self.pending:
                self.unexpected += 1
                return Unexpected(line)
            command, route, announce = self.pending.popleft()
            if line == "error":
                self.failed += 1
                # ExaBGP did not take it: it still has what it had; the next want() tries again
                if announce and self.sent.get(route.prefix) == route:
                    del self.sent[route.prefix]
                elif not announce and route.prefix not in self.sent:
                    self.sent[route.prefix] = route
                return CommandFailed(command)
            if announce:
                self.acked[route.prefix] = route
            else:
                self.acked.pop(route.prefix, None)
            return CommandDone(command)
        if line.startswith("shutdown"):
            return ExaBgpStopping()
        words = line.split()
        if len(words) >= 3 and words[0] == "neighbor" and words[2] in ("up", "connected", "down"):
            try:
                peer = ipaddress.ip_address(words[1])
            except ValueError:
                pass
            else:
                state: Literal["connected", "up", "down"] = words[2]  # type: ignore[assignment]
                reason = line.split(" - ", 1)[1] if state == "down" and " - " in line else ""
                session = self.sessions.setdefault(peer, Session())
                if session.state == "up" and state != "up":
                    session.flaps += 1
                session.state, session.since, session.reason = state, now, reason
                return SessionChanged(peer, state, reason)
        if line:
            self.unexpected += 1
        return Unexpected(line)

    def sessions_json(self, now: float) -> list[dict[str, object]]:
        return [
            {
                "peer": str(peer),
                "state": s.state,
                "for_seconds": round(max(0.0, now - s.since), 3) if s.since else None,
                "reason": s.reason,
                "flaps": s.flaps,
            }
            for peer, s in self.sessions.items()
        ]
