"""keepalived ``virtual_server`` / ``virtual_server_group`` -> ``[[virtual_server]]`` tables."""

from __future__ import annotations

import ipaddress
from typing import Any

from director.importers import values
from director.importers.keepalived import Stmt
from director.importers.keepalived_checks import Defaults, checker
from director.importers.keepalived_groups import Group
from director.importers.notes import Notes

SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}
)
METHODS = {"NAT": "nat", "DR": "dr", "TUN": "tun"}
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
SCHED_FLAG_WORDS = ("sh-port", "sh-fallback", "mh-port", "mh-fallback")
LVS_MAX_TIMEOUT = 86400 * 31  # keepalived's bound for persistence_timeout
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


def _label(stmt: Stmt) -> str:
    return " ".join([stmt.keyword, *stmt.args])


def virtual_servers(
    stmt: Stmt, groups: dict[str, Group], notes: Notes, defaults: Defaults
) -> list[dict[str, Any]]:
    """The ``[[virtual_server]]`` tables for one keepalived ``virtual_server`` block."""
    base = _service_body(stmt, notes, defaults, groups)
    if not base.get("real_server"):
        notes.dropped(stmt.where, _label(stmt), "no real servers: keepalived ignores the service")
        return []
    out = []
    for vs in _keyed(stmt, base, groups, notes):
        vs = _finish(vs, stmt, notes)
        if not vs.get("real_server"):
            notes.dropped(stmt.where, _label(stmt), "no real servers left: keepalived ignores it")
            continue
        out.append(vs)
    return out


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
        reals = sum(1 for c in stmt.children or () if c.keyword == "real_server")
        consequence = ""
        if len(out) > 1:
            consequence = (
                f"; each service runs its own checks, so the real servers are probed "
                f"{len(out)} times as often as keepalived probed them (one checker per "
                f"real_server for the whole group)"
                + (f": {len(out) * reals} checks instead of {reals}" if reals else "")
            )
        notes.changed(
            stmt.where,
            _label(stmt),
            f"one service per member of group {name} ({len(out)}), with the same settings"
            + consequence,
        )
        return out
    if args[:1] == ["fwmark"]:
        mark = values.integer(stmt, 1, 2**32 - 1, "an fwmark", index=1)
        return [{**_fwmark_key(str(mark), base), **_without_protocol(base, "fwmark")}]
    if not args:
        values.fail(stmt, "an address and port, fwmark N or group NAME", None)
    address = values.address(stmt)
    port = values.integer(stmt, 0, 65535, "a port", index=1) if len(args) > 1 else 0
    return [{**_address_key(address, port, base), **_without_protocol(base, "address")}]


def _address_key(address: str, port: int | None, base: dict[str, Any]) -> dict[str, Any]:
    return {"protocol": base.get("protocol"), "address": address, "port": port or 0}


def _finish(vs: dict[str, Any], stmt: Stmt, notes: Notes) -> dict[str, Any]:
    """keepalived's own corrections of a service, made visible."""
    label = _label(stmt)
    if "fwmark" in vs:
        # keepalived: the first real server not reached through a tunnel sets the family
        first = next((r for r in vs.get("real_server", ()) if _forwarding(vs, r) != "tun"), None)
        if "family" not in vs and first and ipaddress.ip_address(first["address"]).version == 6:
            vs["family"] = "ipv6"
        _one_family(vs, 6 if vs.get("family") == "ipv6" else 4, stmt, notes)
        _granularity(vs, 6 if vs.get("family") == "ipv6" else 4, stmt)
        return vs
    _one_family(vs, ipaddress.ip_address(vs["address"]).version, stmt, notes)
    _granularity(vs, ipaddress.ip_address(vs["address"]).version, stmt)
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


def _one_family(vs: dict[str, Any], family: int, stmt: Stmt, notes: Notes) -> None:
    """keepalived skips a real or sorry server of another family than the service's
    (``check_parser.c``), unless it is reached through a tunnel."""

    def other(server: dict[str, Any]) -> bool:
        tunnel = _forwarding(vs, server) == "tun"
        return not tunnel and ipaddress.ip_address(server["address"]).version != family

    reals: list[dict[str, Any]] = []
    for server in vs.get("real_server", ()):
        label = f"{_label(stmt)} > real_server {server['address']}"
        if other(server):
            why = f"not an IPv{family} address like the service's (keepalived skips it)"
            notes.dropped(stmt.where, label, why)
        elif any(_dest(vs, server) == _dest(vs, r) for r in reals):
            notes.dropped(stmt.where, label, "the same server again (keepalived drops it)")
        else:
            reals.append(server)
    if reals:
        vs["real_server"] = reals  # a new list: a group's services share the old one
    else:
        vs.pop("real_server", None)
    sorry = vs.get("sorry_server")
    if sorry is not None and other(sorry):
        del vs["sorry_server"]
        notes.dropped(
            stmt.where,
            f"{_label(stmt)} > sorry_server {sorry['address']}",
            f"not an IPv{family} address like the service's (keepalived skips it)",
        )
    elif sorry is not None and any(_dest(vs, sorry) == _dest(vs, r) for r in reals):
        del vs["sorry_server"]
        notes.dropped(
            stmt.where,
            f"{_label(stmt)} > sorry_server {sorry['address']}",
            "the sorry server is one of the real servers: it stays in the table as one",
        )


def _granularity(vs: dict[str, Any], family: int, stmt: Stmt) -> None:
    """A persistence mask of the service's family: a prefix (1 to 128) for IPv6, a netmask or a
    prefix (1 to 32) for IPv4 (``check_parser.c``, ``pgr_handler``)."""
    mask = vs.get("persistence_netmask")
    s = stmt.first("persistence_granularity")
    if mask is None or s is None:
        return
    if family == 6 and (isinstance(mask, str) or not 1 <= mask <= 128):
        values.fail(s, "a prefix length from 1 to 128 for an IPv6 service", s.args[0])
    if family == 4 and isinstance(mask, int) and not 1 <= mask <= 32:
        values.fail(s, "a netmask or a prefix length from 1 to 32 for an IPv4 service", s.args[0])


def service_key(vs: dict[str, Any]) -> tuple[Any, ...]:
    """What the kernel keys a service by: fwmark and family, or protocol, address, port."""
    if "fwmark" in vs:
        return ("fwmark", vs["fwmark"], vs.get("family", "ipv4"))
    return (vs["protocol"], ipaddress.ip_address(vs["address"]), vs["port"])


def _forwarding(vs: dict[str, Any], server: dict[str, Any]) -> str:
    return str(server.get("forwarding", vs.get("forwarding", "nat")))


def _dest(vs: dict[str, Any], server: dict[str, Any]) -> tuple[Any, int]:
    """The kernel's key of a real or sorry server: dr/tun keep the service's port."""
    port = server.get("port") if _forwarding(vs, server) == "nat" else None
    return ipaddress.ip_address(server["address"]), (vs.get("port") or 0) if port is None else port


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


def _service_body(
    stmt: Stmt, notes: Notes, defaults: Defaults, groups: dict[str, Group]
) -> dict[str, Any]:
    """Everything of a service but its key (protocol kept for address services)."""
    stmt.used = True
    out: dict[str, Any] = {}
    vs_port = _port(stmt, groups)
    if (s := stmt.first("protocol")) and s.args:
        proto = PROTOCOLS.get(s.args[0].upper())
        if proto is None:
            notes.dropped(s.where, _label(s), "expected TCP, UDP or SCTP; ignored, as keepalived")
        elif stmt.args[:1] == ["fwmark"]:
            notes.dropped(s.where, _label(s), "an fwmark service takes every protocol")
        else:
            out["protocol"] = proto
    _scheduler(stmt, out, notes)
    if stmt.first("ops"):
        out["one_packet"] = True
    if (s := stmt.first("lvs_method", "lb_kind")) and (method := _method(s, notes)):
        out["forwarding"] = method
    if s := stmt.first("ip_family"):
        family = values.word(s, "inet or inet6")
        if family not in ("inet", "inet6"):
            values.fail(s, "inet or inet6", family)
        if family == "inet6":
            out["_family"] = "ipv6"
    _persistence(stmt, out, notes)
    defaults = defaults.child(stmt, notes)
    reals: list[dict[str, Any]] = []
    checks: list[dict[str, Any] | None] = []
    inhibits: list[bool] = []
    for rs in stmt.all("real_server"):
        real, check, rs_inhibit = _real_server(rs, notes, defaults, out, vs_port)
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
        sorry: dict[str, Any] = {"address": values.address(s)}
        if len(s.args) > 1:
            sorry["port"] = values.integer(s, 0, 65535, "a port", index=1)
        if (m := stmt.first("sorry_server_lvs_method")) and (method := _method(m, notes)):
            sorry["forwarding"] = method
        _fix_port(sorry, out, stmt.args, notes, s)
        out["sorry_server"] = sorry
    _place_checks(out, reals, checks)
    for s in stmt.leftovers():
        if s.keyword in WHY_NOT:
            s.drop()
            notes.dropped(s.where, _label(s), WHY_NOT[s.keyword])
        elif s.keyword == "alpha":
            s.used = True  # read by Defaults
    return out


def _persistence(stmt: Stmt, out: dict[str, Any], notes: Notes) -> None:
    """``persistence_timeout [T]`` (no value: 360 s) and ``persistence_granularity MASK``,
    which makes the service persistent (360 s) when no timeout is given, as keepalived does."""
    if s := stmt.first("persistence_timeout"):
        timeout = 360  # no value: keepalived's default
        if s.args:
            timeout = values.integer(s, 0, LVS_MAX_TIMEOUT, "a number of seconds")
        if timeout:
            out["persistence_timeout"] = timeout
    if s := stmt.first("persistence_granularity"):
        out["persistence_netmask"] = values.netmask(s)
        if "persistence_timeout" not in out:
            out["persistence_timeout"] = 360
            notes.changed(
                s.where,
                f"persistence_granularity {s.args[0]}",
                "makes the service persistent: persistence_timeout = 360, as keepalived does",
            )


def _same_server(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(
        ipaddress.ip_address(a["address"]) == ipaddress.ip_address(b["address"])
        and a.get("port") == b.get("port")
    )


def _scheduler(stmt: Stmt, out: dict[str, Any], notes: Notes) -> None:
    """``lvs_sched``/``lb_algo`` and the scheduler flags, as keepalived 2.2 reads them
    (``check_parser.c``): a scheduler name is lower case, and ``sh-port``/``sh-fallback``
    (``mh-...``) count only after the ``sh`` (``mh``) scheduler is set in the block."""
    sched = ""
    flags: dict[str, Stmt] = {}
    for c in stmt.children or ():
        if c.keyword in ("lvs_sched", "lb_algo"):
            word = c.args[0] if c.args else ""
            if word in SCHEDULERS:
                sched = word
        elif c.keyword in SCHED_FLAG_WORDS:
            c.used = True
            if sched and c.keyword.startswith(sched):
                flags[c.keyword] = c
            else:
                notes.dropped(
                    c.where,
                    c.keyword,
                    f"only for the {c.keyword[:2]} scheduler, set before it in the block "
                    "(keepalived ignores it)",
                )
    if s := stmt.first("lvs_sched", "lb_algo"):
        word = s.args[0] if s.args else ""
        if word in SCHEDULERS:
            out["scheduler"] = word
        else:
            notes.dropped(s.where, _label(s), f"scheduler {word!r} is not supported; wlc used")
    final = out.get("scheduler", "wlc")
    for word, c in list(flags.items()):
        if not word.startswith(final):
            del flags[word]
            notes.dropped(c.where, word, f"the scheduler is {final} in the end: no effect")
    for n, (s_flag, m_flag) in ((1, ("sh-fallback", "mh-fallback")), (2, ("sh-port", "mh-port"))):
        if s := stmt.first(f"flag-{n}"):
            if final in ("sh", "mh"):
                flags[s_flag if final == "sh" else m_flag] = s
            else:
                notes.dropped(s.where, s.keyword, f"flag-{n} means nothing for scheduler {final}")
    if flags:
        out["scheduler_flags"] = sorted(flags)


def _method(s: Stmt, notes: Notes) -> str | None:
    """NAT, DR or TUN (upper case, as keepalived); None for anything else, which keepalived
    ignores (the default, or the service's for a real server, is used)."""
    word = s.args[0] if s.args else ""
    method = METHODS.get(word)
    if method is None:
        notes.dropped(s.where, _label(s), "expected NAT, DR or TUN; ignored, as keepalived")
        return None
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


def _port(stmt: Stmt, groups: dict[str, Group]) -> int | None:
    """The port of a ``virtual_server`` (0 for fwmark services); of a group, 0 when a member
    has none, None when there is no such group."""
    args = stmt.args
    if args[:1] == ["group"]:
        group = groups.get(args[1]) if len(args) > 1 else None
        if group is None:
            return None
        return min((port or 0 for _, _, port in group.members), default=None)
    if args[:1] == ["fwmark"] or len(args) < 2:
        return 0
    values.address(stmt)
    return values.integer(stmt, 0, 65535, "a port", index=1)


def _real_server(
    rs: Stmt, notes: Notes, defaults: Defaults, vs: dict[str, Any], vs_port: int | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    real: dict[str, Any] = {"address": values.address(rs)}
    if len(rs.args) > 1:
        real["port"] = values.integer(rs, 0, 65535, "a port", index=1)
    if s := rs.first("weight"):
        real["weight"] = values.integer(s, 0, 65535, "a weight")
    method = (s := rs.first("lvs_method", "lb_kind")) and _method(s, notes)
    if method and method != vs.get("forwarding", "nat"):
        real["forwarding"] = method
    if s := rs.first("uthreshold"):
        real["upper_threshold"] = values.integer(s, 0, 2**31 - 1)
    if s := rs.first("lthreshold"):
        real["lower_threshold"] = values.integer(s, 0, 2**31 - 1)
        if real["lower_threshold"] > real.get("upper_threshold", 0):
            values.fail(
                s,
                f"at most uthreshold ({real.get('upper_threshold', 0)}; the kernel refuses a "
                "lower threshold above the upper one)",
                s.args[0],
            )
    rs_defaults = defaults.child(rs, notes)
    nat = real.get("forwarding", vs.get("forwarding", "nat")) == "nat"
    probed = (real.get("port") or vs_port) if nat else vs_port
    check = checker(rs, notes, rs_defaults, real, probed)
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
