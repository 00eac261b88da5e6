"""``directorctl doctor``: each finding from a made-up machine, and the real command's output."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from director import cli
from director.config import load_config
from director.config.model import Config
from director.doctor import Finding, Host, diagnose, report

CONFIG = """
[kernel]
ip_forward = true
conntrack = true

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["198.18.0.10/24"]
track_interfaces = [{ interface = "eth1" }]

[[fwmark]]
mark = 80
address = "198.18.0.10"
ports = [80, 443]

[[virtual_server]]
fwmark = 80
  [[virtual_server.real_server]]
  address = "198.18.1.11"

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.77"
port = 25
forwarding = "dr"
  [[virtual_server.real_server]]
  address = "198.18.1.11"
"""


def healthy_host(tmp_path: Path) -> Host:
    proc = tmp_path / "proc-sys"
    for name, value in {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/vs/conntrack": "1",
        "net/ipv4/vs/expire_nodest_conn": "1",
        "net/ipv4/vs/expire_quiescent_template": "1",
    }.items():
        (proc / name).parent.mkdir(parents=True, exist_ok=True)
        (proc / name).write_text(value + "\n")
    ip = ipaddress.ip_address
    return Host(
        proc_sys=proc,
        ip_vs_loaded=True,
        interfaces={
            "eth0": ("up", [ip("198.18.0.2"), ip("198.18.0.10")]),
            "eth1": ("up", [ip("198.18.1.1")]),
            "lo": ("unknown", [ip("127.0.0.1"), ip("198.18.0.77")]),
        },
        nft_available=True,
        nft_tables=[("inet", "director")],
    )


def master() -> dict[str, Any]:
    return {"role": "master", "vrrp": [{"name": "VI_1", "state": "master"}]}


def config(tmp_path: Path) -> Config:
    path = tmp_path / "d.toml"
    path.write_text(CONFIG)
    return load_config(path)


def problems(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.level, f.topic, f.message) for f in findings if f.level != "ok"]


def test_a_healthy_master_has_no_problem(tmp_path: Path) -> None:
    findings = diagnose(config(tmp_path), None, healthy_host(tmp_path), master(), None)
    assert problems(findings) == []
    assert {f.topic for f in findings} >= {"config", "daemon", "ip_vs", "sysctl", "interface"}
    assert "0 problem(s), 0 warning(s)" in report(findings)


def test_each_problem_is_found_with_a_fix(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    host = healthy_host(tmp_path)
    host.ip_vs_loaded = False
    (host.proc_sys / "net/ipv4/vs/conntrack").unlink()
    (host.proc_sys / "net/ipv4/ip_forward").write_text("0\n")
    host.interfaces["eth1"] = ("down", [])
    host.interfaces["lo"] = ("unknown", [ipaddress.ip_address("127.0.0.1")])
    host.nft_tables = []
    backup = {"role": "backup", "vrrp": [{"name": "VI_1", "state": "backup"}]}
    findings = diagnose(cfg, None, host, backup, None)
    found = problems(findings)
    text = "\n".join(f"{lvl} {topic} {msg}" for lvl, topic, msg in found)
    assert "fail ip_vs the ip_vs module is not loaded" in text
    assert "fail sysctl net.ipv4.vs.conntrack does not exist (load ip_vs first)" in text
    assert "warn sysctl net.ipv4.ip_forward is 0, the config wants 1" in text
    assert "warn interface eth1 (tracked by VI_1) is down" in text
    assert "fail vip 198.18.0.10 of VI_1 is on eth0 while the instance is BACKUP" in text
    assert "warn vip 198.18.0.77 (tcp/198.18.0.77:25) is on no local interface" in text
    assert "warn nftables table director is missing" in text
    assert "warn vrrp VI_1 is BACKUP and has heard no master" in text
    assert all(f.fix for f in findings if f.level == "fail")
    out = report(findings)
    assert "fix: modprobe ip_vs" in out
    assert "fix: ip addr del 198.18.0.10 dev eth0" in out


def test_daemon_down_and_master_alone(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    host = healthy_host(tmp_path)
    found = problems(diagnose(cfg, None, host, None, "directord is not running (...)"))
    assert ("warn", "daemon", "directord is not running (...)") in found
    assert any("is on eth0 but directord is not running" in m for _, _, m in found)
    unicast = {"role": "master", "vrrp": [{"name": "VI_1", "state": "master", "peers": ["x"]}]}
    assert not [f for f in problems(diagnose(cfg, None, host, unicast, None)) if f[1] == "vrrp"]
    heard = {"role": "backup", "vrrp": [{"name": "VI_1", "state": "backup", "peer": "198.18.0.3"}]}
    findings = diagnose(cfg, None, host, heard, None)
    assert Finding("ok", "vrrp", "VI_1 BACKUP, master heard: 198.18.0.3") in findings
    fault = {"role": "fault", "vrrp": [{"name": "VI_1", "state": "fault"}]}
    found = problems(diagnose(cfg, None, host, fault, None))
    assert any(lvl == "fail" and "FAULT" in m for lvl, _, m in found)


def test_bad_config_and_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nlog_level = 'loud'\n")
    code = cli.main(["--socket", str(tmp_path / "none.sock"), "doctor", "-c", str(bad)])
    out = capsys.readouterr().out
    assert code == 1
    assert "[FAIL] config" in out
    assert "daemon.log_level" in out
    assert "[WARN] daemon    directord is not running" in out


def test_local_probe_failures_the_daemon_reports(tmp_path: Path) -> None:
    cfg, host = config(tmp_path), healthy_host(tmp_path)
    status = master() | {
        "probe_local_failures": {
            "total": 40,
            "by_reason": {"EMFILE": 38, "EADDRNOTAVAIL": 2},
            "last_reason": "EMFILE",
            "last_error": "connect to 198.18.1.11:80: too many open files (local EMFILE: ...)",
            "last_at": 1_700_000_000.0,
            "last_seconds_ago": 12.5,
        }
    }
    findings = [f for f in diagnose(cfg, None, host, status, None) if f.topic == "checks"]
    assert len(findings) == 1
    [found] = findings
    assert found.level == "fail"
    assert "40 health probe(s) could not run" in found.message
    assert "(EADDRNOTAVAIL 2, EMFILE 38)" in found.message
    assert "verdicts were kept" in found.message
    assert "Last 12 s ago: connect to 198.18.1.11:80: too many open files" in found.message
    assert "LimitNOFILE" in found.fix and "ip_local_port_range" in found.fix
    old = status["probe_local_failures"] | {"last_seconds_ago": 7200.0}
    [stale] = [
        f
        for f in diagnose(cfg, None, host, master() | {"probe_local_failures": old}, None)
        if f.topic == "checks"
    ]
    assert stale.level == "warn"
    none = {"total": 0, "by_reason": {}, "last_seconds_ago": None}
    quiet = diagnose(cfg, None, host, master() | {"probe_local_failures": none}, None)
    assert problems(quiet) == []


def test_director_faults_the_daemon_reports(tmp_path: Path) -> None:
    cfg, host = config(tmp_path), healthy_host(tmp_path)
    daemon = master() | {
        "director_faults": [
            "open-file limit 1024 is below the 10120 this config needs (...)",
            "/var/lib/director/maintenance.json: not JSON (...); drains kept: none",
        ]
    }
    found = [f for f in diagnose(cfg, None, host, daemon, None) if f.topic == "daemon"]
    fails = [f for f in found if f.level == "fail"]
    assert [f.message.split(":")[0] for f in fails] == ["director fault", "director fault"]
    assert "LimitNOFILE" in fails[0].fix
    assert ".corrupt-" in fails[1].fix


ACTIVE_ACTIVE = """
[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.10"
port = 80
scheduler = "{scheduler}"
forwarding = "dr"
  [[virtual_server.real_server]]
  address = "198.18.1.11"

[bgp]
backend = "kernel"
[[bgp.announce]]
prefix = "198.18.0.10"
virtual_servers = ["web"]
"""


def test_active_active_wants_hashing_and_sloppy_tcp(tmp_path: Path) -> None:
    host = healthy_host(tmp_path)
    for name in ("sloppy_tcp", "schedule_icmp"):
        (host.proc_sys / "net/ipv4/vs" / name).write_text("0\n")
    path = tmp_path / "aa.toml"
    path.write_text(ACTIVE_ACTIVE.format(scheduler="wlc"))
    found = [
        f
        for f in diagnose(load_config(path), None, host, master(), None)
        if f.topic == "active-active"
    ]
    assert [f.level for f in found] == ["warn", "warn", "warn"]
    assert "uses scheduler wlc" in found[0].message and '"mh"' in found[0].fix
    assert "sloppy_tcp is 0" in found[1].message
    assert found[1].fix == '[kernel.sysctls] "net.ipv4.vs.sloppy_tcp" = 1'
    for name in ("sloppy_tcp", "schedule_icmp"):
        (host.proc_sys / "net/ipv4/vs" / name).write_text("1\n")
    quiesce = ACTIVE_ACTIVE.format(scheduler="mh").replace(
        'forwarding = "dr"', 'forwarding = "dr"\non_failure = "quiesce"'
    )
    path.write_text(quiesce)
    found = [
        f
        for f in diagnose(load_config(path), None, host, master(), None)
        if f.topic == "active-active"
    ]
    assert [f.level for f in found] == ["ok"]  # a quiesced mh server holds no slots anywhere
    path.write_text(ACTIVE_ACTIVE.format(scheduler="mh"))
    found = [
        f
        for f in diagnose(load_config(path), None, host, master(), None)
        if f.topic == "active-active"
    ]
    assert [f.level for f in found] == ["ok"]
    # without [bgp] nothing is said about it
    assert not [
        f
        for f in diagnose(config(tmp_path), None, host, master(), None)
        if f.topic == "active-active"
    ]
