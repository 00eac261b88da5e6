"""keepalived ``virtual_server`` / ``virtual_server_group`` -> ``[[virtual_server]]`` tables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from director.importers.keepalived import Stmt
from director.importers.keepalived_checks import Defaults, checker
from director.importers.notes import Notes

SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}
)
METHODS = {"NAT": "nat", "DR": "dr", "TUN": "tun"}
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
SCHED_FLAG_WORDS = ("sh-port", "sh-fallback", "mh-port", "mh-fallback")
# Settings of a service or real server that directord has no counterpart for, and why.
WHY_NOT = {
    "ha_suspend": "directord programs its services whether or not the VIP is on this node",
    "omega": "quorum and real-server notifiers do not exist in directord",
    "quorum": "no per-service quorum; a VRRP instance can track checks with track_checks",
    "hysteresis": "no per-service quorum",
    "quorum_up": "no quorum notifier; use metrics or VRRP notify scripts",
    "quorum_down": "no quorum notifier; use metrics or VRRP notify scripts",
    "smtp_alert": "directord sends no e-mail; alert from its metrics",
    "snmp_name": "directord has no SNMP agent; names show in status and metrics",
    "persistence_engine": "IPVS persistence engines (sip) are not supported",
    "sorry_server_inhibit": "the sorry server is added or removed, never quiesced",
    "notify_up": "no real-server notifier; health changes are in status and metrics",
    "notify_down": "no real-server notifier; health changes are in status and metrics",
    "warmup": "directord spreads first probes by a random start offset of its own",
    "flag-3": "IPVS scheduler flag-3 has no named use in directord",
}


@dataclass
class Group:
    """A ``virtual_server_group``: its members as (kind, value, port)."""

    name: str
    members: list[tuple[str, str, int | None]] = field(default_factory=list)


def read_group(stmt: Stmt, notes: Notes) -> Group:
    group = Group(stmt.args[0] if stmt.args else "")
    for item in stmt.children or ():
        item.used = True
        if item.keyword == "fwmark":
            if item.args and item.args[0].isdigit():
                group.members.append(("fwmark", item.args[0], None))
                if len(item.args) > 1:
                    notes.changed(item.where, "fwmark", f"family {item.args[1]} taken from it")
                    group.members[-1] = ("fwmark", f"{item.args[0]}/{item.args[1]}", None)
            else:
                notes.dropped(item.where, f"fwmark {' '.join(item.args)}", "not a mark number")
            continue
        port = int(item.args[0]) if item.args and item.args[0].isdigit() else None
        try:
            addresses = _expand_range(item.keyword)
        except ValueError as exc:
            notes.dropped(item.where, item.keyword, f"not an address or range: {exc}")
            continue
        if len(addresses) > 1:
            notes.changed(
                item.where,
                item.keyword,
                f"range expanded to {len(addresses)} services ({addresses[0]} .. {addresses[-1]})",
            )
        group.members += [("address", a, port) for a in addresses]
    return group


def _expand_range(text: str) -> list[str]:
    """``198.18.0.1-10``, ``198.18.0.250-198.18.1.10``, ``198.18.0.8/29`` or one address."""
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return [str(a) for a in net]
    if "-" not in text:
        return [str(ipaddress.ip_address(text))]
    first_text, last_text = text.split("-", 1)
    first = ipaddress.ip_address(first_text)
    if ("." in last_text and first.version == 4) or ":" in last_text:
        last = ipaddress.ip_address(last_text)
    elif first.version == 4:
        last = ipaddress.ip_address(first_text.rsplit(".", 1)[0] + "." + last_text)
    else:
        last = ipaddress.ip_address(first_text.rsplit(":", 1)[0] + ":" + last_text)
    if int(last) < int(first) or int(last) - int(first) > 4095:
        raise ValueError(f"{text} is empty or longer than 4096 addresses")
    return [str(ipaddress.ip_address(int(first) + i)) for i in range(int(last) - int(first) + 1)]


def _label(stmt: Stmt) -> str:
    return " ".join([stmt.keyword, *stmt.args])


def virtual_servers(
    stmt: Stmt, groups: dict[str, Group], notes: Notes, defaults: Defaults
) -> list[dict[str, Any]]:
    """The ``[[virtual_server]]`` tables for one keepalived ``virtual_server`` block."""
    base = _service_body(stmt, notes, defaults)
    if not base.get("real_server"):
        notes.dropped(stmt.where, _label(stmt), "no real servers: keepalived ignores the service")
        return []
    return [_finish(vs, stmt, notes) for vs in _keyed(stmt, base, groups, notes)]


def _keyed(
    stmt: Stmt, base: dict[str, Any], groups: dict[str, Group], notes: Notes
) -> list[dict[str, Any]]:
    args = stmt.args
    if args[:1] == ["group"]:
        name = args[1] if len(args) > 1 else ""
        group = groups.get(name)
        if group is None:
            notes.dropped(stmt.where, _label(stmt), f"no virtual_server_group named {name!r}")
            return []
        out = []
        for kind, value, port in group.members:
            key = _fwmark_key(value, base) if kind == "fwmark" else _address_key(value, port, base)
            out.append({"name": _name(key, name), **key, **_without_protocol(base, kind)})
        notes.changed(
            stmt.where,
            _label(stmt),
            f"one service per member of group {name} ({len(out)}), with the same settings",
        )
        return out
    if args[:1] == ["fwmark"]:
        if len(args) < 2 or not args[1].isdigit():
            notes.dropped(stmt.where, _label(stmt), "fwmark needs a mark number")
            return []
        return [{**_fwmark_key(args[1], base), **_without_protocol(base, "fwmark")}]
    if not args:
        notes.dropped(stmt.where, "virtual_server", "no address, fwmark or group given")
        return []
    port = int(args[1]) if len(args) > 1 and args[1].isdigit() else 0
    try:
        address = str(ipaddress.ip_address(args[0]))
    except ValueError:
        notes.dropped(stmt.where, _label(stmt), f"{args[0]!r} is not an IP address")
        return []
    return [{**_address_key(address, port, base), **_without_protocol(base, "address")}]


def _address_key(address: str, port: int | None, base: dict[str, Any]) -> dict[str, Any]:
    return {"protocol": base.get("protocol"), "address": address, "port": port or 0}


def _finish(vs: dict[str, Any], stmt: Stmt, notes: Notes) -> dict[str, Any]:
    """keepalived's own corrections of a service, made visible."""
    label = _label(stmt)
    if "fwmark" in vs:
        reals = [ipaddress.ip_address(r["address"]) for r in vs.get("real_server", ())]
        if "family" not in vs and reals and all(a.version == 6 for a in reals):
            vs["family"] = "ipv6"
        return vs
    if vs.get("protocol") is None:
        vs["protocol"] = "udp"
        notes.changed(
            stmt.where,
            label,
            "no protocol: keepalived 2.2 programs UDP (the kernel's default), so protocol = "
            '"udp"; write protocol TCP in keepalived.conf if TCP was meant',
        )
    if vs.get("one_packet") and vs["protocol"] != "udp":
        del vs["one_packet"]
        notes.dropped(stmt.where, f"{label} > ops", "one-packet scheduling needs UDP")
    if vs["port"] == 0 and not vs.get("persistence_timeout"):
        vs["persistence_timeout"] = 360
        notes.changed(
            stmt.where, label, "port 0 needs persistence: persistence_timeout = 360 (as keepalived)"
        )
    return vs


def _fwmark_key(value: str, base: dict[str, Any]) -> dict[str, Any]:
    mark, _, family = value.partition("/")
    key: dict[str, Any] = {"fwmark": int(mark)}
    if family == "inet6" or (not family and base.get("_family") == "ipv6"):
        key["family"] = "ipv6"
    return key


def _without_protocol(base: dict[str, Any], kind: str) -> dict[str, Any]:
    drop = {"protocol", "_family"} | ({"protocol"} if kind == "fwmark" else set())
    return {k: v for k, v in base.items() if k not in drop}


def _name(key: dict[str, Any], group: str) -> str:
    if "fwmark" in key:
        return f"{group}/fwmark/{key['fwmark']}"
    return f"{group}/{key['protocol']}/{key['address']}:{key['port']}"


def _service_body(stmt: Stmt, notes: Notes, defaults: Defaults) -> dict[str, Any]:
    """Everything of a service but its key (protocol kept for address services)."""
    stmt.used = True
    out: dict[str, Any] = {}
    if (s := stmt.first("protocol")) and s.args:
        proto = PROTOCOLS.get(s.args[0].upper())
        if proto is None:
            notes.dropped(s.where, _label(s), "expected TCP, UDP or SCTP; tcp used")
        elif stmt.args[:1] == ["fwmark"]:
            notes.dropped(s.where, _label(s), "an fwmark service takes every protocol")
        else:
            out["protocol"] = proto
    if s := stmt.first("lvs_sched", "lb_algo"):
        sched = s.args[0].lower() if s.args else ""
        if sched in SCHEDULERS:
            out["scheduler"] = sched
        else:
            notes.dropped(s.where, _label(s), f"scheduler {sched!r} is not supported; wlc used")
    flags = []
    for word in SCHED_FLAG_WORDS:
        if stmt.first(word):
            flags.append(word)
    sched = out.get("scheduler", "wlc")
    for n, (s_flag, m_flag) in ((1, ("sh-fallback", "mh-fallback")), (2, ("sh-port", "mh-port"))):
        if s := stmt.first(f"flag-{n}"):
            if sched in ("sh", "mh"):
                flags.append(s_flag if sched == "sh" else m_flag)
            else:
                notes.dropped(s.where, s.keyword, f"flag-{n} means nothing for scheduler {sched}")
    if flags:
        out["scheduler_flags"] = sorted(set(flags))
    if stmt.first("ops"):
        out["one_packet"] = True
    if s := stmt.first("lvs_method", "lb_kind"):
        out["forwarding"] = _method(s, notes)
    if s := stmt.first("persistence_timeout"):
        out["persistence_timeout"] = int(s.args[0]) if s.args else 360
    if (s := stmt.first("persistence_granularity")) and s.args:
        mask = s.args[0]
        out["persistence_netmask"] = int(mask) if mask.isdigit() else mask
    if (s := stmt.first("ip_family")) and s.args and s.args[0] == "inet6":
        out["_family"] = "ipv6"
    defaults = defaults.child(stmt, notes)
    reals: list[dict[str, Any]] = []
    checks: list[dict[str, Any] | None] = []
    inhibits: list[bool] = []
    for rs in stmt.all("real_server"):
        real, check, rs_inhibit = _real_server(rs, notes, defaults, out)
        if real is None:
            continue
        _fix_port(real, out, stmt.args, notes, rs)
        if any(_same_server(real, r) for r in reals):
            notes.dropped(rs.where, _label(rs), "a duplicate real server (keepalived drops it)")
            continue
        reals.append(real)
        checks.append(check)
        inhibits.append(rs_inhibit)
    if any(inhibits):
        out["on_failure"] = "quiesce"
        if not all(inhibits):
            notes.changed(
                stmt.where,
                _label(stmt),
                "inhibit_on_failure on some real servers only: on_failure = quiesce for all",
            )
    if s := stmt.first("sorry_server"):
        sorry: dict[str, Any] = {"address": s.args[0]} if s.args else {}
        if len(s.args) > 1 and s.args[1].isdigit():
            sorry["port"] = int(s.args[1])
        if m := stmt.first("sorry_server_lvs_method"):
            sorry["forwarding"] = _method(m, notes)
        _fix_port(sorry, out, stmt.args, notes, s)
        if sorry:
            out["sorry_server"] = sorry
    _place_checks(out, reals, checks)
    for s in stmt.leftovers():
        if s.keyword in WHY_NOT:
            s.drop()
            notes.dropped(s.where, _label(s), WHY_NOT[s.keyword])
        elif s.keyword == "alpha":
            s.used = True  # read by Defaults
    return out


def _same_server(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(
        ipaddress.ip_address(a["address"]) == ipaddress.ip_address(b["address"])
        and a.get("port") == b.get("port")
    )


def _method(s: Stmt, notes: Notes) -> str:
    word = s.args[0].upper() if s.args else ""
    method = METHODS.get(word)
    if method is None:
        notes.dropped(s.where, _label(s), "expected NAT, DR or TUN; nat used")
        return "nat"
    if len(s.args) > 1:
        notes.dropped(s.where, _label(s), "tunnel types other than ipip (gue, gre) are not carried")
    return method


def _fix_port(
    server: dict[str, Any], vs: dict[str, Any], vs_args: list[str], notes: Notes, s: Stmt
) -> None:
    """keepalived's rule: a dr/tun server keeps the packet's port (the service's, or 0 for
    fwmark services), so a port written on it is reset."""
    fwd = server.get("forwarding", vs.get("forwarding", "nat"))
    if fwd == "nat" or "port" not in server:
        return
    address_service = vs_args[:1] not in (["fwmark"], ["group"])
    vs_port = (
        int(vs_args[1]) if address_service and len(vs_args) > 1 and vs_args[1].isdigit() else 0
    )
    port = server.pop("port")
    if port and port != vs_port and vs_args[:1] != ["group"]:
        notes.changed(
            s.where,
            _label(s),
            f"{fwd} keeps the packet's port: port {port} is not carried, {vs_port} is used "
            "(as keepalived does)",
        )


def _real_server(
    rs: Stmt, notes: Notes, defaults: Defaults, vs: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    if not rs.args:
        notes.dropped(rs.where, "real_server", "no address given")
        return None, None, False
    real: dict[str, Any] = {"address": rs.args[0]}
    if len(rs.args) > 1 and rs.args[1].isdigit():
        real["port"] = int(rs.args[1])
    if s := rs.first("weight"):
        real["weight"] = int(s.args[0]) if s.args else 1
    if s := rs.first("lvs_method", "lb_kind"):
        real["forwarding"] = _method(s, notes)
        if real["forwarding"] == vs.get("forwarding", "nat"):
            del real["forwarding"]
    if s := rs.first("uthreshold"):
        real["upper_threshold"] = int(s.args[0])
    if s := rs.first("lthreshold"):
        real["lower_threshold"] = int(s.args[0])
    rs_defaults = defaults.child(rs, notes)
    check = checker(rs, notes, rs_defaults, real)
    for s in rs.leftovers():
        if s.keyword in WHY_NOT:
            s.drop()
            notes.dropped(s.where, _label(s), WHY_NOT[s.keyword])
        elif s.keyword == "alpha":
            s.used = True
    return real, check, rs_defaults.inhibit


def _place_checks(
    vs: dict[str, Any], reals: list[dict[str, Any]], checks: list[dict[str, Any] | None]
) -> None:
    """One check for the service when every real server has the same, else one each."""
    if reals:
        vs["real_server"] = reals
    if not checks or all(c is None for c in checks):
        return
    first = checks[0]
    if first is not None and all(c == first for c in checks):
        vs["check"] = first
        return
    for real, check in zip(reals, checks, strict=True):
        real["check"] = check if check is not None else {"type": "none"}
