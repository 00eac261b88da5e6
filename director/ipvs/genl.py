"""A minimal, synchronous generic-netlink socket for the IPVS family.

It moves bytes only: it resolves the family id (with pyroute2's ``ctrlmsg``), sends requests
and collects acks and dumps. It owns no event loop, so the daemon can call it from a worker thread.

Large applies go in batches (:meth:`GenlSocket.batch`): many requests in one ``sendmsg``, each
without ``NLM_F_ACK``, then an ``NLMSG_NOOP`` with ``NLM_F_ACK`` as a barrier. The kernel runs the
requests of one ``sendmsg`` in order, in the sender's context (``netlink_rcv_skb``), and answers
only the refused ones (an error carries the sequence number of its request); the barrier's ack
comes after them all, so once it is read the whole batch is settled. Acking every request instead
would queue one message per request, and reading them costs one ``recvmsg`` each (Python has no
``recvmmsg``): as many system calls as ``ipvsadm -R`` makes.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from pyroute2.netlink import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    ctrlmsg,
)

from director.ipvs import wire
from director.ipvs.messages import GENL_NAME

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSG_NOOP = 1
_HDR = struct.Struct("=IHHII")
_ERR = struct.Struct("=i")
_RCVBUF = 8 << 20
# Bytes of requests in one sendmsg (the kernel refuses more than its socket send buffer, 208 KiB
# by default). A destination add is 140 bytes: about 230 requests a batch. A batch's errors must
# fit the receive buffer: at most one small message per request, far below _RCVBUF.
BATCH_BYTES = 32 << 10
# One recv() buffer, reused: netlink hands out one message buffer per recvmsg, at most 32 KiB
# for dumps (SKB_WITH_OVERHEAD(32768)). A larger one would be an error (MSG_TRUNC tells).
_RECV_BYTES = 64 << 10
# How long one recv() waits for the kernel. IPVS answers in milliseconds (seconds for a huge
# dump in an emulator); a silent kernel must become an error, not a hung daemon. Linux sends no
# ack at all when a handler returns -EINTR (netlink_rcv_skb skips it), which the IPVS sync-daemon
# stop does when its thread had not started yet.
ANSWER_TIMEOUT = 30.0


class Link(Protocol):
    """What :class:`GenlSocket` uses of its socket (a fake kernel in the unit tests)."""

    def send(self, data: bytes | bytearray, /) -> int: ...

    def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0, /) -> int: ...

    def settimeout(self, value: float | None, /) -> None: ...

    def gettimeout(self) -> float | None: ...

    def close(self) -> None: ...


class NetlinkRequestError(OSError):
    """The kernel answered a request with an error."""


class GenlSocket:
    """One NETLINK_GENERIC socket bound to the IPVS family."""

    def __init__(
        self,
        family_name: str = GENL_NAME,
        *,
        sock: Link | None = None,
        family_id: int | None = None,
    ) -> None:
        """``sock`` and ``family_id``: an already open link and the family's id (for unit tests
        that stand a fake kernel behind it)."""
        if sock is None:
            real = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
            try:
                real.bind((0, 0))
                try:
                    real.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF)  # SO_RCVBUFFORCE
                except OSError:
                    real.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
                real.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            except BaseException:
                real.close()
                raise
            sock = real
        self._sock: Link = sock
        try:
            self._sock.settimeout(ANSWER_TIMEOUT)
            self._seq = itertools.count(1)
            self._next_seq = 1 << 20  # batches number their requests from here (see batch())
            self._buf = bytearray(_RECV_BYTES)
            self.family_id = family_id if family_id is not None else self._resolve(family_name)
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def _resolve(self, name: str) -> int:
        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", name)]
        seq = next(self._seq)
        self._send(msg, GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq)
        family_id: int | None = None
        for mtype, _flags, mseq, payload, err in self._receive():
            if mseq != seq:
                continue
            if mtype == NLMSG_ERROR:
                if err:
                    raise NetlinkRequestError(err, f"generic netlink family {name!r}")
                break
            reply = ctrlmsg(payload)
            reply.decode()
            family_id = reply.get_attr("CTRL_ATTR_FAMILY_ID")
        if family_id is None:
            raise NetlinkRequestError(errno.ENOENT, f"generic netlink family {name!r}")
        return int(family_id)

    # -- sending ------------------------------------------------------------------------------

    def _send(self, msg: Any, mtype: int, flags: int, seq: int) -> None:
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0
        msg.encode()
        self._sock.send(msg.data)

    # -- receiving ----------------------------------------------------------------------------

    def _recv(self, flags: int = 0) -> bytes | memoryview:
        """One netlink message buffer from the kernel, into a reused buffer."""
        try:
            size = self._sock.recv_into(self._buf, 0, socket.MSG_TRUNC | flags)
        except TimeoutError:
            wait = self._sock.gettimeout()
            raise NetlinkRequestError(
                errno.ETIMEDOUT, f"no answer from the kernel in {wait:g} s"
            ) from None
        if size > len(self._buf):
            raise NetlinkRequestError(errno.EMSGSIZE, f"a {size}-byte answer from the kernel")
        return memoryview(self._buf)[:size]

    def _receive(self, flags: int = 0) -> Iterator[tuple[int, int, int, bytes, int]]:
        """Messages from one recv(): (type, flags, seq, raw message, errno or 0)."""
        data = self._recv(flags)
        offset = 0
        while offset + _HDR.size <= len(data):
            length, mtype, flags, seq, _pid = _HDR.unpack_from(data, offset)
            if length < _HDR.size:
                break
            raw = bytes(data[offset : offset + length])
            err = 0
            if mtype == NLMSG_ERROR:
                err = -_ERR.unpack_from(raw, _HDR.size)[0]
            yield mtype, flags, seq, raw, err
            offset += (length + 3) & ~3

    def request(self, cmd: int, payload: bytes, timeout: float | None = None) -> None:
        """One request that the kernel acknowledges; raises NetlinkRequestError on refusal.

        ``timeout`` replaces ``ANSWER_TIMEOUT`` for this request's ack (ETIMEDOUT when none).
        """
        if timeout is None:
            err = self.pipeline([(cmd, payload)])[0]
        else:
            self._sock.settimeout(timeout)
            try:
                err = self.pipeline([(cmd, payload)])[0]
            finally:
                self._sock.settimeout(ANSWER_TIMEOUT)
        if err:
            raise NetlinkRequestError(err, os.strerror(err))

    def pipeline(self, requests: Iterable[tuple[int, bytes]], window: int = 256) -> list[int]:
        """Send requests keeping up to ``window`` unacknowledged; return each one's errno."""
        results: list[int] = []
        pending: dict[int, int] = {}
        flags = NLM_F_REQUEST | NLM_F_ACK
        for cmd, payload in requests:
            seq = next(self._seq)
            pending[seq] = len(results)
            results.append(-1)
            self._sock.send(wire.message(self.family_id, flags, seq, cmd, payload))
            while len(pending) >= window:
                self._collect_acks(pending, results)
        while pending:
            self._collect_acks(pending, results)
        return results

    def _collect_acks(self, pending: dict[int, int], results: list[int]) -> None:
        for mtype, _flags, seq, _raw, err in self._receive():
            if mtype == NLMSG_ERROR and seq in pending:
                results[pending.pop(seq)] = err

    def batch(
        self, requests: Iterable[tuple[int, bytes]], batch_bytes: int = BATCH_BYTES
    ) -> list[int]:
        """Send requests many to a ``sendmsg`` (see the module docstring); each one's errno.

        0: done. ``ENOBUFS``: the kernel's answer may have been lost (the receive buffer
        overran); the request may or may not have taken effect, so the caller reads back.
        Batches are numbered from a range of their own (``_next_seq``), so that a request's
        index is its sequence number minus its batch's first: no table per request.
        """
        results: list[int] = []
        out = bytearray()
        family, flags, header = self.family_id, NLM_F_REQUEST, wire.GENL_HEADER.pack
        seq0 = index0 = 0
        for cmd, payload in requests:
            if not out:
                if self._next_seq > 1 << 30:  # wrap long before 2**32
                    self._next_seq = 1 << 20
                seq0, index0 = self._next_seq, len(results)
            out += header(20 + len(payload), family, flags, self._next_seq, 0, cmd, 1, 0)
            out += payload
            self._next_seq += 1
            results.append(0)
            if len(out) >= batch_bytes:
                self._send_batch(out, seq0, index0, results)
                out.clear()
        if out:
            self._send_batch(out, seq0, index0, results)
        return results

    def _barrier(self) -> bytes:
        """An ``NLMSG_NOOP`` the kernel only acknowledges: it marks the end of a batch."""
        seq = self._next_seq
        self._next_seq += 1
        return _HDR.pack(_HDR.size, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, seq, 0)

    def _send_batch(self, out: bytearray, seq0: int, index0: int, results: list[int]) -> None:
        count = self._next_seq - seq0
        barrier = self._next_seq
        out += self._barrier()
        self._sock.send(out)
        wait = 0  # recv flags: block for the barrier; after an overrun, only drain
        while True:
            try:
                for mtype, _flags, seq, _raw, err in self._receive(wait):
                    if mtype != NLMSG_ERROR:
                        continue
                    if seq == barrier:
                        return
                    if seq0 <= seq < seq0 + count:
                        results[index0 + seq - seq0] = err
            except BlockingIOError:
                # Drained after an overrun: netlink drops everything while the queue is
                # congested, so only now can a new barrier get through.
                wait = 0
                barrier = self._next_seq
                self._sock.send(self._barrier())
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # Answers were dropped: a request not known to be refused may have been.
                for i in range(index0, index0 + count):
                    if not results[i]:
                        results[i] = errno.ENOBUFS
                wait = socket.MSG_DONTWAIT

    def get(self, cmd: int, payload: bytes) -> list[bytes]:
        """A request answered by replies and an ack; returns each reply's attributes."""
        return self.dump(cmd, payload, NLM_F_REQUEST | NLM_F_ACK)

    def dump(
        self, cmd: int, payload: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP
    ) -> list[bytes]:
        """A dump request; returns each reply's attributes (after the genl header)."""
        seq = next(self._seq)
        self._sock.send(wire.message(self.family_id, flags, seq, cmd, payload))
        replies: list[bytes] = []
        while True:
            for mtype, _flags, mseq, raw, err in self._receive():
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return replies
                if mtype == NLMSG_ERROR:
                    if err:
                        raise NetlinkRequestError(err, os.strerror(err))
                    return replies
                replies.append(raw[_HDR.size + 4 :])
