"""The kernel's IPVS table, opened when it is first needed: a VRRP-only director runs without it.

keepalived started with ``--vrrp`` needs no ip_vs, and neither does ``directord`` when its
config has no virtual service and no sync daemon. :class:`OnDemandIPVS` wraps the real kernel
interface: until it is opened, the table it reports is empty (with no ip_vs there is no table,
so there is nothing to adopt or remove) and any change to it raises a :class:`KernelError` that
says ip_vs is not available. The application object opens it at start when the config needs
IPVS, and before accepting a reload that starts needing it (a reload that cannot have it is
refused, and the running config stays).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Sequence

from director.ipvs.kernel import IPVSKernel, KernelError, SyncDaemon, SyncState, Timeouts
from director.ipvs.model import Dest, DestKey, Service, ServiceKey, Table
from director.ipvs.ops import Op, OpFailure
from director.ipvs.stats import StatsSnapshot
from director.pause import Pause, no_pause

# Opens the real kernel interface; the argument says whether loading ip_vs is allowed (a
# config that needs IPVS may load it; a director that only looks for an earlier run's services
# never loads a module).
Opener = Callable[[bool], IPVSKernel]


class OnDemandIPVS:
    """An :class:`IPVSKernel` that opens the real one with ``opener`` when asked to."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._kernel: IPVSKernel | None = None
        self._lock = threading.Lock()  # open() runs in a worker thread
        self.open_error: str | None = None

    @property
    def available(self) -> bool:
        return self._kernel is not None

    def open(self, load: bool = True) -> IPVSKernel:
        """The real kernel interface, opening it if needed (``load``: loading ip_vs is
        allowed); KernelError when it cannot be."""
        with self._lock:
            if self._kernel is None:
                try:
                    self._kernel = self._opener(load)
                except KernelError as exc:
                    self.open_error = str(exc)
                    raise
                self.open_error = None
            return self._kernel

    def close(self) -> None:
        with self._lock:
            kernel, self._kernel = self._kernel, None
        close = getattr(kernel, "close", None)
        if close is not None:
            close()

    def _absent(self, doing: str) -> KernelError:
        return KernelError(
            f"{doing}: ip_vs is not available ({self.open_error or 'not opened'})", errno.ENOENT
        )

    # -- IPVSKernel -------------------------------------------------------------------------------

    def dump(self, pause: Pause = no_pause) -> Table:
        return self._kernel.dump(pause) if self._kernel is not None else Table()

    def dump_service(self, key: ServiceKey) -> tuple[Service, dict[DestKey, Dest]] | None:
        return self._kernel.dump_service(key) if self._kernel is not None else None

    def execute(self, ops: Sequence[Op]) -> list[OpFailure]:
        if not ops:
            return []
        if self._kernel is None:
            raise self._absent(f"applying {len(ops)} IPVS operation(s)")
        return self._kernel.execute(ops)

    def get_timeouts(self) -> Timeouts:
        if self._kernel is None:
            raise self._absent("reading the IPVS timeouts")
        return self._kernel.get_timeouts()

    def set_timeouts(self, timeouts: Timeouts) -> None:
        if self._kernel is None:
            raise self._absent("setting the IPVS timeouts")
        self._kernel.set_timeouts(timeouts)

    def sync_daemons(self) -> list[SyncDaemon]:
        return self._kernel.sync_daemons() if self._kernel is not None else []

    def start_sync_daemon(self, daemon: SyncDaemon) -> None:
        if self._kernel is None:
            raise self._absent(f"starting the {daemon}")
        self._kernel.start_sync_daemon(daemon)

    def stop_sync_daemon(self, state: SyncState) -> None:
        if self._kernel is None:
            raise self._absent(f"stopping the {state} sync daemon")
        self._kernel.stop_sync_daemon(state)

    def read_stats(self, now: float, pause: Pause = no_pause) -> StatsSnapshot:
        """Counters from the kernel (an empty reading without ip_vs)."""
        read: Callable[..., StatsSnapshot] | None = getattr(self._kernel, "read_stats", None)
        return read(now, pause) if read is not None else StatsSnapshot(at=now)
