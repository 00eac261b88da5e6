"""keepalived ``vrrp_instance`` / ``vrrp_sync_group`` -> the director's VRRP tables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from director.importers.keepalived import Stmt
from director.importers.notes import Notes
from director.importers.scripts import command_argv

NOTIFY = ("notify_master", "notify_backup", "notify_fault", "notify")
WHY_NOT = {
    "state": "directord starts every instance as backup and lets the election decide (keepalived "
    "does the same unless priority is 255)",
    "track_script": "vrrp_script tracking is not supported; track_checks follows health checks",
    "track_file": "file tracking is not supported",
    "track_process": "process tracking is not supported",
    "track_bfd": "BFD is not supported",
    "notify_stop": "no stop notifier; systemd's ExecStopPost can run it",
    "notify_deleted": "no deleted notifier",
    "notify_master_rx_lower_pri": "no such notifier",
    "smtp_alert": "directord sends no e-mail; alert from its metrics or notify scripts",
    "use_vmac": "VMAC (macvlan) interfaces are not supported",
    "vmac_xmit_base": "VMAC interfaces are not supported",
    "dont_track_primary": "the instance's interface is always tracked",
    "virtual_routes": "virtual routes are not supported; use policy_route or the system",
    "virtual_rules": "virtual rules are not supported; use policy_route",
    "accept": "directord's VIPs always accept traffic (no nftables drop like vrrp_strict)",
    "no_accept": "directord does not drop traffic to its VIPs",
    "strict_mode": "directord validates adverts as the RFC says; no strict-mode switch",
    "debug": "use directord --log-level debug",
    "native_ipv6": "the version follows the address family (IPv6 needs version 3)",
    "garp_lower_prio_delay": "GARPs on a lower-priority advert are not configurable",
    "garp_lower_prio_repeat": "GARPs on a lower-priority advert are not configurable",
    "garp_master_refresh_repeat": "one GARP round per refresh",
    "lower_prio_no_advert": "a master always answers a lower-priority advert",
    "higher_prio_send_advert": "not configurable",
    "kernel_rx_buf_size": "not configurable",
    "unicast_ttl": "unicast adverts are sent with TTL 255",
    "check_unicast_src": "unicast adverts are accepted from the listed peers",
    "skip_check_adv_addr": "address lists of adverts are compared",
    "down_timer_adverts": "the master-down interval is the RFC's",
}


@dataclass(frozen=True)
class VrrpDefaults:
    """global_defs settings that instances inherit."""

    version: int | None = None
    garp_repeat_after: float | None = None
    garp_count: int | None = None
    garp_refresh: float | None = None
    garp_interval: float | None = None


def _label(s: Stmt) -> str:
    return " ".join([s.keyword, *s.args])


def _argv(s: Stmt, notes: Notes) -> list[str]:
    """keepalived: ``notify_x SCRIPT [username [groupname]]``, SCRIPT quoted when it has args."""
    if not s.args:
        notes.dropped(s.where, s.keyword, "no script given")
        return []
    argv, shell = command_argv(s.args[0])
    if shell:
        notes.changed(s.where, _label(s), "uses shell syntax: run as /bin/sh -c")
    if len(s.args) > 1:
        notes.dropped(s.where, _label(s), f"run as user {s.args[1]}: scripts run as directord")
    return argv


def _notify(stmt: Stmt, out: dict[str, Any], notes: Notes) -> None:
    for key in NOTIFY:
        if (s := stmt.first(key)) and (argv := _argv(s, notes)):
            out[key] = argv


def _address(item: Stmt, notes: Notes, where: str) -> str | dict[str, Any] | None:
    text = item.keyword
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        notes.dropped(item.where, f"{where} {_label(item)}", "not an address")
        return None
    prefix = iface.network.prefixlen
    address = f"{iface.ip}/{prefix}"
    extra: dict[str, Any] = {}
    words = item.args
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if word == "dev" and value:
            extra["device"] = value
            i += 2
        elif word == "label" and value:
            extra["label"] = value
            i += 2
        elif word in ("brd", "scope", "peer", "preferred_lft") and value:
            notes.dropped(
                item.where,
                f"{where} {text} {word} {value}",
                "not carried; the kernel's default is used",
            )
            i += 2
        else:
            notes.dropped(item.where, f"{where} {text} {word}", "address option not carried")
            i += 1
    if extra:
        return {"address": address, **extra}
    return address


def instance(stmt: Stmt, notes: Notes, defaults: VrrpDefaults) -> dict[str, Any]:
    stmt.used = True
    out: dict[str, Any] = {"name": stmt.args[0] if stmt.args else ""}
    if s := stmt.first("interface"):
        out["interface"] = s.args[0]
    if s := stmt.first("virtual_router_id"):
        out["vrid"] = int(s.args[0])
    priority = 100
    if s := stmt.first("priority"):
        priority = int(s.args[0])
    version = defaults.version
    if s := stmt.first("version"):
        version = int(s.args[0])
    if s := stmt.first("advert_int"):
        out["advert_interval"] = float(s.args[0])
    if s := stmt.first("authentication"):
        _auth(s, out, notes)
    if s := stmt.first("mcast_src_ip", "unicast_src_ip"):
        out["primary_address"] = s.args[0]
    if s := stmt.first("unicast_peer"):
        peers = []
        for p in s.children or ():
            p.used = True
            peers.append(p.keyword)
            if p.args:
                notes.dropped(
                    p.where,
                    f"unicast_peer {p.keyword} {' '.join(p.args)}",
                    "per-peer options are not carried",
                )
        out["unicast_peers"] = peers
    vips: list[str | dict[str, Any]] = []
    seen: set[str] = set()
    for key in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
        for block in stmt.all(key):
            for item in block.children or ():
                item.used = True
                vip = _address(item, notes, key)
                if vip is None:
                    continue
                ip = (vip if isinstance(vip, str) else vip["address"]).split("/")[0]
                if ip in seen:
                    notes.dropped(
                        item.where,
                        f"{key} {_label(item)}",
                        "the address is listed already; only its first line is carried",
                    )
                    continue
                seen.add(ip)
                vips.append(vip)
            if key.endswith("excluded") and block.children:
                notes.changed(
                    block.where,
                    key,
                    "added to virtual_addresses: they are also listed in the adverts",
                )
    if vips:
        out["virtual_addresses"] = vips
    if any(":" in (v if isinstance(v, str) else v["address"]) for v in vips) and version != 3:
        version = 3
        notes.changed(stmt.where, _label(stmt), "IPv6 addresses: version = 3")
    if version is not None:
        out["version"] = version
    if stmt.first("nopreempt"):
        out["preempt"] = False
    elif stmt.first("preempt"):
        out["preempt"] = True
    if s := stmt.first("preempt_delay"):
        out["preempt_delay"] = float(s.args[0])
    _garp(stmt, out, defaults)
    tracks, bonus = _track_interfaces(stmt, notes)
    if tracks:
        out["track_interfaces"] = tracks
    if bonus:
        notes.changed(
            stmt.where,
            _label(stmt),
            f"positive track_interface weights: priority {priority} + {bonus} while up, "
            "lowered by the weight when an interface goes down",
        )
        priority += bonus
    if priority != 100:
        out["priority"] = min(255, priority)
    _notify(stmt, out, notes)
    return out


def _auth(s: Stmt, out: dict[str, Any], notes: Notes) -> None:
    kind = s.first("auth_type")
    password = s.first("auth_pass")
    if kind and kind.args and kind.args[0].upper() == "AH":
        notes.dropped(
            kind.where,
            "auth_type AH",
            "IPsec AH authentication is not supported "
            "(RFC 3768 removed it); use no authentication or PASS",
        )
        return
    if password and password.args:
        value = password.args[0]
        if len(value.encode()) > 8:
            notes.changed(
                password.where, "auth_pass", "longer than 8 bytes: cut to 8, as keepalived does"
            )
            value = value.encode()[:8].decode(errors="ignore")
        out["password"] = value
    for c in s.leftovers():
        c.drop()
        notes.dropped(c.where, f"authentication {_label(c)}", "not known to the importer")


def _garp(stmt: Stmt, out: dict[str, Any], d: VrrpDefaults) -> None:
    values = {
        "garp_count": d.garp_count,
        "garp_repeat_after": d.garp_repeat_after,
        "garp_refresh": d.garp_refresh,
        "garp_interval": d.garp_interval,
    }
    for keyword, key in (
        ("garp_master_repeat", "garp_count"),
        ("garp_master_delay", "garp_repeat_after"),
        ("garp_master_refresh", "garp_refresh"),
        ("garp_interval", "garp_interval"),
    ):
        if s := stmt.first(keyword):
            values[key] = float(s.args[0]) if key != "garp_count" else int(s.args[0])
    for key, value in values.items():
        if value is not None:
            out[key] = value


def _track_interfaces(stmt: Stmt, notes: Notes) -> tuple[list[dict[str, Any]], int]:
    """keepalived: weight 0 = fault; -W lowers by W when down; +W raises by W when up."""
    tracks: list[dict[str, Any]] = []
    bonus = 0
    for block in stmt.all("track_interface"):
        for item in block.children or ():
            item.used = True
            weight = 0
            if len(item.args) >= 2 and item.args[0] == "weight":
                weight = int(item.args[1])
            if "reverse" in item.args:
                notes.dropped(
                    item.where,
                    f"track_interface {item.keyword} reverse",
                    "reversed weights are not supported; the weight lowers priority "
                    "when the interface is down",
                )
            if weight > 0:
                bonus += weight
            tracks.append({"interface": item.keyword, "weight": abs(weight)})
    return tracks, bonus


def sync_group(stmt: Stmt, notes: Notes) -> dict[str, Any]:
    stmt.used = True
    out: dict[str, Any] = {"name": stmt.args[0] if stmt.args else ""}
    members: list[str] = []
    for block in stmt.all("group"):
        for item in block.children or ():
            item.used = True
            members += [item.keyword, *item.args]
    if not members:
        # keepalived 1.x: the names stand directly in the block, without group { }
        for item in stmt.children or ():
            if not item.used and item.children is None and item.keyword not in WHY_NOT:
                if item.keyword.startswith(NOTIFY):
                    continue
                item.used = True
                members += [item.keyword, *item.args]
        if members:
            notes.changed(
                stmt.where,
                _label(stmt),
                "old syntax without group { }: the names in the block are the instances",
            )
    out["instances"] = members
    _notify(stmt, out, notes)
    for s in stmt.leftovers():
        if s.keyword in WHY_NOT:
            s.drop()
            notes.dropped(
                s.where, f"vrrp_sync_group {out['name']} > {_label(s)}", WHY_NOT[s.keyword]
            )
    return out


def leftovers(stmt: Stmt, notes: Notes) -> None:
    for s in stmt.leftovers():
        if WHY_NOT.get(s.keyword):
            s.drop()
            notes.dropped(s.where, f"{_label(stmt)} > {_label(s)}", WHY_NOT[s.keyword])
