"""``directorctl vrrp-scan`` on a real segment: two keepalived routers on VRID 51 by mistake
(different VIPs) and one of our instances on VRID 61; the scan runs in an observer namespace as
the installed command (``ip netns exec ... directorctl vrrp-scan eth0 --json``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io import keepalived
from tests.vrrp_io.lab import has_address, lan, mac_of, wait_until
from vrrp import Config, State, master_down_interval
from vrrp.instance import Instance

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

VIP1, VIP2, OUR_VIP = (IPv4Address(f"198.18.0.{n}") for n in (100, 200, 161))
KA1, OURS, KA2 = (IPv4Address(f"198.18.0.{n}") for n in (1, 2, 3))
DIRECTORCTL = str(Path(sys.executable).with_name("directorctl"))
SECONDS = 6
SETTLE = 2.0  # both keepalived masters for a while: no start-up transients


def mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def test_scan_lists_every_router_and_flags_the_vrid_51_collision(
    topology: Topology, tmp_path: Path
) -> None:
    ka1, d2, ka2, obs = lan(topology, "ka1", "d2", "ka2", "obs")
    jobs = []
    for ns, vip, priority in ((ka1, VIP1, 150), (ka2, VIP2, 120)):
        directory = tmp_path / ns.name
        directory.mkdir()
        conf = keepalived.config(version=2, vrid=51, priority=priority, interval=1, vip=vip)
        jobs.append(keepalived.start(ns, directory, conf))
    config = Config(
        vrid=61,
        priority=100,
        primary_address=OURS,
        virtual_addresses=(OUR_VIP,),
        version=3,
        advert_interval=0.5,
    )
    instance = Instance(config, "eth0")
    with NamespaceLoop(d2) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            down = master_down_interval(2, 120, 1) + 2
            for ns, vip, job in ((ka1, VIP1, jobs[0]), (ka2, VIP2, jobs[1])):
                wait_until(lambda: has_address(ns, vip), down, f"{vip} master\n{job.output()}")  # noqa: B023
            wait_until(lambda: instance.state is State.MASTER, 5, "our instance master")

            time.sleep(SETTLE)
            done = obs.run(
                DIRECTORCTL, "vrrp-scan", "eth0", "--seconds", str(SECONDS), "--json", check=False
            )
        finally:
            inside.run(instance.stop(), timeout=15)
    assert done.returncode == 1, (done.stdout, done.stderr)
    report: dict[str, Any] = json.loads(done.stdout)
    rows = {(r["vrid"], r["source"]): r for r in report["routers"]}
    assert set(rows) == {(51, str(KA1)), (51, str(KA2)), (61, str(OURS))}, report
    expected = {
        (51, str(KA1)): (2, 150, 1.0, [str(VIP1)], mac(mac_of(ka1))),
        (51, str(KA2)): (2, 120, 1.0, [str(VIP2)], mac(mac_of(ka2))),
        (61, str(OURS)): (3, 100, 0.5, [str(OUR_VIP)], mac(mac_of(d2))),
    }
    for key, (version, priority, interval, addresses, source_mac) in expected.items():
        row = rows[key]
        got = (row["version"], row["priority"], row["interval"], row["addresses"], row["mac"])
        assert got == (version, priority, interval, addresses, source_mac), row
        assert row["auth_type"] == "none"
    # keepalived masters that drop each other's adverts (the address lists differ) postpone
    # their own on each one dropped: fewer than one a second, irregular
    assert rows[(61, str(OURS))]["adverts"] >= 2 * SECONDS - 1
    assert all(rows[(51, str(ka))]["adverts"] >= 1 for ka in (KA1, KA2))
    kinds = {(f["kind"], f["vrid"]) for f in report["findings"]}
    assert ("disagreement", 51) in kinds, report["findings"]
    assert ("collision", 51) in kinds, report["findings"]  # keepalived drops the other's adverts
    assert not any(f["vrid"] == 61 for f in report["findings"])
    assert report["unreadable"] == {}
    assert 51 not in report["free_vrids"]["4"] and 61 not in report["free_vrids"]["4"]


def test_scan_says_it_needs_root_and_names_a_missing_interface(topology: Topology) -> None:
    (obs,) = lan(topology, "obs")
    missing = obs.run(DIRECTORCTL, "vrrp-scan", "eth9", "--seconds", "1", check=False)
    assert missing.returncode == 2
    assert "no interface 'eth9' here" in missing.stderr
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("no setpriv to drop root")
    unprivileged = obs.run(
        setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
        DIRECTORCTL, "vrrp-scan", "eth0", "--seconds", "1", check=False,
    )  # fmt: skip
    assert unprivileged.returncode == 2, unprivileged.stderr
    assert "needs root (CAP_NET_RAW)" in unprivileged.stderr, unprivileged.stderr
