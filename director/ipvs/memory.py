"""An in-memory IPVS table that refuses what the kernel refuses. For fast unit tests only.

The rules follow ``net/netfilter/ipvs/ip_vs_ctl.c``: a service must exist before its
destinations (ESRCH), duplicates are EEXIST, a missing destination is ENOENT, an unknown scheduler
is ENOENT, thresholds out of order are ERANGE, an IPv6 persistence prefix outside 1..128, a
mixed-family destination that is not a tunnel and a GUE tunnel without a port are EINVAL. Dumps
list a service's destinations newest first, as the kernel's list does (``list_add_rcu`` puts a
new one at the head).
"""

from __future__ import annotations

import copy
import errno
from collections.abc import Sequence

from director.ipvs.kernel import DestConns, KernelError, SyncDaemon, SyncState, Timeouts, explain
from director.ipvs.model import (
    SCHEDULERS,
    Dest,
    DestKey,
    Family,
    Forwarding,
    Service,
    ServiceKey,
    Table,
    TunnelType,
)
from director.ipvs.ops import (
    AddDest,
    AddService,
    DelService,
    EditDest,
    EditService,
    Op,
    OpFailure,
)
from director.ipvs.stats import ZERO, DestsRead, ServicesRead, StatsSnapshot
from director.pause import Pause, no_pause


class MemoryIPVS:
    """The kernel's IPVS table as a dictionary; counts the requests it serves."""

    def __init__(self, schedulers: frozenset[str] = SCHEDULERS) -> None:
        self.table = Table()
        self.timeouts = Timeouts(tcp=900, tcpfin=120, udp=300)
        self.schedulers = schedulers
        self.requests = 0  # netlink messages a real kernel would have received
        self.daemons: dict[SyncState, SyncDaemon] = {}
        self.interfaces: frozenset[str] | None = None  # None: every interface name exists
        self.full_dumps = 0
        # Connection counts a test sets by hand (a real kernel counts its connections).
        self.conns: dict[tuple[ServiceKey, DestKey], DestConns] = {}
        # Each destination's last non-zero weight, as __ip_vs_update_dest keeps it: set on every
        # add (a restore from the trash too), and on an edit to a weight above 0. By service,
        # then destination: no (service, destination) tuple per destination (10.8 MB of this
        # test double at 100,000 destinations, against 3.7 MB).
        self.last_weight: dict[ServiceKey, dict[DestKey, int]] = {}

    # -- reads --------------------------------------------------------------------------------

    def maglev_input(self, key: ServiceKey) -> tuple[tuple[DestKey, int], ...]:
        """What the kernel's ``mh`` table of ``key`` is a function of: the destinations with
        a last weight above 0, in list order (head first), with that weight.

        ``ip_vs_mh_permutate`` gives a destination with last weight 0 no turns and
        ``ip_vs_mh_populate`` skips it; each other one's offset and skip are hashes of its
        address and port under fixed keys, its turns its last weight over the gcd of them all
        (shifted), and the slots go round by round in list order. Two directors with the same
        input have the same table."""
        listed = _kernel_order(self.table.dests_of(key))
        last = self.last_weight.get(key, {})
        weights = ((k, last.get(k, 0)) for k in listed)
        return tuple((k, w) for k, w in weights if w > 0)

    def dump(self, pause: Pause = no_pause) -> Table:  # a copy: not paced
        self.full_dumps += 1
        self.requests += 1 + len(self.table.services)
        table = copy.deepcopy(self.table)
        for key, dests in table.dests.items():
            table.dests[key] = _kernel_order(dests)
        return table

    def dump_service(self, key: ServiceKey) -> tuple[Service, dict[DestKey, Dest]] | None:
        self.requests += 2
        svc = self.table.services.get(key)
        if svc is None:
            return None
        return svc, _kernel_order(self.table.dests_of(key))

    def read_stats(self, now: float, pause: Pause = no_pause) -> StatsSnapshot:
        """The table with :attr:`conns` as connection counts and zero traffic counters;
        ``pause`` is called after each service (:class:`director.heap.Pacer`)."""
        services, dests = ServicesRead(), DestsRead()
        for key, svc in self.table.services.items():
            pause()
            services[key] = (svc, ZERO)
            readings = dests.begin()
            for dkey, d in self.table.dests_of(key).items():
                readings.add(d, *_conns(self.conns.get((key, dkey), DestConns())))
            dests.end(key, readings)
        return StatsSnapshot(at=now, services=services, dests=dests)

    def get_timeouts(self) -> Timeouts:
        return self.timeouts

    def set_timeouts(self, timeouts: Timeouts) -> None:
        self.timeouts = Timeouts(
            tcp=timeouts.tcp or self.timeouts.tcp,
            tcpfin=timeouts.tcpfin or self.timeouts.tcpfin,
            udp=timeouts.udp or self.timeouts.udp,
        )

    # -- connection-sync daemons (ip_vs_sync.c: one per state, EEXIST / ESRCH / ENODEV) ---------

    def sync_daemons(self) -> list[SyncDaemon]:
        self.requests += 1
        return [self.daemons[s] for s in sorted(self.daemons)]

    def start_sync_daemon(self, daemon: SyncDaemon) -> None:
        self.requests += 1
        err = 0
        if daemon.state in self.daemons:
            err = errno.EEXIST
        elif not 0 <= daemon.sync_id <= 255 or not daemon.interface:
            err = errno.EINVAL
        elif self.interfaces is not None and daemon.interface not in self.interfaces:
            err = errno.ENODEV
        if err:
            raise KernelError(f"starting the {daemon}", err)
        self.daemons[daemon.state] = daemon

    def stop_sync_daemon(self, state: SyncState) -> None:
        self.requests += 1
        if self.daemons.pop(state, None) is None:
            raise KernelError(f"stopping the {state} sync daemon", errno.ESRCH)

    # -- writes -------------------------------------------------------------------------------

    def execute(self, ops: Sequence[Op]) -> list[OpFailure]:
        failures = []
        for op in ops:
            self.requests += 1
            err = self._apply(op)
            if err:
                failures.append(OpFailure(op, err, explain(err)))
        return failures

    def _check_service(self, svc: Service) -> int:
        if svc.sched_name not in self.schedulers:
            return errno.ENOENT
        if svc.key.family is Family.INET6 and not 1 <= svc.netmask <= 128:
            return errno.EINVAL
        return 0

    def _check_dest(self, key: ServiceKey, dest: Dest) -> int:
        if dest.weight < 0 or dest.l_threshold > dest.u_threshold:
            return errno.ERANGE
        if dest.af is not key.family and dest.fwd_method is not Forwarding.TUNNEL:
            return errno.EINVAL
        if dest.tun_type == TunnelType.GUE and not dest.tun_port:
            return errno.EINVAL  # ip_vs_add_dest / ip_vs_edit_dest: "tunnel port is zero"
        return 0

    def _apply(self, op: Op) -> int:
        services, dests = self.table.services, self.table.dests
        if isinstance(op, AddService):
            if op.service.key in services:
                return errno.EEXIST
            err = self._check_service(op.service)
            if not err:
                services[op.service.key] = op.service
                dests[op.service.key] = {}
            return err
        if isinstance(op, EditService):
            if op.service.key not in services:
                return errno.ESRCH
            err = self._check_service(op.service)
            if not err:
                services[op.service.key] = op.service
            return err
        if isinstance(op, DelService):
            if op.key not in services:
                return errno.ESRCH
            del services[op.key]
            dests.pop(op.key, None)
            self.last_weight.pop(op.key, None)  # every add sets it again
            return 0
        if op.service not in services:
            return errno.ESRCH
        table = dests[op.service]
        if isinstance(op, AddDest):
            if op.dest.key in table:
                return errno.EEXIST
            err = self._check_dest(op.service, op.dest)
            if not err:
                table[op.dest.key] = op.dest
                self.last_weight.setdefault(op.service, {})[op.dest.key] = op.dest.weight
            return err
        if isinstance(op, EditDest):
            if op.dest.key not in table:
                return errno.ENOENT
            err = self._check_dest(op.service, op.dest)
            if not err:
                table[op.dest.key] = op.dest
                if op.dest.weight:
                    self.last_weight.setdefault(op.service, {})[op.dest.key] = op.dest.weight
            return err
        if op.key not in table:
            return errno.ENOENT
        del table[op.key]
        self.last_weight.get(op.service, {}).pop(op.key, None)  # every add sets it again
        return 0


def _kernel_order(dests: dict[DestKey, Dest]) -> dict[DestKey, Dest]:
    """Destinations kept in the order they were added, listed newest first like the kernel."""
    return dict(reversed(dests.items()))


def _conns(c: DestConns) -> tuple[int, int, int]:
    return c.active, c.inactive, c.persistent
