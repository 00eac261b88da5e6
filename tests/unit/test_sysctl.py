"""Kernel settings: planned writes, applied and read back (against a directory tree)."""

from __future__ import annotations

from pathlib import Path

from director.sysctl import apply_sysctls, plan_sysctls


def make(root: Path, name: str, value: str) -> None:
    path = root / name.replace(".", "/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


def test_plan_writes_only_what_differs_and_exists() -> None:
    wanted = [("net.ipv4.ip_forward", "1"), ("net.ipv4.vs.conntrack", "1"), ("net.x", "4 5")]
    current = {"net.ipv4.ip_forward": "0", "net.ipv4.vs.conntrack": None, "net.x": "4\t5"}
    assert plan_sysctls(wanted, current) == [("net.ipv4.ip_forward", "1")]


def test_apply_writes_and_reports_missing_settings(tmp_path: Path) -> None:
    make(tmp_path, "net.ipv4.ip_forward", "0")
    make(tmp_path, "net.ipv4.vs.expire_nodest_conn", "1")
    wanted = [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.vs.expire_nodest_conn", "1"),
        ("net.ipv4.vs.conntrack", "1"),
    ]
    writes, problems = apply_sysctls(wanted, tmp_path)
    assert writes == [("net.ipv4.ip_forward", "1")]
    assert (tmp_path / "net/ipv4/ip_forward").read_text() == "1\n"
    assert [str(p) for p in problems] == [
        "net.ipv4.vs.conntrack: wanted 1, but the setting does not exist"
    ]


def test_apply_reports_a_value_that_did_not_stick(tmp_path: Path) -> None:
    make(tmp_path, "net.ipv4.ip_forward", "0")
    (tmp_path / "net/ipv4/ip_forward").chmod(0o444)
    (tmp_path / "net/ipv4").chmod(0o555)
    try:
        _writes, problems = apply_sysctls([("net.ipv4.ip_forward", "1")], tmp_path)
    finally:
        (tmp_path / "net/ipv4").chmod(0o755)
    # root may write anyway; then there is nothing to report
    current = (tmp_path / "net/ipv4/ip_forward").read_text().strip()
    assert [str(p) for p in problems] == (
        [] if current == "1" else ["net.ipv4.ip_forward: wanted 1, found 0"]
    )
