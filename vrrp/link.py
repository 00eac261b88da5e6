"""Whether an interface is up and running, read once and then followed on rtnetlink link events.

A VRRP instance whose own interface loses its link can neither hear nor be heard: like
keepalived (which tracks its instance's interface unless told not to), it goes to fault, leaving
master with its addresses, and comes back as backup (or owner) when the link returns, so a
master that comes back announces itself again instead of keeping a stale ARP entry elsewhere.
``parse`` is pure; ``LinkWatch`` is the thin socket side. Both run in the interface's namespace.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
from collections.abc import Callable

import structlog

from vrrp.reader import close_reader
from vrrp.rtnl import messages

log = structlog.get_logger("vrrp")

NETLINK_ROUTE = 0
RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK = 16, 17
IFF_UP, IFF_RUNNING = 0x1, 0x40
SIOCGIFFLAGS = 0x8913
_IFINFOMSG = struct.Struct("=BxHiII")


def running(flags: int) -> bool:
    return bool(flags & IFF_UP and flags & IFF_RUNNING)


def parse(data: bytes) -> list[tuple[int, bool]]:
    """(interface index, up and running) for each link message in one netlink read."""
    found: list[tuple[int, bool]] = []
    for kind, _seq, payload in messages(data):
        if kind in (RTM_NEWLINK, RTM_DELLINK) and len(payload) >= _IFINFOMSG.size:
            _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
            found.append((index, kind == RTM_NEWLINK and running(flags)))
    return found


def is_running(interface: str) -> bool:
    """The interface's current state (SIOCGIFFLAGS); OSError if there is no such interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", interface.encode(), 0)
        answer = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
    (flags,) = struct.unpack_from("H", answer, 16)
    return running(flags)


class LinkWatch:
    """Calls ``on_change(running)`` when ``interface`` goes down or comes back (edges only)."""

    def __init__(self, interface: str, on_change: Callable[[bool], None]) -> None:
        self.interface = interface
        self.running = True
        self._on_change = on_change
        self._index = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start following; returns whether the interface is running now."""
        self._index = socket.if_nametoindex(self.interface)
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        self.running = is_running(self.interface)
        return self.running

    def close(self) -> None:
        close_reader(self._sock, self._loop)
        self._sock = None

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ENOBUFS: events lost; read the state afresh
                log.warning("vrrp_link_events_lost", interface=self.interface, error=str(exc))
                try:
                    self._update(is_running(self.interface))
                except OSError:
                    self._update(False)
                continue
            for index, up in parse(data):
                if index == self._index:
                    self._update(up)

    def _update(self, up: bool) -> None:
        if up == self.running:
            return
        self.running = up
        log.info("vrrp_link", interface=self.interface, running=up)
        try:
            self._on_change(up)
        except Exception:
            log.exception("vrrp_link_handler_failed", interface=self.interface)
