"""The peer config check between two live directors, in network namespaces.

Two ``directord`` processes (``tests.helpers.director_proc``: the whole daemon on the in-memory
IPVS table) on either end of a veth, each the other's VRRP and ``[peer_check]`` peer, with the
same services but their own priority, interface name, paths and key_file path (the same key):
they agree. A real server's weight changed on one is reported on both (status, metric, log line)
within 10 s, and ``directorctl diff-peer`` says what differs on each side; a host-local change
(priority, preempt, logging) never raises it and does not move the generation. The endpoint
refuses a caller without the key, with another key, a replayed request and a stale one, and
counts them; directors whose keys differ see each other as unauthenticated.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from director.app import Director, StartError
from director.config import load_config, parse_config
from director.control.client import request
from director.intents import Intents, Reload, ReloadRejected
from director.metrics import Metrics
from director.peer import auth
from director.peer.service import PeerCheck
from tests.app.conftest import run, write
from tests.app.test_process import json_lines, wait_for
from tests.helpers import director_proc
from tests.helpers.director import free_port, running, world_in
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop

pytestmark = pytest.mark.netns
KEY = b"c2hhcmVkIGtleSBvZiB0aGUgcGFpciwgMzIgYnl0ZXM="
DIRECTORCTL = str(Path(sys.executable).parent / "directorctl")
PORT = 9470

CONFIG = """
[daemon]
state_dir = "{state}"
control_socket = "{sock}"
metrics_address = "127.0.0.1:{metrics}"
log_format = "json"
log_level = "{log_level}"

[peer_check]
listen_address = "{me}:{port}"
peers = ["{peer}:{port}"]
key_file = "{key}"

[[vrrp_instance]]
name = "VI_1"
interface = "{iface}"
vrid = 51
priority = {priority}
preempt = {preempt}
version = 3
advert_interval = 0.1
virtual_addresses = ["198.18.0.51/24"]
garp_count = 1
garp_repeat_after = 0

[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.51"
port = 80
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  weight = {weight}
  [[virtual_server.real_server]]
  address = "198.18.1.22"
"""


@dataclass
class Node:
    name: str
    ns: Namespace
    address: str
    peer: str
    iface: str
    dir: Path
    metrics: int
    settings: dict[str, object]
    proc: Background | None = None

    @property
    def sock(self) -> Path:
        return self.dir / "control.sock"

    @property
    def config(self) -> Path:
        return self.dir / "director.toml"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{PORT}"

    @property
    def peer_endpoint(self) -> str:
        return f"{self.peer}:{PORT}"

    def write(self, **changes: object) -> None:
        self.settings.update(changes)
        self.config.write_text(
            CONFIG.format(
                state=self.dir / "state",
                sock=self.sock,
                metrics=self.metrics,
                me=self.address,
                peer=self.peer,
                port=PORT,
                iface=self.iface,
                key=self.dir / "peer.key",
                **self.settings,
            )
        )

    def start(self) -> None:
        self.proc = self.ns.spawn(*director_proc.argv(self.config, self.dir / "state", nofile=1024))

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = request(self.sock, "status", wait=5)
        return result

    def peer_view(self) -> dict[str, Any]:
        peers: list[dict[str, Any]] = self.status()["peer_check"]["peers"]
        return peers[0] if peers else {"state": "not started"}

    def reload(self) -> None:
        request(self.sock, "reload", wait=20)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ns.run(DIRECTORCTL, "--socket", str(self.sock), *args, check=False)

    def metric(self, name: str, labels: str = "") -> float | None:
        text = self.ns.run(
            "curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{self.metrics}/metrics"
        ).stdout
        for line in text.splitlines():
            if line.startswith(name + labels + " ") or (not labels and line.startswith(name + "{")):
                return float(line.rsplit(" ", 1)[1])
        return None

    def events(self, event: str) -> list[dict[str, Any]]:
        assert self.proc is not None
        return [line for line in json_lines(self.proc.output()) if line["event"] == event]


def write_key(path: Path, key: bytes) -> None:
    path.write_bytes(key + b"\n")
    os.chmod(path, 0o600)


@pytest.fixture
def pair(tmp_path: Path, topology: Topology) -> Iterator[tuple[Node, Node]]:
    ns1, ns2 = topology.namespace("d1"), topology.namespace("d2")
    # host-local differences from the start: the interface's name, priority, paths
    topology.veth(ns1, "p0", ns2, "q0", a_addr="198.18.0.1/24", b_addr="198.18.0.2/24")
    nodes = []
    for name, ns, me, peer, iface, priority in (
        ("d1", ns1, "198.18.0.1", "198.18.0.2", "p0", 150),
        ("d2", ns2, "198.18.0.2", "198.18.0.1", "q0", 100),
    ):
        directory = tmp_path / name
        directory.mkdir()
        write_key(directory / "peer.key", KEY)
        settings: dict[str, object] = {
            "priority": priority, "preempt": "true", "weight": 1, "log_level": "info"
        }  # fmt: skip
        node = Node(name, ns, me, peer, iface, directory, free_port(), settings)
        node.write()
        nodes.append(node)
    for node in nodes:
        node.start()
    try:
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            if node.proc is not None:
                node.proc.stop(timeout=15)


def states(*nodes: Node) -> list[str]:
    return [n.peer_view()["state"] for n in nodes]


def test_two_directors_agree_a_changed_real_server_is_reported_on_both_within_10_s(
    pair: tuple[Node, Node],
) -> None:
    d1, d2 = pair
    started = time.monotonic()
    wait_for("both agree", lambda: states(d1, d2) == ["match", "match"], within=20)
    agreed = time.monotonic() - started
    generation = d1.status()["peer_check"]["generation"]
    assert d1.status()["peer_check"]["digest"] == d2.status()["peer_check"]["digest"]
    assert d1.metric("director_peer_config_match", '{peer="198.18.0.2:9470"}') == 1.0
    assert d1.metric("director_config_generation") == generation

    # A real server's weight changes on d2 only.
    d2.write(weight=3)
    d2.reload()
    changed = time.monotonic()
    seen: dict[str, float] = {}

    def both_see_it() -> bool:
        for node in (d1, d2):
            if node.name not in seen and node.peer_view()["state"] == "mismatch":
                seen[node.name] = time.monotonic() - changed
        return len(seen) == 2

    wait_for("the mismatch on both", both_see_it, within=10)
    print(
        f"\nagreed {agreed:.2f} s after start; mismatch reported on d2 (reloaded) after "
        f"{seen['d2']:.2f} s, on d1 after {seen['d1']:.2f} s"
    )
    assert max(seen.values()) < 10
    service = "virtual_service TCP 198.18.0.51:80"
    wait_for("what differs", lambda: d1.peer_view()["differs"] == [service], within=5)
    assert d2.peer_view()["differs"] == [service]
    assert d2.status()["peer_check"]["generation"] == generation + 1
    assert d1.metric("director_peer_config_match", '{peer="198.18.0.2:9470"}') == 0.0
    # the log line, on both, says what and what to do
    for node in (d1, d2):
        [line] = wait_for("the log line", partial(node.events, "peer_config_mismatch"))
        assert line["problem"] == (
            f"config differs from peer {node.peer_endpoint}: {service}; "
            f"run directorctl diff-peer {node.peer_endpoint}"
        )
        assert line["level"] == "warning"
    # directorctl status: a banner
    status = d1.ctl("status")
    assert status.returncode == 0, status.stderr
    assert "PEER:     CONFIG DIFFERS from 198.18.0.2:9470" in status.stdout
    # directorctl diff-peer, from either side
    diff = d1.ctl("diff-peer")
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert diff.stdout.splitlines()[1:] == [
        f"  {service}: real_server 198.18.1.21:80: weight: here 1, peer 3"
    ]
    diff = d2.ctl("diff-peer", "198.18.0.1:9470")
    assert diff.returncode == 1
    assert f"{service}: real_server 198.18.1.21:80: weight: here 3, peer 1" in diff.stdout
    assert json.loads(d2.ctl("diff-peer", "--json").stdout)["peers"][0]["state"] == "mismatch"
    unknown = d2.ctl("diff-peer", "198.18.0.9:9470")
    assert unknown.returncode == 2 and "not a configured peer" in unknown.stderr

    # Put back: they agree again; diff-peer says so (exit 0).
    d2.write(weight=1)
    d2.reload()
    wait_for("agree again", lambda: states(d1, d2) == ["match", "match"], within=10)
    same = d1.ctl("diff-peer")
    assert same.returncode == 0 and "same shared config" in same.stdout, same.stdout
    generation_d1 = d1.status()["peer_check"]["generation"]

    # Host-local changes on d1 (priority, preempt, log level): never a mismatch, and the
    # generation does not move.
    d1.write(priority=120, preempt="false", log_level="debug")
    d1.reload()
    deadline = time.monotonic() + 4  # more than one poll interval (3 s) of each
    while time.monotonic() < deadline:
        assert states(d1, d2) == ["match", "match"]
        time.sleep(0.2)
    assert d1.status()["peer_check"]["generation"] == generation_d1
    assert (
        len(d1.events("peer_config_mismatch")) == 1 and len(d2.events("peer_config_mismatch")) == 1
    )

    # The generation is kept across a restart (state_dir).
    assert d2.proc is not None
    d2.proc.stop(timeout=15)
    before = d2.dir / "state" / "config-generation.json"
    kept = json.loads(before.read_text())["generation"]
    d2.start()
    wait_for("d2 back and agreeing", lambda: states(d2) == ["match"], within=20)
    assert d2.status()["peer_check"]["generation"] == kept


def curl(ns: Namespace, url: str, *headers: str) -> tuple[int, str]:
    """POST ``BODY`` to url with these headers: (status, body)."""
    argv = ["curl", "-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", url]
    argv += ["-X", "POST", "--data-binary", BODY.decode(), "-H", "Content-Type: application/json"]
    for header in headers:
        argv += ["-H", header]
    out = ns.run(*argv, check=False).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


BODY = b'{"from": "198.18.0.9:9470"}'


def signed_headers(key: bytes, path: str, now: float | None = None) -> list[str]:
    when = time.time() if now is None else now
    signed = auth.sign_request(auth.auth_key(key), "POST", path, BODY, when, os.urandom(16))
    return [f"{name}: {value}" for name, value in signed.items()]


def test_the_endpoint_refuses_callers_without_the_key_and_replays(
    pair: tuple[Node, Node], topology: Topology
) -> None:
    d1, d2 = pair
    wait_for("both agree", lambda: states(d1, d2) == ["match", "match"], within=20)
    # Another machine on the directors' segment (a bridge would do; here d1's namespace's
    # process is the caller, which is what a local attacker on d1 could do too).
    url = f"http://{d2.endpoint}/peer/v1/digest"
    digest = d2.status()["peer_check"]["digest"]
    for code, body in (
        curl(d1.ns, url),  # no signature
        curl(d1.ns, url, *signed_headers(b"the wrong key, but 32 bytes long.", "/peer/v1/digest")),
        curl(
            d1.ns,
            f"http://{d2.endpoint}/peer/v1/canonical",
            *signed_headers(KEY, "/peer/v1/digest"),
        ),
    ):
        assert (code, body) == (401, "authentication required")
        assert digest not in body
    good = signed_headers(KEY, "/peer/v1/digest")
    code, body = curl(d1.ns, url, *good)
    assert code == 200 and json.loads(body)["digest"] == digest
    assert curl(d1.ns, url, *good) == (403, "request replayed (nonce already used)")
    code, body = curl(d1.ns, url, *signed_headers(KEY, "/peer/v1/digest", time.time() - 120))
    assert code == 403 and "synchronise the clocks" in body
    refused = {
        reason: d2.metric("director_peer_requests_refused_total", f'{{reason="{reason}"}}')
        for reason in ("missing", "bad_signature", "replayed", "clock_skew")
    }
    assert refused == {"missing": 1.0, "bad_signature": 2.0, "replayed": 1.0, "clock_skew": 1.0}
    assert states(d1, d2) == ["match", "match"]  # the pair itself was never refused

    # d1 gets another key: each side now sees the other as unauthenticated, nothing else.
    write_key(d1.dir / "peer.key", b"another key of the pair, 32 bytes")
    d1.reload()
    wait_for(
        "unauthenticated both ways",
        lambda: states(d1, d2) == ["unauthenticated", "unauthenticated"],
        within=10,
    )
    assert "key_file must hold the same key" in d1.peer_view()["detail"]
    assert d1.metric("director_peer_config_match") is None  # not a mismatch: unknown
    assert (
        d1.metric("director_peer_check_state", '{peer="198.18.0.2:9470",state="unauthenticated"}')
        == 1.0
    )
    assert d2.events("peer_unauthenticated") and d1.events("peer_unauthenticated")
    diff = d1.ctl("diff-peer")
    assert diff.returncode == 2 and "UNAUTHENTICATED" in diff.stdout
    # a key file others may read is refused by the reload, which changes nothing
    os.chmod(d1.dir / "peer.key", 0o644)
    rejected = d1.ctl("reload")
    assert rejected.returncode == 1 and "chmod 600" in rejected.stderr


# -- in one process: the start step, a listener that cannot bind, a refused reload --------------

IN_PROCESS = """
[peer_check]
listen_address = "{listen}:9470"
peers = ["198.18.0.2:9470"]
key_file = "{key}"
interval = 0.5
timeout = 0.4

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  weight = {weight}
"""


def test_a_key_file_gone_at_start_fails_that_step_and_leaves_nothing(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    key = tmp_path / "peer.key"
    write_key(key, KEY)
    path = write(tmp_path, IN_PROCESS.format(listen="198.18.0.1", key=key, weight=1))
    config = load_config(path)
    key.unlink()  # between the check of the file and the start
    world = world_in(tmp_path, path)

    async def scenario() -> tuple[str, list[str]]:
        before = {t.get_name() for t in asyncio.all_tasks()}
        director = Director(config, world, Intents())
        with pytest.raises(StartError) as failed:
            await director.start()
        await asyncio.sleep(0.05)
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name() not in before]
        me = asyncio.current_task()
        return str(failed.value), [n for n in left if me is None or n != me.get_name()]

    message, left = run(inside, scenario)
    assert message.startswith("starting the peer config check: no such file")
    assert left == []
    assert world.control_socket is not None and not world.control_socket.exists()


def test_a_listener_that_cannot_bind_is_logged_and_a_bad_key_reload_changes_nothing(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    key = tmp_path / "peer.key"
    write_key(key, KEY)
    # 198.18.0.9 is on no interface: the endpoint cannot listen; the director runs on.
    path = write(tmp_path, IN_PROCESS.format(listen="198.18.0.9", key=key, weight=1))
    world = world_in(tmp_path, path)

    async def scenario() -> tuple[dict[str, Any], str, dict[str, Any], dict[str, Any]]:
        async with running(world) as r:
            director = r.director
            deadline = asyncio.get_running_loop().time() + 5
            while director.peer.summary()["peers"][0]["state"] == "unknown":  # type: ignore[index]
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            first = director.peer.summary()
            os.chmod(key, 0o644)
            with pytest.raises(ReloadRejected) as refused:
                await director.ask(Reload("test"))
            after_refusal = director.peer.summary()
            os.chmod(key, 0o600)
            path.write_text(IN_PROCESS.format(listen="198.18.0.9", key=key, weight=2))
            await director.ask(Reload("test"))
            return first, str(refused.value), after_refusal, director.peer.summary()

    first, refused, after_refusal, changed = run(inside, scenario)
    assert first["peers"][0]["state"] == "unreachable"  # nobody at 198.18.0.2
    assert first["peers"][0]["detail"] == "no answer within 0.4 s"  # nobody answers ARP
    assert first["generation"] == 1
    assert "peer_check.key_file" in refused and "chmod 600" in refused
    assert after_refusal["digest"] == first["digest"] and after_refusal["generation"] == 1
    assert changed["generation"] == 2 and changed["digest"] != first["digest"]
    stored = json.loads((tmp_path / "state" / "config-generation.json").read_text())
    assert stored == {"digest": changed["digest"], "generation": 2}


def big_config(key: Path, me: str, peer: str, changed_weight: int = 1) -> str:
    """1,000 services x 10 real servers, each with an https check (with basic auth)."""
    parts = [
        f'[peer_check]\nlisten_address = "{me}:9470"\npeers = ["{peer}:9470"]\n'
        f'key_file = "{key}"\ninterval = 1\ntimeout = 0.5\n'
    ]
    for i in range(1000):
        vip = f"198.18.{2 + i // 250}.{i % 250 + 1}"
        parts.append(
            f'[[virtual_server]]\nprotocol = "tcp"\naddress = "{vip}"\n'
            'port = 443\n[virtual_server.check]\ntype = "https"\npath = "/health"\n'
            'username = "probe"\npassword = "secret"\n'
        )
        for j in range(10):
            weight = changed_weight if (i, j) == (999, 9) else 1
            rip = f"198.19.{i // 25}.{(i % 25) * 10 + j + 1}"
            parts.append(
                f'[[virtual_server.real_server]]\naddress = "{rip}"\n'
                f"port = 443\nweight = {weight}\n"
            )
    return "\n".join(parts)


def test_a_big_config_one_weight_apart_is_found_and_shown(
    tmp_path: Path, ns: Namespace, inside: NamespaceLoop
) -> None:
    """1,000 x 10 with checks: the canonical form is ~8 MB; one weight apart is found by both
    sides, and diff-peer names it, within seconds. The form is built, encoded, hashed, parsed
    and compared in worker threads, a top-level entry at a time; the longest pause of the
    event loop is printed (it depends on the machine's load: not a pass/fail figure)."""
    ns.add_address("d0", "198.18.0.3/24")
    key = tmp_path / "peer.key"
    write_key(key, KEY)
    configs = [
        parse_config(big_config(key, "198.18.0.1", "198.18.0.3")),
        parse_config(big_config(key, "198.18.0.3", "198.18.0.1", changed_weight=5)),
    ]
    service = "virtual_service TCP 198.18.5.250:443"

    async def scenario() -> tuple[float, float, list[str], float]:
        loop = asyncio.get_running_loop()
        checks = [PeerCheck(Metrics(), tmp_path / f"state{i}") for i in range(2)]
        stalls: list[float] = []

        async def watch() -> None:  # the event loop's longest pause while this runs
            while True:
                before = loop.time()
                await asyncio.sleep(0.01)
                stalls.append(loop.time() - before - 0.01)

        watcher = loop.create_task(watch())
        try:
            started = loop.time()
            for check, config in zip(checks, configs, strict=True):
                await check.apply(config, KEY)
            applied = loop.time() - started
            while not all(
                c.summary()["peers"][0]["differs"] == [service]  # type: ignore[index]
                for c in checks
            ):
                assert loop.time() - started < 30, [c.summary() for c in checks]
                await asyncio.sleep(0.05)
            found = loop.time() - started - applied
            result = await checks[0].diff_peer(None)
            peers = result["peers"]
            assert isinstance(peers, list)
            return applied, found, peers[0]["differences"], max(stalls)
        finally:
            watcher.cancel()
            for check in checks:
                await check.stop()

    applied, found, differences, stall = run(inside, scenario)
    assert differences == [f"{service}: real_server 198.19.39.250:443: weight: here 1, peer 5"]
    print(
        f"\n1,000 x 10: both configs taken in {applied:.2f} s; the difference named on both "
        f"{found:.2f} s later; longest event-loop pause {stall * 1000:.0f} ms"
    )
