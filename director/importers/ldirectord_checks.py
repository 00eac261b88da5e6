"""ldirectord's ``checktype`` and ``service`` -> a director ``check`` table, and its notes.

ldirectord checks each real server every ``checkinterval`` seconds; one good check brings it
up, ``failurecount`` bad ones in a row take it down: ``interval``, ``rise = 1``, ``fall``.
Negotiate checks time out after ``negotiatetimeout``, connect, external and ping checks after
``checktimeout`` (each falls back to the other, then to 30 and 5 s). The HTTP check is LWP's:
certificates are not verified, a 2xx after following redirects is up and ``receive`` is a
regular expression searched in the body.

directord has native ``http``, ``https``, ``smtp`` and ``tcp`` (send/expect) checks and runs
external programs (``script``); for the other services a ``tcp`` check stands in, and the note
says what ldirectord checked that directord does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from director.config.checks import regex_problem
from director.importers.keepalived import Stmt
from director.importers.ldirectord_format import error, number, peek, quoted, value
from director.importers.notes import Notes
from director.importers.scripts import ADDRESS, PORT, command_argv

CHECKTYPES = ("connect", "negotiate", "ping", "off", "on", "external", "external-perl")
SERVICES = frozenset(
    {
        "dns",
        "ftp",
        "http",
        "https",
        "http_proxy",
        "imap",
        "imaps",
        "ldap",
        "ldaps",
        "mysql",
        "nntp",
        "none",
        "oracle",
        "pgsql",
        "pop",
        "pops",
        "radius",
        "sip",
        "smtp",
        "submission",
        "simpletcp",
    }
)
# ldirectord's ld_port_to_service / ld_service_to_port.
SERVICE_PORT = {
    "ftp": 21,
    "smtp": 25,
    "dns": 53,
    "http": 80,
    "pop": 110,
    "nntp": 119,
    "imap": 143,
    "ldap": 389,
    "https": 443,
    "submission": 587,
    "ldaps": 636,
    "imaps": 993,
    "pops": 995,
    "oracle": 1521,
    "radius": 1812,
    "http_proxy": 3128,
    "mysql": 3306,
    "sip": 5060,
    "pgsql": 5432,
}
PORT_SERVICE = {port: name for name, port in SERVICE_PORT.items()}
# Services without a native check: (a banner regex a tcp check can expect, or None for a plain
# connect; what ldirectord checked beyond that).
STAND_INS: dict[str, tuple[str | None, str]] = {
    "ftp": (r"^220", "logged in and fetched the request file"),
    "pop": (r"^\+OK", "logged in (with login/passwd) over POP3"),
    "pops": (None, "logged in over POP3 with TLS"),
    "imap": (r"^\* OK", "logged in (with login/passwd) over IMAP"),
    "imaps": (None, "logged in over IMAP with TLS"),
    "ldap": (None, "bound and searched for the request"),
    "ldaps": (None, "bound over TLS and searched for the request"),
    "dns": (None, "looked the request up and matched the receive address"),
    "mysql": (None, "logged in and ran the request query"),
    "pgsql": (None, "logged in and ran the request query"),
    "oracle": (None, "logged in and ran the request query"),
    "sip": (None, "sent a SIP OPTIONS request"),
    "radius": (None, "sent a RADIUS Access-Request"),
    "http_proxy": (None, "fetched the request URL through the proxy"),
}
USED_BY = {  # settings only some services read
    "login": frozenset({"ftp", "imap", "imaps", "ldap", "ldaps", "mysql", "oracle", "pgsql"})
    | {"pop", "pops", "radius", "sip"},
    "passwd": frozenset({"ftp", "imap", "imaps", "ldap", "ldaps", "mysql", "oracle", "pgsql"})
    | {"pop", "pops", "radius", "sip"},
    "database": frozenset({"mysql", "oracle", "pgsql"}),
    "secret": frozenset({"radius"}),
}
TIMING_KEYS = ("checktimeout", "negotiatetimeout", "connecttimeout", "checkinterval")
REGEX_CHARS = frozenset("\\^$.|?*+()[]{}")


@dataclass(frozen=True)
class Timing:
    """The effective timing of a virtual service (globals overridden by the block)."""

    interval: int
    checktimeout: int
    negotiatetimeout: int
    failurecount: int
    checkcount: int
    where: str  # of the global timing directives


@dataclass
class Probe:
    """The check of a virtual service: the table, and how real servers refine it."""

    check: dict[str, Any] | None
    kind: str = "none"  # http, simpletcp or other: what a real's "request", "receive" become
    service: str = "none"
    drop_reals: bool = False  # checktype = off: ldirectord never adds the real servers


@dataclass
class Context:
    """What the check of one virtual block needs to know about it."""

    block: Stmt
    label: str
    protocol: str  # tcp, udp, fwm
    vip: str  # the address, or the fwmark, as ldirectord passes it to external checks
    vport: int  # 0 for fwmark services
    timing: Timing
    notes: Notes
    seen: set[str] = field(default_factory=set)  # file-wide notes already given

    def where(self, s: Stmt | None) -> str:
        return (s or self.block).where

    def once(self, key: str, s: Stmt | None, setting: str, message: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.notes.changed(self.where(s), setting, message)


def service_name(block: Stmt, vport: int, fwmark: bool) -> tuple[str, Stmt | None]:
    s = block.first("service")
    if s is None:
        return ("none" if fwmark else PORT_SERVICE.get(vport, "none")), None
    return value(s), s


def probe(ctx: Context) -> Probe:
    """The check of the block, from its checktype and service."""
    block = ctx.block
    ct = block.first("checktype")
    checktype = value(ct) if ct else "negotiate"
    combined = number(checktype) is not None
    if ct is not None and not combined and checktype not in CHECKTYPES:
        raise error(ct, f"one of {', '.join(CHECKTYPES)} or a number")
    service, svc = service_name(block, ctx.vport, ctx.protocol == "fwm")
    negotiates = checktype == "negotiate" or combined
    if negotiates:
        _unused_settings(ctx, f"service={service}", service)
    else:
        _unused_settings(ctx, f"checktype={checktype}", "")
    if combined:
        found = _negotiate(ctx, service, svc)
        if found.check is not None and number(checktype):
            ctx.notes.changed(
                ct.where if ct else block.where,
                f"{ctx.label} > checktype={checktype}",
                f"ldirectord negotiated ({service}) once after every {checktype} connects and "
                f"only connected in between; directord runs the {found.check['type']} check "
                "every round (more requests to the real servers, failures seen sooner)",
            )
        return found
    if checktype == "negotiate":
        return _negotiate(ctx, service, svc)
    if checktype == "on":
        return Probe(None)
    if checktype == "off":
        return Probe(None, drop_reals=True)
    if checktype == "connect":
        if ctx.protocol == "udp":
            return _no_check(ctx, ct, "checktype=connect", "ldirectord pinged UDP real servers")
        return Probe(_timed(ctx, {"type": "tcp"}, ctx.timing.checktimeout), "other", service)
    if checktype == "ping":
        return _ping(ctx, ct)
    return _external(ctx, ct, checktype)


def _timed(ctx: Context, check: dict[str, Any], timeout: int) -> dict[str, Any]:
    t = ctx.timing
    out: dict[str, Any] = {"type": check.pop("type"), "interval": float(t.interval)}
    out["timeout"] = float(min(timeout, t.interval))
    out["rise"] = 1
    out["fall"] = min(t.failurecount, 100)
    if timeout > t.interval:
        message = (
            f"{timeout} s is longer than checkinterval ({t.interval} s): timeout = "
            f"{t.interval} (a real server slower than that to answer is now down; raise "
            "checkinterval to keep it)"
        )
        if any(peek(ctx.block, k) for k in TIMING_KEYS):
            ctx.notes.changed(ctx.block.where, f"{ctx.label} timeout", message)
        else:
            key = f"timeout {timeout} {t.interval}"
            if key not in ctx.seen:
                ctx.seen.add(key)
                ctx.notes.changed(
                    t.where, "check timeout", f"{message}; on every service with these timings"
                )
    if t.failurecount > 100:
        ctx.notes.changed(
            ctx.block.where, f"{ctx.label} failurecount", "at most 100 failed rounds: fall = 100"
        )
    return out | check


def _no_check(ctx: Context, s: Stmt | None, setting: str, what: str) -> Probe:
    ctx.notes.dropped(
        ctx.where(s),
        f"{ctx.label} > {setting}",
        f"{what}; directord has no UDP or ICMP check, so no check is carried and every real "
        "server counts as up (a dead one keeps its share of the traffic): write a script check "
        '(command = ["/usr/local/bin/check", "{address}", "{port}"]) for it',
    )
    return Probe(None)


def _ping(ctx: Context, ct: Stmt | None) -> Probe:
    if ctx.protocol == "udp":
        return _no_check(ctx, ct, "checktype=ping", "ldirectord pinged the real servers")
    check: dict[str, Any] = {"type": "tcp"}
    if ctx.timing.checkcount > 1:
        check["attempts"] = min(ctx.timing.checkcount, 10)
    ctx.notes.changed(
        ctx.where(ct),
        f"{ctx.label} > checktype=ping",
        "directord has no ICMP check: a tcp connect to the service's port stands in (a server "
        "that answers ping but not on the port is now down)",
    )
    service, _ = service_name(ctx.block, ctx.vport, ctx.protocol == "fwm")
    return Probe(_timed(ctx, check, ctx.timing.checktimeout), "other", service)


def _external(ctx: Context, ct: Stmt | None, checktype: str) -> Probe:
    s = ctx.block.first("checkcommand")
    label = f"{ctx.label} > checktype={checktype}"
    if s is None:
        ctx.notes.dropped(
            ctx.where(ct),
            label,
            "no checkcommand: ldirectord ran /bin/true (always up); no check is carried",
        )
        return Probe(None)
    text = quoted(s)
    argv, shell = command_argv(text)
    if not argv or not argv[0].startswith("/"):
        ctx.notes.dropped(
            s.where,
            f"{ctx.label} > checkcommand={value(s)}",
            "directord runs a check program by its absolute path: no check is carried (every "
            "real server counts as up); write the full path",
        )
        return Probe(None)
    if len(argv) > 1 or shell:
        ctx.notes.changed(
            s.where,
            f"{ctx.label} > checkcommand={value(s)}",
            "ldirectord ran the whole text as one program name (so the check failed); "
            f"directord runs {argv[0]!r} with the rest as arguments",
        )
    if checktype == "external-perl":
        argv = ["/usr/bin/perl", *argv]
        ctx.notes.changed(
            s.where,
            f"{ctx.label} > checktype=external-perl",
            "ldirectord ran the Perl script inside its own process; directord runs it with "
            "/usr/bin/perl in a process of its own every round (same arguments and exit codes)",
        )
    command = [*argv, ctx.vip, str(ctx.vport), ADDRESS, PORT]
    check = {"type": "script", "command": command}
    return Probe(_timed(ctx, check, ctx.timing.checktimeout), "other")


def _negotiate(ctx: Context, service: str, svc: Stmt | None) -> Probe:
    timeout = ctx.timing.negotiatetimeout
    if service not in SERVICES:
        why = "is not a service ldirectord knows (a patched ldirectord?)"
        return _stand_in(ctx, svc, service, None, why)
    if service == "none":
        return Probe(None)
    if service in ("http", "https"):
        return _http(ctx, service, timeout)
    if service in ("smtp", "submission"):
        return Probe(_timed(ctx, {"type": "smtp"}, timeout), "other", service)
    if service == "simpletcp":
        return _simpletcp(ctx, timeout)
    if service == "nntp" and ctx.protocol != "udp":
        check = {"type": "tcp", "expect": "^2", "expect_regex": True}
        return Probe(_timed(ctx, check, timeout), "other", service)
    banner, what = STAND_INS.get(service, (None, "checked the service"))
    return _stand_in(ctx, svc, service, banner, f"has no directord check: ldirectord {what}")


def _stand_in(ctx: Context, svc: Stmt | None, service: str, banner: str | None, why: str) -> Probe:
    unused = _consume(ctx, ("request", "receive", "login", "passwd", "database", "secret"))
    lost = f"; {', '.join(unused)} not carried" if unused else ""
    if ctx.protocol == "udp":
        return _no_check(ctx, svc, f"service={service}", f"service {service} {why}{lost}")
    check: dict[str, Any] = {"type": "tcp"}
    if banner is not None:
        check |= {"expect": banner, "expect_regex": True}
    stand_in = "a tcp check that expects its greeting" if banner else "a tcp connect"
    ctx.notes.changed(
        ctx.where(svc),
        f"{ctx.label} > service={service}",
        f"service {service} {why}; {stand_in} stands in (a real server that accepts "
        f"connections but fails the rest is now up){lost}",
    )
    return Probe(_timed(ctx, check, ctx.timing.negotiatetimeout), "other", service)


def _consume(ctx: Context, keys: tuple[str, ...]) -> list[str]:
    """The keys the block sets, marked as dealt with (the caller's note names them)."""
    return [key for key in keys if ctx.block.all(key)]


def _request(ctx: Context) -> str:
    """ldirectord's request: "/" unless given, with a "/" put in front."""
    s = ctx.block.first("request")
    text = quoted(s) if s else "/"
    if s is not None and not text:
        raise error(s, 'a request, like "/index.html"')
    return text if text.startswith("/") else "/" + text


def _receive(ctx: Context) -> tuple[str, Stmt | None]:
    s = ctx.block.first("receive")
    if s is None:
        return "", None
    text = quoted(s)
    if not text:
        raise error(s, 'a regular expression to find, like "Test Page"')
    return text, s


def _http(ctx: Context, service: str, timeout: int) -> Probe:
    check: dict[str, Any] = {"type": service, "path": _request(ctx)}
    if s := ctx.block.first("httpmethod"):
        method = value(s).upper()
        if method not in ("GET", "HEAD"):
            raise error(s, "GET or HEAD")
        if method == "HEAD":
            check["method"] = "HEAD"
    if s := ctx.block.first("virtualhost"):
        host = quoted(s).strip('"')
        if host and host.isprintable():
            check["host"] = host
        elif host:
            ctx.notes.dropped(s.where, f"{ctx.label} > virtualhost", "not a printable host name")
    check["expect_status"] = ["200-399"]
    if service == "https":
        check["verify"] = False
    receive, rs = _receive(ctx)
    if receive and check.get("method") == "HEAD":
        ctx.notes.dropped(
            rs.where if rs else ctx.block.where,
            f"{ctx.label} > receive",
            "a HEAD answer has no body to search (ldirectord searched an empty one)",
        )
    elif receive:
        check |= body(ctx, rs, receive)
    ctx.once(
        "redirects",
        ctx.block.first("service") or ctx.block,
        "http checks",
        "ldirectord (LWP) followed redirects and wanted a 2xx at the end; directord does not "
        'follow them and counts any 2xx or 3xx as up (expect_status = ["200-399"]), on every '
        "http/https check of this file",
    )
    return Probe(_timed(ctx, check, timeout), "http", service)


def body(ctx: Context, s: Stmt | None, receive: str) -> dict[str, Any]:
    """``receive`` (a Perl regex searched in the body) as body_contains or body_regex."""
    if not REGEX_CHARS & set(receive):
        return {"body_contains": receive}
    why = regex_problem(receive)
    if why is None:
        return {"body_regex": receive}
    ctx.notes.dropped(
        ctx.where(s),
        f"{ctx.label} > receive={receive}",
        f"{why}: no body check is carried (any answer with a good status is up); rewrite it "
        "for RE2",
    )
    return {}


def _simpletcp(ctx: Context, timeout: int) -> Probe:
    # ldirectord sends the request without its first character (the "/" it put in front),
    # with \n made a newline, and searches the reply line by line for the receive regex.
    check: dict[str, Any] = {"type": "tcp"}
    send = _request(ctx)[1:].replace("\\n", "\n")
    if send:
        check["send"] = send
    receive, rs = _receive(ctx)
    check |= expect(ctx, rs, receive)
    return Probe(_timed(ctx, check, timeout), "simpletcp", "simpletcp")


def expect(ctx: Context, s: Stmt | None, receive: str) -> dict[str, Any]:
    if not receive:
        return {"expect": ""}
    if not REGEX_CHARS & set(receive):
        return {"expect": receive}
    pattern = f"(?m){receive}" if re.search(r"[\^$]", receive) else receive
    why = regex_problem(pattern, raw=True)
    if why is None:
        return {"expect": pattern, "expect_regex": True}
    ctx.notes.dropped(
        ctx.where(s),
        f"{ctx.label} > receive={receive}",
        f"{why}: any reply is taken as up; rewrite it for RE2",
    )
    return {"expect": ""}


def _unused_settings(ctx: Context, setting: str, service: str) -> None:
    """login, passwd, database, secret where the check does not read them (one note)."""
    if service and (service in STAND_INS or service not in SERVICES):
        return  # the stand-in's note names them
    keys = [k for k, services in USED_BY.items() if service not in services]
    unused = [s for k in keys for s in ctx.block.all(k)]
    if unused:
        ctx.notes.dropped(
            unused[0].where,
            f"{ctx.label} > {', '.join(dict.fromkeys(s.keyword for s in unused))}",
            f"not used with {setting} (ldirectord did not use them either)",
        )
