"""``directorctl vrrp-scan`` on a real segment: a keepalived router and one of our instances on
VRID 51 by mistake (different VIPs) and a second keepalived on VRID 61; the scan runs in an
observer namespace as the installed command (``ip netns exec ... directorctl vrrp-scan eth0
--json``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
SETTLE = 2.0  # seconds the scan goes on after every router is master, before SECONDS more


def mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def test_scan_lists_every_router_and_flags_the_vrid_51_collision(
    topology: Topology, tmp_path: Path
) -> None:
    """keepalived (priority 150) and one of our instances (120, a different VIP) on VRID 51 by
    mistake; a second keepalived alone on VRID 61.

    Each of the two on VRID 51 drops the other's adverts (the address lists differ), so both
    are master. keepalived also re-arms its advert timer on every advert it receives, even one
    it drops: two keepalived masters at the same interval starve one of them for as long as
    their phases hold, which made a keepalived pair an unreliable collision. Ours keeps its
    timer, and advertises every 2 s against keepalived's 1 s, so keepalived still gets one
    advert out between two of ours: the lower priority is heard advertising 1 s after the
    higher, every 2 s."""
    ka1, d2, ka2, obs = lan(topology, "ka1", "d2", "ka2", "obs")
    ours_down = master_down_interval(2, 120, 2)
    window = ours_down + 2 + SETTLE + SECONDS
    # the scan listens from before the routers start (nothing they send is missed)
    scan = subprocess.Popen(
        obs.argv(DIRECTORCTL, "vrrp-scan", "eth0", "--seconds", str(window), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # its socket is open
        jobs = []
        for ns, vrid, vip, priority in ((ka1, 51, VIP1, 150), (ka2, 61, VIP2, 100)):
            directory = tmp_path / ns.name
            directory.mkdir()
            conf = keepalived.config(version=2, vrid=vrid, priority=priority, interval=1, vip=vip)
            jobs.append(keepalived.start(ns, directory, conf))
        config = Config(
            vrid=51,
            priority=120,
            primary_address=OURS,
            virtual_addresses=(OUR_VIP,),
            version=2,
            advert_interval=2,
        )
        instance = Instance(config, "eth0")
        with NamespaceLoop(d2) as inside:
            inside.run(instance.start(), timeout=10)
            try:
                down = master_down_interval(2, 100, 1) + 2
                for ns, vip, job in ((ka1, VIP1, jobs[0]), (ka2, VIP2, jobs[1])):
                    wait_until(lambda: has_address(ns, vip), down, f"{vip} master\n{job.output()}")  # noqa: B023
                wait_until(lambda: instance.state is State.MASTER, ours_down + 2, "ours master")
                stdout, stderr = scan.communicate(timeout=window + 15)
            finally:
                inside.run(instance.stop(), timeout=15)
    finally:
        if scan.poll() is None:
            scan.kill()
            scan.communicate()
    assert scan.returncode == 1, (stdout, stderr)
    report: dict[str, Any] = json.loads(stdout)
    rows = {(r["vrid"], r["source"]): r for r in report["routers"]}
    assert set(rows) == {(51, str(KA1)), (51, str(OURS)), (61, str(KA2))}, report
    expected = {
        (51, str(KA1)): (2, 150, 1.0, [str(VIP1)], mac(mac_of(ka1))),
        (51, str(OURS)): (2, 120, 2.0, [str(OUR_VIP)], mac(mac_of(d2))),
        (61, str(KA2)): (2, 100, 1.0, [str(VIP2)], mac(mac_of(ka2))),
    }
    for key, (version, priority, interval, addresses, source_mac) in expected.items():
        row = rows[key]
        got = (row["version"], row["priority"], row["interval"], row["addresses"], row["mac"])
        assert got == (version, priority, interval, addresses, source_mac), row
        assert row["auth_type"] == "none"
    # ours every 2 s from when it became master; the lone keepalived every second
    assert rows[(51, str(OURS))]["adverts"] >= (SETTLE + SECONDS) // 2
    assert rows[(61, str(KA2))]["adverts"] >= SETTLE + SECONDS
    assert rows[(51, str(KA1))]["adverts"] >= 2
    kinds = {(f["kind"], f["vrid"]) for f in report["findings"]}
    assert ("disagreement", 51) in kinds, report["findings"]
    assert ("collision", 51) in kinds, report["findings"]
    assert ("interval_mismatch", 51) in kinds, report["findings"]
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
