"""The probes' pure parts: X.224 and SMTP codecs, expect matching, status ranges, verdicts."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest

from checks.probes import exchange, rdp, script, smtp, tcp
from checks.probes.http import HttpSpec, body_problem, describe_ranges, status_ok
from checks.probes.result import ProbeResult, Target
from checks.regex import Regex


def test_x224_connection_request_layout() -> None:
    """[MS-RDPBCGR] 2.2.1.1: TPKT(3, 0, len) + X.224 CR (LI, 0xE0, refs, class) + RDP_NEG_REQ."""
    request = rdp.connection_request(rdp.PROTOCOL_SSL | rdp.PROTOCOL_HYBRID)
    assert request == bytes.fromhex("030000130ee000000000000100080003000000")
    with_cookie = rdp.connection_request(rdp.PROTOCOL_SSL, "alice")
    cookie = b"Cookie: mstshash=alice\r\n"
    assert struct.unpack(">H", with_cookie[2:4])[0] == len(with_cookie) == 19 + len(cookie)
    assert with_cookie[4] == len(with_cookie) - 5
    assert with_cookie[11 : 11 + len(cookie)] == cookie


@pytest.mark.parametrize(
    ("tpdu", "confirm"),
    [
        ("06d00000123400", rdp.ConnectionConfirm()),
        ("0ed000001234000201080001000000", rdp.ConnectionConfirm(selected_protocol=1)),
        ("0ed000001234000300080005000000", rdp.ConnectionConfirm(failure_code=5)),
    ],
)
def test_x224_connection_confirm(tpdu: str, confirm: rdp.ConnectionConfirm) -> None:
    assert rdp.parse_confirm(bytes.fromhex(tpdu)) == confirm


@pytest.mark.parametrize(
    ("tpdu", "reason"),
    [
        ("06d000001234", "too short"),
        ("07d00000123400", "length indicator 7 does not match 6"),
        ("06e00000123400", "code 0xE0, expected a Connection Confirm"),
        ("0ad0000012340002010800", "negotiation data of 4 bytes"),
        ("0ed000001234000901080001000000", "negotiation type 9"),
        ("0ed000001234000201090001000000", "negotiation length 9, expected 8"),
    ],
)
def test_x224_bad_confirms(tpdu: str, reason: str) -> None:
    with pytest.raises(rdp.X224Error, match=reason):
        rdp.parse_confirm(bytes.fromhex(tpdu))


def test_tpkt_header() -> None:
    assert rdp.tpkt_length(bytes.fromhex("03000013")) == 19
    for header, reason in (
        ("0300", "short"),
        ("16030100", "not a TPKT reply"),
        ("03000004", "length 4"),
    ):
        with pytest.raises(rdp.X224Error, match=reason):
            rdp.tpkt_length(bytes.fromhex(header))


def test_rdp_spec_validation() -> None:
    with pytest.raises(ValueError, match="cookie"):
        rdp.RdpSpec(cookie="a\r\nb")
    with pytest.raises(ValueError, match="32 bits"):
        rdp.RdpSpec(requested_protocols=1 << 32)


def test_smtp_reply_lines() -> None:
    assert smtp.parse_line(b"220 mail.test ESMTP\r\n") == (220, True, "mail.test ESMTP")
    assert smtp.parse_line(b"250-STARTTLS\r\n") == (250, False, "STARTTLS")
    assert smtp.parse_line(b"250\r\n") == (250, True, "")
    for bad in (b"hello\r\n", b"25\r\n", b"250_x\r\n", b"650 x\r\n"):
        with pytest.raises(smtp.SmtpSyntaxError):
            smtp.parse_line(bad)
    reply = smtp.parse_reply([b"250-mail.test\r\n", b"250-SIZE 1000\r\n", b"250 starttls\r\n"])
    assert reply == smtp.Reply(250, ("mail.test", "SIZE 1000", "starttls"))
    assert smtp.offers(reply, "STARTTLS")
    assert not smtp.offers(smtp.Reply(250, ("STARTTLS greeting",)), "STARTTLS")
    with pytest.raises(smtp.SmtpSyntaxError, match="different codes"):
        smtp.parse_reply([b"250-a\r\n", b"251 b\r\n"])
    with pytest.raises(ValueError, match="helo_name"):
        smtp.SmtpSpec(helo_name="bad name")


def test_tcp_expect_matching() -> None:
    assert tcp.matches(b"+OK", b"+OK POP3 ready\r\n")
    assert not tcp.matches(b"+OK", b"-ERR\r\n")
    assert tcp.matches(Regex(rb"^SSH-2\.0-"), b"SSH-2.0-OpenSSH_9.2\r\n")
    assert tcp.matches(b"", b"x") and not tcp.matches(b"", b"")
    assert tcp.describe_expect(b"") == "(any reply)"
    assert tcp.describe_expect(Regex(rb"^\+OK")) == r"matching /^\+OK/"
    with pytest.raises(ValueError, match="read_bytes"):
        tcp.TcpSpec(read_bytes=0)


def test_http_status_ranges_and_body() -> None:
    assert status_ok(204, ((200, 299),)) and not status_ok(302, ((200, 299),))
    assert describe_ranges(((200, 299), (302, 302))) == "200-299, 302"
    spec = HttpSpec(body_contains="OK", body_regex=Regex(r"v\d"))
    assert body_problem(spec, "OK v2") is None
    assert body_problem(spec, "v2") == "does not contain 'OK'"
    assert body_problem(spec, "OK") == r"does not match /v\d/"


def test_http_sni_defaults_to_the_host_name() -> None:
    assert HttpSpec(host="mail.test").sni == "mail.test"
    assert HttpSpec(host="mail.test:8443").sni == "mail.test"
    assert HttpSpec(host="mail.test", server_name="other.test").sni == "other.test"
    assert HttpSpec(host="[2001:db8::1]:443").sni is None
    assert HttpSpec().sni is None


def test_exchange_verdict() -> None:
    up, down = ProbeResult(True, 0.1, None), ProbeResult(False, 0.1, "HTTP 503 from x /ecp/...")
    assert exchange.verdict("all", {"owa": up, "ecp": up}) is None
    assert exchange.verdict("any", {"owa": up, "ecp": down}) is None
    assert exchange.verdict("all", {"owa": up, "ecp": down}) == (
        "1 of 2 Exchange vdirs down (ecp; all must be up): HTTP 503 from x /ecp/..."
    )
    assert "none is up" in str(exchange.verdict("any", {"owa": down}))


def test_script_helpers() -> None:
    target = Target(ip_address("2001:db8::5"), 25)
    assert script.command_line(("/c", "{address}", "--port={port}", "{other}"), target) == [
        "/c",
        "2001:db8::5",
        "--port=25",
        "{other}",
    ]
    assert script.verdict(0, False) == (True, None)
    assert script.verdict(3, False) == (False, None)
    assert script.verdict(3, True) == (True, 3)
    assert script.verdict(255, True) == (False, None)
    assert script.verdict(-9, True) == (False, None)
    assert script.describe_exit("/c", -9, "") == "check /c killed by SIGKILL (no output)"
    with pytest.raises(ValueError, match="argv"):
        script.ScriptSpec(())


def test_target_text() -> None:
    assert str(Target(ip_address("198.18.0.1"), 80)) == "198.18.0.1:80"
    assert str(Target(ip_address("2001:db8::1"), 443)) == "[2001:db8::1]:443"
