"""Two ``directord`` processes with IPVS and VRRP (v3, 100 ms) on a bridge, on the real kernel.

d1 (priority 150) and d2 (priority 100) each run the same IPVS service and a ``[sync_daemon]``.
The master holds the VIP and runs the master sync daemon, the backup runs the backup one. A
SIGTERM to the master (priority 0 advert) hands the VIP and the master sync daemon to d2 within
Skew_Time plus a margin, and neither IPVS table changes. ``directord --cleanup`` then removes
what a crashed d1 would have left behind.
"""

from __future__ import annotations

import contextlib
import io
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from director.daemon import main as daemon_main
from tests.helpers.ipvsadm import ipvsadm
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import enter_namespace
from tests.vrrp_io.lab import VIP, has_address, lan
from vrrp.config import skew_time

pytestmark = pytest.mark.vm

PY = sys.executable
INTERVAL = 0.1
# The guest runs Python ~20x slower than the host and this test polls through `ip`/`ipvsadm`
# processes: the margin on top of the protocol's Skew_Time is for that, not for the protocol.
MARGIN = 3.0
CONFIG = """
[daemon]
state_dir = "{state}"
control_socket = "{state}/control.sock"
metrics_address = ""

[[virtual_server]]
name = "echo"
protocol = "tcp"
address = "{vip}"
port = 7000
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.1.11"

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = {priority}
version = 3
advert_interval = {interval}
virtual_addresses = ["{vip}/24"]
garp_repeat_after = 0

[sync_daemon]
interface = "eth0"
sync_id = 3
instance = "VI_1"
"""


@dataclass
class Director:
    ns: Namespace
    config: Path
    notify: socket.socket
    proc: Background | None = None

    def start(self) -> None:
        self.proc = self.ns.spawn(
            "env",
            f"NOTIFY_SOCKET={self.notify.getsockname()}",
            PY,
            "-m",
            "director.daemon",
            "--config",
            str(self.config),
            "--log-format",
            "json",
        )

    def notified(self, wanted: str, timeout: float = 400) -> None:
        # Two directord starting at once on the guest's one emulated CPU: seen up to ~110 s
        # on a loaded host; the VRRP bounds below do not depend on it.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if wanted in self.notify.recv(4096).decode():
                    return
            except TimeoutError:
                break
        log = self.proc.output() if self.proc else ""
        raise AssertionError(f"no sd_notify {wanted!r} from {self.ns.name}; log:\n{log}")

    def ipvsadm(self, *args: str) -> str:
        return ipvsadm(*args, netns=self.ns.name)

    def daemons(self) -> str:
        return self.ipvsadm("-L", "--daemon")


def cleanup_in(ns: Namespace, config: Path) -> tuple[int, str]:
    """``directord --cleanup`` (its ``main``) on a thread inside ``ns``: the same code path as
    the command, without a second interpreter start (over a minute in a loaded guest)."""
    result: list[tuple[int, str]] = []

    def work() -> None:
        enter_namespace(ns.name)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = daemon_main(["--cleanup", "--config", str(config)])
        result.append((status, out.getvalue()))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert result, "directord --cleanup did not finish"
    return result[0]


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Director, Director]]:
    with Topology() as topo:
        ns1, ns2 = lan(topo, "d1", "d2")
        directors = []
        sockets = []
        try:
            for ns, priority in ((ns1, 150), (ns2, 100)):
                state = tmp_path / ns.name
                state.mkdir()
                config = state / "director.toml"
                config.write_text(
                    CONFIG.format(state=state, vip=VIP, priority=priority, interval=INTERVAL)
                )
                notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sockets.append(notify)
                notify.bind(str(state / "notify"))
                directors.append(Director(ns, config, notify))
            yield directors[0], directors[1]
        finally:
            for d in directors:
                if d.proc is not None:
                    d.proc.stop(timeout=30)
            for s in sockets:
                s.close()


def test_sigterm_hands_vip_and_sync_daemon_to_the_backup(
    pair: tuple[Director, Director],
) -> None:
    d1, d2 = pair
    started = time.monotonic()
    d2.start()
    d1.start()  # both at once (each takes a while to import in the guest): d1 preempts
    d2.notified("READY=1")
    d1.notified("READY=1")
    print(f"both directord ready after {time.monotonic() - started:.1f} s")
    wait_for("d1 holding the VIP", lambda: has_address(d1.ns, VIP), 30)
    wait_for("d1's master sync daemon", lambda: "master sync daemon" in d1.daemons(), 30)
    wait_for("d2's backup sync daemon", lambda: "backup sync daemon" in d2.daemons(), 30)
    assert "syncid=3" in d1.daemons() and "mcast=eth0" in d2.daemons()
    assert "backup" not in d1.daemons() and "master" not in d2.daemons()
    assert not has_address(d2.ns, VIP)
    tables = (d1.ipvsadm("-Ln"), d2.ipvsadm("-Ln"))
    assert f"TCP  {VIP}:7000 rr" in tables[0] and tables[0] == tables[1]

    assert d1.proc is not None
    d1.proc.proc.send_signal(signal.SIGTERM)
    bound = skew_time(3, 100, INTERVAL) + MARGIN
    took = wait_for("the VIP on d2", lambda: has_address(d2.ns, VIP), bound)
    print(f"VIP on the backup {took:.3f} s after SIGTERM (Skew_Time + margin = {bound:.3f} s)")
    assert d1.proc.proc.wait(timeout=60) == 0
    assert not has_address(d1.ns, VIP)
    took = wait_for(
        "d2's master sync daemon",
        lambda: "master sync daemon" in (shown := d2.daemons()) and "backup" not in shown,
        bound,
    )
    print(f"d2's sync daemon switched to master {took:.3f} s after the VIP moved")
    assert d1.daemons().strip() == ""  # a stopped director runs no sync daemon
    assert (d1.ipvsadm("-Ln"), d2.ipvsadm("-Ln")) == tables  # IPVS untouched

    # what a crash would leave: the VIP and a sync daemon; --cleanup removes both
    d1.ns.ip("address", "add", f"{VIP}/24", "dev", "eth0")
    d1.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "3")
    started = time.monotonic()
    status, output = cleanup_in(d1.ns, d1.config)
    assert status == 0, output
    print(f"directord --cleanup took {time.monotonic() - started:.1f} s")
    assert f"removed 1 virtual address(es): {VIP}" in output
    assert "stopped 1 sync daemon(s): master sync daemon on eth0 (sync id 3)" in output
    assert not has_address(d1.ns, VIP) and d1.daemons().strip() == ""
    assert has_address(d2.ns, VIP)
