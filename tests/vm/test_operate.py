"""Operating a real ``directord`` on the real kernel: metrics, directorctl, drain.

client ns --veth-- director ns (VIP 198.18.0.10:7000, NAT, rr) --bridge-- s1 198.18.1.11
                                                                       \\- s2 198.18.1.12

Both real servers echo lines (tests.helpers.longconn). The daemon runs as a process in the
director namespace with its metrics on 127.0.0.1 there and its control socket in a temp dir.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from director import cli
from tests.helpers.netns import Background, Namespace, Topology

pytestmark = pytest.mark.vm

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
VIP, PORT = "198.18.0.10", 7000
SERVERS = {"s1": "198.18.1.11", "s2": "198.18.1.12"}
CONFIG = """
[daemon]
state_dir = "{state}"
control_socket = "{sock}"
metrics_address = "127.0.0.1:9469"
stats_interval = 0.5
[kernel]
ip_forward = true
expire_nodest_conn = true

[[virtual_server]]
name = "echo"
protocol = "tcp"
address = "198.18.0.10"
port = 7000
scheduler = "rr"
  [[virtual_server.real_server]]
  name = "s1"
  address = "198.18.1.11"
  weight = {w1}
  [[virtual_server.real_server]]
  name = "s2"
  address = "198.18.1.12"
"""
TRAFFIC = """
import socket, sys
for i in range(int(sys.argv[1])):
    with socket.create_connection(("198.18.0.10", 7000), timeout=10) as s, s.makefile("rwb") as f:
        for n in range(i + 1):
            f.write(b"x" * (100 * (n + 1)) + b"\\n"); f.flush()
            assert len(f.readline()) == 100 * (n + 1) + 1
"""


def ctl_as(uid: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``directorctl argv`` run by ``uid`` (fork, drop privileges, run the CLI, report)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only os-level calls and the CLI, then _exit
        code = 99
        try:
            os.close(r)
            sys.stdout = sys.stderr = os.fdopen(w, "w")  # pytest's capture is not fd 1/2 here
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            code = cli.main(argv)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), "", text)


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float = 60,
    explain: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{explain()}")


class Conn:
    """A long-lived client connection through the VIP."""

    def __init__(self, client: Namespace) -> None:
        self.proc = subprocess.Popen(
            client.argv(PY, "-m", "tests.helpers.longconn", "client", VIP, str(PORT)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first.startswith("connected"), first
        self.port = int(first.split()[1])

    def say(self, word: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@dataclass
class Lab:
    topo: Topology
    client: Namespace
    director: Namespace
    tmp: Path
    daemon: Background | None = None
    conns: list[Conn] = field(default_factory=list)

    @property
    def sock(self) -> Path:
        return self.tmp / "run" / "control.sock"

    @property
    def config(self) -> Path:
        return self.tmp / "director.toml"

    def write_config(self, w1: int = 1) -> None:
        state = self.tmp / "state"
        self.config.write_text(CONFIG.format(state=state, sock=self.sock, w1=w1))

    def start(self) -> Background:
        self.daemon = self.director.spawn(
            PY, "-m", "director.daemon", "--config", str(self.config), "--log-format", "json"
        )
        wait_for("the control socket", lambda: self.ctl("status").returncode == 0, 120)
        return self.daemon

    def stop(self) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGTERM)
        assert self.daemon.proc.wait(timeout=60) == 0
        self.daemon = None

    def ctl(self, *argv: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
        """directorctl, in this process (no interpreter start-up in the slow guest), or in a
        forked child that dropped to ``user`` first."""
        full = ["--socket", str(self.sock), *argv]
        if user is not None:
            return ctl_as(user, full)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(full)
        return subprocess.CompletedProcess(full, code, out.getvalue(), err.getvalue())

    def explain(self) -> str:
        """What to look at when a wait times out: the table, the status, the daemon's log."""
        log = self.daemon.output()[-4000:] if self.daemon is not None else "(no daemon)"
        return "\n".join(
            (self.ipvsadm("-Ln"), self.ipvsadm("-Lnc"), self.ctl("status").stdout, log)
        )

    def ipvsadm(self, *args: str) -> str:
        return self.director.run("ipvsadm", *args).stdout

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = self.director.run("curl", "-sf", "http://127.0.0.1:9469/metrics").stdout
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def connect(self) -> Conn:
        conn = Conn(self.client)
        self.conns.append(conn)
        return conn

    def connections(self) -> dict[str, list[int]]:
        """Client ports of the kernel's connection entries, by real server."""
        out: dict[str, list[int]] = {name: [] for name in SERVERS}
        for line in self.ipvsadm("-Lnc").splitlines()[2:]:
            _, _, _, source, _, dest = line.split()[:6]
            name = next(n for n, a in SERVERS.items() if dest.startswith(f"{a}:"))
            out[name].append(int(source.rsplit(":", 1)[1]))
        return out

    def server_of(self, conn: Conn) -> str:
        """Which real server (s1/s2) the kernel sent ``conn`` to."""
        for line in self.ipvsadm("-Lnc").splitlines():
            if f"198.18.0.2:{conn.port} " in line + " ":
                dest = line.split()[5].rsplit(":", 1)[0]  # pro expire state source virtual dest
                return next(n for n, a in SERVERS.items() if a == dest)
        raise AssertionError(f"no IPVS connection for client port {conn.port}")


def listens(ns: Namespace) -> Callable[[], bool]:
    return lambda: f":{PORT}" in ns.run("ss", "-ltnH").stdout


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    tmp_path.chmod(0o755)  # the non-root client must reach the socket's directory to be refused
    with Topology() as topo:
        client, director = topo.namespace("client"), topo.namespace("director")
        topo.veth(client, "eth0", director, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
        director.add_address("c0", f"{VIP}/32")
        director.bridge("br0")
        director.add_address("br0", "198.18.1.1/24")
        for name, address in SERVERS.items():
            ns = topo.namespace(name)
            topo.attach(ns, "eth0", director, "br0", addr=f"{address}/24")
            ns.add_route("default", "198.18.1.1")
            ns.spawn(PY, "-m", "tests.helpers.longconn", "serve", address, str(PORT))
            wait_for(f"{name} to listen", listens(ns))
        lab = Lab(topo, client, director, tmp_path)
        lab.write_config()
        try:
            yield lab
        finally:
            for conn in lab.conns:
                conn.kill()


STAT_FIELDS = (
    "connections",
    "incoming_packets",
    "outgoing_packets",
    "incoming_bytes",
    "outgoing_bytes",
)


def kernel_stats(text: str) -> dict[str, tuple[int, ...]]:
    """``ipvsadm -Ln --stats --exact``: "service" or "service>dest" -> the five counters."""
    out: dict[str, tuple[int, ...]] = {}
    service = ""
    for line in text.splitlines():
        m = re.match(r"(TCP|UDP)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if m:
            service = m.group(2)
            out[service] = tuple(int(x) for x in m.groups()[2:])
        m = re.match(r"\s+->\s+(\d\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if m:
            out[f"{service}>{m.group(1)}"] = tuple(int(x) for x in m.groups()[1:])
    return out


def scraped_stats(
    got: dict[tuple[str, frozenset[tuple[str, str]]], float],
) -> dict[str, tuple[int, ...]]:
    out: dict[str, list[int]] = {}
    for (name, labels), value in got.items():
        lab = dict(labels)
        for kind in ("service", "backend"):
            prefix = f"director_ipvs_{kind}_"
            if not name.startswith(prefix) or not name.endswith("_total"):
                continue
            field_name = name[len(prefix) : -len("_total")]
            if field_name not in STAT_FIELDS:
                continue
            key = f"{lab['local_address']}:{lab['local_port']}"
            if kind == "backend":
                key += f">{lab['remote_address']}:{lab['remote_port']}"
            out.setdefault(key, [0] * 5)[STAT_FIELDS.index(field_name)] = int(value)
    return {k: tuple(v) for k, v in out.items()}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def wait_fresh(lab: Lab, after: float) -> Samples:
    """A scrape whose IPVS reading was taken after ``after`` (wall clock)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = lab.scrape()
        if got.get(("director_ipvs_stats_timestamp_seconds", frozenset()), 0) > after:
            return got
        time.sleep(0.2)
    raise AssertionError("no fresh IPVS reading in the metrics")


def test_metrics_match_the_kernel_counters(lab: Lab) -> None:
    lab.start()
    lab.client.run(PY, "-c", TRAFFIC, "6")  # 6 connections, 21 request lines, 100..600 bytes
    time.sleep(2.5)  # the kernel folds per-CPU counters into its totals every 2 s
    for _ in range(10):
        before = lab.ipvsadm("-Ln", "--stats", "--exact")
        got = wait_fresh(lab, time.time())
        if lab.ipvsadm("-Ln", "--stats", "--exact") == before:
            break
    kernel = kernel_stats(before)
    scraped = scraped_stats(got)
    assert kernel[f"{VIP}:{PORT}"][0] == 6
    assert kernel[f"{VIP}:{PORT}"][3] > 2100  # bytes of the requests alone
    assert scraped == kernel
    # per-server connection counts and weights as ipvsadm -Ln shows them
    table = lab.ipvsadm("-Ln")
    for name, address in SERVERS.items():
        labels = frozenset(
            {
                "local_address": VIP,
                "local_port": str(PORT),
                "remote_address": address,
                "remote_port": str(PORT),
                "proto": "TCP",
                "local_mark": "",
            }.items()
        )
        row = next(ln.split() for ln in table.splitlines() if f"{address}:{PORT}" in ln)
        # "->", address, forward, weight, ActiveConn, InActConn
        assert got[("director_ipvs_backend_weight", labels)] == int(row[3]), name
        assert got[("director_ipvs_backend_connections_active", labels)] == int(row[4]), name
        assert got[("director_ipvs_backend_connections_inactive", labels)] == int(row[5]), name
    assert got[("director_reconcile_operations_total", frozenset({("reason", "start")}))] == 3
    assert got[("director_role", frozenset({("role", "master")}))] == 1
    lab.stop()


def test_every_directorctl_command_against_the_daemon(lab: Lab) -> None:
    lab.start()
    st = lab.ctl("status")
    assert st.returncode == 0, st.stderr
    assert "director: MASTER" in st.stdout
    assert f"TCP {VIP}:{PORT} rr  [echo]" in st.stdout
    assert "198.18.1.11:7000 (s1)" in st.stdout
    js = json.loads(lab.ctl("status", "--json").stdout)
    assert [s["name"] for s in js["services"][0]["servers"]] == ["s1", "s2"]
    assert js["services"][0]["servers"][0]["weight"] == 1

    lab.write_config(w1=4)
    done = lab.ctl("reload")
    assert done.returncode == 0, done.stderr
    assert "reloaded" in done.stdout
    assert re.search(r"198\.18\.1\.11:7000\s+Masq\s+4", lab.ipvsadm("-Ln"))
    lab.config.write_text(lab.config.read_text().replace("weight = 4", "weight = -4"))
    before = lab.ipvsadm("-Ln")
    bad = lab.ctl("reload")
    assert bad.returncode == 1
    assert "config was rejected" in bad.stderr
    assert "weight" in bad.stderr
    assert lab.ipvsadm("-Ln") == before
    lab.write_config(w1=4)

    drained = lab.ctl("drain", "s2")
    assert drained.returncode == 0, drained.stderr
    assert re.search(r"198\.18\.1\.12:7000\s+Masq\s+0", lab.ipvsadm("-Ln"))
    assert "[draining]" in lab.ctl("status").stdout
    refused = lab.ctl("drain", "s9")
    assert refused.returncode == 1
    assert "no real server matches 's9'" in refused.stderr
    enabled = lab.ctl("enable", "s2")
    assert enabled.returncode == 0, enabled.stderr
    assert re.search(r"198\.18\.1\.12:7000\s+Masq\s+1", lab.ipvsadm("-Ln"))

    doctor = lab.director.run(
        PY, "-m", "director.cli", "--socket", str(lab.sock), "doctor", "-c", str(lab.config),
        check=False,
    )  # fmt: skip
    assert "[ok  ] ip_vs" in doctor.stdout, doctor.stdout + doctor.stderr
    assert "[ok  ] daemon    running, role master" in doctor.stdout

    for argv in (("status",), ("drain", "s1"), ("enable", "s1"), ("reload",)):
        denied = lab.ctl(*argv, user=65534)
        assert denied.returncode == 1, argv
        assert "permission denied" in denied.stderr, denied.stderr

    lab.stop()
    for argv in (("status",), ("drain", "s1"), ("enable", "s1"), ("reload",)):
        down = lab.ctl(*argv)
        assert down.returncode == 1, argv
        assert "directord is not running" in down.stderr, down.stderr


def test_drain_keeps_the_live_connection_then_removes_the_server(lab: Lab) -> None:
    lab.start()
    a = lab.connect()
    assert a.say("hello") == "hello"
    busy = lab.server_of(a)
    other = next(n for n in SERVERS if n != busy)
    done = lab.ctl("drain", busy, "--timeout", "600")
    assert done.returncode == 0, done.stderr
    assert re.search(rf"{re.escape(SERVERS[busy])}:7000\s+Masq\s+0\s+1", lab.ipvsadm("-Ln"))
    assert a.say("still") == "still"
    lab.client.run(PY, "-c", TRAFFIC, "4")
    # the kernel's connection entries (its counters lag by the estimator's 2 s): A alone on the
    # drained server, the 4 new connections on the other
    entries = lab.connections()
    assert entries[busy] == [a.port], entries
    assert len(entries[other]) == 4, entries

    # the drain outlives a reload and a restart
    lab.daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    time.sleep(2)
    lab.stop()
    lab.start()
    assert re.search(rf"{re.escape(SERVERS[busy])}:7000\s+Masq\s+0", lab.ipvsadm("-Ln"))
    assert a.say("after restart") == "after restart"

    # the last connection closes: the server leaves the table within a few readings
    a.close()
    closed = time.monotonic()
    wait_for(
        "the idle server to leave the table",
        lambda: SERVERS[busy] not in lab.ipvsadm("-Ln"),
        timeout=20,
        explain=lab.explain,
    )
    assert time.monotonic() - closed < 20  # stats_interval 0.5 s plus a slow guest's margin
    assert "removed (idle)" in lab.ctl("status").stdout

    # enable brings it back; a drain with a short timeout removes it under a live connection
    assert lab.ctl("enable", busy).returncode == 0
    wait_for("the server back", lambda: SERVERS[busy] in lab.ipvsadm("-Ln"), 20)
    b = lab.connect()
    assert b.say("b") == "b"
    target = lab.server_of(b)
    began = time.monotonic()
    assert lab.ctl("drain", target, "--timeout", "3").returncode == 0
    assert b.say("b2") == "b2"
    wait_for(
        "removal at the timeout",
        lambda: SERVERS[target] not in lab.ipvsadm("-Ln"),
        30,
        explain=lab.explain,
    )
    took = time.monotonic() - began
    assert 3 <= took < 3 + 15, took  # the timeout, plus stats_interval and guest slowness
    assert "removed (timeout)" in lab.ctl("status").stdout
    assert lab.ctl("enable", target).returncode == 0
    lab.stop()
