"""A real Prometheus (Debian's 2.42) scrapes a live ``directord`` with the shipped alert rules.

The daemon runs as a process on the in-memory IPVS table (``tests.helpers.director_proc``) in a
namespace, with two web servers behind it; Prometheus runs in the same namespace, scraping
every second and evaluating ``docs/monitoring/alerts.yml`` unchanged. Through Prometheus' own
HTTP API: the IPVS counters and the health series arrive; a stopped web server shows in
``director_check_up`` and puts DirectorRealServerDown in pending (its ``for:`` is 2 minutes);
a refused reload makes DirectorReloadFailed fire; the service's last web server stopped makes
DirectorServiceNoHealthyServer fire once its ``for:`` (1 minute) has passed.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from director.control.client import request
from director.control.protocol import ControlError
from tests.app.test_process import SERVED, director_ns, farm, spawn_director, wait_for
from tests.helpers.director import free_port
from tests.helpers.netns import Namespace, Topology

__all__ = ["director_ns", "farm"]  # fixtures, used by name

RULES = Path(__file__).resolve().parents[2] / "docs" / "monitoring" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")
DOWN = 'destination=~".*198.18.1.22.*"'

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="apt-get install prometheus")

SCRAPE = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: director-pair
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def query(ns: Namespace, port: int, expr: str) -> list[dict[str, Any]]:
    """The instant vector for ``expr`` (curl in the namespace, Prometheus' HTTP API)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?{urlencode({'query': expr})}"
    done = ns.run("curl", "-sf", "--max-time", "5", url, check=False)
    if done.returncode != 0:
        return []
    answer = json.loads(done.stdout)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def alerts(ns: Namespace, port: int, name: str, state: str) -> list[dict[str, Any]]:
    return query(ns, port, f'ALERTS{{alertname="{name}",alertstate="{state}"}}')


def test_prometheus_scrapes_the_daemon_and_the_shipped_rules_fire(
    tmp_path: Path, topology: Topology, director_ns: Namespace, farm: Namespace
) -> None:
    state, sock = tmp_path / "state", tmp_path / "control.sock"
    metrics, prom = free_port(), free_port()
    config = tmp_path / "director.toml"
    good = SERVED.format(state=state, sock=sock, port=metrics)
    config.write_text(good)
    daemon = spawn_director(director_ns, config, state)
    (tmp_path / "prometheus.yml").write_text(SCRAPE.format(rules=RULES, port=metrics))
    assert PROMETHEUS is not None
    server = director_ns.spawn(
        PROMETHEUS,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom}",
        "--log.level=warn",
    )
    try:
        wait_for(
            "both servers up in Prometheus",
            lambda: len(query(director_ns, prom, "director_check_up == 1")) == 2,
            within=30,
        )
        up = query(director_ns, prom, 'up{job="director-pair"}')
        assert [s["value"][1] for s in up] == ["1"]
        # The IPVS counters of the service and its real servers (the in-memory table's).
        connections = query(director_ns, prom, "director_ipvs_backend_connections_active")
        assert {s["metric"]["remote_address"] for s in connections} == {
            "198.18.1.21",
            "198.18.1.22",
        }, connections
        # A web server stops: its health series goes to 0 and the rule goes pending.
        farm.run("pkill", "-f", "http.server --bind 198.18.1.22")
        wait_for(
            "198.18.1.22 down in Prometheus",
            lambda: query(
                director_ns, prom, 'director_check_up{destination=~".*198.18.1.22.*"} == 0'
            ),
            within=30,
        )
        wait_for(
            "DirectorRealServerDown pending",
            lambda: alerts(director_ns, prom, "DirectorRealServerDown", "pending"),
            within=15,
        )
        assert not alerts(director_ns, prom, "DirectorServiceNoHealthyServer", "pending")
        # A refused reload fires at once (no for:), and clears after a good one.
        config.write_text(good.replace("max_concurrent_probes = 64", "max_concurrent_probes = -1"))
        refused = time.monotonic()
        with pytest.raises(ControlError):
            request(sock, "reload", wait=10)
        wait_for(
            "DirectorReloadFailed firing",
            lambda: alerts(director_ns, prom, "DirectorReloadFailed", "firing"),
            within=15,
        )
        fired = time.monotonic() - refused
        config.write_text(good)
        request(sock, "reload", wait=10)
        wait_for(
            "DirectorReloadFailed resolved",
            lambda: not alerts(director_ns, prom, "DirectorReloadFailed", "firing"),
            within=15,
        )
        print(f"DirectorReloadFailed fired {fired:.1f} s after the refused reload")
        # The service's last web server stops too: DirectorServiceNoHealthyServer goes pending,
        # then fires once its for: (1 minute) has passed, from the shipped rules unchanged.
        farm.run("pkill", "-f", "http.server --bind 198.18.1.21")
        stopped = time.monotonic()
        wait_for(
            "DirectorServiceNoHealthyServer pending",
            lambda: alerts(director_ns, prom, "DirectorServiceNoHealthyServer", "pending"),
            within=30,
        )
        wait_for(
            "DirectorServiceNoHealthyServer firing",
            lambda: alerts(director_ns, prom, "DirectorServiceNoHealthyServer", "firing"),
            within=100,
        )
        firing = time.monotonic() - stopped
        assert firing >= 60, firing  # not before its for:
        print(f"DirectorServiceNoHealthyServer fired {firing:.1f} s after the last server stopped")
    finally:
        server.stop()
        daemon.stop(timeout=15)
    assert daemon.proc.returncode == 0, daemon.output()[-2000:]
