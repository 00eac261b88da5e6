"""Fixtures for the application-object tests: a namespace for the director, a loop in it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.helpers.netns import Namespace, Topology
from tests.helpers.servers import NamespaceLoop

T = TypeVar("T")

SERVICE = """
[daemon]
keep_table_on_stop = {keep}
[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.20"
port = 80
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  weight = {weight}
  [[virtual_server.real_server]]
  address = "198.18.1.22"
"""

VRRP = """
[[vrrp_instance]]
name = "VI_{vrid}"
interface = "d0"
vrid = {vrid}
priority = {priority}
version = 3
advert_interval = 0.1
virtual_addresses = ["198.18.0.{vrid}/24"]
garp_count = 1
garp_repeat_after = 0
"""


@pytest.fixture
def ns(topology: Topology) -> Namespace:
    """The director's namespace: d0 (198.18.0.1/24), a veth to a silent peer namespace."""
    n = topology.namespace("d")
    topology.veth(n, "d0", topology.namespace("peer"), "eth0", a_addr="198.18.0.1/24")
    return n


@pytest.fixture
def inside(ns: Namespace) -> Iterator[NamespaceLoop]:
    with NamespaceLoop(ns) as loop:
        yield loop


def run(inside: NamespaceLoop, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return inside.run(factory(), timeout=60)


def service(weight: int = 1, keep: str = "true") -> str:
    return SERVICE.format(weight=weight, keep=keep)


def vrrp(vrid: int = 51, priority: int = 100) -> str:
    return VRRP.format(vrid=vrid, priority=priority)


def write(tmp: Path, text: str) -> Path:
    path = tmp / "director.toml"
    path.write_text(text)
    return path
