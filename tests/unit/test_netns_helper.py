"""tests/helpers/netns.py on this machine: namespaces, veth, bridge, range check, cleanup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.netns import (
    AddressRangeError,
    Namespace,
    Topology,
    check_address,
    namespaces,
    remove_stale,
)

pytestmark = pytest.mark.netns

# Accept one TCP connection on the given address and port, answer "pong <what was sent>".
SERVER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.socket(family)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen()
print("listening", flush=True)
conn, _ = srv.accept()
conn.sendall(b"pong " + conn.recv(100))
conn.close()
"""
CLIENT = """
import socket, sys, time
for attempt in range(100):
    try:
        conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        break
    except ConnectionRefusedError:
        time.sleep(0.1)
conn.sendall(sys.argv[3].encode())
print(conn.recv(100).decode())
"""


def tcp_roundtrip(client: Namespace, server: Namespace, address: str, message: str) -> str:
    job = server.spawn(sys.executable, "-c", SERVER, address, "7000")
    done = client.run(sys.executable, "-c", CLIENT, address, "7000", message, timeout=60)
    assert job.proc.wait(timeout=30) == 0, job.output()
    return done.stdout.strip()


@pytest.mark.parametrize(
    "address", ["198.18.0.1", "198.19.255.254/24", "198.18.0.0/15", "2001:db8::1/64", "2001:db8::"]
)
def test_allowed_ranges_pass(address: str) -> None:
    assert str(check_address(address)).split("/")[0] == address.split("/")[0]


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1/24", "192.168.1.1", "127.0.0.1", "198.20.0.1", "198.18.0.1/14", "2001:db9::1",
     "2001:db8::1/31", "fe80::1", "8.8.8.8"],
)  # fmt: skip
def test_other_ranges_raise(address: str) -> None:
    with pytest.raises(AddressRangeError):
        check_address(address)


def test_tcp_and_ping_across_a_veth_pair_then_everything_is_gone(topology: Topology) -> None:
    a, b = topology.namespace("a"), topology.namespace("b")
    topology.veth(a, "eth0", b, "eth0", a_addr="198.18.0.1/24", b_addr="198.18.0.2/24")
    b.add_address("eth0", "2001:db8::2/64")
    a.add_address("eth0", "2001:db8::1/64")
    assert tcp_roundtrip(a, b, "198.18.0.2", "v4") == "pong v4"
    assert tcp_roundtrip(b, a, "2001:db8::1", "v6") == "pong v6"
    a.run("busybox", "ping", "-c", "1", "-W", "5", "198.18.0.2")
    # a namespace really is isolated: b's address is not reachable from a fresh one
    lonely = topology.namespace("lonely")
    assert lonely.run("busybox", "ping", "-c", "1", "-W", "1", "198.18.0.2", check=False).returncode
    sleeper = b.spawn("sleep", "600")
    names = [ns.name for ns in topology.namespaces]
    assert set(names) <= set(namespaces())
    topology.close()
    assert not set(names) & set(namespaces())
    assert sleeper.proc.poll() is not None


def test_namespaces_are_removed_when_the_test_body_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"), Topology() as topo:  # noqa: PT012
        name = topo.namespace("doomed").name
        orphan = topo.namespace("doomed2").spawn("sleep", "600")
        assert name in namespaces()
        raise RuntimeError("boom")
    assert name not in namespaces()
    assert orphan.proc.poll() is not None


def test_bad_addresses_raise_before_anything_is_created(topology: Topology) -> None:
    a, b = topology.namespace("a"), topology.namespace("b")
    with pytest.raises(AddressRangeError):
        topology.veth(a, "eth0", b, "eth0", a_addr="198.18.0.1/24", b_addr="10.0.0.2/24")
    assert "eth0" not in a.ip("-o", "link")
    topology.veth(a, "eth0", b, "eth0")
    with pytest.raises(AddressRangeError):
        a.add_address("eth0", "192.168.0.1/24")
    with pytest.raises(AddressRangeError):
        a.add_route("default", "10.0.0.1")
    assert "inet " not in a.ip("-4", "-o", "address", "show", "dev", "eth0")


def test_a_bridge_joins_three_namespaces(topology: Topology) -> None:
    switch = topology.namespace("switch")
    switch.bridge("br0")
    hosts = [topology.namespace(f"h{i}") for i in range(3)]
    for i, host in enumerate(hosts):
        topology.attach(host, "eth0", switch, "br0", addr=f"198.18.5.{i + 1}/24")
    assert tcp_roundtrip(hosts[0], hosts[2], "198.18.5.3", "via bridge") == "pong via bridge"
    assert len(switch.ip("-o", "link", "show", "master", "br0").splitlines()) == 3


def test_routing_through_a_middle_namespace(topology: Topology) -> None:
    left, mid, right = (topology.namespace(n) for n in ("left", "mid", "right"))
    topology.veth(left, "eth0", mid, "l", a_addr="198.18.1.2/24", b_addr="198.18.1.1/24")
    topology.veth(mid, "r", right, "eth0", a_addr="198.18.2.1/24", b_addr="198.18.2.2/24")
    left.add_route("default", "198.18.1.1")
    right.add_route("198.18.1.0/24", "198.18.2.1")
    # a new namespace may inherit forwarding from the host's (devconf_inherit_init_net): set it
    mid.sysctl("net.ipv4.ip_forward", "0")
    blocked = left.run("busybox", "ping", "-c", "1", "-W", "1", "198.18.2.2", check=False)
    assert blocked.returncode != 0
    mid.sysctl("net.ipv4.ip_forward", "1")
    assert mid.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert tcp_roundtrip(left, right, "198.18.2.2", "routed") == "pong routed"


def test_remove_stale_deletes_namespaces_of_dead_processes() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"dt-{dead.pid}-0-stale"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in remove_stale()
        assert name not in namespaces()
    finally:
        if name in namespaces():
            subprocess.run(["ip", "netns", "delete", name], check=True)
