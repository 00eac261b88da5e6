"""The IPVS kernel interface the reconciler depends on, and its error type."""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from director.ipvs.model import Dest, DestKey, Service, ServiceKey, Table
from director.ipvs.ops import Op, OpFailure
from director.pause import Pause


@dataclass(frozen=True)
class DestConns:
    """Connection counts of one destination as the kernel reports them."""

    active: int = 0
    inactive: int = 0
    persistent: int = 0


@dataclass(frozen=True)
class Timeouts:
    """IPVS protocol timeouts in seconds (``ipvsadm --set tcp tcpfin udp``); 0 = unchanged."""

    tcp: int = 0
    tcpfin: int = 0
    udp: int = 0


class SyncState(enum.IntEnum):
    """Which side of the IPVS connection synchronisation a sync daemon is (``IP_VS_STATE_*``)."""

    MASTER = 1  # sends this director's connections
    BACKUP = 2  # receives the master's connections into the table

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class SyncDaemon:
    """One kernel sync daemon (``ipvsadm --start-daemon STATE --mcast-interface IF``)."""

    state: SyncState
    interface: str
    sync_id: int = 0

    def __str__(self) -> str:
        return f"{self.state} sync daemon on {self.interface} (sync id {self.sync_id})"


class IPVSKernel(Protocol):
    """What the daemon needs from the kernel's IPVS table."""

    def dump(self, pause: Pause = ...) -> Table:
        """The whole table: every service and its destinations; ``pause`` is called before
        each service's are read (:class:`director.heap.Pacer`, for a periodic resync)."""
        ...

    def dump_service(self, key: ServiceKey) -> tuple[Service, dict[DestKey, Dest]] | None:
        """One service and its destinations, or None when the kernel has no such service."""
        ...

    def execute(self, ops: Sequence[Op]) -> list[OpFailure]:
        """Run the operations in order; return those the kernel refused (the rest took effect)."""
        ...

    def get_timeouts(self) -> Timeouts: ...

    def set_timeouts(self, timeouts: Timeouts) -> None: ...

    def sync_daemons(self) -> list[SyncDaemon]:
        """The connection-sync daemons running (at most one master and one backup)."""
        ...

    def start_sync_daemon(self, daemon: SyncDaemon) -> None:
        """Start one; ``KernelError`` (EEXIST) when one with that state already runs."""
        ...

    def stop_sync_daemon(self, state: SyncState) -> None:
        """Stop the one with ``state``; ``KernelError`` (ESRCH) when none runs."""
        ...


class KernelError(Exception):
    """A kernel request failed; the message says what the daemon was doing."""

    def __init__(self, doing: str, err: int | None) -> None:
        err = err or errno.EIO
        self.doing = doing
        self.errno = err
        super().__init__(f"{doing}: {explain(err)}")


# Hints for the errors people meet; the plain strerror otherwise.
_HINTS = {
    errno.ENOENT: "is the ip_vs module loaded?",
    errno.ESRCH: "no such service or destination in the kernel",
    errno.EEXIST: "it already exists",
    errno.EPERM: "needs CAP_NET_ADMIN (run as root)",
    errno.EINVAL: "the kernel rejected the values",
}


def explain(err: int) -> str:
    text = os.strerror(err)
    hint = _HINTS.get(err)
    return f"{text} ({hint})" if hint else text
