"""The socket-free parts of the I/O shell: IP headers, link events, ARP and NA frames."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from ipaddress import IPv4Address, IPv6Address

import pytest
from structlog.testing import capture_logs

from tests.vrrp_io.capture import (
    ALL_NODES_MAC,
    NeighbourAdvert,
    decode_frame,
    interval_deviations,
)
from vrrp import (
    Action,
    AddAddresses,
    Advertisement,
    Config,
    Dropped,
    DropReason,
    Event,
    IPAddress,
    RemoveAddresses,
    SendAdvert,
    SendGratuitous,
    State,
    StateChanged,
    encode,
    link,
    rtnl,
)
from vrrp.addresses import NA_OVERRIDE, NA_ROUTER, gratuitous_arp, unsolicited_na
from vrrp.instance import Instance, _advert_first
from vrrp.packet import VRRP_GROUP_V6, checksum
from vrrp.thread import InstanceThread
from vrrp.timer import TimerFd
from vrrp.transport import SO_RXQ_OVFL, Own, Transport, overflow, receive_ipv4, receive_ipv6

ME, PEER, GROUP = IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2"), IPv4Address("224.0.0.18")
CONFIG = Config(
    vrid=7, priority=100, primary_address=ME, virtual_addresses=(IPv4Address("198.18.0.100"),)
)


def datagram(payload: bytes, src: IPv4Address = PEER, ttl: int = 255, ihl: int = 5) -> bytes:
    options = b"\x94\x04\x00\x00" * (ihl - 5)  # router alert, as some senders add
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0xC0,
        20 + len(options) + len(payload),
        0,
        0,
        ttl,
        112,
        0,
        src.packed,
        GROUP.packed,
    )
    return header + options + payload


def advert_bytes(priority: int = 150) -> bytes:
    return encode(CONFIG.advertisement(priority), PEER, GROUP)


@pytest.mark.parametrize("ihl", [5, 6])
def test_valid_advert_is_delivered_with_its_source(ihl: int) -> None:
    result = receive_ipv4(datagram(advert_bytes(), ihl=ihl), CONFIG.expected(), ME)
    assert result == (CONFIG.advertisement(150), PEER)


def test_own_advert_is_ignored() -> None:
    assert isinstance(receive_ipv4(datagram(advert_bytes(), src=ME), CONFIG.expected(), ME), Own)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DropReason.TOO_SHORT),
        (b"\x45" + b"\0" * 10, DropReason.TOO_SHORT),
        (b"\x4f" + b"\0" * 30, DropReason.TOO_SHORT),  # IHL beyond the data
        (datagram(advert_bytes(), ttl=64), DropReason.BAD_TTL),
        (datagram(advert_bytes()[:-1]), DropReason.BAD_LENGTH),
        (datagram(b"\x21\x08" + advert_bytes()[2:]), DropReason.BAD_CHECKSUM),
    ],
)
def test_bad_input_is_dropped_never_raised(data: bytes, reason: DropReason) -> None:
    result = receive_ipv4(data, CONFIG.expected(), ME)
    assert isinstance(result, Dropped)
    assert result.reason is reason


def test_gratuitous_arp_frame() -> None:
    mac = bytes.fromhex("020000000001")
    frame = gratuitous_arp(mac, IPv4Address("198.18.0.100"))
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert sha == mac and spa == tpa == IPv4Address("198.18.0.100").packed
    with pytest.raises(ValueError, match="MAC"):
        gratuitous_arp(b"\1", IPv4Address("198.18.0.100"))


def link_message(kind: int, index: int, flags: int) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0xFFFFFFFF) + b"\0" * 6  # + an attribute
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body + b"\0\0"  # padded


def test_link_events_are_parsed_by_index_and_running_flag() -> None:
    up = link.IFF_UP | link.IFF_RUNNING
    data = (
        link_message(link.RTM_NEWLINK, 3, up)
        + link_message(link.RTM_NEWLINK, 4, link.IFF_UP)  # up, no carrier
        + link_message(link.RTM_DELLINK, 5, up)
        + link_message(20, 6, up)  # RTM_NEWADDR: not a link message
    )
    assert link.parse(data) == [(3, True), (4, False), (5, False)]
    assert link.parse(data[:-3]) == [(3, True), (4, False), (5, False)]  # truncated tail
    assert link.parse(b"\x01\x00") == []


LL_ME, LL_PEER = IPv6Address("fe80::1"), IPv6Address("fe80::2")
V6 = Config(
    vrid=7,
    priority=100,
    primary_address=LL_ME,
    virtual_addresses=(IPv6Address("2001:db8::100"),),
    version=3,
    advert_interval=0.1,
)


def test_ipv6_advert_checks_hop_limit_and_pseudo_header_checksum() -> None:
    data = encode(V6.advertisement(150), LL_PEER, VRRP_GROUP_V6)
    expected = V6.expected()
    assert receive_ipv6(data, LL_PEER, VRRP_GROUP_V6, 255, expected, LL_ME) == (
        V6.advertisement(150),
        LL_PEER,
    )
    assert isinstance(receive_ipv6(data, LL_ME, VRRP_GROUP_V6, 255, expected, LL_ME), Own)
    for hops, dst, reason in [
        (64, VRRP_GROUP_V6, DropReason.BAD_TTL),
        (None, VRRP_GROUP_V6, DropReason.BAD_TTL),
        (255, IPv6Address("ff02::1"), DropReason.BAD_CHECKSUM),  # another pseudo-header
    ]:
        result = receive_ipv6(data, LL_PEER, dst, hops, expected, LL_ME)
        assert isinstance(result, Dropped) and result.reason is reason


def test_unsolicited_neighbour_advert_frame() -> None:
    mac, vip = bytes.fromhex("020000000001"), IPv6Address("2001:db8::100")
    frame = unsolicited_na(mac, vip)
    assert len(frame) == 14 + 40 + 32
    na = decode_frame(frame, 1.0)
    assert isinstance(na, NeighbourAdvert)
    assert (na.dst_mac, na.source_mac, na.target_mac) == (ALL_NODES_MAC, mac, mac)
    assert (na.src, na.dst, na.target, na.hop_limit) == (vip, IPv6Address("ff02::1"), vip, 255)
    assert na.flags == NA_ROUTER | NA_OVERRIDE
    pseudo = vip.packed + IPv6Address("ff02::1").packed + struct.pack("!I3xB", 32, 58)
    assert checksum(pseudo + frame[54:]) == 0


def test_advert_jitter_is_each_gap_from_the_interval_sorted() -> None:
    times = [10.0, 10.1, 10.25, 10.3, 10.4]  # gaps 0.1, 0.15 (late), 0.05 (early), 0.1
    assert interval_deviations(times, 0.1) == pytest.approx([0.0, 0.0, 0.05, 0.05])
    assert interval_deviations([10.0], 0.1) == [] and interval_deviations([], 0.1) == []


def test_rtnetlink_address_request_and_acknowledgement() -> None:
    add = rtnl.request("add", 2, IPv4Address("198.18.0.100"), 24, label="eth0:3", seq=7)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", add)
    assert (length, kind, seq) == (len(add), rtnl.RTM_NEWADDR, 7)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    assert struct.unpack_from("=BBBBI", add, 16) == (2, 24, 0, 0, 2)  # AF_INET, /24, index 2
    attributes, offset = {}, 24
    while offset < len(add):
        size, kind = struct.unpack_from("=HH", add, offset)
        attributes[kind] = add[offset + 4 : offset + size]
        offset += (size + 3) & ~3
    assert attributes[rtnl.IFA_LOCAL] == attributes[rtnl.IFA_ADDRESS] == bytes([198, 18, 0, 100])
    assert attributes[rtnl.IFA_BROADCAST] == bytes([198, 18, 0, 255])
    assert attributes[rtnl.IFA_LABEL] == b"eth0:3\0"
    v6 = rtnl.request("del", 2, IPv6Address("2001:db8::100"), 128)
    assert struct.unpack_from("=HH", v6, 4) == (rtnl.RTM_DELADDR, 0x5)
    assert len(v6) == 16 + 8 + 2 * 20
    with pytest.raises(ValueError, match="neither add nor del"):
        rtnl.request("replace", 2, IPv4Address("198.18.0.100"), 32)

    def answer(seq: int, code: int) -> bytes:
        return struct.pack("=IHHIIi", 20 + 16, rtnl.NLMSG_ERROR, 0, seq, 0, code) + b"\0" * 16

    assert rtnl.acknowledgement(answer(7, 0), 7) == 0
    assert rtnl.acknowledgement(answer(6, -17) + answer(7, -17), 7) == 17  # EEXIST
    assert rtnl.acknowledgement(answer(6, 0), 7) is None
    assert rtnl.acknowledgement(b"\0" * 8, 7) is None


@pytest.mark.asyncio
async def test_timerfd_fires_at_its_deadline_and_can_be_moved_or_disarmed() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = TimerFd(loop, lambda: fired.append(loop.time()))
    try:
        start = loop.time()
        timer.arm(start + 0.5)
        timer.arm(start + 0.05)  # moved earlier
        await asyncio.sleep(0.2)
        assert len(fired) == 1
        assert 0.05 <= fired[0] - start < 0.05 + 0.1  # scheduling slack on a loaded machine
        timer.arm(loop.time() + 0.05)
        timer.arm(None)  # disarmed
        await asyncio.sleep(0.1)
        assert len(fired) == 1
    finally:
        timer.close()


# -- the takeover's hot path -------------------------------------------------------------------


def test_a_takeover_logs_and_calls_back_after_its_advert_addresses_and_first_garp() -> None:
    vips = CONFIG.virtual_addresses
    changed = StateChanged(State.BACKUP, State.MASTER, Event.MASTER_DOWN_TIMER)
    actions: list[Action] = [
        changed,
        SendAdvert(100),
        AddAddresses(vips),
        SendGratuitous(vips),
        SendGratuitous(vips),
    ]
    assert _advert_first(actions) == [
        SendAdvert(100),
        AddAddresses(vips),
        SendGratuitous(vips),
        changed,
        SendGratuitous(vips),
    ]
    # leaving master keeps the machine's order: the state change first
    leaving: list[Action] = [
        StateChanged(State.MASTER, State.BACKUP, Event.ADVERT_HIGHER),
        RemoveAddresses(vips),
    ]
    assert _advert_first(leaving) == leaving


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.prepared: list[int] = []
        self.performed: list[str] = []  # "advert", "add", "garp" in the order they went out


def _backup_due_in(seconds: float, pending: list[Advertisement]) -> tuple[Instance, _Recorder]:
    """A started-by-hand backup whose Master_Down_Timer is ``seconds`` away, woken as the timerfd
    would wake it (``_spin_to`` set); ``pending`` are adverts queued on its socket meanwhile."""
    instance = Instance(CONFIG, "lo", track_interface=False)
    loop = asyncio.new_event_loop()
    instance._loop = loop
    record = _Recorder()
    transport = instance.transport

    def receive_pending() -> None:
        while pending:
            instance._received(pending.pop(0), PEER, 0.0)

    transport.receive_pending = receive_pending  # type: ignore[method-assign]

    def send(advert: Advertisement) -> None:
        record.sent.append(advert.priority)
        record.performed.append("advert")

    transport.send = send  # type: ignore[method-assign]

    def prepare(advert: Advertisement) -> list[tuple[IPAddress, bytes, tuple[object, ...]]]:
        record.prepared.append(advert.priority)
        return []

    transport.prepare = prepare  # type: ignore[method-assign]
    instance.addresses.add_now = lambda addresses: record.performed.append("add")  # type: ignore[method-assign]
    instance.addresses.prepare = lambda addresses: None  # type: ignore[method-assign]
    instance.addresses.gratuitous = lambda addresses: record.performed.append("garp")  # type: ignore[method-assign]
    instance.on_state = lambda state: record.performed.append(str(state))
    interval = instance.machine.master_down_interval
    instance.machine.start(loop.time() - interval + seconds)
    instance._spin_to = instance.machine.next_deadline()
    return instance, record


def test_a_backup_woken_early_takes_over_at_its_deadline_not_before() -> None:
    instance, record = _backup_due_in(0.0015, [])
    deadline = instance._spin_to
    assert deadline is not None
    try:
        instance._on_timer()
        assert time.monotonic() >= deadline
        assert instance.state is State.MASTER
        assert record.prepared == [100]  # encoded before the deadline
        # each packet once, in order, the state change after the first GARP (burst of 5)
        assert record.performed == ["advert", "add", "garp", "master", *["garp"] * 4]
    finally:
        instance._require_loop().close()


def test_an_advert_that_arrived_while_waiting_out_the_deadline_still_counts() -> None:
    instance, record = _backup_due_in(0.0015, [CONFIG.advertisement(150)])
    try:
        instance._on_timer()
        assert instance.state is State.BACKUP
        assert record.performed == []
        deadline = instance.machine.next_deadline()
        assert deadline is not None
        assert deadline > time.monotonic() + 3.0  # Master_Down_Timer restarted by that advert
    finally:
        instance._require_loop().close()


# -- kernel drops, address events, the transition's log line ------------------------------------


def test_kernel_drops_are_counted_by_their_increase() -> None:
    transport = Transport("lo", ME, CONFIG.expected(), lambda advert, src, age: None)

    def seen(count: int | None) -> int:
        ancillary = (
            [] if count is None else [(socket.SOL_SOCKET, SO_RXQ_OVFL, struct.pack("=I", count))]
        )
        transport._count_overflow(ancillary)
        return transport.drops[DropReason.SOCKET_OVERFLOW]

    assert seen(None) == 0  # the kernel sends none while its count is 0
    assert seen(5) == 5
    assert seen(5) == 5  # cumulative: the same count again is nothing new
    assert seen(7) == 7
    transport.kernel_drops = (1 << 32) - 1
    assert seen(1) == 9  # the u32 wrapped: 2 more
    assert overflow([(socket.SOL_SOCKET, SO_RXQ_OVFL, b"\x01")]) is None  # short: ignored


def test_address_messages_from_a_dump_or_an_event() -> None:
    v6 = IPv6Address("2001:db8::10")
    data = rtnl.request("del", 3, v6, 128, seq=9) + rtnl.request(
        "add", 2, IPv4Address("198.18.0.100"), 24, label="eth0:1", seq=10
    )
    assert rtnl.parse_addresses(data) == [
        rtnl.AddressMessage(rtnl.RTM_DELADDR, 3, v6, 128, 9),
        rtnl.AddressMessage(rtnl.RTM_NEWADDR, 2, IPv4Address("198.18.0.100"), 24, 10),
    ]
    assert rtnl.done(struct.pack("=IHHII", 20, rtnl.NLMSG_DONE, 2, 9, 0) + bytes(4), 9)
    assert not rtnl.done(data, 9)
    dump = rtnl.dump_request(4)
    assert struct.unpack_from("=IHHII", dump) == (24, rtnl.RTM_GETADDR, 0x301, 4, 0)
    for cut in range(len(data)):  # truncated or shifted reads never raise
        rtnl.parse_addresses(data[:cut])
        rtnl.parse_addresses(data[cut:])


def test_a_takeover_logs_one_transition_line_with_its_cause() -> None:
    instance, _record = _backup_due_in(0.0015, [])
    try:
        with capture_logs() as logs:
            instance._on_timer()
        assert instance.state is State.MASTER
        assert [e for e in logs if e["event"] == "vrrp_transition"] == [
            {
                "event": "vrrp_transition",
                "log_level": "info",
                "vrid": 7,
                "interface": "lo",
                "previous": "backup",
                "state": "master",
                "cause": "master_down timer expired, no master heard",
                "trigger": "master_down_timer",
                "priority": 100,
            }
        ]
    finally:
        instance._require_loop().close()


def test_a_refused_realtime_priority_is_logged_and_the_thread_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("os.sched_setscheduler", refuse)  # as under RestrictRealtime=yes
    runner = InstanceThread(Instance(CONFIG, "lo", track_interface=False), realtime=10)
    loop = asyncio.new_event_loop()
    ran: list[bool] = []

    def first() -> None:
        ran.append(True)
        loop.stop()

    loop.call_soon(first)
    try:
        with capture_logs() as logs:
            runner._main(loop)
    finally:
        loop.close()
    assert ran == [True]
    assert [(e["event"], e.get("priority")) for e in logs] == [("vrrp_realtime_refused", 10)], logs
    with pytest.raises(ValueError, match="realtime priority 100"):
        InstanceThread(Instance(CONFIG, "lo", track_interface=False), realtime=100)
