"""director.logs: one pipeline for structlog and the standard library, repeats held back."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.stdlib import ProcessorFormatter

from director import logs
from tests.helpers.journal import JournalSocket
from tests.helpers.journal import entry as decode_entry

LEAD = ["timestamp", "level", "event", "logger"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging from scratch; leave the process as the test found it."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if isinstance(handler.formatter, ProcessorFormatter):
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


class Clock:
    """A stepped monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    lines = out.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


_PAIR = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?: |$)')
_ESCAPE = re.compile(r"\\(.)")


def logfmt(line: str) -> dict[str, str]:
    """``key=value`` pairs, a value quoted when it has a space, ``=`` or ``"``; the whole line."""
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        match = _PAIR.match(line, pos)
        assert match is not None, f"not logfmt from column {pos}: {line!r}"
        value = match[2]
        if value.startswith('"'):
            value = value[1:-1]
        pairs[match[1]] = _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], value)
        pos = match.end()
    return pairs


def logfmt_lines(out: io.StringIO) -> list[dict[str, str]]:
    return [logfmt(line) for line in out.getvalue().splitlines()]


def is_utc_iso(timestamp: str) -> bool:
    return datetime.fromisoformat(timestamp).utcoffset() == timedelta(0)


def without_timestamps(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert all(is_utc_iso(line.pop("timestamp")) for line in lines)
    return lines


# -- one pipeline ---------------------------------------------------------------------------------


def test_structlog_and_stdlib_lines_are_the_same_json() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    structlog.get_logger("director").info("sync_done", services=2, reason="timer")
    logging.getLogger("some.lib").warning("x %s", 1, extra={"k": "v"})

    lines = json_lines(out)
    assert [list(line)[:4] for line in lines] == [LEAD, LEAD]
    assert without_timestamps(lines) == [
        {
            "level": "info",
            "event": "sync_done",
            "logger": "director",
            "services": 2,
            "reason": "timer",
        },
        {"level": "warning", "event": "x 1", "logger": "some.lib", "k": "v"},
    ]


def test_structlog_and_stdlib_lines_are_the_same_logfmt() -> None:
    out = io.StringIO()
    logs.configure("logfmt", "info", stream=out)
    structlog.get_logger("director").info("sync_done", path="/etc/a b", note='say "hi"\nbye')
    logging.getLogger("some.lib").warning("x %s", 1, extra={"k": "v"})

    lines = logfmt_lines(out)
    assert [list(line)[:4] for line in lines] == [LEAD, LEAD]
    assert without_timestamps(lines) == [
        {
            "level": "info",
            "event": "sync_done",
            "logger": "director",
            "path": "/etc/a b",
            "note": 'say "hi"\nbye',
        },
        {"level": "warning", "event": "x 1", "logger": "some.lib", "k": "v"},
    ]


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_a_stdlib_exception_is_inside_its_line(fmt: logs.LogFormat) -> None:
    out = io.StringIO()
    logs.configure(fmt, "info", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("vrrp.instance").exception("VRRP vrid %d: performing %s", 7, "garp")

    [line] = json_lines(out) if fmt == "json" else logfmt_lines(out)
    assert line["event"] == "VRRP vrid 7: performing garp"
    assert (line["level"], line["logger"]) == ("error", "vrrp.instance")
    assert line["exception"].startswith("Traceback (most recent call last):\n")
    assert line["exception"].endswith("ValueError: boom")


def test_asyncio_unretrieved_task_exception_is_one_json_line() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    loop = asyncio.new_event_loop()
    try:
        raise RuntimeError("probe task died")
    except RuntimeError as exc:
        error = exc
    try:
        loop.call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": error}
        )
    finally:
        loop.close()

    [line] = json_lines(out)
    assert line["logger"] == "asyncio"
    assert line["event"] == "Task exception was never retrieved"
    assert "RuntimeError: probe task died" in line["exception"]


def test_warnings_reach_the_stream_formatted() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("interval below 1 s", UserWarning, stacklevel=1)

    [line] = json_lines(out)
    assert (line["level"], line["logger"]) == ("warning", "py.warnings")
    assert "UserWarning: interval below 1 s" in line["event"]
    assert not line["event"].endswith("\n")


def test_one_level_filters_both_and_a_second_configure_replaces_the_first() -> None:
    first = io.StringIO()
    logs.configure("json", "warning", stream=first)
    slog, lib = structlog.get_logger("director"), logging.getLogger("pyroute2.ipvs")
    slog.info("hidden")
    lib.info("hidden")
    slog.warning("shown")
    lib.warning("shown")
    assert [(line["logger"], line["event"]) for line in json_lines(first)] == [
        ("director", "shown"),
        ("pyroute2.ipvs", "shown"),
    ]

    second = io.StringIO()
    logs.configure("logfmt", "debug", stream=second)
    slog.debug("now shown")
    lib.debug("now shown")
    lib.warning("once")
    assert len(first.getvalue().splitlines()) == 2  # the first handler is gone
    assert [(line["logger"], line["event"]) for line in logfmt_lines(second)] == [
        ("director", "now shown"),
        ("pyroute2.ipvs", "now shown"),
        ("pyroute2.ipvs", "once"),
    ]


def test_a_library_logger_set_lower_is_still_filtered() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    chatty = logging.getLogger("chatty.lib")
    chatty.setLevel(logging.DEBUG)
    try:
        chatty.debug("every packet")
    finally:
        chatty.setLevel(logging.NOTSET)
    assert out.getvalue() == ""


def test_an_unrenderable_record_is_one_line_in_the_format() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    root = logging.getLogger()
    others = [h for h in root.handlers if not isinstance(h.formatter, ProcessorFormatter)]
    for handler in others:  # pytest's own capture fails the test on a bad record
        root.removeHandler(handler)
    try:
        logging.getLogger("vrrp.link").warning("link %d", "eth0")
    finally:
        for handler in others:
            root.addHandler(handler)

    [line] = json_lines(out)
    assert (line["event"], line["logger"]) == ("log_record_unrenderable", "vrrp.link")
    assert "'link %d'" in line["msg"]
    assert "TypeError" in line["error"]


def test_configure_rejects_an_unknown_level_or_format() -> None:
    with pytest.raises(ValueError, match="loud"):
        logs.configure("json", "loud")
    with pytest.raises(ValueError, match="text"):
        logs.configure("text", "info")  # type: ignore[arg-type]


# -- repeats ----------------------------------------------------------------------------------


def test_repeated_errors_are_held_back_and_counted() -> None:
    out, clock = io.StringIO(), Clock()
    logs.configure("json", "info", stream=out, clock=clock, window=60.0)
    log = structlog.get_logger("director")
    for _ in range(5):
        log.error("sync_failed", reason="resync", error="No such file or directory")
        clock.now += 1.0
    assert len(json_lines(out)) == 1

    clock.now += 60.0
    log.error("sync_failed", reason="resync", error="No such file or directory")
    lines = json_lines(out)
    assert [line.get("repeated") for line in lines] == [None, 4]
    assert all(line["error"] == "No such file or directory" for line in lines)


def test_different_fields_levels_and_loggers_are_not_merged() -> None:
    out, clock = io.StringIO(), Clock()
    logs.configure("logfmt", "info", stream=out, clock=clock)
    log = structlog.get_logger("director")
    for _ in range(3):
        log.error("sync_failed", error="EEXIST")
        log.error("sync_failed", error="ENOENT")
        log.warning("sync_failed", error="EEXIST")
        structlog.get_logger("director.checks").error("sync_failed", error="EEXIST")
    assert [(line["logger"], line["level"], line["error"]) for line in logfmt_lines(out)] == [
        ("director", "error", "EEXIST"),
        ("director", "error", "ENOENT"),
        ("director", "warning", "EEXIST"),
        ("director.checks", "error", "EEXIST"),
    ]


def test_stdlib_repeats_are_held_back_by_message_extra_and_exception() -> None:
    out, clock = io.StringIO(), Clock()
    logs.configure("json", "info", stream=out, clock=clock)
    lib = logging.getLogger("vrrp.transport")
    for text in ["buffer full", "buffer full", "buffer full", "no route"]:
        try:
            raise OSError(text)
        except OSError:
            lib.exception("receiving VRRP on %s", "eth0", extra={"vrid": 7})
    lib.warning("receiving VRRP on %s", "eth1", extra={"vrid": 7})
    lib.warning("receiving VRRP on %s", "eth1", extra={"vrid": 8})
    lines = json_lines(out)
    assert [(line["event"], line["vrid"], "exception" in line) for line in lines] == [
        ("receiving VRRP on eth0", 7, True),
        ("receiving VRRP on eth0", 7, True),  # another exception message
        ("receiving VRRP on eth1", 7, False),
        ("receiving VRRP on eth1", 8, False),
    ]
    assert lines[0]["exception"].endswith("OSError: buffer full")
    assert lines[1]["exception"].endswith("OSError: no route")

    logs.flush()
    [count] = json_lines(out)[4:]
    assert (count["event"], count["logger"], count["repeated"]) == (
        "receiving VRRP on eth0",
        "vrrp.transport",
        2,
    )
    assert count["exception"] == "OSError: buffer full"


def test_info_and_debug_lines_are_never_held_back() -> None:
    out = io.StringIO()
    logs.configure("json", "debug", stream=out, clock=Clock())
    log, lib = structlog.get_logger("director"), logging.getLogger("aiohttp.access")
    for _ in range(3):
        log.info("hook_output", line="same")
        log.debug("probe", target="a")
        lib.info("GET /metrics 200")
    assert len(json_lines(out)) == 9


def test_an_ended_window_is_reported_with_the_next_line() -> None:
    out, clock = io.StringIO(), Clock()
    logs.configure("json", "info", stream=out, clock=clock, window=10.0)
    log = structlog.get_logger("director")
    for _ in range(3):
        log.warning("status_write_failed", error="ENOSPC")
    clock.now += 9.0
    log.info("sync_done")  # the window is still open: nothing to report yet
    clock.now += 1.0
    log.info("sync_done")

    lines = json_lines(out)
    assert [(line["event"], line.get("repeated")) for line in lines] == [
        ("status_write_failed", None),
        ("sync_done", None),
        ("status_write_failed", 2),
        ("sync_done", None),
    ]
    assert (lines[2]["level"], lines[2]["error"]) == ("warning", "ENOSPC")


def test_flush_writes_the_counts_still_held() -> None:
    out, clock = io.StringIO(), Clock()
    logs.configure("logfmt", "info", stream=out, clock=clock)
    log = structlog.get_logger("director")
    for _ in range(4):
        log.error("hook_failed", hook="notify_master", error="ENOENT")
    log.error("listen_failed", what="metrics")  # nothing held back: no count line
    logs.flush()

    lines = logfmt_lines(out)
    assert [(line["event"], line.get("repeated")) for line in lines] == [
        ("hook_failed", None),
        ("listen_failed", None),
        ("hook_failed", "3"),
    ]
    assert (lines[2]["hook"], lines[2]["error"], lines[2]["level"]) == (
        "notify_master",
        "ENOENT",
        "error",
    )
    logs.flush()
    assert len(out.getvalue().splitlines()) == 3  # counted once


def test_reconfiguring_writes_the_counts_held_by_the_old_handler() -> None:
    old, clock = io.StringIO(), Clock()
    logs.configure("json", "info", stream=old, clock=clock)
    for _ in range(3):
        structlog.get_logger("director").error("sync_failed", error="x")
    logs.configure("json", "info", stream=io.StringIO(), clock=clock)
    assert [line.get("repeated") for line in json_lines(old)] == [None, 2]


def test_the_oldest_key_is_forgotten_first_and_its_count_reported() -> None:
    out, clock = io.StringIO(), Clock()
    logs.configure("json", "info", stream=out, clock=clock, max_keys=2)
    log = structlog.get_logger("director")
    for name in ["a", "a", "b", "b", "c"]:
        log.error("probe_failed", target=name)
        clock.now += 1.0
    assert [(line["target"], line.get("repeated")) for line in json_lines(out)] == [
        ("a", None),
        ("b", None),
        ("a", 1),  # a's window was closed to make room for c
        ("c", None),
    ]


# -- the limiter itself -----------------------------------------------------------------------


def test_repeats_memory_is_bounded() -> None:
    repeats: logs.Repeats[str] = logs.Repeats(window=60.0, max_keys=3)
    for i in range(100):
        for _ in range(2):
            repeats.seen(i, f"sample {i}", now=float(i) / 100)
        assert len(repeats) <= 3 + 1  # open windows plus the counts not yet handed out
        assert repeats.due(now=float(i) / 100) == ([(f"sample {i - 3}", 1)] if i >= 3 else [])
    assert repeats.drain() == [("sample 97", 1), ("sample 98", 1), ("sample 99", 1)]
    assert len(repeats) == 0


def test_repeats_windows() -> None:
    repeats: logs.Repeats[str] = logs.Repeats(window=10.0)
    assert repeats.seen("k", "s", now=0.0) == 0
    assert repeats.seen("k", "s", now=9.9) is None
    assert repeats.due(now=9.9) == []
    assert repeats.seen("k", "s", now=10.0) == 1  # the next window opens here
    assert repeats.seen("k", "s", now=15.0) is None
    assert repeats.due(now=19.9) == []
    assert repeats.due(now=20.0) == [("s", 1)]
    assert repeats.seen("k", "s", now=20.0) == 0  # the count went out with due()
    assert repeats.due(now=30.0) == []  # nothing held back: forgotten silently
    assert len(repeats) == 0


@pytest.mark.parametrize(("window", "max_keys"), [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_repeats_rejects_nonsense(window: float, max_keys: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        logs.Repeats(window, max_keys)


# -- the journal ----------------------------------------------------------------------------------


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[JournalSocket]:
    """A datagram socket standing in for journald's."""
    sock = JournalSocket(tmp_path / "journal.socket")
    yield sock
    sock.close()


def test_structlog_and_stdlib_records_reach_the_journal_as_fields(journald: JournalSocket) -> None:
    out = io.StringIO()
    logs.configure("journal", "info", stream=out, journal_socket=journald.path)
    structlog.get_logger("vrrp").info(
        "vrrp_transition", instance="VI_1", vrid=51, previous="backup", state="master", priority=150
    )
    structlog.get_logger("director").warning(
        "health_changed", service="TCP 198.18.0.10:443", destination="198.18.1.2:443", up=False
    )
    logging.getLogger("vrrp.transport").error("receiving on %s", "eth0", extra={"instance": "VI_2"})

    entries = journald.entries()
    assert out.getvalue() == ""
    for entry in entries:
        line = logfmt(entry.pop("MESSAGE"))  # the logfmt line, its own fields as fields
        assert line == {
            "timestamp": entry["TIMESTAMP"],
            "level": entry["LEVEL"],
            "event": entry["EVENT"],
            "logger": entry["LOGGER"],
            **{k: v for k, v in line.items() if k not in LEAD},
        }
        assert is_utc_iso(entry.pop("TIMESTAMP"))
        assert entry.pop("SYSLOG_IDENTIFIER") == "directord"
    assert entries == [
        {
            "PRIORITY": "6",
            "LEVEL": "info",
            "EVENT": "vrrp_transition",
            "LOGGER": "vrrp",
            "INSTANCE": "VI_1",
            "VRID": "51",
            "PREVIOUS": "backup",
            "STATE": "master",
            "PRIORITY_": "150",  # VRRP's priority, not the syslog one
        },
        {
            "PRIORITY": "4",
            "LEVEL": "warning",
            "EVENT": "health_changed",
            "LOGGER": "director",
            "SERVICE": "TCP 198.18.0.10:443",
            "DESTINATION": "198.18.1.2:443",
            "UP": "false",
        },
        {
            "PRIORITY": "3",
            "LEVEL": "error",
            "EVENT": "receiving on eth0",
            "LOGGER": "vrrp.transport",
            "INSTANCE": "VI_2",
        },
    ]


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
@pytest.mark.parametrize("journal_stream", ["stderr", "another file", None])
def test_lines_go_to_the_journal_when_stderr_is_the_journal(
    fmt: logs.LogFormat,
    journal_stream: str | None,
    journald: JournalSocket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """systemd names the file it connected to stderr in $JOURNAL_STREAM; a child's stderr may
    be something else (a pipe) with the variable inherited."""
    with open(tmp_path / "stderr", "w") as stderr, open(tmp_path / "other", "w") as other:
        named = {"stderr": stderr, "another file": other}.get(journal_stream or "")
        if named is None:
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        else:
            st = os.fstat(named.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.configure(fmt, "info", stream=stderr, journal_socket=journald.path)
        structlog.get_logger("director").info("synced", reason="timer")

    messages = [entry["MESSAGE"] for entry in journald.entries()]
    lines = (tmp_path / "stderr").read_text().splitlines()
    assert (len(messages), len(lines)) == ((1, 0) if journal_stream == "stderr" else (0, 1))
    [line] = messages + lines  # the same line either way
    parsed = json.loads(line) if fmt == "json" else logfmt(line)
    assert (parsed["event"], parsed["reason"], list(parsed)[:4]) == ("synced", "timer", LEAD)


def test_repeats_reach_the_journal_with_repeated(journald: JournalSocket) -> None:
    clock = Clock()
    logs.configure(
        "journal", "info", stream=io.StringIO(), clock=clock, journal_socket=journald.path
    )
    log = structlog.get_logger("director")
    for _ in range(4):
        log.error("sync_failed", error="ENOENT")
    clock.now += 60.0
    log.error("sync_failed", error="ENOENT")
    log.error("sync_failed", error="ENOENT")
    logs.flush()

    entries = journald.entries()
    assert [(e["EVENT"], e["ERROR"], e.get("REPEATED")) for e in entries] == [
        ("sync_failed", "ENOENT", None),
        ("sync_failed", "ENOENT", "3"),
        ("sync_failed", "ENOENT", "1"),  # held back, then written by flush()
    ]
    assert all(e["PRIORITY"] == "3" for e in entries)
    assert "repeated=3" in entries[1]["MESSAGE"]


def test_a_traceback_is_one_field_in_the_binary_form(journald: JournalSocket) -> None:
    logs.configure("journal", "info", stream=io.StringIO(), journal_socket=journald.path)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("vrrp").exception("vrrp_advert_handler_failed", interface="eth0")

    [datagram] = journald.receive()
    assert b"\nEXCEPTION\n" in datagram  # multi-line: name, length, value
    [entry] = [decode_entry(datagram)]
    assert entry["EXCEPTION"].startswith("Traceback (most recent call last):\n")
    assert entry["EXCEPTION"].endswith("ValueError: boom")
    assert "\n" not in entry["MESSAGE"]  # the logfmt line escapes it
    assert (entry["LEVEL"], entry["PRIORITY"], entry["INTERFACE"]) == ("error", "3", "eth0")


def test_without_a_journal_the_lines_go_to_the_stream_and_are_counted(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.configure("journal", "info", stream=out, journal_socket=str(tmp_path / "missing"))
    structlog.get_logger("director").info("synced", services=2)
    logging.getLogger("aiohttp.access").warning("GET /metrics 500")

    assert [(line["event"], line["logger"]) for line in logfmt_lines(out)] == [
        ("synced", "director"),
        ("GET /metrics 500", "aiohttp.access"),
    ]
    assert logs.journal_failures() == 2


def test_a_flooded_journal_loses_nothing(journald: JournalSocket) -> None:
    out = io.StringIO()
    logs.configure("journal", "info", stream=out, journal_socket=journald.path)
    for i in range(2000):  # nobody reads: the socket fills up
        structlog.get_logger("director").info("probe", n=i)

    to_stream = [int(line["n"]) for line in logfmt_lines(out)]
    to_journal = [int(entry["N"]) for entry in journald.entries()]
    assert len(to_stream) == logs.journal_failures() > 0
    assert sorted(to_stream + to_journal) == list(range(2000))
