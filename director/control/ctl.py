"""``directorctl``'s daemon commands: status, drain, enable, reload, doctor; and vrrp-scan.

Each takes the parsed arguments and returns the exit status; :mod:`director.cli` owns the parser.
Errors go to standard error as one clear sentence (daemon not running, permission denied, a
refused drain) with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from director.control.client import request
from director.control.protocol import ControlError
from director.peer.command import status_lines as peer_status_lines
from director.status_words import agent_words, bgp_words

DEFAULT_SOCKET = Path("/run/director/control.sock")
DEFAULT_CONFIG = Path("/etc/director/director.toml")


def add_arguments(sub: Any) -> None:
    """The daemon commands' subparsers (``sub`` is the cli's subparsers action)."""
    s = sub.add_parser("status", help="VRRP state, services, real servers, health, connections")
    s.add_argument("--json", action="store_true", help="machine-readable")
    s.add_argument(
        "--state-dir",
        type=Path,
        help="read the status.json the daemon last wrote there instead of asking the daemon",
    )
    d = sub.add_parser("drain", help="weight 0 for a real server (maintenance); see enable")
    d.add_argument("server", help="real server name, address, or address:port")
    d.add_argument("--service", help="only in this virtual server (name or 'TCP 1.2.3.4:80')")
    d.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="remove it from the table once idle, or after SECONDS at the latest",
    )
    e = sub.add_parser("enable", help="end a drain")
    e.add_argument("server")
    e.add_argument("--service")
    sub.add_parser("reload", help="reload the config file (like systemctl reload directord)")
    dd = sub.add_parser(
        "drain-director",
        help="[bgp] withdraw this director's routes (node maintenance); see enable-director",
    )
    dd.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long established flows may continue (default: [bgp] drain_timeout)",
    )
    sub.add_parser("enable-director", help="[bgp] end drain-director: announce again")
    doc = sub.add_parser("doctor", help="check this machine for what directord needs")
    doc.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    doc.add_argument("--json", action="store_true")
    scan = sub.add_parser(
        "vrrp-scan",
        help="list every VRRP router heard on a segment, flag VRID collisions (root)",
    )
    scan.add_argument("interface", help="the interface to listen on, e.g. eth0")
    scan.add_argument("--seconds", type=float, default=5.0, help="how long to listen (default 5)")
    scan.add_argument("--json", action="store_true", help="machine-readable")


def _fail(message: str) -> int:
    print(f"directorctl: {message}", file=sys.stderr)
    return 1


def cmd_status(args: argparse.Namespace) -> int:
    if args.state_dir is not None:
        return _status_file(args.state_dir / "status.json", args.json)
    try:
        status = request(args.socket, "status")
    except ControlError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(status, indent=1, sort_keys=True))
    else:
        print(render_status(status))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    try:
        result = request(
            args.socket,
            "drain",
            {"server": args.server, "service": args.service, "timeout": args.timeout},
        )
    except ControlError as exc:
        return _fail(str(exc))
    matched = [m for d in result["matches"] if d["server"] == args.server for m in d["matches"]]
    tail = f", removed when idle or after {args.timeout:g} s" if args.timeout else ""
    print(f"draining {args.server}: weight 0 for new connections{tail}")
    for ident in matched:
        service, dest = ident.split("|")
        print(f"  {service} -> {dest}")
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    try:
        result = request(args.socket, "enable", {"server": args.server, "service": args.service})
    except ControlError as exc:
        return _fail(str(exc))
    for d in result["enabled"]:
        print(f"enabled {d['server']}" + (f" in {d['service']}" if d.get("service") else ""))
    return 0


def cmd_drain_director(args: argparse.Namespace) -> int:
    return _director_drain(args, "drain-director", {"timeout": args.timeout})


def cmd_enable_director(args: argparse.Namespace) -> int:
    return _director_drain(args, "enable-director", {})


def _director_drain(args: argparse.Namespace, command: str, params: dict[str, Any]) -> int:
    try:
        result = request(args.socket, command, params)
    except ControlError as exc:
        return _fail(str(exc))
    drain = result["drain"]
    if drain["drained"]:
        print(f"drained: routes withdrawn; established flows for {drain['seconds_left']:g} s")
    else:
        print("enabled: routes announced again where their services are healthy")
    for route in result["routes"]:
        state = "announced" if route["announced"] else "withdrawn"
        print(f"  {route['prefix']:20} {state:9}  {route['reason']}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    try:
        result = request(args.socket, "reload")
    except ControlError as exc:
        return _fail(str(exc))
    sync = result.get("last_sync") or {}
    print(
        f"reloaded {result['config_path']}: {sync.get('services', 0)} services, "
        f"{sync.get('destinations', 0)} destinations, {sync.get('operations', 0)} operation(s)"
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from director.doctor import report, run_doctor

    findings = run_doctor(args.config, args.socket)
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], indent=1))
    else:
        print(report(findings))
    return 1 if any(f.level == "fail" for f in findings) else 0


def cmd_vrrp_scan(args: argparse.Namespace) -> int:
    """Exit 1 on a VRID collision or an address-list disagreement, 2 when it cannot listen."""
    from director.vrrp_scan import ScanError, render, scan

    if args.seconds <= 0:
        _fail(f"vrrp-scan: --seconds {args.seconds:g}: must be more than 0")
        return 2
    try:
        report = scan(args.interface, args.seconds)
    except ScanError as exc:
        _fail(f"vrrp-scan: {exc}")
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(render(report, args.interface))
    return report.exit_status


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status,
    "drain": cmd_drain,
    "enable": cmd_enable,
    "reload": cmd_reload,
    "drain-director": cmd_drain_director,
    "enable-director": cmd_enable_director,
    "doctor": cmd_doctor,
    "vrrp-scan": cmd_vrrp_scan,
}


# -- rendering -------------------------------------------------------------------------------


EVENTS_SHOWN = 10  # the newest; the page and --json show more


def _num(value: object) -> str:
    return "-" if value is None else str(value)


def agent_line(rs: dict[str, Any]) -> str | None:
    """The feedback agent of a real server, under its row (the page's words:
    :func:`director.status_words.agent_words`)."""
    agent = rs.get("agent")
    if not agent:
        return None
    return f"     agent: {agent_words(agent, rs.get('config_weight'), time.time())}"


def _bgp_lines(bgp: dict[str, Any] | None) -> list[str]:
    """[bgp]: the speaker, its sessions, each route and why, problems, then the page's banners
    (the page's words: :func:`director.status_words.bgp_words`)."""
    if not bgp:
        return []
    words = bgp_words(bgp)
    lines = [f"bgp:      {words['head']['text']}"]
    for kind in ("sessions", "routes", "problems"):
        lines += [f"          {x['text']}" for x in words[kind]]
    lines += [f"BGP:      {x['text']}" for x in words["banners"]]
    return lines


def render_status(st: dict[str, Any]) -> str:
    """One screen: role and VRRP, then each service like ``ipvsadm -Ln`` with health added."""
    lines: list[str] = []
    role = st.get("role") or "-"
    lines.append(f"director: {str(role).upper()}   config {st.get('config_path')}")
    vrrp = st.get("vrrp") or []
    if vrrp:
        for inst in vrrp:
            peer = inst.get("peer")
            faults = inst.get("faults") or []
            lines.append(
                f"vrrp:     {inst.get('name')}  {str(inst.get('state', '-')).upper()}"
                f"  prio {_num(inst.get('priority'))}"
                + (f"  master heard {peer}" if peer else "")
                + (f"  faults: {', '.join(map(str, faults))}" if faults else "")
            )
            dropped = inst.get("adverts_dropped") or {}
            if dropped:
                counts = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
                lines.append(f"          adverts dropped: {counts}")
            held, restored = inst.get("answers_suppressed"), inst.get("vips_restored")
            if held or restored:
                lines.append(
                    f"          answers held back {held or 0}, VIPs restored {restored or 0}"
                )
    else:
        lines.append("vrrp:     no instances (this director is master on its own)")
    lines += _bgp_lines(st.get("bgp"))
    for fault in st.get("director_faults") or []:
        lines.append(f"FAULT:    {fault}")
    lines += peer_status_lines(st)
    if st.get("reload_error"):
        lines.append("reload:   FAILED, running the previous config")
        lines += ["          " + ln for ln in str(st["reload_error"]).splitlines()]
    if st.get("kernel_error"):
        lines.append(f"kernel:   {st['kernel_error']}")
    lines += [f"sysctl:   {p}" for p in st.get("sysctl_problems") or []]
    at = st.get("stats_at")
    age = f"{max(0.0, time.time() - at):.0f} s ago" if isinstance(at, int | float) else "never"
    lines.append(f"counters: read {age}")
    lines.append("")
    lines.append(
        f"{'Prot LocalAddress:Port Scheduler':44} {'Forward':7} {'Weight':>6} {'ActConn':>7}"
        f" {'InActConn':>9}  Health"
    )
    for svc in st.get("services") or []:
        extra = (
            f" persistent {svc['persistence_timeout']}" if svc.get("persistence_timeout") else ""
        )
        missing = "" if svc.get("in_kernel") else "   (not in the kernel table)"
        lines.append(f"{svc['key']} {svc['scheduler']}{extra}  [{svc['name']}]{missing}")
        for rs in svc.get("servers") or []:
            name = f" ({rs['name']})" if rs.get("name") else ""
            health = rs.get("health")
            if health is None:
                htext = "no check"
            else:
                htext = "up" if health.get("up") else "DOWN"
                htext += f" {health.get('type')}"
                if health.get("latency_ms") is not None:
                    htext += f" {health['latency_ms']} ms"
                if health.get("last_error"):
                    htext += f" ({health['last_error']})"
            if rs.get("maintenance"):
                htext += f"  [{rs['maintenance']}]"
            weight = _num(rs.get("weight")) if rs.get("in_kernel") else "out"
            lines.append(
                f"  -> {rs['address'] + name:39} {rs['forwarding']:7} {weight:>6}"
                f" {_num(rs.get('active')):>7} {_num(rs.get('inactive')):>9}  {htext}"
            )
            agent = agent_line(rs)
            if agent:
                lines.append(agent)
    drains = st.get("drains") or []
    if drains:
        lines.append("")
        for d in drains:
            where = f" in {d['service']}" if d.get("service") else ""
            left = d.get("remaining")
            timer = f", removal at the latest in {left:.0f} s" if left is not None else ""
            lines.append(f"drain:    {d['server']}{where}{timer}")
    config = st.get("config") or {}
    if config.get("sha256"):
        lines.append("")
        lines.append(f"config:   sha256 {config['sha256']}")
    events = st.get("events") or []
    if events:
        lines.append("")
        for e in events[:EVENTS_SHOWN]:
            at = time.strftime("%H:%M:%S", time.gmtime(e["at"]))
            lines.append(f"event:    {at} {e['kind']:11} {e['text']}")
    return "\n".join(lines)


def _status_file(path: Path, as_json: bool) -> int:
    """The status.json the daemon writes on every sync (works without the socket)."""
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return _fail(f"no status at {path}: is directord running?")
    except (OSError, ValueError) as exc:
        return _fail(f"cannot read {path}: {exc}")
    if as_json:
        print(json.dumps(status, indent=1))
        return 0
    sync = status.get("last_sync", {})
    print(f"config:  {status.get('config_path')}")
    if status.get("reload_error"):
        print("reload:  FAILED, running the previous config")
        print("         " + status["reload_error"].replace("\n", "\n         "))
    for fault in status.get("director_faults") or []:
        print(f"FAULT:   {fault}")
    if status.get("kernel_error"):
        print(f"kernel:  {status['kernel_error']}")
    for problem in status.get("sysctl_problems", []):
        print(f"sysctl:  {problem}")
    for check in status.get("checks", []):
        state = "up  " if check.get("up") else "DOWN"
        error = f"  {check['last_error']}" if check.get("last_error") else ""
        latency = check.get("last_latency_ms")
        print(
            f"check:   {state} {check.get('service')} -> {check.get('destination')}"
            f" {check.get('type')} {latency if latency is not None else '-'} ms{error}"
        )
    print(
        f"ipvs:    {sync.get('services', 0)} services, {sync.get('destinations', 0)} destinations"
        f" (last sync: {sync.get('reason', '-')}, {sync.get('operations', 0)} operations,"
        f" {len(sync.get('failures', []))} failures)"
    )
    return 0
