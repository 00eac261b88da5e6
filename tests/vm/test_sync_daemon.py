"""The IPVS connection-sync daemon on the real kernel, driven by the role.

Two directors in their own namespaces (IPVS is per namespace), joined by a sync link (and, for
``mode = "both"``, each with its own client and real server, both carrying traffic):

client --veth-- dir_a (IPVS NAT, VIP) --veth-- server
                  |  y0 (sync link, 198.18.2.0/24)
                dir_b (the same service; its backup daemon receives dir_a's connections)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from director.config.vrrp import SyncDaemon as Settings
from director.ipvs.kernel import KernelError, SyncDaemon, SyncState
from director.ipvs.netlink import NetlinkIPVS
from director.role import Role
from director.sync_daemon import SyncDaemonFollower
from tests.helpers.ipvsadm import ipvsadm
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop

pytestmark = pytest.mark.vm

PY = sys.executable
SETTINGS = Settings(interface="y0", sync_id=5)


async def _open() -> NetlinkIPVS:
    return NetlinkIPVS()  # on the namespace's thread: the socket belongs to that namespace


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Director:
    def __init__(self, ns: Namespace, inside: NamespaceLoop) -> None:
        self.ns = ns
        self.inside = inside
        self.kernel = inside.run(_open())
        self.follower = SyncDaemonFollower(self.kernel, SETTINGS)

    def role(self, role: Role) -> None:
        self.inside.run(self.follower(role))

    def daemons(self) -> list[SyncDaemon]:
        return self.kernel.sync_daemons()

    def ipvsadm(self, *args: str) -> str:
        return ipvsadm(*args, netns=self.ns.name)

    def close(self) -> None:
        try:
            self.inside.run(self.follower.stop())
        finally:
            self.kernel.close()


@pytest.fixture
def pair() -> Iterator[tuple[Topology, Director, Director]]:
    with Topology() as topo:
        a, b = topo.namespace("dir-a"), topo.namespace("dir-b")
        topo.veth(a, "y0", b, "y0", a_addr="198.18.2.1/24", b_addr="198.18.2.2/24")
        with NamespaceLoop(a) as in_a, NamespaceLoop(b) as in_b:
            da, db = Director(a, in_a), Director(b, in_b)
            try:
                yield topo, da, db
            finally:
                for d in (da, db):
                    d.close()


def test_states_follow_the_role_read_back_two_ways(
    pair: tuple[Topology, Director, Director],
) -> None:
    _, a, _ = pair
    master = SyncDaemon(SyncState.MASTER, "y0", 5)
    backup = SyncDaemon(SyncState.BACKUP, "y0", 5)
    a.role(Role.MASTER)
    assert a.daemons() == [master]
    shown = a.ipvsadm("-L", "--daemon")
    assert "master sync daemon (mcast=y0, syncid=5" in shown
    assert "backup sync daemon" not in shown

    a.role(Role.BACKUP)
    assert a.daemons() == [backup]
    shown = a.ipvsadm("-L", "--daemon")
    assert "backup sync daemon (mcast=y0, syncid=5" in shown
    assert "master sync daemon" not in shown

    a.role(Role.MASTER)
    assert a.daemons() == [master]
    a.role(Role.FAULT)
    assert a.daemons() == []
    assert a.ipvsadm("-L", "--daemon").strip() == ""

    # the kernel's own refusals come back as KernelErrors that say what was being done
    a.kernel.start_sync_daemon(master)
    with pytest.raises(KernelError, match="starting the master sync daemon on y0") as info:
        a.kernel.start_sync_daemon(master)
    assert info.value.errno == 17  # EEXIST
    a.kernel.stop_sync_daemon(SyncState.MASTER)
    with pytest.raises(KernelError, match="stopping the master sync daemon"):
        a.kernel.stop_sync_daemon(SyncState.MASTER)
    with pytest.raises(KernelError, match="starting the backup sync daemon on nosuch0"):
        a.kernel.start_sync_daemon(SyncDaemon(SyncState.BACKUP, "nosuch0", 5))
    assert a.daemons() == []
    # a daemon started by hand on another interface is replaced by the configured one
    a.ipvsadm("--start-daemon", "backup", "--mcast-interface", "lo", "--syncid", "9")
    a.role(Role.BACKUP)
    assert a.daemons() == [backup]


def test_connections_from_the_master_reach_the_backup_table(
    pair: tuple[Topology, Director, Director],
) -> None:
    topo, a, b = pair
    client, server = topo.namespace("client"), topo.namespace("server")
    topo.veth(client, "eth0", a.ns, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    a.ns.add_address("c0", "198.18.0.10/32")
    topo.veth(server, "eth0", a.ns, "s0", a_addr="198.18.1.11/24", b_addr="198.18.1.1/24")
    server.add_route("default", "198.18.1.1")
    a.ns.sysctl("net.ipv4.ip_forward", "1")
    for d in (a, b):
        d.ipvsadm("-A", "-t", "198.18.0.10:7000", "-s", "rr")
        d.ipvsadm("-a", "-t", "198.18.0.10:7000", "-r", "198.18.1.11:7000", "-m")
    srv = server.spawn(PY, "-m", "tests.helpers.longconn", "serve", "198.18.1.11", "7000")
    wait_for("the echo server", lambda: "listening" in srv.output(), 60)

    a.role(Role.MASTER)
    b.role(Role.BACKUP)
    assert "master sync daemon" in a.ipvsadm("-L", "--daemon")
    assert "backup sync daemon" in b.ipvsadm("-L", "--daemon")
    assert "198.18.0.2" not in b.ipvsadm("-Lnc")

    conn = subprocess.Popen(
        client.argv(PY, "-m", "tests.helpers.longconn", "client", "198.18.0.10", "7000"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert conn.stdin is not None and conn.stdout is not None
    try:
        line = conn.stdout.readline()
        assert line.startswith("connected"), line
        port = line.split()[1]
        for word in ("one", "two", "three", "four"):  # past the sync threshold (3 packets)
            conn.stdin.write(word + "\n")
            conn.stdin.flush()
            assert conn.stdout.readline().strip() == word
        entry = f"198.18.0.2:{port}"
        assert entry in a.ipvsadm("-Lnc")

        def synced() -> bool:
            table = b.ipvsadm("-Lnc")
            return any(entry in row and "198.18.1.11:7000" in row for row in table.splitlines())

        took = wait_for("the connection in the backup's table", synced, 30)
        print(f"connection synced to the backup in {took:.2f} s")
        assert "ESTABLISHED" in next(r for r in b.ipvsadm("-Lnc").splitlines() if entry in r)

        # failover: the roles swap, and so do the daemons
        a.role(Role.BACKUP)
        b.role(Role.MASTER)
        assert a.daemons() == [SyncDaemon(SyncState.BACKUP, "y0", 5)]
        assert b.daemons() == [SyncDaemon(SyncState.MASTER, "y0", 5)]
    finally:
        conn.stdin.close()
        conn.wait(timeout=10)
        conn.stdout.close()


SHORT_CONNS = """
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    with socket.create_connection((host, port), timeout=10) as s, s.makefile("rwb") as f:
        f.write(b"x\\n"); f.flush(); assert f.readline() == b"x\\n"
print("done", flush=True)
"""


def _says(proc: Background, word: str) -> bool:
    return word in proc.output()


def _counters(ns: Namespace, dev: str) -> tuple[int, int, int, int]:
    """(tx packets, tx bytes, rx packets, rx bytes) of ns:dev."""
    base = f"/sys/class/net/{dev}/statistics/"
    names = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes")
    out = ns.run("cat", *(base + n for n in names)).stdout.split()
    return (int(out[0]), int(out[1]), int(out[2]), int(out[3]))


def _sync_thread_ticks() -> int:
    """CPU ticks (user + system) of every IPVS sync kernel thread (ipvs-m:*, ipvs-b:*)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split()
        except OSError:
            continue
        if fields[1].startswith(("(ipvs-m:", "(ipvs-b:")):
            total += int(fields[13]) + int(fields[14])
    return total


def test_mode_both_syncs_each_directors_connections_to_the_other(
    pair: tuple[Topology, Director, Director],
) -> None:
    """Active-active: both directors carry traffic and run master and backup daemons at once
    (whatever their role); each one's connections reach the other's table. Then the cost:
    sync packets and bytes per new connection, and the sync threads' CPU."""
    topo, a, b = pair
    for d in (a, b):
        d.follower = SyncDaemonFollower(d.kernel, Settings(interface="y0", sync_id=5, mode="both"))
    c_a, c_b = topo.namespace("client-a"), topo.namespace("client-b")
    s_a, s_b = topo.namespace("server-a"), topo.namespace("server-b")
    topo.veth(c_a, "eth0", a.ns, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    topo.veth(c_b, "eth0", b.ns, "c0", a_addr="198.18.3.2/24", b_addr="198.18.3.1/24")
    topo.veth(s_a, "eth0", a.ns, "s0", a_addr="198.18.1.11/24", b_addr="198.18.1.1/24")
    topo.veth(s_b, "eth0", b.ns, "s0", a_addr="198.18.4.12/24", b_addr="198.18.4.1/24")
    c_b.add_route("198.18.0.0/24", "198.18.3.1")
    s_a.add_route("default", "198.18.1.1")
    s_b.add_route("default", "198.18.4.1")
    # each director: the VIP, both real servers, new connections only to the one it reaches
    for d, mine, other in ((a, "198.18.1.11", "198.18.4.12"), (b, "198.18.4.12", "198.18.1.11")):
        d.ns.add_address("c0", "198.18.0.10/32")
        d.ns.sysctl("net.ipv4.ip_forward", "1")
        d.ipvsadm("-A", "-t", "198.18.0.10:7000", "-s", "rr")
        d.ipvsadm("-a", "-t", "198.18.0.10:7000", "-r", f"{mine}:7000", "-m", "-w", "1")
        d.ipvsadm("-a", "-t", "198.18.0.10:7000", "-r", f"{other}:7000", "-m", "-w", "0")
    servers = [
        ns.spawn(PY, "-m", "tests.helpers.longconn", "serve", addr, "7000")
        for ns, addr in ((s_a, "198.18.1.11"), (s_b, "198.18.4.12"))
    ]
    for srv in servers:
        wait_for("the echo server", partial(_says, srv, "listening"), 60)

    a.role(Role.MASTER)
    b.role(Role.BACKUP)  # the role makes no difference in this mode
    both = [SyncDaemon(SyncState.MASTER, "y0", 5), SyncDaemon(SyncState.BACKUP, "y0", 5)]
    for d in (a, b):
        assert d.daemons() == both
        shown = d.ipvsadm("-L", "--daemon")
        assert "master sync daemon (mcast=y0, syncid=5" in shown, shown
        assert "backup sync daemon (mcast=y0, syncid=5" in shown, shown

    conns: list[subprocess.Popen[str]] = []
    try:
        entries = {}
        for client, d in ((c_a, a), (c_b, b)):
            conn = subprocess.Popen(
                client.argv(PY, "-m", "tests.helpers.longconn", "client", "198.18.0.10", "7000"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            conns.append(conn)
            assert conn.stdin is not None and conn.stdout is not None
            line = conn.stdout.readline()
            assert line.startswith("connected"), line
            for word in ("one", "two", "three", "four"):  # past the sync threshold
                conn.stdin.write(word + "\n")
                conn.stdin.flush()
                assert conn.stdout.readline().strip() == word
            entries[d.ns.name] = f"{'198.18.0.2' if d is a else '198.18.3.2'}:{line.split()[1]}"
            assert entries[d.ns.name] in d.ipvsadm("-Lnc")

        def synced(to: Director, entry: str, server: str) -> Callable[[], bool]:
            def check() -> bool:
                rows = to.ipvsadm("-Lnc").splitlines()
                return any(entry in r and server in r and "ESTABLISHED" in r for r in rows)

            return check

        took_ab = wait_for("a's connection in b", synced(b, entries[a.ns.name], "198.18.1.11"))
        took_ba = wait_for("b's connection in a", synced(a, entries[b.ns.name], "198.18.4.12"))
        print(f"mode both: a -> b in {took_ab:.2f} s, b -> a in {took_ba:.2f} s")

        # the cost: N short connections through a; what its sync sends, what b receives
        n = 100
        time.sleep(3)  # let pending sync buffers go out (the kernel flushes every 2 s)
        before_a, before_b, ticks = (
            _counters(a.ns, "y0"),
            _counters(b.ns, "y0"),
            _sync_thread_ticks(),
        )
        rows_before = b.ipvsadm("-Lnc").count("198.18.0.2:")
        start = time.monotonic()
        c_a.run(PY, "-c", SHORT_CONNS, "198.18.0.10", "7000", str(n), timeout=300)
        elapsed = time.monotonic() - start
        time.sleep(3)
        after_a, after_b, ticks_after = (
            _counters(a.ns, "y0"),
            _counters(b.ns, "y0"),
            _sync_thread_ticks(),
        )
        tx_packets, tx_bytes = after_a[0] - before_a[0], after_a[1] - before_a[1]
        rx_packets = after_b[2] - before_b[2]
        in_b = b.ipvsadm("-Lnc").count("198.18.0.2:") - rows_before
        cpu_ms = (ticks_after - ticks) * 1000 / os.sysconf("SC_CLK_TCK")
        print(
            f"sync cost, {n} new connections through a in {elapsed:.1f} s: "
            f"{tx_packets} sync packets ({tx_packets / n:.2f}/connection), "
            f"{tx_bytes} bytes ({tx_bytes / n:.0f}/connection) sent by a, {rx_packets} received "
            f"by b; {in_b} connection entries created in b; sync threads' CPU "
            f"{cpu_ms:.0f} ms ({cpu_ms / n:.2f} ms/connection, both directors, emulated guest)"
        )
        assert 0 < tx_packets < n, "the sync messages batch several connections"
        assert rx_packets >= tx_packets
        assert in_b > 0, "a's new connections reach b's table"
    finally:
        for conn in conns:
            assert conn.stdin is not None and conn.stdout is not None
            conn.stdin.close()
            conn.wait(timeout=10)
            conn.stdout.close()
