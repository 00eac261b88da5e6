"""A stand-in for journald: a decoder of the native protocol and a socket that receives it.

The decoder follows https://systemd.io/JOURNAL_NATIVE_PROTOCOL/ the way journald reads a
datagram, and is strict where journald would only skip: every field name must be valid, every
binary value must end with its newline.
"""

from __future__ import annotations

import array
import fcntl
import os
import re
import socket
import struct
from pathlib import Path

VALID_NAME = re.compile(rb"[A-Z][A-Z0-9_]{0,63}")
SEALED = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def decode(datagram: bytes) -> list[tuple[str, bytes]]:
    """The (name, value) pairs of a datagram, in order; AssertionError on anything malformed."""
    fields: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(datagram):
        end = datagram.index(b"\n", pos)
        line = datagram[pos:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = end + 1
        else:
            name = line
            (size,) = struct.unpack_from("<Q", datagram, end + 1)
            start = end + 1 + 8
            value = datagram[start : start + size]
            assert len(value) == size, f"field {name!r}: {size} bytes announced, {len(value)} sent"
            assert datagram[start + size : start + size + 1] == b"\n", f"{name!r}: no final \\n"
            pos = start + size + 1
        assert VALID_NAME.fullmatch(name), f"invalid field name {name!r}"
        fields.append((name.decode(), value))
    return fields


def entry(datagram: bytes) -> dict[str, str]:
    """The fields of a datagram as text, each name once (the last value wins)."""
    return {name: value.decode() for name, value in decode(datagram)}


class JournalSocket:
    """An AF_UNIX datagram socket bound at ``path``, read without blocking; a datagram that
    carries a memfd (SCM_RIGHTS) is read from that file, which must be sealed, as journald
    does."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def receive(self) -> list[bytes]:
        """Every datagram queued now."""
        out: list[bytes] = []
        fds = array.array("i")
        while True:
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    1 << 20, socket.CMSG_SPACE(fds.itemsize)
                )
            except BlockingIOError:
                return out
            assert not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
            if not ancillary:
                out.append(data)
                continue
            [(level, kind, payload)] = ancillary
            assert (level, kind, data) == (socket.SOL_SOCKET, socket.SCM_RIGHTS, b"")
            [fd] = array.array("i", payload)
            assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALED == SEALED, "journald refuses it"
            with os.fdopen(fd, "rb") as file:
                file.seek(0)  # journald maps the file from its start; the offset is the sender's
                out.append(file.read())

    def entries(self) -> list[dict[str, str]]:
        return [entry(datagram) for datagram in self.receive()]

    def close(self) -> None:
        self.sock.close()
