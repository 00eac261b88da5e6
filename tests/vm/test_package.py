"""The Debian package under real systemd (PID 1 in its own guest boot), on the real kernel.

The guest boots systemd (``vm(init="systemd")``); these tests install the package built on the
host (tests/helpers/package.py) and run ``directord`` as the packaged unit, unchanged except
for two drop-ins of the watchdog test. The director is the guest's own network stack (the guest
has no NIC): ``lan0`` to a bridge in a namespace where keepalived (the VRRP peer) and a client
sit, ``srv0`` to a web server namespace behind NAT.

The tests run in order and share one lab: install (enabled, not started), start (active only
after READY=1), everything the sandbox must allow (VRRP, GARP, nftables, the sync daemon,
sysctls, a check script and a notify hook run as nobody), the journal's fields, reloads,
the watchdog, kill -9, stop, upgrade, remove and purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.helpers import package
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.helpers.vm.initramfs import REPO
from tests.vrrp_io import keepalived
from tests.vrrp_io.capture import Capture
from tests.vrrp_io.lab import wait_until as wait_for

pytestmark = pytest.mark.vm(init="systemd")

UNIT = "directord.service"
CONFIG = Path("/etc/director/director.toml")
STATE = Path("/var/lib/director")
DROPIN = Path("/run/systemd/system/directord.service.d")
VIP = IPv4Address("198.18.0.100")
OURS, PEER, CLIENT = "198.18.0.1", "198.18.0.2", "198.18.0.50"
WEB_GW, WEB = "198.18.1.1", "198.18.1.11"
PORT = 8080
# The guest runs Python ~20x slower than the host: start-up takes 10-20 s there.
START = 120.0

DIRECTOR_TOML = """
[daemon]
log_level = "info"
script_user = "nobody:nogroup"

[kernel]
ip_forward = true
conntrack = true
expire_nodest_conn = true

[kernel.sysctls]
"net.ipv4.vs.sloppy_tcp" = 1

[[vrrp_instance]]
name = "VI_1"
interface = "lan0"
vrid = 51
priority = 150
version = 2
advert_interval = 1.0
preempt = false
virtual_addresses = ["{vip}/24"]
garp_count = 3
garp_repeat_after = 2.0
notify = ["/bin/sh", "-c", "echo \\"$@\\" >> /tmp/notify.log", "notify"]

[sync_daemon]
interface = "lan0"
sync_id = 7

[[snat]]
source = "198.18.1.0/24"
to = "{vip}"

[[virtual_server]]
name = "web"
protocol = "tcp"
address = "{vip}"
port = 80
scheduler = "rr"
forwarding = "nat"

  [virtual_server.check]
  type = "script"
  command = [
    "/usr/bin/python3", "-c",
    "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3); \
open('/tmp/checked', 'a').write('up')",
    "{{address}}", "{{port}}",
  ]
  interval = 5.0
  timeout = 4.0

  [[virtual_server.real_server]]
  name = "web1"
  address = "{web}"
  port = {port}
  weight = {weight}
"""

# A line-echo server: each line comes back prefixed with "web1 "; connections stay open.
ECHO = """
import socket, threading
server = socket.create_server(("0.0.0.0", {port}), backlog=64)
def serve(conn):
    with conn, conn.makefile("rwb", buffering=0) as f:
        for line in f:
            f.write(b"web1 " + line)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def sh(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def unit(*properties: str) -> dict[str, str]:
    out = sh("systemctl", "show", UNIT, *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def our_vip() -> bool:
    return f"inet {VIP}/" in sh("ip", "-4", "address", "show", "dev", "lan0").stdout


def write_config(weight: int = 1, text: str | None = None) -> None:
    CONFIG.write_text(
        text
        if text is not None
        else DIRECTOR_TOML.format(vip=VIP, web=WEB, port=PORT, weight=weight)
    )


def ipvs_weight() -> int | None:
    """web1's weight in the kernel (``ipvsadm -Ln``), None if it is not in the table."""
    for line in sh("ipvsadm", "-Ln").stdout.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] == "->" and words[1] == f"{WEB}:{PORT}":
            return int(words[3])
    return None


def journal(since_cursor: str | None = None) -> list[dict[str, str]]:
    argv = ["journalctl", "-u", UNIT, "-o", "json", "--no-pager"]
    if since_cursor:
        argv += ["--after-cursor", since_cursor]
    entries = []
    for line in sh(*argv).stdout.splitlines():
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def recent(count: int = 40) -> str:
    """The unit's last journal lines (with systemd's own), for failure messages."""
    out = sh("journalctl", "-u", UNIT, "-n", str(count), "--no-pager", "-o", "short-monotonic")
    return out.stdout[-6000:]


def complaints() -> str:
    """The daemon's warnings and errors in the journal, for failure messages."""
    lines = [e.get("MESSAGE", "") for e in journal() if e.get("PRIORITY", "6") <= "4"]
    return "\n".join(str(x) for x in lines[-20:])


FIGURES = REPO / ".vmcache" / "logs" / "package-figures.log"


def record(line: str) -> None:
    """A measured figure, kept on the host (the project share) for the closing note."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def private_tmp(name: str) -> Path | None:
    """A file the daemon's children wrote in the unit's PrivateTmp (seen from outside)."""
    found = glob.glob(f"/tmp/systemd-private-*-{UNIT}-*/tmp/{name}")
    return Path(found[0]) if found else None


@dataclass
class Lab:
    topology: Topology
    switch: Namespace
    peer: Namespace
    client: Namespace
    web: Namespace
    client_loop: NamespaceLoop
    keepalived: Background | None = None

    def peer_has_vip(self) -> bool:
        return f"inet {VIP}/" in self.peer.ip("-4", "address", "show", "dev", "eth0")

    def start_keepalived(self, tmp: Path) -> None:
        text = keepalived.config(version=2, vrid=51, priority=100, interval=1.0, vip=VIP)
        tmp.mkdir(parents=True, exist_ok=True)
        self.keepalived = keepalived.start(self.peer, tmp, text)

    def stop_keepalived(self) -> None:
        if self.keepalived is not None:
            self.keepalived.stop()
            self.keepalived = None


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Topology() as topo:
        switch = topo.namespace("sw")
        switch.bridge("br0")
        # The director is the guest's own stack: lan0 to the bridge, srv0 to the web server.
        sh("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "d1port", "netns",
           switch.name)  # fmt: skip
        switch.ip("link", "set", "dev", "d1port", "master", "br0")
        switch.up("d1port")
        sh("ip", "address", "add", f"{OURS}/24", "dev", "lan0")
        sh("ip", "link", "set", "dev", "lan0", "up")
        peer, client, web = topo.namespace("ka"), topo.namespace("cl"), topo.namespace("web")
        topo.attach(peer, "eth0", switch, "br0", addr=f"{PEER}/24")
        topo.attach(client, "eth0", switch, "br0", addr=f"{CLIENT}/24")
        sh("ip", "link", "add", "srv0", "type", "veth", "peer", "name", "eth0", "netns", web.name)
        sh("ip", "address", "add", f"{WEB_GW}/24", "dev", "srv0")
        sh("ip", "link", "set", "dev", "srv0", "up")
        web.add_address("eth0", f"{WEB}/24")
        web.up("eth0")
        web.add_route("default", WEB_GW)
        web.spawn("python3", "-c", ECHO.format(port=PORT))
        with NamespaceLoop(client) as client_loop:
            lab = Lab(topo, switch, peer, client, web, client_loop)
            try:
                yield lab
            finally:
                lab.stop_keepalived()
                sh("systemctl", "stop", UNIT, check=False)
                sh("dpkg", "--purge", "director", check=False)
                sh("ip", "link", "del", "lan0", check=False)
                sh("ip", "link", "del", "srv0", check=False)
                sh("nft", "delete", "table", "inet", "director", check=False)
                sh("ipvsadm", "-C", check=False)


class Conversation:
    """One TCP connection from the client through the VIP to web1, kept open across restarts."""

    def __init__(self, inside: NamespaceLoop) -> None:
        self.inside = inside
        self.reader, self.writer = inside.run(asyncio.open_connection(str(VIP), 80))

    def say(self, text: str, within: float = 30) -> str:
        async def exchange() -> str:
            self.writer.write(text.encode() + b"\n")
            await self.writer.drain()
            return (await asyncio.wait_for(self.reader.readline(), within)).decode().strip()

        return self.inside.run(exchange(), timeout=within + 5)

    def close(self) -> None:
        async def close() -> None:
            self.writer.close()

        self.inside.run(close())


def test_install_enables_the_unit_without_starting_it(lab: Lab) -> None:
    previous = package.path(package.PREVIOUS)
    assert previous.is_file(), f"{previous}: the host builds it before the guest boots"
    done = sh("apt-get", "install", "-y", "-q", "--no-install-recommends", str(previous))
    assert "Setting up director" in done.stdout, done.stdout
    assert sh("systemctl", "is-enabled", UNIT, check=False).stdout.strip() == "enabled"
    assert sh("systemctl", "is-active", UNIT, check=False).stdout.strip() == "inactive"
    assert Path("/usr/sbin/directord").resolve() == Path("/opt/director/bin/directord")
    assert sh("directord", "--check-config", str(CONFIG)).returncode == 0  # the shipped file
    assert sh("dpkg-query", "-W", "-f=${Conffiles}", "director").stdout.split()[0] == str(CONFIG)


def test_start_is_active_only_after_ready(lab: Lab) -> None:
    write_config()
    started = time.monotonic()
    sh("systemctl", "start", UNIT, timeout=START)
    took = time.monotonic() - started
    props = unit("ActiveState", "SubState", "StatusText", "ExecMainStartTimestampMonotonic",
                 "ActiveEnterTimestampMonotonic", "MainPID")  # fmt: skip
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    # Type=notify: systemctl start returned once the daemon said READY=1, after the table was
    # applied (not when the process was forked): the kernel has the service already.
    waited = (
        int(props["ActiveEnterTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])
    ) / 1e6
    assert waited > 0.5, props
    assert ipvs_weight() == 1
    assert props["StatusText"], props  # STATUS= from the daemon, shown by systemctl status
    status = sh("systemctl", "status", UNIT, "--no-pager", check=False).stdout
    assert f'Status: "{props["StatusText"]}"' in status, status
    record(f"systemctl start returned after {took:.1f} s; active {waited:.1f} s after exec")


def test_the_sandbox_lets_every_feature_work(lab: Lab) -> None:
    capture = Capture(lab.client_loop)
    try:
        wait_for(our_vip, 30, "the VIP on lan0 (VRRP master)")
        # Gratuitous ARP for the VIP reached the LAN (the repeat is garp_repeat_after later).
        wait_for(
            lambda: any(a.gratuitous and a.sender_ip == VIP for a in capture.arps()),
            10,
            "a gratuitous ARP for the VIP at the client",
        )
    finally:
        capture.close()

    # nftables: the master-only SNAT rule (installed once the role is master).
    def snat() -> bool:
        return f"snat ip to {VIP}" in sh("nft", "list", "ruleset").stdout

    with contextlib.suppress(AssertionError):
        wait_for(snat, 30, "the SNAT rule")
    assert snat(), f"no SNAT rule; the daemon said:\n{complaints()}"
    # The IPVS sync daemon (master while master).
    daemons = sh("ipvsadm", "-L", "--daemon").stdout
    assert "master sync daemon" in daemons and "syncid=7" in daemons, daemons
    # Sysctls.
    for key in ("ip_forward", "vs/conntrack", "vs/expire_nodest_conn", "vs/sloppy_tcp"):
        assert Path("/proc/sys/net/ipv4", key).read_text().strip() == "1", key
    # The check script ran (as nobody, in the unit's private /tmp) and web1 is in service.
    wait_for(lambda: private_tmp("checked") is not None, 30, "the check script's mark")
    checked = private_tmp("checked")
    assert checked is not None and os.stat(checked).st_uid == 65534  # nobody
    assert ipvs_weight() == 1
    # The notify hook ran on becoming master (keepalived's argument order).
    wait_for(lambda: private_tmp("notify.log") is not None, 30, "the notify hook's log")
    log = private_tmp("notify.log")
    assert log is not None
    assert "INSTANCE VI_1 MASTER 150" in log.read_text(), log.read_text()
    # Traffic: the client reaches web1 through the VIP.
    talk = Conversation(lab.client_loop)
    try:
        assert talk.say("hello") == "web1 hello"
    finally:
        talk.close()


def test_the_journal_has_structured_fields(lab: Lab) -> None:
    entries = journal()

    # The daemon's own lines (not ExecStartPre's check-config or ExecStopPost's cleanup, which
    # print to a terminal-less stdout) come natively, one field per key.
    def daemon(entry: dict[str, str]) -> bool:
        words = entry.get("_CMDLINE", "").split()
        return "--config" in words and "--cleanup" not in words

    ours = [e for e in entries if daemon(e)]
    assert ours, entries[-5:]
    assert {e.get("_TRANSPORT") for e in ours} == {"journal"}, [
        e.get("MESSAGE") for e in ours if e.get("_TRANSPORT") != "journal"
    ]
    transitions = [e for e in ours if e.get("EVENT") == "vrrp_transition"]
    assert any(
        e.get("INSTANCE") == "VI_1" and e.get("STATE", "").upper() == "MASTER" for e in transitions
    ), transitions
    assert all({"LEVEL", "PRIORITY", "MESSAGE"} <= e.keys() for e in ours)
    # Filtering on a field works as operators will use it: an instance, a drained server.
    only = sh("journalctl", "-u", UNIT, "INSTANCE=VI_1", "-o", "json", "--no-pager").stdout
    assert only.strip() and all(json.loads(x)["INSTANCE"] == "VI_1" for x in only.splitlines())
    sh("directorctl", "drain", "web1", "--service", "web", timeout=60)
    sh("directorctl", "enable", "web1", "--service", "web", timeout=60)

    def drains() -> list[dict[str, str]]:
        argv = ["journalctl", "-u", UNIT, "SERVER=web1", "SERVICE=web", "-o", "json"]
        return [json.loads(x) for x in sh(*argv, "--no-pager").stdout.splitlines()]

    wait_for(lambda: len(drains()) >= 2, 10, "the drain and enable lines")
    assert [e["EVENT"] for e in drains()][-2:] == ["drain", "enable"]
    assert all(e["LEVEL"] == "warning" and e["PRIORITY"] == "4" for e in drains())
    wait_for(lambda: ipvs_weight() == 1, 30, "web1 back in service")


def test_reload_refuses_a_broken_file_and_applies_a_good_one(lab: Lab) -> None:
    pid = unit("MainPID")["MainPID"]
    good = CONFIG.read_text()
    write_config(text=good.replace("priority = 150", 'priority = "high"'))
    done = sh("systemctl", "reload", UNIT, check=False, timeout=START)
    assert done.returncode != 0, "a broken file must fail the reload"
    props = unit("ActiveState", "MainPID")
    assert props == {"ActiveState": "active", "MainPID": pid}
    assert ipvs_weight() == 1
    write_config(weight=3)
    sh("systemctl", "reload", UNIT, timeout=START)
    wait_for(lambda: ipvs_weight() == 3, 30, "weight 3 in the kernel after the reload")
    assert unit("MainPID")["MainPID"] == pid


def test_a_hung_main_loop_is_restarted_by_the_watchdog(lab: Lab) -> None:
    # A shorter watchdog and abort timeout for the test (the unit ships 30 s and the stop
    # timeout); SIGSTOP stands for a hung loop: no WATCHDOG=1 comes.
    DROPIN.mkdir(parents=True, exist_ok=True)
    (DROPIN / "test-watchdog.conf").write_text("[Service]\nWatchdogSec=15s\nTimeoutAbortSec=3s\n")
    sh("systemctl", "daemon-reload")
    sh("systemctl", "restart", UNIT, timeout=START)
    wait_for(our_vip, 30, "master again after the restart")
    talk = Conversation(lab.client_loop)
    try:
        assert talk.say("before") == "web1 before"
        props = unit("MainPID", "NRestarts")
        os.kill(int(props["MainPID"]), signal.SIGSTOP)
        stopped = time.monotonic()
        wait_for(
            lambda: unit("NRestarts")["NRestarts"] != props["NRestarts"],
            60,
            "the watchdog's restart",
        )
        restarted = time.monotonic() - stopped
        wait_for(lambda: unit("ActiveState")["ActiveState"] == "active", START, "active again")
        assert unit("MainPID")["MainPID"] != props["MainPID"]
        result = unit("Result")
        assert ipvs_weight() == 3, "the IPVS table survives the restart"
        wait_for(our_vip, 60, "master again")
        assert talk.say("after") == "web1 after", "the established connection survives"
        record(f"watchdog: restart {restarted:.1f} s after SIGSTOP; {result}; connection kept")
    finally:
        talk.close()
        (DROPIN / "test-watchdog.conf").unlink()
        sh("systemctl", "daemon-reload")
    watchdog = [e for e in journal() if "watchdog" in e.get("MESSAGE", "").lower()]
    assert watchdog, "systemd logs the watchdog timeout"


def test_kill_9_cleans_up_restarts_and_rejoins_as_backup(lab: Lab, tmp_path: Path) -> None:
    lab.start_keepalived(tmp_path / "ka")
    time.sleep(3)  # keepalived hears our adverts and stays backup
    assert our_vip() and not lab.peer_has_vip(), recent()
    props = unit("MainPID", "NRestarts")
    os.kill(int(props["MainPID"]), signal.SIGKILL)
    killed = time.monotonic()
    vip_gone = peer_master = None
    both_after_restart = samples = 0
    while time.monotonic() - killed < 90:
        mine, theirs = our_vip(), lab.peer_has_vip()
        now = time.monotonic() - killed
        if vip_gone is None and not mine:
            vip_gone = now
        if peer_master is None and theirs:
            peer_master = now
        if unit("NRestarts")["NRestarts"] != props["NRestarts"]:  # restarted: rejoining
            samples += 1
            both_after_restart += mine and theirs
            if theirs and not mine and unit("ActiveState")["ActiveState"] == "active":
                break
        time.sleep(0.2)
    assert vip_gone is not None, "ExecStopPost removed the VIP"
    # by `ip -batch` (the Python cleanup alone took 22.8 s here, long after the peer's take-over)
    assert vip_gone < 10, vip_gone
    assert peer_master is not None, "keepalived took over"
    assert unit("ActiveState")["ActiveState"] == "active", "Restart=on-failure"
    assert lab.peer_has_vip() and not our_vip(), "the restarted node is backup"
    # Backup for a while more: no duplicate VIP, and our status says BACKUP.
    for _ in range(10):
        samples += 1
        both_after_restart += our_vip() and lab.peer_has_vip()
        time.sleep(0.3)
    assert both_after_restart == 0, f"VIP on both nodes in {both_after_restart}/{samples} samples"
    status = sh("directorctl", "status").stdout
    assert "BACKUP" in status.upper(), status
    rules = sh("nft", "list", "ruleset").stdout
    assert "snat" not in rules, "a backup holds no master-only rule"
    record(
        f"kill -9: VIP gone from lan0 after {vip_gone:.1f} s (ExecStopPost), keepalived "
        f"master after {peer_master:.1f} s; {samples} samples after the restart, none on both"
    )


def test_stop_hands_over_to_the_peer_and_leaves_the_table(lab: Lab, tmp_path: Path) -> None:
    lab.stop_keepalived()  # its priority 0 advert: we take over
    wait_for(our_vip, 30, "master after keepalived stopped")
    lab.start_keepalived(tmp_path / "ka")
    time.sleep(3)
    assert our_vip() and not lab.peer_has_vip()
    started = time.monotonic()
    sh("systemctl", "stop", UNIT, timeout=START)
    took = wait_for(lab.peer_has_vip, 10, "keepalived master after our stop")
    assert not our_vip()
    assert unit("ActiveState")["ActiveState"] == "inactive"
    assert ipvs_weight() == 3, "the IPVS table stays after a stop"
    record(
        f"systemctl stop took {time.monotonic() - started:.1f} s; "
        f"peer master {took:.1f} s after it returned"
    )


def test_upgrade_keeps_config_and_drains_and_restarts(lab: Lab) -> None:
    sh("systemctl", "start", UNIT, timeout=START)
    sh("directorctl", "drain", "web1", timeout=60)
    wait_for(lambda: ipvs_weight() == 0, 30, "web1 drained")
    config = CONFIG.read_text()
    pid = unit("MainPID")["MainPID"]
    current = package.path(package.CURRENT)
    done = sh("dpkg", "-i", str(current), timeout=600)
    assert "Setting up director (" + package.version(package.CURRENT) in done.stdout, done.stdout
    assert CONFIG.read_text() == config, "the administrator's config is kept"
    wait_for(lambda: unit("ActiveState")["ActiveState"] == "active", START, "active again")
    assert unit("MainPID")["MainPID"] != pid, "restarted on upgrade (it was running)"
    assert ipvs_weight() == 0, "the drain survives the upgrade"
    assert "web1" in json.loads((STATE / "maintenance.json").read_text()).__repr__()
    version = sh("dpkg-query", "-W", "-f=${Version}", "director").stdout
    assert version == package.version(package.CURRENT)


def test_rollback_to_the_previous_package_keeps_config_and_drains(lab: Lab) -> None:
    """docs/operations.md's rollback: the previous package file installed over the new one."""
    config = CONFIG.read_text()
    pid = unit("MainPID")["MainPID"]
    previous = package.path(package.PREVIOUS)
    done = sh("apt-get", "install", "-y", "-q", "--allow-downgrades", str(previous), timeout=600)
    assert "Setting up director (" + package.version(package.PREVIOUS) in done.stdout, done.stdout
    assert sh("dpkg-query", "-W", "-f=${Version}", "director").stdout == package.version(
        package.PREVIOUS
    )
    assert CONFIG.read_text() == config
    wait_for(lambda: unit("ActiveState")["ActiveState"] == "active", START, "active again")
    assert unit("MainPID")["MainPID"] != pid, "restarted on the downgrade (it was running)"
    assert ipvs_weight() == 0, "the drain survives the rollback"
    sh("directorctl", "enable", "web1", timeout=60)
    wait_for(lambda: ipvs_weight() == 3, 30, "web1 back in service")


def test_upgrade_of_a_stopped_daemon_does_not_start_it(lab: Lab) -> None:
    sh("systemctl", "stop", UNIT, timeout=START)
    sh("dpkg", "-i", str(package.path(package.CURRENT)), timeout=600)  # a reinstall
    assert unit("ActiveState")["ActiveState"] == "inactive"


def test_remove_keeps_config_and_state_purge_deletes_them(lab: Lab) -> None:
    sh("systemctl", "start", UNIT, timeout=START)
    sh("dpkg", "--remove", "director", timeout=300)
    assert unit("ActiveState")["ActiveState"] == "inactive", "stopped on remove"
    assert not Path("/opt/director/bin/directord").exists()
    assert CONFIG.is_file() and (STATE / "maintenance.json").is_file()
    sh("dpkg", "--purge", "director", timeout=300)
    assert not CONFIG.exists() and not STATE.exists()
