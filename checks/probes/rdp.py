"""RDP: a real X.224 Connection Request, as Nagios' check_x224 does.

The probe sends what an RDP client sends first ([MS-RDPBCGR] 2.2.1.1): a TPKT header (RFC 1006:
version 3, reserved, 16-bit big-endian length) around an X.224 Class 0 Connection Request TPDU
(ISO 8073 / RFC 905: length indicator, code 0xE0, DST-REF, SRC-REF, class), an optional
routing cookie ``Cookie: mstshash=<name>\\r\\n`` and an RDP Negotiation Request (type 1, flags,
length 8, requestedProtocols, little-endian).

The server is up when it answers with a well-formed TPKT + X.224 Connection Confirm (code 0xD0,
[MS-RDPBCGR] 2.2.1.2), with or without an RDP Negotiation Response or Failure: even a failure
(e.g. "SSL required by server") proves the terminal service is alive and speaking RDP. Anything
else (garbage, a short reply, another TPDU) is down, with the reason.

The codec below is pure (bytes in, values out); ``probe`` is the I/O around it.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from checks.probes.result import ProbeFailed, ProbeResult, Step, Target, guarded, preview, stream

PROTOCOL_RDP = 0x0
PROTOCOL_SSL = 0x1
PROTOCOL_HYBRID = 0x2
PROTOCOL_RDSTLS = 0x4
PROTOCOL_HYBRID_EX = 0x8

TPKT_VERSION = 3
TPKT_HEADER = 4
MAX_TPKT_LENGTH = 1024  # a Connection Confirm is 11 or 19 bytes; bound what we read
X224_CONNECTION_REQUEST = 0xE0
X224_CONNECTION_CONFIRM = 0xD0
TYPE_RDP_NEG_REQ = 0x01
TYPE_RDP_NEG_RSP = 0x02
TYPE_RDP_NEG_FAILURE = 0x03
NEG_FAILURES = {
    1: "SSL_REQUIRED_BY_SERVER",
    2: "SSL_NOT_ALLOWED_BY_SERVER",
    3: "SSL_CERT_NOT_ON_SERVER",
    4: "INCONSISTENT_FLAGS",
    5: "HYBRID_REQUIRED_BY_SERVER",
    6: "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
}


@dataclass(frozen=True)
class RdpSpec:
    """What an RDP check asks for."""

    requested_protocols: int = PROTOCOL_SSL | PROTOCOL_HYBRID
    cookie: str | None = None  # sent as "Cookie: mstshash=<cookie>" (a user name or a token)

    def __post_init__(self) -> None:
        if not 0 <= self.requested_protocols <= 0xFFFFFFFF:
            raise ValueError(f"requested_protocols must fit 32 bits: {self.requested_protocols}")
        if self.cookie is not None and (
            not self.cookie.isascii() or not self.cookie.isprintable() or len(self.cookie) > 100
        ):
            raise ValueError(
                f"cookie must be printable ASCII, at most 100 characters: {self.cookie!r}"
            )


class X224Error(ValueError):
    """The reply is not a valid TPKT + X.224 Connection Confirm; the message says why."""


@dataclass(frozen=True)
class ConnectionConfirm:
    """A parsed Connection Confirm: at most one of the two negotiation fields is set."""

    selected_protocol: int | None = None
    failure_code: int | None = None


def connection_request(requested_protocols: int, cookie: str | None = None) -> bytes:
    """TPKT + X.224 Connection Request + optional cookie + RDP Negotiation Request."""
    variable = b""
    if cookie is not None:
        variable += b"Cookie: mstshash=" + cookie.encode("ascii") + b"\r\n"
    variable += struct.pack("<BBHI", TYPE_RDP_NEG_REQ, 0, 8, requested_protocols)
    fixed = struct.pack(">BHHB", X224_CONNECTION_REQUEST, 0, 0, 0)  # DST-REF, SRC-REF, class 0
    tpdu = bytes([len(fixed) + len(variable)]) + fixed + variable  # LI excludes itself
    return struct.pack(">BBH", TPKT_VERSION, 0, TPKT_HEADER + len(tpdu)) + tpdu


def tpkt_length(header: bytes) -> int:
    """The total packet length from a 4-byte TPKT header."""
    if len(header) != TPKT_HEADER:
        raise X224Error(f"short TPKT header: {preview(header)}")
    version, _reserved, length = struct.unpack(">BBH", header)
    if version != TPKT_VERSION:
        raise X224Error(f"not a TPKT reply (version {version}, expected 3): {preview(header)}")
    if not TPKT_HEADER + 7 <= length <= MAX_TPKT_LENGTH:
        raise X224Error(f"TPKT length {length} cannot hold an X.224 Connection Confirm")
    return int(length)


def parse_confirm(tpdu: bytes) -> ConnectionConfirm:
    """The X.224 TPDU after the TPKT header, as a Connection Confirm, or X224Error."""
    if len(tpdu) < 7:
        raise X224Error(f"X.224 TPDU too short ({len(tpdu)} bytes): {preview(tpdu)}")
    indicator, code = tpdu[0], tpdu[1]
    if indicator != len(tpdu) - 1:
        raise X224Error(f"X.224 length indicator {indicator} does not match {len(tpdu) - 1}")
    if code & 0xF0 != X224_CONNECTION_CONFIRM:
        raise X224Error(f"X.224 TPDU code 0x{code:02X}, expected a Connection Confirm (0xD0)")
    negotiation = tpdu[7:]
    if not negotiation:
        return ConnectionConfirm()
    if len(negotiation) != 8:
        raise X224Error(f"RDP negotiation data of {len(negotiation)} bytes, expected 8")
    kind, _flags, length, value = struct.unpack("<BBHI", negotiation)
    if length != 8:
        raise X224Error(f"RDP negotiation length {length}, expected 8")
    if kind == TYPE_RDP_NEG_RSP:
        return ConnectionConfirm(selected_protocol=value)
    if kind == TYPE_RDP_NEG_FAILURE:
        return ConnectionConfirm(failure_code=value)
    raise X224Error(f"RDP negotiation type {kind}, expected a response (2) or failure (3)")


async def probe(
    target: Target,
    spec: RdpSpec,
    timeout: float,  # noqa: ASYNC109
) -> ProbeResult:
    request = connection_request(spec.requested_protocols, spec.cookie)

    async def check(step: Step) -> None:
        async with stream(step) as (reader, writer):
            step.doing = f"sending the X.224 Connection Request to {target}"
            writer.write(request)
            await writer.drain()
            step.doing = f"waiting for the X.224 Connection Confirm from {target}"
            header = await _read_up_to(reader, TPKT_HEADER)
            if not header:
                raise ProbeFailed(f"{target} closed the connection without an X.224 reply")
            try:
                length = tpkt_length(header)
                tpdu = await _read_up_to(reader, length - TPKT_HEADER)
                if len(tpdu) < length - TPKT_HEADER:
                    raise X224Error(
                        f"reply cut short after {TPKT_HEADER + len(tpdu)} of {length} bytes"
                    )
                parse_confirm(tpdu)
            except X224Error as exc:
                raise ProbeFailed(f"bad X.224 reply from {target}: {exc}") from exc

    return await guarded(target, timeout, check)


async def _read_up_to(reader: asyncio.StreamReader, count: int) -> bytes:
    """Up to count bytes: fewer only when the peer closed the connection."""
    data = b""
    while len(data) < count:
        chunk = await reader.read(count - len(data))
        if not chunk:
            break
        data += chunk
    return data
