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
from typing import Any, Literal

from director.config.checks import regex_problem
from director.importers import lvs_cf_format as fmt
from director.importers import values
from director.importers.keepalived import Stmt
from director.importers.keepalived_lvs import SCHEDULERS
from director.importers.notes import Imported, Notes
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


def import_lvs_cf(path: str | os.PathLike[str], node: Node = "primary") -> Imported:
    """Read lvs.cf as director config data for the ``node`` director."""
    notes = Notes()
    root = fmt.parse(path)
    config: dict[str, Any] = {}
    forwarding = "nat"
    if s := root.first("network"):
        forwarding = METHODS.get(s.args[0].lower(), "")
        if not forwarding:
            notes.dropped(s.where, f"network = {s.args[0]}", "expected nat, direct or tunnel")
            forwarding = "nat"
    given = fmt.integer(root, "keepalive", 1, 255, "a number of seconds")
    keepalive = float(given or 2)
    if given is None:
        notes.carried(
            f"{root.file}:0",
            "keepalive",
            "not given: Piranha's default 2 s (lvsconfig.c), the VRRP advert interval",
        )
    kernel = {
        k: v
        for k in ("tcp_timeout", "tcpfin_timeout", "udp_timeout")
        if (v := fmt.integer(root, k, 0, 2**31 // 1000, "a number of seconds"))
    }
    if kernel:
        config["kernel"] = kernel
    vips: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    for block in root.all("virtual"):
        vs = _virtual(block, notes, forwarding, keepalive, vips)
        if vs is not None:
            _unique_service(block, vs, services)
            services.append(vs)
    nat = _nat_router(root, notes)
    if nat is not None:
        _add_vip(root.first("nat_router") or root, nat, vips)
    sync = _sync_daemon(root, notes)
    if sync:
        config["sync_daemon"] = sync
    instance = _heartbeat(root, notes, node, keepalive, vips)
    if instance is not None:
        config["vrrp_instance"] = [instance]
    elif sync:
        del sync["instance"]  # no VRRP: this director is the master, and so is its daemon
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


def _unique_service(v: Stmt, vs: dict[str, Any], services: list[dict[str, Any]]) -> None:
    """lvsd cannot add one service twice; two virtuals of one name get ``NAME#2``."""
    keys = ("fwmark", "family") if "fwmark" in vs else ("protocol", "address", "port")
    key = [vs.get(k) for k in keys]
    for other in services:
        if [other.get(k) for k in keys] == key:
            what = " ".join(str(k) for k in key if k is not None)
            values.fail(
                v,
                "a service that no other virtual has",
                None,
                shown=f"{what} (also virtual {other['name']})",
            )
    names = {other["name"] for other in services}
    if vs["name"] in names:
        n = 2
        while f"{vs['name']}#{n}" in names:
            n += 1
        vs["name"] = f"{vs['name']}#{n}"


def _add_vip(s: Stmt, vip: dict[str, Any], vips: list[dict[str, Any]]) -> None:
    """Each address once, all of the family of the first."""
    ip = ipaddress.ip_interface(vip["address"]).ip
    ips = [ipaddress.ip_interface(v["address"]).ip for v in vips]
    if ip in ips:
        return
    if ips and ip.version != ips[0].version:
        values.fail(s, f"an IPv{ips[0].version} address like the other virtual addresses", str(ip))
    vips.append(vip)


def _heartbeat(
    root: Stmt, notes: Notes, node: Node, keepalive: float, vips: list[dict[str, Any]]
) -> dict[str, Any] | None:
    primary = fmt.address(root, "primary")
    backup = fmt.address(root, "backup")
    heartbeat = root.first("heartbeat")
    active = fmt.value(root, "backup_active")
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
    out["virtual_addresses"] = [v if len(v) > 1 else v["address"] for v in vips]
    family = ipaddress.ip_interface(vips[0]["address"]).version if vips else 4
    ips = {str(ipaddress.ip_interface(v["address"]).ip) for v in vips}
    for key, address in (("primary", primary), ("backup", backup)):
        s = root.first(key)
        if address is None or s is None:
            continue
        if ipaddress.ip_address(address).version != family:
            values.fail(s, f"an IPv{family} address like the virtual addresses", address)
        if address in ips:
            values.fail(s, "the director's own address, not a virtual one", address)
    if family == 6:
        values.fail(
            root.first("primary") or heartbeat or root,
            "IPv4 virtual addresses (Piranha's heartbeat is IPv4 only)",
            None,
            shown=vips[0]["address"],
        )
    notes.changed(
        where,
        "heartbeat",
        f"Piranha's heartbeat becomes VRRP instance lvs (vrid {DEFAULT_VRID}: check it is free "
        f"on the segment) between {primary} and {backup}, unicast, advert every "
        f"keepalive = {keepalive:g} s; this file is for the {node} (priority "
        f"{out['priority']}); import again with --node "
        f"{'backup' if node == 'primary' else 'primary'} for the other director; pulse's "
        "UDP heartbeat and VRRP do not hear each other, so a director still running pulse "
        "and this one would both be master: move both directors together",
    )
    return out


def _nat_router(root: Stmt, notes: Notes) -> dict[str, Any] | None:
    s = root.first("nat_router")
    if s is None:
        return None
    words = s.args[0].split()
    ip = values.address(s, text=words[0] if words else None)
    if ":" in ip:
        values.fail(s, "an IPv4 address", ip)
    prefix = 24
    if (m := root.first("nat_nmask")) and not fmt.zero_mask(m):
        prefix = fmt.prefix(m)
    vip: dict[str, Any] = {"address": f"{ip}/{prefix}"}
    if len(words) > 1:
        fmt.device(s, words[1], vip)
    notes.carried(
        s.where,
        f"nat_router = {s.args[0]}",
        "a VIP of the VRRP instance (the real servers' gateway)",
    )
    return vip


def _sync_daemon(root: Stmt, notes: Notes) -> dict[str, Any] | None:
    s = root.first("syncdaemon")
    iface = fmt.value(root, "syncd_iface")
    if (i := root.first("syncd_iface")) is not None:
        iface = values.interface(i, text=i.args[0].strip())
    sync_id = fmt.integer(root, "syncd_id", 0, 255, "a sync id")
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
    address = values.address(s, text=words[0] if words else None)
    prefix = 32 if ":" not in address else 128
    if (m := v.first("vip_nmask")) is not None and ":" not in address:
        if fmt.zero_mask(m):
            notes.carried(
                m.where,
                f"vip_nmask = {m.args[0]}",
                "Piranha reads a zero mask as none given: the address is a /32",
            )
        else:
            prefix = fmt.prefix(m)
    vip: dict[str, Any] = {"address": f"{address}/{prefix}"}
    if len(words) > 1:
        fmt.device(s, words[1], vip)
    return address, vip


def _virtual(
    v: Stmt,
    notes: Notes,
    forwarding: str,
    keepalive: float,
    vips: list[dict[str, Any]],
) -> dict[str, Any] | None:
    v.used = True
    name = values.name(v)
    if fmt.value(v, "active") == "0":
        v.drop()
        notes.dropped(v.where, f"virtual {name}", "active = 0: not carried")
        return None
    address, vip = _vip(v, notes)
    if vip is not None:
        _add_vip(v.first("address") or v, vip, vips)
    out: dict[str, Any] = {"name": name}
    fwmark = fmt.integer(v, "fwmark", 0, 2**32 - 1, "an fwmark")
    protocol = "tcp"
    if s := v.first("protocol"):
        protocol = s.args[0].strip().lower()
        if protocol not in ("tcp", "udp"):
            values.fail(s, "tcp or udp", s.args[0])
    port = fmt.port(v, "port", notes)
    if port is None and not fwmark:
        port = 80
        notes.carried(
            v.where,
            f"virtual {name} port",
            "not given: Piranha's default port 80 (lvsconfig.c lvsInitVirtualServer), for the "
            "service, its servers and nanny's probes",
        )
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
        if s.args[0] not in SCHEDULERS:
            values.fail(s, f"an IPVS scheduler ({', '.join(sorted(SCHEDULERS))})", s.args[0])
        out["scheduler"] = s.args[0]
    if (persistent := fmt.integer(v, "persistent", what="a number of seconds")) and persistent > 0:
        out["persistence_timeout"] = persistent
        if (s := v.first("pmask")) and fmt.zero_mask(s):
            notes.carried(
                s.where,
                f"pmask = {s.args[0]}",
                "Piranha reads a zero mask as none given: persistence per client address",
            )
        elif (s := v.first("pmask")) and s.args[0].strip() != "255.255.255.255":
            mask = values.netmask(s, text=s.args[0].strip())
            if isinstance(mask, int) and not 1 <= mask <= 32:
                values.fail(s, "a netmask or a prefix length from 1 to 32", s.args[0])
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
    family = 6 if (address and ":" in address) else 4
    if (sorry := fmt.address(v, "sorry_server")) is not None:
        if ipaddress.ip_address(sorry).version != family and forwarding != "tun":
            s = v.first("sorry_server")
            assert s is not None
            values.fail(s, f"an IPv{family} address like the virtual's", sorry)
        out["sorry_server"] = {"address": sorry}
    check = _check(v, notes, 80 if port is None else port)
    if check is not None:
        if fwmark and check["type"] not in ("script", "exchange", "https"):
            check["port"] = 80 if port is None else port  # nanny probes the virtual's port
        out["check"] = check
    reals: list[dict[str, Any]] = []
    for s in v.all("server"):
        real = _server(s, notes, forwarding, port)
        if real is None:
            continue
        if ipaddress.ip_address(real["address"]).version != family and forwarding != "tun":
            a = s.first("address")
            assert a is not None
            values.fail(a, f"an IPv{family} address like the virtual's", real["address"])
        if any(_dest(out, real) == _dest(out, r) for r in reals):
            notes.dropped(s.where, f"server {real['name']}", "the same address and port again")
            continue
        reals.append(real)
    if reals:
        out["real_server"] = reals
    _sorry_not_real(v, out, notes)
    _check_port(v, out)
    for s in v.leftovers():
        s.drop()
        why = WHY_NOT_VIRTUAL.get(s.keyword) or "not known to the importer; not carried"
        notes.dropped(s.where, f"virtual {name} > {s.keyword} = {' '.join(s.args)}", why)
    return out


def _dest(vs: dict[str, Any], server: dict[str, Any]) -> tuple[Any, int]:
    """The kernel's key of a server: its port with NAT, else (or without one) the virtual's."""
    port = server.get("port") if vs["forwarding"] == "nat" else None
    return ipaddress.ip_address(server["address"]), (vs.get("port") or 0) if port is None else port


def _sorry_not_real(v: Stmt, vs: dict[str, Any], notes: Notes) -> None:
    """A sorry server that is one of the servers already is left out (it is in the table)."""
    sorry = vs.get("sorry_server")
    if sorry is None:
        return
    if any(_dest(vs, sorry) == _dest(vs, r) for r in vs.get("real_server", ())):
        del vs["sorry_server"]
        s = v.first("sorry_server")
        assert s is not None
        notes.dropped(
            s.where,
            f"virtual {vs['name']} > sorry_server = {s.args[0]}",
            "the sorry server is one of the servers: it stays in the table as one",
        )


def _check_port(v: Stmt, vs: dict[str, Any]) -> None:
    """nanny probes each server's port, or the virtual's: one of them is needed."""
    check = vs.get("check")
    if check is None or check["type"] in ("script", "exchange", "https") or "port" in check:
        return
    for real in vs.get("real_server", ()):
        nat = vs.get("forwarding") == "nat"
        if not ((real.get("port") if nat else None) or vs.get("port")):
            values.fail(
                v.first("port") or v,
                f"port = N: nanny probes the port, and server {real['name']} has none",
                None,
            )


def _check(v: Stmt, notes: Notes, vs_port: int) -> dict[str, Any] | None:
    """nanny's check, as lvsd starts it (lvsd.c: ``-t timeout -a reentry``): a probe every
    ``timeout`` seconds (nanny's interval; default 10), each waiting up to that long, one
    failure takes the server out, and it comes back after ``reentry`` seconds of good probes
    (default 180 for LVS services, nanny.c)."""
    timeout = fmt.integer(v, "timeout", 1, what="a number of seconds")
    interval = float(timeout or 10)
    check: dict[str, Any] = {"type": "tcp", "interval": interval, "rise": 1, "fall": 1}
    check["timeout"] = interval
    name = v.args[0]
    if timeout is None:
        notes.carried(
            v.where,
            f"virtual {name} timeout",
            "not given: Piranha's default 10 s: nanny probes every 10 s and a server is out "
            "after one failed probe",
        )
    reentry = fmt.integer(v, "reentry", what="a number of seconds")
    if reentry is None:
        reentry = 180
        notes.carried(
            v.where,
            f"virtual {name} reentry",
            "not given: Piranha's default 180 s: a server that failed is back only after "
            "180 s of good probes",
        )
    check["reentry"] = float(reentry)
    expects = v.all("expect")
    expect = expects[-1].args[0] if expects else None
    regex = fmt.value(v, "use_regex") == "1"
    program = v.first("send_program")
    if program is not None:
        argv, shell = command_argv(program.args[0].replace("%h", ADDRESS))
        if not argv:
            values.fail(program, "a program and its arguments", program.args[0])
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
        check["command"] = values.program(program, argv)
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
    send = fmt.value(v, "send")
    if send is None and expect is None and vs_port == 80:
        # nanny.c: port 80 with no send, expect or send_program -> an HTTP probe
        check["send"] = "GET / HTTP/1.0\r\n\r\n"
        check["expect"] = "HTTP"
        notes.carried(
            v.where,
            f"virtual {name} (no send/expect)",
            'port 80 with no send, expect or send_program: nanny sends "GET / HTTP/1.0" '
            'and expects "HTTP" in the reply, and so does the import',
        )
        return check
    if send is not None:
        check["send"] = send
    if expect is not None:
        check["expect"] = expect
        if regex:
            if why := regex_problem(expect, raw=True):
                values.refuse(expects[-1], why)
            check["expect_regex"] = True
    return check


def _server(s: Stmt, notes: Notes, forwarding: str, vs_port: int | None) -> dict[str, Any] | None:
    s.used = True
    name = values.name(s)
    if fmt.value(s, "active") == "0":
        s.drop()
        notes.dropped(s.where, f"server {name}", "active = 0: not carried")
        return None
    address = fmt.address(s, "address")
    if address is None:
        notes.dropped(s.where, f"server {name}", "no address")
        s.drop()
        return None
    out: dict[str, Any] = {"name": name, "address": address}
    if (weight := fmt.integer(s, "weight", 0, 65535, "a weight")) is not None:
        out["weight"] = weight
    port = fmt.integer(s, "port", 0, 65535, "a port")
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
