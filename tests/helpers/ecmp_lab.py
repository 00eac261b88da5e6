"""The active-active lab on the real kernel (run it in the QEMU guest: it needs ip_vs):

    client 198.18.200.2 --- router (BIRD 2, merge paths, L4 multipath hash) 198.18.200.1
                                 | br0 198.18.100.254/24 (the LAN)
        +-----------+-----------+-----------+-----------+-----------+
        d1 .1       d2 .2       d3 .3       rs1 .21     rs2 .22     rs3 .23

Each director ``dI`` runs the real ``directord`` (IPVS ``mh`` + ``mh-port``, DR, ``sloppy_tcp``,
TCP checks of the three real servers) with ExaBGP, announcing the VIP 198.18.0.10/32 to the
router; the router installs one ECMP route with every announcing director as a next hop. Each
real server has the VIP on ``lo`` (``arp_ignore``/``arp_announce``), runs the echo server of
``tests.helpers.flows`` on port 80 and answers the client directly through the router (DR).

:func:`build` starts the directors first (in parallel: their start-up is the slow part in the
emulated guest) and everything else while they start. :func:`survival` measures how many of the
client's long-lived flows keep working through an event on one director.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from director.control.client import request
from tests.helpers.bgp_lab import BIRD_CONF, BIRD_PEER, ROUTER, VIP, next_hops, until
from tests.helpers.netns import Background, Namespace, Topology

ROOT = Path(__file__).resolve().parents[2]
PORT = 80
CLIENT = "198.18.200.2"
CLIENT_GW = "198.18.200.1"
REAL_SERVERS = ["198.18.100.21", "198.18.100.22", "198.18.100.23"]

DIRECTOR_CONF = """
[daemon]
state_dir = "{state}"
control_socket = "{state}/control.sock"

[kernel.sysctls]
"net.ipv4.vs.sloppy_tcp" = {sloppy_tcp}
"net.ipv4.vs.schedule_icmp" = 1

[[virtual_server]]
name = "echo"
protocol = "tcp"
address = "{vip}"
port = {port}
scheduler = "{scheduler}"
scheduler_flags = {flags}
forwarding = "dr"
on_failure = "remove"
  [virtual_server.check]
  type = "tcp"
  interval = 1.0
  timeout = 1.0
  fall = 2
  rise = 1
{real_servers}
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
virtual_servers = ["echo"]
quorum = 1
quorum_up = {quorum_up}
"""
REAL_SERVER = '  [[virtual_server.real_server]]\n  address = "{address}"\n'


@dataclass
class Director:
    index: int
    ns: Namespace
    state: Path
    daemon: Background

    @property
    def address(self) -> str:
        return f"198.18.100.{self.index}"

    @property
    def control(self) -> Path:
        return self.state / "control.sock"

    def established(self) -> int:
        """IPVS connections in state ESTABLISHED in this director's namespace."""
        text = self.ns.run("cat", "/proc/net/ip_vs_conn").stdout
        return sum(1 for line in text.splitlines()[1:] if " ESTABLISHED " in line)


@dataclass
class Lab:
    topology: Topology
    work: Path
    router: Namespace
    client: Namespace
    directors: list[Director]
    servers: list[Background] = field(default_factory=list)

    @property
    def everyone(self) -> set[str]:
        return {d.address for d in self.directors}

    def hops(self) -> set[str]:
        return next_hops(self.router)

    def until(self, test: Callable[[set[str]], bool], within: float) -> float:
        return until(self.router, test, within)

    def explain(self) -> str:
        """BIRD's protocols and each director's log tail: what to read when a wait fails."""
        ctl = str(self.work / "bird.ctl")
        parts = [self.router.run("birdc", "-s", ctl, "show", "protocols", check=False).stdout]
        for d in self.directors:
            parts.append(f"== d{d.index}\n" + "\n".join(d.daemon.output().splitlines()[-12:]))
            log = d.state / "bgp" / "exabgp.log"
            if log.exists():
                parts.append("\n".join(log.read_text(errors="replace").splitlines()[-6:]))
        return "\n".join(parts)


def python(*args: str) -> list[str]:
    return ["env", f"PYTHONPATH={ROOT}", sys.executable, *args]


def build(
    topology: Topology,
    work: Path,
    *,
    directors: int = 3,
    hold_time: int = 6,
    scheduler: str = "mh",
    sloppy_tcp: int = 1,
) -> Lab:
    """Wire the lab and start everything; the caller waits for the router's ECMP route.
    ``scheduler`` and ``sloppy_tcp`` other than ``mh`` and 1 are for control measurements."""
    router = topology.namespace("router")
    router.bridge("br0")
    router.add_address("br0", f"{ROUTER}/24")
    for key, value in (
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.fib_multipath_hash_policy", "1"),  # L4: a client's ports spread its flows
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ):
        router.sysctl(key, value)
    ds: list[Director] = []
    for i in range(1, directors + 1):
        ns = topology.namespace(f"d{i}")
        topology.attach(ns, "eth0", router, "br0", addr=f"198.18.100.{i}/24")
        for key in ("all", "eth0"):
            ns.sysctl(f"net.ipv4.conf.{key}.arp_ignore", "1")
            ns.sysctl(f"net.ipv4.conf.{key}.arp_announce", "2")
        state = work / f"d{i}"
        state.mkdir()
        config = state / "director.toml"
        real = "".join(REAL_SERVER.format(address=a) for a in REAL_SERVERS)
        values = {"state": state, "vip": VIP, "port": PORT, "i": i, "router": ROUTER}
        flags = '["mh-port"]' if scheduler == "mh" else "[]"
        values |= {"scheduler": scheduler, "flags": flags, "sloppy_tcp": sloppy_tcp}
        # announced again only with every real server back: a director announcing with some
        # of them has another hash table than the others (a run with quorum_up = 1 reset 5 of
        # 300 flows that the router moved back to it)
        values["quorum_up"] = len(REAL_SERVERS)
        config.write_text(DIRECTOR_CONF.format(**values, hold=hold_time, real_servers=real))
        argv = python("-m", "director.daemon", "--config", str(config), "--log-format", "json")
        ds.append(Director(i, ns, state, ns.spawn(*argv)))
    peers = "".join(
        BIRD_PEER.format(i=i, router=ROUTER, hold=hold_time) for i in range(1, directors + 1)
    )
    conf = work / "bird.conf"
    conf.write_text(BIRD_CONF.format(router=ROUTER, peers=peers))
    router.spawn("bird", "-f", "-c", str(conf), "-s", str(work / "bird.ctl"))
    lab = Lab(topology, work, router, topology.namespace("client"), ds)
    topology.veth(lab.client, "eth0", router, "c0", a_addr=f"{CLIENT}/24", b_addr=f"{CLIENT_GW}/24")
    lab.client.add_route("default", CLIENT_GW)
    for n, address in enumerate(REAL_SERVERS, start=1):
        rs = topology.namespace(f"rs{n}")
        topology.attach(rs, "eth0", router, "br0", addr=f"{address}/24")
        rs.add_address("lo", f"{VIP}/32")
        for key in ("all", "eth0"):
            rs.sysctl(f"net.ipv4.conf.{key}.arp_ignore", "1")
            rs.sysctl(f"net.ipv4.conf.{key}.arp_announce", "2")
            rs.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        rs.add_route("default", ROUTER)
        lab.servers.append(rs.spawn(*python("-m", "tests.helpers.flows", "serve", str(PORT))))
    return lab


class Flows:
    """The client's ``count`` long-lived flows (``tests.helpers.flows client``), each exchanging
    a line every second."""

    def __init__(self, client: Namespace, count: int) -> None:
        argv = python("-m", "tests.helpers.flows", "client", VIP, str(PORT), str(count))
        self.proc = subprocess.Popen(
            client.argv(*argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != f"open {count}":
            self.close()
            raise AssertionError(f"the client did not open its {count} flows: {line!r}")

    def status(self) -> tuple[float, list[tuple[float, str]]]:
        """(now, [(last echo, closed)] per flow), CLOCK_MONOTONIC as time.monotonic()."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("status\n")
        self.proc.stdin.flush()
        data = json.loads(self.proc.stdout.readline())
        return data["now"], [(last, closed) for last, closed in data["flows"]]

    def working(self, since: float) -> tuple[int, int]:
        """(flows with an echo after ``since``, flows closed)."""
        _, flows = self.status()
        return (
            sum(1 for last, closed in flows if not closed and last > since),
            sum(1 for _, closed in flows if closed),
        )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def flows(client: Namespace, count: int) -> Iterator[Flows]:
    f = Flows(client, count)
    try:
        yield f
    finally:
        f.close()


@dataclass(frozen=True)
class Survival:
    event: str
    flows: int  # open just before the event
    kept: int  # with an echo after the route changed (+ one exchange interval)
    reset: int  # closed during the event (RST or EOF)
    withdrawn: float  # seconds from the event to the next hop leaving the router's route
    recovered: float  # seconds from the event until the kept flows all had their echo
    change: str = "withdrawn"  # or "back": the next hop returning to the route

    def line(self) -> str:
        return (
            f"{self.event}: {self.kept}/{self.flows} flows kept ({self.reset} reset), "
            f"{self.change} at the router after {self.withdrawn * 1000:.0f} ms, "
            f"flows answering {self.recovered:.1f} s after the event"
        )


def survival(
    lab: Lab, f: Flows, d: Director, event: str, act: Callable[[], object], *, within: float
) -> Survival:
    """Act on director ``d``, time its withdrawal at the router, then wait (at most ``within``
    seconds) until every flow working before has exchanged a line after the route changed."""
    _, before = f.status()
    alive = sum(1 for _, closed in before if not closed)
    closed_before = len(before) - alive
    start = time.monotonic()
    act()
    withdrawn = lab.until(lambda hops: d.address not in hops, within=within)
    since = start + withdrawn + 1.5  # a line sent after the route changed, echoed
    kept, reset = wait_for(f, alive, closed_before, since, within)
    return Survival(event, alive, kept, reset, withdrawn, time.monotonic() - start)


def wait_for(
    f: Flows, alive: int, closed_before: int, since: float, within: float
) -> tuple[int, int]:
    """Wait until each of ``alive`` flows has an echo after ``since`` or is closed, at most
    ``within`` seconds after ``since``; (flows with that echo, flows closed meanwhile)."""
    while True:
        kept, closed = f.working(since)
        reset = closed - closed_before
        if kept >= alive - reset or time.monotonic() > since + within:
            return kept, reset
        time.sleep(0.5)


EVENTS = ("drain", "unhealthy", "cut", "kill")


def events(lab: Lab, f: Flows, names: tuple[str, ...], *, hold_time: int) -> list[Survival]:
    """In this order, those named: ``drain-director`` on d3 (then ``enable-director``);
    d3's services unhealthy (its checks of every real server fail through a ``prohibit`` route
    to each in its namespace: quorum lost; then the routes removed); d2's link silently cut (no
    FIN, no Cease: the router's hold timer; then restored); SIGKILL of d1's ``directord`` (last:
    not restarted). After each restore, once the router has every next hop again, the flows it
    moved back are counted too."""
    d1, d2, d3 = lab.directors[:3]
    within = hold_time * 3 + 30.0
    results = []

    def back(event: str, act: Callable[[], object]) -> Survival:
        _, before = f.status()
        alive = sum(1 for _, closed in before if not closed)
        closed_before = len(before) - alive
        start = time.monotonic()
        act()
        returned = lab.until(lambda hops: hops == lab.everyone, within=180)
        kept, reset = wait_for(f, alive, closed_before, start + returned + 1.5, within)
        return Survival(event, alive, kept, reset, returned, time.monotonic() - start, "back")

    if "drain" in names:
        act = partial(request, d3.control, "drain-director", {"timeout": 600})
        results.append(survival(lab, f, d3, "drain-director d3", act, within=within))
        results.append(back("enable-director d3", partial(request, d3.control, "enable-director")))
    if "unhealthy" in names:

        def routes(op: str) -> None:
            for address in REAL_SERVERS:
                d3.ns.ip("route", op, "prohibit", f"{address}/32")

        act = partial(routes, "add")
        results.append(survival(lab, f, d3, "checks of d3 failing", act, within=within))
        results.append(back("checks of d3 passing", partial(routes, "del")))
    if "cut" in names:
        act = partial(d2.ns.ip, "link", "set", "eth0", "down")
        results.append(survival(lab, f, d2, "silent link cut d2", act, within=within))
        results.append(back("link of d2 up", partial(d2.ns.ip, "link", "set", "eth0", "up")))
    if "kill" in names:
        act = partial(os.kill, d1.daemon.proc.pid, signal.SIGKILL)
        results.append(survival(lab, f, d1, "SIGKILL directord d1", act, within=within))
    return results
