"""The IPVS connection-sync daemon on the real kernel, driven by the role.

Two directors in their own namespaces (IPVS is per namespace), joined by a sync link:

client --veth-- dir_a (IPVS NAT, VIP) --veth-- server
                  |  y0 (sync link, 198.18.2.0/24)
                dir_b (the same service; its backup daemon receives dir_a's connections)
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from director.config.vrrp import SyncDaemon as Settings
from director.ipvs.kernel import KernelError, SyncDaemon, SyncState
from director.ipvs.netlink import NetlinkIPVS
from director.role import Role
from director.sync_daemon import SyncDaemonFollower
from tests.helpers.ipvsadm import ipvsadm
from tests.helpers.netns import Namespace, Topology
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
