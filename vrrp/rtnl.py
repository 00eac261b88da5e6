"""Adding and removing one interface address with a single rtnetlink request (RTM_NEWADDR /
RTM_DELADDR, acknowledged). The becoming-master path: the address must be up before the first
gratuitous ARP, and a kernel round trip on a plain socket takes tens of microseconds where a
general netlink library on the event loop takes milliseconds. ``request`` is pure (bytes out);
``AddressSocket`` sends it and reads the acknowledgement, and dumps every address in one
request (the start-up cleanup). ``parse_addresses`` (pure) reads address messages, from a dump
or from the multicast groups a watch listens to. Run in the interface's namespace.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from vrrp.packet import IPAddress

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_DUMP = 0x300
RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x10, 0x100
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 3, 4, 8
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def _attribute(kind: int, data: bytes) -> bytes:
    length = _RTATTR.size + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def request(
    command: str,
    index: int,
    address: IPAddress,
    prefixlen: int,
    *,
    label: str | None = None,
    flags: int = 0,
    seq: int = 1,
) -> bytes:
    """The netlink message that adds (``command`` "add") or deletes ("del") ``address``."""
    kind, extra, body = _request_body(command, index, address, prefixlen, label, flags)
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | extra, seq, 0
    )
    return header + body


@functools.lru_cache(maxsize=256)
def _request_body(
    command: str, index: int, address: IPAddress, prefixlen: int, label: str | None, flags: int
) -> tuple[int, int, bytes]:
    """(message type, extra header flags, body): built once per address and placement, so a
    takeover's address change is a header pack and a send."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    body = _IFADDRMSG.pack(family, prefixlen, flags & 0xFF, 0, index)
    body += _attribute(IFA_LOCAL, address.packed) + _attribute(IFA_ADDRESS, address.packed)
    if command == "add":
        kind, extra = RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL
        if isinstance(address, IPv4Address) and prefixlen < 31:
            broadcast = IPv4Network(f"{address}/{prefixlen}", strict=False).broadcast_address
            body += _attribute(IFA_BROADCAST, broadcast.packed)
        if label is not None:
            body += _attribute(IFA_LABEL, label.encode() + b"\0")
        if flags:
            body += _attribute(IFA_FLAGS, struct.pack("=I", flags))
    elif command == "del":
        kind, extra = RTM_DELADDR, 0
    else:
        raise ValueError(f"command {command!r} is neither add nor del")
    return kind, extra, body


@dataclass(frozen=True, slots=True)
class AddressMessage:
    """One RTM_NEWADDR / RTM_DELADDR: an address on (or gone from) interface ``index``."""

    kind: int  # RTM_NEWADDR or RTM_DELADDR
    index: int
    address: IPAddress
    prefixlen: int
    seq: int = 0


def dump_request(seq: int) -> bytes:
    """RTM_GETADDR for every address of every family and interface."""
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETADDR, flags, seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, payload) of each whole netlink message in one read; a message
    that is cut short or claims a length it cannot have ends the walk. Never raises."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return
        yield kind, seq, data[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def parse_addresses(data: bytes) -> list[AddressMessage]:
    """The address messages in one netlink read (anything else is skipped). Never raises."""
    found: list[AddressMessage] = []
    for kind, seq, payload in messages(data):
        if kind in (RTM_NEWADDR, RTM_DELADDR) and len(payload) >= _IFADDRMSG.size:
            family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
            attrs = attributes(payload[_IFADDRMSG.size :])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            address: IPAddress | None = None
            if family == socket.AF_INET and raw is not None and len(raw) == 4:
                address = IPv4Address(raw)
            elif family == socket.AF_INET6 and raw is not None and len(raw) == 16:
                address = IPv6Address(raw)
            if address is not None:
                found.append(AddressMessage(kind, index, address, prefixlen, seq))
    return found


def attributes(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            break
        found.setdefault(kind, data[offset + _RTATTR.size : offset + length])
        offset += (length + 3) & ~3
    return found


def done(data: bytes, seq: int) -> bool:
    """Whether ``data`` holds the NLMSG_DONE (or an error) that ends dump ``seq``."""
    return any(got == seq and kind in (NLMSG_DONE, NLMSG_ERROR) for kind, got, _ in messages(data))


def acknowledgement(data: bytes, seq: int) -> int | None:
    """The errno (0: done) in the NLMSG_ERROR answering ``seq``, or None if ``data`` has none."""
    return dict(acknowledgements(data)).get(seq)


def acknowledgements(data: bytes) -> list[tuple[int, int]]:
    """(seq, errno) of each NLMSG_ERROR (0: done) in ``data``."""
    return [
        (seq, -struct.unpack_from("=i", payload)[0])
        for kind, seq, payload in messages(data)
        if kind == NLMSG_ERROR and len(payload) >= 4
    ]


class AddressSocket:
    """One NETLINK_ROUTE socket for address changes. The kernel performs a request inside the
    ``send`` itself (netlink hands it to rtnetlink in the sender's context) and queues its
    acknowledgement: ``send`` returns the sequence number and ``confirm`` reads the
    acknowledgement when the caller is ready for it, so a takeover's GARP can leave right after
    its address is in, before the answer is read. A 1 s timeout guards against the impossible."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._sock.settimeout(1.0)
        self._seq = 0
        self._answers: dict[int, int] = {}  # seq -> errno, read while looking for another

    def send(
        self,
        command: str,
        index: int,
        address: IPAddress,
        prefixlen: int,
        *,
        label: str | None = None,
        flags: int = 0,
    ) -> int:
        """Add or delete (done when this returns); the sequence number to ``confirm``."""
        self._seq += 1
        message = request(
            command, index, address, prefixlen, label=label, flags=flags, seq=self._seq
        )
        self._sock.send(message)
        return self._seq

    def confirm(self, seq: int) -> None:
        """Read the acknowledgement of ``seq``; ``OSError`` with the kernel's errno when it
        refused."""
        while seq not in self._answers:
            data = self._sock.recv(65536)
            for got, code in acknowledgements(data):
                self._answers[got] = code
        code = self._answers.pop(seq)
        if code:
            raise OSError(code, os.strerror(code))

    def dump(self) -> list[AddressMessage]:
        """Every address of every interface (one request); acknowledgements read meanwhile
        are kept for ``confirm``."""
        self._seq += 1
        seq = self._seq
        self._sock.send(dump_request(seq))
        found: list[AddressMessage] = []
        while True:
            data = self._sock.recv(1 << 16)
            found += [m for m in parse_addresses(data) if m.seq == seq]
            for got, code in acknowledgements(data):
                if got != seq:
                    self._answers[got] = code
            if done(data, seq):
                return found

    def close(self) -> None:
        self._sock.close()


def remove_leftovers(
    wanted: Iterable[tuple[str, IPAddress]],
) -> tuple[list[tuple[str, IPAddress]], list[str]]:
    """Delete each (device, address) of ``wanted`` that is on that device now: one rtnetlink
    socket, one dump of every address, one acknowledged delete per leftover (a millisecond, not
    a socket per instance). A device that does not exist is skipped; an address on another
    device than the one named is left alone. Returns those deleted and, for each delete the
    kernel refused, what was tried and why. ``OSError`` if rtnetlink cannot be used at all."""
    wanted = list(wanted)
    indexes: dict[str, int] = {}
    for device, _ in wanted:
        with contextlib.suppress(OSError):
            indexes.setdefault(device, socket.if_nametoindex(device))
    targets = [(d, indexes[d], a) for d, a in wanted if d in indexes]
    if not targets:
        return [], []
    removed: list[tuple[str, IPAddress]] = []
    errors: list[str] = []
    rtnl = AddressSocket()
    try:
        present = {(m.index, m.address): m.prefixlen for m in rtnl.dump()}
        sent: list[tuple[str, IPAddress, int, int]] = []
        for device, index, address in targets:
            prefixlen = present.pop((index, address), None)  # pop: each once
            if prefixlen is not None:
                seq = rtnl.send("del", index, address, prefixlen)
                sent.append((device, address, prefixlen, seq))
        for device, address, prefixlen, seq in sent:
            try:
                rtnl.confirm(seq)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:  # gone meanwhile: fine
                    errors.append(f"removing {address}/{prefixlen} from {device}: {exc.strerror}")
            else:
                removed.append((device, address))
    finally:
        rtnl.close()
    return removed, errors
