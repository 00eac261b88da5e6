"""The systemd unit: ``systemd-analyze verify`` passes, and it agrees with the daemon's defaults."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from director.app import files_budget
from director.config import Config
from director.config.model import DaemonSettings
from director.control import ctl
from director.daemon import DEFAULT_CONFIG

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "directord.service"
INSTALLED = "/usr/sbin/directord"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that each Exec binary exists: point it at this checkout's directord
    here = Path(sys.executable).with_name("directord")
    assert here.exists(), here
    unit = tmp_path / "directord.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(here)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # no warning either
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    done = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert "service type" in done.stderr  # the verification does look at the file


def test_unit_has_what_operations_rely_on() -> None:
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["WatchdogSec"] == ["30s"]
    assert d["Restart"] == ["on-failure"]
    assert "/bin/kill -HUP $MAINPID" in d["ExecReload"]
    assert any("--cleanup" in line for line in d["ExecStopPost"])
    caps = "CAP_NET_ADMIN CAP_NET_RAW CAP_SETUID CAP_SETGID CAP_KILL"
    assert d["CapabilityBoundingSet"] == [caps]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    # VRRP's SCHED_FIFO threads: allowed by the RTPRIO limit, not forbidden by RestrictRealtime
    assert d["LimitRTPRIO"] == ["10"]
    assert "RestrictRealtime" not in d
    # the daemon's defaults live where the unit makes them writable
    defaults = DaemonSettings()
    assert d["StateDirectory"] == ["director"]
    assert defaults.state_dir == "/var/lib/director"
    assert "/var/lib/director" in d["ReadWritePaths"][0].split()
    assert d["RuntimeDirectory"] == ["director"]
    assert d["RuntimeDirectoryMode"] == ["0700"]
    assert defaults.control_socket == str(ctl.DEFAULT_SOCKET) == "/run/director/control.sock"
    assert f"--config {DEFAULT_CONFIG}" in d["ExecStart"][0]


def test_unit_open_file_limit_covers_the_default_config_and_the_listener_caps() -> None:
    limit = int(directives()["LimitNOFILE"][0])
    assert not files_budget(Config(), limit).short
    # and a large config: every probe in flight at the cap the checks allow by default
    big = Config(daemon=DaemonSettings(max_concurrent_probes=10_000))
    assert not files_budget(big, limit).short
    assert files_budget(big, 1024).short  # the systemd default would not do
