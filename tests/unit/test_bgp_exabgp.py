"""The ExaBGP config and environment directord writes, checked by ExaBGP's own parser."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

from director.bgp.exabgp import ExaBgp, exabgp_config, exabgp_env, relay_argv
from director.config import parse_config
from director.config.bgp import BgpSettings

CONFIG = """
[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.10"
port = 80

[bgp]
local_as = 65001
router_id = "198.18.1.1"

[[bgp.neighbor]]
address = "198.18.1.254"
peer_as = 65000
hold_time = 3
password = "s3 cret"
local_address = "198.18.1.1"

[[bgp.neighbor]]
address = "2001:db8:1::fe"
peer_as = 65000
"""


def bgp_settings() -> BgpSettings:
    bgp = parse_config(CONFIG).bgp
    assert bgp is not None
    return bgp


def test_config_has_every_neighbour_and_the_api_process(tmp_path: Path) -> None:
    bgp = bgp_settings()
    relay = relay_argv(tmp_path / "exabgp.sock")
    local = {ipaddress.ip_address("2001:db8:1::fe"): ipaddress.ip_address("2001:db8:1::1")}
    text = exabgp_config(bgp, relay, local)
    assert f"run {sys.executable} -m director.bgp.relay {tmp_path}/exabgp.sock;" in text
    assert "neighbor 198.18.1.254 {" in text and "neighbor 2001:db8:1::fe {" in text
    assert "    local-address 198.18.1.1;" in text  # configured
    assert "    local-address 2001:db8:1::1;" in text  # found by the kernel's route
    assert '    md5-password "s3 cret";' in text
    assert text.count("neighbor-changes;") == 2
    assert "    hold-time 3;" in text and "    hold-time 9;" in text


def test_exabgp_parses_the_config(tmp_path: Path) -> None:
    bgp = bgp_settings()
    local = {ipaddress.ip_address("2001:db8:1::fe"): ipaddress.ip_address("2001:db8:1::1")}
    path = tmp_path / "exabgp.conf"
    path.write_text(exabgp_config(bgp, relay_argv(tmp_path / "s"), local))
    env = exabgp_env(str(tmp_path / "exabgp.log"))
    done = subprocess.run(
        [sys.executable, "-m", "exabgp", "--test", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(path.read_text().replace("peer-as 65000;", "peer-as x;", 1))
    done = subprocess.run(
        [sys.executable, "-m", "exabgp", "--test", str(broken)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0


def test_environment_and_command_line(tmp_path: Path) -> None:
    env = exabgp_env("/x/exabgp.log", {"PATH": "/usr/bin"})
    assert env["PATH"] == "/usr/bin"
    assert env["exabgp.api.ack"] == "true"  # every command answered: done / error
    assert env["exabgp.api.respawn"] == "false"
    assert env["exabgp.daemon.user"] == "root"  # a change of user would clear the pdeathsig
    assert env["exabgp.log.destination"] == "/x/exabgp.log"  # not a pipe
    assert env["exabgp.tcp.bind"] == ""  # no listening socket
    argv = ExaBgp(bgp_settings(), tmp_path).argv()
    assert argv[:4] == ["setpriv", "--pdeathsig", "TERM", "--"]
    assert argv[4:] == [sys.executable, "-m", "exabgp", str(tmp_path / "exabgp.conf")]
