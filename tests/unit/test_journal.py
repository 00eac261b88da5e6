"""director.journal: the native protocol's encoder, the sender, and stderr-is-the-journal."""

from __future__ import annotations

import errno
import ipaddress
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director import journal
from director.config.model import DaemonSettings
from director.daemon import parse_args
from tests.helpers.journal import JournalSocket, decode, entry


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[JournalSocket]:
    sock = JournalSocket(tmp_path / "socket")
    yield sock
    sock.close()


# -- the encoder ----------------------------------------------------------------------------------


def test_simple_and_binary_forms_round_trip() -> None:
    values = {
        "plain": "sync_done",
        "empty": "",
        "unicode": "ünïcødé ✓ 日本",
        "equals": "a=b=c",
        "nul": "a\0b",
        "lines": "Traceback (most recent call last):\n  ...\nValueError: boom",
        "trailing": "one line\n",
        "newline": "\n",
        "surrogate": "bad \udcff byte",
    }
    datagram = journal.encode(values, "the line")
    fields = decode(datagram)

    assert fields[:3] == [
        ("MESSAGE", b"the line"),
        ("PRIORITY", b"6"),
        ("SYSLOG_IDENTIFIER", b"directord"),
    ]
    assert dict(fields[3:]) == {
        "PLAIN": b"sync_done",
        "EMPTY": b"",
        "UNICODE": "ünïcødé ✓ 日本".encode(),
        "EQUALS": b"a=b=c",
        "NUL": b"a\0b",
        "LINES": b"Traceback (most recent call last):\n  ...\nValueError: boom",
        "TRAILING": b"one line\n",
        "NEWLINE": b"\n",
        "SURROGATE": b"bad \\udcff byte",
    }
    # the binary form, byte for byte: name, newline, 64-bit little-endian length, value, newline
    assert b"\nNEWLINE\n" + struct.pack("<Q", 1) + b"\n\n" in datagram
    assert b"\nEQUALS=a=b=c\n" in datagram


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("instance", "INSTANCE"),
        ("source_priority", "SOURCE_PRIORITY"),
        ("source-ip", "SOURCE_IP"),
        ("a.b c", "A_B_C"),
        ("_private", "FIELD__PRIVATE"),
        ("2xx", "FIELD_2XX"),
        ("", "FIELD_"),
        ("ünï", "FIELD__N_"),
        ("straße", "STRASSE"),
        ("x" * 100, "X" * 64),
        ("priority", "PRIORITY_"),  # VRRP's priority is not syslog's
        ("message", "MESSAGE_"),
        ("syslog_identifier", "SYSLOG_IDENTIFIER_"),
        ("unit", "UNIT_"),
        ("event", "EVENT"),
    ],
)
def test_field_names(key: str, name: str) -> None:
    assert journal.field_name(key) == name


class _NoStr:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_values_as_text() -> None:
    loop: list[object] = []
    loop.append(loop)
    cases: list[tuple[object, str]] = [
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (3, "3"),
        (1.5, "1.5"),
        (["198.18.0.10", 2], '["198.18.0.10", 2]'),
        ({"a": (1, "ü")}, '{"a": [1, "ü"]}'),
        ({(1, 2): 3}, "{(1, 2): 3}"),  # keys JSON cannot have: str()
        (loop, "[[...]]"),
        (ipaddress.ip_address("198.18.0.10"), "198.18.0.10"),
        (b"\x01", "b'\\x01'"),
        (_NoStr(), "<_NoStr without str()>"),
    ]
    assert [journal.text(value) for value, _ in cases] == [expected for _, expected in cases]


@pytest.mark.parametrize(
    ("level", "priority"),
    [("debug", 7), ("info", 6), ("warning", 4), ("error", 3), ("critical", 2), ("level 5", 6)],
)
def test_priority_follows_the_level(level: str, priority: int) -> None:
    fields = entry(journal.encode({"level": level, "event": "x"}, "x"))
    assert (fields["PRIORITY"], fields["LEVEL"]) == (str(priority), level)


_VALUES = st.one_of(
    st.text(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(),
    st.lists(st.text()),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), _VALUES, max_size=8), st.text())
def test_every_event_makes_a_valid_datagram(event: dict[str, object], message: str) -> None:
    fields = decode(journal.encode(event, message))  # asserts every name valid, every length
    assert fields[0] == ("MESSAGE", message.encode("utf-8", "backslashreplace"))
    assert [value for _, value in fields[3:]] == [
        journal.text(v).encode("utf-8", "backslashreplace") for v in event.values()
    ]


# -- the sender -----------------------------------------------------------------------------------


def test_the_sender_sends_one_datagram_per_record(receiver: JournalSocket) -> None:
    sender = journal.Sender(receiver.path)
    try:
        assert sender.send(b"MESSAGE=one\n")
        assert sender.send(b"MESSAGE=two\n")
    finally:
        sender.close()
    assert receiver.receive() == [b"MESSAGE=one\n", b"MESSAGE=two\n"]
    assert sender.failures == 0


def test_a_datagram_too_large_goes_in_a_sealed_memfd(receiver: JournalSocket) -> None:
    # larger than any send buffer the sender can get (SO_SNDBUF doubles what it is asked for)
    big = journal.field("EXCEPTION", "x" * (2 * journal.SNDBUF) + "\nend")
    sender = journal.Sender(receiver.path)
    try:
        assert sender.send(b"MESSAGE=small\n")
        assert sender.send(big)
    finally:
        sender.close()
    assert receiver.receive() == [b"MESSAGE=small\n", big]  # the memfd is checked sealed
    assert sender.failures == 0


def test_a_missing_socket_is_a_counted_failure(tmp_path: Path) -> None:
    sender = journal.Sender(str(tmp_path / "no-journal"))
    try:
        assert not sender.send(b"MESSAGE=lost\n")
        assert not sender.send(b"MESSAGE=lost\n")
    finally:
        sender.close()
    assert sender.failures == 2
    assert sender.last_error is not None and sender.last_error.errno == errno.ENOENT


def test_a_full_journal_never_blocks_the_sender(receiver: JournalSocket) -> None:
    sender = journal.Sender(receiver.path)
    try:
        sent = [sender.send(b"MESSAGE=%d\n" % i) for i in range(2000)]  # nobody reads
    finally:
        sender.close()
    assert sent.count(False) == sender.failures > 0
    assert sender.last_error is not None and sender.last_error.errno == errno.EAGAIN
    assert len(receiver.receive()) == sent.count(True)


# -- detection ------------------------------------------------------------------------------------


def test_a_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        named = f"{st.st_dev}:{st.st_ino}"
        assert journal.is_journal_stream(stream.fileno(), named)
        assert not journal.is_journal_stream(other.fileno(), named)
        for wrong in [None, "", "garbage", f"{st.st_dev}", f"{st.st_dev}:{st.st_ino}:0"]:
            assert not journal.is_journal_stream(stream.fileno(), wrong)
        closed = os.dup(stream.fileno())
        os.close(closed)
        assert not journal.is_journal_stream(closed, named)


# -- the format's name ----------------------------------------------------------------------------


def test_the_journal_format_is_accepted_by_the_daemon_and_the_config() -> None:
    assert parse_args(["--log-format", "journal"]).log_format == "journal"
    assert DaemonSettings(log_format="journal").log_format == "journal"
