"""keepalived ``vrrp_instance`` / ``vrrp_sync_group`` -> the director's VRRP tables."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any

from director.importers import values
from director.importers.keepalived import Stmt
from director.importers.notes import Notes
from director.importers.scripts import command_argv

NOTIFY = ("notify_master", "notify_backup", "notify_fault", "notify")
WHY_NOT = {
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


# The keys of an instance in the order they are written.
ORDER = [
    "name",
    "interface",
    "vrid",
    "advert_interval",
    "password",
    "primary_address",
    "unicast_peers",
    "virtual_addresses",
    "excluded_addresses",
    "version",
    "preempt",
    "preempt_delay",
    "garp_count",
    "garp_repeat_after",
    "garp_refresh",
    "garp_interval",
    "track_interfaces",
    "priority",
    *NOTIFY,
]


@dataclass(frozen=True)
class VrrpDefaults:
    """global_defs settings that instances inherit."""

    version: int | None = None
    garp_repeat_after: float | None = None
    garp_count: int | None = None
    garp_refresh: float | None = None
    garp_interval: float | None = None
    strict: bool = False  # global_defs vrrp_strict


def _label(s: Stmt) -> str:
    return " ".join([s.keyword, *s.args])


def _argv(s: Stmt, notes: Notes) -> list[str]:
    """keepalived: ``notify_x SCRIPT [username [groupname]]``, SCRIPT quoted when it has args."""
    if not s.args:
        notes.dropped(s.where, s.keyword, "no script given")
        return []
    argv, shell = command_argv(s.args[0])
    argv = values.program(s, argv)
    if shell:
        notes.changed(s.where, _label(s), "uses shell syntax: run as /bin/sh -c")
    if len(s.args) > 1:
        notes.dropped(s.where, _label(s), f"run as user {s.args[1]}: scripts run as directord")
    return argv


def _notify(stmt: Stmt, out: dict[str, Any], notes: Notes) -> None:
    for key in NOTIFY:
        if (s := stmt.first(key)) and (argv := _argv(s, notes)):
            out[key] = argv


def _address(item: Stmt, notes: Notes, where: str, interface: str | None) -> dict[str, Any]:
    """``ADDRESS[/PREFIX] [dev D] [label L] ...``: the address, and its device and label."""
    text = item.keyword
    item = values.item(where, item)
    try:
        if "%" in text:
            raise ValueError(text)
        iface = ipaddress.ip_interface(text)
    except ValueError:
        values.fail(item, 'an address with an optional prefix like "198.18.0.10/24"', text)
    if "/" in text and iface.network.prefixlen == 0:
        values.fail(
            item,
            f"a prefix length from 1 to {iface.max_prefixlen} (a /0 address claims every "
            "address as on-link; directord refuses it)",
            text,
        )
    out: dict[str, Any] = {"address": f"{iface.ip}/{iface.network.prefixlen}"}
    words = item.args
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if word == "dev" and value:
            out["device"] = values.interface(item, index=i + 1)
            i += 2
        elif word == "label" and value:
            out["label"] = values.label(item, index=i + 1)
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
    if "label" in out:
        device = out.get("device", interface)
        if iface.version != 4 or (device and not out["label"].startswith(device)):
            notes.dropped(
                item.where,
                f"{where} {text} label {out.pop('label')}",
                "a label is for an IPv4 address and starts with its device's name",
            )
    return out


def instance(stmt: Stmt, notes: Notes, defaults: VrrpDefaults) -> dict[str, Any]:
    """One ``vrrp_instance``, with the adjustments keepalived 2.2.7 makes to it when it reads it
    (``vrrp_parser.c`` handlers, ``vrrp.c`` ``vrrp_complete_instance``): each one noted."""
    stmt.used = True
    out: dict[str, Any] = {"name": values.name(stmt)}
    label = _label(stmt)
    if s := stmt.first("interface"):
        out["interface"] = values.interface(s)
    if s := stmt.first("virtual_router_id"):
        out["vrid"] = values.integer(s, 1, 255)
    strict = _strict(stmt, defaults)
    master = _state(stmt, notes)
    priority_stmt = stmt.first("priority")
    if priority_stmt is not None:
        priority = values.integer(priority_stmt, 1, 255)
    elif master:
        # vrrp.c vrrp_complete_instance: no priority and state MASTER -> VRRP_PRIO_OWNER
        priority = 255
        notes.changed(
            stmt.where,
            f"{label} > state MASTER",
            "no priority given: keepalived makes the instance the address owner (priority "
            "255), so the import has priority = 255: it preempts any peer at once and answers "
            "for the addresses as their owner",
        )
    else:
        priority = 100
    if strict and master and priority != 255:
        # vrrp.c: "State MASTER must match being address owner" -> BACKUP
        master = False
        notes.changed(
            stmt.where,
            f"{label} > state MASTER",
            f"vrrp_strict: state MASTER needs priority 255 (it has {priority}); keepalived "
            "starts it as BACKUP, as directord does",
        )
    version = defaults.version
    if s := stmt.first("version"):
        version = values.integer(s, 2, 3, "a VRRP version")
    advert = stmt.first("advert_int")
    advert_interval = values.seconds(advert, hi=255) if advert else None
    auth = stmt.first("authentication")
    if s := stmt.first("mcast_src_ip", "unicast_src_ip"):
        out["primary_address"] = values.address(s)
    if s := stmt.first("unicast_peer"):
        peers = []
        for p in s.children or ():
            p.used = True
            peers.append(values.address(values.item("unicast_peer", p), text=p.keyword))
            if p.args:
                notes.dropped(
                    p.where,
                    f"unicast_peer {p.keyword} {' '.join(p.args)}",
                    "per-peer options are not carried",
                )
        out["unicast_peers"] = list(dict.fromkeys(peers))
        if strict and out["unicast_peers"]:
            # vrrp.c: "Unicast peers are not supported in strict mode" (the instance fails)
            values.refuse(
                s,
                "keepalived refuses unicast peers under vrrp_strict / strict_mode (the instance "
                "does not start); remove one or the other",
            )
    vips, excluded = _virtual_addresses(
        stmt, notes, out.get("primary_address"), out.get("interface")
    )
    if vips:
        out["virtual_addresses"] = [v if len(v) > 1 else v["address"] for v in vips]
    if excluded:
        out["excluded_addresses"] = [v if len(v) > 1 else v["address"] for v in excluded]
    _peers_of_one_family(stmt, out, vips, notes)
    if "interface" not in out:
        values.fail(stmt, "interface NAME in the block (keepalived needs it too)", None)
    if "vrid" not in out:
        values.fail(stmt, "virtual_router_id N in the block (keepalived needs it too)", None)
    if _family(out, vips) == 6 and version != 3:
        version = 3
        notes.changed(
            stmt.where,
            label,
            "IPv6: version = 3, as keepalived sets it; the adverts are VRRPv3 (no "
            "authentication, centisecond intervals)",
        )
    if version is not None:
        out["version"] = version
    if not vips and (version == 3 or strict):
        # vrrp.c: "No VIP specified; at least one is required" (the instance fails)
        values.refuse(
            stmt,
            "no virtual_ipaddress: keepalived refuses a VRRPv3 or strict-mode instance "
            "without one (the instance does not start)",
        )
    if advert is not None and advert_interval is not None:
        out["advert_interval"] = _advert_interval(advert, advert_interval, version or 2, notes)
    if auth is not None:
        _auth(auth, out, notes, version or 2, strict, _family(out, vips))
    _preempt(stmt, out, notes, master, strict, priority)
    _garp(stmt, out, defaults, notes)
    tracks, bonus = _track_interfaces(stmt, notes, priority)
    if tracks:
        out["track_interfaces"] = tracks
    if bonus:
        notes.changed(
            stmt.where,
            label,
            f"positive track_interface weights: priority {priority} + {bonus} while up, "
            "lowered by the weight when an interface goes down",
        )
        priority += bonus
    if priority != 100:
        out["priority"] = min(255, priority)
    _notify(stmt, out, notes)
    return {k: out[k] for k in sorted(out, key=ORDER.index)}


_TRUE = ("true", "on", "yes")
_FALSE = ("false", "off", "no")


def _strict(stmt: Stmt, defaults: VrrpDefaults) -> bool:
    """``strict_mode [on|off]`` in the instance, else global ``vrrp_strict`` (vrrp.c
    vrrp_complete_instance: ``strict_mode == PARAMETER_UNSET`` takes the global)."""
    s = stmt.first("strict_mode")
    if s is None:
        return defaults.strict
    if not s.args:
        return True
    word = s.args[0].lower()
    if word not in _TRUE + _FALSE:
        values.fail(s, "on, off, true, false, yes or no", s.args[0])
    return word in _TRUE


def _state(stmt: Stmt, notes: Notes) -> bool:
    """Whether keepalived takes ``state`` as MASTER (vrrp_parser.c vrrp_state_handler: exactly
    ``MASTER`` or ``BACKUP``; anything else is BACKUP; BACKUP after MASTER is ignored)."""
    master = False
    for s in stmt.all("state"):
        word = s.args[0] if s.args else ""
        if word == "MASTER":
            master = True
        elif word == "BACKUP":
            if master:
                notes.dropped(s.where, "state BACKUP", "after state MASTER: keepalived ignores it")
        else:
            notes.changed(
                s.where,
                f"state {word}".rstrip(),
                "not MASTER or BACKUP (keepalived reads them case-sensitively): keepalived "
                "defaults to BACKUP",
            )
    if master:
        notes.carried(
            stmt.where,
            f"{_label(stmt)} > state MASTER",
            "directord starts every instance as backup and takes over after the master-down "
            "interval (under 4 adverts) when no better master is heard; keepalived "
            "announces itself at once",
        )
    elif stmt.first("state"):
        notes.carried(stmt.where, f"{_label(stmt)} > state BACKUP", "directord starts as backup")
    return master


def _preempt(
    stmt: Stmt, out: dict[str, Any], notes: Notes, master: bool, strict: bool, priority: int
) -> None:
    """keepalived: the last of ``preempt`` / ``nopreempt`` wins (vrrp_parser.c); then
    vrrp_complete_instance clears nopreempt for an address owner (priority 255) and, under
    state MASTER, clears nopreempt and preempt_delay; strict mode and nopreempt clear
    preempt_delay."""
    nopreempt = None
    for c in stmt.children or ():
        if c.keyword in ("preempt", "nopreempt"):
            c.used = True
            nopreempt = c
    off = nopreempt is not None and nopreempt.keyword == "nopreempt"
    if off and nopreempt is not None:
        if priority == 255:
            notes.changed(
                nopreempt.where,
                "nopreempt",
                "an address owner (priority 255) always preempts: keepalived clears nopreempt, "
                "so the import preempts",
            )
            off = False
        elif master:
            notes.changed(
                nopreempt.where,
                "nopreempt",
                "keepalived clears nopreempt under state MASTER, so the import preempts: this "
                "node takes the addresses back from a lower-priority master when it returns",
            )
            off = False
    if off:
        out["preempt"] = False
    delay = stmt.first("preempt_delay")
    if delay is None:
        return
    seconds = values.seconds(delay, zero=True, hi=1000)
    why = None
    if master:
        why = "keepalived clears preempt_delay under state MASTER"
    elif strict:
        why = "keepalived resets preempt_delay in strict mode"
    elif off:
        why = "keepalived resets preempt_delay with nopreempt"
    if why and seconds:
        notes.changed(
            delay.where,
            f"preempt_delay {delay.args[0]}",
            f"{why}: not carried, so the import preempts as soon as it hears a lower priority",
        )
        return
    out["preempt_delay"] = seconds


def _virtual_addresses(
    stmt: Stmt, notes: Notes, primary: str | None, interface: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(advertised, excluded): each address once across both. The advertised ones are of one
    family (keepalived ignores an address of the other family than the instance's); the
    excluded ones (``virtual_ipaddress_excluded``: held by the master, never in its adverts)
    may be of either, and do not set the version (keepalived's vrrp.c builds the advert from
    ``vip`` only and checks received adverts against it)."""
    lists: dict[str, list[dict[str, Any]]] = {
        "virtual_ipaddress": [],
        "virtual_ipaddress_excluded": [],
    }
    seen: set[str] = set()
    family = ipaddress.ip_address(primary).version if primary else None
    for key, vips in lists.items():
        for block in stmt.all(key):
            for item in block.children or ():
                item.used = True
                vip = _address(item, notes, key, interface)
                ip = ipaddress.ip_interface(vip["address"]).ip
                if str(ip) in seen:
                    notes.dropped(
                        item.where,
                        f"{key} {_label(item)}",
                        "the address is listed already; only its first line is carried",
                    )
                    continue
                if key == "virtual_ipaddress":
                    if family is not None and ip.version != family:
                        notes.dropped(
                            item.where,
                            f"{key} {_label(item)}",
                            f"an IPv{ip.version} address in an IPv{family} instance "
                            "(keepalived ignores it)",
                        )
                        continue
                    family = ip.version
                seen.add(str(ip))
                vips.append(vip)
    if primary is not None and primary in seen:
        values.fail(
            stmt.first("mcast_src_ip", "unicast_src_ip") or stmt,
            "the router's own address, not one of its virtual addresses",
            primary,
        )
    vips, excluded = lists["virtual_ipaddress"], lists["virtual_ipaddress_excluded"]
    if len(vips) > 255:
        # vrrp.c vrrp_complete_instance: "excess moved to eVIPs" (held, not advertised)
        notes.changed(
            stmt.where,
            _label(stmt),
            f"{len(vips) - 255} addresses past the 255th do not fit an advert: moved to "
            "excluded_addresses (held by the master, not advertised), as keepalived moves "
            "them to its eVIPs",
        )
        excluded = vips[255:] + excluded
        vips = vips[:255]
    return vips, excluded


def _peers_of_one_family(
    stmt: Stmt, out: dict[str, Any], vips: list[dict[str, Any]], notes: Notes
) -> None:
    """keepalived skips a unicast peer of another family than the instance's; an IPv6
    instance sends from a link-local address."""
    primary = out.get("primary_address")
    peers = out.get("unicast_peers", [])
    family = _family(out, vips)
    kept = [p for p in peers if ipaddress.ip_address(p).version == family]
    s = stmt.first("unicast_peer")
    if peers and not kept and s is not None:
        values.fail(
            s,
            f"IPv{family} peers (the instance is IPv{family}: give it a virtual address or "
            "unicast_src_ip of the peers' family)",
            None,
            shown=", ".join(peers),
        )
    if len(kept) < len(peers):
        notes.dropped(
            s.where if s else stmt.where,
            "unicast_peer",
            f"peers of another family than the instance's (IPv{family}): "
            f"{', '.join(p for p in peers if p not in kept)} (keepalived skips them)",
        )
        out["unicast_peers"] = kept
    address = ipaddress.ip_address(primary) if primary else None
    if address is not None and address.version == 6 and not address.is_link_local:
        s = stmt.first("mcast_src_ip", "unicast_src_ip")
        assert s is not None
        values.fail(s, "a link-local address (fe80::/10): VRRPv3 over IPv6 sends from one", primary)


def _family(out: dict[str, Any], vips: list[dict[str, Any]]) -> int:
    """The instance's address family, as directord takes it: its primary address's, else its
    first virtual address's, else IPv4."""
    first = out.get("primary_address") or (vips[0]["address"].split("/")[0] if vips else None)
    return ipaddress.ip_address(first).version if first else 4


def _advert_interval(s: Stmt, value: float, version: int, notes: Notes) -> float:
    """keepalived rounds a VRRPv2 interval to whole seconds and a VRRPv3 one to centiseconds
    (``vrrp.c``, ``vrrp_complete_instance``)."""
    if version == 2:
        rounded = float(max(1, math.floor(value + 0.5)))
    else:
        rounded = min(40.95, max(0.01, math.floor(value * 100 + 0.5) / 100))
    if rounded != value:
        notes.changed(
            s.where,
            f"advert_int {s.args[0]}",
            f"VRRPv{version} advertises {'whole seconds' if version == 2 else 'centiseconds'}: "
            f"{rounded:g}, as keepalived rounds it",
        )
    return rounded


def _auth(
    s: Stmt, out: dict[str, Any], notes: Notes, version: int, strict: bool, family: int
) -> None:
    """keepalived's authentication, as vrrp_complete_instance leaves it (vrrp.c, in this order):
    ignored in strict mode, ignored in VRRPv3, ignored without a password, AH ignored over
    IPv6; ``auth_type`` is exactly PASS or AH (vrrp_parser.c vrrp_auth_type_handler: any other
    word leaves no authentication); ``auth_pass`` is cut to 8 bytes."""
    kind = s.first("auth_type")
    password = s.first("auth_pass")
    for c in s.leftovers():
        c.drop()
        notes.dropped(c.where, f"authentication {_label(c)}", "not known to the importer")
    word = kind.args[0] if kind and kind.args else None
    if word not in ("PASS", "AH"):
        if kind is not None:
            notes.dropped(
                kind.where,
                f"auth_type {word or ''}".rstrip(),
                "not PASS or AH (keepalived reads them case-sensitively): keepalived sends "
                "and expects no authentication, so neither does the import",
            )
        elif password is not None:
            notes.dropped(
                password.where,
                "auth_pass",
                "no auth_type: keepalived sends and expects no authentication, so neither "
                "does the import",
            )
        return
    consequence = (
        "the adverts carry no password (authentication type 0), and adverts from a peer "
        "that still sends one are dropped by both keepalived and directord"
    )
    if strict:
        notes.dropped(
            s.where,
            f"authentication (auth_type {word})",
            f"vrrp_strict: keepalived ignores authentication in strict mode; {consequence}",
        )
        return
    if version == 3:
        notes.dropped(
            s.where,
            f"authentication (auth_type {word})",
            f"VRRPv3 has no authentication and keepalived ignores it; {consequence}",
        )
        return
    if password is None or not password.args:
        notes.dropped(
            s.where,
            f"authentication (auth_type {word})",
            f"no auth_pass: keepalived ignores the authentication; {consequence}",
        )
        return
    if word == "AH":
        notes.dropped(
            kind.where if kind else s.where,
            "auth_type AH",
            "IPsec AH authentication is not supported (RFC 3768 removed it); the import "
            "sends no authentication, which a keepalived peer with AH drops: use PASS or "
            "nothing on both nodes"
            + (" (keepalived itself ignores AH over IPv6)" if family == 6 else ""),
        )
        return
    value = password.args[0]
    if len(value.encode()) > 8:
        notes.changed(
            password.where, "auth_pass", "longer than 8 bytes: cut to 8, as keepalived does"
        )
        value = value.encode()[:8].decode(errors="ignore")
    out["password"] = values.password(password, value)


def garp_count(s: Stmt, notes: Notes) -> int:
    """vrrp_parser.c vrrp_garp_rep_handler (global_parser.c likewise): 0 repeats is made 1
    ("garp_master_repeat must be greater than 0, setting to 1")."""
    count = values.integer(s, 0, 100)
    if count == 0:
        notes.changed(
            s.where,
            f"{s.keyword} 0",
            "keepalived sends at least one round of gratuitous ARPs: garp_count = 1",
        )
        return 1
    return count


def _garp(stmt: Stmt, out: dict[str, Any], d: VrrpDefaults, notes: Notes) -> None:
    found: dict[str, float | int | None] = {
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
            found[key] = (
                garp_count(s, notes) if key == "garp_count" else values.seconds(s, zero=True)
            )
    for key, value in found.items():
        if value is not None:
            out[key] = value


def _track_interfaces(stmt: Stmt, notes: Notes, priority: int) -> tuple[list[dict[str, Any]], int]:
    """keepalived: weight 0 = fault; -W lowers by W when down; +W raises by W when up
    (``vrrp_track.c``: -254 to 254; a duplicate interface is ignored; an address owner,
    priority 255, ignores weighted interfaces)."""
    tracks: list[dict[str, Any]] = []
    bonus = 0
    for block in stmt.all("track_interface"):
        for item in block.children or ():
            item.used = True
            line = values.item("track_interface", item)
            name = values.interface(line, text=item.keyword)
            weight = 0
            if item.args[:1] == ["weight"]:
                weight = values.integer(line, -254, 254, "a weight", index=1)
            elif item.args:
                values.fail(line, "weight W (or nothing)", item.args[0])
            if "reverse" in item.args:
                notes.dropped(
                    item.where,
                    f"track_interface {item.keyword} reverse",
                    "reversed weights are not supported; the weight lowers priority "
                    "when the interface is down",
                )
            if any(t["interface"] == name for t in tracks):
                notes.dropped(
                    item.where,
                    f"track_interface {_label(item)}",
                    "a duplicate (keepalived ignores it)",
                )
                continue
            if weight and priority == 255:
                notes.dropped(
                    item.where,
                    f"track_interface {_label(item)}",
                    "an address owner (priority 255) ignores weighted interfaces, as keepalived",
                )
                continue
            if weight > 0:
                bonus += weight
            tracks.append({"interface": name, "weight": abs(weight)})
    return tracks, bonus


def sync_group(stmt: Stmt, notes: Notes) -> dict[str, Any]:
    stmt.used = True
    out: dict[str, Any] = {"name": values.name(stmt)}
    members: list[tuple[Stmt, str]] = []
    for block in stmt.all("group"):
        for item in block.children or ():
            item.used = True
            members += [(item, item.keyword)] + [(item, a) for a in item.args]
    if not members:
        # keepalived 1.x: the names stand directly in the block, without group { }
        for item in stmt.children or ():
            if not item.used and item.children is None and item.keyword not in WHY_NOT:
                if item.keyword.startswith(NOTIFY):
                    continue
                item.used = True
                members += [(item, item.keyword)] + [(item, a) for a in item.args]
        if members:
            notes.changed(
                stmt.where,
                _label(stmt),
                "old syntax without group { }: the names in the block are the instances",
            )
    out["instances"] = [
        values.name(values.item("vrrp_sync_group", item), text=member) for item, member in members
    ]
    out["_where"] = {member: item.where for item, member in members}
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
