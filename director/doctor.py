"""``directorctl doctor``: check this machine for what ``directord`` needs, and say what to fix.

:func:`diagnose` is pure over its inputs (the config, a :class:`Host` reading and the daemon's
status when it answers), so each finding is tested with a made-up machine; :func:`run_doctor`
gathers the real inputs: ``/proc``, ``/sys``, ``ip -j addr``, ``nft -j list tables`` and the
control socket. It only reads; it changes nothing and sends no packet.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from director.config import ConfigError, load_config
from director.config.model import Config
from director.control import ControlError, request

Level = Literal["ok", "warn", "fail"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Finding:
    level: Level
    topic: str
    message: str
    fix: str = ""


@dataclass
class Host:
    """What the doctor read from the machine."""

    proc_sys: Path = Path("/proc/sys")
    ip_vs_loaded: bool = False
    # interface -> (operstate, addresses)
    interfaces: dict[str, tuple[str, list[IPAddress]]] = field(default_factory=dict)
    nft_available: bool = False
    nft_tables: list[tuple[str, str]] = field(default_factory=list)  # (family, name)
    nft_error: str | None = None

    def sysctl(self, name: str) -> str | None:
        try:
            return (self.proc_sys / name.replace(".", "/")).read_text().strip()
        except OSError:
            return None

    def local_addresses(self) -> dict[IPAddress, str]:
        return {a: name for name, (_, addrs) in self.interfaces.items() for a in addrs}


def diagnose(
    config: Config | None,
    config_error: str | None,
    host: Host,
    daemon: dict[str, Any] | None,
    daemon_error: str | None,
) -> list[Finding]:
    out: list[Finding] = []
    out += _config(config, config_error)
    out += _daemon(daemon, daemon_error)
    out += _local_failures(daemon)
    out += _ip_vs(host)
    if config is None:
        return out
    out += _sysctls(config, host)
    out += _interfaces(config, host)
    out += _vips(config, host, daemon)
    out += _nftables(config, host)
    out += _peers(config, daemon)
    out += _active_active(config, host)  # [bgp]
    return out


def _config(config: Config | None, error: str | None) -> Iterable[Finding]:
    if config is None:
        yield Finding(
            "fail",
            "config",
            error or "no config",
            "fix the file, then: directorctl check-config FILE",
        )
    else:
        vs, rs = config.count()
        yield Finding("ok", "config", f"valid ({vs} virtual services, {rs} real servers)")


def _daemon(daemon: dict[str, Any] | None, error: str | None) -> Iterable[Finding]:
    if daemon is None:
        yield Finding(
            "warn",
            "daemon",
            error or "directord does not answer",
            "systemctl start directord; journalctl -u directord",
        )
        return
    yield Finding("ok", "daemon", f"running, role {daemon.get('role') or '-'}")
    if daemon.get("reload_error"):
        yield Finding(
            "fail",
            "daemon",
            "the last reload was rejected; the daemon runs the previous config:\n"
            + str(daemon["reload_error"]),
            "fix the file, then: directorctl reload",
        )
    if daemon.get("kernel_error"):
        yield Finding(
            "fail",
            "daemon",
            f"kernel error: {daemon['kernel_error']}",
            "see below (ip_vs), then: directorctl reload",
        )
    for fault in daemon.get("director_faults") or []:
        text = str(fault)
        if "probe(s) could not run for a local reason" in text:
            continue  # the probes finding below says it, with a fix per reason
        if "open-file limit" in text:
            fix = "systemctl edit directord: [Service] LimitNOFILE=..., then restart it"
        elif ".json" in text:
            fix = "the daemon runs on; compare the .corrupt-* copy in the state directory"
        else:
            fix = "journalctl -u directord"
        yield Finding("fail", "daemon", f"director fault: {text}", fix)


# What to do about a local probe failure, by errno name (checks.local).
LOCAL_FIXES = {
    "EMFILE": "directord ran out of file descriptors: raise LimitNOFILE (systemctl edit "
    "directord) or lower max_concurrent_probes; count them: ls /proc/$(pidof -s directord)/fd "
    "| wc -l (many connections to the metrics or control socket?)",
    "ENFILE": "the whole machine ran out of file descriptors: raise fs.file-max, find who holds "
    "them (lsof | wc -l)",
    "EADDRNOTAVAIL": "no free local port for the probes: widen net.ipv4.ip_local_port_range, or "
    "probe less often (TIME_WAIT sockets: ss -tan state time-wait | wc -l)",
    "EAGAIN": "no free local port or process slot: see net.ipv4.ip_local_port_range and the "
    "unit's TasksMax",
    "ENOBUFS": "the kernel ran out of socket buffers: check memory (free -m) and net.core.*mem",
    "ENOMEM": "out of memory: free -m; journalctl -k | grep -i oom",
    "ENOSPC": "out of epoll watches: raise fs.epoll.max_user_watches",
}
RECENT = 600.0  # seconds: a local failure this recent is a problem now, older a warning


def _local_failures(daemon: dict[str, Any] | None) -> Iterable[Finding]:
    """Probes the daemon could not run (status key ``probe_local_failures``, the dict of
    ``HealthChecks.local_faults()``): the director's fault, the verdicts were kept."""
    faults = (daemon or {}).get("probe_local_failures")
    if not isinstance(faults, dict) or not faults.get("total"):
        return
    by_reason = faults.get("by_reason") or {}
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items()))
    ago = faults.get("last_seconds_ago")
    recent = isinstance(ago, int | float) and ago < RECENT
    when = f"{ago:.0f} s ago" if isinstance(ago, int | float) else "at an unknown time"
    fixes = [LOCAL_FIXES[r] for r in sorted(by_reason) if r in LOCAL_FIXES]
    yield Finding(
        "fail" if recent else "warn",
        "checks",
        f"{faults['total']} health probe(s) could not run for a reason of this machine's own "
        f"({counts}); the servers' verdicts were kept as they were. Last {when}: "
        f"{faults.get('last_error') or '-'}",
        "; ".join(fixes) or "journalctl -u directord | grep probe_local_failure",
    )


def _ip_vs(host: Host) -> Iterable[Finding]:
    if host.ip_vs_loaded:
        yield Finding("ok", "ip_vs", "the ip_vs module is loaded")
    else:
        yield Finding(
            "fail",
            "ip_vs",
            "the ip_vs module is not loaded (no /proc/net/ip_vs)",
            "modprobe ip_vs; echo ip_vs > /etc/modules-load.d/ip_vs.conf",
        )


def _sysctls(config: Config, host: Host) -> Iterable[Finding]:
    wanted = dict(config.kernel.sysctl_items())
    if any(
        vs.forwarding == "nat" or any(rs.forwarding == "nat" for rs in vs.real_servers)
        for vs in config.virtual_servers
    ):
        wanted.setdefault("net.ipv4.ip_forward", "1")
    bad = 0
    for name, value in wanted.items():
        got = host.sysctl(name)
        if got is None:
            bad += 1
            hint = " (load ip_vs first)" if name.startswith("net.ipv4.vs.") else ""
            yield Finding(
                "fail", "sysctl", f"{name} does not exist{hint}", "modprobe ip_vs" if hint else ""
            )
        elif got.split() != value.split():
            bad += 1
            yield Finding(
                "warn",
                "sysctl",
                f"{name} is {got}, the config wants {value}",
                "directord sets it at start and on reload; if it is running, something set it "
                f"back (look in /etc/sysctl.d); now: sysctl -w {name}={value}",
            )
    if not bad:
        yield Finding("ok", "sysctl", f"{len(wanted)} sysctl(s) as the config wants")


# Active-active directors (every one announcing the VIP over BGP, the router spreading flows by
# ECMP): what a flow that the router moves to another director needs there.
ACTIVE_ACTIVE_SYSCTLS = (
    ("net.ipv4.vs.sloppy_tcp", "1", "a TCP flow moved mid-stream (no SYN) is dropped"),
    ("net.ipv4.vs.schedule_icmp", "1", "ICMP errors (path MTU) for a moved flow are dropped"),
)


def _active_active(config: Config, host: Host) -> Iterable[Finding]:
    """With [bgp] announcements: hashing schedulers (the same real server on every director),
    and the sysctls that let a director take over a flow mid-stream."""
    if config.bgp is None or not config.bgp.announcements:
        return
    names = {n for a in config.bgp.announcements for n in a.virtual_servers}
    bad = 0
    for vs in config.virtual_servers:
        if vs.display_name not in names:
            continue
        if vs.scheduler not in ("mh", "sh"):
            bad += 1
            yield Finding(
                "warn",
                "active-active",
                f"{vs.display_name} uses scheduler {vs.scheduler}: each director picks its own "
                "real server, so a flow the router moves to another director is reset",
                f'scheduler = "mh" with scheduler_flags = ["mh-port"] in {vs.display_name}',
            )
        # (on_failure = "quiesce" is fine: a weight-0 mh destination holds no slots on any
        # director, see director.reconcile.order)
        if vs.protocol == "sctp" and host.sysctl("net.ipv4.vs.sloppy_sctp") != "1":
            bad += 1
            yield Finding(
                "warn",
                "active-active",
                f"net.ipv4.vs.sloppy_sctp is not 1: an SCTP association of {vs.display_name} "
                "moved to this director mid-stream is dropped",
                '[kernel.sysctls] "net.ipv4.vs.sloppy_sctp" = 1',
            )
    for name, value, why in ACTIVE_ACTIVE_SYSCTLS:
        got = host.sysctl(name)
        if got is not None and got != value:
            bad += 1
            yield Finding(
                "warn",
                "active-active",
                f"{name} is {got}: {why}",
                f'[kernel.sysctls] "{name}" = {value}',
            )
    if not bad:
        yield Finding("ok", "active-active", "hashing schedulers and sloppy_tcp for BGP VIPs")


def _wanted_interfaces(config: Config) -> dict[str, str]:
    """interface -> why the config needs it."""
    out: dict[str, str] = {}
    for inst in config.vrrp_instances:
        out.setdefault(inst.interface, f"vrrp_instance {inst.name}")
        for va in inst.held_addresses:
            if va.device:
                out.setdefault(va.device, f"a virtual address of {inst.name}")
        for t in inst.track_interfaces:
            out.setdefault(t.interface, f"tracked by {inst.name}")
    if config.sync_daemon is not None:
        out.setdefault(config.sync_daemon.interface, "sync_daemon")
    for rule in config.snats:
        if rule.out_interface:
            out.setdefault(rule.out_interface, "an snat rule")
    for masq in config.masquerades:
        if masq.out_interface:
            out.setdefault(masq.out_interface, "a masquerade rule")
    return out


def _interfaces(config: Config, host: Host) -> Iterable[Finding]:
    wanted = _wanted_interfaces(config)
    problems = 0
    for name, why in wanted.items():
        entry = host.interfaces.get(name)
        if entry is None:
            problems += 1
            yield Finding(
                "fail",
                "interface",
                f"{name} ({why}) does not exist",
                "check the name with: ip link",
            )
        elif entry[0] not in ("up", "unknown"):
            problems += 1
            yield Finding(
                "warn",
                "interface",
                f"{name} ({why}) is {entry[0]}",
                f"ip link set {name} up; check the cable/switch port",
            )
    if wanted and not problems:
        yield Finding("ok", "interface", f"{len(wanted)} interface(s) present and up")


def _vips(config: Config, host: Host, daemon: dict[str, Any] | None) -> Iterable[Finding]:
    local = host.local_addresses()
    states = {
        str(i.get("name")): str(i.get("state", "")).lower()
        for i in (daemon or {}).get("vrrp") or []
    }
    vrrp_vips: dict[IPAddress, str] = {}
    for inst in config.vrrp_instances:
        for va in inst.held_addresses:
            other = vrrp_vips.get(va.ip)
            if other is not None and other != inst.name:
                yield Finding(
                    "fail",
                    "vip",
                    f"{va.ip} is a virtual address of both {other} and {inst.name}",
                    "keep it in one vrrp_instance",
                )
            vrrp_vips[va.ip] = inst.name
            here = local.get(va.ip)
            state = states.get(inst.name)
            if here is None:
                if state == "master":
                    yield Finding(
                        "fail",
                        "vip",
                        f"{va.ip} of {inst.name} (MASTER) is on no interface",
                        "directorctl reload; journalctl -u directord",
                    )
                continue
            if daemon is None:
                yield Finding(
                    "warn",
                    "vip",
                    f"{va.ip} of {inst.name} is on {here} but directord is not running",
                    "a crash left it? directord --cleanup removes it",
                )
            elif state in ("backup", "fault"):
                yield Finding(
                    "fail",
                    "vip",
                    f"{va.ip} of {inst.name} is on {here} while the instance is {state.upper()}: "
                    "two machines may answer for it",
                    f"ip addr del {va.ip} dev {here} (and find who added it)",
                )
    for vs in config.virtual_servers:
        if vs.address is None or vs.address in vrrp_vips:
            continue
        if vs.address not in local and (vs.forwarding != "nat" or not config.vrrp_instances):
            yield Finding(
                "warn",
                "vip",
                f"{vs.address} ({vs.display_name}) is on no local interface and no "
                "vrrp_instance carries it",
                "clients reach it only if it is routed here: add it to a vrrp_instance's "
                "virtual_addresses, or to an interface",
            )


def _nftables(config: Config, host: Host) -> Iterable[Finding]:
    needs = bool(config.fwmarks or config.snats or config.masquerades)
    if not host.nft_available:
        if needs:
            yield Finding(
                "fail",
                "nftables",
                "nft is not installed, but the config has fwmark/snat/masquerade rules",
                "apt-get install nftables",
            )
        return
    if host.nft_error:
        yield Finding(
            "fail" if needs else "warn",
            "nftables",
            f"nft cannot list the ruleset: {host.nft_error}",
            "run as root; is nf_tables available?",
        )
        return
    table = config.network.table
    present = any(name == table for _, name in host.nft_tables)
    if needs and not present:
        yield Finding(
            "warn",
            "nftables",
            f"table {table} is missing (rules come with the master role)",
            "if this node is master: directorctl reload; journalctl -u directord",
        )
    elif needs:
        yield Finding("ok", "nftables", f"table {table} present")
    elif present:
        yield Finding(
            "warn",
            "nftables",
            f"table {table} exists but the config has no rules",
            f"left from an earlier config? nft delete table inet {table}",
        )
    else:
        yield Finding("ok", "nftables", "nft works; the config has no rules")


def _peers(config: Config, daemon: dict[str, Any] | None) -> Iterable[Finding]:
    """What each instance has heard. In VRRP only the master advertises: a backup must hear the
    master; a master hears nobody (its backups are silent), so there is nothing to check."""
    if not config.vrrp_instances:
        return
    if daemon is None:
        yield Finding("warn", "vrrp", "cannot tell which VRRP peers were seen: directord is down")
        return
    reported = {str(i.get("name")): i for i in daemon.get("vrrp") or []}
    for inst in config.vrrp_instances:
        info = reported.get(inst.name)
        if info is None:
            yield Finding("warn", "vrrp", f"{inst.name}: the daemon reports nothing for it")
            continue
        peers = [info["peer"]] if info.get("peer") else []  # the master this instance hears
        seen = ", ".join(map(str, peers))
        state = str(info.get("state", "")).lower()
        if state == "fault":
            yield Finding(
                "fail",
                "vrrp",
                f"{inst.name} is in FAULT: a tracked interface or check is down",
                "see the interface findings above and directorctl status",
            )
        elif state == "backup" and not peers:
            yield Finding(
                "warn",
                "vrrp",
                f"{inst.name} is BACKUP and has heard no master",
                "check that VRRP (IP protocol 112) passes between the directors, or set "
                "unicast_peers",
            )
        elif state == "backup":
            yield Finding("ok", "vrrp", f"{inst.name} BACKUP, master heard: {seen}")
        else:
            yield Finding(
                "ok", "vrrp", f"{inst.name} {state.upper() or '?'} (backups are silent in VRRP)"
            )


# -- reading the real machine --------------------------------------------------------------


def read_host() -> Host:
    host = Host(ip_vs_loaded=Path("/proc/net/ip_vs").exists())
    try:
        out = subprocess.run(
            ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10
        )
        for link in json.loads(out.stdout or "[]"):
            addrs = [
                ipaddress.ip_address(a["local"]) for a in link.get("addr_info", []) if "local" in a
            ]
            state = str(link.get("operstate", "unknown")).lower()
            host.interfaces[link["ifname"]] = (state, addrs)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    nft = shutil.which("nft")
    host.nft_available = nft is not None
    if nft is not None:
        try:
            res = subprocess.run(
                [nft, "-j", "list", "tables"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            host.nft_error = str(exc)
        else:
            if res.returncode != 0:
                host.nft_error = res.stderr.strip() or f"exit status {res.returncode}"
            else:
                for item in json.loads(res.stdout or "{}").get("nftables", []):
                    t = item.get("table")
                    if t:
                        host.nft_tables.append((str(t.get("family")), str(t.get("name"))))
    return host


def run_doctor(config_path: Path, socket: Path) -> list[Finding]:
    config: Config | None = None
    config_error: str | None = None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        config_error = str(exc)
    daemon: dict[str, Any] | None = None
    daemon_error: str | None = None
    try:
        daemon = request(socket, "status", wait=30)
    except ControlError as exc:
        daemon_error = str(exc)
    return diagnose(config, config_error, read_host(), daemon, daemon_error)


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def report(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        text = f.message.replace("\n", "\n              ")
        lines.append(f"[{_MARK[f.level]}] {f.topic:9} {text}")
        if f.fix and f.level != "ok":
            lines.append(f"              fix: {f.fix}")
    fails = sum(f.level == "fail" for f in findings)
    warns = sum(f.level == "warn" for f in findings)
    lines.append(f"{fails} problem(s), {warns} warning(s)")
    return "\n".join(lines)
