"""Reading one value of a keepalived.conf or lvs.cf statement, checked where it is read.

A value the importer cannot read, a missing one, a number out of range, or an undefined
``$PARAM`` left in its place is an :class:`ImportParseError`:
``FILE:LINE: keyword: expected ..., found ...``. Numbers are read as keepalived reads them:
ASCII digits, with a decimal point for seconds (no sign, exponent, ``_``, ``inf`` or ``nan``).
Names, interfaces, labels and passwords are checked with the config's own rules
(:mod:`director.config`), so what the importer writes is what ``directord --check-config``
accepts, and the message is the one the config check would give.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import TypeAdapter, ValidationError

from director.config.fields import Name, netmask_prefix, show
from director.config.vrrp import Interface, Label, Password
from director.importers.keepalived import Stmt
from director.importers.notes import ImportParseError

MAX_SECONDS = 10**9  # about 31 years: more is a typo
UNDEFINED = "(an undefined parameter: define it with $NAME=VALUE before its use)"
_INTEGER = re.compile(r"[0-9]{1,30}")
_DECIMAL = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?")
_STATUS = re.compile(r"([0-9]{3})(?:-([0-9]{3}))?")
_NAME: TypeAdapter[str] = TypeAdapter(Name)
_INTERFACE: TypeAdapter[str] = TypeAdapter(Interface)
_LABEL: TypeAdapter[str] = TypeAdapter(Label)
_PASSWORD: TypeAdapter[str] = TypeAdapter(Password)


def found(text: str | None) -> str:
    """A value as written, for "found ...": quoted, ``nothing`` when missing, and said to be
    an undefined parameter when it still reads ``$NAME``."""
    if not text:
        return "nothing"
    if text.startswith("$"):
        return f"{show(text)} {UNDEFINED}"
    return show(text)


def fail(s: Stmt, expected: str, text: str | None, *, shown: str | None = None) -> NoReturn:
    """``FILE:LINE: keyword: expected EXPECTED, found TEXT`` (or what ``shown`` says)."""
    refuse(s, f"expected {expected}, found {shown or found(text)}")


def refuse(s: Stmt, message: str) -> NoReturn:
    """``FILE:LINE: keyword: MESSAGE`` (a message that says what was expected and found)."""
    raise ImportParseError(s.file, s.line, f"{s.keyword}: {message}")


def item(block: str, s: Stmt) -> Stmt:
    """A line of a list block (an address, an interface) named by its block in messages."""
    return dataclasses.replace(s, keyword=block)


def arg(s: Stmt, index: int = 0) -> str | None:
    return s.args[index] if index < len(s.args) else None


def word(s: Stmt, what: str, index: int = 0) -> str:
    """The argument at ``index``; missing or empty is an error naming ``what`` was expected."""
    text = arg(s, index)
    if not text:
        fail(s, what, text)
    return text


def integer(
    s: Stmt, lo: int, hi: int, what: str = "an integer", *, index: int = 0, text: str | None = None
) -> int:
    """A whole number from ``lo`` to ``hi`` (``text`` instead of the argument, for lvs.cf)."""
    text = arg(s, index) if text is None else text
    sign = -1 if lo < 0 and text is not None and text.startswith("-") else 1
    digits = text[1:] if sign < 0 and text is not None else text
    if digits is None or not _INTEGER.fullmatch(digits) or not lo <= sign * int(digits) <= hi:
        fail(s, f"{what} from {lo} to {hi}", text)
    return sign * int(digits)


def seconds(
    s: Stmt,
    *,
    zero: bool = False,
    hi: float = MAX_SECONDS,
    index: int = 0,
    text: str | None = None,
) -> float:
    """A number of seconds (decimals allowed), greater than 0 or, with ``zero``, 0 or more."""
    text = arg(s, index) if text is None else text
    most = str(int(hi)) if float(hi).is_integer() else f"{hi:g}"
    what = f"a number of seconds {'from 0' if zero else 'greater than 0, up'} to {most}"
    if text is None or not _DECIMAL.fullmatch(text):
        fail(s, what, text)
    value = float(text)
    if not (value >= 0 if zero else value > 0) or value > hi:
        fail(s, what, text)
    return value


def address(s: Stmt, *, index: int = 0, text: str | None = None) -> str:
    """An IPv4 or IPv6 address (no zone), as the config writes it."""
    text = arg(s, index) if text is None else text
    try:
        parsed = ipaddress.ip_address(text) if text and "%" not in text else None
    except ValueError:
        parsed = None
    if parsed is None:
        fail(s, 'an IPv4 or IPv6 address like "198.18.0.10"', text)
    return str(parsed)


def netmask(s: Stmt, *, index: int = 0, text: str | None = None) -> str | int:
    """A dotted IPv4 netmask (contiguous) or a prefix length from 0 to 128."""
    text = arg(s, index) if text is None else text
    if text is not None and _INTEGER.fullmatch(text) and int(text) <= 128:
        return int(text)
    try:
        valid = text is not None and netmask_prefix(text) >= 0
    except ValueError:
        valid = False
    if text is None or not valid:
        fail(s, 'a contiguous netmask like "255.255.255.0" or a prefix length', text)
    return text


def boolean(s: Stmt) -> bool:
    """A switch: no value, or keepalived's ``true``/``on``/``yes`` and ``false``/``off``/``no``
    (``parser.c``, ``check_true_false``)."""
    text = arg(s)
    if text is None or text in ("true", "on", "yes"):
        return True
    if text not in ("false", "off", "no"):
        fail(s, "nothing, or on or off (true/false, yes/no)", text)
    return False


def statuses(s: Stmt, words: Sequence[str]) -> list[int | str]:
    """HTTP status codes and ranges (``200``, ``200-299``) from 100 to 599."""
    out: list[int | str] = []
    for text in words:
        m = _STATUS.fullmatch(text)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
        if not 100 <= lo <= hi <= 599:
            fail(s, "status codes like 200 or ranges like 200-299 (100 to 599)", text)
        out.append(text if m and m.group(2) else lo)
    if not out:
        fail(s, "status codes like 200 or ranges like 200-299 (100 to 599)", None)
    return out


def _checked(s: Stmt, adapter: TypeAdapter[Any], text: str | None) -> Any:
    """``text`` checked by a config field's own validator, refused with its message."""
    try:
        return adapter.validate_python(text)
    except ValidationError as exc:
        message = str(exc.errors(include_url=False)[0]["msg"])
    if not text:
        message = re.sub(r"found .*$", "found nothing", message)
    elif text.startswith("$"):
        message += f" {UNDEFINED}"
    refuse(s, message)


def name(s: Stmt, *, index: int = 0, text: str | None = None) -> str:
    """A name the config takes (non-empty, printable, no surrounding spaces)."""
    return str(_checked(s, _NAME, arg(s, index) if text is None else text))


def interface(s: Stmt, *, index: int = 0, text: str | None = None) -> str:
    """A network interface name (1 to 15 characters, no spaces, '/' or ':')."""
    return str(_checked(s, _INTERFACE, arg(s, index) if text is None else text))


def label(s: Stmt, *, index: int = 0, text: str | None = None) -> str:
    """An address label (1 to 15 characters, like ``eth0:1``)."""
    return str(_checked(s, _LABEL, arg(s, index) if text is None else text))


def password(s: Stmt, text: str) -> str:
    """A VRRPv2 password (1 to 8 bytes)."""
    return str(_checked(s, _PASSWORD, text))


def program(s: Stmt, argv: Sequence[str]) -> list[str]:
    """A command (program and arguments) whose program is an absolute path: directord runs it
    without a shell or PATH."""
    if not argv or not argv[0].startswith("/"):
        fail(
            s,
            "a program as an absolute path (run without a shell or PATH)",
            argv[0] if argv else None,
        )
    return list(argv)
