"""Debian's keepalived (2.2.7) run in a namespace, VRRP subsystem only, from a generated config."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers.netns import Background, Namespace
from vrrp.packet import IPAddress


def binary() -> str:
    found = shutil.which("keepalived") or (
        "/usr/sbin/keepalived" if Path("/usr/sbin/keepalived").exists() else None
    )
    if found is None:
        pytest.skip("keepalived not installed (apt-get install keepalived)")
    return found


def config(
    *,
    version: int,
    vrid: int,
    priority: int,
    interval: float,
    vip: IPAddress,
    interface: str = "eth0",
    password: str | None = None,
    state: str = "BACKUP",
    garp_repeat: int = 1,
    garp_delay: int = 0,
) -> str:
    auth = (
        f"    authentication {{\n        auth_type PASS\n        auth_pass {password}\n    }}\n"
        if password is not None
        else ""
    )
    return (
        "global_defs {\n"
        "    router_id director-test\n"
        f"    vrrp_version {version}\n"
        f"    vrrp_garp_master_repeat {garp_repeat}\n"
        f"    vrrp_garp_master_delay {garp_delay}\n"
        "}\n"
        "vrrp_instance VI {\n"
        f"    state {state}\n"
        f"    interface {interface}\n"
        f"    virtual_router_id {vrid}\n"
        f"    priority {priority}\n"
        f"    advert_int {interval:g}\n"
        f"{auth}"
        f"    virtual_ipaddress {{\n        {vip}/{vip.max_prefixlen} dev {interface}\n    }}\n"
        "}\n"
    )


def start(ns: Namespace, directory: Path, text: str) -> Background:
    """keepalived -P -n -l -D -G with its config and pid files under ``directory``."""
    conf = directory / "keepalived.conf"
    conf.write_text(text)
    return ns.spawn(
        binary(),
        "--vrrp",
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--use-file",
        str(conf),
        "--pid",
        str(directory / "keepalived.pid"),
        "--vrrp_pid",
        str(directory / "vrrp.pid"),
    )


def crash(job: Background) -> None:
    """kill -9 the whole process group (parent and VRRP child): no priority 0 advert."""
    os.killpg(job.proc.pid, signal.SIGKILL)
    job.proc.wait(5)
