"""A fake kernel behind :class:`director.ipvs.genl.GenlSocket`, for fast unit tests only.

It speaks the IPVS generic-netlink bytes the way Linux does (``netlink_rcv_skb``): every request
of one ``send`` runs in order at once, an error answers each refused request (an ack each
accepted one only with ``NLM_F_ACK``), an ``NLMSG_NOOP`` is only acknowledged, a dump answers
with its entries and ``NLMSG_DONE``. The table behind it is a :class:`MemoryIPVS`. Like a netlink
socket, its receive queue holds at most ``queue_limit`` messages: more are dropped and the next
receive fails with ENOBUFS. The real kernel is proven in tests/vm.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque

from director.ipvs import messages as m
from director.ipvs import wire
from director.ipvs.memory import MemoryIPVS
from director.ipvs.ops import AddDest, AddService, DelDest, DelService, EditDest, EditService, Op

FAMILY_ID = 0x42
_HDR = struct.Struct("=IHHII")
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_ACK, NLM_F_DUMP = 0x4, 0x300


class FakeGenlLink:
    def __init__(self, kernel: MemoryIPVS, queue_limit: int = 1 << 20) -> None:
        self.kernel = kernel
        self.queue_limit = queue_limit
        self.queue: deque[bytes] = deque()
        self.overrun = False  # an ENOBUFS to report
        self.congested = False  # dropping everything until the queue is read empty
        self.sends = 0
        self.timeout: float | None = None

    # -- the socket ---------------------------------------------------------------------------

    def send(self, data: bytes | bytearray, /) -> int:
        self.sends += 1
        offset = 0
        while offset + _HDR.size <= len(data):
            length, mtype, flags, seq, _pid = _HDR.unpack_from(data, offset)
            self._handle(bytes(data[offset : offset + length]), mtype, flags, seq)
            offset += (length + 3) & ~3
        return len(data)

    def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0, /) -> int:
        if self.overrun:
            self.overrun = False
            raise OSError(errno.ENOBUFS, "No buffer space available")
        if not self.queue:
            if flags & socket.MSG_DONTWAIT:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            raise TimeoutError("nothing queued")
        data = self.queue.popleft()
        if not self.queue:
            self.congested = False
        buffer[: len(data)] = data
        return len(data)

    def settimeout(self, value: float | None, /) -> None:
        self.timeout = value

    def gettimeout(self) -> float | None:
        return self.timeout

    def close(self) -> None:
        pass

    # -- the kernel ---------------------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        if self.congested or len(self.queue) >= self.queue_limit:
            # Dropped, as netlink does when the receive buffer is full (netlink_overrun): one
            # ENOBUFS, then every message dropped until the queue has been read empty.
            if not self.congested:
                self.overrun = self.congested = True
        else:
            self.queue.append(data)

    def _ack(self, request: bytes, seq: int, err: int) -> None:
        # NETLINK_CAP_ACK: the error message carries the request's header only.
        payload = struct.pack("=i", -err) + request[: _HDR.size]
        self._queue(_HDR.pack(_HDR.size + len(payload), NLMSG_ERROR, 0, seq, 0) + payload)

    def _reply(self, seq: int, flags: int, cmd: int, payload: bytes) -> bytes:
        return wire.GENL_HEADER.pack(20 + len(payload), FAMILY_ID, flags, seq, 0, cmd, 1, 0) + (
            payload
        )

    def _handle(self, request: bytes, mtype: int, flags: int, seq: int) -> None:
        if mtype == NLMSG_NOOP:
            if flags & NLM_F_ACK:
                self._ack(request, seq, 0)
            return
        assert mtype == FAMILY_ID, mtype
        cmd = request[16]
        a = wire.attrs(request, 20)
        if flags & NLM_F_DUMP == NLM_F_DUMP:
            self._dump(cmd, a, seq)
            return
        if cmd == m.CMD_GET_SERVICE:  # one service: its entry, then the ack
            key = wire.parse_service(a[wire.CMD_ATTR_SERVICE]).key
            svc = self.kernel.table.services.get(key)
            if svc is not None:
                payload = wire.nested(wire.CMD_ATTR_SERVICE, wire.service(svc))
                self._queue(self._reply(seq, 0, cmd, payload))
            self._ack(request, seq, 0 if svc is not None else errno.ESRCH)
            return
        err = self._execute(self._op(cmd, a))
        if err or flags & NLM_F_ACK:
            self._ack(request, seq, err)

    def _op(self, cmd: int, a: dict[int, bytes]) -> Op:
        svc = wire.parse_service(a[wire.CMD_ATTR_SERVICE])
        if cmd == m.CMD_NEW_SERVICE:
            return AddService(svc)
        if cmd == m.CMD_SET_SERVICE:
            return EditService(svc)
        if cmd == m.CMD_DEL_SERVICE:
            return DelService(svc.key)
        dest, _conns = wire.parse_dest(a[wire.CMD_ATTR_DEST], svc.key.family)
        if cmd == m.CMD_NEW_DEST:
            return AddDest(svc.key, dest)
        if cmd == m.CMD_SET_DEST:
            return EditDest(svc.key, dest)
        assert cmd == m.CMD_DEL_DEST, cmd
        return DelDest(svc.key, dest.key)

    def _execute(self, op: Op) -> int:
        failures = self.kernel.execute([op])
        return failures[0].errno if failures else 0

    def _dump(self, cmd: int, a: dict[int, bytes], seq: int) -> None:
        table = self.kernel.table
        if cmd == m.CMD_GET_SERVICE:
            for svc in table.services.values():
                payload = wire.nested(wire.CMD_ATTR_SERVICE, wire.service(svc))
                self._queue(self._reply(seq, 0x2, cmd, payload))
        else:
            assert cmd == m.CMD_GET_DEST, cmd
            key = wire.parse_service(a[wire.CMD_ATTR_SERVICE]).key
            if key not in table.services:
                self._ack(b"\0" * _HDR.size, seq, errno.ESRCH)
                return
            for dest in table.dests_of(key).values():
                self._queue(self._reply(seq, 0x2, cmd, wire.dest_nest(dest)))
        self._queue(_HDR.pack(20, NLMSG_DONE, 0x2, seq, 0) + bytes(4))
