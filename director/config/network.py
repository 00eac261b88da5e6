"""Config models of the network rules the director owns: ``[[fwmark]]``, ``[[snat]]``,
``[[masquerade]]``, ``[[policy_route]]`` and the ``[network]`` table.

The rules themselves are built from these by :mod:`director.network.ruleset` (nftables) and
:mod:`director.network.routes` (policy routes). Per-rule checks are here (model validators);
:func:`director.config.cross.network_problems` holds the checks against the rest of the config
(an ``[[fwmark]]`` mark that no fwmark virtual service and no policy route uses marks packets
for nothing).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, PlainValidator, model_validator

from director.config.fields import (
    Address,
    Bool,
    Fwmark,
    fail,
    raise_findings,
    show,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The kernel's main, default and local tables, and 0 (unspecified), cannot be policy tables.
RESERVED_TABLES = {0: "unspecified", 253: "default", 254: "main", 255: "local"}
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


def _network(value: object) -> IPNetwork:
    """An address (a host network) or a CIDR without host bits set."""
    if isinstance(value, str) and "%" not in value:
        try:
            return ipaddress.ip_network(value)
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            fail(
                f"expected a network without host bits, like {show(str(loose))}, "
                f"found {show(value)}"
            )
    fail(
        f'expected an address or network like "198.18.0.10" or "198.18.1.0/24", found {show(value)}'
    )


def _interface(value: object) -> str:
    """An interface name the kernel would accept (dev_valid_name): 1 to 15 bytes, no / : space."""
    if not isinstance(value, str) or not value or value in (".", ".."):
        fail(f'expected an interface name like "eth0", found {show(value)}')
    if len(value.encode()) > 15:
        fail(f"expected an interface name of at most 15 bytes, found {show(value)}")
    if any(c in "/:\"'\\" or c.isspace() or not c.isprintable() for c in value):
        fail(f"expected an interface name without / : quotes or spaces, found {show(value)}")
    return value


def _ports(value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        fail(f"expected a non-empty array of ports like [80, 443], found {show(value)}")
    seen: list[int] = []
    for port in value:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            fail(f"expected ports from 1 to 65535, found {show(port)}")
        if port in seen:
            fail(f"expected each port once, found {port} twice")
        seen.append(port)
    return tuple(seen)


def _int_in(lo: int, hi: int, what: str) -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(f"expected {what} from {lo} to {hi}, found {show(value)}")
        return value

    return PlainValidator(check)


def _route_table(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**32 - 1:
        fail(f"expected a routing table number from 1 to 4294967295, found {show(value)}")
    if value in RESERVED_TABLES:
        fail(f"expected a table of your own, found {value} (the kernel's {RESERVED_TABLES[value]})")
    return value


def _table_name(value: object) -> str:
    if not isinstance(value, str) or not _TABLE_NAME.fullmatch(value):
        fail(
            "expected an nftables table name (a letter or _, then letters, digits, _ or -, "
            f"at most 32), found {show(value)}"
        )
    return value


Network = Annotated[IPNetwork, PlainValidator(_network)]
Interface = Annotated[str, PlainValidator(_interface)]
Ports = Annotated[tuple[int, ...], PlainValidator(_ports)]
RouteTable = Annotated[int, PlainValidator(_route_table)]
# ip rule preferences: 0 is the local-table rule, 32766/32767 are main and default.
RulePriority = Annotated[int, _int_in(1, 32765, "a rule priority")]
TableName = Annotated[str, PlainValidator(_table_name)]


class _Model(BaseModel):
    model_config = ConfigDict(
        defer_build=True, frozen=True, extra="forbid", validate_by_alias=True, validate_by_name=True
    )


class NetworkSettings(_Model):
    """``[network]``: where the rules live and what the policy routes may change."""

    table: TableName = "director"
    rp_filter: Literal["loose", "keep"] = "loose"


class FwmarkRule(_Model):
    """``[[fwmark]]``: packets to address[:ports] get ``mark``."""

    mark: Fwmark
    address: Network
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    ports: Ports | None = None
    master_only: Bool = True


class SnatRule(_Model):
    """``[[snat]]``: connections from ``source`` leave with ``to`` as their source address."""

    source: Network
    to: Address
    out_interface: Interface | None = None
    master_only: Bool = True

    @model_validator(mode="after")
    def _check_family(self) -> Self:
        if self.source.version != self.to.version:
            raise_findings(
                "SnatRule",
                [
                    (
                        ("to",),
                        f"expected an IPv{self.source.version} address like source "
                        f"{self.source}, found {self.to}",
                    )
                ],
            )
        return self


class MasqueradeRule(_Model):
    """``[[masquerade]]``: connections from ``source`` leave with the out interface's address."""

    source: Network
    out_interface: Interface | None = None
    master_only: Bool = True


class PolicyRoute(_Model):
    """``[[policy_route]]``: ``ip rule fwmark N table T`` + ``local default dev lo table T``."""

    fwmark: Fwmark
    table: RouteTable
    priority: RulePriority = 100
    family: Literal["ipv4", "ipv6", "both"] = "ipv4"

    def families(self) -> tuple[int, ...]:
        """4, 6 or both."""
        return {"ipv4": (4,), "ipv6": (6,), "both": (4, 6)}[self.family]
