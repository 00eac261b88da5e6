"""A BGP lab in network namespaces: a router namespace running BIRD 2 (``merge paths``: one ECMP
route to the VIP in its kernel table) and directors running the whole daemon on the in-memory
IPVS table (``tests.helpers.director_proc``) with ExaBGP, each checking one real HTTP server of
its own. Used by ``tests/bgp/test_bird.py`` and ``bench/bgp.py``; runs on this machine's kernel
(routing and BGP need no ip_vs).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import director_proc
from tests.helpers.netns import Background, Namespace, Topology

VIP = "198.18.0.10"
ROUTER = "198.18.100.254"

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
metrics_address = "{metrics}"
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
vip_device = "lo"

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
    config: Path
    daemon: Background
    server: Background
    servers_ns: Namespace

    @property
    def address(self) -> str:
        return f"198.18.100.{self.index}"

    def start_daemon(self) -> None:
        self.daemon = self.ns.spawn(*director_argv(self.config, self.state))

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


def build(
    topology: Topology, work: Path, *, directors: int = 3, hold_time: int = 9, metrics: str = ""
) -> tuple[Namespace, list[Director]]:
    """The router (BIRD started) and ``directors`` directors (their server and directord
    started); nothing waited for. ``metrics``: each director's HTTP listener (status page,
    metrics) in its namespace, e.g. ``127.0.0.1:9100``; none by default."""
    router = topology.namespace("router")
    router.bridge("br0")
    router.add_address("br0", f"{ROUTER}/24")
    servers = topology.namespace("servers")
    peers = "".join(
        BIRD_PEER.format(i=i, router=ROUTER, hold=hold_time) for i in range(1, directors + 1)
    )
    conf = work / "bird.conf"
    conf.write_text(BIRD_CONF.format(router=ROUTER, peers=peers))
    router.spawn("bird", "-f", "-c", str(conf), "-s", str(work / "bird.ctl"))
    out = []
    for i in range(1, directors + 1):
        ns = topology.namespace(f"d{i}")
        topology.attach(ns, "eth0", router, "br0", addr=f"198.18.100.{i}/24")
        topology.veth(
            ns, "r0", servers, f"s{i}", a_addr=f"198.18.1{i}.1/24", b_addr=f"198.18.1{i}.21/24"
        )
        state = work / f"d{i}"
        state.mkdir()
        config = state / "director.toml"
        config.write_text(
            DIRECTOR_CONF.format(
                state=state, vip=VIP, i=i, router=ROUTER, hold=hold_time, metrics=metrics
            )
        )
        server = servers.spawn(*http_server(i))
        d = Director(i, ns, state, config, ns.spawn(*director_argv(config, state)), server, servers)
        out.append(d)
    return router, out


def director_argv(config: Path, state: Path) -> list[str]:
    return director_proc.argv(config, state, nofile=1024)


def explain(router: Namespace, directors: list[Director], work: Path) -> str:
    """What to look at when the router has no route: BIRD's protocols, each director's BGP
    log lines and the tail of its ExaBGP log."""
    parts = [
        router.run("birdc", "-s", str(work / "bird.ctl"), "show", "protocols", check=False).stdout
    ]
    for d in directors:
        lines = d.daemon.output().splitlines()
        picked = [ln for ln in lines if "bgp" in ln or "error" in ln.lower()]
        parts.append(f"== d{d.index}\n" + "\n".join([*picked[-15:], "...", *lines[-5:]]))
        log = d.state / "bgp" / "exabgp.log"
        if log.exists():
            parts.append("\n".join(log.read_text(errors="replace").splitlines()[-10:]))
    return "\n".join(parts)
