"""keepalived ``virtual_server_group``: its members, ranges and networks expanded."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from director.importers import values
from director.importers.keepalived import Stmt
from director.importers.notes import Notes

MAX_RANGE = 4096  # addresses a range or network may expand to (one service each)


@dataclass
class Group:
    """A ``virtual_server_group``: its members as (kind, value, port)."""

    name: str
    members: list[tuple[str, str, int | None]] = field(default_factory=list)


def read_group(stmt: Stmt, notes: Notes) -> Group:
    group = Group(stmt.args[0] if stmt.args else "")
    for item in stmt.children or ():
        item.used = True
        if item.keyword == "fwmark":
            mark = values.integer(item, 1, 2**32 - 1, "an fwmark")
            member = ("fwmark", str(mark), None)
            if len(item.args) > 1:
                family = item.args[1]
                if family not in ("inet", "inet6"):
                    values.fail(item, "inet or inet6 after the mark", family)
                notes.changed(item.where, "fwmark", f"family {family} taken from it")
                member = ("fwmark", f"{mark}/{family}", None)
            if member in group.members:
                notes.dropped(
                    item.where, " ".join([item.keyword, *item.args]), "in the group already"
                )
            else:
                group.members.append(member)
            continue
        line = values.item("virtual_server_group", item)
        port = values.integer(line, 0, 65535, "a port") if item.args else None
        try:
            addresses = _expand_range(item.keyword)
        except ValueError as exc:
            values.fail(
                line,
                f"an address, a range like 198.18.0.1-10 or a network like 198.18.0.8/29 ({exc})",
                item.keyword,
            )
        if len(addresses) > 1:
            notes.changed(
                item.where,
                item.keyword,
                f"range expanded to {len(addresses)} services ({addresses[0]} .. {addresses[-1]})",
            )
        for a in addresses:
            if ("address", a, port) in group.members:
                notes.dropped(item.where, f"{a} {port or 0}", "in the group already")
                continue
            group.members.append(("address", a, port))
    return group


def _expand_range(text: str) -> list[str]:
    """``198.18.0.1-10``, ``198.18.0.250-198.18.1.10``, ``198.18.0.8/29`` or one address."""
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        if net.num_addresses > MAX_RANGE:
            raise ValueError(f"{text} is longer than {MAX_RANGE} addresses")
        return [str(a) for a in net]
    if "-" not in text:
        return [str(ipaddress.ip_address(text))]
    first_text, last_text = text.split("-", 1)
    first = ipaddress.ip_address(first_text)
    if ("." in last_text and first.version == 4) or ":" in last_text:
        last = ipaddress.ip_address(last_text)
    elif first.version == 4:
        last = ipaddress.ip_address(first_text.rsplit(".", 1)[0] + "." + last_text)
    else:
        last = ipaddress.ip_address(first_text.rsplit(":", 1)[0] + ":" + last_text)
    if int(last) < int(first) or int(last) - int(first) >= MAX_RANGE:
        raise ValueError(f"{text} is empty or longer than {MAX_RANGE} addresses")
    return [str(ipaddress.ip_address(int(first) + i)) for i in range(int(last) - int(first) + 1)]
