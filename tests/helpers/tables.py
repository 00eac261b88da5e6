"""Hypothesis strategies and builders for IPVS tables that the kernel would accept."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from director.ipvs.model import (
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

V4 = [ipaddress.IPv4Address(f"198.18.0.{i}") for i in range(1, 4)]
V6 = [ipaddress.IPv6Address(f"2001:db8::{i}") for i in range(1, 3)]
RS4 = [ipaddress.IPv4Address(f"198.18.1.{i}") for i in range(1, 6)]
RS6 = [ipaddress.IPv6Address(f"2001:db8:1::{i}") for i in range(1, 4)]

service_keys = st.one_of(
    st.builds(
        ServiceKey.inet,
        st.sampled_from(list(Protocol)),
        st.sampled_from(V4 + V6),
        st.sampled_from([80, 443, 25]),
    ),
    st.builds(
        ServiceKey.mark,
        st.integers(min_value=1, max_value=4),
        st.sampled_from(list(Family)),
    ),
)


@st.composite
def services(draw: st.DrawFn, key: ServiceKey) -> Service:
    persistent = draw(st.booleans())
    flags = (SVC_F_PERSISTENT if persistent else 0) | draw(st.sampled_from([0, SVC_F_ONEPACKET]))
    low = 1 if key.family is Family.INET6 else 0
    return Service(
        key=key,
        sched_name=draw(st.sampled_from(["rr", "wlc", "lc", "sh"])),
        flags=flags,
        timeout=draw(st.integers(1, 3600)) if persistent else 0,
        netmask=draw(st.integers(low, key.family.max_prefix)),
    )


@st.composite
def dests(draw: st.DrawFn, key: ServiceKey) -> dict[DestKey, Dest]:
    pool: list[IPAddress] = list(RS4) if key.family is Family.INET else list(RS6)
    addresses = draw(st.lists(st.sampled_from(pool), unique=True, max_size=4))
    out: dict[DestKey, Dest] = {}
    for address in addresses:
        dkey = DestKey.of(address, draw(st.sampled_from([0, 80, 8080])))
        upper = draw(st.integers(0, 100))
        fwd = draw(st.sampled_from(list(Forwarding)))
        out[dkey] = Dest(
            key=dkey,
            fwd_method=fwd,
            weight=draw(st.integers(0, 100)),
            u_threshold=upper,
            l_threshold=draw(st.integers(0, upper)),
            **(draw(tunnels()) if fwd is Forwarding.TUNNEL else {}),
        )
    return out


@st.composite
def tunnels(draw: st.DrawFn) -> dict[str, int]:
    """Tunnel fields the kernel accepts: a GUE destination needs a port (asymmetric bytes
    such as 6080 = 0x17C0 catch a byte-order mistake; 1 and 65535 the edges)."""
    tun_type = draw(st.sampled_from(list(TunnelType)))
    ports = st.sampled_from([1, 6080, 6081, 65535]) | st.integers(1, 65535)
    return {
        "tun_type": tun_type,
        "tun_port": draw(ports) if tun_type is TunnelType.GUE else 0,
        "tun_flags": draw(st.sampled_from([TUN_F_NOCSUM, TUN_F_CSUM, TUN_F_REMCSUM])),
    }


@st.composite
def tables(draw: st.DrawFn) -> Table:
    keys = draw(st.lists(service_keys, unique=True, max_size=5))
    table = Table()
    for key in keys:
        table.services[key] = draw(services(key))
        table.dests[key] = draw(dests(key))
    return table


def web_table(n_services: int, n_dests: int, weight: int = 1) -> Table:
    """A large, regular table: n_services TCP services with n_dests NAT destinations each."""
    table = Table()
    for i in range(n_services):
        vip = ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + i // 500)
        key = ServiceKey.inet(Protocol.TCP, vip, 1000 + i % 500)
        table.services[key] = Service(key=key, sched_name="wlc")
        table.dests[key] = {}
        for j in range(n_dests):
            dkey = DestKey.of(
                ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.19.0.0")) + j), 80
            )
            table.dests[key][dkey] = Dest(key=dkey, weight=weight)
    return table
