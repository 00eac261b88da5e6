"""Start-up: ``directord`` start to READY against keepalived 2.2.7's start to its first advert.

    .venv/bin/python -m bench.startup [--rounds 3] [--baseline DIR] [--timeout 1800]

In one boot of the real-kernel guest (TCG), rounds interleaved, each start in fresh network
namespaces (an empty IPVS table, no nftables table, no state files: a cold start):

ours
    ``python -m director.daemon`` with the Exchange example (``docs/examples/exchange.toml``:
    three fwmark services, five real servers, the nftables marks and SNAT, sysctls) plus one
    VRRP instance for its VIP (:data:`VRRP_INSTANCE`: VRRPv2, priority 100, 1 s adverts).
    Timed from just before the process is spawned to ``READY=1`` on its ``NOTIFY_SOCKET``
    (the table programmed, the rules in, VRRP started, the listeners open), and to its first
    VRRP advert as captured by a peer namespace (kernel timestamps).
keepalived
    ``keepalived --dont-fork`` (VRRP and checker processes) with :data:`KEEPALIVED_CONF`, the
    same table and VRRP instance as keepalived.conf (``directorctl import keepalived`` of it
    gives our config back: ``tests/bench/test_startup.py``); keepalived has no fwmark or SNAT
    rules nor sysctls to set: those are ours only. Timed from just before it is spawned to its
    first VRRP advert, captured the same way.

Both instances start as backup (keepalived ``state BACKUP``; ours has no other start state)
and become master after the master-down interval, 3 x 1 s + skew (156/256 s) = 3.61 s:
RFC 3768 6.4.1. The issue's anchor is keepalived's first advert; the table prints ours to READY
and ours to our first advert as master against it, and the same figures less the master-down
interval (the cost of starting proper). Also: the interpreter's own start (``python -c pass``)
and the daemon's imports (``director.daemon`` and ``director.app``, as directord makes them) in
the guest, to tell what the rest of the start costs. The imports leave out what the config makes
at its first validation (the config models' schemas, since they are built then: ``defer_build``),
so compare READY across trees, not the imports alone. Byte-code and the dataclasses' code cache
(:mod:`director.codecache`) are written on the host before the boot, as ``scripts/build-deb``
writes them into the package. Medians over the rounds. Figures, not a test; needs
root (the guest is root).

From the mount and from local files: the guest's / and the project tree with its ``.venv`` are
virtiofs mounts, where every file an import looks at is a FUSE request (expensive under TCG),
while a user's package is on a local disk. So each round also starts the daemon from a local
copy of what the package installs (:mod:`bench.localinstall`: the interpreter and its standard
library, the pinned dependencies and the project's packages, byte-code and the dataclasses'
code cache included, copied once per boot into a tmpfs) through its ``directord`` entry point,
as systemd runs the package's (the tree's is ``python -m director.daemon`` under ``env -C``),
and the table prints both: the same interpreter, byte-code and code, only where the files are
differs. keepalived is a binary on
the mount; it opens a handful of files. ``--no-local``: the mount only. The baseline starts
from the mount (its tree as it is, like this tree's first figures) and from a local copy of its
own packages (the same interpreter and dependencies); its dataclasses' code cache is written
before the boot too, where it has one.

Ours starts each round from one state directory per series, emptied before each start but for
the config's start cache (:mod:`director.config.startcache`), which is primed once before the
rounds (untimed): the figures are those of a restart of an unchanged config (a new or edited
config validates at its first start: about half a second more in the guest; each round also
times that first start from local files, with a new state directory). The baseline,
older than the cache, starts from a new state directory each time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import localinstall
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io import keepalived
from tests.vrrp_io.capture import Capture
from tests.vrrp_io.lab import lan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "exchange.toml"
DIRECTOR = "198.18.0.1"  # d1's address on the lab's LAN (tests.vrrp_io.lab.lan)
MASTER_DOWN = 3 * 1.0 + (256 - 100) / 256  # VRRPv2, 1 s adverts, priority 100
POLL = 0.005
LOCAL = Path("/run/dt-startup")  # in the guest: a tmpfs for the local copy
# the daemon's imports as directord makes them (lean ones first, the dataclasses' code from its
# cache, where the tree has them)
START_CACHE = "config-cache.pickle"  # director.config.startcache.FILE_NAME
PRIME = (  # the start cache of a config, written as directord's start writes it
    "import sys; from pathlib import Path; from director import early;"
    " from director.config.startcache import FILE_NAME, StartCache; c = Path(sys.argv[1]);"
    " cache = StartCache(early.state_dir_of(early.daemon_table(c), None) / FILE_NAME);"
    " cache.load(c); print('start cache', 'written' if cache.save() else 'not written')"
)
IMPORTS = (
    "import gc, director.daemon as d; hasattr(d, 'codecache') and d.codecache.install();"
    " hasattr(d, 'lean') and (gc.disable(), d.lean.lean_imports()); import director.app"
)

VRRP_INSTANCE = """
[[vrrp_instance]]                  # the bench's addition: the VIP moves with the VRRP master
name = "exchange"
interface = "eth0"
vrid = 51
priority = 100
advert_interval = 1.0
virtual_addresses = ["198.18.0.10/24"]
"""

KEEPALIVED_CONF = """\
global_defs {
    router_id exchange
    lvs_timeouts tcp 7200 tcpfin 120 udp 300
}

vrrp_instance exchange {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    virtual_ipaddress {
        198.18.0.10/24 dev eth0
    }
}

virtual_server fwmark 80 {
    lb_algo wlc
    lb_kind NAT
    persistence_timeout 600
    protocol TCP
    real_server 198.18.1.11 0 {
        weight 1
        inhibit_on_failure
    }
    real_server 198.18.1.12 0 {
        weight 1
        inhibit_on_failure
    }
}

virtual_server fwmark 1 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 198.18.1.11 3389 {
        weight 1
    }
}

virtual_server fwmark 2 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 198.18.1.12 3389 {
        weight 1
    }
}
"""


def our_config(state: Path) -> str:
    """The Exchange example with the bench's state directory and control socket, and its VRRP
    instance."""
    text = EXAMPLE.read_text()
    daemon = f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = "{state}/control.sock"\n'
    if "[daemon]\n" not in text:
        raise SystemExit(f"{EXAMPLE}: no [daemon] table to extend")
    return text.replace("[daemon]\n", daemon, 1) + VRRP_INSTANCE


@dataclass(frozen=True)
class Start:
    ready: float | None  # s from spawn to READY=1 (ours only)
    advert: float  # s from spawn to the first advert captured


def wait_for(condition: Callable[[], float | None], within: float, what: str) -> float:
    deadline = time.monotonic() + within
    while (found := condition()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {within:.0f} s")
        time.sleep(POLL)
    return found


@contextlib.contextmanager
def lab() -> Iterator[tuple[Namespace, Capture]]:
    """A fresh director namespace d1 and a peer capturing its frames."""
    with Topology() as topo:
        d1, obs = lan(topo, "d1", "obs")
        with NamespaceLoop(obs) as inside:
            capture = Capture(inside)
            try:
                yield d1, capture
            finally:
                capture.close()


def first_advert(capture: Capture) -> float | None:
    times = capture.advert_times(DIRECTOR)
    return times[0] if times else None


def stopped(job: Background, what: str) -> None:
    job.stop(timeout=60)
    if job.proc.returncode not in (0, -15):
        print(f"  {what} exited {job.proc.returncode}:\n{job.output()[-2000:]}")


def emptied(state: Path) -> Path:
    """``state`` as a cold start finds it: no state files, only the start cache of the
    config (:data:`START_CACHE`), as a restart of an unchanged config finds it."""
    state.mkdir(parents=True, exist_ok=True)
    for path in state.iterdir():
        if path.name == START_CACHE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return state


def prime(state: Path, tree: Path, python: str) -> str:
    """Validate the config a start in ``state`` gets and keep it in its start cache, as the
    first start of a config does (untimed); what the tree said (a tree before the cache: none)."""
    config = emptied(state) / "director.toml"
    config.write_text(our_config(state))
    done = subprocess.run(
        [python, "-c", PRIME, str(config)], cwd=tree, capture_output=True, text=True
    )
    said = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return said[-1] if said else f"exit {done.returncode}"


def start_ours(
    work: Path,
    within: float,
    tree: Path = ROOT,
    python: str = sys.executable,
    entry: Path | None = None,
    state: Path | None = None,
) -> Start:
    """One start: ``python -m director.daemon`` in ``tree`` (a checkout), or ``entry``, the
    ``directord`` entry point of a local copy (bench.localinstall), executed as systemd does.
    ``state``: its state directory, emptied but for the start cache (else a new one)."""
    state = Path(tempfile.mkdtemp(dir=work, prefix="ours-")) if state is None else emptied(state)
    config = state / "director.toml"
    config.write_text(our_config(state))
    notify_path = state / "notify.sock"
    if entry is None:  # python -m: the daemon of that tree
        argv = ["env", "-C", str(tree), f"NOTIFY_SOCKET={notify_path}", python, "-m"]
        argv += ["director.daemon", "--config", str(config)]
    else:  # the entry point: its directory, not the tree, is first on its path
        argv = [str(entry), "--config", str(config)]
    with lab() as (d1, capture), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))  # a path: abstract sockets are per namespace
        capture.clear()
        os.environ["NOTIFY_SOCKET"] = str(notify_path)  # inherited by this spawn only
        try:
            started = time.time()
            job = d1.spawn(*argv)
        finally:
            del os.environ["NOTIFY_SOCKET"]
        try:
            ready = wait_ready(notify, job, started, within)
            advert = wait_for(lambda: first_advert(capture), within, "advert from directord")
        except TimeoutError:
            print(job.output()[-4000:])
            raise
        finally:
            stopped(job, "directord")
    return Start(ready - started, advert - started)


def wait_ready(notify: socket.socket, job: Background, started: float, within: float) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if job.proc.poll() is not None:
            raise TimeoutError(f"directord exited {job.proc.returncode}:\n{job.output()[-4000:]}")
        notify.settimeout(0.5)
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            continue
        if "READY=1" in message.split("\n"):
            return time.time()
    raise TimeoutError(f"no READY=1 within {within:.0f} s")


def start_keepalived(work: Path, within: float) -> Start:
    d = Path(tempfile.mkdtemp(dir=work, prefix="keepalived-"))
    conf = d / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF)
    with lab() as (d1, capture):
        capture.clear()
        started = time.time()
        job = d1.spawn(
            keepalived.binary(),
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--use-file",
            str(conf),
            "--pid",
            str(d / "keepalived.pid"),
            "--vrrp_pid",
            str(d / "vrrp.pid"),
            "--checkers_pid",
            str(d / "checkers.pid"),
        )
        try:
            advert = wait_for(lambda: first_advert(capture), within, "advert from keepalived")
        except TimeoutError:
            print(job.output()[-4000:])
            raise
        finally:
            stopped(job, "keepalived")
    return Start(None, advert - started)


def timed(*argv: str, tree: Path = ROOT) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, cwd=tree)
    return time.monotonic() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def local_tmpfs() -> Iterator[Path]:
    """A tmpfs (a user's local disk) for the local copies."""
    LOCAL.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2g,mode=0755", "tmpfs", str(LOCAL)], check=True
    )
    try:
        yield LOCAL
    finally:
        subprocess.run(["umount", "--lazy", str(LOCAL)], check=False)


def local_copy(dest: Path, tree: Path = ROOT) -> tuple[Path, str, Path]:
    """What the package of ``tree`` installs, copied to ``dest`` (in the tmpfs): (its
    directory, its python, its directord); bench.localinstall."""
    started = time.monotonic()
    python = localinstall.build(dest, tree=tree)
    print(f"local copy in {dest}: {time.monotonic() - started:.0f} s to copy", flush=True)
    return dest, str(python), localinstall.entry_point(dest)


@dataclass
class Series:
    """One daemon's figures over the rounds."""

    bare: list[float]
    imports: list[float]
    starts: list[Start]

    @classmethod
    def new(cls) -> Series:
        return cls([], [], [])

    def round(
        self,
        work: Path,
        within: float,
        tree: Path,
        python: str,
        entry: Path | None = None,
        state: Path | None = None,
    ) -> str:
        self.bare.append(timed(python, "-c", "pass", tree=tree))
        self.imports.append(timed(python, "-c", IMPORTS, tree=tree))
        self.starts.append(start_ours(work, within, tree, python, entry, state))
        s = self.starts[-1]
        return (
            f"python -c pass {self.bare[-1]:.2f} s, imports {self.imports[-1]:.2f} s;"
            f" directord READY {s.ready:.2f} s, first advert {s.advert:.2f} s"
        )

    @property
    def ready(self) -> float:
        return median([s.ready for s in self.starts if s.ready is not None])

    @property
    def advert(self) -> float:
        return median([s.advert for s in self.starts])


def run_rounds(rounds: int, within: float, baseline: Path | None, local: bool) -> int:
    os.chdir(ROOT)
    ours, ours_local, base, base_local = Series.new(), Series.new(), Series.new(), Series.new()
    theirs: list[Start] = []
    first: list[Start] = []  # ours from local files, without the start cache
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dt-startup-")))
        tmpfs = stack.enter_context(local_tmpfs()) if local else None
        copy = local_copy(tmpfs / "ours") if tmpfs is not None else None
        base_copy = (
            local_copy(tmpfs / "baseline", baseline)
            if tmpfs is not None and baseline is not None
            else None
        )
        # ours: one state directory each, its start cache primed (a restart of an unchanged
        # config); the baseline's, new each start
        mount_state, local_state = work / "ours-mount", work / "ours-local"
        print(f"from the mount: {prime(mount_state, ROOT, sys.executable)}", flush=True)
        if copy is not None:
            print(f"from local files: {prime(local_state, copy[0], copy[1])}", flush=True)
        for n in range(rounds):
            line = ours.round(work, within, ROOT, sys.executable, state=mount_state)
            print(f"round {n + 1}: from the mount: {line}")
            if copy is not None:
                line = ours_local.round(work, within, *copy, state=local_state)
                print(f"  from local files: {line}", flush=True)
                # the first start of a new or edited config: no start cache (a new state dir)
                first.append(start_ours(work, within, *copy))
                said = f"READY {first[-1].ready or 0:.2f} s"
                print(f"    first start of the config (no start cache): {said}", flush=True)
            theirs.append(start_keepalived(work, within))
            print(f"  keepalived first advert {theirs[-1].advert:.2f} s", flush=True)
            if baseline is not None:
                line = base.round(work, within, baseline, sys.executable)
                print(f"  baseline {baseline.name} from the mount: {line}", flush=True)
            if base_copy is not None:
                line = base_local.round(work, within, *base_copy)
                print(f"  baseline from local files: {line}", flush=True)
    ka = median([s.advert for s in theirs])
    print(f"\nmedian of {rounds} rounds, in the guest (TCG), cold starts in fresh namespaces")
    print(f"  keepalived start -> first advert:     {ka:6.2f} s")
    print(f"  master-down interval (both):          {MASTER_DOWN:6.2f} s")
    series = [("this tree, from the mount (virtiofs)", ours)]
    if copy is not None:
        series.append(
            ("this tree, from local files (tmpfs, as the package installs it)", ours_local)
        )
    if baseline is not None:
        series.append((f"baseline {baseline}, from the mount", base))
    if base_copy is not None:
        series.append((f"baseline {baseline}, from local files", base_local))
    for title, s in series:
        print(f"  {title}:")
        print(f"    python -c pass:                     {median(s.bare):6.2f} s")
        print(f"    the daemon's imports:               {median(s.imports):6.2f} s")
        print(f"    directord start -> READY=1:         {s.ready:6.2f} s")
        print(f"    directord start -> first advert:    {s.advert:6.2f} s")
        print(
            f"    ratio READY / keepalived's first advert:        {s.ready / ka:.2f} (goal <= 1.5)"
        )
        print(f"    ratio first advert / keepalived's first advert: {s.advert / ka:.2f}")
        print(
            f"    less the master-down interval: first advert {s.advert - MASTER_DOWN:.2f} s,"
            f" keepalived {ka - MASTER_DOWN:.2f} s: ratio"
            f" {(s.advert - MASTER_DOWN) / max(ka - MASTER_DOWN, 1e-3):.1f}"
        )
    if first:
        ready = median([s.ready for s in first if s.ready is not None])
        print("  this tree, from local files, the first start of a config (no start cache):")
        print(f"    directord start -> READY=1:         {ready:6.2f} s")
        print(f"    ratio READY / keepalived's first advert:        {ready / ka:.2f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--within", type=float, default=300.0, help="s to wait for READY / an advert")
    p.add_argument("--timeout", type=float, default=1800.0, help="guest timeout, seconds")
    p.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="also start the daemon of another checkout (e.g. an older commit's git archive"
        " unpacked under .vmcache/: the guest sees the project, not the host's /tmp)",
    )
    p.add_argument(
        "--no-local",
        action="store_true",
        help="only from the mount: no local copy of what the package installs",
    )
    p.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    if args.in_guest:
        return run_rounds(args.rounds, args.within, baseline, not args.no_local)
    from tests.helpers.vm.guest import run_in_guest

    # the dataclasses' code cache, as scripts/build-deb writes it for the package (the first
    # start would write it otherwise, and only that start would compile: director.codecache)
    subprocess.run([sys.executable, "-m", "director.codecache"], check=False, cwd=ROOT)
    argv = [sys.executable, "-m", "bench.startup", "--in-guest", "--rounds", str(args.rounds)]
    argv += ["--within", str(args.within)] + (["--no-local"] if args.no_local else [])
    if baseline is not None:  # byte-compiled here, as the guest harness does for the project
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(baseline)], check=True)
        # and its dataclasses' code cache where it has one (as its package would ship it)
        subprocess.run([sys.executable, "-m", "director.codecache"], check=False, cwd=baseline)
        argv += ["--baseline", str(baseline)]
    result = run_in_guest(argv, timeout=args.timeout, stream=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
