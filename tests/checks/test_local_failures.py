"""A checker out of file descriptors keeps its verdicts: the probes that cannot open a socket,
a pipe or a process are the director's failures (counted, logged once, in the status), not
the real servers'. The checker runs as its own process in the prober namespace (its fd limit
lowered, then every descriptor taken), probing nginx, an aiohttp server, an SMTP server and a
script, with fall = 1: on a tree that counts such failures against the servers, every server
goes down within one round."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.checks.conftest import APP, HTTP_PORT, SMTP_PLAIN_PORT, WEB, Lab
from tests.helpers.netns import Namespace

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("nginx")]
ROOT = Path(__file__).resolve().parents[2]
HOLD = 2.0  # seconds out of file descriptors: 5 rounds of each check

CHECK = "interval = 0.4\ntimeout = 0.4\nrise = 1\nfall = 1"
CONFIG = f"""
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 80
  [virtual_server.check]
  type = "http"
  {CHECK}
  [[virtual_server.real_server]]
  address = "{WEB}"
  [[virtual_server.real_server]]
  address = "{APP}"
  port = {HTTP_PORT}

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 81
  [virtual_server.check]
  type = "http"
  port = 80
  body_contains = "default site"
  {CHECK}
  [[virtual_server.real_server]]
  address = "{WEB}"

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 82
  [virtual_server.check]
  type = "tcp"
  port = 80
  send = "GET / HTTP/1.0\\r\\n\\r\\n"
  expect = "^HTTP/1\\\\.1 200"
  expect_regex = true
  {CHECK}
  [[virtual_server.real_server]]
  address = "{WEB}"

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 25
  [virtual_server.check]
  type = "smtp"
  port = {SMTP_PLAIN_PORT}
  {CHECK}
  [[virtual_server.real_server]]
  address = "{APP}"

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 83
  [virtual_server.check]
  type = "script"
  command = ["/bin/true", "{{address}}"]
  {CHECK}
  [[virtual_server.real_server]]
  address = "{WEB}"
"""
KINDS = {"http/fast", "http", "tcp/fast", "smtp", "script"}


def test_out_of_file_descriptors_no_server_goes_down(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "director.toml"
    config.write_text(CONFIG)
    prober = Namespace(lab.prober.name, lab.topology)
    done = prober.run(
        "env",
        f"PYTHONPATH={ROOT}",
        sys.executable,
        "-m",
        "tests.checks.fd_exhaustion",
        str(config),
        str(HOLD),
        timeout=60,
    )
    report = json.loads(done.stdout)
    logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert report["ready"], report
    assert report["held"] > 0
    # nothing went down, not even for a round, and every check passes again afterwards
    assert report["changes"] == [], report["changes"]
    assert report["health"] == [True] * 6
    assert report["recovered"], report
    # every kind of probe met the shortage, and each time it was the director's failure
    assert {kind.split(" ", 1)[1] for kind in report["local"]} == KINDS, report["local"]
    assert not [k for k in report["failed"] if not k.startswith("before")], report["failed"]
    faults = report["local_faults"]
    assert faults["total"] == sum(report["local"].values())
    assert set(faults["by_reason"]) == {"EMFILE"}
    assert faults["last_reason"] == "EMFILE"
    assert "too many open files (local EMFILE" in faults["last_error"]
    assert 0 <= faults["last_seconds_ago"] < 15
    # logged once (the next line would come 10 s later, with the count since this one)
    lines = [e for e in logs if e.get("event") == "probe_local_failure"]
    assert [(e["reason"], e["count"]) for e in lines] == [("EMFILE", 1)], lines
    assert not [e for e in logs if e.get("level") in ("error", "critical")], logs
