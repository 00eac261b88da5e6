"""Scalar field types of the config models, each failing with a plain-words message.

Pydantic's own messages ("Input should be a valid integer") and its lax coercions (``"443"`` or
``true`` accepted as an integer) do not suit a hand-written file, so every scalar here is checked
by a small function that says what it expected and what it found, TOML-style. Errors are raised
as :class:`~pydantic_core.PydanticCustomError` of type :data:`ERROR_TYPE`; the loader turns them
into :class:`director.config.errors.Problem` entries without rewording.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, NoReturn

from pydantic import PlainValidator, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Loc = tuple[str | int, ...]
# A problem found by a cross-field rule: its location (relative to the model that checks it, or
# absolute for whole-config rules) and its message.
Finding = tuple[Loc, str]

ERROR_TYPE = "director"


def show(value: object) -> str:
    """``value`` as it would be written in TOML, for the "found ..." part of a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, dict) for v in value):
            return "an array of tables"
        inner = ", ".join(show(v) for v in value[:4])
        return f"[{inner}{', ...' if len(value) > 4 else ''}]"
    if isinstance(value, datetime.date | datetime.time):
        return f"the date/time {value.isoformat()}"
    return str(value)


def fail(message: str) -> NoReturn:
    raise PydanticCustomError(ERROR_TYPE, "{message}", {"message": message})


def raise_findings(title: str, findings: Iterable[Finding], value: object = None) -> NoReturn:
    """Raise every finding at once, each at its own location (relative to the current model)."""
    raise ValidationError.from_exception_data(
        title, [detail(loc, msg, value) for loc, msg in findings]
    )


def detail(loc: Loc, message: str, value: object = None) -> InitErrorDetails:
    return {
        "type": PydanticCustomError(ERROR_TYPE, "{message}", {"message": message}),
        "loc": loc,
        "input": value,
    }


def error_details(exc: ValidationError) -> list[InitErrorDetails]:
    """The errors of ``exc`` in the form :meth:`ValidationError.from_exception_data` takes."""
    out: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx")
        if error["type"] == ERROR_TYPE and ctx is not None:
            out.append(detail(error["loc"], str(ctx["message"]), error["input"]))
            continue
        item: InitErrorDetails = {
            "type": error["type"],
            "loc": error["loc"],
            "input": error["input"],
        }
        if ctx is not None:
            item["ctx"] = ctx
        out.append(item)
    return out


def words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _int_in(lo: int, hi: int, what: str = "an integer") -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(f"expected {what} from {lo} to {hi}, found {show(value)}")
        return value

    return PlainValidator(check)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        fail(f"expected true or false, found {show(value)}")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(f"expected a number of seconds greater than 0, found {show(value)}")
    if not (math.isfinite(value) and value > 0):
        fail(f"expected a number of seconds greater than 0, found {show(value)}")
    return float(value)


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        fail(f"expected a non-empty name without surrounding spaces, found {show(value)}")
    if not value.isprintable():
        fail(f"expected a name of printable characters, found {show(value)}")
    return value


def _path(max_bytes: int) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or not value.startswith("/"):
            fail(f"expected an absolute path (starting with /), found {show(value)}")
        if len(value.encode()) > max_bytes:
            fail(f"expected a path of at most {max_bytes} bytes, found {len(value.encode())}")
        return value

    return check


def _address(value: object) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if isinstance(value, str) and "%" not in value:
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            pass
    fail(f'expected an IPv4 or IPv6 address like "198.18.0.10", found {show(value)}')


def netmask_prefix(mask: str) -> int:
    """The prefix length of a dotted IPv4 netmask; ValueError if it is not a contiguous mask."""
    bits = int(ipaddress.IPv4Address(mask))
    prefix = bin(bits).count("1")
    if bits != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise ValueError(mask)
    return prefix


def _netmask(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 128:
        return value
    if isinstance(value, str):
        try:
            netmask_prefix(value)
        except ValueError:
            fail(f'expected a contiguous dotted netmask like "255.255.255.0", found {show(value)}')
        return value
    fail(
        "expected a prefix length (0 to 128) or a dotted netmask like "
        f'"255.255.255.0", found {show(value)}'
    )


def sysctl_value(value: object) -> int | str:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and not value.replace("\t", " ").isprintable():
        fail(f"expected a one-line value without control characters, found {show(value)}")
    if isinstance(value, int | str):
        return value
    fail(f"expected an integer, true/false or a string, found {show(value)}")


Port = Annotated[int, _int_in(0, 65535, "a port")]
TunnelPort = Annotated[int, _int_in(1, 65535, "a UDP port")]
Weight = Annotated[int, _int_in(0, 65535)]
SorryWeight = Annotated[int, _int_in(1, 65535)]
Fwmark = Annotated[int, _int_in(1, 2**32 - 1, "an fwmark")]
PersistenceTimeout = Annotated[int, _int_in(0, 2**31 - 1, "a number of seconds")]
Threshold = Annotated[int, _int_in(0, 2**31 - 1)]
# The kernel refuses IPVS timeouts above INT_MAX / HZ; HZ is at most 1000.
IPVSTimeout = Annotated[int, _int_in(1, 2**31 // 1000, "a number of seconds")]
Bool = Annotated[bool, PlainValidator(_flag)]
Seconds = Annotated[float, PlainValidator(_seconds)]
Name = Annotated[str, PlainValidator(_name)]
DirPath = Annotated[str, PlainValidator(_path(4095))]
# sun_path holds 108 bytes including the terminating NUL.
SocketPath = Annotated[str, PlainValidator(_path(107))]
Address = Annotated[IPAddress, PlainValidator(_address)]
Netmask = Annotated[str | int, PlainValidator(_netmask)]
