"""The VRRP lab: director namespaces on one bridge (multicast snooping off), helpers.

switch ns: br0 --portN-- d1 ns eth0 198.18.0.1/24
               --portN-- d2 ns eth0 198.18.0.2/24   (or a keepalived)
               --portN-- obs ns eth0 198.18.0.250/24 (the client: captures, connects)
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from vrrp.packet import IPAddress

VIP = IPv4Address("198.18.0.100")
DEV = "eth0"


def lan(topo: Topology, *labels: str, ipv6: bool = False) -> list[Namespace]:
    """A bridge and one namespace per label on it, the n-th with 198.18.0.<n+1>/24 (and with
    ``ipv6``, 2001:db8::<n+1>/64 and a link-local address usable at once: no DAD)."""
    switch = topo.namespace("sw")
    switch.bridge("br0")
    switch.ip("link", "set", "dev", "br0", "type", "bridge", "mcast_snooping", "0")
    spaces = []
    for n, label in enumerate(labels):
        ns = topo.namespace(label)
        host = 250 if label == "obs" else n + 1
        if ipv6:
            for scope in ("all", "default"):
                ns.sysctl(f"net.ipv6.conf.{scope}.accept_dad", "0")
        topo.attach(ns, DEV, switch, "br0", addr=f"198.18.0.{host}/24")
        if ipv6:
            ns.add_address(DEV, f"2001:db8::{host:x}/64")
        spaces.append(ns)
    return spaces


def link_local(ns: Namespace, dev: str = DEV) -> IPv6Address:
    """The interface's link-local address (waits for it: it appears when the link is up)."""
    found: list[IPv6Address] = []

    def seen() -> bool:
        text = ns.ip("-6", "-o", "address", "show", "dev", dev, "scope", "link")
        found.extend(IPv6Address(w.split("/")[0]) for w in text.split() if w.startswith("fe80:"))
        return bool(found)

    wait_until(seen, 5, f"a link-local address on {dev}")
    return found[0]


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


RESPONDER_PORT = 7000
_RESPONDER = """
import socket, sys
server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind(("::", int(sys.argv[2])))
server.listen(64)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(sys.argv[1].encode())
    conn.close()
"""


def responder(ns: Namespace, name: str) -> Background:
    """A TCP server on every address of ``ns`` (port 7000) that answers with ``name``."""
    job = ns.spawn(sys.executable, "-c", _RESPONDER, name, str(RESPONDER_PORT))
    wait_until(lambda: "listening" in job.output(), 10, f"responder {name}: {job.output()}")
    return job


async def ask(address: IPAddress, within: float = 0.5) -> str:
    """Connect to ``address``:7000 and read the name (run on the client's loop); "" on failure."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(str(address), RESPONDER_PORT)
            try:
                return (await reader.read(64)).decode()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return ""


def answered_by(client: NamespaceLoop, address: IPAddress, name: str, within: float) -> float:
    """Wait until a TCP connect to the VIP from the client is answered by ``name``."""
    last: list[str] = []

    def ok() -> bool:
        last.append(client.run(ask(address), timeout=5))
        return last[-1] == name

    return wait_until(ok, within, f"{address} answered by {name} (last answers {last[-5:]})")
