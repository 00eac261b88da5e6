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
from director.importers import values
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
        """These settings with the block's own (keepalived's ranges: ``check_parser.c``)."""
        out = self
        if s := stmt.first("delay_loop"):
            out = replace(out, delay_loop=values.seconds(s))
        if s := stmt.first("connect_timeout"):
            out = replace(out, connect_timeout=values.seconds(s))
        if s := stmt.first("delay_before_retry"):
            out = replace(out, delay_before_retry=values.seconds(s, zero=True))
        if s := stmt.first("retry", "nb_get_retry"):
            out = replace(out, retry=values.integer(s, 0, 2**32 - 1))
        if s := stmt.first("alpha"):
            out = replace(out, alpha=values.boolean(s))
        if s := stmt.first("inhibit_on_failure"):
            out = replace(out, inhibit=values.boolean(s))
        if s := stmt.first("virtualhost"):
            out = replace(out, virtualhost=values.name(s))
        return out


def checker(
    rs: Stmt, notes: Notes, defaults: Defaults, real: dict[str, Any], port: int | None
) -> dict[str, Any] | None:
    """The check table for a real server's checkers (the first supported one keepalived keeps),
    or None; ``port`` is what a check without connect_port probes (None: not known here)."""
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
                "only the first is carried: fewer probes, and a failure only this checker "
                "would see leaves the server in",
            )
            continue
        chosen = _convert(c, notes, defaults.child(c, notes), real, port)
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
        notes.changed(
            stmt.where,
            f"{kind} retry",
            f"retry {retry}: at most 10 attempts a round, so a failed server is out after "
            f"10 failed attempts where keepalived waited for {retry + 1}",
        )
    if d.alpha:
        out["initial"] = "down"
    return out


def _clamp_timeout(check: dict[str, Any], stmt: Stmt, notes: Notes) -> None:
    if check["timeout"] > check["interval"]:
        notes.changed(
            stmt.where,
            f"{stmt.keyword} timeout",
            f"timeout {check['timeout']:g} s is longer than the interval "
            f"({check['interval']:g} s): the interval is used, so a slow reply counts as a "
            f"failure after {check['interval']:g} s",
        )
        check["timeout"] = check["interval"]


def _convert(
    c: Stmt, notes: Notes, d: Defaults, real: dict[str, Any], port: int | None
) -> dict[str, Any] | None:
    """The check for one checker, or None where keepalived drops the checker."""
    kind = c.keyword
    label = f"{kind} of real_server {real['address']}"
    base: dict[str, Any] = {"type": NATIVE[kind], **_timing(kind, d, c, notes)}
    if s := c.first("connect_port"):
        base["port"] = values.integer(s, 1, 65535, "a port")
    check: dict[str, Any] | None = base
    if kind in ("HTTP_GET", "SSL_GET"):
        check = _http(c, base, notes, d, label)
    elif kind == "SMTP_CHECK":
        _smtp(c, base, notes)
    elif kind == "MISC_CHECK":
        check = _misc(c, base, notes, real, label)
    if check is None:
        c.drop()  # listed as a whole
        return None
    _leftovers(c, notes, kind)
    _clamp_timeout(check, c, notes)
    if check["type"] in ("tcp", "http", "smtp") and "port" not in check and port == 0:
        values.fail(
            c,
            f"connect_port N in the block: real server {real['address']} has no port of its "
            "own to probe",
            None,
        )
    return check


def _smtp(c: Stmt, check: dict[str, Any], notes: Notes) -> None:
    if s := c.first("helo_name"):
        check["helo_name"] = values.name(s)
    hosts = c.all("host")
    if hosts:
        first = hosts[0]
        if p := first.first("connect_port"):
            check["port"] = values.integer(p, 1, 65535, "a port")
        _leftovers(first, notes, "SMTP_CHECK host")
        for extra in hosts[1:]:
            extra.drop()
            notes.dropped(extra.where, "SMTP_CHECK host", "one host per check is carried")


def _http(
    c: Stmt, check: dict[str, Any], notes: Notes, d: Defaults, label: str
) -> dict[str, Any] | None:
    """keepalived (``check_http.c``) ignores a url without a path, and drops an HTTP_GET or
    SSL_GET left without a url: the real server then has no check from it (always up)."""
    urls = []
    for url in c.all("url"):
        if url.first("path") is None:
            url.drop()
            notes.dropped(url.where, f"{c.keyword} url", "no path: keepalived ignores the url")
        else:
            urls.append(url)
    if not urls:
        notes.dropped(
            c.where, label, "no url with a path: keepalived drops the checker; no check carried"
        )
        return None
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
    url = urls[0]  # the first url that has a path
    if s := url.first("path"):
        check["path"] = values.word(s, "a path like /healthz")
    codes = url.first("status_code")
    check["expect_status"] = values.statuses(codes, codes.args) if codes else ["200-299"]
    if (s := url.first("regex")) and s.args:
        why = regex_problem(s.args[0])
        if why is None:
            check["body_regex"] = s.args[0]
        else:  # keepalived's PCRE takes it; RE2 (linear time, no stall) cannot
            notes.dropped(s.where, f"url regex {s.args[0]}", f"{why}; rewrite it for RE2")
    if s := url.first("virtualhost"):
        host = values.name(s)
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
            "one URL per check is carried (keepalived needed every URL to answer): "
            f"directord requests 1 URL a round where keepalived requested {len(urls)}, and a "
            "failure of the others leaves the server in",
        )
    if host:
        check["host"] = host
    if (s := c.first("enable_sni")) and values.boolean(s):
        if host and c.keyword == "SSL_GET":
            check["sni"] = host
        else:
            notes.dropped(s.where, "enable_sni", "no virtualhost to send as the SNI name")
    return check


def _misc(
    c: Stmt, check: dict[str, Any], notes: Notes, real: dict[str, Any], label: str
) -> dict[str, Any] | None:
    """keepalived 2.2 (``check_misc.c``, ``misc_end_handler``) drops a MISC_CHECK without a
    script ("No script path has been specified for MISC_CHECKER - skipping"): the real server
    then has no check from it, so the import carries none."""
    path = c.first("misc_path")
    argv: list[str] = []
    shell = False
    if path is not None and path.args:
        argv, shell = command_argv(path.args[0] if len(path.args) == 1 else path.raw)
    if path is None or not argv:
        notes.dropped(
            c.where, label, "no misc_path: keepalived drops the checker; no check carried"
        )
        return None
    argv = _placeholders(argv, real)
    check["timeout"] = check["interval"]
    if s := c.first("misc_timeout"):  # whole seconds; 0: the delay_loop, as keepalived
        check["timeout"] = float(values.integer(s, 0, 2**32 // 10**6, "a number of seconds"))
        check["timeout"] = check["timeout"] or check["interval"]
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
    check["command"] = values.program(path, argv)
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
