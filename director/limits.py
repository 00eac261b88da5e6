"""The daemon's open-file budget: enough descriptors for every probe and every listener.

Probes in flight (one socket each; a script check also holds its pipes), the control and HTTP
listeners' connections, VRRP's sockets and the daemon's own (netlink, epoll, logs) all come out
of one ``RLIMIT_NOFILE``. At start the daemon raises its soft limit as far as the hard limit
allows (the unit sets ``LimitNOFILE``), then checks the sum below. When the limit is too low,
the daemon still runs, with fewer probes in flight than ``max_concurrent_probes`` asks, and says
so (log, status, ``directorctl doctor``): a director that checks slower beats one that does not
run.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

RESERVED = 64  # the daemon's own: netlink and rtnetlink sockets, epoll, signal pipe, logs, nft
PER_VRRP_INSTANCE = 4  # raw socket, packet socket for GARP, rtnetlink, link watch
PER_PROBE = 1  # a socket; a script check's pipes are counted in RESERVED's margin


@dataclass(frozen=True)
class FdBudget:
    """The open-file limit against what the config needs."""

    limit: int  # the soft RLIMIT_NOFILE in force
    needed: int  # what the config asks for
    probes: int  # probes in flight the limit allows (<= max_concurrent_probes)

    @property
    def short(self) -> bool:
        return self.limit < self.needed

    def problem(self, max_probes: int) -> str | None:
        if not self.short:
            return None
        return (
            f"open-file limit {self.limit} is below the {self.needed} this config needs "
            f"({max_probes} probes in flight, the listeners' connections and the daemon's own); "
            f"running at most {self.probes} probes at once. Raise LimitNOFILE= in the unit "
            "(systemctl edit directord) or lower max_concurrent_probes"
        )


def fd_budget(limit: int, *, max_probes: int, listeners: int, vrrp_instances: int) -> FdBudget:
    """What the config needs under ``limit`` and how many probes fit (pure)."""
    fixed = RESERVED + listeners + PER_VRRP_INSTANCE * vrrp_instances
    needed = fixed + PER_PROBE * max_probes
    probes = max_probes if limit >= needed else max(1, (limit - fixed) // PER_PROBE)
    return FdBudget(limit, needed, probes)


def raise_nofile(wanted: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted`` (up to the hard limit); the soft
    limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft
