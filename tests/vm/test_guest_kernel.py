"""Smoke tests of the guest itself: the cloud kernel, ipvsadm, and HTTP through an IPVS NAT VIP."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.netns import Topology

pytestmark = pytest.mark.vm

VIP = "198.18.0.10"
# From the client namespace: GET the page through the VIP, print status and body.
GET = """
import sys, time, urllib.request
for attempt in range(3):
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=20) as reply:
            print(reply.status, reply.read().decode())
        break
    except OSError as exc:
        print("retry:", exc, file=sys.stderr)
        time.sleep(1)
else:
    sys.exit(1)
"""
# In the server namespace: succeed once the HTTP server accepts connections.
WAIT_LISTENING = """
import socket, sys, time
deadline = time.monotonic() + 90
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
"""


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout


def test_runs_on_the_cloud_kernel_with_ip_vs_loaded() -> None:
    assert os.environ.get("DIRECTOR_IN_GUEST") == "1"
    assert platform.release().endswith("-cloud-amd64")
    assert Path("/lib/modules", platform.release(), "modules.dep").is_file()
    assert Path("/proc/net/ip_vs").is_file()
    assert "IP Virtual Server version" in Path("/proc/net/ip_vs").read_text()
    loaded = {line.split()[0] for line in Path("/proc/modules").read_text().splitlines()}
    assert {"ip_vs", "ip_vs_rr", "ip_vs_wlc", "ip_vs_mh", "nf_conntrack"} <= loaded


@pytest.fixture
def rr_service() -> Iterator[str]:
    service = f"{VIP}:80"
    assert service not in ipvsadm("-Ln")
    ipvsadm("-A", "-t", service, "-s", "rr")
    try:
        yield service
    finally:
        ipvsadm("-D", "-t", service)


def test_ipvsadm_adds_and_lists_a_service(rr_service: str) -> None:
    lines = [line.split() for line in ipvsadm("-Ln").splitlines()]
    assert ["TCP", rr_service, "rr"] in lines
    ipvsadm("-a", "-t", rr_service, "-r", "198.18.1.2:8080", "-m", "-w", "3")
    assert ["->", "198.18.1.2:8080", "Masq", "3", "0", "0"] in [
        line.split() for line in ipvsadm("-Ln", "-t", rr_service).splitlines()
    ]


def test_http_get_through_an_ipvs_nat_vip(topology: Topology, tmp_path: Path) -> None:
    client, director, server = (topology.namespace(n) for n in ("client", "director", "server"))
    topology.veth(client, "eth0", director, "front", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    topology.veth(director, "back", server, "eth0", a_addr="198.18.1.1/24", b_addr="198.18.1.2/24")
    director.add_address("front", f"{VIP}/32")
    client.add_route("default", "198.18.0.1")
    server.add_route("default", "198.18.1.1")  # replies must go back through the director
    director.sysctl("net.ipv4.ip_forward", "1")
    (tmp_path / "index.txt").write_text("hello from the real server\n")
    www = server.spawn(
        sys.executable, "-m", "http.server", "8080", "--bind", "198.18.1.2",
        "--directory", str(tmp_path),
    )  # fmt: skip
    server.run(sys.executable, "-c", WAIT_LISTENING, "198.18.1.2", "8080")
    url = f"http://{VIP}/index.txt"

    refused = client.run(sys.executable, "-c", GET, url, check=False)
    assert refused.returncode != 0, "nothing should answer on the VIP before IPVS is set up"

    director.run("ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "rr")
    director.run("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", "198.18.1.2:8080", "-m")
    got = client.run(sys.executable, "-c", GET, url)
    assert got.stdout.strip() == "200 hello from the real server", www.output()
    # IPVS, not something else, carried it: its connection table has client -> VIP -> server
    entries = [line.split() for line in director.run("ipvsadm", "-Lnc").stdout.splitlines()]
    ours = [e for e in entries if e[0] == "TCP" and e[-2:] == [f"{VIP}:80", "198.18.1.2:8080"]]
    assert len(ours) == 1, entries
    assert ours[0][-3].startswith("198.18.0.2:")
    assert '"GET /index.txt HTTP/1.1" 200' in www.output()
