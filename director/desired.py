"""Config + health -> the IPVS table the daemon wants. Pure.

Health is keyed by (service key, destination key); a real server with no entry counts as up, so
the table for a config alone (no checks yet) has every real server in it. A failed real server is
removed, or kept with weight 0 when the service says ``on_failure = "quiesce"``: existing
connections then continue while new ones go elsewhere. The sorry server is in the table only while
no real server is available (up and with a weight above 0).

Feedback agents (:mod:`checks.agent`) come next: an agent that says ``down`` (or ``stopped``,
``fail``) counts as a failed health check, ``maint`` takes the server out of the table, ``drain``
gives it weight 0, a percentage scales its configured weight, and ``maxconn:N`` becomes its
upper threshold (its lower one lowered to at most N, which the kernel requires).

For ``mh`` and ``sh`` the destinations are in canonical order (family, address, port; see
:mod:`director.reconcile.order`), the order the kernel's list must have on every director.

Maintenance overrides (:mod:`director.maintenance`) come last: a drained real server has weight
0, a removed one (a timed drain that went idle or timed out) is not in the table at all.

Incremental: given the table compiled before from the same config, only the services named as
changed are compiled again, the others' entries are taken as they are (the same objects, which
the planner then compares by identity). A health change then costs its service, not the whole
table: at 100,000 destinations, a whole compile is ~0.5 s of Python holding the interpreter
lock in turns with the event loop, once per burst of health changes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from checks.agent import AgentEffect
from director.config.model import Config, VirtualServer
from director.ipvs.model import Dest, DestKey, Service, ServiceKey, Table
from director.pause import Pause, no_pause
from director.reconcile.order import ORDERED_SCHEDULERS, canonical

Health = Mapping[tuple[ServiceKey, DestKey], bool]
# (service, destination) -> "drain" (weight 0) or "remove"; see director.maintenance.
Overrides = Mapping[tuple[ServiceKey, DestKey], str]
# (service, destination) -> what its feedback agent says; absent: nothing (full weight).
Agents = Mapping[tuple[ServiceKey, DestKey], AgentEffect]


def compile_table(
    config: Config,
    health: Health | None = None,
    overrides: Overrides | None = None,
    agents: Agents | None = None,
    *,
    previous: Table | None = None,
    changed: Collection[ServiceKey] | None = None,
    pause: Pause = no_pause,
) -> Table:
    """The table for ``config``. With ``previous`` (a table compiled before), each service's
    entries equal to its previous ones are the previous objects (what lives on stays one copy,
    out of the cyclic collector's walk once frozen); with ``changed`` as well (``previous``
    compiled from this same config object), only the services in ``changed`` are compiled
    again and the others taken as they are (see the module docstring). ``pause``: called
    before each service (:class:`director.heap.Pacer`, for a periodic resync)."""
    table = Table()
    # Equal entries are one object: a Dest names no service, so 10,000 services over the same
    # 10 real servers hold 10 entries, not 100,000 (~100 bytes each, and as many fewer objects
    # for the cyclic collector); the kernel's view (Reconciler) and the in-memory kernel then
    # hold the same ones. For this compile only: a config of distinct real servers pays a
    # dictionary entry per destination while it runs, nothing after.
    seen: dict[Dest, Dest] = {}
    for vs in config.virtual_servers:
        pause()
        key = vs.service_key()
        before = previous.services.get(key) if previous is not None else None
        before_dests = previous.dests.get(key) if previous is not None else None
        reuse = changed is not None and key not in changed
        if reuse and before is not None and before_dests is not None:
            table.services[before.key], table.dests[before.key] = before, before_dests
            continue
        service = compile_service(vs)
        dests = compile_dests(vs, key, health or {}, overrides or {}, agents)
        # the previous entry where it is equal (a health change elsewhere in this service
        # keeps the others' shared objects), else the first equal one of this compile
        for dkey, dest in dests.items():
            old = before_dests.get(dkey) if before_dests is not None else None
            dests[dkey] = old if old is not None and old == dest else seen.setdefault(dest, dest)
        # mh/sh: in the kernel list's canonical order, whatever the config's order
        if vs.scheduler in ORDERED_SCHEDULERS:
            dests = canonical(dests)
        if before is not None and before == service:
            service = before
        key = service.key  # one key object per service: its entry's, and the tables' key
        if before_dests is not None and before_dests == dests and list(before_dests) == list(dests):
            dests = before_dests
        table.services[key] = service
        table.dests[key] = dests
    return table


def compile_service(vs: VirtualServer) -> Service:
    return Service(
        key=vs.service_key(),
        sched_name=vs.scheduler,
        flags=vs.svc_flags,
        timeout=vs.persistence_timeout,
        netmask=vs.persistence_prefix,
    )


def compile_dests(
    vs: VirtualServer,
    key: ServiceKey,
    health: Health,
    overrides: Overrides | None = None,
    agents: Agents | None = None,
) -> dict[DestKey, Dest]:
    dests: dict[DestKey, Dest] = {}
    available = 0
    for rs in vs.real_servers:
        dkey = rs.dest_key(vs)
        up = health.get((key, dkey), True)
        override = overrides.get((key, dkey)) if overrides else None
        agent = agents.get((key, dkey)) if agents else None
        if agent is not None:
            up = up and not agent.down
            if agent.admin == "maint":
                override = "remove"
            elif agent.admin == "drain" and override is None:
                override = "drain"
        if (not up and vs.on_failure == "remove") or override == "remove":
            continue
        weight = rs.weight if up and override is None else 0
        upper, lower = rs.upper_threshold, rs.lower_threshold
        if agent is not None:
            if weight:
                weight = agent.weight(rs.weight)
            if agent.maxconn is not None:
                upper, lower = agent.maxconn, min(lower, agent.maxconn)
        available += weight > 0
        dests[dkey] = Dest(
            key=dkey,
            fwd_method=rs.fwd(vs),
            weight=weight,
            u_threshold=upper,
            l_threshold=lower,
            **rs.tunnel_fields(vs),
        )
    sorry = vs.sorry_server
    if sorry is not None and not available:
        skey = sorry.dest_key(vs)
        dests[skey] = Dest(
            key=skey, fwd_method=sorry.fwd(vs), weight=sorry.weight, **sorry.tunnel_fields(vs)
        )
    return dests
