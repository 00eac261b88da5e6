"""The VRRP codec: golden bytes from the RFC layouts, checksums, auth, every drop reason, fuzz."""

from __future__ import annotations

import dataclasses
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrp import (
    Advertisement,
    AuthType,
    Dropped,
    DropReason,
    Expected,
    IPAddress,
    check_ttl,
    decode,
    encode,
    parse,
    validate,
)
from vrrp.packet import pseudo_header

SRC4, GROUP4 = IPv4Address("192.0.2.1"), IPv4Address("224.0.0.18")
SRC6, GROUP6 = IPv6Address("fe80::1"), IPv6Address("ff02::12")
VIP4, VIP6 = IPv4Address("192.0.2.100"), IPv6Address("2001:db8::100")


def rfc1071(data: bytes) -> int:
    """RFC 1071 section 4.1, transcribed: add 16-bit words, fold the carries, complement."""
    total = 0
    for i in range(0, len(data), 2):
        high = data[i]
        low = data[i + 1] if i + 1 < len(data) else 0
        total += (high << 8) + low
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def v3_pseudo(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """RFC 5798 5.2.8: the IPv4 pseudo-header as UDP's, the IPv6 one as RFC 2460 8.1."""
    if src.version == 4:
        return src.packed + dst.packed + bytes([0, 112]) + length.to_bytes(2, "big")
    return src.packed + dst.packed + length.to_bytes(4, "big") + bytes([0, 0, 0, 112])


def build(
    fields: bytes, body: bytes, *, src: IPAddress = SRC4, dst: IPAddress = GROUP4, v3: bool
) -> bytes:
    """Six header bytes + checksum + body, with a correct checksum whatever the fields say."""
    message = fields + b"\0\0" + body
    covered = v3_pseudo(src, dst, len(message)) + message if v3 else message
    return fields + rfc1071(covered).to_bytes(2, "big") + body


# -- golden bytes, field by field from the RFC figures ---------------------------------------

V2_NO_AUTH = (
    bytes([0x21, 51, 100, 1, 0, 1])  # version 2 | type 1, VRID 51, priority 100, 1 address,
    # auth type 0, adver int 1 s
    + bytes.fromhex("0000")  # checksum, filled below
    + bytes([192, 0, 2, 100])
    + bytes(8)  # authentication data
)
V2_NO_AUTH = V2_NO_AUTH[:6] + rfc1071(V2_NO_AUTH).to_bytes(2, "big") + V2_NO_AUTH[8:]


def test_golden_v2_ipv4() -> None:
    advert = Advertisement(2, 51, 100, 100, (VIP4,))
    assert encode(advert, SRC4, GROUP4) == V2_NO_AUTH
    # 0x2133 + 0x6401 + 0x0001 + 0xc000 + 0x0264 = 0x14799 -> 0x479a -> complement 0xb865
    assert V2_NO_AUTH.hex() == "213364010001b865c0000264" + "0000000000000000"
    assert decode(V2_NO_AUTH, SRC4, GROUP4) == advert


def test_golden_v2_simple_password() -> None:
    # Also what scapy builds for VRRP(authtype=1, auth1=b"secr", auth2=b"et\0\0") under an IP.
    golden = bytes.fromhex("2133640101017b19c0000264") + b"secret\0\0"
    assert rfc1071(golden) == 0
    advert = Advertisement(2, 51, 100, 100, (VIP4,), AuthType.SIMPLE, b"secret\0\0")
    assert encode(advert, SRC4, GROUP4) == golden
    short = Advertisement(2, 51, 100, 100, (VIP4,), AuthType.SIMPLE, b"secret")
    assert short == advert  # kept zero-padded to the 8 wire bytes
    assert encode(short, SRC4, GROUP4) == golden
    assert Advertisement(3, 51, 100, 100, (VIP4,), AuthType.NONE, b"x").auth_data == b""
    assert decode(golden, SRC4, GROUP4) == advert


def test_golden_v3_ipv4_includes_the_pseudo_header() -> None:
    fields = bytes([0x31, 51, 100, 1, 0x00, 100])  # v3 | type 1, VRID, prio, count, 100 cs
    golden = build(fields, VIP4.packed, v3=True)
    assert golden.hex() == "3133640100640572c0000264"
    advert = Advertisement(3, 51, 100, 100, (VIP4,), AuthType.NONE, b"")
    assert encode(advert, SRC4, GROUP4) == golden
    assert decode(golden, SRC4, GROUP4) == advert
    # Without the pseudo-header the sum differs: a v2-style checksum does not verify.
    assert rfc1071(golden) != 0


def test_golden_v3_ipv6() -> None:
    fields = bytes([0x31, 51, 100, 1, 0x00, 100])
    golden = build(fields, VIP6.packed, src=SRC6, dst=GROUP6, v3=True)
    assert golden.hex() == "3133640100643d8f" + "20010db8000000000000000000000100"
    advert = Advertisement(3, 51, 100, 100, (VIP6,), AuthType.NONE, b"")
    assert encode(advert, SRC6, GROUP6) == golden
    assert decode(golden, SRC6, GROUP6) == advert


def test_v3_interval_is_12_bits_of_centiseconds() -> None:
    advert = Advertisement(3, 7, 200, 4095, (VIP4, IPv4Address("192.0.2.101")), AuthType.NONE, b"")
    data = encode(advert, SRC4, GROUP4)
    assert data[4:6] == bytes([0x0F, 0xFF])
    assert decode(data, SRC4, GROUP4) == advert
    # The 4 reserved bits are sent as 0 and ignored on receipt.
    fields = bytes([0x31, 7, 200, 1, 0xF0, 0x0A])
    decoded = decode(build(fields, VIP4.packed, v3=True), SRC4, GROUP4)
    assert isinstance(decoded, Advertisement)
    assert decoded.interval_cs == 10
    assert decoded.interval == pytest.approx(0.1)


def test_checksum_helpers_match_the_reference() -> None:
    assert pseudo_header(SRC4, GROUP4, 12) == v3_pseudo(SRC4, GROUP4, 12)
    assert pseudo_header(SRC6, GROUP6, 24) == v3_pseudo(SRC6, GROUP6, 24)
    with pytest.raises(ValueError, match="address family"):
        pseudo_header(SRC4, GROUP6, 12)


def test_against_scapy_layers() -> None:
    """An independent implementation: scapy computes the checksum when stacked under IP."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.vrrp import VRRP, VRRPv3

    v2 = IP(src=str(SRC4), dst=str(GROUP4)) / VRRP(
        vrid=51, priority=100, ipcount=1, adv=1, addrlist=[str(VIP4)]
    )
    assert bytes(v2[VRRP]) == V2_NO_AUTH

    for src, dst, vip, ip_layer in ((SRC4, GROUP4, VIP4, IP), (SRC6, GROUP6, VIP6, IPv6)):
        packet = ip_layer(src=str(src), dst=str(dst)) / VRRPv3(
            vrid=9, priority=150, ipcount=1, adv=25, addrlist=[str(vip)]
        )
        theirs = bytes(packet[VRRPv3])
        ours = encode(Advertisement(3, 9, 150, 25, (vip,), AuthType.NONE, b""), src, dst)
        assert ours == theirs


# -- receive checks and every drop reason ----------------------------------------------------

EXPECT_V2 = Expected(version=2, vrid=51, interval_cs=100, addresses=frozenset({VIP4}))
EXPECT_PASS = Expected(2, 51, 100, frozenset({VIP4}), AuthType.SIMPLE, b"secret")


def reason(result: Advertisement | Dropped | None) -> DropReason | None:
    return result.reason if isinstance(result, Dropped) else None


def test_ttl_must_be_255() -> None:
    assert check_ttl(255) is None
    assert reason(check_ttl(254)) is DropReason.BAD_TTL
    assert reason(check_ttl(1)) is DropReason.BAD_TTL


def v2(*fields: int, addresses: bytes = VIP4.packed) -> bytes:
    """A v2 packet (IPv4, 8 bytes of auth data) with these six header bytes, checksum right."""
    return build(bytes(fields), addresses + bytes(8), v3=False)


def v3(*fields: int, addresses: bytes = VIP4.packed) -> bytes:
    return build(bytes(fields), addresses, v3=True)


OTHER4 = IPv4Address("192.0.2.2")


@pytest.mark.parametrize(
    ("data", "src", "dst", "expected"),
    [
        (b"", SRC4, GROUP4, DropReason.TOO_SHORT),
        (V2_NO_AUTH[:7], SRC4, GROUP4, DropReason.TOO_SHORT),
        (v2(0x41, 51, 100, 1, 0, 1), SRC4, GROUP4, DropReason.BAD_VERSION),
        (v2(0x11, 51, 100, 1, 0, 1), SRC4, GROUP4, DropReason.BAD_VERSION),
        (V2_NO_AUTH, SRC6, GROUP6, DropReason.BAD_VERSION),  # v2 is IPv4 only
        (v2(0x22, 51, 100, 1, 0, 1), SRC4, GROUP4, DropReason.BAD_TYPE),
        (v2(0x20, 51, 100, 1, 0, 1), SRC4, GROUP4, DropReason.BAD_TYPE),
        (V2_NO_AUTH[:-1], SRC4, GROUP4, DropReason.BAD_LENGTH),
        (V2_NO_AUTH + b"\0", SRC4, GROUP4, DropReason.BAD_LENGTH),
        (v2(0x21, 51, 100, 2, 0, 1), SRC4, GROUP4, DropReason.BAD_LENGTH),
        (v3(0x31, 51, 100, 1, 0, 100), SRC6, GROUP6, DropReason.BAD_LENGTH),  # 4-byte address
        (V2_NO_AUTH[:6] + b"\0\0" + V2_NO_AUTH[8:], SRC4, GROUP4, DropReason.BAD_CHECKSUM),
        (V2_NO_AUTH[:-1] + b"\1", SRC4, GROUP4, DropReason.BAD_CHECKSUM),
        (v3(0x31, 51, 100, 1, 0, 100), OTHER4, GROUP4, DropReason.BAD_CHECKSUM),  # other source
        (v2(0x21, 51, 100, 1, 0, 0), SRC4, GROUP4, DropReason.BAD_INTERVAL),
        (v3(0x31, 51, 100, 1, 0xF0, 0), SRC4, GROUP4, DropReason.BAD_INTERVAL),
        (v2(0x21, 51, 100, 1, 7, 1), SRC4, GROUP4, DropReason.BAD_AUTH),
    ],
)
def test_decode_drops(data: bytes, src: IPAddress, dst: IPAddress, expected: DropReason) -> None:
    assert reason(decode(data, src, dst)) is expected


def test_validate_drops() -> None:
    base = Advertisement(2, 51, 100, 100, (VIP4,), AuthType.NONE, bytes(8))

    def v2(**changes: Any) -> Advertisement:
        return dataclasses.replace(base, **changes)

    assert validate(v2(), EXPECT_V2) is None
    assert reason(validate(v2(version=3), EXPECT_V2)) is DropReason.BAD_VERSION
    assert reason(validate(v2(vrid=52), EXPECT_V2)) is DropReason.VRID_MISMATCH
    assert reason(validate(v2(interval_cs=200), EXPECT_V2)) is DropReason.INTERVAL_MISMATCH
    other = (IPv4Address("192.0.2.200"),)
    assert reason(validate(v2(addresses=other), EXPECT_V2)) is DropReason.ADDRESS_LIST_MISMATCH
    assert reason(validate(v2(addresses=()), EXPECT_V2)) is DropReason.ADDRESS_LIST_MISMATCH
    # RFC 3768/5798 7.1: the address owner's advert is processed despite a different list.
    assert validate(v2(addresses=other, priority=255), EXPECT_V2) is None
    assert validate(v2(addresses=other), Expected(2, 51, 100, None)) is None  # check off
    assert validate(v2(addresses=(VIP4, VIP4)), EXPECT_V2) is None  # a set, in any order
    # Authentication, v2 only.
    password = b"secret\0\0"
    assert validate(v2(auth_type=AuthType.SIMPLE, auth_data=password), EXPECT_PASS) is None
    bad = validate(v2(auth_type=AuthType.SIMPLE, auth_data=b"wrong\0\0\0"), EXPECT_PASS)
    assert reason(bad) is DropReason.AUTH_MISMATCH
    assert reason(validate(v2(), EXPECT_PASS)) is DropReason.BAD_AUTH  # none, PASS wanted
    passworded = v2(auth_type=AuthType.SIMPLE, auth_data=password)
    assert reason(validate(passworded, EXPECT_V2)) is DropReason.BAD_AUTH
    assert reason(validate(v2(auth_type=AuthType.AH), EXPECT_V2)) is DropReason.BAD_AUTH
    # RFC 3768 5.3.10: with auth type 0 the auth data is ignored.
    assert validate(v2(auth_data=b"garbage!"), EXPECT_V2) is None


def test_v3_learns_the_interval_rather_than_checking_it() -> None:
    expected = Expected(version=3, vrid=51, interval_cs=100, addresses=frozenset({VIP6}))
    advert = Advertisement(3, 51, 100, 10, (VIP6,), AuthType.NONE, b"")
    assert validate(advert, expected) is None


def test_parse_is_decode_then_validate() -> None:
    assert parse(V2_NO_AUTH, SRC4, GROUP4, EXPECT_V2) == decode(V2_NO_AUTH, SRC4, GROUP4)
    assert reason(parse(V2_NO_AUTH, SRC4, GROUP4, EXPECT_PASS)) is DropReason.BAD_AUTH
    assert reason(parse(b"\x21", SRC4, GROUP4, EXPECT_V2)) is DropReason.TOO_SHORT
    drop = parse(V2_NO_AUTH, SRC4, GROUP4, Expected(2, 52, 100))
    assert drop == Dropped(DropReason.VRID_MISMATCH, "VRID 51, expected 52")


def test_every_drop_reason_is_reachable() -> None:
    # Kept in step with the tests above: a new reason needs a test that produces it.
    # (socket_overflow: tests/vrrp_io/test_overflow.py, a flood against a small buffer)
    assert {r.value for r in DropReason} == {
        "bad_ttl", "too_short", "bad_version", "bad_type", "bad_length", "bad_checksum",
        "bad_interval", "bad_auth", "vrid_mismatch", "auth_mismatch", "interval_mismatch",
        "address_list_mismatch", "socket_overflow",
    }  # fmt: skip


def test_encode_refuses_impossible_adverts() -> None:
    with pytest.raises(ValueError, match=r"v2 interval 1\.5s"):
        encode(Advertisement(2, 51, 100, 150, (VIP4,)), SRC4, GROUP4)
    with pytest.raises(ValueError, match="VRRPv2 over IPv6"):
        encode(Advertisement(2, 51, 100, 100, (VIP6,)), SRC6, GROUP6)
    with pytest.raises(ValueError, match=r"VRID 0.*priority 256.*not IPv4"):
        encode(Advertisement(3, 0, 256, 100, (VIP6,), AuthType.NONE, b""), SRC4, GROUP4)
    with pytest.raises(ValueError, match="auth data longer than 8"):
        encode(Advertisement(2, 51, 100, 100, (VIP4,), AuthType.SIMPLE, b"123456789"), SRC4, GROUP4)
    with pytest.raises(ValueError, match="v3 interval 4096cs"):
        encode(Advertisement(3, 1, 100, 4096, (), AuthType.NONE, b""), SRC4, GROUP4)
    with pytest.raises(ValueError, match="address family"):
        encode(Advertisement(3, 1, 100, 100, (), AuthType.NONE, b""), SRC4, GROUP6)


# -- properties ------------------------------------------------------------------------------

ipv4s: st.SearchStrategy[IPAddress] = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6s: st.SearchStrategy[IPAddress] = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@st.composite
def adverts_with_addresses(draw: st.DrawFn) -> tuple[Advertisement, IPAddress, IPAddress]:
    family = draw(st.sampled_from([4, 6]))
    version = 3 if family == 6 else draw(st.sampled_from([2, 3]))
    addresses = ipv4s if family == 4 else ipv6s
    src, dst = draw(addresses), draw(addresses)
    listed = tuple(draw(st.lists(addresses, max_size=8)))
    vrid, priority = draw(st.integers(1, 255)), draw(st.integers(0, 255))
    if version == 2:
        interval_cs = 100 * draw(st.integers(1, 255))
        auth = draw(st.sampled_from(list(AuthType)))
        data = draw(st.binary(min_size=8, max_size=8))
        return Advertisement(2, vrid, priority, interval_cs, listed, auth, data), src, dst
    interval_cs = draw(st.integers(1, 4095))
    return Advertisement(3, vrid, priority, interval_cs, listed, AuthType.NONE, b""), src, dst


@given(adverts_with_addresses())
def test_roundtrip(case: tuple[Advertisement, IPAddress, IPAddress]) -> None:
    advert, src, dst = case
    data = encode(advert, src, dst)
    covered = data if advert.version == 2 else v3_pseudo(src, dst, len(data)) + data
    assert rfc1071(covered) == 0
    assert decode(data, src, dst) == advert


@given(adverts_with_addresses(), st.data())
def test_any_single_byte_corruption_is_dropped(
    case: tuple[Advertisement, IPAddress, IPAddress], data: st.DataObject
) -> None:
    advert, src, dst = case
    packet = bytearray(encode(advert, src, dst))
    at = data.draw(st.integers(0, len(packet) - 1))
    packet[at] ^= data.draw(st.integers(1, 255))
    assert isinstance(decode(bytes(packet), src, dst), Dropped)


@settings(max_examples=500)
@given(st.binary(max_size=600), st.sampled_from([(SRC4, GROUP4), (SRC6, GROUP6)]))
def test_random_bytes_never_raise(data: bytes, addresses: tuple[IPAddress, IPAddress]) -> None:
    src, dst = addresses
    result = parse(data, src, dst, EXPECT_V2)
    assert isinstance(result, Advertisement | Dropped)


@settings(max_examples=500)
@given(
    st.sampled_from([2, 3]),
    st.binary(min_size=4, max_size=4),
    st.integers(0, 255),
    st.binary(max_size=80),
    st.sampled_from([(SRC4, GROUP4), (SRC6, GROUP6)]),
)
def test_well_checksummed_garbage_never_raises(
    version: int, head: bytes, count: int, body: bytes, addresses: tuple[IPAddress, IPAddress]
) -> None:
    """Random fields behind a valid checksum get past the checksum, into the field checks."""
    src, dst = addresses
    fields = bytes([version << 4 | 1, head[0], head[1], count, head[2], head[3]])
    data = build(fields, body, src=src, dst=dst, v3=version == 3)
    result = parse(data, src, dst, Expected(version, head[0], 100))
    assert isinstance(result, Advertisement | Dropped)
    if isinstance(result, Advertisement):
        assert encode(result, src, dst)[8:] == data[8:]


def test_fuzzed_valid_lengths_decode() -> None:
    # The shapes the garbage test can hit that decode successfully, spelled out once.
    fields = bytes([0x31, 51, 100, 2, 0, 100])
    body = VIP4.packed + IPv4Address("192.0.2.101").packed
    result = decode(build(fields, body, v3=True), SRC4, GROUP4)
    assert isinstance(result, Advertisement)
    assert result.addresses == (VIP4, ip_address("192.0.2.101"))
    assert struct.unpack("!H", encode(result, SRC4, GROUP4)[4:6]) == (100,)


def test_vrid_zero_is_dropped_on_decode() -> None:
    """Found by the garbage test: VRID 0 decoded, and could not be encoded back."""
    fields = bytes([0x31, 0, 100, 1, 0, 100])
    result = decode(build(fields, VIP4.packed, v3=True), SRC4, GROUP4)
    assert result == Dropped(DropReason.VRID_MISMATCH, "VRID 0")
