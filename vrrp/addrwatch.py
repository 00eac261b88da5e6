"""Addresses deleted from their interface, followed on rtnetlink (RTM_DELADDR), for drift repair.

A master whose virtual address someone deleted (``ip addr del``) must put it back, as the
reconciler puts back an IPVS service removed by hand: ``Instance`` hands what this reports to
``Machine.address_lost``, which decides (a master restores, nobody else does). The socket
listens to the IPv4 and IPv6 address groups; our own adds and removals are seen too and are
harmless (the machine is not master when it removes, and re-adding a present address is not a
restore). Events lost to a full socket buffer (``ENOBUFS``) are reported as ``on_overflow``:
the caller then looks at the addresses afresh. Run in the interfaces' namespace.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

import structlog

from vrrp.packet import IPAddress
from vrrp.reader import close_reader
from vrrp.rtnl import (
    NETLINK_ROUTE,
    RTM_DELADDR,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    parse_addresses,
)

log = structlog.get_logger("vrrp")

OnDeleted = Callable[[list[tuple[int, IPAddress]]], None]  # (interface index, address)


class AddressWatch:
    """Calls ``on_deleted`` with the (interface index, address) pairs of each read that has
    deletions, and ``on_overflow`` when the kernel dropped events."""

    def __init__(self, on_deleted: OnDeleted, on_overflow: Callable[[], None]) -> None:
        self._on_deleted = on_deleted
        self._on_overflow = on_overflow
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop

    def close(self) -> None:
        close_reader(self._sock, self._loop)
        self._sock = None

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        deleted: list[tuple[int, IPAddress]] = []
        overflow = False
        while True:
            try:
                data = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    log.warning("vrrp_address_events_failed", error=str(exc))
                    break
                overflow = True
                continue
            deleted += [
                (m.index, m.address) for m in parse_addresses(data) if m.kind == RTM_DELADDR
            ]
        try:
            if deleted:
                self._on_deleted(deleted)
            if overflow:
                self._on_overflow()
        except Exception:
            log.exception("vrrp_address_event_handler_failed")
