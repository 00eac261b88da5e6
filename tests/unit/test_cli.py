"""``directord --check-config`` and ``directorctl`` on files, without a kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from director import cli, daemon

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert daemon.main(["--check-config", str(EXAMPLES / "exchange.toml")]) == 0
    assert "OK (3 virtual services" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[virtual_server]]\nprotocol = "tcp"\naddress = "198.18.0.1"\nport = 0\n')
    assert daemon.main(["--check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "virtual_server[0]" in err
    assert cli.main(["check-config", str(bad)]) == 1
    assert cli.main(["check-config", str(tmp_path / "missing.toml")]) == 1
    assert "missing.toml" in capsys.readouterr().err


def test_status_reads_what_the_daemon_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--state-dir", str(tmp_path)]) == 1
    assert "is directord running?" in capsys.readouterr().err
    (tmp_path / "status.json").write_text(
        json.dumps(
            {
                "config_path": "/etc/director/director.toml",
                "reload_error": "director.toml: 1 problem\n  weight: expected ...",
                "last_sync": {"services": 3, "destinations": 7, "reason": "resync"},
                "sysctl_problems": ["net.ipv4.vs.conntrack: wanted 1, found 0"],
            }
        )
    )
    assert cli.main(["status", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "reload:  FAILED, running the previous config" in out
    assert "3 services, 7 destinations" in out
    assert "net.ipv4.vs.conntrack: wanted 1, found 0" in out
