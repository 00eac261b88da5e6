"""The daemon as a process, in network namespaces: the real ``directord`` for a VRRP-only
director (no ip_vs needed), and ``tests.helpers.director_proc`` (the same daemon on the
in-memory IPVS table) where real servers are checked. What an operator and an attacker on the
same machine see: the JSON log, the control socket, the metrics port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from director.control.client import request
from director.control.protocol import ControlError
from tests.helpers import director_proc
from tests.helpers.director import free_port
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import enter_namespace

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[2]
DIRECTORD = str(Path(sys.executable).parent / "directord")


def wait_for(what: str, check: Callable[[], Any], within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (ControlError, OSError, KeyError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {within} s (last: {last!r})")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of the daemon's output as JSON: a line that is not fails the test."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
    return out


@pytest.fixture
def director_ns(topology: Topology) -> Namespace:
    ns = topology.namespace("d")
    topology.veth(ns, "d0", topology.namespace("peer"), "eth0", a_addr="198.18.0.1/24")
    return ns


VRRP_ONLY = """
[daemon]
state_dir = "{state}"
control_socket = "{sock}"
metrics_address = "127.0.0.1:{port}"
log_format = "json"

[[vrrp_instance]]
name = "VI_1"
interface = "d0"
vrid = 51
priority = 200
version = 3
advert_interval = 0.1
virtual_addresses = ["198.18.0.51/24"]
garp_count = 1
garp_repeat_after = 0
"""


def test_directord_starts_over_corrupt_state_files_and_logs_only_json(
    tmp_path: Path, director_ns: Namespace
) -> None:
    """The issue's crash loop: ``{"services": [null]}`` made directord exit with an
    AttributeError traceback at start. Now it starts, says what is wrong and where, keeps the
    bad files for the operator, runs VRRP without ip_vs, and stops cleanly on SIGTERM."""
    state, sock = tmp_path / "state", tmp_path / "control.sock"
    state.mkdir()
    (state / "owned-services.json").write_text('{"services": [null]}')
    (state / "maintenance.json").write_text("\x00\x01 not json")
    config = tmp_path / "director.toml"
    config.write_text(VRRP_ONLY.format(state=state, sock=sock, port=free_port()))
    daemon = director_ns.spawn(DIRECTORD, "--config", str(config))
    try:
        status = wait_for(
            "master", lambda: (s := request(sock, "status", wait=5))["role"] == "master" and s
        )
        faults = status["director_faults"]
        assert any("owned-services.json" in f for f in faults), faults
        assert any("maintenance.json" in f and "not JSON" in f for f in faults), faults
        assert len([p for p in state.iterdir() if ".corrupt-" in p.name]) == 2
        assert status["vrrp"][0]["state"] == "master"
    finally:
        os.killpg(daemon.proc.pid, signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    lines = json_lines(daemon.output())
    events = [line["event"] for line in lines]
    assert "Traceback" not in daemon.output()
    assert events.count("state_file_corrupt") == 2
    assert "ready" in events and "ipvs_not_needed" in events
    # VRRP's lines reach the same JSON stream, each transition once, with its cause
    transitions = [
        (t["previous"], t["state"], t["trigger"], t["instance"])
        for t in lines
        if t["event"] == "vrrp_transition"
    ]
    assert transitions == [
        ("initialize", "backup", "start", "VI_1"),
        ("backup", "master", "master_down_timer", "VI_1"),
        ("master", "initialize", "shutdown", "VI_1"),
    ]
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)
    assert not sock.exists()


# -- a local process floods the listeners ------------------------------------------------------

SERVED = """
[daemon]
state_dir = "{state}"
control_socket = "{sock}"
metrics_address = "127.0.0.1:{port}"
max_concurrent_probes = 64

[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.20"
port = 80
  [virtual_server.check]
  type = "http"
  interval = 0.3
  timeout = 0.25
  fall = 2
  rise = 1
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  [[virtual_server.real_server]]
  address = "198.18.1.22"
"""
FLOOD = 1100
NOFILE = 256  # the daemon's open-file limit: far below the flood


@pytest.fixture
def farm(topology: Topology, director_ns: Namespace) -> Namespace:
    servers = topology.namespace("s")
    topology.veth(director_ns, "r0", servers, "eth0", a_addr="198.18.1.1/24")
    servers.add_address("eth0", "198.18.1.21/24")
    servers.add_address("eth0", "198.18.1.22/24")
    for address in ("198.18.1.21", "198.18.1.22"):
        servers.spawn(sys.executable, "-m", "http.server", "--bind", address, "80")
    return servers


def spawn_director(ns: Namespace, config: Path, state: Path) -> Background:
    return ns.spawn(*director_proc.argv(config, state, nofile=NOFILE))


def servers_up(sock: Path) -> list[tuple[str, object, object]]:
    status = request(sock, "status", wait=5)
    return [
        (rs["address"], (rs["health"] or {}).get("up"), rs["weight"])
        for rs in status["services"][0]["servers"]
    ]


def test_a_flood_of_idle_connections_takes_no_server_out(
    tmp_path: Path, director_ns: Namespace, farm: Namespace
) -> None:
    """The issue's local denial of service: ~1,100 idle connections to the metrics port used to
    exhaust the daemon's 1,024 descriptors, fail every probe with EMFILE and take both healthy
    servers out. The listener now holds at most its limit and the rest wait in the kernel."""
    state, sock, port = tmp_path / "state", tmp_path / "control.sock", free_port()
    config = tmp_path / "director.toml"
    config.write_text(SERVED.format(state=state, sock=sock, port=port))
    daemon = spawn_director(director_ns, config, state)
    up = [("198.18.1.21:80", True, 1), ("198.18.1.22:80", True, 1)]
    wait_for("both servers checked up", lambda: servers_up(sock) == up)

    # The flood, from a process of the director's namespace (this test, moved there).
    flood: list[socket.socket] = []
    errors: list[BaseException] = []

    def open_flood() -> None:
        try:
            enter_namespace(director_ns.name)
            for _ in range(FLOOD):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", port))
                flood.append(s)
        except BaseException as exc:
            errors.append(exc)

    opener = threading.Thread(target=open_flood)
    opener.start()
    opener.join(60)
    try:
        assert not errors, errors
        assert len(flood) == FLOOD
        observed = []
        for _ in range(24):  # 12 s: 40 probe rounds, past the listener's 10 s idle time
            time.sleep(0.5)
            observed.append(servers_up(sock))  # the control socket answers during the flood
        assert all(o == up for o in observed), observed
        output = daemon.output()
        assert "EMFILE" not in output and "Too many open files" not in output
        assert "listener_full" in output
        # idle connections are closed by the daemon (10 s): some of the flood now reads EOF
        closed = 0
        for s in flood[:200]:
            s.setblocking(True)
            s.settimeout(0.01)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (TimeoutError, OSError):
                pass
        assert closed >= 1
    finally:
        for s in flood:
            s.close()

    # the listener serves again once the flood is gone
    def scrape() -> bool:
        result: list[bytes] = []

        def get() -> None:
            enter_namespace(director_ns.name)
            with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                result.append(reply.read())

        t = threading.Thread(target=get)
        t.start()
        t.join(10)
        return bool(result) and b"director_check_up" in result[0]

    wait_for("a scrape after the flood", scrape, within=15)
    daemon.stop(timeout=15)
    assert daemon.proc.returncode == 0


def test_a_restart_after_a_crash_removes_the_recorded_vips_before_anything_else(
    tmp_path: Path, director_ns: Namespace
) -> None:
    """The VIP a killed run held goes first, before the daemon's imports, even when the config
    was edited meanwhile and no longer names it: the record in the state directory says what
    the last run may have placed."""
    state, sock = tmp_path / "state", tmp_path / "control.sock"
    config = tmp_path / "director.toml"
    config.write_text(VRRP_ONLY.format(state=state, sock=sock, port=free_port()))
    first = director_ns.spawn(DIRECTORD, "--config", str(config))
    wait_for("master", lambda: request(sock, "status", wait=5)["role"] == "master")
    assert "198.18.0.51/24" in director_ns.ip("-4", "addr", "show", "dev", "d0")
    os.killpg(first.proc.pid, signal.SIGKILL)  # a crash: the VIP stays
    first.proc.wait(10)
    sock.unlink()
    assert "198.18.0.51/24" in director_ns.ip("-4", "addr", "show", "dev", "d0")
    assert (state / "virtual-addresses.json").exists()
    config.write_text(  # edited during the outage: another VIP now
        VRRP_ONLY.format(state=state, sock=sock, port=free_port()).replace(".51/24", ".52/24")
    )
    started = time.monotonic()
    second = director_ns.spawn(DIRECTORD, "--config", str(config))
    gone = wait_for(
        "the old VIP removed",
        lambda: (
            "198.18.0.51" not in director_ns.ip("-4", "addr", "show", "dev", "d0")
            and time.monotonic()
        ),
    )
    wait_for("ready", lambda: request(sock, "status", wait=5)["vrrp"])
    ready = time.monotonic()
    os.killpg(second.proc.pid, signal.SIGTERM)
    assert second.proc.wait(15) == 0
    lines = json_lines(second.output())
    assert lines[0]["event"] == "leftover_vips_removed" and lines[0]["early"] is True
    assert lines[0]["addresses"] == ["198.18.0.51"]
    assert [line["event"] for line in lines].index("ready") > 0
    print(f"old VIP gone {gone - started:.3f} s after the restart; ready {ready - started:.3f} s")


def _unit_ip_batch(state: Path) -> list[str]:
    """The unit's first ExecStopPost (``ip -force -batch`` of the record), for this state dir."""
    unit = Path(__file__).resolve().parents[2] / "systemd" / "directord.service"
    lines = [x for x in unit.read_text().splitlines() if x.startswith("ExecStopPost=")]
    argv = lines[0].removeprefix("ExecStopPost=").lstrip("-").split()
    assert argv[:3] == ["/sbin/ip", "-force", "-batch"], argv
    return [*argv[:3], str(state / Path(argv[3]).name)]


def test_the_units_first_stop_post_removes_a_killed_runs_vips_and_a_clean_stop_leaves_none(
    tmp_path: Path, director_ns: Namespace
) -> None:
    """After kill -9 the VIP is removed by ``ip`` itself from the daemon's batch record, with no
    Python started; a clean stop (VIPs already handed over) empties the record, so the same
    command then deletes nothing and says nothing."""
    state, sock = tmp_path / "state", tmp_path / "control.sock"
    config = tmp_path / "director.toml"
    config.write_text(VRRP_ONLY.format(state=state, sock=sock, port=free_port()))
    daemon = director_ns.spawn(DIRECTORD, "--config", str(config))
    wait_for("master", lambda: request(sock, "status", wait=5)["role"] == "master")
    assert (state / "virtual-addresses.ip").read_text() == "address del 198.18.0.51/24 dev d0\n"
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(10)
    assert "198.18.0.51/24" in director_ns.ip("-4", "addr", "show", "dev", "d0")
    started = time.monotonic()
    done = director_ns.run(*_unit_ip_batch(state), check=False)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "198.18.0.51" not in director_ns.ip("-4", "addr", "show", "dev", "d0")
    sock.unlink()
    again = director_ns.spawn(DIRECTORD, "--config", str(config))
    wait_for("master again", lambda: request(sock, "status", wait=5)["role"] == "master")
    os.killpg(again.proc.pid, signal.SIGTERM)
    assert again.proc.wait(15) == 0
    assert (state / "virtual-addresses.ip").read_bytes() == b""
    quiet = director_ns.run(*_unit_ip_batch(state), check=False)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    print(f"ip -batch removed the killed run's VIP in {took * 1000:.0f} ms (with ip netns exec)")
