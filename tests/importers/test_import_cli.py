"""``directorctl import``: TOML on stdout, notes on stderr, exit codes."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from director import cli
from director.config import parse_config
from tests.importers.conftest import DATA


def test_import_keepalived(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import", "keepalived", str(DATA / "nat_http.conf")]) == 0
    out, err = capsys.readouterr()
    config = parse_config(out)
    assert config.count() == (2, 3)
    assert out.startswith("# director config imported from")
    assert "nat_http.conf:63: not carried: url digest" in err
    assert err.rstrip().endswith("7 settings not carried, 1 carried differently (see above)")


def test_import_lvs_cf_for_the_backup(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import", "lvs.cf", str(DATA / "lvs_nat.cf"), "--node", "backup"]) == 0
    out, err = capsys.readouterr()
    data = tomllib.loads(out)
    assert data["vrrp_instance"][0]["priority"] == 100
    assert "heartbeat becomes VRRP" in err


def test_parse_error_exits_1_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "keepalived.conf"
    bad.write_text("virtual_server 198.18.0.1 80 {\n  lb_algo rr\n")
    assert cli.main(["import", "keepalived", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"directorctl import: {bad}:1: ")
    assert cli.main(["import", "lvs.cf", str(tmp_path / "missing.cf")]) == 1
    assert "missing.cf: cannot read" in capsys.readouterr().err


def test_the_installed_command(tmp_path: Path) -> None:
    """As an operator runs it: a separate process, streams kept apart."""
    done = subprocess.run(
        [sys.executable, "-m", "director.cli", "import", "keepalived", str(DATA / "unknown.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    (tmp_path / "director.toml").write_text(done.stdout)
    assert parse_config(done.stdout).count() == (1, 1)
    assert "frobnicate_mode turbo" in done.stderr
    assert "frobnicate" not in done.stdout


@pytest.mark.parametrize("fmt", ["keepalived", "lvs.cf"])
def test_a_binary_or_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"virtual_server 198.18.0.1 80 {\n\x7fELF\x00\x01\n}\n")
    assert cli.main(["import", fmt, str(binary)]) == 1
    assert capsys.readouterr().err == (
        f"directorctl import: {binary}:2: not a text file (a NUL byte)\n"
    )
    assert cli.main(["import", fmt, str(tmp_path)]) == 1
    assert (
        capsys.readouterr().err == f"directorctl import: {tmp_path}: cannot read: Is a directory\n"
    )


def test_config_id_selects_the_conditional_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 7\n"
        "  @lb1 priority 150\n  @lb2 priority 100\n}\n"
    )
    for config_id, priority in (("lb1", 150), ("lb2", None)):
        assert cli.main(["import", "keepalived", str(conf), "--config-id", config_id]) == 0
        out, err = capsys.readouterr()
        assert tomllib.loads(out)["vrrp_instance"][0].get("priority") == priority
        assert "for config id" in err
