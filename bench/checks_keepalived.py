"""Health checks side by side with keepalived 2.2.7, in the real-kernel guest.

    .venv/bin/python -m bench.checks_keepalived [--servers 50] [--seconds 30] [--trials 5]
        [--parts cpu,detect] [--runs 1] [--python PATH] [--baseline DIR] [--beside DIR] [--host]

keepalived exits when the kernel has no IPVS, so by default the whole comparison runs in the
QEMU guest (same emulation, same single vCPU for both). Under TCG, though, the guest runs
interpreted Python about 94x slower than the host and system calls about 15x: the emulation
itself weighs against a Python checker. ``--host`` runs the same parts on this machine's own
kernel, without emulation: keepalived then gets its IPVS socket options answered by
``bench/keepalived_noipvs.c`` (built with gcc, loaded with LD_PRELOAD; it answers as an empty
IPVS table would, and no probe goes through it). Two parts:

cpu
    N HTTP real servers (one nginx in a "farm" namespace, N addresses) are checked every second
    for SECONDS, at the same time, by keepalived (``--check``: HTTP_GET, status 200,
    connect_timeout 1, retry 0, delay_loop 1) and by our checker (the daemon's scheduler, runner
    and probe dispatch, in its own process). CPU is utime+stime from /proc/<pid>/stat of the checker
    processes (keepalived's parent and its checker child); checks are counted server side, from
    nginx's access log (by User-Agent). Prints CPU per check for each and the ratio; with
    ``--runs N``, N such runs one after the other (each with a fresh farm, keepalived and
    checker), the ratio of each and their median. Our checker runs under this interpreter, or
    ``--python PATH``; ``--python debian``: Debian's /usr/bin/python3, the interpreter the
    package runs, in a venv with the package's pinned runtime dependencies
    (debian/constraints.txt), made on first use under .vmcache/ (needs python3-venv and the
    package index; remade when the pins change). ``--beside DIR`` then runs this tree's
    checker and DIR's (another checkout, e.g. an older commit's ``git archive``) at the same
    time against one farm, ``--runs`` times: their CPU per check under the same load, which a
    ratio to keepalived, measured in another window, cannot give on a busy machine.
detect
    One real server checked by both at once: keepalived (HTTP_GET and TCP_CHECK) and ours
    (http, and tcp with send/expect), all with a 1 s interval, 1 s timeout, fall 1 / retry 0.
    Each trial stops nginx (SIGTERM: connection refused) or freezes it (SIGSTOP: the kernel
    still completes the handshake) at a random phase, and records when each checker reports the
    server down (a line appearing in its log, polled every POLL s). Prints min/median/max.

Figures, not a test. Needs root; from the host it boots the guest itself (``--in-guest`` is
the part that runs there).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from checks.model import Check, CheckParams, HealthChanged, ProbeResult, StartProbe
from checks.probes import dispatch, http, tcp
from checks.probes.poller import FastProbe, Poller
from checks.probes.result import Target
from checks.runner import Done, Runner
from checks.schedule import Scheduler
from tests.helpers.netns import Background, Topology

VIP = "198.18.0.100"
FARM_BASE = "198.18.64.1"
POLL = 0.01
KEEPALIVED_UA = "KeepAliveClient"
OUR_UA = http.USER_AGENT

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format ua "$http_user_agent";
    access_log {dir}/access.log ua;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 80 default_server backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

HTTP_GET = """            HTTP_GET {
                url {
                    path /
                    status_code 200
                }
                connect_timeout 1
                retry 0
                delay_before_retry 1
            }
"""

TCP_CHECK = """            TCP_CHECK {
                connect_timeout 1
                retry 0
                delay_before_retry 1
            }
"""


def addresses(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address(FARM_BASE))
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


def keepalived_conf(services: list[tuple[int, str]], servers: list[str]) -> str:
    """One virtual service per (port, checker block), each with every server on port 80."""
    out = ["global_defs {\n    router_id bench\n}\n"]
    for port, checker in services:
        out.append(
            f"virtual_server {VIP} {port} {{\n    delay_loop 1\n    lb_algo rr\n"
            "    lb_kind NAT\n    protocol TCP\n"
        )
        for address in servers:
            out.append(f"    real_server {address} 80 {{\n        weight 1\n{checker}    }}\n")
        out.append("}\n")
    return "".join(out)


# --- process CPU ---------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        try:
            children = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()
        except OSError:
            children = []
        pids += [int(c) for c in children]
        i += 1
    return pids


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of these processes (all their threads), in seconds."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])  # proc(5) fields 14, 15
    return user / TICK, system / TICK


def count_requests(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return counts
    for line in text.splitlines():
        counts[line] = counts.get(line, 0) + 1
    return counts


# --- the lab -------------------------------------------------------------------------------


class Lab:
    def __init__(
        self,
        topo: Topology,
        servers: list[str],
        directory: Path,
        preload: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.topo = topo
        self.python = python  # our checker's interpreter
        self.preload = preload  # a shim for keepalived on a kernel without IPVS (--host)
        self.dir = directory
        self.servers = servers
        self.checker, self.farm = topo.namespace("checker"), topo.namespace("farm")
        topo.veth(
            self.checker, "eth0", self.farm, "eth0", a_addr="198.18.0.1/16", b_addr="198.18.0.2/16"
        )
        batch = "".join(f"address add {a}/32 dev eth0\n" for a in servers)
        self.farm.run("ip", "-batch", "-", stdin=batch)
        self.checker.ip("route", "add", "198.18.64.0/18", "via", "198.18.0.2")
        self.checker.ip("address", "add", f"{VIP}/32", "dev", "lo")
        self.nginx_dir = directory / "nginx"
        self.nginx_dir.mkdir(parents=True)
        conf = self.nginx_dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.nginx_dir))
        self.nginx: Background | None = None

    @property
    def access_log(self) -> Path:
        return self.nginx_dir / "access.log"

    def start_nginx(self) -> None:
        d = self.nginx_dir
        self.nginx = self.farm.spawn(
            "nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")
        )
        wait_for(lambda: (d / "nginx.pid").exists(), 30, "nginx to start")
        time.sleep(0.2)

    def stop_nginx(self) -> None:
        assert self.nginx is not None
        self.nginx.stop()
        (self.nginx_dir / "nginx.pid").unlink(missing_ok=True)
        self.nginx = None

    def keepalived(self, services: list[tuple[int, str]]) -> Background:
        d = Path(tempfile.mkdtemp(dir=self.dir, prefix="keepalived-"))
        conf = d / "keepalived.conf"
        conf.write_text(keepalived_conf(services, self.servers))
        env = ["env", f"LD_PRELOAD={self.preload}"] if self.preload else []
        return self.checker.spawn(
            *env,
            "keepalived",
            "--check",
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--use-file",
            str(conf),
            "--pid",
            str(d / "keepalived.pid"),
            "--checkers_pid",
            str(d / "checkers.pid"),
        )

    def ours(self, kinds: str, root: str | None = None) -> Background:
        """Our checker process; from another checkout of the project if ``root`` is given."""
        targets = self.dir / "targets"
        targets.write_text("\n".join(self.servers))
        argv = (self.python, "-m", "bench.checks_keepalived", "ours", str(targets), kinds)
        if root is None:
            return self.checker.spawn(*argv)
        return self.checker.spawn("sh", "-c", 'cd "$0" && exec "$@"', root, *argv)


def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:g} s for {what}")
        time.sleep(POLL)


# --- part 1: CPU per check -----------------------------------------------------------------


def measure(
    lab: Lab, jobs: dict[str, Background], seconds: float, start: float | None = None
) -> dict[str, dict[str, float]]:
    """CPU and server-side check counts of each job (by User-Agent) over the same window (from
    ``start`` on the monotonic clock, default now)."""
    pids = {agent: descendants(job.proc.pid) for agent, job in jobs.items()}
    if start is not None:
        time.sleep(max(0.0, start - time.monotonic()))
    c0 = {agent: cpu_seconds(p) for agent, p in pids.items()}
    n0, t0 = count_requests(lab.access_log), time.monotonic()
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    c1 = {agent: cpu_seconds(p) for agent, p in pids.items()}
    n1, t1 = count_requests(lab.access_log), time.monotonic()
    out = {}
    for agent in jobs:
        user, system = c1[agent][0] - c0[agent][0], c1[agent][1] - c0[agent][1]
        out[agent] = {
            "cpu": user + system,
            "user": user,
            "sys": system,
            "checks": n1.get(agent, 0) - n0.get(agent, 0),
            "wall": t1 - t0,
            "pids": len(pids[agent]),
        }
    return out


def part_cpu(
    lab: Lab, seconds: float, root: str | None = None, label: str = "", slices: int = 1
) -> float | None:
    """Both checkers at once, over the same farm and window: the same emulation and the same
    load on the host (under TCG, guest CPU time stretches when the host is busy)."""
    n = len(lab.servers)
    lab.start_nginx()
    ka = lab.keepalived([(80, HTTP_GET)])
    ours = lab.ours("http", root)
    wait_for(lambda: len(descendants(ka.proc.pid)) > 1, 120, "keepalived's checker process")
    wait_for(lambda: "ready" in ours.output(), 120, "our checker to start")
    time.sleep(3.0)  # first rounds spread, caches warm
    jobs = {KEEPALIVED_UA: ka, OUR_UA: ours}
    parts = []  # the window in slices, each printed: does the cost drift?
    t0, step = time.monotonic(), seconds / slices
    for i in range(slices):
        parts.append(measure(lab, jobs, step, t0 + i * step))
        if slices > 1:
            k, o = parts[-1][KEEPALIVED_UA], parts[-1][OUR_UA]
            print(
                f"slice {i + 1}: keepalived {k['cpu'] / max(k['checks'], 1) * 1e3:.3f} ms,"
                f" ours {o['cpu'] / max(o['checks'], 1) * 1e3:.3f} ms per check",
                flush=True,
            )
    figures = {
        agent: {
            key: sum(p[agent][key] for p in parts)
            for key in ("cpu", "user", "sys", "checks", "wall")
        }
        | {"pids": parts[0][agent]["pids"]}
        for agent in jobs
    }
    ka.stop()
    ours.stop()
    lab.stop_nginx()
    where = (
        "on the host's kernel (no emulation; keepalived's IPVS calls answered by the shim)"
        if lab.preload
        else "in the guest (one vCPU, TCG)"
    )
    print(
        f"\n== CPU per HTTP check: {n} real servers, 1 s interval, both checkers at once for"
        f" {seconds:g} s, {where}{label}; ours under {lab.python}"
    )
    names = {KEEPALIVED_UA: "keepalived 2.2.7 HTTP_GET", OUR_UA: "directord http"}
    one_cpu = "a CPU" if lab.preload else "the vCPU"
    for agent, name in names.items():
        f = figures[agent]
        checks = max(f["checks"], 1)
        print(
            f"{name:28s} checks {f['checks']:.0f} ({f['checks'] / f['wall']:.0f}/s),"
            f" CPU {f['cpu']:.2f} s ({f['cpu'] / f['wall'] * 100:.0f} % of {one_cpu},"
            f" {f['pids']:.0f} processes), {f['cpu'] / checks * 1e3:.3f} ms per check"
            f" (user {f['user'] / checks * 1e3:.3f} + sys {f['sys'] / checks * 1e3:.3f})"
        )
    k, o = figures[KEEPALIVED_UA], figures[OUR_UA]
    kp, op = k["cpu"] / max(k["checks"], 1), o["cpu"] / max(o["checks"], 1)
    print(f"ratio ours / keepalived: {op / kp:.2f}" if kp else "keepalived: no CPU measured")
    return op / kp if kp else None


def _ready(job: Background) -> bool:
    return "ready" in job.output()


def part_beside(lab: Lab, seconds: float, root: str, rounds: int) -> None:
    """``--beside DIR``: this tree's checker and DIR's at the same time against one farm (no
    keepalived), ``rounds`` times: the same load for both, so their CPU compares even on a
    busy machine. Both send the same User-Agent on the same schedule: each is counted half of
    the checks."""
    lab.start_nginx()
    print(f"\n== side by side: this tree and {root}, {len(lab.servers)} servers, {seconds:g} s")
    for r in range(rounds):
        new, old = lab.ours("http"), lab.ours("http", root)
        for job in (new, old):
            wait_for(functools.partial(_ready, job), 120, "a checker to start")
        time.sleep(3.0)
        pids = [descendants(new.proc.pid), descendants(old.proc.pid)]
        c0, n0 = [cpu_seconds(p) for p in pids], count_requests(lab.access_log)
        time.sleep(seconds)
        c1, n1 = [cpu_seconds(p) for p in pids], count_requests(lab.access_log)
        each = max((n1.get(OUR_UA, 0) - n0.get(OUR_UA, 0)) / 2, 1)
        (nu, ns), (ou, os_) = ((b[0] - a[0], b[1] - a[1]) for a, b in zip(c0, c1, strict=True))
        print(
            f"round {r + 1}: {each / seconds:.0f} checks/s each;"
            f" this tree {(nu + ns) / each * 1e3:.4f} ms per check (user {nu / each * 1e3:.4f}"
            f" + sys {ns / each * 1e3:.4f}), {root} {(ou + os_) / each * 1e3:.4f}"
            f" (user {ou / each * 1e3:.4f} + sys {os_ / each * 1e3:.4f});"
            f" ratio {(nu + ns) / max(ou + os_, 1e-9):.3f}",
            flush=True,
        )
        new.stop()
        old.stop()
    lab.stop_nginx()


# --- part 2: time to notice a stopped or frozen server -------------------------------------

KA_DOWN = {"http": f"from VS [{VIP}]:tcp:80", "tcp": f"from VS [{VIP}]:tcp:81"}
KA_UP = {"http": f"to VS [{VIP}]:tcp:80", "tcp": f"to VS [{VIP}]:tcp:81"}


def state_lines(ka: Background, ours: Background | list[str]) -> dict[str, str]:
    """The last reported state of each of the four checks: "up", "down" or "". ``ours`` is our
    checker's process, or the list its lines go to when it runs in this process."""
    states = {"keepalived http": "", "keepalived tcp": "", "ours http": "", "ours tcp": ""}
    for line in ka.output().splitlines():
        for kind in ("http", "tcp"):
            if "Removing service" in line and KA_DOWN[kind] in line:
                states[f"keepalived {kind}"] = "down"
            elif "Adding service" in line and KA_UP[kind] in line:
                states[f"keepalived {kind}"] = "up"
    for line in ours if isinstance(ours, list) else ours.output().splitlines():
        m = re.match(r"(http|tcp) (up|down)\b", line)
        if m:
            states[f"ours {m[1]}"] = m[2]
    return states


def part_detect(lab: Lab, trials: int, rng: random.Random) -> None:
    lab.start_nginx()
    ka = lab.keepalived([(80, HTTP_GET), (81, TCP_CHECK)])
    ours = lab.ours("http,tcp")
    wait_for(lambda: "ready" in ours.output(), 120, "our checker to start")
    time.sleep(3.0)
    names = ["keepalived http", "keepalived tcp", "ours http", "ours tcp"]
    results: dict[str, dict[str, list[float | None]]] = {"stop": {}, "freeze": {}}
    limit = 6.0
    for trial in range(trials):
        for how in ("stop", "freeze"):
            time.sleep(rng.random())  # a random phase against the 1 s rounds
            assert lab.nginx is not None
            pgid = lab.nginx.proc.pid
            t0 = time.monotonic()
            if how == "stop":
                os.killpg(pgid, signal.SIGTERM)
            else:
                os.killpg(pgid, signal.SIGSTOP)
            seen: dict[str, float | None] = dict.fromkeys(names)
            while time.monotonic() - t0 < limit and any(v is None for v in seen.values()):
                states = state_lines(ka, ours)
                now = time.monotonic()
                for name in names:
                    if seen[name] is None and states[name] == "down":
                        seen[name] = now - t0
                time.sleep(POLL)
            for name in names:
                results[how].setdefault(name, []).append(seen[name])
            if how == "stop":
                lab.nginx.proc.wait(10)
                lab.stop_nginx()
                lab.start_nginx()
            else:
                os.killpg(pgid, signal.SIGCONT)
            wait_for(
                lambda: all(state_lines(ka, ours)[n] in ("up", "") for n in names),
                30,
                "every check to see the server back",
            )
            got = ", ".join(f"{n} {'-' if v is None else f'{v:.2f}'}" for n, v in seen.items())
            print(f"trial {trial + 1} {how}: {got}", flush=True)
    ka.stop()
    ours.stop()
    lab.stop_nginx()
    print(f"\n== Time to notice (s): 1 s interval, 1 s timeout, fall 1 / retry 0; {trials} trials")
    for how, label in (("stop", "nginx stopped (refused)"), ("freeze", "nginx frozen (SIGSTOP)")):
        for name in names:
            values = results[how][name]
            found = sorted(v for v in values if v is not None)
            missed = len(values) - len(found)
            figures = (
                f"min {found[0]:.2f}  median {statistics.median(found):.2f}  max {found[-1]:.2f}"
                if found
                else "never"
            )
            extra = (
                f"  (not noticed within {limit:g} s in {missed} of {len(values)})" if missed else ""
            )
            print(f"{label:24s} {name:16s} {figures}{extra}")


# --- our checker, as its own process -------------------------------------------------------


async def our_checker(
    targets: list[str], kinds: list[str], emit: Callable[[str], None] | None = None
) -> None:
    """Our checks of ``targets`` (``kinds``: "http", "tcp"), until cancelled; each health change
    is a line "<kind> up|down[: <last error>]" given to ``emit`` (default: printed)."""
    say = emit or (lambda line: print(line, flush=True))
    prober = http.HttpProber()
    specs: dict[str, dispatch.Spec] = {
        "http": http.HttpSpec(path="/", expect_status=((200, 200),)),
        "tcp": tcp.TcpSpec(send=b"GET / HTTP/1.0\r\n\r\n", expect=b"HTTP/1."),
    }
    Job = tuple[Target, dispatch.Spec, dispatch.FastPlan | None]
    poller: Poller | None = None

    async def probe(job: Job) -> ProbeResult:
        return await dispatch.run(job[0], job[1], 1.0, prober)

    def start(job: Job, done: Done[Job], start: StartProbe[Job]) -> FastProbe | None:
        """As the daemon does: the fast path of the prepared plan."""
        nonlocal poller
        plan = job[2]
        if plan is None:
            return None
        if poller is None or poller.closed:  # kept, as health.HealthChecks keeps it
            poller = prober.poller()
        return poller.start(plan, done, start, start.started)

    def changed(changes: list[HealthChanged]) -> None:
        for c in changes:
            kind = cast(tuple[str, str], c.check_id)[0]
            last = scheduler.snapshot().checks[c.check_id].state.last
            error = "" if last is None or last.error is None else f": {last.error}"
            say(f"{kind} {'up' if c.up else 'down'}{error}")

    scheduler: Scheduler[Job] = Scheduler(random.Random(), max_in_flight=256)
    runner = Runner(scheduler, probe, changed, fast=start)
    params = CheckParams(interval=1.0, timeout=1.0, rise=1, fall=1, attempts=1)
    runner.start()
    checks = []
    for kind in kinds:
        for a in targets:
            target = Target(ipaddress.IPv4Address(a), 80)
            job = (target, specs[kind], dispatch.plan(target, specs[kind], 1.0))
            checks.append(Check(id=(kind, a), spec=job, params=params))
    runner.add(checks)
    say("ready")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.stop()
        await prober.close()


def run_ours(targets_file: str, kinds: str) -> int:
    targets = Path(targets_file).read_text().split()
    loop = asyncio.new_event_loop()
    main = loop.create_task(our_checker(targets, kinds.split(",")))
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        loop.run_until_complete(main)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    return 0


# --- entry points --------------------------------------------------------------------------


SHIM = Path(__file__).with_name("keepalived_noipvs.c")
ROOT = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = "/usr/bin/python3"  # what the Debian package's venv uses (scripts/build-deb)


def debian_python() -> str:
    """``--python debian``: Debian's python3 in a venv with the package's pinned runtime
    dependencies, made once under .vmcache/ (and again when debian/constraints.txt changes)."""
    venv = ROOT / ".vmcache" / "bench-debian-venv"
    python, stamp = venv / "bin" / "python", venv / "constraints.txt"
    pins = (ROOT / "debian" / "constraints.txt").read_text()
    if not python.exists() or not stamp.exists() or stamp.read_text() != pins:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([DEBIAN_PYTHON, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "-q", "--disable-pip-version-check", "install"]
        subprocess.run([*pip, "-r", str(ROOT / "debian" / "constraints.txt")], check=True)
        stamp.write_text(pins)
    return str(python)


def build_shim(directory: Path) -> Path:
    """The IPVS shim for keepalived on this kernel, compiled into ``directory``."""
    library = directory / "keepalived_noipvs.so"
    gcc = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(SHIM), "-ldl"]
    subprocess.run(gcc, check=True)
    return library


def run_parts(args: argparse.Namespace) -> int:
    """The parts, here: in the guest, or on the host's own kernel with ``--host``."""
    with tempfile.TemporaryDirectory(prefix="bench-ka-") as tmp:
        preload = build_shim(Path(tmp)) if args.host else None

        def lab(topo: Topology, servers: int, name: str) -> Lab:
            return Lab(topo, addresses(servers), Path(tmp) / name, preload, args.python)

        if "cpu" in args.parts:
            ratios = []
            for run in range(args.runs):
                with Topology() as topo:
                    label = f" (run {run + 1} of {args.runs})" if args.runs > 1 else ""
                    farm = lab(topo, args.servers, f"cpu-{run}")
                    ratio = part_cpu(farm, args.seconds, label=label, slices=args.slices)
                if ratio is not None:
                    ratios.append(ratio)
            if args.runs > 1:
                by_run = ", ".join(f"{r:.2f}" for r in ratios)
                median = f"{statistics.median(ratios):.2f}" if ratios else "-"
                print(f"\n== ratio ours / keepalived by run: {by_run}; median {median}")
            if args.beside:
                with Topology() as topo:
                    beside = lab(topo, args.servers, "beside")
                    part_beside(beside, args.seconds, args.beside, args.runs)
            if args.baseline:
                with Topology() as topo:
                    ours_from = f"; ours from {args.baseline}"
                    part_cpu(
                        lab(topo, args.servers, "baseline"), args.seconds, args.baseline, ours_from
                    )
        if "detect" in args.parts:
            with Topology() as topo:
                part_detect(lab(topo, 1, "detect"), args.trials, random.Random(args.seed))
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "ours":
        return run_ours(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--servers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--parts", default="cpu,detect")
    p.add_argument("--slices", type=int, default=1, help="cpu: also print the window in N slices")
    p.add_argument("--runs", type=int, default=1, help="cpu: N runs, the ratio of each, the median")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="cpu, detect: the interpreter our checker runs under (default: this one);"
        " 'debian': Debian's /usr/bin/python3 in a venv with the package's pinned dependencies",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the checker of another checkout (e.g. an older commit's git archive"
        " unpacked under .vmcache/: the guest sees the project, not the host's /tmp), against"
        " keepalived at the same time",
    )
    p.add_argument(
        "--beside",
        metavar="DIR",
        help="cpu: also run this tree's checker and DIR's at the same time against one farm"
        " (no keepalived), --runs times: their CPU per check side by side, under the same load",
    )
    p.add_argument("--timeout", type=float, default=1200.0, help="guest timeout, seconds")
    p.add_argument(
        "--host",
        action="store_true",
        help="run on this machine's kernel, without the guest (keepalived with the IPVS shim)",
    )
    p.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.python == "debian":
        args.python = debian_python()
    if args.in_guest or args.host:
        return run_parts(args)
    from tests.helpers.vm.guest import run_in_guest

    argv = [sys.executable, "-m", "bench.checks_keepalived", "--in-guest"]
    argv += ["--servers", str(args.servers), "--seconds", str(args.seconds)]
    argv += ["--trials", str(args.trials), "--seed", str(args.seed), "--parts", args.parts]
    argv += ["--slices", str(args.slices), "--runs", str(args.runs), "--python", args.python]
    if args.baseline:
        argv += ["--baseline", str(Path(args.baseline).resolve())]
    if args.beside:
        argv += ["--beside", str(Path(args.beside).resolve())]
    result = run_in_guest(argv, timeout=args.timeout, stream=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
