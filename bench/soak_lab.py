"""The soak benchmark's lab (:mod:`bench.soak`): namespaces, the farm, keepalived, the daemon.

    sw:  br0 --- d    eth0 198.18.0.1/24  (directord on the in-memory IPVS table)
             --- peer eth0 198.18.0.2/24  (keepalived 2.2.7, VRRP only, priority 100)
    d    eth1 198.18.128.1/24 --- farm eth0 198.18.128.2/24, 198.18.64.0/18 (one HTTP server)

The director's config is data (:class:`Plan`) rendered to TOML and written atomically: a reload
changes one weight, every few reloads adds or removes a real server, and a role flip is its
priority moved across the peer's (150 or 50 against 100, preempt on). Only 198.18.0.0/15 is
used, only inside the namespaces; closing the lab stops every process and removes them all.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from bench.checks import SERVER
from bench.soak_config import METRICS_PORT, PEER_PRIORITY, VRID, Plan
from director.control.client import request
from director.control.protocol import ControlError
from tests.helpers import director_proc
from tests.helpers.netns import Background, Topology
from tests.helpers.servers import enter_namespace
from tests.vrrp_io import keepalived
from tests.vrrp_io.lab import VIP, has_address, lan

ROOT = Path(__file__).resolve().parents[1]
NOFILE = 16384  # as systemd/directord.service's LimitNOFILE
T = TypeVar("T")


def write_atomically(path: Path, text: str) -> None:
    """The daemon must never read half a file: temporary file, then rename."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def wait_until(what: str, within: float, check: Callable[[], T | None]) -> T:
    """Poll ``check`` until it returns something true; RuntimeError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            result = check()
        except (OSError, ControlError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {within:g} s: {what}")
        time.sleep(0.25)


class Lab:
    """The namespaces, the farm, keepalived and the director; a context manager."""

    def __init__(self, plan: Plan, trace: Path | None = None) -> None:
        self.plan = plan
        self.trace = trace  # bench.soak_trace's output directory: the daemon under tracemalloc
        self.topology = Topology()
        self._tmp = tempfile.TemporaryDirectory(prefix="dt-soak-")
        self.dir = Path(self._tmp.name)
        self.config, self.state, self.sock = (
            self.dir / "director.toml",
            self.dir / "state",
            self.dir / "control.sock",
        )
        self.director: Background | None = None
        self.peer: Background | None = None
        self.farm_server: Background | None = None
        self._scraper: ThreadPoolExecutor | None = None

    def __enter__(self) -> Lab:
        try:
            self.topology.__enter__()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _build(self) -> None:
        topo = self.topology
        self.d, self.peer_ns = lan(topo, "d", "peer")
        self.farm = topo.namespace("farm")
        topo.veth(
            self.d, "eth1", self.farm, "eth0", a_addr="198.18.128.1/24", b_addr="198.18.128.2/24"
        )
        batch = "".join(f"address add {a}/32 dev eth0\n" for a in self.plan.all())
        self.farm.run("ip", "-batch", "-", stdin=batch)
        self.d.add_route("198.18.64.0/18", "198.18.128.2")
        self.farm_server = self.farm.spawn(sys.executable, "-c", SERVER)
        wait_until("the farm's HTTP server", 30, lambda: "listening" in self.farm_server_output())
        peer_dir = self.dir / "keepalived"
        peer_dir.mkdir()
        self.peer = keepalived.start(
            self.peer_ns,
            peer_dir,
            keepalived.config(
                version=3,
                vrid=VRID,
                priority=PEER_PRIORITY,
                interval=self.plan.advert_interval,
                vip=VIP,
            ),
        )
        self.state.mkdir()
        write_atomically(self.config, self.plan.render(self.state, self.sock))
        self.director = self.d.spawn(
            *director_proc.argv(
                self.config,
                self.state,
                nofile=NOFILE,
                module="bench.soak_trace" if self.trace else director_proc.__name__,
                extra=(str(self.trace),) if self.trace else (),
            )
        )
        self._scraper = ThreadPoolExecutor(1, initializer=enter_namespace, initargs=(self.d.name,))

    def farm_server_output(self) -> str:
        return self.farm_server.output() if self.farm_server is not None else ""

    def close(self) -> None:
        try:
            if self._scraper is not None:
                self._scraper.shutdown(wait=True, cancel_futures=True)
                self._scraper = None
            if self.director is not None:
                self.director.stop(timeout=20)  # SIGTERM: priority 0, listeners closed
        finally:
            try:
                self.topology.close()  # keepalived, the farm, then every namespace
            finally:
                self._tmp.cleanup()

    # -- what the benchmark does to the director ------------------------------------------------

    def status(self) -> dict[str, Any]:
        if self.director is not None and self.director.proc.poll() is not None:
            tail = "\n".join(self.director.output().splitlines()[-20:])
            raise RuntimeError(f"the director exited ({self.director.proc.returncode}):\n{tail}")
        result: dict[str, Any] = request(self.sock, "status", wait=30)
        return result

    def reload(self, via_control: bool, pid: int) -> None:
        """Write the plan and reload: ``directorctl reload`` (answers when applied) or SIGHUP."""
        write_atomically(self.config, self.plan.render(self.state, self.sock))
        if via_control:
            request(self.sock, "reload", wait=60)
        else:
            os.kill(pid, 1)  # SIGHUP

    def stop_director(self) -> tuple[int | None, str]:
        """SIGTERM the director (priority 0, listeners closed) and wait: exit status, log."""
        assert self.director is not None
        self.director.stop(timeout=20)
        return self.director.proc.returncode, self.director.output()

    def scrape(self, timeout: float = 30) -> tuple[bytes, float]:
        """GET /metrics from inside the director's namespace; the body and its seconds."""
        assert self._scraper is not None

        def get() -> tuple[bytes, float]:
            started = time.monotonic()
            url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                body: bytes = reply.read()
            return body, time.monotonic() - started

        return self._scraper.submit(get).result(timeout + 30)

    def director_has_vip(self) -> bool:
        return has_address(self.d, VIP)

    def peer_has_vip(self) -> bool:
        return has_address(self.peer_ns, VIP)
