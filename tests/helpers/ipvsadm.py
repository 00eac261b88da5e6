"""Read the kernel's IPVS table through ``ipvsadm -Ln`` (an independent reader) into a Table."""

from __future__ import annotations

import ipaddress
import re
import subprocess

from director.ipvs.model import (
    SCHED_FLAGS,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    TUN_F_CSUM,
    TUN_F_NOCSUM,
    TUN_F_REMCSUM,
    Dest,
    DestKey,
    Family,
    Forwarding,
    IPAddress,
    Protocol,
    Service,
    ServiceKey,
    Table,
    TunnelType,
)

FORWARD = {"Masq": Forwarding.NAT, "Route": Forwarding.DR, "Tunnel": Forwarding.TUNNEL}


def _hostport(text: str) -> tuple[IPAddress, int]:
    m = re.fullmatch(r"\[(.+)\]:(\d+)|(.+):(\d+)", text)
    assert m, text
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4)
    return ipaddress.ip_address(host), int(port)


def _service(line: str) -> Service:
    tokens = line.split()
    proto = tokens.pop(0)
    if proto == "FWM":
        mark = int(tokens.pop(0))
        family = Family.INET
        if tokens[0] == "IPv6":
            family = Family.INET6
            tokens.pop(0)
        key = ServiceKey.mark(mark, family)
    else:
        address, port = _hostport(tokens.pop(0))
        key = ServiceKey.inet(Protocol[proto], address, port)
    sched = tokens.pop(0)
    flags, timeout, netmask = 0, 0, key.family.max_prefix
    while tokens:
        word = tokens.pop(0)
        if word == "persistent":
            flags |= SVC_F_PERSISTENT
            timeout = int(tokens.pop(0))
        elif word == "mask":
            mask = tokens.pop(0)
            netmask = int(mask) if key.family is Family.INET6 else _prefix(mask)
        elif word == "ops":
            flags |= SVC_F_ONEPACKET
        elif word.startswith("("):
            for name in word.strip("()").split(","):
                flags |= SCHED_FLAGS[name][1]
        else:
            raise AssertionError(f"unknown service token {word!r} in {line!r}")
    return Service(key, sched, flags, timeout, netmask)


def _prefix(mask: str) -> int:
    return bin(int(ipaddress.IPv4Address(mask))).count("1")


def parse(text: str, thresholds_text: str | None = None, tunnels_text: str | None = None) -> Table:
    """``ipvsadm -Ln`` output (and optionally ``ipvsadm -Ln --thresholds`` and ``ipvsadm -Ln
    --tun-info``) as a Table."""
    table = Table()
    current: ServiceKey | None = None
    thresholds = _thresholds(thresholds_text) if thresholds_text else {}
    tunnels = tunnel_info(tunnels_text) if tunnels_text else {}
    for line in text.splitlines():
        if line.startswith(("IP Virtual Server", "Prot ", "  -> RemoteAddress")):
            continue
        if line.startswith("  -> "):
            assert current is not None
            addr, forward, weight, *_ = line[5:].split()
            address, port = _hostport(addr)
            upper, lower = thresholds.get((current, DestKey(address, port)), (0, 0))
            tunnel = tunnels.get((current, DestKey(address, port)), (0, 0, 0))
            dest = Dest(
                DestKey(address, port), FORWARD[forward], int(weight), upper, lower, *tunnel
            )
            table.dests[current][dest.key] = dest
        elif line.strip():
            svc = _service(line)
            current = svc.key
            table.services[svc.key] = svc
            table.dests[svc.key] = {}
    return table


def _thresholds(text: str) -> dict[tuple[ServiceKey, DestKey], tuple[int, int]]:
    out: dict[tuple[ServiceKey, DestKey], tuple[int, int]] = {}
    current: ServiceKey | None = None
    for line in text.splitlines():
        if line.startswith(("IP Virtual Server", "Prot ", "  -> RemoteAddress")) or not line:
            continue
        if line.startswith("  -> "):
            assert current is not None
            addr, upper, lower, *_ = line[5:].split()
            address, port = _hostport(addr)
            out[(current, DestKey(address, port))] = (int(upper), int(lower))
        else:
            current = _service(line).key
    return out


TUNNEL_TYPES = {"ipip": TunnelType.IPIP, "gue": TunnelType.GUE, "gre": TunnelType.GRE}
# How ipvsadm 1.31 prints the checksum flags in TunnelInfo (its tunflags table).
TUNNEL_FLAGS = {"-c": TUN_F_NOCSUM, "+c": TUN_F_CSUM, "r+c": TUN_F_REMCSUM}


def tunnel_info(text: str) -> dict[tuple[ServiceKey, DestKey], tuple[int, int, int]]:
    """``ipvsadm -Ln --tun-info`` (ipvsadm 1.31): each tunnel destination's (type, port, flags)
    from its TunnelInfo column, ``ipip``, ``gue:6080:-c``, ``gre:+c`` (``-c`` no checksum,
    ``+c`` checksum, ``r+c`` remote checksum); ``n/a`` for the other forwarding methods."""
    out: dict[tuple[ServiceKey, DestKey], tuple[int, int, int]] = {}
    current: ServiceKey | None = None
    for line in text.splitlines():
        if line.startswith(("IP Virtual Server", "Prot ", "  -> RemoteAddress")) or not line:
            continue
        if line.startswith("  -> "):
            assert current is not None
            addr, _forward, info, *_ = line[5:].split()
            if info == "n/a":
                continue
            kind, *rest = info.split(":")
            port = next((int(w) for w in rest if w.isdigit()), 0)
            flags = next((TUNNEL_FLAGS[w] for w in rest if w in TUNNEL_FLAGS), 0)
            address, dport = _hostport(addr)
            out[(current, DestKey(address, dport))] = (TUNNEL_TYPES[kind], port, flags)
        else:
            current = _service(line).key
    return out


def persistent_conns(text: str) -> dict[DestKey, int]:
    """``ipvsadm -Ln --persistent-conn`` output: each destination's persistence templates."""
    out: dict[DestKey, int] = {}
    for line in text.splitlines():
        if line.startswith("  -> ") and line[5:].split()[0] != "RemoteAddress:Port":
            addr, _weight, persist, *_ = line[5:].split()
            address, port = _hostport(addr)
            out[DestKey(address, port)] = int(persist)
    return out


def read_table(netns: str | None = None) -> Table:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    plain = subprocess.run([*prefix, "ipvsadm", "-Ln"], check=True, capture_output=True, text=True)
    thr = subprocess.run(
        [*prefix, "ipvsadm", "-Ln", "--thresholds"], check=True, capture_output=True, text=True
    )
    tun = subprocess.run(
        [*prefix, "ipvsadm", "-Ln", "--tun-info"], check=True, capture_output=True, text=True
    )
    return parse(plain.stdout, thr.stdout, tun.stdout)


def ipvsadm(*args: str, netns: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, "ipvsadm", *args], check=True, capture_output=True, text=True)
    return done.stdout
