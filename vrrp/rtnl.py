"""Adding and removing one interface address with a single rtnetlink request (RTM_NEWADDR /
RTM_DELADDR, acknowledged). The becoming-master path: the address must be up before the first
gratuitous ARP, and a kernel round trip on a plain socket takes tens of microseconds where a
general netlink library on the event loop takes milliseconds. ``request`` is pure (bytes out);
``AddressSocket`` sends it and reads the acknowledgement. Run in the interface's namespace.
"""

from __future__ import annotations

import functools
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


def acknowledgement(data: bytes, seq: int) -> int | None:
    """The errno (0: done) in the NLMSG_ERROR answering ``seq``, or None if ``data`` has none."""
    return dict(acknowledgements(data)).get(seq)


def acknowledgements(data: bytes) -> list[tuple[int, int]]:
    """(seq, errno) of each NLMSG_ERROR (0: done) in ``data``."""
    found: list[tuple[int, int]] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, got, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + 4:
            code: int = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
            found.append((got, -code))
        offset += (length + 3) & ~3
    return found


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

    def close(self) -> None:
        self._sock.close()
