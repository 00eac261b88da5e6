"""A minimal, synchronous generic-netlink socket for the IPVS family.

It moves bytes only: it resolves the family id (with pyroute2's ``ctrlmsg``), sends requests
(pipelined, a window at a time, for large applies), and collects acks and dumps. It owns no event
loop, so the daemon can call it from a worker thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import Any

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
_HDR = struct.Struct("=IHHII")
_RCVBUF = 8 << 20
# How long one recv() waits for the kernel. IPVS answers in milliseconds (seconds for a huge
# dump in an emulator); a silent kernel must become an error, not a hung daemon. Linux sends no
# ack at all when a handler returns -EINTR (netlink_rcv_skb skips it), which the IPVS sync-daemon
# stop does when its thread had not started yet.
ANSWER_TIMEOUT = 30.0


class NetlinkRequestError(OSError):
    """The kernel answered a request with an error."""


class GenlSocket:
    """One NETLINK_GENERIC socket bound to the IPVS family."""

    def __init__(self, family_name: str = GENL_NAME) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self._sock.bind((0, 0))
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF)  # SO_RCVBUFFORCE
            except OSError:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.settimeout(ANSWER_TIMEOUT)
            self._seq = itertools.count(1)
            self.family_id = self._resolve(family_name)
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

    def _receive(self) -> Iterator[tuple[int, int, int, bytes, int]]:
        """Messages from one recv(): (type, flags, seq, raw message, errno or 0)."""
        try:
            data = self._sock.recv(1 << 20)
        except TimeoutError:
            wait = self._sock.gettimeout()
            raise NetlinkRequestError(
                errno.ETIMEDOUT, f"no answer from the kernel in {wait:g} s"
            ) from None
        offset = 0
        while offset + _HDR.size <= len(data):
            length, mtype, flags, seq, _pid = _HDR.unpack_from(data, offset)
            if length < _HDR.size:
                break
            raw = data[offset : offset + length]
            err = 0
            if mtype == NLMSG_ERROR:
                err = -struct.unpack_from("=i", raw, _HDR.size)[0]
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
