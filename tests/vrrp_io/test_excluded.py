"""Excluded addresses against keepalived 2.2.7's ``virtual_ipaddress_excluded``.

keepalived lists only ``virtual_ipaddress`` in its adverts (vrrp.c builds the advert from
``vrrp->vip`` only; ``evip`` is held, not advertised) and drops an advert whose address list
differs from its own (vrrp.c, "ip address associated with VRID ... not present"). When the
excluded addresses were merged into the advertised list, each side dropped every advert of the
other and both became master. With ``excluded_addresses`` both accept each other's adverts, one
is master, and the master holds every address, the excluded ones (here of the other family)
too.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io import keepalived
from tests.vrrp_io.lab import VIP, has_address, lan, wait_until
from vrrp import Config, State, master_down_interval
from vrrp.instance import Instance

VRID = 53
OURS = IPv4Address("198.18.0.1")
EXCLUDED_V4 = IPv4Address("198.18.0.101")
EXCLUDED_V6 = IPv6Address("2001:db8::101")
SETTLE = 1.0


def keepalived_config(priority: int) -> str:
    text = keepalived.config(version=2, vrid=VRID, priority=priority, interval=1.0, vip=VIP)
    excluded = (
        "    virtual_ipaddress_excluded {\n"
        f"        {EXCLUDED_V4}/32 dev eth0\n"
        f"        {EXCLUDED_V6}/128 dev eth0\n"
        "    }\n"
    )
    head, tail = text.rsplit("}\n", 1)
    return head + excluded + "}\n" + tail


def ours(priority: int, *, merged: bool = False) -> Instance:
    excluded = (EXCLUDED_V4, EXCLUDED_V6)
    config = Config(
        vrid=VRID,
        priority=priority,
        primary_address=OURS,
        virtual_addresses=(VIP, EXCLUDED_V4) if merged else (VIP,),
        excluded_addresses=(EXCLUDED_V6,) if merged else excluded,
    )
    return Instance(config, "eth0")


def test_excluded_addresses_keep_adverts_compatible_with_keepalived(
    topology: Topology, tmp_path: Path
) -> None:
    d1, ka = lan(topology, "d1", "ka")
    for ns in (d1, ka):
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
        ns.sysctl("net.ipv6.conf.eth0.accept_dad", "0")
    job = keepalived.start(ka, tmp_path, keepalived_config(200))
    ka_down = master_down_interval(2, 200, 1.0)
    wait_until(lambda: has_address(ka, VIP), ka_down + 3, f"keepalived master\n{job.output()}")
    assert has_address(ka, EXCLUDED_V4) and has_address(ka, EXCLUDED_V6), "keepalived holds them"
    instance = ours(100)
    with NamespaceLoop(d1) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            # Our backup accepts keepalived's adverts (its list: the VIP only).
            wait_until(lambda: instance.counters().adverts_received >= 3, 5, "adverts")
            assert instance.state is State.BACKUP
            assert instance.counters().drops == {}
            # keepalived stops: we take over and hold all three, IPv6 included.
            job.stop()
            our_down = master_down_interval(2, 100, 1.0)
            wait_until(lambda: instance.state is State.MASTER, our_down + SETTLE, "take over")
            wait_until(
                lambda: all(has_address(d1, a) for a in (VIP, EXCLUDED_V4, EXCLUDED_V6)),
                2,
                "every address on our side",
            )
            # A lower-priority keepalived accepts our adverts and stays backup: no split brain.
            (tmp_path / "second").mkdir()
            second = keepalived.start(ka, tmp_path / "second", keepalived_config(50))
            time.sleep(master_down_interval(2, 50, 1.0) + 2 * SETTLE)
            assert instance.counters().adverts_sent > 0 and str(instance.state) == str(State.MASTER)
            assert not has_address(ka, VIP), second.output()
            assert "Entering MASTER STATE" not in second.output(), second.output()
            assert "not present" not in second.output(), second.output()
            assert instance.counters().drops == {}
        finally:
            inside.run(instance.stop(), timeout=15)


def test_merged_into_the_advert_keepalived_and_we_drop_each_other(
    topology: Topology, tmp_path: Path
) -> None:
    """The failure the concept fixes: one excluded address listed in our adverts."""
    d1, ka = lan(topology, "d1", "ka")
    job = keepalived.start(ka, tmp_path, keepalived_config(200))
    wait_until(lambda: has_address(ka, VIP), master_down_interval(2, 200, 1.0) + 3, job.output())
    instance = ours(100, merged=True)
    with NamespaceLoop(d1) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            our_down = master_down_interval(2, 100, 1.0)
            wait_until(lambda: instance.state is State.MASTER, our_down + SETTLE, "both master")
            assert has_address(ka, VIP) and has_address(d1, VIP)
            assert sum(instance.counters().drops.values()) >= 1
        finally:
            inside.run(instance.stop(), timeout=15)
