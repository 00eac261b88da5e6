"""Piranha's lvs.cf -> director config data and notes (``directorctl import lvs.cf FILE``).

lvs.cf is ``key = value`` lines with ``virtual NAME { ... }`` blocks holding ``server NAME { ... }``
blocks (and ``failover NAME { ... }`` for non-LVS services). ``#`` starts a comment; values may
be quoted, with ``\\r``/``\\n`` escapes in ``send``/``expect``.

Piranha's heartbeat (pulse, UDP between ``primary`` and ``backup``) becomes one VRRP instance
with the two directors as unicast peers and the virtual addresses as its VIPs; nanny's checks
become ``tcp`` (connect, or ``send``/``expect``) or ``script`` (``send_program``, ``%h`` ->
``{address}``) checks, with the well-known programs made native.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from director.importers.keepalived import Stmt, check_text
from director.importers.notes import Imported, ImportParseError, Notes
from director.importers.scripts import ADDRESS, command_argv, recognise

Node = Literal["primary", "backup"]
METHODS = {"nat": "nat", "direct": "dr", "tunnel": "tun"}
DEFAULT_VRID = 50
WHY_NOT_GLOBAL = {
    "serial_no": "piranha-gui bookkeeping",
    "service": "always lvs here",
    "heartbeat_port": "VRRP is IP protocol 112, not UDP",
    "deadtime": "the VRRP master-down interval is 3 x advert_interval + skew",
    "debug_level": "use directord --log-level",
    "rsh_command": "directord does not copy files between directors; use config management",
    "monitor_links": "use track_interfaces on the VRRP instance",
    "primary_private": "heartbeat over a private network: set unicast_peers by hand",
    "backup_private": "heartbeat over a private network: set unicast_peers by hand",
    "hard_shutdown": "no STONITH",
    "lvs_command": "directord programs IPVS itself",
    "nat_nmask": "no nat_router to apply it to",
}
WHY_NOT_VIRTUAL = {
    "load_monitor": "weights from rup/ruptime load are not supported",
}


def _unquote(text: str, file: str, line: int) -> str:
    text = text.strip()
    if not text.startswith('"'):
        return text
    out: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out)
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"r": "\r", "n": "\n", "t": "\t"}.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    raise ImportParseError(file, line, "unterminated quoted value")


def parse(path: str | os.PathLike[str]) -> Stmt:
    """lvs.cf as statements: ``key = value`` has keyword ``key`` and one argument."""
    file = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ImportParseError(file, 0, f"cannot read: {exc.strerror or exc}") from None
    check_text(text, file)
    root = Stmt("", [], file, 0, children=[])
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        parent = stack[-1]
        assert parent.children is not None
        if line == "}":
            if len(stack) == 1:
                raise ImportParseError(file, number, "'}' closes no block")
            stack.pop()
            continue
        if line.endswith("{"):
            words = line[:-1].split()
            if len(words) != 2 or words[0] not in ("virtual", "server", "failover"):
                raise ImportParseError(
                    file,
                    number,
                    f"expected 'virtual NAME {{', 'server NAME {{' or "
                    f"'failover NAME {{', found {line!r}",
                )
            block = Stmt(words[0], [words[1]], file, number, children=[])
            parent.children.append(block)
            stack.append(block)
            continue
        name, eq, value = line.partition("=")
        if not eq or not name.strip() or " " in name.strip():
            raise ImportParseError(file, number, f"expected 'key = value', found {line!r}")
        unquoted = _unquote(value, file, number)
        parent.children.append(Stmt(name.strip(), [unquoted], file, number, raw=value.strip()))
    if len(stack) > 1:
        block = stack[-1]
        raise ImportParseError(
            file, block.line, f"'{block.keyword} {block.args[0]}' is never closed (missing '}}')"
        )
    return root


def _strip_comment(line: str) -> str:
    quoted = False
    for i, c in enumerate(line):
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif c == "#" and not quoted:
            return line[:i]
    return line


def _value(block: Stmt, key: str) -> str | None:
    s = block.first(key)
    return s.args[0] if s and s.args else None


def _int(block: Stmt, key: str, notes: Notes) -> int | None:
    s = block.first(key)
    if s is None or not s.args:
        return None
    try:
        return int(s.args[0])
    except ValueError:
        notes.dropped(s.where, f"{key} = {s.args[0]}", "expected an integer")
        return None


def import_lvs_cf(path: str | os.PathLike[str], node: Node = "primary") -> Imported:
    """Read lvs.cf as director config data for the ``node`` director."""
    notes = Notes()
    root = parse(path)
    config: dict[str, Any] = {}
    forwarding = "nat"
    if s := root.first("network"):
        forwarding = METHODS.get(s.args[0].lower(), "")
        if not forwarding:
            notes.dropped(s.where, f"network = {s.args[0]}", "expected nat, direct or tunnel")
            forwarding = "nat"
    keepalive = float(_int(root, "keepalive", notes) or 6)
    kernel = {
        k: v
        for k in ("tcp_timeout", "tcpfin_timeout", "udp_timeout")
        if (v := _int(root, k, notes))
    }
    if kernel:
        config["kernel"] = kernel
    vips: list[str | dict[str, Any]] = []
    services = []
    for block in root.all("virtual"):
        vs = _virtual(block, notes, forwarding, keepalive, vips)
        if vs is not None:
            services.append(vs)
    nat = _nat_router(root, notes)
    if nat is not None:
        vips.append(nat)
    sync = _sync_daemon(root, notes)
    if sync:
        config["sync_daemon"] = sync
    instance = _heartbeat(root, notes, node, keepalive, vips)
    if instance is not None:
        config["vrrp_instance"] = [instance]
    if services:
        config["virtual_server"] = services
    for s in root.all("failover"):
        s.drop()
        notes.dropped(
            s.where,
            f"failover {s.args[0]}",
            "non-LVS failover services are not "
            "carried; run them under a cluster manager or systemd",
        )
    for s in root.leftovers():
        s.drop()
        why = WHY_NOT_GLOBAL.get(s.keyword) or "not known to the importer; not carried"
        notes.dropped(s.where, f"{s.keyword} = {' '.join(s.args)}", why)
    return Imported(config, notes)


def _heartbeat(
    root: Stmt, notes: Notes, node: Node, keepalive: float, vips: list[str | dict[str, Any]]
) -> dict[str, Any] | None:
    primary = _value(root, "primary")
    backup = _value(root, "backup")
    heartbeat = root.first("heartbeat")
    active = _value(root, "backup_active")
    where = heartbeat.where if heartbeat else f"{root.file}:0"
    if heartbeat and heartbeat.args[0] == "0":
        notes.dropped(
            where,
            "heartbeat = 0",
            "no heartbeat: no VRRP instance; the director "
            "is master and the VIPs must be configured by hand",
        )
        return None
    out: dict[str, Any] = {"name": "lvs"}
    devices = [v["device"] for v in vips if isinstance(v, dict) and "device" in v]
    if devices:
        out["interface"] = devices[0]
    else:
        notes.changed(where, "heartbeat", 'no device on any address: interface = "eth0"')
        out["interface"] = "eth0"
    out["vrid"] = DEFAULT_VRID
    out["priority"] = 150 if node == "primary" else 100
    me, peer = (primary, backup) if node == "primary" else (backup, primary)
    if me:
        out["primary_address"] = me
    if peer and active != "0":
        out["unicast_peers"] = [peer]
    elif active == "0":
        notes.changed(where, "backup_active = 0", "no backup director: no unicast peer")
    out["advert_interval"] = keepalive
    out["virtual_addresses"] = vips
    notes.changed(
        where,
        "heartbeat",
        f"Piranha's heartbeat becomes VRRP instance lvs (vrid {DEFAULT_VRID}: check it is free "
        f"on the segment) between {primary} and {backup}, unicast, advert every "
        f"keepalive = {keepalive:g} s; this file is for the {node} (priority "
        f"{out['priority']}); import again with --node "
        f"{'backup' if node == 'primary' else 'primary'} for the other director",
    )
    return out


def _nat_router(root: Stmt, notes: Notes) -> dict[str, Any] | None:
    s = root.first("nat_router")
    if s is None:
        return None
    words = s.args[0].split()
    mask = _value(root, "nat_nmask") or "255.255.255.0"
    try:
        prefix = ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen
        address = f"{ipaddress.ip_address(words[0])}/{prefix}"
    except (ValueError, IndexError):
        notes.dropped(s.where, f"nat_router = {s.args[0]}", "expected 'ADDRESS DEVICE[:N]'")
        return None
    vip: dict[str, Any] = {"address": address}
    if len(words) > 1:
        vip["device"], _, _ = words[1].partition(":")
        if ":" in words[1]:
            vip["label"] = words[1]
    notes.carried(
        s.where,
        f"nat_router = {s.args[0]}",
        "a VIP of the VRRP instance (the real servers' gateway)",
    )
    return vip


def _sync_daemon(root: Stmt, notes: Notes) -> dict[str, Any] | None:
    s = root.first("syncdaemon")
    iface = _value(root, "syncd_iface")
    sync_id = _int(root, "syncd_id", notes)
    if s is None or s.args[0] != "1":
        return None
    out: dict[str, Any] = {"interface": iface or "eth0", "instance": "lvs"}
    if sync_id is not None:
        out["sync_id"] = sync_id
    if iface is None:
        notes.changed(s.where, "syncdaemon = 1", 'no syncd_iface: interface = "eth0"')
    return out


def _vip(v: Stmt, notes: Notes) -> tuple[str | None, dict[str, Any] | None]:
    s = v.first("address")
    if s is None:
        return None, None
    words = s.args[0].split()
    try:
        address = str(ipaddress.ip_address(words[0]))
    except (ValueError, IndexError):
        notes.dropped(s.where, f"address = {s.args[0]}", "not an IP address")
        return None, None
    mask = _value(v, "vip_nmask")
    prefix = 32 if ":" not in address else 128
    if mask and ":" not in address:
        try:
            prefix = ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            notes.dropped(s.where, f"vip_nmask = {mask}", "not a netmask; /32 used")
    vip: dict[str, Any] = {"address": f"{address}/{prefix}"}
    if len(words) > 1:
        vip["device"] = words[1].partition(":")[0]
        if ":" in words[1]:
            vip["label"] = words[1]
    return address, vip


def _virtual(
    v: Stmt,
    notes: Notes,
    forwarding: str,
    keepalive: float,
    vips: list[str | dict[str, Any]],
) -> dict[str, Any] | None:
    v.used = True
    name = v.args[0]
    if _value(v, "active") == "0":
        v.drop()
        notes.dropped(v.where, f"virtual {name}", "active = 0: not carried")
        return None
    address, vip = _vip(v, notes)
    if vip is not None and not any(
        (x if isinstance(x, str) else x["address"]) == vip["address"] for x in vips
    ):
        vips.append(vip)
    out: dict[str, Any] = {"name": name}
    fwmark = _int(v, "fwmark", notes)
    protocol = (_value(v, "protocol") or "tcp").lower()
    port = _int(v, "port", notes)
    if fwmark:
        out["fwmark"] = fwmark
        if address and ":" in address:
            out["family"] = "ipv6"
    else:
        if address is None:
            notes.dropped(v.where, f"virtual {name}", "no address and no fwmark")
            v.drop()
            return None
        out |= {"protocol": protocol, "address": address, "port": port or 0}
    if s := v.first("scheduler"):
        out["scheduler"] = s.args[0]
    if (persistent := _int(v, "persistent", notes)) is not None and persistent > 0:
        out["persistence_timeout"] = persistent
        if (mask := _value(v, "pmask")) and mask != "255.255.255.255":
            out["persistence_netmask"] = mask
    elif s := v.first("pmask"):
        notes.dropped(s.where, f"pmask = {s.args[0]}", "no persistence: a mask means nothing")
    if "address" in out and out["port"] == 0 and "persistence_timeout" not in out:
        notes.changed(v.where, f"virtual {name}", "port 0 needs persistence: 300 s")
        out["persistence_timeout"] = 300
    out["forwarding"] = forwarding
    if (s := v.first("quiesce_server")) and s.args[0] == "1":
        out["on_failure"] = "quiesce"
        notes.changed(
            s.where,
            "quiesce_server = 1",
            "a failed server keeps weight 0 "
            "(on_failure = quiesce); Piranha also reset the connection counts",
        )
    if (sorry := _value(v, "sorry_server")) is not None:
        out["sorry_server"] = {"address": sorry.split()[0]}
    check = _check(v, notes, keepalive)
    if check is not None:
        if fwmark and port and check["type"] not in ("script", "exchange", "https"):
            check["port"] = port  # nanny probes the virtual's port
        out["check"] = check
    reals = [r for s in v.all("server") if (r := _server(s, notes, forwarding, port)) is not None]
    if reals:
        out["real_server"] = reals
    for s in v.leftovers():
        s.drop()
        why = WHY_NOT_VIRTUAL.get(s.keyword) or "not known to the importer; not carried"
        notes.dropped(s.where, f"virtual {name} > {s.keyword} = {' '.join(s.args)}", why)
    return out


def _check(v: Stmt, notes: Notes, keepalive: float) -> dict[str, Any] | None:
    check: dict[str, Any] = {"type": "tcp", "interval": keepalive, "rise": 1, "fall": 1}
    timeout = _int(v, "timeout", notes)
    check["timeout"] = float(min(timeout, keepalive) if timeout else min(10.0, keepalive))
    if timeout and timeout > keepalive:
        notes.changed(
            v.where,
            f"virtual {v.args[0]} timeout",
            f"{timeout} s is longer than the "
            f"interval (keepalive = {keepalive:g} s): the interval is used",
        )
    if (reentry := _int(v, "reentry", notes)) is not None:
        check["reentry"] = float(reentry)
    expects = v.all("expect")
    expect = expects[-1].args[0] if expects else None
    regex = _value(v, "use_regex") == "1"
    program = v.first("send_program")
    if program is not None:
        argv, shell = command_argv(program.args[0].replace("%h", ADDRESS))
        found = recognise(argv)
        if found is not None:
            keep = {
                k: check[k]
                for k in ("interval", "timeout", "rise", "fall", "reentry")
                if k in check
            }
            notes.carried(
                program.where,
                f"send_program = {program.args[0]}",
                f"recognised {found.what}: a native {found.check['type']} check"
                + "".join(f"; {c}" for c in found.caveats),
            )
            return keep | found.check
        check["type"] = "script"
        check["command"] = argv
        if shell:
            notes.changed(program.where, "send_program", "uses shell syntax: run as /bin/sh -c")
        if expect is not None:
            notes.changed(
                program.where,
                f"send_program with expect = {expect}",
                "Piranha matched the program's output; directord uses its exit code (0 = up)",
            )
        if s := v.first("send"):
            notes.dropped(s.where, "send", "send_program is used instead")
        return check
    if (send := _value(v, "send")) is not None:
        check["send"] = send
    if expect is not None:
        check["expect"] = expect
        if regex:
            check["expect_regex"] = True
    return check


def _server(s: Stmt, notes: Notes, forwarding: str, vs_port: int | None) -> dict[str, Any] | None:
    s.used = True
    name = s.args[0]
    if _value(s, "active") == "0":
        s.drop()
        notes.dropped(s.where, f"server {name}", "active = 0: not carried")
        return None
    address = _value(s, "address")
    if address is None:
        notes.dropped(s.where, f"server {name}", "no address")
        s.drop()
        return None
    out: dict[str, Any] = {"name": name, "address": address.split()[0]}
    if (weight := _int(s, "weight", notes)) is not None:
        out["weight"] = weight
    port = _int(s, "port", notes)
    if port is not None and forwarding == "nat":
        out["port"] = port
    elif port is not None and port not in (vs_port, 0):
        notes.changed(
            s.where,
            f"server {name} port = {port}",
            "direct routing keeps the virtual port; not carried",
        )
    for c in s.leftovers():
        c.drop()
        why = WHY_NOT_VIRTUAL.get(c.keyword) or "not known to the importer; not carried"
        notes.dropped(c.where, f"server {name} > {c.keyword} = {' '.join(c.args)}", why)
    return out
