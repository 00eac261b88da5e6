"""Checks across fields of the config: pure functions from models to findings.

Each finding is a location (relative to the virtual server for :func:`virtual_server_problems`,
absolute for :func:`duplicate_services`) and a message saying what was expected and what was
found. Every check runs and every finding is returned, so one pass reports all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from director.config.agent import agent_problems
from director.config.checks import check_problems, merged_problems
from director.config.fields import Finding, Loc, show, words
from director.ipvs.model import SCHED_FLAGS, DestKey, Family, Forwarding, ServiceKey

if TYPE_CHECKING:
    from director.config.model import RealServer, SorryServer, VirtualServer

KEY_FIELDS = ("protocol", "address", "port", "fwmark")


def service_kind_problem(present: Iterable[str]) -> str | None:
    """What is wrong with the identifying keys a virtual server has, or None when nothing is."""
    given = set(present)
    found = [key for key in KEY_FIELDS if key in given]
    if found in (["fwmark"], ["protocol", "address", "port"]):
        return None
    if not found:
        what = "none of them"
    elif "fwmark" in found:
        what = words(found)
    else:
        missing = [key for key in KEY_FIELDS[:3] if key not in found]
        what = f"only {words(found)} ({words(missing)} missing)"
    return f"give either protocol+address+port or fwmark, found {what}"


def sysctl_name_problem(name: str) -> str | None:
    if not name.startswith("net.") or "/" in name or ".." in name or name.endswith("."):
        return (
            f'expected a sysctl name starting with "net." without "/" or "..", found {show(name)}'
        )
    if not name.isprintable() or any(c.isspace() for c in name):
        return f"expected a sysctl name without spaces or control characters, found {show(name)}"
    return None


def virtual_server_problems(vs: VirtualServer) -> list[Finding]:
    present = [key for key in KEY_FIELDS if getattr(vs, key) is not None]
    kind = service_kind_problem(present)
    findings: list[Finding] = [((), kind)] if kind else _keyed_problems(vs)
    for i, flag in enumerate(vs.scheduler_flags):
        sched = SCHED_FLAGS[flag][0]
        if sched != vs.scheduler:
            findings.append(
                (
                    ("scheduler_flags", i),
                    f'"{flag}" is a flag of the {sched} scheduler; expected scheduler = "{sched}", '
                    f'found scheduler = "{vs.scheduler}"',
                )
            )
    if vs.persistence_netmask is not None and vs.persistence_timeout == 0:
        findings.append(
            (
                ("persistence_netmask",),
                "persistence_netmask only applies to a persistent service: expected "
                "persistence_timeout > 0, found persistence_timeout = 0 (or none)",
            )
        )
    findings += _check_problems(vs)
    findings += _agent_problems(vs)
    findings += tunnel_problems(vs)
    for i, rs in enumerate(vs.real_servers):
        if rs.lower_threshold > rs.upper_threshold:
            why = " (the kernel refuses any lower threshold when upper is 0)"
            findings.append(
                (
                    ("real_server", i, "lower_threshold"),
                    f"expected lower_threshold at most upper_threshold ({rs.upper_threshold}), "
                    f"found {rs.lower_threshold}{why if rs.upper_threshold == 0 else ''}",
                )
            )
    return findings


PORT = ("tunnel_port",)
# What each tunnel type can carry (ip_vs_xmit.c: flags are read for GUE, CSUM for GRE too).
_CHECKSUMS = {"ipip": ("none",), "gre": ("none", "csum"), "gue": ("none", "csum", "remcsum")}


def tunnel_problems(vs: VirtualServer) -> list[Finding]:
    """The tunnel keys: only with ``forwarding = "tun"``; a GUE port for GUE and nothing else;
    a checksum option the tunnel type has. The service's keys are checked where they are
    written, a server's where it writes its own."""
    findings: list[Finding] = []
    if vs.sets_tunnel:
        if vs.forwarding != "tun":
            findings += _not_a_tunnel(vs, (), vs.forwarding)
        else:
            kind = vs.tunnel_type or "ipip"
            problems = _tunnel_value_problems(kind, vs.tunnel_port, vs.tunnel_checksum, ())
            everyone = [*vs.real_servers, *([vs.sorry_server] if vs.sorry_server else [])]
            inheriting = [
                s for s in everyone if s.fwd(vs) is Forwarding.TUNNEL and s.tunnel_type is None
            ]
            if vs.real_servers and all(s.tunnel_port is not None for s in inheriting):
                # GUE with a port per real server: nothing takes the service's
                problems = [p for p in problems if vs.tunnel_port is not None or p[0] != PORT]
            findings += problems
    servers: list[tuple[Loc, RealServer | SorryServer]] = [
        (("real_server", i), rs) for i, rs in enumerate(vs.real_servers)
    ]
    if vs.sorry_server is not None:
        servers.append((("sorry_server",), vs.sorry_server))
    for at, server in servers:
        if not server.sets_tunnel:
            continue
        fwd = server.fwd(vs)
        if fwd is not Forwarding.TUNNEL:
            findings += _not_a_tunnel(server, at, fwd.label)
            continue
        tunnel = server.tunnel(vs)
        # report only what the server's own keys make wrong (the service's are checked above)
        own = [
            (loc, message)
            for loc, message in _tunnel_value_problems(*tunnel, at)
            if getattr(server, str(loc[-1])) is not None or server.tunnel_type is not None
        ]
        findings += own
    return findings


def _not_a_tunnel(
    where: VirtualServer | RealServer | SorryServer, at: Loc, fwd: str
) -> list[Finding]:
    return [
        (
            (*at, key),
            f'{key} is for forwarding = "tun": expected no {key} with forwarding = "{fwd}", '
            f"found {show(getattr(where, key))}",
        )
        for key in ("tunnel_type", "tunnel_port", "tunnel_checksum")
        if getattr(where, key) is not None
    ]


def _tunnel_value_problems(
    kind: str, port: int | None, checksum: str | None, at: Loc
) -> list[Finding]:
    findings: list[Finding] = []
    if kind == "gue" and port is None:
        findings.append(
            (
                (*at, "tunnel_port"),
                "expected tunnel_port (the UDP port the real servers take GUE on, e.g. 6080) "
                'with tunnel_type = "gue", found none',
            )
        )
    if kind != "gue" and port is not None:
        findings.append(
            (
                (*at, "tunnel_port"),
                f"tunnel_port is the UDP port of GUE: expected no tunnel_port with tunnel_type = "
                f'"{kind}", found {port}',
            )
        )
    allowed = _CHECKSUMS[kind]
    if checksum is not None and checksum not in allowed:
        choices = " or ".join(f'"{c}"' for c in allowed)
        findings.append(
            (
                (*at, "tunnel_checksum"),
                f'expected {choices} with tunnel_type = "{kind}" (remcsum is GUE only, ipip '
                f'has no checksum), found "{checksum}"',
            )
        )
    return findings


def _keyed_problems(vs: VirtualServer) -> list[Finding]:
    """Checks that need the service's key (family, port), so only run once the key is valid."""
    findings: list[Finding] = []
    family = vs.family_enum
    if vs.address is not None:
        if vs.port == 0 and vs.persistence_timeout == 0:
            findings.append(
                (
                    ("port",),
                    "expected a port from 1 to 65535, found 0 (port 0 means all ports and "
                    "needs persistence_timeout > 0)",
                )
            )
        if vs.family != family.label:
            findings.append(
                (
                    ("family",),
                    f'expected "{family.label}" as address {vs.address} is, found "{vs.family}"',
                )
            )
        if vs.one_packet and vs.protocol != "udp":
            findings.append(
                (
                    ("one_packet",),
                    f"one_packet is only for udp and fwmark services: expected false for "
                    f'protocol "{vs.protocol}", found true',
                )
            )
    findings += _netmask_problems(vs, family)
    first: dict[DestKey, int] = {}
    for i, rs in enumerate(vs.real_servers):
        findings += _server_problems(vs, rs, ("real_server", i))
        key = rs.dest_key(vs)
        if key in first:
            findings.append(
                (
                    ("real_server", i),
                    f"expected each real server once, found {key} again "
                    f"(also real_server[{first[key]}])",
                )
            )
        first.setdefault(key, i)
    if vs.sorry_server is not None:
        findings += _server_problems(vs, vs.sorry_server, ("sorry_server",))
        key = vs.sorry_server.dest_key(vs)
        if key in first:
            findings.append(
                (
                    ("sorry_server",),
                    f"expected a sorry server that is not a real server, found {key} "
                    f"(also real_server[{first[key]}])",
                )
            )
    return findings


def _netmask_problems(vs: VirtualServer, family: Family) -> list[Finding]:
    mask = vs.persistence_netmask
    where = ("persistence_netmask",)
    if mask is None:
        return []
    if family is Family.INET6 and (isinstance(mask, str) or mask == 0):
        return [
            (
                where,
                "expected a prefix length from 1 to 128 for an IPv6 service (a dotted mask is "
                f"IPv4 only, and the kernel refuses 0), found {show(mask)}",
            )
        ]
    if family is Family.INET and isinstance(mask, int) and mask > 32:
        return [
            (
                where,
                f"expected a prefix length from 0 to 32 for an IPv4 service, found {mask}",
            )
        ]
    return []


def _server_problems(vs: VirtualServer, server: RealServer | SorryServer, at: Loc) -> list[Finding]:
    findings: list[Finding] = []
    fwd = server.fwd(vs)
    family = vs.family_enum
    if Family.of(server.address) is not family and fwd is not Forwarding.TUNNEL:
        findings.append(
            (
                (*at, "address"),
                f"expected an {family.label} address like the service's (only forwarding = "
                f'"tun" can mix families), found {server.address} with forwarding = "{fwd.label}"',
            )
        )
    port = vs.port or 0
    if fwd is not Forwarding.NAT and server.port is not None and server.port != port:
        findings.append(
            (
                (*at, "port"),
                f'with forwarding = "{fwd.label}" the packet keeps the service\'s port, which the '
                f"kernel uses: expected no port or {port}, found {server.port}",
            )
        )
    return findings


def duplicate_services(services: Iterable[tuple[int, VirtualServer]]) -> list[Finding]:
    """Virtual servers with the same key or name, located at the later one."""
    findings: list[Finding] = []
    keys: dict[ServiceKey, int] = {}
    names: dict[str, int] = {}
    for i, vs in services:
        try:
            key = vs.service_key()
        except ValueError:
            continue
        if key in keys:
            findings.append(
                (
                    ("virtual_server", i),
                    f"expected each virtual service once, found {key} again "
                    f"(also virtual_server[{keys[key]}])",
                )
            )
            continue
        keys[key] = i
        name = vs.display_name
        if name in names:
            findings.append(
                (
                    ("virtual_server", i, "name") if vs.name else ("virtual_server", i),
                    f"expected a unique name, found {show(name)} again "
                    f"(also virtual_server[{names[name]}])",
                )
            )
        names.setdefault(name, i)
    return findings


def _check_problems(vs: VirtualServer) -> list[Finding]:
    findings: list[Finding] = []
    base = vs.check
    if base is not None:
        findings += [(("check", *loc), msg) for loc, msg in check_problems(base, base.type)]
    for i, rs in enumerate(vs.real_servers):
        table = base.merged(rs.check) if base is not None else rs.check
        if table is None:
            continue
        at: Loc = ("real_server", i, "check")
        if table.type is None:
            where = at if rs.check is not None else ("check",)
            findings.append(
                (
                    (*where, "type"),
                    "a check needs a type: tcp, http, https, rdp, exchange, smtp, script or none",
                )
            )
            continue
        if rs.check is not None:
            findings += [((*at, *loc), msg) for loc, msg in check_problems(rs.check, table.type)]
            findings += [((*at, *loc), msg) for loc, msg in merged_problems(table)]
        port = table.port if table.port is not None else rs.dest_key(vs).port or (vs.port or 0)
        if port == 0 and table.type not in ("script", "none", "https", "exchange"):
            findings.append(
                (
                    (*at, "port"),
                    f"real server {rs.address} keeps the packet's port (port 0), so its "
                    f"{table.type} check needs a port: expected check.port, found none",
                )
            )
    return _unique(findings)


def _agent_problems(vs: VirtualServer) -> list[Finding]:
    """Each real server's merged agent table, reported where its keys were written."""
    findings: list[Finding] = []
    base = vs.agent
    for i, rs in enumerate(vs.real_servers):
        table = base.merged(rs.agent) if base is not None else rs.agent
        if table is None or table.enabled is False:
            continue
        for loc, msg in agent_problems(table):
            own = rs.agent is not None and (base is None or getattr(rs.agent, loc[0]) is not None)
            where: Loc = ("real_server", i, "agent", *loc) if own else ("agent", *loc)
            findings.append((where, msg))
    return _unique(findings)


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[Loc, str]] = set()
    out: list[Finding] = []
    for finding in findings:
        if finding not in seen:
            seen.add(finding)
            out.append(finding)
    return out
