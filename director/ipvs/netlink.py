"""The real kernel: :class:`IPVSKernel` over generic netlink."""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from typing import Any

from director.ipvs import messages as m
from director.ipvs import wire
from director.ipvs.genl import GenlSocket, NetlinkRequestError
from director.ipvs.kernel import (
    DestConns,
    KernelError,
    SyncDaemon,
    SyncState,
    Timeouts,
    explain,
)
from director.ipvs.model import Dest, DestKey, Service, ServiceKey, Table
from director.ipvs.ops import (
    AddDest,
    AddService,
    DelService,
    EditDest,
    EditService,
    Op,
    OpFailure,
)
from director.ipvs.stats import (
    DEST_STATS,
    DEST_STATS64,
    SVC_STATS,
    SVC_STATS64,
    DestReadings,
    DestsRead,
    ServicesRead,
    StatsSnapshot,
    counters_of,
)
from director.pause import Pause, no_pause


def _svc(payload: bytes) -> bytes:
    return wire.nested(wire.CMD_ATTR_SERVICE, payload)


def _dst(payload: bytes) -> bytes:
    return wire.nested(wire.CMD_ATTR_DEST, payload)


def op_request(op: Op) -> tuple[int, bytes]:
    """The generic-netlink command and attributes that perform ``op``."""
    if isinstance(op, AddService):
        return m.CMD_NEW_SERVICE, _svc(wire.service(op.service))
    if isinstance(op, EditService):
        return m.CMD_SET_SERVICE, _svc(wire.service(op.service))
    if isinstance(op, DelService):
        return m.CMD_DEL_SERVICE, _svc(wire.service_key(op.key))
    key = wire.service_key_nest(op.service)
    if isinstance(op, AddDest):
        return m.CMD_NEW_DEST, key + wire.dest_nest(op.dest)
    if isinstance(op, EditDest):
        return m.CMD_SET_DEST, key + wire.dest_nest(op.dest)
    return m.CMD_DEL_DEST, key + _dst(wire.dest_key_bytes(op.key))


CMD_ATTR_DAEMON = 3
# A sync-daemon stop is acked at once, or never (see stop_sync_daemon).
STOP_ACK_TIMEOUT = 1.0
DAEMON_STATE, DAEMON_MCAST_IFN, DAEMON_SYNC_ID = 1, 2, 3


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def daemon_payload(state: SyncState, daemon: SyncDaemon | None = None) -> bytes:
    """``IPVS_CMD_ATTR_DAEMON`` for NEW_DAEMON (state, interface, sync id) or DEL_DAEMON."""
    inner = _nla(DAEMON_STATE, struct.pack("=I", state))
    if daemon is not None:
        inner += _nla(DAEMON_MCAST_IFN, daemon.interface.encode() + b"\0")
        inner += _nla(DAEMON_SYNC_ID, struct.pack("=I", daemon.sync_id))
    return wire.nested(CMD_ATTR_DAEMON, inner)


def parse_daemon(reply: bytes) -> SyncDaemon | None:
    """One GET_DAEMON reply as a :class:`SyncDaemon`; None when it carries none."""
    raw = wire.attrs(reply).get(CMD_ATTR_DAEMON)
    if raw is None:
        return None
    a = wire.attrs(raw)
    state = struct.unpack("=I", a[DAEMON_STATE][:4])[0]
    interface = a.get(DAEMON_MCAST_IFN, b"").split(b"\0", 1)[0].decode(errors="replace")
    sync_id = struct.unpack("=I", a[DAEMON_SYNC_ID][:4])[0] if DAEMON_SYNC_ID in a else 0
    return SyncDaemon(SyncState(state), interface, sync_id)


def reference_payload(cmd: int, attrs: list[tuple[str, Any]]) -> bytes:
    """Attributes encoded by pyroute2's message classes (the reference codec)."""
    msg = m.ipvs_msg()
    msg["cmd"] = cmd
    msg["version"] = m.GENL_VERSION
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data[20:])


_NO_CONNS = DestConns()


class NetlinkIPVS:
    """IPVS through a generic-netlink socket. Not thread-safe: one caller at a time."""

    def __init__(self, sock: GenlSocket | None = None) -> None:
        """``sock``: an open IPVS family socket (tests); a new one by default."""
        try:
            self._sock = sock or GenlSocket()
        except NetlinkRequestError as exc:
            raise KernelError("opening the IPVS generic netlink family", exc.errno) from exc
        self.conns: dict[tuple[ServiceKey, DestKey], DestConns] = {}
        self._last_stats: StatsSnapshot | None = None  # whose unchanged entries the next reuses

    def close(self) -> None:
        self._sock.close()

    def _dests(self, key: ServiceKey) -> dict[DestKey, Dest]:
        dests: dict[DestKey, Dest] = {}
        conns = self.conns
        for reply in self._sock.dump(m.CMD_GET_DEST, wire.service_key_nest(key)):
            where = wire.find(reply, wire.CMD_ATTR_DEST)
            if where is None:
                continue
            dest, counts = wire.parse_dest(reply, key.family, *where)
            dests[dest.key] = dest
            conns[(key, dest.key)] = _NO_CONNS if counts == (0, 0, 0) else DestConns(*counts)
        return dests

    def dump(self, pause: Pause = no_pause) -> Table:
        try:
            table = Table()
            for reply in self._sock.dump(m.CMD_GET_SERVICE, b""):
                raw = wire.attrs(reply).get(wire.CMD_ATTR_SERVICE)
                if raw is not None:
                    svc = wire.parse_service(raw)
                    table.services[svc.key] = svc
            self.conns.clear()
            for key in table.services:
                pause()
                table.dests[key] = self._dests(key)
            return table
        except NetlinkRequestError as exc:
            raise KernelError("reading the IPVS table", exc.errno) from exc

    def read_stats(self, now: float, pause: Pause = no_pause) -> StatsSnapshot:
        """The whole table with counters and connection counts (for metrics and status);
        ``pause`` is called after each service (:class:`director.heap.Pacer`)."""
        services, read = ServicesRead(), DestsRead()
        last = self._last_stats.dests if self._last_stats is not None else {}
        try:
            for reply in self._sock.dump(m.CMD_GET_SERVICE, b""):
                raw = wire.attrs(reply).get(wire.CMD_ATTR_SERVICE)
                if raw is None:
                    continue
                svc = wire.parse_service(raw)
                services[svc.key] = (svc, counters_of(raw, SVC_STATS, SVC_STATS64))
            for key in services:
                pause()
                dests = read.begin()
                before = last.get(key)
                kept = (
                    {d.key: d for d in before.entries()} if isinstance(before, DestReadings) else {}
                )  # the previous reading's entries, without keeping an index on it
                for reply in self._sock.dump(m.CMD_GET_DEST, _svc(wire.service_key(key))):
                    raw = wire.attrs(reply).get(wire.CMD_ATTR_DEST)
                    if raw is None:
                        continue
                    dest, (active, inactive, persistent) = wire.parse_dest(raw, key.family)
                    counters = counters_of(raw, DEST_STATS, DEST_STATS64)
                    old = kept.get(dest.key)
                    if old is not None and old == dest:
                        dest = old  # an unchanged table: no new entries kept
                    dests.add(dest, active, inactive, persistent, counters)
                read.end(key, dests)
        except NetlinkRequestError as exc:
            raise KernelError("reading IPVS counters", exc.errno) from exc
        snap = StatsSnapshot(at=now, services=services, dests=read)
        self._last_stats = snap
        return snap

    def dump_service(self, key: ServiceKey) -> tuple[Service, dict[DestKey, Dest]] | None:
        try:
            replies = self._sock.get(m.CMD_GET_SERVICE, _svc(wire.service_key(key)))
        except NetlinkRequestError as exc:
            if exc.errno == errno.ESRCH:
                return None
            raise KernelError(f"reading service {key}", exc.errno) from exc
        for reply in replies:
            raw = wire.attrs(reply).get(wire.CMD_ATTR_SERVICE)
            if raw is None:
                continue
            svc = wire.parse_service(raw)
            if svc.key == key:
                try:
                    return svc, self._dests(key)
                except NetlinkRequestError as exc:
                    raise KernelError(f"reading destinations of {key}", exc.errno) from exc
        return None

    def execute(self, ops: Sequence[Op]) -> list[OpFailure]:
        try:
            results = self._sock.batch(map(op_request, ops))
        except OSError as exc:
            raise KernelError("sending IPVS changes", exc.errno or errno.EIO) from exc
        return [
            OpFailure(op, err, explain(err)) for op, err in zip(ops, results, strict=True) if err
        ]

    def get_timeouts(self) -> Timeouts:
        try:
            replies = self._sock.get(m.CMD_GET_CONFIG, b"")
        except NetlinkRequestError as exc:
            raise KernelError("reading IPVS timeouts", exc.errno) from exc
        for reply in replies:
            msg = m.ipvs_msg(struct.pack("=I", 20 + len(reply)) + bytes(16) + reply)
            msg.decode()
            return Timeouts(
                tcp=msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP") or 0,
                tcpfin=msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN") or 0,
                udp=msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_UDP") or 0,
            )
        return Timeouts()

    def set_timeouts(self, timeouts: Timeouts) -> None:
        payload = reference_payload(
            m.CMD_SET_CONFIG,
            [
                ("IPVS_CMD_ATTR_TIMEOUT_TCP", timeouts.tcp),
                ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", timeouts.tcpfin),
                ("IPVS_CMD_ATTR_TIMEOUT_UDP", timeouts.udp),
            ],
        )
        try:
            self._sock.request(m.CMD_SET_CONFIG, payload)
        except NetlinkRequestError as exc:
            raise KernelError("setting IPVS timeouts", exc.errno) from exc

    # -- connection-sync daemons --------------------------------------------------------------

    def sync_daemons(self) -> list[SyncDaemon]:
        try:
            replies = self._sock.dump(m.CMD_GET_DAEMON, b"")
        except NetlinkRequestError as exc:
            raise KernelError("reading the IPVS sync daemons", exc.errno) from exc
        return [d for d in map(parse_daemon, replies) if d is not None]

    def start_sync_daemon(self, daemon: SyncDaemon) -> None:
        try:
            self._sock.request(m.CMD_NEW_DAEMON, daemon_payload(daemon.state, daemon))
        except NetlinkRequestError as exc:
            raise KernelError(f"starting the {daemon}", exc.errno) from exc

    def stop_sync_daemon(self, state: SyncState) -> None:
        try:
            self._sock.request(m.CMD_DEL_DAEMON, daemon_payload(state), timeout=STOP_ACK_TIMEOUT)
        except NetlinkRequestError as exc:
            # A stop that finds the sync thread not yet running returns -EINTR, and Linux sends
            # no ack for that; the daemon is stopped all the same. Tell the two apart by reading.
            if exc.errno == errno.ETIMEDOUT and all(
                d.state is not state for d in self.sync_daemons()
            ):
                return
            raise KernelError(f"stopping the {state} sync daemon", exc.errno) from exc
