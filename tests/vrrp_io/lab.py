"""The VRRP lab: director namespaces on one bridge (multicast snooping off), ARP capture.

switch ns: br0 --portN-- d1 ns eth0 198.18.0.1/24
               --portN-- d2 ns eth0 198.18.0.2/24   (or a keepalived)
               --portN-- obs ns eth0 198.18.0.250/24 (captures gratuitous ARP)
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from tests.helpers.netns import Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from vrrp.addresses import ETH_P_ARP

VIP = IPv4Address("198.18.0.100")
DEV = "eth0"


def lan(topo: Topology, *labels: str) -> list[Namespace]:
    """A bridge and one namespace per label on it, the n-th with 198.18.0.<n+1>/24."""
    switch = topo.namespace("sw")
    switch.bridge("br0")
    switch.ip("link", "set", "dev", "br0", "type", "bridge", "mcast_snooping", "0")
    spaces = []
    for n, label in enumerate(labels):
        ns = topo.namespace(label)
        host = 250 if label == "obs" else n + 1
        topo.attach(ns, DEV, switch, "br0", addr=f"198.18.0.{host}/24")
        spaces.append(ns)
    return spaces


def wait_until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Poll until condition() holds; the seconds it took. AssertionError after ``within``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def has_address(ns: Namespace, address: IPv4Address) -> bool:
    return f"inet {address}/" in ns.ip("-4", "address", "show", "dev", DEV)


def mac_of(ns: Namespace) -> bytes:
    text = ns.ip("-o", "link", "show", "dev", DEV).split("link/ether ")[1].split()[0]
    return bytes.fromhex(text.replace(":", ""))


@dataclass(frozen=True)
class Arp:
    source_mac: bytes  # Ethernet source
    op: int
    sender_mac: bytes
    sender_ip: IPv4Address
    target_ip: IPv4Address


class ArpCapture:
    """An AF_PACKET socket opened inside a namespace; ``take()`` returns what it has seen."""

    def __init__(self, inside: NamespaceLoop) -> None:
        async def opened() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            sock.bind((DEV, ETH_P_ARP))
            sock.setblocking(False)
            return sock

        self.sock = inside.run(opened())

    def take(self) -> list[Arp]:
        seen: list[Arp] = []
        while True:
            try:
                frame = self.sock.recv(2048)
            except BlockingIOError:
                return seen
            if len(frame) < 42:
                continue
            op, sha, spa, _tha, tpa = struct.unpack_from("!6xH6s4s6s4s", frame, 14)
            seen.append(Arp(frame[6:12], op, sha, IPv4Address(spa), IPv4Address(tpa)))

    def close(self) -> None:
        self.sock.close()
