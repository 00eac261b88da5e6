"""lvs.cf as statements, and its values.

lvs.cf is ``key = value`` lines with ``virtual NAME { ... }`` blocks holding ``server NAME { ... }``
blocks (and ``failover NAME { ... }``). ``#`` starts a comment; values may be quoted, with
``\\r``/``\\n`` escapes in ``send``/``expect``. A ``key = value`` line is a :class:`Stmt` with
keyword ``key`` and the value as its one argument; values are checked where they are read
(:mod:`director.importers.values`).
"""

from __future__ import annotations

import os
from typing import Any

from director.config.fields import netmask_prefix
from director.importers import values
from director.importers.keepalived import Stmt, read_config_text, split_lines
from director.importers.notes import ImportParseError, Notes


def _unquote(text: str, file: str, line: int) -> str:
    text = text.strip()
    if not text.startswith('"'):
        return text
    out: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out)
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"r": "\r", "n": "\n", "t": "\t"}.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    raise ImportParseError(file, line, "unterminated quoted value")


def parse(path: str | os.PathLike[str]) -> Stmt:
    """lvs.cf as statements: ``key = value`` has keyword ``key`` and one argument."""
    file, text = read_config_text(path)
    root = Stmt("", [], file, 0, children=[])
    stack = [root]
    for number, raw in enumerate(split_lines(text), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        parent = stack[-1]
        assert parent.children is not None
        if line == "}":
            if len(stack) == 1:
                raise ImportParseError(file, number, "'}' closes no block")
            stack.pop()
            continue
        if line.endswith("{"):
            words = line[:-1].split()
            if len(words) != 2 or words[0] not in ("virtual", "server", "failover"):
                raise ImportParseError(
                    file,
                    number,
                    f"expected 'virtual NAME {{', 'server NAME {{' or "
                    f"'failover NAME {{', found {line!r}",
                )
            block = Stmt(words[0], [words[1]], file, number, children=[])
            parent.children.append(block)
            stack.append(block)
            continue
        name, eq, value = line.partition("=")
        if not eq or not name.strip() or " " in name.strip():
            raise ImportParseError(file, number, f"expected 'key = value', found {line!r}")
        unquoted = _unquote(value, file, number)
        parent.children.append(Stmt(name.strip(), [unquoted], file, number, raw=value.strip()))
    if len(stack) > 1:
        block = stack[-1]
        raise ImportParseError(
            file, block.line, f"'{block.keyword} {block.args[0]}' is never closed (missing '}}')"
        )
    return root


def _strip_comment(line: str) -> str:
    quoted = False
    for i, c in enumerate(line):
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif c == "#" and not quoted:
            return line[:i]
    return line


def value(block: Stmt, key: str) -> str | None:
    s = block.first(key)
    return s.args[0] if s and s.args else None


def integer(
    block: Stmt, key: str, lo: int = 0, hi: int = 2**31 - 1, what: str = "an integer"
) -> int | None:
    """``key = N`` from ``lo`` to ``hi``; None when the key is not there."""
    s = block.first(key)
    if s is None:
        return None
    return values.integer(s, lo, hi, what, text=s.args[0].strip())


def address(block: Stmt, key: str) -> str | None:
    """``key = ADDRESS [...]``: the address; None when the key is not there."""
    s = block.first(key)
    if s is None:
        return None
    words = s.args[0].split()
    return values.address(s, text=words[0] if words else None)


def prefix(s: Stmt) -> int:
    """A netmask (``255.255.255.0``) or prefix length as a prefix length."""
    mask = values.netmask(s, text=s.args[0].strip())
    if isinstance(mask, int):
        if mask > 32:
            values.fail(s, "a netmask or a prefix length from 0 to 32", s.args[0])
        return mask
    return netmask_prefix(mask)


def zero_mask(s: Stmt) -> bool:
    """Piranha reads masks with inet_aton and tests ``s_addr`` for zero: ``0.0.0.0`` (or
    ``0``) is "none given" (lvsconfig.c, vip_nmask / pmask / nat_nmask)."""
    text = s.args[0].strip() if s.args else ""
    return text in ("0", "0.0.0.0", "0x0", "00")


def device(s: Stmt, text: str, vip: dict[str, Any]) -> None:
    """``DEVICE`` or ``DEVICE:N`` after an address: the device, and the label."""
    vip["device"] = values.interface(s, text=text.partition(":")[0])
    if ":" in text:
        vip["label"] = values.label(s, text=text)


# Well-known TCP service names (IANA / the usual /etc/services) that a virtual's ``port`` may
# name: Piranha's lvsconfig.c getPort() asks getservbyname(NAME, "tcp"). The importer uses this
# built-in table, not the importing machine's /etc/services, so an import gives the same file
# everywhere; a name not in it is refused (write the number).
SERVICES: dict[str, int] = {
    "ftp-data": 20,
    "ftp": 21,
    "ssh": 22,
    "telnet": 23,
    "smtp": 25,
    "time": 37,
    "domain": 53,
    "gopher": 70,
    "finger": 79,
    "http": 80,
    "www": 80,
    "www-http": 80,
    "kerberos": 88,
    "pop3": 110,
    "pop-3": 110,
    "sunrpc": 111,
    "auth": 113,
    "nntp": 119,
    "ntp": 123,
    "netbios-ssn": 139,
    "imap": 143,
    "imap2": 143,
    "snmp": 161,
    "bgp": 179,
    "ldap": 389,
    "https": 443,
    "microsoft-ds": 445,
    "submissions": 465,
    "smtps": 465,
    "printer": 515,
    "submission": 587,
    "ldaps": 636,
    "rsync": 873,
    "ftps": 990,
    "imaps": 993,
    "pop3s": 995,
    "socks": 1080,
    "openvpn": 1194,
    "ms-sql-s": 1433,
    "radius": 1812,
    "radius-acct": 1813,
    "nfs": 2049,
    "mysql": 3306,
    "ms-wbt-server": 3389,
    "sip": 5060,
    "sip-tls": 5061,
    "postgresql": 5432,
    "http-alt": 8080,
    "webcache": 8080,
}


def port(block: Stmt, key: str, notes: Notes) -> int | None:
    """``key = N`` or a well-known service name (Piranha's getservbyname, case-sensitive);
    None when absent."""
    s = block.first(key)
    if s is None:
        return None
    text = s.args[0].strip()
    if text in SERVICES:
        notes.carried(
            s.where,
            f"{key} = {text}",
            f"port {SERVICES[text]}: Piranha looks the name up with getservbyname; the "
            "importer uses its built-in table of well-known names, not this machine's "
            "/etc/services",
        )
        return SERVICES[text]
    if text and not text.isdigit() and not text.startswith(("-", "+")):
        values.fail(
            s,
            "a port number or a well-known service name (http, https, smtp, ...: the "
            "importer's built-in table, not this machine's /etc/services)",
            text,
        )
    return values.integer(s, 0, 65535, "a port", text=text)
