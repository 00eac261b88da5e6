"""ldirectord.cf as statements, and its values: addresses, ports, real server lines.

The file is read as ldirectord's ``read_config`` (resource-agents, ``ldirectord/ldirectord.in``)
reads it: a line at the start is a global ``keyword = value``; ``virtual=`` (``virtual6=`` for
IPv6) opens a block of the lines under it that are indented by at least 4 spaces (a tab counts
as 4); a blank line, or a line at the start, ends the block. A line whose first non-blank
character is ``#`` is a comment, and ``#`` ends a line (ldirectord strips it from block lines,
even inside quotes). Where ldirectord itself refuses a line (``config_error``), the importer
raises :class:`ImportParseError` as ``FILE:LINE: keyword: expected ..., found ...``.

Host names are not resolved (the importer makes no DNS query): a :class:`Host` keeps the name
and the caller notes that it is not carried. Port names are looked up in a table of the usual
``/etc/services`` names, then with ``getservbyname`` as ldirectord does.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass

from director.importers.keepalived import Stmt, read_config_text
from director.importers.notes import ImportParseError

VIRTUALS = ("virtual", "virtual6")
MAX_RANGE = 4096
MAX_SECONDS = 10**9
FORWARDS = {"gate": "dr", "masq": "nat", "ipip": "tun"}
# /etc/services names (Debian's netbase) that ldirectord configs use, so an import does not
# depend on the machine it runs on; others are asked of getservbyname as ldirectord does.
SERVICE_PORTS = {
    "ftp": 21,
    "ssh": 22,
    "telnet": 23,
    "smtp": 25,
    "domain": 53,
    "http": 80,
    "www": 80,
    "kerberos": 88,
    "pop3": 110,
    "nntp": 119,
    "ntp": 123,
    "imap": 143,
    "imap2": 143,
    "snmp": 161,
    "ldap": 389,
    "https": 443,
    "submissions": 465,
    "syslog": 514,
    "rtsp": 554,
    "submission": 587,
    "ldaps": 636,
    "imaps": 993,
    "pop3s": 995,
    "ms-sql-s": 1433,
    "radius": 1812,
    "radius-acct": 1813,
    "mysql": 3306,
    "ms-wbt-server": 3389,
    "sip": 5060,
    "sip-tls": 5061,
    "postgresql": 5432,
    "http-alt": 8080,
    "webcache": 8080,
}
_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*)")
_PORT = r"[0-9A-Za-z_-]+"
_V4 = r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"
_HOST = r"[A-Za-z0-9._+-]+"
_V6 = r"\[[0-9A-Fa-f:.]+\]"
_VIRTUAL = re.compile(rf"(?P<host>{_V4}|{_V6}|{_HOST}):(?P<port>{_PORT})")
_ONE = rf"{_V4}|{_V6}|[A-Za-z0-9.-]+"
_REAL = re.compile(
    rf"(?P<first>{_ONE})(?:->(?P<last>{_ONE}))?(?::(?P<port>{_PORT}))?\s+(?P<flags>.*)"
)
_CHECK = re.compile(r"\s+\"(.*)\"[, ]\s*\"(.*)\"(.*)")


def error(s: Stmt, expected: str, found: str | None = None) -> ImportParseError:
    """``FILE:LINE: keyword: expected EXPECTED, found FOUND`` (the value as written)."""
    shown = found if found is not None else repr(s.args[0] if s.args else "")
    return ImportParseError(s.file, s.line, f"{s.keyword}: expected {expected}, found {shown}")


def parse(path: str | os.PathLike[str]) -> Stmt:
    """The file as a root statement: globals, and ``virtual``/``virtual6`` blocks."""
    file, text = read_config_text(path)
    root = Stmt("", [], file, 0, children=[])
    assert root.children is not None
    block: Stmt | None = None
    for lineno, line_text in enumerate(text.split("\n"), 1):  # as Perl reads lines
        raw = line_text.removesuffix("\r")
        if not raw.strip():
            block = None  # ldirectord: a blank line ends the block
            continue
        if raw.lstrip().startswith("#"):
            continue
        spaced = raw.replace("\t", "    ")
        indent = len(spaced) - len(spaced.lstrip(" "))
        line = spaced.partition("#")[0].strip()
        if not line:
            continue
        if indent == 0:
            stmt = _statement(line, file, lineno, "at the start of a line")
            root.children.append(stmt)
            block = stmt if stmt.keyword in VIRTUALS else None
            if block is not None:
                block.children = []
        elif block is None:
            raise ImportParseError(
                file,
                lineno,
                "expected a global directive at the start of the line (an indented line "
                "belongs to the virtual= block above it, and a blank line ends that block), "
                f"found {line!r}",
            )
        elif indent < 4:
            raise ImportParseError(
                file,
                lineno,
                f"expected a line indented by 4 spaces or a tab under {block.keyword}= (line "
                f"{block.line}), found {indent} space{'' if indent == 1 else 's'}: {line!r}",
            )
        else:
            stmt = _statement(line, file, lineno, f"under {block.keyword}= (line {block.line})")
            if stmt.keyword in VIRTUALS:
                raise error(stmt, "it at the start of a line (it opens a block)", "it indented")
            assert block.children is not None
            block.children.append(stmt)
    return root


def _statement(line: str, file: str, lineno: int, where: str) -> Stmt:
    m = _KEY.fullmatch(line)
    if m is None:
        if line == "supervised":  # ldirectord takes a bare "supervised" (with a warning)
            return Stmt("supervised", ["yes"], file, lineno, raw="")
        raise ImportParseError(file, lineno, f"expected 'keyword = value' {where}, found {line!r}")
    keyword, value = m.group(1), m.group(2).strip()
    return Stmt(keyword, [value], file, lineno, raw=value)


def peek(block: Stmt, keyword: str) -> Stmt | None:
    """The last child with this keyword, without marking it used (as Stmt.first does)."""
    found = [c for c in block.children or () if c.keyword == keyword]
    return found[-1] if found else None


def value(s: Stmt) -> str:
    return s.args[0] if s.args else ""


def quoted(s: Stmt, *, required: bool = False) -> str:
    """A value in double quotes (ldirectord takes what is between the first and last quote);
    unquoted text is taken as it is unless ``required``."""
    text = value(s)
    if text.startswith('"'):
        end = text.rfind('"')
        if end == 0:
            raise error(s, 'a closing "')
        return text[1:end]
    if required:
        raise error(s, 'a value in double quotes, like "/index.html"')
    return text


def number(text: str) -> int | None:
    """Decimal digits (ASCII) as an int; None for anything else, or more than 18 digits."""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else None


def whole(s: Stmt, lo: int = 1, hi: int = MAX_SECONDS, what: str = "a whole number") -> int:
    n = number(value(s))
    if n is None or not lo <= n <= hi:
        raise error(s, f"{what} from {lo} to {hi}")
    return n


def yes_no(s: Stmt) -> bool:
    text = value(s)
    if text not in ("yes", "no"):
        raise error(s, "yes or no")
    return text == "yes"


@dataclass(frozen=True)
class Host:
    """An address as written; ``address`` is None for a host name (not resolved)."""

    text: str
    address: str | None


def host(text: str, v6: bool) -> Host | None:
    """An IP address of the block's family, ``localhost``, or a host name; None when it is an
    address of the other family (ldirectord: "use virtual6/real6")."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if bare == "localhost":
        return Host(text, "::1" if v6 else "127.0.0.1")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if text.startswith("[") or re.fullmatch(r"[0-9.]+", bare):
            return Host(text, "")  # not an address at all: the caller refuses it
        return Host(text, None)
    if (address.version == 6) != v6:
        return None
    return Host(text, str(address))


def port(s: Stmt, text: str, protocol: str) -> int:
    """A port number or service name; ldirectord's getservbyname(NAME, PROTOCOL)."""
    if re.fullmatch(r"[0-9]+", text):
        n = number(text)
        if n is None or n > 65535:
            raise error(s, "a port from 0 to 65535", repr(text))
        return n
    if text in SERVICE_PORTS:
        return SERVICE_PORTS[text]
    try:
        return socket.getservbyname(text, protocol if protocol in ("tcp", "udp") else "tcp")
    except (OSError, UnicodeError):
        raise error(s, "a port number or a service name from /etc/services", repr(text)) from None


@dataclass(frozen=True)
class VirtualKey:
    """``virtual=HOST:PORT`` (port as written) or ``virtual=FWMARK``."""

    fwmark: int | None = None
    host: Host | None = None
    port_text: str = ""


def virtual_key(s: Stmt) -> VirtualKey:
    text = value(s)
    v6 = s.keyword == "virtual6"
    if re.fullmatch(r"[0-9]+", text):
        mark = number(text)
        if mark is None or not 1 <= mark <= 2**32 - 1:
            raise error(s, "a firewall mark from 1 to 4294967295")
        return VirtualKey(fwmark=mark)
    m = _VIRTUAL.fullmatch(text)
    found = host(m.group("host"), v6) if m else None
    if m is None or found is None or found.address == "":
        other = "virtual" if v6 else "virtual6"
        if m is not None and found is None:
            raise error(s, f"an IPv{6 if v6 else 4} address (use {other}= for this one)")
        example = "[2001:db8::10]:80" if v6 else "192.0.2.10:80"
        raise error(s, f"ADDRESS:PORT like {example}, or a firewall mark")
    return VirtualKey(host=found, port_text=m.group("port"))


@dataclass(frozen=True)
class RealLine:
    """One ``real=`` line: ``FIRST[->LAST][:PORT] gate|masq|ipip [WEIGHT] ["REQ", "RECV"]
    [l:N] [u:N]``."""

    hosts: tuple[Host, ...]
    port: int  # 0: not given
    forward: str  # gate, masq, ipip
    weight: int
    request: str | None
    receive: str | None
    lower: int | None
    upper: int | None


def real_line(s: Stmt, protocol: str) -> RealLine:
    v6 = s.keyword == "real6"
    m = _REAL.match(value(s))
    if m is None:
        raise error(s, "ADDRESS[:PORT] gate|masq|ipip [WEIGHT]")
    first = host(m.group("first"), v6)
    last = host(m.group("last"), v6) if m.group("last") else None
    if first is None or (m.group("last") and last is None):
        raise error(s, f"an IPv{6 if v6 else 4} address (use {'real' if v6 else 'real6'}= for it)")
    if first.address == "" or (last is not None and last.address == ""):
        raise error(s, "ADDRESS[:PORT] gate|masq|ipip [WEIGHT] with a valid address")
    hosts = _range(s, first, last)
    rport = port(s, m.group("port"), protocol) if m.group("port") else 0
    flags = m.group("flags")
    fm = re.match(r"(\w+)(.*)", flags)
    if fm is None or fm.group(1) not in FORWARDS:
        raise error(s, "the forwarding method gate, masq or ipip", repr(flags.split(" ")[0]))
    forward, rest = fm.group(1), fm.group(2)
    weight = 1
    if wm := re.match(r"\s+([0-9]+)(.*)", rest):
        n, rest = number(wm.group(1)), wm.group(2)
        if n is None or n > 65535:
            raise error(s, "a weight from 0 to 65535", repr(wm.group(1)))
        weight = n
    request = receive = None
    if cm := _CHECK.match(rest):
        request, receive, rest = cm.group(1), cm.group(2), cm.group(3)
    thresholds: dict[str, int] = {}
    for kind in ("l", "u"):
        if tm := re.match(rf"\s+{kind}:([0-9]+)(.*)", rest):
            n = number(tm.group(1))
            if n is None or n > 2**31 - 1:
                raise error(s, "a threshold from 0 to 2147483647", repr(tm.group(1)))
            thresholds[kind], rest = n, tm.group(2)
    if rest.strip():
        raise error(
            s,
            'nothing after the forwarding method but [WEIGHT] ["REQUEST", "RECEIVE"] [l:N] [u:N]',
            repr(rest.strip()),
        )
    return RealLine(
        hosts,
        rport,
        forward,
        weight,
        request,
        receive,
        thresholds.get("l"),
        thresholds.get("u"),
    )


def _range(s: Stmt, first: Host, last: Host | None) -> tuple[Host, ...]:
    if last is None:
        return (first,)
    if first.address is None or last.address is None:
        return (Host(f"{first.text}->{last.text}", None),)
    a, b = ipaddress.ip_address(first.address), ipaddress.ip_address(last.address)
    if a.version == 6:
        raise error(s, "a single IPv6 address (ldirectord has no IPv6 ranges)")
    if int(b) < int(a) or int(b) - int(a) >= MAX_RANGE:
        raise error(s, f"a range FIRST->LAST of 1 to {MAX_RANGE} addresses")
    return tuple(
        Host(str(ipaddress.ip_address(i)), str(ipaddress.ip_address(i)))
        for i in range(int(a), int(b) + 1)
    )


@dataclass(frozen=True)
class Fallback:
    """``fallback=HOST[:PORT] [gate|masq|ipip]``: the port as written (None: the service's)."""

    stmt: Stmt
    host: Host
    port_text: str | None
    forward: str


def fallback(s: Stmt) -> Fallback:
    v6 = s.keyword == "fallback6"
    words = value(s).split()
    if not 1 <= len(words) <= 2:
        raise error(s, "HOST[:PORT] [gate|masq|ipip]")
    forward = words[1] if len(words) == 2 else "gate"
    if forward not in FORWARDS:
        raise error(s, "the forwarding method gate, masq or ipip", repr(forward))
    m = re.fullmatch(rf"(?P<host>.+?)(?::(?P<port>{_PORT}))?", words[0])
    assert m is not None  # .+? matches any word
    found = host(m.group("host"), v6)
    if found is None:
        raise error(s, f"an IPv{6 if v6 else 4} address (use {'fallback' if v6 else 'fallback6'}=)")
    if found.address == "" or (found.address is None and not re.fullmatch(_HOST, found.text)):
        raise error(s, "HOST[:PORT] [gate|masq|ipip] with a valid address")
    return Fallback(s, found, m.group("port"), forward)
