"""This director's role (master / backup / fault) and who follows it.

VRRP decides the role; the IPVS sync daemon, the network rules and the notify hooks follow it.
A director without VRRP instances is master from the start. Subscribers are awaited one after
the other, in the order they subscribed, so the rules are in place before anything that relies
on them; one subscriber's failure is logged and does not stop the others.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("director")


class Role(enum.Enum):
    MASTER = "master"
    BACKUP = "backup"
    FAULT = "fault"

    def __str__(self) -> str:
        return self.value


Follower = Callable[[Role], Awaitable[None]]


class RoleBroadcast:
    """Holds the current role and tells every follower when it changes."""

    def __init__(self, initial: Role = Role.MASTER) -> None:
        self.role = initial
        self._followers: list[tuple[str, Follower]] = []

    def follow(self, name: str, follower: Follower) -> None:
        self._followers.append((name, follower))

    async def publish(self, role: Role) -> None:
        """Record ``role`` and await every follower with it, even when it did not change."""
        previous, self.role = self.role, role
        if previous is not role:
            log.info("role_changed", previous=str(previous), role=str(role))
        for name, follower in self._followers:
            try:
                await follower(role)
            except Exception as exc:
                log.error("role_follower_failed", follower=name, role=str(role), error=str(exc))
