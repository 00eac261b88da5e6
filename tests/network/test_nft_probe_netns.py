"""director.network.nft.table_exists: the kernel's answer on netfilter netlink is nft's (``nft
list table`` succeeds exactly when it says True), and the daemon's Nft skips the listing of a
table the kernel says is absent - in a network namespace, on this machine's kernel."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.netns import Topology

pytestmark = pytest.mark.netns

PY = sys.executable
TABLES = [("inet", "director"), ("ip", "probe"), ("ip6", "director"), ("inet", "d-2")]
ASKED = [
    (family, name)
    for family in ("inet", "ip", "ip6", "arp", "bridge", "netdev")
    for name in ("director", "probe", "d-2", "Director", "direct", "x" * 200)
]

# In the namespace: table_exists for each (family, name) of argv[1] (JSON), as a JSON list.
EXISTS = """
import json, sys
from director.network.nft import table_exists
print(json.dumps([table_exists(name, family) for family, name in json.loads(sys.argv[1])]))
"""

# In the namespace: the daemon's Nft (the default command line) lists inet director: whether
# it got a listing, and how many nft processes it ran; and the same with another command line.
LIST = """
import asyncio, json
from director.network.nft import Nft
default, other = Nft(), Nft(("env", "nft"))
found = asyncio.run(default.list_table("director"))
found_other = asyncio.run(other.list_table("director"))
print(json.dumps([found is not None, default.runs, found_other is not None, other.runs]))
"""


def test_the_kernel_says_what_nft_says(topology: Topology) -> None:
    ns = topology.namespace("d")
    for created in range(len(TABLES) + 1):
        if created:
            family, name = TABLES[created - 1]
            ns.run("nft", "add", "table", family, name)
        said = json.loads(ns.run(PY, "-c", EXISTS, json.dumps(ASKED)).stdout)
        for (family, name), exists in zip(ASKED, said, strict=True):
            listed = ns.run("nft", "list", "table", family, name, check=False).returncode == 0
            assert exists is listed, (family, name, exists, listed)
    assert json.loads(ns.run(PY, "-c", EXISTS, '[["nosuch", "director"]]').stdout) == [None]


def test_an_absent_table_is_not_listed_by_nft(topology: Topology) -> None:
    ns = topology.namespace("d")
    # absent: the default Nft runs no nft, the other command line does (and finds none)
    assert json.loads(ns.run(PY, "-c", LIST).stdout) == [False, 0, False, 1]
    ns.run("nft", "add", "table", "inet", "director")
    assert json.loads(ns.run(PY, "-c", LIST).stdout) == [True, 1, True, 1]
