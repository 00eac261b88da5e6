"""directord's arguments: a start's are read without argparse, and read as argparse reads them;
anything else still goes to argparse (help, errors, abbreviations, the one-shot modes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from director.daemon import DEFAULT_CONFIG, Args, _parse_with_argparse, parse_args, start_args

READ_WITHOUT_ARGPARSE = [
    [],
    ["--config", "/etc/director/director.toml", "--log-format", "json"],  # the unit's ExecStart
    ["-c", "/x.toml"],
    ["--config", "/a.toml", "--config", "/b.toml"],  # the last one, as argparse
    ["--log-level", "debug", "--state-dir", "/run/d", "--log-format", "journal"],
    ["--config", ""],
]
LEFT_TO_ARGPARSE = [
    ["--conf", "/x.toml"],  # an abbreviation argparse accepts
    ["-c/x.toml"],
    ["--config=/x.toml"],
    ["--config", "-x"],
    ["--config"],
    ["--log-format", "xml"],
    ["--log-level", "trace"],
    ["--check-config", "/x.toml"],
    ["--dry-run"],
    ["--cleanup", "--config", "/x.toml"],
    ["--version"],
    ["-h"],
    ["/x.toml"],
]


@pytest.mark.parametrize("argv", READ_WITHOUT_ARGPARSE, ids=" ".join)
def test_a_starts_arguments_read_as_argparse_reads_them(argv: list[str]) -> None:
    read = start_args(argv)
    assert read is not None
    assert read == _parse_with_argparse(argv) == parse_args(argv)


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE, ids=" ".join)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert start_args(argv) is None


def test_argparse_still_reads_the_one_shot_modes_and_refuses_bad_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_args(["--check-config", "/x.toml"]) == Args(check_config=Path("/x.toml"))
    assert parse_args(["--conf", "/x.toml"]).config == Path("/x.toml")
    assert parse_args([]).config == DEFAULT_CONFIG
    with pytest.raises(SystemExit) as exited:
        parse_args(["--log-format", "xml"])
    assert exited.value.code == 2
    assert "invalid choice: 'xml' (choose from 'json', 'logfmt', 'journal')" in (
        capsys.readouterr().err
    )


def test_a_start_does_not_import_argparse() -> None:
    code = (
        "import sys; from director.daemon import parse_args;"
        " parse_args(['--config', '/x.toml', '--log-format', 'json']);"
        " print(sorted({'argparse', 'gettext'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
