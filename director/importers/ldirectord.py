"""ldirectord.cf -> director config data and notes (``directorctl import ldirectord FILE``).

ldirectord (heartbeat, now ClusterLabs resource-agents) programs IPVS from ``virtual=`` blocks
and checks the real servers itself; the virtual addresses are held by heartbeat or pacemaker,
so there is no VRRP part to import. The file format is read by
:mod:`director.importers.ldirectord_format`, the checks by
:mod:`director.importers.ldirectord_checks`, the real and fallback servers by
:mod:`director.importers.ldirectord_servers`.

Defaults are ldirectord's own (resource-agents ``ldirectord.in``): scheduler ``wrr``, protocol
``tcp`` (``udp`` for port 53), checktype ``negotiate`` with the service of the port, check
interval 10 s, checktimeout 5 s and negotiatetimeout 30 s (each falling back to the other),
failurecount 1, quiescent ``no`` (since 2009; the man page still says ``yes``), cleanstop
``yes``, and a fallback reached by ``gate``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, get_args

from director.config.fields import netmask_prefix
from director.config.model import SchedulerName
from director.importers.keepalived import Stmt
from director.importers.ldirectord_checks import (
    Context,
    Probe,
    Timing,
    probe,
)
from director.importers.ldirectord_format import (
    VIRTUALS,
    Fallback,
    VirtualKey,
    error,
    fallback,
    number,
    parse,
    peek,
    port,
    value,
    virtual_key,
    whole,
    yes_no,
)
from director.importers.ldirectord_servers import (
    Real,
    place,
    reals,
    service_forwarding,
    sorry_server,
)
from director.importers.notes import Imported, Notes

SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)
SCHED_FLAGS = ("sh-fallback", "sh-port", "mh-fallback", "mh-port", "flag-1", "flag-2", "flag-3")
MAX_PERSISTENT = 31 * 86400  # ipvsadm's limit
NO_MAIL = (
    "directord sends no mail: alert on its metrics instead (a Prometheus rule on "
    "director_check_up == 0, see docs/operations.md)"
)
# Directives ldirectord takes only at the top, or only in a virtual block (it refuses them
# anywhere else).
GLOBAL_ONLY = frozenset(
    {"autoreload", "callback", "logfile", "execute", "fork", "supervised", "readdquiescent"}
) | {"maintenancedir", "emailalertfrom", "timeout"}
BLOCK_ONLY = (
    frozenset({"real", "real6", "request", "receive", "checktype", "checkcommand", "checkport"})
    | {"login", "passwd", "database", "secret", "load", "scheduler", "persistent", "schedflags"}
    | {"netmask", "protocol", "ops", "service", "httpmethod", "virtualhost", "monitorfile"}
    | {"servicename", "comment"}
)
WHY_NOT = {
    "callback": "directord does not watch its file or run a program when it changes: keep "
    "the directors' files in step with config management, then run directorctl reload",
    "logfile": "directord logs to standard error (the journal under systemd), in logfmt or "
    "JSON ([daemon] log_format)",
    "execute": "directord runs one config: import that configuration too and merge its virtual "
    "services into this file",
    "supervised": "directord runs in the foreground under systemd and logs to standard error: "
    "nothing to set",
    "fork": "directord runs every check concurrently on its event loop: nothing to set",
    "maintenancedir": "directord reads no maintenance directory: take a real server out with "
    "directorctl drain SERVER (weight 0, existing connections continue; it survives reloads "
    "and restarts) and back with directorctl enable SERVER",
    "emailalert": NO_MAIL,
    "emailalertfreq": NO_MAIL,
    "emailalertstatus": NO_MAIL,
    "emailalertfrom": NO_MAIL,
    "smtp": NO_MAIL,
    "fallbackcommand": "directord runs no program when the last real server of a service "
    "fails or the first comes back: the sorry server takes the traffic, and director_check_up "
    "shows it",
    "monitorfile": "directord writes no per-service check log: every verdict is in directorctl "
    "status, the log and the director_check_* metrics",
    "comment": "a note for ldirectord's e-mails, which directord does not send: copy it into "
    "the TOML as a comment by hand",
    "load": "ldirectord reads this string but no check uses it",
    "request": "not used by the check directord runs for this service (see checktype/service)",
    "receive": "not used by the check directord runs for this service (see checktype/service)",
    "httpmethod": "not used: the service has no http/https check",
    "virtualhost": "not used: the service has no http/https check",
    "checkcommand": "not used: checktype is not external",
    "checkport": "not used: the service has no check with a port",
}


@dataclass(frozen=True)
class Settings:
    """Directives a virtual block may set for itself or inherit from the top of the file."""

    checktimeout: int | None = None
    negotiatetimeout: int | None = None
    checkinterval: int | None = None
    checkcount: int | None = None
    failurecount: int | None = None
    quiescent: bool | None = None
    cleanstop: bool | None = None


@dataclass(frozen=True)
class Globals:
    settings: Settings
    fork: bool
    fallback: Fallback | None  # fallback= (IPv4 services)
    fallback6: Fallback | None  # fallback6= (IPv6 services)
    timing_where: str  # the global timing directive a note about them points at


def import_ldirectord(path: str | os.PathLike[str]) -> Imported:
    """Read ldirectord.cf as director config data."""
    notes = Notes()
    root = parse(path)
    _placement(root)
    fork = (s := peek(root, "fork")) is not None and yes_no(s)
    top = Globals(
        _settings(root, notes, global_=True),
        fork,
        fallback(s) if (s := root.first("fallback")) else None,
        fallback(s) if (s := root.first("fallback6")) else None,
        _timing_where(root),
    )
    seen: set[str] = set()
    services: list[dict[str, Any]] = []
    keys: dict[tuple[Any, ...], int] = {}
    for v in [c for c in root.children or () if c.keyword in VIRTUALS]:
        v.used = True
        vs = _virtual(v, top, notes, seen)
        if vs is None:
            continue
        key = _key(vs)
        if key in keys:
            raise error(v, "each virtual service once", f"{value(v)} again (also line {keys[key]})")
        keys[key] = v.line
        services.append(vs)
    _unique_names(services)
    config: dict[str, Any] = {}
    _file_notes(root, top.settings, services, notes, config)
    if services:
        config["virtual_server"] = services
    _leftovers(root, "", notes)
    return Imported(config, notes)


def _placement(root: Stmt) -> None:
    """ldirectord refuses a block directive at the top and a global one in a block."""
    for s in root.children or ():
        if s.keyword in BLOCK_ONLY:
            raise error(s, f"{s.keyword}= indented under a virtual= line", "it at the start")
        for c in s.children or ():
            if c.keyword in GLOBAL_ONLY:
                raise error(
                    c,
                    f"{c.keyword}= at the start of a line (a global directive)",
                    f"it under {s.keyword}= (line {s.line})",
                )


def _key(vs: dict[str, Any]) -> tuple[Any, ...]:
    if "fwmark" in vs:
        return ("fwmark", vs["fwmark"], vs.get("family", "ipv4"))
    return (vs["protocol"], vs["address"], vs["port"])


def _settings(stmt: Stmt, notes: Notes, *, global_: bool) -> Settings:
    out = Settings()
    seconds = "a whole number of seconds"
    if s := stmt.first("checktimeout"):
        out = replace(out, checktimeout=whole(s, what=seconds))
    if s := stmt.first("negotiatetimeout"):
        out = replace(out, negotiatetimeout=whole(s, what=seconds))
    if s := stmt.first("connecttimeout"):
        out = replace(out, negotiatetimeout=whole(s, what=seconds))
        notes.changed(s.where, "connecttimeout", "read as negotiatetimeout, which replaced it")
    if s := stmt.first("timeout"):
        n = whole(s, what=seconds)
        out = replace(out, checktimeout=n, negotiatetimeout=n)
        notes.changed(s.where, "timeout", "read as checktimeout and negotiatetimeout")
    if s := stmt.first("checkinterval"):
        out = replace(out, checkinterval=whole(s, what=seconds))
    if s := stmt.first("checkcount"):
        out = replace(out, checkcount=whole(s, what="a count"))
    if s := stmt.first("failurecount"):
        out = replace(out, failurecount=whole(s, what="a count"))
    if s := stmt.first("quiescent"):
        out = replace(out, quiescent=yes_no(s))
    if s := stmt.first("cleanstop"):
        out = replace(out, cleanstop=yes_no(s))
    if global_:
        for kw in ("autoreload", "readdquiescent", "supervised", "fork"):
            if s := peek(stmt, kw):
                yes_no(s)  # reported (or not) later; ldirectord refuses another value
    return out


def _virtual(v: Stmt, top: Globals, notes: Notes, seen: set[str]) -> dict[str, Any] | None:
    label = f"{v.keyword}={value(v)}"
    key = virtual_key(v)
    local = _settings(v, notes, global_=False)
    protocol = _protocol(v, key, notes, label)
    vs: dict[str, Any] = {}
    if s := v.first("servicename"):
        name = value(s)
        if name and name.isprintable():
            vs["name"] = name
        else:
            notes.dropped(s.where, f"{label} > servicename", "not a printable name")
    if key.fwmark is not None:
        vs["fwmark"] = key.fwmark
        if v.keyword == "virtual6":
            vs["family"] = "ipv6"
        notes.carried(
            v.where,
            label,
            "an fwmark service: ldirectord relied on iptables rules made elsewhere to mark the "
            "packets; keep them, or let directord make them with [[fwmark]] tables",
        )
    else:
        assert key.host is not None
        if key.host.address is None:
            v.drop()
            notes.dropped(
                v.where,
                label,
                f"{key.host.text} is a host name: directord needs addresses and the importer "
                "resolves none; the service is not carried: write its address",
            )
            return None
        vport = port(v, key.port_text, protocol)
        vs |= {"protocol": protocol, "address": key.host.address, "port": vport}
    _scheduling(v, vs, label, notes)
    if vs.get("port") == 0 and "persistence_timeout" not in vs:
        raise error(v, "a port from 1 to 65535 (port 0 only with persistent=)")
    vip = str(key.fwmark) if key.fwmark is not None else str(vs["address"])
    timing = _timing(v, local, top, notes, label)
    ctx = Context(v, label, protocol, vip, vs.get("port", 0), timing, notes, seen)
    _carry(ctx, vs, probe(ctx), _fallback(v, key, top, notes, label))
    quiescent = local.quiescent if local.quiescent is not None else top.settings.quiescent
    if quiescent:
        vs["on_failure"] = "quiesce"
    if local.cleanstop is not None and (top.settings.cleanstop is not False) != local.cleanstop:
        s = v.first("cleanstop")
        assert s is not None
        notes.dropped(
            s.where,
            f"{label} > cleanstop={value(s)}",
            "directord has one keep_table_on_stop for every service: the global cleanstop is used",
        )
    _leftovers(v, label, notes)
    return _ordered(vs)


def _protocol(v: Stmt, key: VirtualKey, notes: Notes, label: str) -> str:
    s = v.first("protocol")
    if key.fwmark is not None:
        if s is not None and value(s) != "fwm":
            raise error(s, "fwm for a firewall-mark service")
        return "fwm"
    if s is not None:
        if value(s) not in ("tcp", "udp"):
            raise error(s, "tcp or udp")
        return value(s)
    if key.port_text in ("53", "domain"):
        notes.carried(
            v.where, label, 'no protocol on port 53: ldirectord\'s default is udp: protocol = "udp"'
        )
        return "udp"
    return "tcp"


def _fallback(v: Stmt, key: VirtualKey, top: Globals, notes: Notes, label: str) -> Fallback | None:
    v6 = v.keyword == "virtual6"
    mine, other = ("fallback6", "fallback") if v6 else ("fallback", "fallback6")
    if s := v.first(other):
        raise error(s, f"{mine}= in a {v.keyword}= block", f"{other}=")
    if s := v.first(mine):
        return fallback(s)
    found = top.fallback6 if v6 else top.fallback
    if found is not None and key.fwmark is not None:
        notes.dropped(
            found.stmt.where,
            f"{label} > {found.stmt.keyword}",
            "ldirectord keeps the global fallback per protocol (tcp, udp) and gives none to an "
            "fwmark service: no sorry server for it",
        )
        return None
    return found


def _scheduling(v: Stmt, vs: dict[str, Any], label: str, notes: Notes) -> None:
    sched = "wrr"
    if s := v.first("scheduler"):
        sched = value(s)
        if sched not in SCHEDULERS:
            raise error(s, f"one of the IPVS schedulers {', '.join(SCHEDULERS)}")
    vs["scheduler"] = sched
    if s := v.first("schedflags"):
        _sched_flags(s, vs, label, notes)
    persistent = None
    if s := v.first("persistent"):
        persistent = whole(s, 1, MAX_PERSISTENT, "a whole number of seconds")
        vs["persistence_timeout"] = persistent
    if s := v.first("netmask"):
        _netmask(s, vs, v.keyword == "virtual6", persistent is not None, label, notes)
    if (s := v.first("ops")) and yes_no(s):
        if vs.get("protocol") == "udp":
            vs["one_packet"] = True
        else:
            notes.dropped(
                s.where,
                f"{label} > ops=yes",
                "ldirectord sets one-packet scheduling on udp services only",
            )


def _sched_flags(s: Stmt, vs: dict[str, Any], label: str, notes: Notes) -> None:
    sched = vs["scheduler"]
    flags: list[str] = []
    for word in value(s).split(","):
        word = word.strip()
        if word not in SCHED_FLAGS:
            raise error(s, f"a comma-separated list of {', '.join(SCHED_FLAGS)}")
        if word in ("flag-1", "flag-2") and sched in ("sh", "mh"):
            word = f"{sched}-{'fallback' if word == 'flag-1' else 'port'}"
        if word.startswith(f"{sched}-"):
            flags.append(word)
        else:
            notes.dropped(
                s.where, f"{label} > schedflags={word}", f"means nothing for scheduler {sched}"
            )
    if flags:
        vs["scheduler_flags"] = sorted(set(flags))


def _netmask(
    s: Stmt, vs: dict[str, Any], v6: bool, persistent: bool, label: str, notes: Notes
) -> None:
    text = value(s)
    if v6:
        prefix = number(text)
        if prefix is None or not 1 <= prefix <= 128:
            raise error(s, "a prefix length from 1 to 128")
        mask: str | int = prefix
        full = mask == 128
    else:
        try:
            netmask_prefix(text)
        except ValueError:
            raise error(s, "a contiguous dotted netmask like 255.255.255.0") from None
        mask, full = text, text == "255.255.255.255"
    if not persistent:
        notes.dropped(
            s.where, f"{label} > netmask={text}", "ldirectord uses it only with persistent="
        )
    elif not full:
        vs["persistence_netmask"] = mask


def _timing(v: Stmt, local: Settings, top: Globals, notes: Notes, label: str) -> Timing:
    g = top.settings
    check = _first(local.checktimeout, local.negotiatetimeout, g.checktimeout, g.negotiatetimeout)
    negotiate = _first(
        local.negotiatetimeout, local.checktimeout, g.negotiatetimeout, g.checktimeout
    )
    interval = g.checkinterval or 10
    if local.checkinterval is not None:
        if top.fork:
            interval = local.checkinterval
        else:
            s = v.first("checkinterval")
            assert s is not None
            notes.dropped(
                s.where,
                f"{label} > checkinterval={local.checkinterval}",
                f"ldirectord ignores it without fork = yes: the global {interval} s is used",
            )
    count = local.checkcount or g.checkcount or 1
    return Timing(
        interval,
        check or 5,
        negotiate or 30,
        local.failurecount or g.failurecount or 1,
        count,
        top.timing_where,
    )


def _timing_where(root: Stmt) -> str:
    keys = ("checktimeout", "negotiatetimeout", "connecttimeout", "timeout", "checkinterval")
    found = [s for s in root.children or () if s.keyword in keys]
    return found[0].where if found else f"{root.file}:0"


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _carry(ctx: Context, vs: dict[str, Any], p: Probe, fb: Fallback | None) -> None:
    found: list[Real] = reals(ctx, vs)
    vs["forwarding"] = service_forwarding(found, fb)
    if p.drop_reals:
        ct = ctx.block.first("checktype")
        ctx.notes.dropped(
            ctx.where(ct),
            f"{ctx.label} > checktype=off",
            f"ldirectord adds neither the real servers nor the fallback: the service is "
            f"carried without them ({len(found)} real server{'' if len(found) == 1 else 's'} "
            "and the fallback not carried)",
        )
        return
    if p.check is not None:
        vs["check"] = p.check
    place(ctx, vs, found, p)
    if fb is not None:
        sorry = sorry_server(ctx, vs, fb, vs.get("real_server", []))
        if sorry is not None:
            vs["sorry_server"] = sorry


ORDER = (
    "name",
    "protocol",
    "address",
    "port",
    "fwmark",
    "family",
    "scheduler",
    "scheduler_flags",
    "persistence_timeout",
    "persistence_netmask",
    "one_packet",
    "forwarding",
    "on_failure",
    "sorry_server",
    "check",
    "real_server",
)


def _ordered(vs: dict[str, Any]) -> dict[str, Any]:
    return {k: vs[k] for k in ORDER if k in vs}


def _unique_names(services: list[dict[str, Any]]) -> None:
    """Names as directord wants them: unique, also against the names it derives."""
    taken = {_derived(vs) for vs in services if "name" not in vs}
    for vs in services:
        name = vs.get("name")
        if name is None:
            continue
        n, candidate = 1, name
        while candidate in taken:
            n += 1
            candidate = f"{name}#{n}"
        vs["name"] = candidate
        taken.add(candidate)


def _derived(vs: dict[str, Any]) -> str:
    if "fwmark" in vs:
        return f"fwmark/{vs['fwmark']}" + ("/ipv6" if vs.get("family") == "ipv6" else "")
    address = vs["address"]
    host = f"[{address}]" if ":" in address else address
    return f"{vs['protocol']}/{host}:{vs['port']}"


def _file_notes(
    root: Stmt, g: Settings, services: list[dict[str, Any]], notes: Notes, config: dict[str, Any]
) -> None:
    where = f"{root.file}:0"
    if s := root.first("cleanstop"):
        if g.cleanstop:
            config["daemon"] = {"keep_table_on_stop": False}
            notes.carried(s.where, "cleanstop=yes", "keep_table_on_stop = false")
    elif services:
        notes.changed(
            where,
            "cleanstop",
            "ldirectord's default (yes) removed its virtual services when it stopped; "
            "directord keeps them (keep_table_on_stop = true) so connections survive a restart: "
            "set [daemon] keep_table_on_stop = false for the old behaviour",
        )
    if root.first("quiescent") is None and services:
        notes.carried(
            where,
            "quiescent",
            "not set: ldirectord since 2009 (heartbeat 3, resource-agents) removes a failed real "
            'server, as on_failure = "remove" does; older ldirectord (and its man page) quiesced '
            'it: add on_failure = "quiesce" if that is what ran',
        )
    if services:
        notes.changed(
            where,
            "virtual addresses",
            "ldirectord does not hold the virtual addresses (heartbeat or pacemaker did, e.g. "
            "IPaddr2): no [[vrrp_instance]] is made; keep the cluster manager for the VIPs, or "
            "add a [[vrrp_instance]] with them (docs/migration.md)",
        )
    if (s := root.first("autoreload")) and yes_no(s):
        notes.dropped(
            s.where,
            "autoreload=yes",
            "directord does not watch its file: after a change run directorctl reload (or "
            "systemctl reload directord)",
        )
    if (s := root.first("readdquiescent")) and not yes_no(s):
        notes.dropped(
            s.where,
            "readdquiescent=no",
            "directord's periodic resync puts back a real server removed by hand with ipvsadm; "
            "take one out with directorctl drain SERVER instead",
        )
    for kw in ("fallback", "fallback6"):
        if (s := root.first(kw)) and not any("sorry_server" in vs for vs in services):
            notes.dropped(s.where, f"{kw}={value(s)}", "no service takes it (see the notes above)")


def _leftovers(stmt: Stmt, label: str, notes: Notes) -> None:
    for s in stmt.leftovers():
        s.drop()
        setting = f"{label} > {s.keyword}={value(s)}" if label else f"{s.keyword}={value(s)}"
        if s.keyword in WHY_NOT:
            notes.dropped(s.where, setting, WHY_NOT[s.keyword])
        else:
            notes.dropped(
                s.where,
                setting,
                "not an ldirectord directive (ldirectord refuses the file); not carried",
            )
