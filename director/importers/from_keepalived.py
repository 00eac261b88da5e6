"""keepalived.conf -> director config data and notes (``directorctl import keepalived FILE``)."""

from __future__ import annotations

import os
from typing import Any

from director.importers import keepalived_groups, keepalived_lvs, keepalived_vrrp, values
from director.importers.keepalived import Stmt, parse_file
from director.importers.keepalived_checks import Defaults
from director.importers.notes import Imported, Notes

WHY_NOT_GLOBAL = {
    "router_id": "directord has no router id; logs and status name the host",
    "notification_email": "directord sends no e-mail; alert from its metrics or notify scripts",
    "notification_email_from": "directord sends no e-mail",
    "smtp_server": "directord sends no e-mail",
    "smtp_connect_timeout": "directord sends no e-mail",
    "smtp_helo_name": "directord sends no e-mail",
    "smtp_alert": "directord sends no e-mail",
    "smtp_alert_vrrp": "directord sends no e-mail",
    "smtp_alert_checker": "directord sends no e-mail",
    "enable_script_security": "scripts run as directord's user, from absolute paths only",
    "script_user": "not carried: set [daemon] script_user in the imported file",
    "lvs_flush": "directord never flushes the table: it adopts what is there and changes only "
    "the services it owns",
    "lvs_flush_on_stop": "see keep_table_on_stop in [daemon]: directord keeps the table on stop "
    "by default so connections survive a restart",
    "vrrp_skip_check_adv_addr": "address lists of adverts are compared",
    "vrrp_iptables": "directord keeps its rules in its own nftables table",
    "vrrp_ipsets": "directord keeps its rules in its own nftables table",
    "nftables": "directord keeps its rules in its own nftables table",
    "max_auto_priority": "directord's process priority is set by systemd",
    "vrrp_garp_lower_prio_delay": "GARPs on a lower-priority advert are not configurable",
    "vrrp_garp_lower_prio_repeat": "GARPs on a lower-priority advert are not configurable",
    "vrrp_garp_master_refresh_repeat": "one GARP round per refresh",
    "vrrp_gna_interval": "unsolicited neighbour advertisements follow garp_interval",
    "vrrp_mcast_group4": "adverts go to 224.0.0.18 (or unicast_peers)",
    "vrrp_mcast_group6": "adverts go to ff02::12 (or unicast_peers)",
    "checker_priority": "one process: set with systemd",
    "vrrp_priority": "one process: set with systemd",
    "snmp_socket": "no SNMP agent; use the metrics endpoint",
    "enable_snmp_vrrp": "no SNMP agent; use the metrics endpoint",
    "enable_snmp_checker": "no SNMP agent; use the metrics endpoint",
    "enable_traps": "no SNMP agent; use the metrics endpoint",
}
WHY_NOT_TOP = {
    "vrrp_script": "vrrp_script / track_script is not supported; a VRRP instance can follow "
    "health checks with track_checks",
    "static_ipaddress": "configure static addresses with the system (ifupdown, networkd)",
    "static_routes": "configure static routes with the system, or policy_route",
    "static_rules": "configure rules with the system, or policy_route",
    "SSL": "client certificates for SSL_GET are not supported; https checks can use ca_file",
    "linkbeat_interfaces": "link state is read from netlink",
    "garp_group": "GARP groups are not supported",
    "track_file": "file tracking is not supported",
    "bfd_instance": "BFD is not supported",
}


def import_keepalived(path: str | os.PathLike[str], config_id: str | None = None) -> Imported:
    """Read keepalived.conf (with its includes) as director config data; ``config_id`` selects
    the conditional ``@ID`` lines, as keepalived's ``-i``."""
    notes = Notes()
    root = parse_file(path, notes, config_id)
    config: dict[str, Any] = {}
    vrrp_defaults = _global_defs(root, config, notes)
    groups = {
        g.name: g
        for g in (keepalived_groups.read_group(s, notes) for s in root.all("virtual_server_group"))
    }
    for s in root.all("virtual_server_group"):
        s.used = True
    instances = _instances(root, config, notes, vrrp_defaults)
    if instances:
        config["vrrp_instance"] = instances
    sync_groups = _sync_groups(root, instances, notes)
    if sync_groups:
        config["vrrp_sync_group"] = sync_groups
    _check_sync_daemon(root, config, instances, sync_groups)
    services: list[dict[str, Any]] = []
    keys: dict[tuple[Any, ...], str] = {}
    for s in root.all("virtual_server"):
        for vs in keepalived_lvs.virtual_servers(s, groups, notes, Defaults()):
            key = keepalived_lvs.service_key(vs)
            if key in keys:
                values.fail(
                    s,
                    "a service that no other virtual_server has",
                    None,
                    shown=f"{' '.join(map(str, key))} (also at {keys[key]})",
                )
            keys[key] = s.where
            services.append(vs)
    if services:
        config["virtual_server"] = services
    _unique_names(services)
    for s in root.leftovers():
        if s.keyword in WHY_NOT_TOP:
            s.drop()
            notes.dropped(s.where, _label(s), WHY_NOT_TOP[s.keyword])
    _report_unused(root, [], notes)
    # the TOML's sections in the order of the reference
    order = ["kernel", "sync_daemon", "vrrp_instance", "vrrp_sync_group", "virtual_server"]
    return Imported({k: config[k] for k in order if k in config}, notes)


def _instances(
    root: Stmt, config: dict[str, Any], notes: Notes, defaults: keepalived_vrrp.VrrpDefaults
) -> list[dict[str, Any]]:
    """The VRRP instances; keepalived skips a second instance of the same name
    (``vrrp_parser.c``) and refuses one VRID twice on an interface (``vrrp.c``)."""
    instances: list[dict[str, Any]] = []
    where: dict[tuple[str, int, int], tuple[str, str]] = {}
    for s in root.all("vrrp_instance"):
        if s.args and any(vi["name"] == s.args[0] for vi in instances):
            s.drop()
            notes.dropped(
                s.where,
                _label(s),
                "an instance of this name exists already (keepalived skips the block)",
            )
            continue
        vi = keepalived_vrrp.instance(s, notes, defaults)
        family = _family(vi)
        router = (vi["interface"], vi["vrid"], family)
        if router in where:
            name, line = where[router]
            vrid = s.first("virtual_router_id")
            assert vrid is not None
            values.fail(
                vrid,
                f"a VRID that no other IPv{family} instance on {vi['interface']} uses",
                None,
                shown=f"{vi['vrid']} (also {name}, {line})",
            )
        where[router] = (vi["name"], s.where)
        instances.append(vi)
        if sync := s.first("lvs_sync_daemon_interface"):
            config.setdefault(
                "sync_daemon", {"interface": values.interface(sync), "instance": vi["name"]}
            )
        keepalived_vrrp.leftovers(s, notes)
    return instances


def _family(vi: dict[str, Any]) -> int:
    first = vi.get("primary_address")
    if first is None and vi.get("virtual_addresses"):
        vip = vi["virtual_addresses"][0]
        first = (vip if isinstance(vip, str) else vip["address"]).split("/")[0]
    return 6 if first is not None and ":" in first else 4


def _sync_groups(root: Stmt, instances: list[dict[str, Any]], notes: Notes) -> list[dict[str, Any]]:
    """keepalived (``vrrp_sync.c``) ignores a member that is no instance or is in another
    group already, removes a group left without members, and skips a second group of the
    same name (``vrrp_parser.c``)."""
    names = {vi["name"] for vi in instances}
    member_of: dict[str, str] = {}
    groups: list[dict[str, Any]] = []
    for s in root.all("vrrp_sync_group"):
        if s.args and any(g["name"] == s.args[0] for g in groups):
            s.drop()
            notes.dropped(
                s.where,
                _label(s),
                "a sync group of this name exists already (keepalived skips the block)",
            )
            continue
        group = keepalived_vrrp.sync_group(s, notes)
        if group["name"] in names:
            values.fail(s, "a sync group name that no vrrp_instance has", group["name"])
        where = group.pop("_where")
        kept = []
        for member in group["instances"]:
            why = None
            if member not in names:
                why = "no vrrp_instance has this name (keepalived ignores it)"
            elif member in member_of:
                why = f"in sync group {member_of[member]} already (keepalived ignores it)"
            if why:
                notes.dropped(where[member], f"vrrp_sync_group {group['name']} > {member}", why)
                continue
            member_of[member] = group["name"]
            kept.append(member)
        if not kept:
            notes.dropped(s.where, _label(s), "no instance left in it: keepalived removes it")
            continue
        group["instances"] = kept
        groups.append(group)
    return groups


def _check_sync_daemon(
    root: Stmt,
    config: dict[str, Any],
    instances: list[dict[str, Any]],
    groups: list[dict[str, Any]],
) -> None:
    sync = config.get("sync_daemon")
    if sync is None or "instance" not in sync:
        return
    known = {vi["name"] for vi in instances} | {g["name"] for g in groups}
    if sync["instance"] not in known:
        s = next((d for g in root.all("global_defs") if (d := g.first("lvs_sync_daemon"))), root)
        values.fail(s, "the name of a vrrp_instance or vrrp_sync_group", sync["instance"])


def _label(s: Stmt) -> str:
    return " ".join([s.keyword, *s.args])


def _global_defs(root: Stmt, config: dict[str, Any], notes: Notes) -> keepalived_vrrp.VrrpDefaults:
    version = garp_count = None
    strict = False
    garp_delay = garp_refresh = garp_interval = None
    for g in root.all("global_defs"):
        if s := g.first("lvs_sync_daemon"):
            config["sync_daemon"] = _sync_daemon(s, notes)
        if s := g.first("lvs_timeouts"):
            _lvs_timeouts(s, config, notes)
        if s := g.first("vrrp_version"):
            version = values.integer(s, 2, 3, "a VRRP version")
        if s := g.first("vrrp_strict"):
            strict = True
            notes.changed(
                s.where,
                "global_defs > vrrp_strict",
                "applied to each instance as keepalived applies it (authentication ignored, "
                "state MASTER only for priority 255, no unicast peers, no preempt_delay); "
                "keepalived's nftables drop of traffic to the VIPs is not reproduced "
                "(directord's VIPs accept traffic), and where keepalived's strict master "
                "stays silent on a lower-priority advert directord answers it (one advert, "
                "at most one an interval)",
            )
        if s := g.first("vrrp_garp_master_repeat"):
            garp_count = keepalived_vrrp.garp_count(s, notes)
        if s := g.first("vrrp_garp_master_delay"):
            garp_delay = values.seconds(s, zero=True)
        if s := g.first("vrrp_garp_master_refresh"):
            garp_refresh = values.seconds(s, zero=True)
        if s := g.first("vrrp_garp_interval"):
            garp_interval = values.seconds(s, zero=True)
        for s in g.leftovers():
            if s.keyword in WHY_NOT_GLOBAL:
                s.drop()
                notes.dropped(s.where, f"global_defs > {_label(s)}", WHY_NOT_GLOBAL[s.keyword])
    return keepalived_vrrp.VrrpDefaults(
        version, garp_delay, garp_count, garp_refresh, garp_interval, strict
    )


def _lvs_timeouts(s: Stmt, config: dict[str, Any], notes: Notes) -> None:
    """``lvs_timeouts [tcp T] [tcpfin F] [udp U]`` (0: the kernel's, as keepalived)."""
    keys = {"tcp": "tcp_timeout", "tcpfin": "tcpfin_timeout", "udp": "udp_timeout"}
    words = s.args
    if not words:
        values.fail(s, "tcp, tcpfin or udp with a number of seconds", None)
    for i in range(0, len(words), 2):
        if words[i] not in keys:
            values.fail(s, "tcp, tcpfin or udp with a number of seconds", words[i])
        seconds = values.integer(s, 0, 2**31 // 1000, "a number of seconds", index=i + 1)
        if seconds:
            config.setdefault("kernel", {})[keys[words[i]]] = seconds
        else:
            notes.carried(s.where, f"lvs_timeouts {words[i]} 0", "the kernel's timeout is kept")


def _sync_daemon(s: Stmt, notes: Notes) -> dict[str, Any]:
    """``lvs_sync_daemon IFACE [[inst] NAME] [id N] [maxlen L] [port P] [ttl T] [group IP]``."""
    out: dict[str, Any] = {"interface": values.interface(s)}
    words = s.args[1:]
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if word == "inst":
            out["instance"] = values.name(s, index=i + 2)
            i += 2
        elif word == "id":
            out["sync_id"] = values.integer(s, 0, 255, "a sync id", index=i + 2)
            i += 2
        elif word in ("maxlen", "port", "ttl", "group") and value:
            notes.dropped(
                s.where, f"lvs_sync_daemon {word} {value}", "the kernel's default is used"
            )
            i += 2
        elif i == 0:
            out["instance"] = values.name(s, index=1)
            i += 1
        else:
            notes.dropped(s.where, f"lvs_sync_daemon {word}", "not known to the importer")
            i += 1
    return out


def _unique_names(services: list[dict[str, Any]]) -> None:
    seen: dict[str, int] = {}
    for vs in services:
        name = vs.get("name")
        if name is None:
            continue
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            vs["name"] = f"{name}#{seen[name]}"


def _report_unused(stmt: Stmt, path: list[str], notes: Notes) -> None:
    for s in stmt.children or ():
        label = " > ".join([*path, _label(s)])
        if not s.used:
            notes.dropped(s.where, label, _unknown(s.keyword))
        elif s.children:
            _report_unused(s, [*path, _label(s)], notes)


def _unknown(keyword: str) -> str:
    if keyword.startswith("$"):
        return "an undefined parameter: define it ($NAME=VALUE) before its use"
    return "not known to the importer; not carried"
