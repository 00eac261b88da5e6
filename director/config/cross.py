"""Checks across the sections of a config: VRRP against the virtual servers, network rules
against the services, sync groups against instances.

Each function takes the sections it compares (not the whole :class:`Config`), so the section
modules never import the model that holds them: the import order is fields -> sections
(``checks``, ``network``, ``vrrp``) -> ``cross`` -> ``model``. Every finding is at an absolute
location with what was expected and what was found; every check runs, so one pass reports all.
"""

from __future__ import annotations

from collections.abc import Sequence

from director.config.fields import Finding, Loc, show
from director.config.network import FwmarkRule, PolicyRoute
from director.config.vrrp import SyncDaemon, VrrpInstance, VrrpSyncGroup


def vrrp_problems(
    instances: Sequence[VrrpInstance],
    groups_: Sequence[VrrpSyncGroup],
    sync: SyncDaemon | None,
    service_names: set[str],
) -> list[Finding]:
    """Rules across the VRRP tables and the rest of the config, at absolute locations."""
    findings: list[Finding] = []
    names: dict[str, int] = {}
    routers: dict[tuple[str, int, int], int] = {}
    for i, vi in enumerate(instances):
        if vi.name in names:
            findings.append(
                (
                    ("vrrp_instance", i, "name"),
                    f"expected a unique name, found {show(vi.name)} again "
                    f"(also vrrp_instance[{names[vi.name]}])",
                )
            )
        names.setdefault(vi.name, i)
        router = (vi.interface, vi.vrid, vi.family)
        if router in routers:
            findings.append(
                (
                    ("vrrp_instance", i, "vrid"),
                    f"expected one instance per VRID and family on an interface, found vrid "
                    f"{vi.vrid} on {vi.interface} again (also vrrp_instance[{routers[router]}])",
                )
            )
        routers.setdefault(router, i)
    services = service_names
    for i, vi in enumerate(instances):
        for j, track in enumerate(vi.track_checks):
            if track.virtual_server not in services:
                known = ", ".join(f'"{n}"' for n in sorted(services)) or "none"
                findings.append(
                    (
                        ("vrrp_instance", i, "track_checks", j, "virtual_server"),
                        f"expected the name of a virtual server ({known}), "
                        f"found {show(track.virtual_server)}",
                    )
                )
    groups: dict[str, int] = {}
    member_of: dict[str, str] = {}
    for g, group in enumerate(groups_):
        if group.name in groups:
            findings.append(
                (
                    ("vrrp_sync_group", g, "name"),
                    f"expected a unique name, found {show(group.name)} again "
                    f"(also vrrp_sync_group[{groups[group.name]}])",
                )
            )
        groups.setdefault(group.name, g)
        if group.name in names:
            findings.append(
                (
                    ("vrrp_sync_group", g, "name"),
                    f"expected a name that no instance has, found {show(group.name)}",
                )
            )
        for j, member in enumerate(group.instances):
            where: Loc = ("vrrp_sync_group", g, "instances", j)
            if member not in names:
                findings.append(
                    (where, f"expected the name of a vrrp_instance, found {show(member)}")
                )
            elif member in member_of:
                findings.append(
                    (
                        where,
                        f"expected an instance in one sync group only, found {show(member)} "
                        f"(also in {show(member_of[member])})",
                    )
                )
            member_of.setdefault(member, group.name)
        if not group.instances:
            findings.append((("vrrp_sync_group", g, "instances"), "expected at least one instance"))
    known_names = {*names, *groups}
    if sync is not None and sync.instance is not None and sync.instance not in known_names:
        findings.append(
            (
                ("sync_daemon", "instance"),
                "expected the name of a vrrp_instance or vrrp_sync_group, "
                f"found {show(sync.instance)}",
            )
        )
    return findings


def network_problems(
    fwmarks: Sequence[FwmarkRule],
    policy_routes: Sequence[PolicyRoute],
    services: dict[int, set[int]],
) -> list[Finding]:
    """Checks of the network rules against each other and the virtual services (absolute
    locations); ``services``: fwmark -> the IP versions of the fwmark services using it."""
    findings: list[Finding] = []
    routed: dict[int, set[int]] = {}
    for route in policy_routes:
        routed.setdefault(route.fwmark, set()).update(route.families())
    for i, rule in enumerate(fwmarks):
        version = rule.address.version
        if rule.mark not in services and rule.mark not in routed:
            findings.append(
                (
                    ("fwmark", i, "mark"),
                    f"expected a mark that a fwmark virtual_server or a policy_route uses, "
                    f"found {rule.mark}, which none does (packets would be marked for nothing)",
                )
            )
        elif version not in services.get(rule.mark, set()) | routed.get(rule.mark, set()):
            findings.append(
                (
                    ("fwmark", i, "address"),
                    f"mark {rule.mark} is used only by ipv{_other(version)} services or routes: "
                    f"expected an IPv{_other(version)} address, found {rule.address}",
                )
            )
        if rule.ports is None and "protocol" in rule.model_fields_set:
            findings.append(
                (
                    ("fwmark", i, "protocol"),
                    "protocol only applies with ports: expected ports = [...] or no protocol, "
                    "found protocol without ports",
                )
            )
    findings += _duplicate_routes(policy_routes)
    return findings


def _other(version: int) -> int:
    return 6 if version == 4 else 4


def _duplicate_routes(routes: Sequence[PolicyRoute]) -> list[Finding]:
    findings: list[Finding] = []
    seen: dict[tuple[int, int], tuple[int, int, int]] = {}
    for i, route in enumerate(routes):
        for family in route.families():
            key = (family, route.priority)
            if key in seen and seen[key][1:] != (route.fwmark, route.table):
                findings.append(
                    (
                        ("policy_route", i, "priority"),
                        f"expected a priority of its own, found {route.priority} again "
                        f"(also policy_route[{seen[key][0]}], another fwmark or table)",
                    )
                )
            elif key in seen:
                findings.append(
                    (
                        ("policy_route", i),
                        f"expected each policy route once, found it again "
                        f"(also policy_route[{seen[key][0]}])",
                    )
                )
            seen.setdefault(key, (i, route.fwmark, route.table))
    return findings
