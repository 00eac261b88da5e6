"""The VRRP lab: director namespaces on one bridge (multicast snooping off), helpers.

switch ns: br0 --portN-- d1 ns eth0 198.18.0.1/24
               --portN-- d2 ns eth0 198.18.0.2/24   (or a keepalived)
               --portN-- obs ns eth0 198.18.0.250/24 (the client: captures, connects)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from ipaddress import IPv4Address

from tests.helpers.netns import Namespace, Topology
from vrrp.packet import IPAddress

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


def has_address(ns: Namespace, address: IPAddress, dev: str = DEV) -> bool:
    family, word = ("-4", "inet") if address.version == 4 else ("-6", "inet6")
    return f"{word} {address}/" in ns.ip(family, "address", "show", "dev", dev)


def mac_of(ns: Namespace, dev: str = DEV) -> bytes:
    text = ns.ip("-o", "link", "show", "dev", dev).split("link/ether ")[1].split()[0]
    return bytes.fromhex(text.replace(":", ""))
