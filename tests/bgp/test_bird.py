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
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from director.control.client import request
from tests.helpers import director_proc
from tests.helpers.netns import Background, Namespace, Topology

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (apt install bird2)"),
]

VIP = "198.18.0.10"
ROUTER = "198.18.100.254"
HOLD_TIME = 9
DIRECTORS = 3

BIRD_CONF = """
router id {router};
log stderr all;
protocol device {{ scan time 10; }}
protocol kernel {{
    ipv4 {{ import none; export all; }};
    merge paths on;
}}
{peers}
"""
BIRD_PEER = """
protocol bgp d{i} {{
    local {router} as 65000;
    neighbor 198.18.100.{i} as 65001;
    hold time {hold};
    connect retry time 1;
    error wait time 1, 2;
    ipv4 {{ import all; export none; }};
}}
"""

DIRECTOR_CONF = """
[daemon]
state_dir = "{state}"
control_socket = "{state}/control.sock"
metrics_address = ""
log_format = "json"
log_level = "debug"

[[virtual_server]]
name = "web"
protocol = "tcp"
address = "{vip}"
port = 80
scheduler = "mh"
scheduler_flags = ["mh-port"]
forwarding = "dr"
  [virtual_server.check]
  type = "tcp"
  interval = 0.2
  timeout = 0.2
  fall = 1
  rise = 1
  [[virtual_server.real_server]]
  address = "198.18.1{i}.21"

[bgp]
local_as = 65001
router_id = "198.18.100.{i}"

[[bgp.neighbor]]
address = "{router}"
peer_as = 65000
hold_time = {hold}

[[bgp.announce]]
prefix = "{vip}/32"
virtual_servers = ["web"]
communities = ["65000:100"]
"""


@dataclass
class Director:
    index: int
    ns: Namespace
    state: Path
    daemon: Background
    server: Background
    servers_ns: Namespace

    @property
    def address(self) -> str:
        return f"198.18.100.{self.index}"

    def start_server(self) -> None:
        self.server = self.servers_ns.spawn(*http_server(self.index))


def http_server(i: int) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", f"198.18.1{i}.21", "80"]


def next_hops(router: Namespace) -> set[str]:
    out = router.run("ip", "-j", "route", "show", f"{VIP}/32").stdout
    hops: set[str] = set()
    for route in json.loads(out or "[]"):
        if "gateway" in route:
            hops.add(route["gateway"])
        for hop in route.get("nexthops", []):
            hops.add(hop["gateway"])
    return hops


def until(router: Namespace, test: Callable[[set[str]], bool], within: float) -> float:
    """Seconds until ``test(next hops)`` holds; fails the test after ``within``."""
    start = time.monotonic()
    hops: set[str] = set()
    while time.monotonic() - start < within:
        hops = next_hops(router)
        if test(hops):
            return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"not within {within} s; next hops at the router: {sorted(hops)}")


@pytest.fixture
def lab(topology: Topology, tmp_path: Path) -> Iterator[tuple[Namespace, list[Director]]]:
    router = topology.namespace("router")
    router.bridge("br0")
    router.add_address("br0", f"{ROUTER}/24")
    servers = topology.namespace("servers")
    peers = "".join(
        BIRD_PEER.format(i=i, router=ROUTER, hold=HOLD_TIME) for i in range(1, DIRECTORS + 1)
    )
    conf = tmp_path / "bird.conf"
    conf.write_text(BIRD_CONF.format(router=ROUTER, peers=peers))
    router.spawn("bird", "-f", "-c", str(conf), "-s", str(tmp_path / "bird.ctl"))
    directors = []
    for i in range(1, DIRECTORS + 1):
        ns = topology.namespace(f"d{i}")
        topology.attach(ns, "eth0", router, "br0", addr=f"198.18.100.{i}/24")
        topology.veth(
            ns, "r0", servers, f"s{i}", a_addr=f"198.18.1{i}.1/24", b_addr=f"198.18.1{i}.21/24"
        )
        state = tmp_path / f"d{i}"
        state.mkdir()
        config = state / "director.toml"
        config.write_text(
            DIRECTOR_CONF.format(state=state, vip=VIP, i=i, router=ROUTER, hold=HOLD_TIME)
        )
        server = servers.spawn(*http_server(i))
        daemon = ns.spawn(*director_proc.argv(config, state, nofile=1024))
        directors.append(Director(i, ns, state, daemon, server, servers))
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
