"""keepalived checkers (HTTP_GET, SSL_GET, TCP_CHECK, SMTP_CHECK, MISC_CHECK) -> ``check`` tables.

Timing: keepalived probes every ``delay_loop`` seconds; a failed probe is retried ``retry`` times
``delay_before_retry`` apart and the server goes down when all fail; one success brings it up.
That is directord's ``attempts = retry + 1``, ``retry_delay = delay_before_retry``,
``rise = fall = 1``, ``interval = delay_loop``, ``timeout = connect_timeout``. keepalived's
defaults (man keepalived.conf, 2.2.7): delay_loop 60, connect_timeout 5, retry 1 (MISC_CHECK 0),
delay_before_retry 3 for HTTP_GET/SSL_GET and 1 otherwise, status codes 200-299, HTTP/1.0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from checks.regex import problem as regex_problem
from director.importers.keepalived import Stmt
from director.importers.notes import Notes
from director.importers.scripts import ADDRESS, PORT, command_argv, recognise

CHECKERS = frozenset(
    {
        "HTTP_GET",
        "SSL_GET",
        "TCP_CHECK",
        "SMTP_CHECK",
        "MISC_CHECK",
        "DNS_CHECK",
        "BFD_CHECK",
        "UDP_CHECK",
        "PING_CHECK",
        "FILE_CHECK",
    }
)
NATIVE = {"HTTP_GET": "http", "SSL_GET": "https", "TCP_CHECK": "tcp", "SMTP_CHECK": "smtp"}
NATIVE["MISC_CHECK"] = "script"
WHY_NOT = {
    "DNS_CHECK": "directord has no DNS check; use a script check (dig) instead",
    "BFD_CHECK": "directord has no BFD",
    "UDP_CHECK": "directord has no UDP check; use a script check instead",
    "PING_CHECK": "directord has no ICMP check; use a tcp check of the service instead",
    "FILE_CHECK": "directord has no file-driven weights; use directorctl drain/enable",
    "connect_ip": "the check always probes the real server's own address",
    "bindto": "the check's source address is the kernel's choice",
    "bind_if": "the check's source interface is the kernel's choice",
    "bind_port": "the check's source port is the kernel's choice",
    "fwmark": "check packets are not marked",
    "log_all_failures": "every failure is in the check's last_error and logs",
    "warmup": "directord spreads first probes by a random start offset of its own",
    "misc_dynamic": (
        "exit codes differ (keepalived: 0 up, 1 down, 2-255 weight+2; directord's "
        "weight_from_exit: the code is the weight, 255 down): adapt the script, then set "
        "weight_from_exit = true"
    ),
    "user": "not carried: set the check's user (or [daemon] script_user) in the imported file",
    "digest": "directord does not compare an MD5 digest of the page; use body_contains or "
    "body_regex",
    "regex_no_match": "a regex that must not match is not supported",
    "regex_options": "RE2 regular expressions are used; PCRE options are not carried",
    "fast_recovery": "directord's rise count governs recovery",
}


def _number(s: Stmt, notes: Notes) -> float | None:
    try:
        return float(s.args[0])
    except (IndexError, ValueError):
        notes.dropped(s.where, " ".join([s.keyword, *s.args]), "expected a number")
        return None


def _bool(s: Stmt) -> bool:
    return not s.args or s.args[0].lower() in ("on", "true", "yes", "1")


@dataclass(frozen=True)
class Defaults:
    """Settings that a virtual server passes to its real servers and they to their checkers."""

    delay_loop: float = 60.0
    connect_timeout: float = 5.0
    retry: int | None = None
    delay_before_retry: float | None = None
    alpha: bool = False
    inhibit: bool = False
    virtualhost: str | None = None

    def child(self, stmt: Stmt, notes: Notes) -> Defaults:
        out = self
        if (s := stmt.first("delay_loop")) and (value := _number(s, notes)) is not None:
            out = replace(out, delay_loop=value)
        if (s := stmt.first("connect_timeout")) and (value := _number(s, notes)) is not None:
            out = replace(out, connect_timeout=value)
        if (s := stmt.first("delay_before_retry")) and (value := _number(s, notes)) is not None:
            out = replace(out, delay_before_retry=value)
        if (s := stmt.first("retry", "nb_get_retry")) and (value := _number(s, notes)) is not None:
            out = replace(out, retry=int(value))
        if s := stmt.first("alpha"):
            out = replace(out, alpha=_bool(s))
        if s := stmt.first("inhibit_on_failure"):
            out = replace(out, inhibit=_bool(s))
        if (s := stmt.first("virtualhost")) and s.args:
            out = replace(out, virtualhost=s.args[0])
        return out


def checker(
    rs: Stmt, notes: Notes, defaults: Defaults, real: dict[str, Any]
) -> dict[str, Any] | None:
    """The check table for a real server's checkers (the first supported one), or None."""
    found = [c for c in rs.children or () if c.keyword in CHECKERS]
    chosen: dict[str, Any] | None = None
    for c in found:
        c.used = True
        if c.keyword not in NATIVE:
            c.drop()
        label = f"{c.keyword} of real_server {' '.join(rs.args)}"
        if c.keyword not in NATIVE:
            notes.dropped(c.where, label, WHY_NOT[c.keyword])
            continue
        if chosen is not None:
            c.drop()
            notes.dropped(
                c.where,
                label,
                "directord runs one check per real server (keepalived needed all to pass); "
                "only the first is carried",
            )
            continue
        chosen = _convert(c, notes, defaults.child(c, notes), real)
    return chosen


def _timing(kind: str, d: Defaults, stmt: Stmt, notes: Notes) -> dict[str, Any]:
    interval = d.delay_loop
    retry = d.retry if d.retry is not None else (0 if kind == "MISC_CHECK" else 1)
    delay = d.delay_before_retry
    if delay is None:
        delay = 3.0 if kind in ("HTTP_GET", "SSL_GET") else 1.0
    out: dict[str, Any] = {
        "interval": interval,
        "timeout": d.connect_timeout,
        "rise": 1,
        "fall": 1,
        "attempts": max(1, min(10, retry + 1)),
        "retry_delay": delay,
    }
    if retry + 1 > 10:
        notes.changed(stmt.where, f"{kind} retry", f"retry {retry}: at most 10 attempts a round")
    if d.alpha:
        out["initial"] = "down"
    return out


def _clamp_timeout(check: dict[str, Any], stmt: Stmt, notes: Notes) -> None:
    if check["timeout"] > check["interval"]:
        notes.changed(
            stmt.where,
            f"{stmt.keyword} timeout",
            f"timeout {check['timeout']:g} s is longer than the interval "
            f"({check['interval']:g} s): the interval is used",
        )
        check["timeout"] = check["interval"]


def _convert(c: Stmt, notes: Notes, d: Defaults, real: dict[str, Any]) -> dict[str, Any]:
    kind = c.keyword
    check: dict[str, Any] = {"type": NATIVE[kind]}
    check.update(_timing(kind, d, c, notes))
    if (s := c.first("connect_port")) and s.args and s.args[0].isdigit():
        check["port"] = int(s.args[0])
    if kind in ("HTTP_GET", "SSL_GET"):
        _http(c, check, notes, d)
    elif kind == "SMTP_CHECK":
        if (s := c.first("helo_name")) and s.args:
            check["helo_name"] = s.args[0]
        hosts = c.all("host")
        if hosts:
            first = hosts[0]
            if (p := first.first("connect_port")) and p.args and p.args[0].isdigit():
                check["port"] = int(p.args[0])
            _leftovers(first, notes, "SMTP_CHECK host")
            for extra in hosts[1:]:
                extra.drop()
                notes.dropped(extra.where, "SMTP_CHECK host", "one host per check is carried")
    elif kind == "MISC_CHECK":
        check = _misc(c, check, notes, real)
    _clamp_timeout(check, c, notes)
    _leftovers(c, notes, kind)
    return check


def _http(c: Stmt, check: dict[str, Any], notes: Notes, d: Defaults) -> None:
    urls = c.all("url")
    check["http_version"] = "1.0"
    if s := c.first("http_protocol"):
        version = s.args[0] if s.args else ""
        if version in ("1.0", "1.0C", "1.1"):
            check["http_version"] = version[:3]
        else:
            notes.dropped(s.where, f"http_protocol {version}", "expected 1.0, 1.0C or 1.1")
    host = d.virtualhost
    if c.keyword == "SSL_GET":
        check["verify"] = False
        notes.changed(
            c.where,
            "SSL_GET",
            "keepalived does not verify the server's certificate: verify = false "
            "(set verify = true and ca_file to check it)",
        )
    if urls:
        url = urls[0]
        if (s := url.first("path")) and s.args:
            check["path"] = s.args[0]
        codes = url.first("status_code")
        check["expect_status"] = _statuses(codes.args if codes else ["200-299"])
        if (s := url.first("regex")) and s.args:
            why = regex_problem(s.args[0])
            if why is None:
                check["body_regex"] = s.args[0]
            else:  # keepalived's PCRE takes it; RE2 (linear time, no stall) cannot
                notes.dropped(s.where, f"url regex {s.args[0]}", f"{why}; rewrite it for RE2")
        if (s := url.first("virtualhost")) and s.args:
            host = s.args[0]
        for key in ("digest", "regex_no_match", "regex_options"):
            if s := url.first(key):
                notes.dropped(s.where, f"url {key}", WHY_NOT[key])
        _leftovers(url, notes, f"{c.keyword} url")
        for extra in urls[1:]:
            extra.drop()
            path = extra.first("path")
            notes.dropped(
                extra.where,
                f"{c.keyword} url {path.args[0] if path and path.args else ''}".strip(),
                "one URL per check is carried (keepalived needed every URL to answer)",
            )
    else:
        check["expect_status"] = ["200-299"]
    if host:
        check["host"] = host
    if s := c.first("enable_sni"):
        if host and c.keyword == "SSL_GET":
            check["sni"] = host
        else:
            notes.dropped(s.where, "enable_sni", "no virtualhost to send as the SNI name")


def _statuses(words: list[str]) -> list[int | str]:
    out: list[int | str] = []
    for word in words:
        out.append(int(word) if word.isdigit() else word)
    return out


def _misc(c: Stmt, check: dict[str, Any], notes: Notes, real: dict[str, Any]) -> dict[str, Any]:
    path = c.first("misc_path")
    if path is None or not path.args:
        notes.dropped(c.where, "MISC_CHECK", "no misc_path: nothing to run; no check carried")
        return {"type": "none"}
    argv, shell = command_argv(path.args[0] if len(path.args) == 1 else path.raw)
    argv = _placeholders(argv, real)
    if s := c.first("misc_timeout"):
        value = _number(s, notes)
        if value is not None:
            check["timeout"] = value
    else:
        check["timeout"] = check["interval"]
    found = recognise(argv)
    if found is not None:
        native = {k: v for k, v in check.items() if k != "type"} | found.check
        notes.carried(
            path.where,
            f"misc_path {path.raw}",
            f"recognised {found.what}: a native {found.check['type']} check"
            + "".join(f"; {c}" for c in found.caveats),
        )
        return native
    check["command"] = argv
    if shell:
        notes.changed(
            path.where,
            f"misc_path {path.raw}",
            "uses shell syntax: run as /bin/sh -c; better a program with arguments",
        )
    return check


def _placeholders(argv: list[str], real: dict[str, Any]) -> list[str]:
    """The real server's address (and its port right after it) as {address} / {port}."""
    address = re.escape(str(real["address"]))
    port = str(real.get("port", ""))
    out: list[str] = [argv[0]] if argv else []
    for arg in argv[1:]:
        new = re.sub(rf"(?<![\w.:]){address}(?![\w.])", ADDRESS, arg)
        if port:
            new = new.replace(f"{ADDRESS}:{port}", f"{ADDRESS}:{PORT}")
            if arg == port and out and out[-1] == ADDRESS:
                new = PORT
        out.append(new)
    return out


def _leftovers(stmt: Stmt, notes: Notes, label: str) -> None:
    for s in stmt.leftovers():
        s.drop()
        why = WHY_NOT.get(s.keyword, "not known to the importer")
        notes.dropped(s.where, f"{label} {' '.join([s.keyword, *s.args])}", why)
