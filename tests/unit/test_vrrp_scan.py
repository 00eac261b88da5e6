"""``directorctl vrrp-scan``'s pure core: frames decoded with our codec, adverts folded into a
report with findings, and the rendering. No sockets (the namespace test is tests/vrrp_io)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address

import pytest

from director import cli
from director.vrrp_scan import Heard, Unreadable, decode_frame, fold, render
from vrrp.packet import (
    IPPROTO_VRRP,
    VRRP_GROUP_V4,
    VRRP_GROUP_V6,
    Advertisement,
    AuthType,
    IPAddress,
    encode,
)

MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
A, B, C = IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2"), IPv4Address("198.18.0.3")
VIP, VIP2 = IPv4Address("198.18.0.100"), IPv4Address("198.18.0.200")


def frame4(payload: bytes, src: IPv4Address, mac: bytes = MAC_A, *, proto: int = 112) -> bytes:
    total = 20 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 255, proto, 0, src.packed,
                     VRRP_GROUP_V4.packed)  # fmt: skip
    return b"\x01\x00\x5e\x00\x00\x12" + mac + b"\x08\x00" + ip + payload + b"\0" * 6


def frame6(payload: bytes, src: IPv6Address, mac: bytes = MAC_A) -> bytes:
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(payload), IPPROTO_VRRP, 255, src.packed,
                     VRRP_GROUP_V6.packed)  # fmt: skip
    return b"\x33\x33\x00\x00\x00\x12" + mac + b"\x86\xdd" + ip + payload


def advert_bytes(version: int, vrid: int, priority: int, *addresses: IPAddress, src: IPAddress,
                 interval_cs: int = 100, password: bytes = b"") -> bytes:  # fmt: skip
    auth = AuthType.SIMPLE if password else AuthType.NONE
    advert = Advertisement(version, vrid, priority, interval_cs, addresses, auth, password)
    return encode(advert, src, VRRP_GROUP_V4 if src.version == 4 else VRRP_GROUP_V6)


def heard(src: IPAddress, vrid: int, priority: int, *addresses: IPAddress, at: float,
          version: int = 2, interval_cs: int = 100, mac: bytes = MAC_A) -> Heard:  # fmt: skip
    return Heard(src, mac, version, vrid, priority, interval_cs, addresses, 0, at)


def adverts(src: IPAddress, vrid: int, priority: int, *addresses: IPAddress, start: float,
            count: int, version: int = 2, interval_cs: int = 100,
            mac: bytes = MAC_A) -> list[Heard]:  # fmt: skip
    """``count`` adverts one interval apart from ``start``."""
    return [
        heard(
            src,
            vrid,
            priority,
            *addresses,
            at=start + i * interval_cs / 100,
            version=version,
            interval_cs=interval_cs,
            mac=mac,
        )
        for i in range(count)
    ]


# -- decoding real bytes ---------------------------------------------------------------------


def test_decodes_a_v2_advert_with_password() -> None:
    data = advert_bytes(2, 51, 150, VIP, src=A, password=b"secret")
    got = decode_frame(frame4(data, A, MAC_B), 7.5)
    assert got == Heard(A, MAC_B, 2, 51, 150, 100, (VIP,), int(AuthType.SIMPLE), 7.5)


def test_decodes_a_v3_advert_over_ipv4_and_ipv6() -> None:
    got = decode_frame(frame4(advert_bytes(3, 61, 100, VIP, VIP2, src=B, interval_cs=20), B), 1)
    assert isinstance(got, Heard)
    assert (got.version, got.vrid, got.priority, got.interval_cs) == (3, 61, 100, 20)
    assert got.addresses == (VIP, VIP2)
    src6, vip6 = IPv6Address("fe80::1"), IPv6Address("2001:db8::100")
    got6 = decode_frame(frame6(advert_bytes(3, 61, 100, vip6, src=src6), src6), 1)
    assert isinstance(got6, Heard)
    assert (got6.src_ip, got6.addresses) == (src6, (vip6,))


def test_ipv6_hop_by_hop_header_is_skipped() -> None:
    src6, vip6 = IPv6Address("fe80::1"), IPv6Address("2001:db8::100")
    data = advert_bytes(3, 9, 100, vip6, src=src6)
    hop_by_hop = bytes([IPPROTO_VRRP, 0]) + b"\x01\x04\0\0\0\0"  # PadN
    frame = bytearray(frame6(hop_by_hop + data, src6))
    frame[20] = 0  # next header: hop-by-hop
    got = decode_frame(bytes(frame), 1)
    assert isinstance(got, Heard)
    assert got.vrid == 9


def test_other_traffic_is_not_vrrp() -> None:
    assert decode_frame(b"", 0) is None
    assert decode_frame(b"\xff" * 13, 0) is None
    assert decode_frame(frame4(b"\0" * 8, A, proto=17), 0) is None  # UDP
    arp = b"\xff" * 6 + MAC_A + b"\x08\x06" + b"\0" * 28
    assert decode_frame(arp, 0) is None


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        pytest.param(lambda d: d[:-3], "bad_length", id="short-payload"),
        pytest.param(lambda d: d[:5], "too_short", id="shorter-than-header"),
        pytest.param(lambda d: d[:6] + b"\0\0" + d[8:], "bad_checksum", id="checksum"),
        pytest.param(lambda d: b"\x41" + d[1:], "bad_version", id="version-4"),
        pytest.param(lambda d: b"\x22" + d[1:], "bad_type", id="type-2"),
    ],
)
def test_malformed_adverts_are_unreadable_not_raised(mangle: object, reason: str) -> None:
    data = advert_bytes(2, 51, 150, VIP, src=A)
    assert callable(mangle)
    assert decode_frame(frame4(mangle(data), A), 0) == Unreadable(reason)


def test_truncated_frames_are_unreadable() -> None:
    full = frame4(advert_bytes(2, 51, 150, VIP, src=A), A)
    for cut in range(14 + 20, len(full) - 6):  # anywhere inside the IP datagram
        got = decode_frame(full[:cut], 0)
        assert isinstance(got, Unreadable), cut
    src6 = IPv6Address("fe80::1")
    full6 = frame6(advert_bytes(3, 51, 150, IPv6Address("2001:db8::1"), src=src6), src6)
    for cut in range(14 + 40, len(full6)):
        assert isinstance(decode_frame(full6[:cut], 0), Unreadable), cut
    bad_ihl = bytearray(full)
    bad_ihl[14] = 0x4F  # IHL 60 bytes, past the datagram
    assert decode_frame(bytes(bad_ihl), 0) == Unreadable("truncated")


def test_random_garbage_never_raises() -> None:
    import random

    rng = random.Random(5)
    base = frame4(advert_bytes(2, 51, 150, VIP, VIP2, src=A), A)
    for _ in range(3000):
        frame = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            frame[rng.randrange(14, len(frame))] = rng.randrange(256)
        got = decode_frame(bytes(frame[: rng.randrange(0, len(frame) + 1)]), 0)
        assert got is None or isinstance(got, Heard | Unreadable)


# -- the report ------------------------------------------------------------------------------


def test_clean_segment_one_row_per_router_and_no_findings() -> None:
    seen = adverts(A, 51, 150, VIP, start=0, count=5) + adverts(
        B, 61, 100, VIP2, start=0.3, count=5, version=3, mac=MAC_B
    )
    report = fold(seen, {}, 5, ended=5.0)
    assert [(r.vrid, r.src_ip, r.adverts, r.version) for r in report.routers] == [
        (51, A, 5, 2),
        (61, B, 5, 3),
    ]
    assert report.findings == ()
    assert report.exit_status == 0
    assert 51 not in report.free_vrids() and 61 not in report.free_vrids()
    assert len(report.free_vrids()) == 253


def test_failover_between_two_masters_is_no_collision() -> None:
    """The old master goes silent, the backup takes over after Master_Down: one advert each
    at most overlaps, as in a preemption."""
    seen = adverts(A, 51, 150, VIP, start=0, count=3) + adverts(B, 51, 100, VIP, start=5.6, count=4)
    seen += adverts(A, 51, 150, VIP, start=9.5, count=2)  # A back: preempts, B goes quiet
    report = fold(seen, {}, 12, ended=12)
    assert [f.kind for f in report.findings] == []


def test_collision_and_address_disagreement() -> None:
    seen = adverts(A, 51, 150, VIP, start=0, count=5) + adverts(
        C, 51, 120, VIP2, start=0.5, count=5, mac=MAC_B
    )
    report = fold(seen, {}, 5, ended=5)
    kinds = {f.kind: f.message for f in report.findings}
    assert set(kinds) == {"collision", "disagreement"}
    assert kinds["disagreement"] == (
        "VRID 51: 2 routers advertise different address lists: "
        "198.18.0.1 [198.18.0.100]; 198.18.0.3 [198.18.0.200]"
    )
    assert kinds["collision"].startswith(
        "VRID 51: 198.18.0.3 (priority 120) kept advertising while 198.18.0.1 (priority 150)"
        " was master"
    )
    assert report.exit_status == 1


def test_address_disagreement_without_concurrent_masters() -> None:
    """B was master until A preempted it (B's last advert crossed A's first on the wire)."""
    seen = [
        *adverts(B, 51, 100, VIP2, start=0, count=3),
        *adverts(A, 51, 150, VIP, start=1.9, count=5),
    ]
    report = fold(seen, {}, 5, ended=5)
    assert [f.kind for f in report.findings] == ["disagreement"]
    assert report.exit_status == 1


def test_a_lower_priority_advert_long_after_the_master_was_heard_is_a_collision() -> None:
    """Two keepalived masters that drop each other's adverts (address lists differ) postpone
    their own: few adverts each, interleaved. One lower-priority advert heard is enough."""
    seen = [
        *adverts(A, 51, 150, VIP, start=0, count=2),
        heard(C, 51, 120, VIP2, at=2.0),
    ]
    assert {f.kind for f in fold(seen, {}, 4, ended=4).findings} == {"collision", "disagreement"}
    # the master before it: 3 of its intervals or longer ago, C may have taken over
    late = [*adverts(A, 51, 150, VIP, start=0, count=2), heard(C, 51, 120, VIP, at=4.5)]
    assert fold(late, {}, 5, ended=5).findings == ()


def test_equal_priority_the_higher_address_wins() -> None:
    seen = [heard(C, 51, 100, VIP, at=0), heard(A, 51, 100, VIP, at=1)]  # A kept on after C
    (finding,) = fold(seen, {}, 2, ended=2).findings
    assert finding.kind == "collision"
    assert finding.message.startswith("VRID 51: 198.18.0.1 (priority 100) kept advertising while")
    crossed = [heard(C, 51, 100, VIP, at=0), heard(A, 51, 100, VIP, at=0.1)]
    assert fold(crossed, {}, 1, ended=1).findings == ()


def test_same_list_in_another_order_agrees() -> None:
    seen = [*adverts(A, 51, 150, VIP, VIP2, start=0, count=3), heard(B, 51, 0, VIP2, VIP, at=1)]
    assert fold(seen, {}, 3, ended=3).findings == ()


def test_version_mix_and_interval_mismatch_are_reported_without_failing() -> None:
    seen = [
        heard(B, 51, 100, VIP, at=0, version=3, interval_cs=50),  # then A preempted it
        *adverts(A, 51, 150, VIP, start=0.1, count=3),
    ]
    report = fold(seen, {}, 3, ended=3)
    assert [f.message for f in report.findings] == [
        "VRID 51: versions 2 and 3 both heard",
        "VRID 51: intervals 0.5s, 1s",
    ]
    assert report.exit_status == 0


def test_owner_and_families_apart() -> None:
    """VRID 51 over IPv4 and VRID 51 over IPv6 are two different virtual routers."""
    src6, vip6 = IPv6Address("fe80::2"), IPv6Address("2001:db8::100")
    seen = adverts(A, 51, 255, VIP, start=0, count=4) + adverts(
        src6, 51, 100, vip6, start=0, count=4, version=3
    )
    report = fold(seen, {}, 4, ended=4)
    assert [(f.kind, f.message) for f in report.findings] == [
        ("owner", "VRID 51: 198.18.0.1 is the address owner (priority 255)")
    ]
    assert 51 not in report.free_vrids(6) and 51 not in report.free_vrids(4)


def test_row_keeps_the_last_advert() -> None:
    seen = [heard(A, 51, 150, VIP, at=0), heard(A, 51, 0, VIP, at=1)]  # priority 0: stopping
    (row,) = fold(seen, {}, 2, ended=2).routers
    assert (row.priority, row.adverts, row.first_at, row.last_at) == (0, 2, 0, 1)


def test_render_and_json() -> None:
    seen = adverts(A, 51, 150, VIP, start=0, count=5) + adverts(
        C, 51, 120, VIP2, start=0.5, count=5, mac=MAC_B
    )
    report = fold(seen, {"bad_checksum": 2}, 5, ended=5)
    text = render(report, "eth0")
    assert text.splitlines()[0] == (
        "VRRP heard on eth0 in 5 s: 2 router(s), 10 advert(s), 2 unreadable"
    )
    assert "  51  v2  150    1s  none   198.18.0.1" in text
    assert "02:00:00:00:00:0a" in text
    assert "unreadable: bad_checksum 2" in text
    assert "DISAGREEMENT: VRID 51: 2 routers advertise" in text
    assert "free VRIDs (IPv4): 1-50, 52-255" in text
    data = json.loads(json.dumps(report.as_dict()))
    assert data["routers"][1] == {
        "vrid": 51,
        "family": 4,
        "source": "198.18.0.3",
        "mac": "02:00:00:00:00:0b",
        "version": 2,
        "priority": 120,
        "interval": 1.0,
        "addresses": ["198.18.0.200"],
        "auth_type": "none",
        "adverts": 5,
        "last_seen_ago": 0.5,
    }
    assert data["unreadable"] == {"bad_checksum": 2}
    assert {f["kind"] for f in data["findings"]} == {"collision", "disagreement"}


def test_missing_interface_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["vrrp-scan", "no-such-if0", "--seconds", "0.1"]) == 2
    assert "no interface 'no-such-if0'" in capsys.readouterr().err


def test_directord_does_not_import_the_scanner_or_scapy() -> None:
    code = (
        "import sys, director.daemon, director.cli;"
        "print(sorted(m for m in sys.modules if m.startswith(('scapy', 'director.vrrp_scan'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
