"""The systemd unit: ``systemd-analyze verify`` passes, and it agrees with the daemon's defaults."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from director import ctl
from director.config.model import DaemonSettings
from director.daemon import DEFAULT_CONFIG

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "directord.service"
INSTALLED = "/usr/local/bin/directord"


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
    assert d["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    # the daemon's defaults live where the unit makes them writable
    defaults = DaemonSettings()
    assert d["StateDirectory"] == ["director"]
    assert defaults.state_dir == "/var/lib/director"
    assert "/var/lib/director" in d["ReadWritePaths"][0].split()
    assert d["RuntimeDirectory"] == ["director"]
    assert d["RuntimeDirectoryMode"] == ["0700"]
    assert defaults.control_socket == str(ctl.DEFAULT_SOCKET) == "/run/director/control.sock"
    assert f"--config {DEFAULT_CONFIG}" in d["ExecStart"][0]
