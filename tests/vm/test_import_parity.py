"""The import is faithful: keepalived and directord program the same IPVS table; an lvs.cf import
runs as Piranha ran it.

keepalived 2.2.7 (Debian's, checkers only: ``-C``) programs IPVS from
``tests/importers/data/parity.conf`` in a namespace; the table is read with ``ipvsadm``; keepalived
stops and the table is flushed; ``directord`` runs the config ``directorctl import keepalived``
made from the same file; its table must be identical: services, schedulers and their flags,
persistence and granularity, one-packet scheduling, forwarding, weights, thresholds, and the sorry
server that stands in for a server that never answers.

Piranha cannot run here, so the lvs.cf test compares with the table its lvsd and nanny program
for ``tests/importers/data/parity_lvs.cf``, and checks that the heartbeat became a VRRP instance
that takes the VIPs (prefix, device and label from ``address``/``vip_nmask``) when no peer answers.

The migration drill: on a bridge, keepalived (VRRP + LVS) is master on d1 from the master's
keepalived.conf; directord runs the import of the backup's keepalived.conf on d2, stays backup,
programs the same table; keepalived stops and directord takes the VIP (with its label).

Two more drills, each against keepalived 2.2.7 with adverts counted on both sides (directord's
director_vrrp_adverts_dropped, keepalived's own stats file): keepalived's shipped default
keepalived.conf (tests/importers/data/drill/sample.conf: vrrp_strict, PASS auth) on both nodes,
and a pair with virtual_ipaddress_excluded (an IPv4 and an IPv6 address). Figures go to
.vmcache/logs/import-drill-figures.log.

lvs ns (IPVS; 198.18.1.1) --veth-- rs ns (198.18.1.11, 198.18.1.12: echo servers on 7000,
                                           HTTP servers on 8000 with /ok.txt)
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from director.importers.emit import dumps
from director.importers.from_keepalived import import_keepalived
from director.importers.lvs_cf import import_lvs_cf
from director.ipvs.model import Table
from tests.helpers.ipvsadm import ipvsadm, parse, read_table
from tests.helpers.netns import Background, Namespace, Topology
from tests.vrrp_io.lab import has_address, lan

pytestmark = pytest.mark.vm

PY = sys.executable
DATA = Path(__file__).resolve().parents[1] / "importers" / "data"
CONFIG = DATA / "parity.conf"
LVS_CF = DATA / "parity_lvs.cf"
# What Piranha's lvsd (services) and nanny (a server once its check passes; the sorry server
# when none is left) program for parity_lvs.cf.
PIRANHA_TABLE = """\
TCP  198.18.0.10:80 wlc persistent 300 mask 255.255.255.0
  -> 198.18.1.11:7000             Masq    3      0          0
  -> 198.18.1.12:7000             Masq    1      0          0
TCP  198.18.0.12:80 rr
  -> 198.18.2.9:80                Masq    1      0          0
"""
SERVICES = 11  # 10 virtual_server blocks, the group giving two


def wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def settled(
    ns: Namespace, want: Callable[[Table], bool], log: Background, timeout: float = 180
) -> Table:
    """The table once ``want`` holds and two reads a second apart agree."""
    seen: list[Table] = []

    def stable() -> bool:
        table = read_table(ns.name)
        seen.append(table)
        return want(table) and len(seen) > 1 and seen[-2] == table

    def slow() -> bool:
        time.sleep(0.7)
        return stable()

    try:
        wait_for("a settled IPVS table", slow, timeout)
    except AssertionError:
        last = "\n".join(describe(seen[-1])) if seen else "(none read)"
        raise AssertionError(
            f"no settled, complete IPVS table; the last read:\n{last}\n"
            f"--- the program's output ---\n{log.output()[-4000:]}"
        ) from None
    return seen[-1]


def complete(table: Table) -> bool:
    """Every service, the two checked servers in, the sorry server in for the dead one."""
    by_name = {str(key): key for key in table.services}
    checked = by_name.get("TCP 198.18.0.10:80")
    dead = by_name.get("TCP 198.18.0.12:80")
    http = by_name.get("TCP 198.18.0.13:80")
    script = by_name.get("TCP 198.18.0.14:80")
    return (
        len(table.services) == SERVICES
        and checked is not None
        and len(table.dests_of(checked)) == 2
        and dead is not None
        and [str(d.address) for d in table.dests_of(dead)] == ["198.18.2.9"]
        and http is not None
        and [str(d) for d in table.dests_of(http)] == ["198.18.1.11:8000"]
        and script is not None
        and [str(d) for d in table.dests_of(script)] == ["198.18.1.11:80"]
    )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Namespace, Namespace]]:
    with Topology() as topo:
        lvs, rs = topo.namespace("lvs"), topo.namespace("rs")
        topo.veth(lvs, "s0", rs, "eth0", a_addr="198.18.1.1/24", b_addr="198.18.1.11/24")
        rs.add_address("eth0", "198.18.1.12/24")
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "ok.txt").write_text("ok\n")
        for address in ("198.18.1.11", "198.18.1.12"):
            rs.spawn(PY, "-m", "tests.helpers.longconn", "serve", address, "7000")
            www = str(tmp_path / "www")
            rs.spawn(PY, "-m", "http.server", "--bind", address, "--directory", www, "8000")
        yield lvs, rs


def describe(table: Table) -> list[str]:
    """One line per service and destination, sorted, for a readable diff."""
    lines = []
    for key, svc in table.services.items():
        lines.append(
            f"{key} sched={svc.sched_name} flags={svc.flags:#x} "
            f"timeout={svc.timeout} netmask={svc.netmask}"
        )
        for dest in table.dests_of(key).values():
            lines.append(f"{key} -> {dest}")
    return sorted(lines)


def run_directord(ns: Namespace, tmp_path: Path, data: dict[str, object]) -> Background:
    config = tmp_path / "director.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'control_socket = "{tmp_path / "control.sock"}"\n'
        'metrics_address = ""\n\n' + dumps(data)
    )
    return ns.spawn(PY, "-m", "director.daemon", "--config", str(config))


def stop(proc: Background) -> None:
    if proc.proc.poll() is None:
        os.killpg(proc.proc.pid, signal.SIGTERM)
        proc.proc.wait(timeout=60)


def test_directord_programs_what_keepalived_programmed(
    lab: tuple[Namespace, Namespace], tmp_path: Path
) -> None:
    lvs, _ = lab
    # keepalived, checkers only
    keepalived = lvs.spawn(
        "keepalived",
        "--dont-fork",
        "--log-console",
        "-C",
        "-f",
        str(CONFIG),
        "-p",
        str(tmp_path / "k.pid"),
        "-c",
        str(tmp_path / "kc.pid"),
    )
    try:
        theirs = settled(lvs, complete, keepalived)
        their_text = ipvsadm("-Ln", netns=lvs.name)
    finally:
        stop(keepalived)
    assert "Startup complete" in keepalived.output(), keepalived.output()[-3000:]
    ipvsadm("-C", netns=lvs.name)
    assert read_table(lvs.name).services == {}

    # directord, from the import
    daemon = run_directord(lvs, tmp_path, import_keepalived(CONFIG).config)
    try:
        ours = settled(lvs, complete, daemon)
        our_text = ipvsadm("-Ln", netns=lvs.name)
    finally:
        stop(daemon)
    assert describe(ours) == describe(theirs), (their_text, our_text, daemon.output()[-3000:])
    assert ours == theirs
    # the same text as ipvsadm prints it, line for line (order aside)
    assert sorted(our_text.splitlines()) == sorted(their_text.splitlines())
    # what the file asks for is really there (the comparison is not of two empty tables)
    assert "FWM  80 rr persistent 1800 mask 255.255.0.0" in their_text
    assert "TCP  198.18.0.10:443 sh (sh-fallback,sh-port)" in their_text
    assert "UDP  198.18.0.10:53 lc ops" in their_text
    assert "TCP  198.18.0.11:0 rr persistent 360" in their_text
    assert "-> 198.18.2.9:8080" in their_text
    assert "198.18.1.99" not in their_text


def test_directord_runs_an_lvs_cf_as_piranha_did(
    lab: tuple[Namespace, Namespace], tmp_path: Path
) -> None:
    lvs, _ = lab
    wanted = parse(PIRANHA_TABLE)
    daemon = run_directord(lvs, tmp_path, import_lvs_cf(LVS_CF).config)
    try:
        ours = settled(lvs, lambda table: table == wanted, daemon)
        # the heartbeat is VRRP now: alone on the link, this director is master with the VIPs
        wait_for("the VIPs", lambda: "s0:2" in lvs.ip("-4", "address", "show", "dev", "s0"))
        addresses = lvs.ip("-4", "address", "show", "dev", "s0")
    finally:
        stop(daemon)
    assert "198.18.0.10/32 scope global s0:1" in addresses, addresses
    assert "198.18.0.12/32 scope global s0:2" in addresses, addresses
    # the checks ran: the echo servers answered "ping" (send/expect) and stayed in; the server
    # that never answers went out and the sorry server came in
    assert describe(ours) == describe(wanted)


DRILL = """
global_defs {{
    router_id {router}
}}
vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 61
    priority {priority}
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass s3cret
    }}
    virtual_ipaddress {{
        198.18.0.100/24 dev eth0 label eth0:1
    }}
}}
virtual_server 198.18.0.100 7000 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    persistence_timeout 120
    real_server 198.18.0.250 7000 {{
        weight 2
    }}
}}
"""
DRILL_VIP = ipaddress.IPv4Address("198.18.0.100")
# Skew_Time for priority 100 at 1 s adverts (RFC 3768: (256 - priority) / 256), and a margin for
# a guest that runs Python ~20x slower and polls through `ip` processes.
SKEW = (256 - 100) / 256
MARGIN = 3.0


def test_migration_drill_keepalived_master_to_imported_backup(tmp_path: Path) -> None:
    master_conf = tmp_path / "master.conf"
    master_conf.write_text(DRILL.format(router="LB1", state="MASTER", priority=150))
    backup_conf = tmp_path / "backup.conf"
    backup_conf.write_text(DRILL.format(router="LB2", state="BACKUP", priority=100))
    with Topology() as topo:
        d1, d2 = lan(topo, "d1", "d2")
        keepalived = d1.spawn(
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--no-syslog",
            "-f",
            str(master_conf),
            "-p",
            str(tmp_path / "k.pid"),
            "-r",
            str(tmp_path / "kv.pid"),
            "-c",
            str(tmp_path / "kc.pid"),
        )
        wait_for("keepalived to be master", lambda: has_address(d1, DRILL_VIP), 60)
        theirs = settled(d1, lambda table: len(table.services) == 1, keepalived)
        imported = import_keepalived(backup_conf)
        assert imported.config["vrrp_instance"][0]["password"] == "s3cret"
        daemon = run_directord(d2, tmp_path, imported.config)
        try:
            ours = settled(d2, lambda table: len(table.services) == 1, daemon)
            assert describe(ours) == describe(theirs)
            # three adverts later the imported backup is still silent: no VIP on d2
            time.sleep(3)
            assert not has_address(d2, DRILL_VIP)
            assert has_address(d1, DRILL_VIP)
            # keepalived stops (priority 0): directord takes over after Skew_Time
            start = time.monotonic()
            os.killpg(keepalived.proc.pid, signal.SIGTERM)
            wait_for("the VIP on d2", lambda: has_address(d2, DRILL_VIP), SKEW + MARGIN)
            took = time.monotonic() - start
            addresses = d2.ip("-4", "address", "show", "dev", "eth0")
            keepalived.proc.wait(timeout=30)
        finally:
            stop(daemon)
            stop(keepalived)
    assert re.search(r"inet 198\.18\.0\.100/24 .*eth0:1", addresses), addresses
    print(f"VIP on the imported backup {took:.3f} s after keepalived's SIGTERM")


# --- the drills with keepalived's own default keepalived.conf and with excluded addresses -----

DRILLS = DATA / "drill"
FIGURES = Path(__file__).resolve().parents[2] / ".vmcache" / "logs" / "import-drill-figures.log"


def record(line: str) -> None:
    """A measured figure, kept on the host (the project share) for the closing note."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(f"{time.strftime('%H:%M:%S')} {line}\n")


STATS_ERRORS = (
    "Length",
    "TTL",
    "Invalid Type",
    "Advertisement Interval",
    "Address List",
    "Type Mismatch",
    "Failure",
)


class Keepalived:
    """keepalived 2.2.7 in a namespace, its stats file in its own TMPDIR."""

    def __init__(self, ns: Namespace, conf: Path, run: Path) -> None:
        run.mkdir(exist_ok=True)
        self.run = run
        self.ns = ns
        self.job = ns.spawn(
            "env",
            f"TMPDIR={run}",
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--no-syslog",
            "-f",
            str(conf),
            "-p",
            str(run / "k.pid"),
            "-r",
            str(run / "kv.pid"),
            "-c",
            str(run / "kc.pid"),
        )

    def stats(self) -> dict[str, int]:
        """keepalived's VRRP counters: the VRRP process writes $TMPDIR/keepalived.stats on the
        STATS signal (``keepalived --signum=STATS``: SIGUSR2 in 2.2.7; vrrp_print.c
        vrrp_print_stats). Keys: "Received", "Sent" and each error counter."""
        signum = int(self.ns.run("keepalived", "--signum=STATS").stdout.strip())
        pid = int((self.run / "kv.pid").read_text())
        path = self.run / "keepalived.stats"
        path.unlink(missing_ok=True)
        os.kill(pid, signum)
        wait_for("keepalived.stats", lambda: path.exists() and "Priority Zero" in path.read_text())
        out: dict[str, int] = {}
        section = ""
        for line in path.read_text().splitlines():
            name, _, value = line.strip().partition(":")
            if not value.strip():
                section = name
                continue
            key = name if name not in ("Received", "Sent", "Invalid Type") else f"{section} {name}"
            if value.strip().isdigit():
                out[key] = int(value)
        return out

    def stop(self) -> None:
        stop(self.job)


def scrape(ns: Namespace) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = ns.run("curl", "-sf", "http://127.0.0.1:9469/metrics").stdout
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_text(ns: Namespace) -> str:
    done = ns.run("curl", "-sf", "http://127.0.0.1:9469/metrics", check=False)
    return "\n".join(line for line in done.stdout.splitlines() if "vrrp" in line)


def directord_transitions(ns: Namespace) -> float:
    """State changes directord made so far (a start-up that claimed the role shows here)."""
    got = scrape(ns)
    return sum(v for (n, _), v in got.items() if n == "director_vrrp_transitions_total")


def counters(ns: Namespace) -> tuple[float, float]:
    """directord's (adverts accepted, adverts dropped) over every instance."""
    got = scrape(ns)
    received = sum(v for (n, _), v in got.items() if n == "director_vrrp_adverts_received_total")
    dropped = sum(v for (n, _), v in got.items() if n == "director_vrrp_adverts_dropped_total")
    return received, dropped


def accepted(ns: Namespace) -> float:
    """Adverts directord accepted, 0 while its metrics endpoint is not up yet."""
    try:
        return counters(ns)[0]
    except Exception:
        return 0


def run_directord_metrics(ns: Namespace, tmp_path: Path, data: dict[str, object]) -> Background:
    config = tmp_path / "director.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'control_socket = "{tmp_path / "control.sock"}"\n'
        'metrics_address = "127.0.0.1:9469"\n\n' + dumps(data)
    )
    return ns.spawn(PY, "-m", "director.daemon", "--config", str(config))


def no_keepalived_errors(stats: dict[str, int]) -> None:
    errors = {k: v for k, v in stats.items() if any(k.endswith(e) for e in STATS_ERRORS) and v}
    assert not errors, stats


def drill(
    tmp_path: Path,
    keepalived_conf: Path,
    imported_conf: Path,
    vip: ipaddress.IPv4Address,
    *,
    preempts_back: bool,
    excluded: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (),
    keepalived_says: str = "",
) -> dict[str, float]:
    """keepalived master on d1, directord on the import as backup on d2: adverts accepted both
    ways (no drops on either side), one master, takeover when keepalived stops, and (when the
    config preempts) preemption back when it returns. The timings."""
    imported = import_keepalived(imported_conf)
    timings: dict[str, float] = {}
    with Topology() as topo:
        # keepalived (d1) has the higher address: with the sample's equal priorities the
        # address breaks a tie (RFC 3768 6.4.3), so a directord that starts slowly and claims
        # the master role before it hears keepalived yields to it again, as a keepalived
        # backup at the lower address would
        d2, d1 = lan(topo, "d2", "d1", ipv6=bool(excluded))
        first = Keepalived(d1, keepalived_conf, tmp_path / "k1")
        second: Keepalived | None = None
        daemon: Background | None = None
        try:
            wait_for("keepalived to be master", lambda: has_address(d1, vip), 60)
            daemon = run_directord_metrics(d2, tmp_path, imported.config)
            try:
                wait_for("directord's metrics", lambda: accepted(d2) >= 3, 120)
            except AssertionError:
                raise AssertionError(
                    f"directord accepted {accepted(d2)} adverts\n{scrape_text(d2)}\n"
                    f"--- directord ---\n{daemon.output()[-4000:]}\n"
                    f"--- keepalived ---\n{first.job.output()[-3000:]}"
                ) from None
            transitions = directord_transitions(d2)
            time.sleep(3)
            received, dropped = counters(d2)
            assert received >= 3 and dropped == 0, daemon.output()[-3000:]
            assert has_address(d1, vip) and not has_address(d2, vip)  # one master
            for address in excluded:
                assert has_address(d1, address) and not has_address(d2, address)
            # keepalived stops (priority 0): directord takes over after Skew_Time
            start = time.monotonic()
            first.stop()
            wait_for("the VIP on d2", lambda: has_address(d2, vip), SKEW + MARGIN)
            timings["takeover"] = time.monotonic() - start
            wait_for(
                "the excluded addresses on d2",
                lambda: all(has_address(d2, a) for a in excluded),
                5,
            )
            # keepalived returns
            start = time.monotonic()
            second = Keepalived(d1, keepalived_conf, tmp_path / "k2")
            if preempts_back:
                wait_for("keepalived to take back", lambda: has_address(d1, vip), 30)
                wait_for("directord to let go", lambda: not has_address(d2, vip), 10)
                timings["preemption"] = time.monotonic() - start
                master, backup = d1, d2
            else:
                master, backup = d2, d1
            # settled: several adverts later, still one master and no drops on either side
            time.sleep(5)
            assert has_address(master, vip) and not has_address(backup, vip), second.job.output()
            stats = second.stats()
            # a backup keepalived hears directord all along; one that preempts hears it only
            # until its master-down timer runs out (about 3 adverts)
            assert stats["Advertisements Received"] >= (1 if preempts_back else 3), stats
            no_keepalived_errors(stats)
            received, dropped = counters(d2)
            assert dropped == 0, daemon.output()[-3000:]
            timings["keepalived_received"] = stats["Advertisements Received"]
            timings["start_transitions"] = transitions
            timings["directord_received"] = received
            assert "Entering MASTER STATE" in second.job.output() or not preempts_back
            if not preempts_back:
                assert "Entering MASTER STATE" not in second.job.output(), second.job.output()
            if keepalived_says:
                assert keepalived_says in first.job.output(), first.job.output()[-3000:]
        finally:
            if daemon is not None:
                stop(daemon)
            first.stop()
            if second is not None:
                second.stop()
    return timings


def test_drill_keepalived_default_conf_master_imported_backup(tmp_path: Path) -> None:
    """keepalived's own default keepalived.conf (addresses moved into 198.18.0.0/15): vrrp_strict
    and PASS auth. keepalived ignores the authentication in strict mode (vrrp.c:2923), so the
    import carries no password and each side accepts the other's adverts. Both nodes run the
    same file: priority 100, and strict mode turns state MASTER into BACKUP (vrrp.c:2914,
    priority is not 255). So the first node up is master; when keepalived stops directord
    takes over; when keepalived returns it hears an equal priority and stays backup (RFC 3768
    6.4.2: a backup accepts an advert of priority >= its own): no preemption back."""
    conf = DRILLS / "sample.conf"
    vip = ipaddress.IPv4Address("198.18.200.16")
    timings = drill(
        tmp_path,
        conf,
        conf,
        vip,
        preempts_back=False,
        keepalived_says="Strict mode does not support authentication",
    )
    record(
        f"sample drill: takeover {timings['takeover']:.3f} s; no preemption back (equal "
        f"priority); adverts accepted: keepalived {timings['keepalived_received']:g}, "
        f"directord {timings['directord_received']:g}; drops 0 / 0; directord's transitions "
        f"before the takeover {timings['start_transitions']:g}"
    )


def test_drill_excluded_addresses_master_imported_backup(tmp_path: Path) -> None:
    """virtual_ipaddress_excluded (an IPv4 and an IPv6 address): keepalived master (state
    MASTER, priority 150), directord on the import of the backup's file (priority 100). No
    drops either way; takeover with every address; keepalived preempts back on return."""
    timings = drill(
        tmp_path,
        DRILLS / "excluded_master.conf",
        DRILLS / "excluded_backup.conf",
        ipaddress.IPv4Address("198.18.0.110"),
        preempts_back=True,
        excluded=(ipaddress.IPv4Address("198.18.0.111"), ipaddress.IPv6Address("2001:db8::111")),
    )
    record(
        f"excluded drill: takeover {timings['takeover']:.3f} s, preemption back "
        f"{timings['preemption']:.3f} s; adverts accepted: keepalived "
        f"{timings['keepalived_received']:g}, directord {timings['directord_received']:g}; "
        f"drops 0 / 0; directord's transitions before the takeover "
        f"{timings['start_transitions']:g}"
    )
