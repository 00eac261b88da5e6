"""The systemd journal's native protocol, without libsystemd: a record's fields in one datagram.

:func:`encode` (pure) turns a rendered event dict into the datagram journald reads on
``/run/systemd/journal/socket`` (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): ``KEY=value\\n``
per field, or ``KEY\\n`` + the value's length (64-bit little-endian) + the value + ``\\n`` when
the value holds a newline. Every key becomes a valid field name (:func:`field_name`) and every
value text, so every record makes a datagram journald accepts.

:class:`Sender` writes datagrams to the socket, without ever blocking; one too large for a
datagram goes in a sealed memfd passed along with ``SCM_RIGHTS``, as ``sd_journal_sendv`` does.
Any other failure is counted and left to the caller, who writes the line to stderr instead.

:func:`is_journal_stream` tells whether a file descriptor is the journal's stream, the way
systemd.exec(5) documents it for ``$JOURNAL_STREAM``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import socket
import struct
from array import array
from collections.abc import Mapping

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "directord"

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
"""syslog priority of each level; any other level is sent as info (6)."""

MAX_NAME = 64

RESERVED = frozenset(
    {
        # the user fields of systemd.journal-fields(7): journald and journalctl give them meaning
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "ERRNO",
        "INVOCATION_ID",
        "USER_INVOCATION_ID",
        "SYSLOG_FACILITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_PID",
        "SYSLOG_TIMESTAMP",
        "SYSLOG_RAW",
        "DOCUMENTATION",
        "TID",
        "UNIT",
        "USER_UNIT",
        # fields journalctl -u matches on, or journald acts upon
        "OBJECT_PID",
        "OBJECT_SYSTEMD_UNIT",
        "OBJECT_SYSTEMD_USER_UNIT",
        "COREDUMP_UNIT",
        "COREDUMP_USER_UNIT",
    }
)
"""Field names an event's key must not take (a VRRP ``priority`` is not a syslog priority): such
a key gets a trailing ``_`` (``PRIORITY_=150``)."""

SNDBUF = 8 * 1024 * 1024
"""Send buffer asked for (as libsystemd does; the kernel caps it at ``net.core.wmem_max``)."""

_NOT_NAME = re.compile(r"[^A-Z0-9_]")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_TOO_LARGE = (errno.EMSGSIZE, errno.ENOBUFS)


# -- the encoder (pure) ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def field_name(key: str) -> str:
    """The journal field for an event's key: upper case, any character but ``A-Z 0-9 _``
    replaced by ``_``, ``FIELD_`` in front of one that would not start with a letter, at most
    64 characters, and a trailing ``_`` on a :data:`RESERVED` name."""
    name = _NOT_NAME.sub("_", key.upper())
    if not "A" <= name[:1] <= "Z":
        name = "FIELD_" + name
    name = name[:MAX_NAME]
    if name in RESERVED:
        name += "_"
    return name


def text(value: object) -> str:
    """A value as text: strings as they are, ``true``/``false``, ``null`` for None (as in JSON),
    lists, tuples and dicts as JSON, anything else as ``str()``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple | dict):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # keys JSON cannot have, a container holding itself
            pass
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__} without str()>"


def field(name: str, value: str) -> bytes:
    """One field: ``NAME=value\\n``, or the binary form when ``value`` holds a newline."""
    data = value.encode("utf-8", "backslashreplace")
    if b"\n" not in data:
        return b"%s=%s\n" % (name.encode(), data)
    return b"%s\n%s%s\n" % (name.encode(), struct.pack("<Q", len(data)), data)


def encode(event_dict: Mapping[str, object], message: str, identifier: str = IDENTIFIER) -> bytes:
    """The datagram for a rendered event (``timestamp``, ``level``, ``event``, ``logger``, its
    fields, ``exception``): ``MESSAGE`` (``message``, the line the event renders to),
    ``PRIORITY`` (from ``level``), ``SYSLOG_IDENTIFIER``, then each key as its field
    (``event`` -> ``EVENT``, ``instance`` -> ``INSTANCE``, ``repeated`` -> ``REPEATED``)."""
    priority = PRIORITY.get(str(event_dict.get("level")), 6)
    parts = [
        field("MESSAGE", message),
        b"PRIORITY=%d\n" % priority,
        field("SYSLOG_IDENTIFIER", identifier),
    ]
    parts += [field(field_name(str(k)), text(v)) for k, v in event_dict.items()]
    return b"".join(parts)


# -- the sender -----------------------------------------------------------------------------------


class Sender:
    """Sends datagrams to journald's socket (``path``) and never blocks.

    :meth:`send` is False when the datagram did not go (the socket is missing, or full: EAGAIN
    when journald cannot keep up); each such failure is counted in :attr:`failures`, the last
    one kept in :attr:`last_error`. The socket is opened here and not connected: each datagram is
    addressed to ``path``, so a restarted journald's new socket is found at once.
    """

    def __init__(self, path: str = SOCKET) -> None:
        self.path = path
        self.failures = 0
        self.last_error: OSError | None = None
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)

    def send(self, datagram: bytes) -> bool:
        try:
            try:
                self._sock.sendto(datagram, self.path)
            except OSError as exc:
                if exc.errno not in _TOO_LARGE:
                    raise
                self._send_memfd(datagram)
        except OSError as exc:
            self.failures += 1
            self.last_error = exc
            return False
        return True

    def _send_memfd(self, datagram: bytes) -> None:
        """A datagram too large for the socket: its bytes in a sealed memfd, the memfd passed
        in an empty datagram (journald reads the file and closes it)."""
        fd = os.memfd_create("journal-data", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            rest = memoryview(datagram)
            while rest:
                rest = rest[os.write(fd, rest) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", [fd]))]
            self._sock.sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._sock.close()


# -- detection ------------------------------------------------------------------------------------


def is_journal_stream(fd: int, journal_stream: str | None) -> bool:
    """Whether ``fd`` is the stream systemd connected to the journal: ``journal_stream`` (the
    value of ``$JOURNAL_STREAM``, ``DEVICE:INODE`` in decimal) names the device and inode that
    ``fstat(fd)`` finds. False when unset, malformed or not this file."""
    device, colon, inode = (journal_stream or "").partition(":")
    try:
        stat = os.fstat(fd)
        return bool(colon) and (int(device), int(inode)) == (stat.st_dev, stat.st_ino)
    except (OSError, ValueError):
        return False
