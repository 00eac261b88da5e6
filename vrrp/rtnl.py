"""Adding and removing one interface address with a single rtnetlink request (RTM_NEWADDR /
RTM_DELADDR, acknowledged). The becoming-master path: the address must be up before the first
gratuitous ARP, and a kernel round trip on a plain socket takes tens of microseconds where a
general netlink library on the event loop takes milliseconds. ``request`` is pure (bytes out);
``AddressSocket`` sends it and reads the acknowledgement. Run in the interface's namespace.
"""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Network

from vrrp.packet import IPAddress

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_DELADDR = 20, 21
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
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
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | extra, seq, 0
    )
    return header + body


def acknowledgement(data: bytes, seq: int) -> int | None:
    """The errno (0: done) in the NLMSG_ERROR answering ``seq``, or None if ``data`` has none."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, got, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return None
        if kind == NLMSG_ERROR and got == seq and length >= _NLMSGHDR.size + 4:
            code: int = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
            return -code
        offset += (length + 3) & ~3
    return None


class AddressSocket:
    """One NETLINK_ROUTE socket for address changes; each call waits for its acknowledgement
    (the kernel answers at once; a 1 s timeout guards against the impossible)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._sock.settimeout(1.0)
        self._seq = 0

    def change(
        self,
        command: str,
        index: int,
        address: IPAddress,
        prefixlen: int,
        *,
        label: str | None = None,
        flags: int = 0,
    ) -> None:
        """Add or delete; ``OSError`` with the kernel's errno when it refuses."""
        self._seq += 1
        message = request(
            command, index, address, prefixlen, label=label, flags=flags, seq=self._seq
        )
        self._sock.send(message)
        while True:
            code = acknowledgement(self._sock.recv(65536), self._seq)
            if code is None:
                continue
            if code:
                raise OSError(code, os.strerror(code))
            return

    def close(self) -> None:
        self._sock.close()
