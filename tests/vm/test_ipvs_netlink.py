"""The netlink IPVS layer on the real kernel: every field programmed and read back two ways."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterator

import pytest

from director.ipvs.kernel import Timeouts
from director.ipvs.model import (
    SCHEDULERS,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    TUN_F_CSUM,
    TUN_F_REMCSUM,
    Dest,
    DestKey,
    Family,
    Forwarding,
    Protocol,
    Service,
    ServiceKey,
    Table,
    TunnelType,
)
from director.ipvs.netlink import NetlinkIPVS
from director.reconcile.plan import plan
from tests.helpers.ipvsadm import ipvsadm, read_table, tunnel_info

pytestmark = pytest.mark.vm

ip = ipaddress.ip_address


@pytest.fixture
def kernel() -> Iterator[NetlinkIPVS]:
    ipvsadm("-C")
    k = NetlinkIPVS()
    try:
        yield k
    finally:
        k.close()
        ipvsadm("-C")


def d(
    addr: str, port: int, fwd: Forwarding = Forwarding.NAT, w: int = 1, up: int = 0, lo: int = 0
) -> Dest:
    return Dest(DestKey(ip(addr), port), fwd, w, up, lo)


def every_field() -> Table:
    t = Table()

    def add(svc: Service, *dests: Dest) -> None:
        t.services[svc.key] = svc
        t.dests[svc.key] = {x.key: x for x in dests}

    tcp = ServiceKey.inet(Protocol.TCP, ip("198.18.0.10"), 80)
    add(
        Service(tcp, "wlc", SVC_F_PERSISTENT, 600, 24),
        d("198.18.1.11", 8080, Forwarding.NAT, 3, 100, 10),
        d("198.18.1.12", 80, Forwarding.DR, 0),
        d("198.18.1.13", 80, Forwarding.TUNNEL, 65535),
        Dest(DestKey(ip("198.18.1.14"), 80), Forwarding.TUNNEL, 2, 0, 0, TunnelType.GUE, 6080),
        Dest(
            DestKey(ip("198.18.1.15"), 80),
            Forwarding.TUNNEL,
            2,
            0,
            0,
            TunnelType.GRE,
            0,
            TUN_F_CSUM,
        ),
    )
    udp = ServiceKey.inet(Protocol.UDP, ip("198.18.0.10"), 53)
    add(
        Service(udp, "sh", SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2),
        d("198.18.1.11", 53),
    )
    sctp = ServiceKey.inet(Protocol.SCTP, ip("198.18.0.10"), 5060)
    add(Service(sctp, "mh", SVC_F_SCHED2), d("198.18.1.11", 5060, Forwarding.DR))
    fwm4 = ServiceKey.mark(80, Family.INET)
    add(Service(fwm4, "rr", SVC_F_PERSISTENT, 300, 32), d("198.18.1.11", 0), d("198.18.1.12", 0))
    fwm6 = ServiceKey.mark(81, Family.INET6)
    add(Service(fwm6, "lc", 0, 0, 128), d("2001:db8:1::11", 0))
    v6 = ServiceKey.inet(Protocol.TCP, ip("2001:db8::10"), 443)
    add(
        Service(v6, "wrr", SVC_F_PERSISTENT, 120, 64),
        d("2001:db8:1::11", 443, Forwarding.NAT, 5),
        d("2001:db8:1::12", 443, Forwarding.DR, 2),
    )
    for i, sched in enumerate(sorted(SCHEDULERS)):
        key = ServiceKey.inet(Protocol.TCP, ip("198.18.0.11"), 1000 + i)
        add(Service(key, sched), d("198.18.1.11", 1000 + i))
    return t


def test_every_field_is_programmed_and_read_back(kernel: NetlinkIPVS) -> None:
    desired = every_field()
    assert kernel.execute(plan(desired, kernel.dump())) == []
    assert kernel.dump() == desired
    assert read_table() == desired, ipvsadm("-Ln", "--tun-info")
    assert plan(desired, kernel.dump()) == []


def test_edits_keep_every_field(kernel: NetlinkIPVS) -> None:
    """pyroute2's 'set' turned NAT into DR and reset the scheduler; ours must not."""
    desired = every_field()
    kernel.execute(plan(desired, Table()))
    tcp = ServiceKey.inet(Protocol.TCP, ip("198.18.0.10"), 80)
    changed = Table(dict(desired.services), {k: dict(v) for k, v in desired.dests.items()})
    nat = d("198.18.1.11", 8080, Forwarding.NAT, 9, 100, 10)
    changed.dests[tcp][nat.key] = nat
    changed.services[tcp] = Service(tcp, "lc", SVC_F_PERSISTENT, 600, 24)
    ops = plan(changed, kernel.dump())
    assert len(ops) == 2
    assert kernel.execute(ops) == []
    assert read_table() == changed


def test_single_service_read(kernel: NetlinkIPVS) -> None:
    desired = every_field()
    kernel.execute(plan(desired, Table()))
    v6 = ServiceKey.inet(Protocol.TCP, ip("2001:db8::10"), 443)
    assert kernel.dump_service(v6) == (desired.services[v6], desired.dests[v6])
    missing = ServiceKey.inet(Protocol.TCP, ip("198.18.0.99"), 1)
    assert kernel.dump_service(missing) is None


def test_refusals_say_what_was_being_done(kernel: NetlinkIPVS) -> None:
    key = ServiceKey.inet(Protocol.TCP, ip("198.18.0.10"), 443)
    from director.ipvs.ops import AddDest, AddService

    failures = kernel.execute(
        [AddDest(key, d("198.18.1.2", 443)), AddService(Service(key, "nosuchsched"))]
    )
    assert [f.errno for f in failures] == [errno.ESRCH, errno.ENOENT]
    assert str(failures[0]).startswith(
        "adding destination 198.18.1.2:443 to TCP 198.18.0.10:443: No such process"
    )
    assert "adding service TCP 198.18.0.10:443" in str(failures[1])
    assert kernel.dump() == Table()


def test_timeouts_round_trip(kernel: NetlinkIPVS) -> None:
    kernel.set_timeouts(Timeouts(tcp=901, tcpfin=121, udp=301))
    assert kernel.get_timeouts() == Timeouts(901, 121, 301)
    assert "Timeout (tcp tcpfin udp): 901 121 301" in ipvsadm("-L", "--timeout")
    kernel.set_timeouts(Timeouts(tcp=900, tcpfin=120, udp=300))


def test_refusals_mid_batch_are_matched_to_their_requests(kernel: NetlinkIPVS) -> None:
    """Requests go many to a sendmsg; each refusal still names its own request, and every
    other request of the batch (before and after it) takes effect."""
    from director.ipvs.ops import AddDest, Op
    from director.reconcile.owned import MemoryOwnedStore
    from director.reconcile.reconciler import Reconciler
    from tests.helpers.tables import web_table

    desired = web_table(400, 3)  # 1,600 requests: several batches
    ops: list[Op] = plan(desired, Table())
    missing = ServiceKey.inet(Protocol.TCP, ip("198.18.0.99"), 443)
    v4 = next(iter(desired.services))
    refused = {
        900: (AddDest(missing, d("198.18.1.2", 443)), errno.ESRCH),
        901: (AddDest(v4, next(iter(desired.dests[v4].values()))), errno.EEXIST),
        1300: (AddDest(v4, d("2001:db8:1::2", 80)), errno.EINVAL),  # mixed family, not a tunnel
    }
    for at, (op, _err) in sorted(refused.items(), reverse=True):
        ops.insert(at, op)
    failures = kernel.execute(ops)
    assert [(f.op, f.errno) for f in failures] == [refused[at] for at in sorted(refused)]
    assert str(failures[0]) == (
        "adding destination 198.18.1.2:443 to TCP 198.18.0.99:443: No such process "
        "(no such service or destination in the kernel)"
    )
    assert read_table() == desired

    # Through the reconciler: a refusal (the cached view is stale: a service was deleted by
    # hand) reads back, and the next sync, a full one, repairs.
    rec = Reconciler(kernel, MemoryOwnedStore())
    assert rec.sync(desired, full=True).ok
    ipvsadm("-D", "-t", f"{v4.address}:{v4.port}")
    changed = Table(dict(desired.services), {k: dict(v) for k, v in desired.dests.items()})
    changed.dests[v4] = {k: Dest(k, x.fwd_method, 5) for k, x in desired.dests[v4].items()}
    result = rec.sync(changed)
    assert {f.errno for f in result.failures} == {errno.ESRCH}
    assert str(result.failures[0]).startswith(f"editing destination 198.19.0.0:80 of {v4}")
    assert rec.observed is None
    result = rec.sync(changed)
    assert result.full and result.ok
    assert read_table() == changed
    assert plan(changed, kernel.dump()) == []


def test_gue_tunnel_port_reaches_the_kernel_big_endian(kernel: NetlinkIPVS) -> None:
    """A GUE destination on port 6080 (0x17C0: byte-swapped it would be 49175), from a config
    file through desired state and plan: the kernel holds 6080 (ipvsadm --tun-info, an
    independent reader, and our own dump), a GRE one with its checksum flag too, and a reload
    of the unchanged config plans nothing; a changed port is one edit."""
    from director.config import parse_config
    from director.desired import compile_table

    text = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 80
scheduler = "mh"
forwarding = "tun"
tunnel_type = "gue"
tunnel_port = 6080
tunnel_checksum = "remcsum"
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  [[virtual_server.real_server]]
  address = "198.18.1.12"
  tunnel_type = "gre"
  tunnel_checksum = "csum"
"""
    desired = compile_table(parse_config(text))
    assert kernel.execute(plan(desired, kernel.dump())) == []
    assert kernel.dump() == desired
    tcp = ServiceKey.inet(Protocol.TCP, ip("198.18.0.10"), 80)
    gue = kernel.dump().dests[tcp][DestKey.of(ip("198.18.1.11"), 80)]
    assert (gue.tun_type, gue.tun_port, gue.tun_flags) == (TunnelType.GUE, 6080, TUN_F_REMCSUM)
    listing = ipvsadm("-Ln", "--tun-info")
    lines = {line.split()[1]: line for line in listing.splitlines() if "->" in line}
    assert lines["198.18.1.11:80"].split()[3] == "gue:6080:r+c", listing  # not 49175
    assert lines["198.18.1.12:80"].split()[3] == "gre:+c", listing
    seen = tunnel_info(listing)
    assert seen[(tcp, gue.key)] == (TunnelType.GUE, 6080, TUN_F_REMCSUM)
    assert seen[(tcp, DestKey.of(ip("198.18.1.12"), 80))] == (TunnelType.GRE, 0, TUN_F_CSUM)
    assert plan(compile_table(parse_config(text)), kernel.dump()) == []  # a reload: nothing

    moved = compile_table(parse_config(text.replace("6080", "6081")))
    ops = plan(moved, kernel.dump())
    assert len(ops) == 1 and kernel.execute(ops) == []
    assert kernel.dump() == moved
    assert "6081" in ipvsadm("-Ln", "--tun-info")
