"""Route health injection against a real BIRD 2, in network namespaces on this machine's kernel
(routing and BGP need no ip_vs): three directors (``tests.helpers.director_proc``: the whole
daemon on the in-memory IPVS table, real HTTP checks of a real server each) run ExaBGP and peer
with a router namespace running BIRD 2 with ``merge paths``, which installs one ECMP route to
the VIP in its kernel table.

Measured at the router (``ip -j route``, polled every 5 ms): the time from a director's real
server dying to its next hop leaving the route (check interval 0.2 s, fall 1), from
``directorctl drain-director``, from SIGKILL of ``directord`` (the hold time is 9 s: the route
must go long before), and from a clean stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from director.control.client import request
from tests.helpers.bgp_lab import VIP, Director, build, next_hops, until
from tests.helpers.netns import Namespace, Topology

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (apt install bird2)"),
]

HOLD_TIME = 9


@pytest.fixture
def lab(topology: Topology, tmp_path: Path) -> Iterator[tuple[Namespace, list[Director]]]:
    router, directors = build(topology, tmp_path, directors=3, hold_time=HOLD_TIME)
    yield router, directors
    for d in directors:
        if d.daemon.proc.poll() is None:
            d.daemon.stop()
        output = d.daemon.output()
        assert "Traceback" not in output, output[-3000:]


def test_router_ecmp_follows_health_and_directord_life(
    lab: tuple[Namespace, list[Director]],
) -> None:
    router, (d1, d2, d3) = lab
    everyone = {d.address for d in (d1, d2, d3)}
    # 1. every director announces once its real server passes its check: one ECMP route
    until(router, lambda hops: hops == everyone, within=30)
    for d in (d1, d2, d3):  # vip_device = "lo": the VIP is local on every director
        assert f"{VIP}/32" in d.ns.ip("address", "show", "dev", "lo")

    # 2. d3's real server dies: its check fails, the quorum is lost, the route is withdrawn
    start = time.monotonic()
    d3.server.stop()
    unhealthy = until(router, lambda hops: d3.address not in hops, within=10) + (0.0 * start)
    assert next_hops(router) == {d1.address, d2.address}
    # and it comes back with its server
    d3.start_server()
    until(router, lambda hops: hops == everyone, within=15)

    # 3. drain-director withdraws the node's route (and it survives in a state file);
    #    enable-director puts it back
    sock = d3.state / "control.sock"
    answer = request(sock, "drain-director", {"timeout": 30})
    drained = until(router, lambda hops: d3.address not in hops, within=5)
    assert answer["drain"]["drained"] and (d3.state / "director-drain.json").exists()
    (route,) = request(sock, "status")["bgp"]["routes"]
    assert (route["announced"], route["reason"]) == (False, "drained")
    request(sock, "enable-director")
    until(router, lambda hops: hops == everyone, within=10)
    assert not (d3.state / "director-drain.json").exists()

    # 4. SIGKILL of directord: its ExaBGP goes with it and the router withdraws at once
    os.kill(d2.daemon.proc.pid, signal.SIGKILL)
    killed = until(router, lambda hops: d2.address not in hops, within=HOLD_TIME - 4)
    assert next_hops(router) == {d1.address, d3.address}

    # 5. a clean stop withdraws first
    d1.daemon.proc.send_signal(signal.SIGTERM)
    stopped = until(router, lambda hops: d1.address not in hops, within=5)
    assert next_hops(router) == {d3.address}
    assert d1.daemon.proc.wait(timeout=10) == 0
    assert VIP not in d1.ns.ip("address", "show", "dev", "lo")  # removed after the withdrawal
    log = d1.daemon.output()
    assert '"bgp_route_withdrawn"' in log and "stopping" in log

    print(
        f"\nwithdrawal at the router: real server down {unhealthy * 1000:.0f} ms "
        f"(check interval 200 ms), drain-director {drained * 1000:.0f} ms, "
        f"SIGKILL of directord {killed * 1000:.0f} ms "
        f"(hold time {HOLD_TIME} s), clean stop {stopped * 1000:.0f} ms"
    )
    # no exabgp of the killed director is left behind
    left = subprocess.run(["pgrep", "-f", f"{d2.state}/bgp/exabgp.conf"], capture_output=True)
    assert left.returncode == 1, left.stdout


def test_a_dead_exabgp_is_restarted_and_announces_again(topology: Topology, tmp_path: Path) -> None:
    router, (d1,) = build(topology, tmp_path, directors=1, hold_time=HOLD_TIME)
    until(router, lambda hops: hops == {d1.address}, within=30)
    sock = d1.state / "control.sock"
    pid = request(sock, "status")["bgp"]["speaker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    # the kernel closes the dead speaker's TCP session: the router withdraws at once
    gone = until(router, lambda hops: not hops, within=HOLD_TIME - 4)
    # directord starts it again (0.5 s backoff) and sends its routes again
    back = until(router, lambda hops: hops == {d1.address}, within=20)
    speaker = request(sock, "status")["bgp"]["speaker"]
    assert speaker["restarts"] == 1 and speaker["pid"] != pid
    assert speaker["announced"] == ["198.18.0.10/32"]
    print(
        f"\nexabgp killed: withdrawn after {gone * 1000:.0f} ms, announced again {back:.1f} s later"
    )
    d1.daemon.stop()
    assert '"exabgp_exited"' in d1.daemon.output()


def test_a_reload_announces_and_withdraws_without_touching_other_routes(
    topology: Topology, tmp_path: Path
) -> None:
    router, (d1,) = build(topology, tmp_path, directors=1, hold_time=HOLD_TIME)
    until(router, lambda hops: hops == {d1.address}, within=30)
    sock = d1.state / "control.sock"
    pid = request(sock, "status")["bgp"]["speaker"]["pid"]
    base = d1.config.read_text()
    second = base + (
        '\n[[virtual_server]]\nname = "api"\nprotocol = "tcp"\naddress = "198.18.0.11"\n'
        'port = 80\nforwarding = "dr"\n  [[virtual_server.real_server]]\n'
        f'  address = "198.18.1{d1.index}.21"\n'
        '\n[[bgp.announce]]\nprefix = "198.18.0.11/32"\nvirtual_servers = ["api"]\n'
    )
    d1.config.write_text(second)
    request(sock, "reload")

    def api_hops() -> set[str]:
        out = router.run("ip", "-j", "route", "show", "198.18.0.11/32").stdout
        return {r.get("gateway", "") for r in json.loads(out or "[]")}

    deadline = time.monotonic() + 10
    while api_hops() != {d1.address} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api_hops() == {d1.address}
    assert next_hops(router) == {d1.address}  # the first route never left
    # the same speaker: only the announcements changed
    assert request(sock, "status")["bgp"]["speaker"]["pid"] == pid
    d1.config.write_text(base)
    request(sock, "reload")
    deadline = time.monotonic() + 10
    while api_hops() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api_hops() == set() and next_hops(router) == {d1.address}
    d1.daemon.stop()


def test_a_lost_api_process_restarts_exabgp(topology: Topology, tmp_path: Path) -> None:
    """If ExaBGP's API process dies under it, directord could no longer withdraw anything: it
    restarts ExaBGP, which announces again."""
    router, (d1,) = build(topology, tmp_path, directors=1, hold_time=HOLD_TIME)
    until(router, lambda hops: hops == {d1.address}, within=30)
    sock = d1.state / "control.sock"
    pid = request(sock, "status")["bgp"]["speaker"]["pid"]
    relay = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", "director.bgp.relay"], capture_output=True, text=True
    ).stdout.split()
    assert len(relay) == 1
    os.kill(int(relay[0]), signal.SIGKILL)
    until(router, lambda hops: not hops, within=HOLD_TIME - 4)
    until(router, lambda hops: hops == {d1.address}, within=20)
    assert request(sock, "status")["bgp"]["speaker"]["restarts"] == 1
    d1.daemon.stop()
    assert '"exabgp_api_lost"' in d1.daemon.output()
