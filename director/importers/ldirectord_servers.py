"""ldirectord's ``real=`` and ``fallback=`` lines -> real server tables and the sorry server.

ldirectord's port rule (man ldirectord, "real"): for an address service, a real server keeps the
service's port unless it is reached by ``masq`` and is another machine; a local (loopback)
server is the kernel's local node, which delivers on the service's port too. A port written
against that rule is left out, with a note. The check of each real server probes ``checkport``,
else the real server's own port, else the port of the ``service`` (``ld_checkport``).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

from director.importers.keepalived import Stmt
from director.importers.ldirectord_checks import SERVICE_PORT, Context, Probe, body, expect
from director.importers.ldirectord_format import (
    FORWARDS,
    Fallback,
    RealLine,
    error,
    peek,
    port,
    whole,
)
from director.importers.ldirectord_format import real_line as parse_real


@dataclass
class Real:
    """A carried real server and what its check needs to know."""

    table: dict[str, Any]
    line: RealLine
    stmt: Stmt
    forwarding: str


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def _keeps_port(forwarding: str, address: str) -> bool:
    """Whether the kernel forwards to the real server's own port (NAT to another machine)."""
    return forwarding == "nat" and not _loopback(address)


def reals(ctx: Context, vs: dict[str, Any]) -> list[Real]:
    """The carried ``real=`` / ``real6=`` lines of the block, each range expanded."""
    v6 = ctx.block.keyword == "virtual6"
    out: list[Real] = []
    seen: dict[tuple[str, int], int] = {}
    for s in [c for c in ctx.block.children or () if c.keyword in ("real", "real6")]:
        s.used = True
        if (s.keyword == "real6") != v6:
            want = "real6" if v6 else "real"
            raise error(s, f"{want}= in a {ctx.block.keyword}= block", f"{s.keyword}=")
        line = parse_real(s, ctx.protocol)
        for host in line.hosts:
            if host.address is None:
                ctx.notes.dropped(
                    s.where,
                    f"{ctx.label} > real={host.text}",
                    "a host name: directord needs addresses and the importer resolves none; "
                    "not carried (the service has one real server less): write its address",
                )
                continue
            real = _table(ctx, vs, s, line, host.address)
            key = (host.address, real.table.get("port", vs.get("port", 0)))
            if key in seen:
                ctx.notes.dropped(
                    s.where,
                    f"{ctx.label} > real={host.text}",
                    f"the same real server as line {seen[key]} (ipvsadm refused the second)",
                )
                continue
            seen[key] = s.line
            out.append(real)
    return out


def _table(ctx: Context, vs: dict[str, Any], s: Stmt, line: RealLine, address: str) -> Real:
    forwarding = FORWARDS[line.forward]
    table: dict[str, Any] = {"address": address}
    vport = vs.get("port", 0)
    if "fwmark" in vs:
        if line.port and forwarding == "nat":
            table["port"] = line.port
    elif line.port and line.port != vport:
        if _keeps_port(forwarding, address):
            table["port"] = line.port
        else:
            why = "the local node" if _loopback(address) else line.forward
            ctx.notes.changed(
                s.where,
                f"{ctx.label} > real={address}:{line.port}",
                f"{why} keeps the service's port: port {line.port} is not carried, {vport} is "
                "used (as ldirectord and the kernel do)",
            )
    table["weight"] = line.weight
    if line.upper is not None:
        table["upper_threshold"] = line.upper
    if line.lower is not None:
        if line.upper is not None and line.lower <= line.upper:
            table["lower_threshold"] = line.lower
        else:
            ctx.notes.dropped(
                s.where,
                f"{ctx.label} > real={address} l:{line.lower}",
                "a lower threshold needs a greater or equal upper one (u:N); the kernel "
                "refused it, so it is not carried",
            )
    return Real(table, line, s, forwarding)


def service_forwarding(found: list[Real], fallback: Fallback | None) -> str:
    """The most used forwarding method (ldirectord sets it per real server)."""
    if found:
        return Counter(r.forwarding for r in found).most_common(1)[0][0]
    return FORWARDS[fallback.forward] if fallback else "dr"


def place(ctx: Context, vs: dict[str, Any], found: list[Real], p: Probe) -> None:
    """The real server tables, with their own forwarding and check where they differ."""
    check = p.check
    checkport = peek(ctx.block, "checkport")
    if checkport is not None and check is not None and check["type"] != "script":
        checkport.used = True
        items = list(check.items())
        check.clear()
        check.update([items[0], ("port", whole(checkport, 1, 65535, "a port")), *items[1:]])
    tables = []
    for r in found:
        table = dict(r.table)
        if r.forwarding != vs["forwarding"]:
            table["forwarding"] = r.forwarding
        own = _own_check(ctx, vs, r, p, checkport is not None)
        if own:
            table["check"] = own
        tables.append(table)
    if tables:
        vs["real_server"] = tables


def _own_check(
    ctx: Context, vs: dict[str, Any], r: Real, p: Probe, checkport: bool
) -> dict[str, Any]:
    own: dict[str, Any] = {}
    label = f"{ctx.label} > real={r.table['address']}"
    kind = p.check["type"] if p.check is not None else "none"
    if kind in ("tcp", "http", "https", "smtp") and not checkport:
        dest = r.table.get("port", vs.get("port", 0))
        wanted = r.line.port or SERVICE_PORT.get(p.service)
        if wanted is None and dest == 0 and kind != "https":
            ctx.notes.dropped(
                r.stmt.where,
                label,
                f"no port for its {kind} check (no checkport, no port on the real server, none "
                "for the service): no check is carried for it (it counts as up)",
            )
            return {"type": "none"}
        if wanted is not None and wanted != dest and not (kind == "https" and wanted == 443):
            own["port"] = wanted
    if r.line.request is None or r.line.receive is None:
        return own
    if p.kind == "http":
        path = r.line.request if r.line.request.startswith("/") else "/" + r.line.request
        if "://" in path:
            ctx.notes.dropped(
                r.stmt.where,
                f"{label} request",
                "a URL to another host: directord checks the real server itself; not carried",
            )
            return own
        own["path"] = path
        if r.line.receive and p.check is not None and p.check.get("method") != "HEAD":
            own |= body(ctx, r.stmt, r.line.receive)
    elif p.kind == "simpletcp":
        send = r.line.request.replace("\\n", "\n")
        send = send[1:] if send.startswith("/") else send
        if send:
            own["send"] = send
        own |= expect(ctx, r.stmt, r.line.receive)
    else:
        ctx.notes.dropped(
            r.stmt.where,
            f"{label} request/receive",
            "the check of this service does not use a request and receive; not carried",
        )
    return own


def sorry_server(
    ctx: Context, vs: dict[str, Any], fb: Fallback, tables: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The fallback as the sorry server (None when it cannot be carried, with a note)."""
    label = f"{ctx.label} > {fb.stmt.keyword}={fb.stmt.args[0]}"
    if fb.host.address is None:
        ctx.notes.dropped(
            fb.stmt.where,
            label,
            "a host name: the importer resolves none; no sorry server is carried (with every "
            "real server down the service drops connections): write its address",
        )
        return None
    forwarding = FORWARDS[fb.forward]
    vport = vs.get("port", 0)
    number = port(fb.stmt, fb.port_text, ctx.protocol) if fb.port_text else vport
    out: dict[str, Any] = {"address": fb.host.address}
    if "fwmark" in vs:
        if number and forwarding == "nat":
            out["port"] = number
    elif number != vport:
        if _keeps_port(forwarding, fb.host.address):
            out["port"] = number
        else:
            why = "the local node" if _loopback(fb.host.address) else fb.forward
            ctx.notes.changed(
                fb.stmt.where,
                label,
                f"{why} keeps the service's port: port {number} is not carried, {vport} is used",
            )
    if forwarding != vs["forwarding"]:
        out["forwarding"] = forwarding
    dest = out.get("port", vport)
    for t in tables:
        if t["address"] == out["address"] and t.get("port", vport) == dest:
            ctx.notes.dropped(
                fb.stmt.where,
                label,
                "it is also a real server: directord's sorry server must be another one; "
                "not carried",
            )
            return None
    return out
