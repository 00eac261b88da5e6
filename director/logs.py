"""Logging: one pipeline for structlog and the standard library, one JSON or logfmt line per event,
or one journal entry with the event's fields.

structlog loggers (``structlog.get_logger("director")``) hand their event dict to the standard
library (``ProcessorFormatter.wrap_for_formatter``). Every record then goes through one handler on
the root logger, whoever made it: the daemon's structlog loggers, ``vrrp/``'s ``logging``
loggers, aiohttp, asyncio ("Task exception was never retrieved"), pyroute2, and ``warnings.warn``
(``logging.captureWarnings``). Its :class:`structlog.stdlib.ProcessorFormatter` renders each as
one line that starts ``timestamp`` (ISO 8601, UTC), ``level``, ``event``, ``logger``, followed by
the event's fields (a standard record's ``extra`` fields; its ``%`` args are formatted into
``event``) and, where there is one, the traceback in ``exception`` (escaped, inside the line).

When stderr is the journal (systemd's ``$JOURNAL_STREAM`` names it), or with the ``journal``
format, each record goes to journald natively instead (:mod:`director.journal`): the same line
as ``MESSAGE`` (logfmt for ``journal``), and each key as a field of its own (``LEVEL``,
``EVENT``, ``LOGGER``, ``INSTANCE``, ``REPEATED`` ...) with the syslog ``PRIORITY``. A record
journald does not take (its socket missing or full) is written to stderr as the line, and
counted (:func:`journal_failures`).

One level filters both: structlog's filtering bound logger drops lines below it before any work
is done (a disabled ``log.debug`` costs a dict lookup and a no-op call, about 2 us), and the
root logger and the handler drop the standard library's.

The handler rate-limits repeats (:class:`Repeats`): a warning or error logged again with the same
logger, level, event and fields within ``window`` seconds is counted, not written; the next
occurrence after the window carries ``repeated=N``, and a window that ends with repeats counted
and no new occurrence is reported as its own line (with the next line logged, or by
:func:`flush` at stop). Info and debug lines are never held back.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TextIO, TypeVar

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from director import journal

LogFormat = Literal["json", "logfmt", "journal"]
LineFormat = Literal["json", "logfmt"]

LEAD = ("timestamp", "level", "event", "logger")
"""The keys every line starts with, in this order."""

WINDOW = 60.0
"""Seconds during which repeats of a warning or error are counted instead of written."""

MAX_KEYS = 256
"""Distinct warnings and errors remembered at once; the oldest is forgotten first."""

_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "_logger", "_name"}
)
_NOT_DISTINCT = frozenset({"event", "timestamp", "exc_info", "stack_info"})

S = TypeVar("S")


# -- the rate limiter (pure: no clock, no I/O) ----------------------------------------------------


@dataclass(slots=True)
class _Window(Generic[S]):
    """A repeated line's window: when it began, its first sample, how many were held back."""

    start: float
    sample: S
    suppressed: int = 0


@dataclass(slots=True)
class Repeats(Generic[S]):
    """Which occurrences of a repeated line to write, and how many were held back.

    A key is seen for the first time: write it, and a window of ``window`` seconds opens. Seen
    again inside the window: hold it back and count it. Seen after the window: write it with the
    count (a new window opens). A window that ends with a count and no new occurrence is handed
    out by :meth:`due` (or :meth:`drain` at stop) with the sample it was opened with. At most
    ``max_keys`` windows are open; opening one more closes the oldest (its count, if any, is
    handed out by the next :meth:`due`).
    """

    window: float = WINDOW
    max_keys: int = MAX_KEYS
    _open: OrderedDict[Hashable, _Window[S]] = field(default_factory=OrderedDict, repr=False)
    _ended: list[tuple[S, int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError(f"window must be positive, not {self.window!r}")
        if self.max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {self.max_keys!r}")

    def __len__(self) -> int:
        """Open windows plus closed ones not yet handed out (0: nothing to report, ever)."""
        return len(self._open) + len(self._ended)

    def seen(self, key: Hashable, sample: S, now: float) -> int | None:
        """None: hold this occurrence back. Otherwise write it; the number is how many were held
        back in the window that has just ended (0: none, or the first occurrence)."""
        window = self._open.get(key)
        if window is not None:
            if now < window.start + self.window:
                window.suppressed += 1
                return None
            del self._open[key]
            repeated = window.suppressed
        else:
            repeated = 0
            if len(self._open) >= self.max_keys:
                _, oldest = self._open.popitem(last=False)
                if oldest.suppressed:
                    self._ended.append((oldest.sample, oldest.suppressed))
        self._open[key] = _Window(now, sample)
        return repeated

    def due(self, now: float) -> list[tuple[S, int]]:
        """Windows ended by ``now`` (and windows closed to make room) that held lines back: each
        sample with its count, once. Windows that held nothing back are forgotten silently."""
        ended, self._ended = self._ended, []
        while self._open:
            key, window = next(iter(self._open.items()))
            if now < window.start + self.window:
                break
            del self._open[key]
            if window.suppressed:
                ended.append((window.sample, window.suppressed))
        return ended

    def drain(self) -> list[tuple[S, int]]:
        """Every count not yet handed out, open windows included; everything is forgotten."""
        ended = self._ended + [
            (w.sample, w.suppressed) for w in self._open.values() if w.suppressed
        ]
        self._open.clear()
        self._ended = []
        return ended


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sample:
    """What a repeated line is, enough to write the ``repeated=N`` line for it later."""

    logger: str
    levelno: int
    method: str
    event: str
    fields: Mapping[str, Any]

    def key(self) -> Hashable:
        return (
            self.logger,
            self.levelno,
            self.event,
            tuple(sorted((k, repr(v)) for k, v in self.fields.items())),
        )

    def record(self, repeated: int) -> logging.LogRecord:
        """A structlog-shaped record (as ``wrap_for_formatter`` makes them) for the count line."""
        msg = {"event": self.event, **self.fields, "repeated": repeated}
        record = logging.LogRecord(self.logger, self.levelno, "", 0, msg, None, None)
        record.__dict__.update(_logger=logging.getLogger(self.logger), _name=self.method)
        return record


def _from_structlog(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, dict) and "_name" in record.__dict__


def _exception_summary(exc_info: object) -> str | None:
    """``Type: message`` of a record's exception (a traceback differs each time, this does not)."""
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) == 3 else exc_info
    if not isinstance(exc, BaseException):
        return None
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """A standard record's ``extra`` fields; one named like a lead key gets a trailing ``_``."""
    return {
        (f"{k}_" if k in LEAD else k): v
        for k, v in record.__dict__.items()
        if k not in _STANDARD_ATTRIBUTES and k.isidentifier()
    }


def _sample(record: logging.LogRecord) -> _Sample:
    if _from_structlog(record):
        msg: dict[str, Any] = record.msg  # type: ignore[assignment]  # checked above
        fields = {k: v for k, v in msg.items() if k not in _NOT_DISTINCT}
        event, exc_info, method = str(msg.get("event")), msg.get("exc_info"), record._name  # type: ignore[attr-defined]
    else:
        fields = _extras(record)
        event, exc_info, method = record.getMessage(), record.exc_info, record.levelname.lower()
    summary = _exception_summary(exc_info)
    if summary is not None:
        fields["exception"] = summary
    return _Sample(record.name, record.levelno, method, event, fields)


def _with_repeated(record: logging.LogRecord, repeated: int) -> logging.LogRecord:
    copy = logging.makeLogRecord(record.__dict__)
    if _from_structlog(record):
        copy.msg = {**record.msg, "repeated": repeated}  # type: ignore[dict-item]
    else:
        copy.__dict__["repeated"] = repeated
    return copy


# -- processors -----------------------------------------------------------------------------------


def _add_extras(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Standard records only: their ``extra`` fields; no trailing newline in ``event``
    (``warnings`` messages end with one)."""
    record: logging.LogRecord = event_dict["_record"]
    event_dict.update(_extras(record))
    event = event_dict["event"]
    if isinstance(event, str):
        event_dict["event"] = event.rstrip("\n")
    return event_dict


def _lead_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    lead = {k: event_dict.pop(k) for k in LEAD if k in event_dict}
    lead.update(event_dict)
    return lead


class _Render:
    """The formatter's last processor: the line. For the journal (``native``), also the
    record's datagram, the line its ``MESSAGE``, kept in :attr:`datagram` for the handler (which
    formats and sends holding its lock)."""

    def __init__(self, line: LineFormat, native: bool) -> None:
        self.steps: list[Processor]
        if line == "json":
            self.steps = [_lead_first, structlog.processors.JSONRenderer()]
        elif line == "logfmt":
            self.steps = [
                structlog.processors.LogfmtRenderer(key_order=list(LEAD), bool_as_flag=False)
            ]
        else:
            raise ValueError(f"log format must be 'json', 'logfmt' or 'journal', not {line!r}")
        self.native = native
        self.datagram = b""

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        fields = dict(event_dict) if self.native else event_dict  # the renderers take keys out
        rendered: Any = event_dict
        for step in self.steps:
            rendered = step(logger, name, rendered)
        if self.native:
            self.datagram = journal.encode(fields, rendered)
        return str(rendered)


def _formatter(render: _Render) -> ProcessorFormatter:
    return ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars, _add_extras],
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            ProcessorFormatter.remove_processors_meta,
            render,
        ],
    )


# -- the handler ----------------------------------------------------------------------------------


class _Handler(logging.StreamHandler[TextIO]):
    """Writes formatted lines to ``stream``, holding back repeats of warnings and errors. With a
    journal ``sender``, each record goes to the journal, and its line to ``stream`` only when
    the journal did not take it."""

    def __init__(
        self,
        stream: TextIO,
        line: LineFormat,
        repeats: Repeats[_Sample],
        clock: Callable[[], float],
        sender: journal.Sender | None = None,
        limit_from: int = logging.WARNING,
    ) -> None:
        super().__init__(stream)
        self.render = _Render(line, native=sender is not None)
        self.setFormatter(_formatter(self.render))
        self.repeats = repeats
        self.clock = clock
        self.sender = sender
        self.limit_from = limit_from

    def _write(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if self.sender is not None and self.sender.send(self.render.datagram):
            return
        self.stream.write(line + self.terminator)
        self.flush()

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            limited = record.levelno >= self.limit_from
            if not limited and not self.repeats:
                self._write(record)
                return
            now = self.clock()
            repeated: int | None = 0
            if limited:
                sample = _sample(record)
                repeated = self.repeats.seen(sample.key(), sample, now)
            for ended, count in self.repeats.due(now):
                self._write(ended.record(count))
            if repeated:
                self._write(_with_repeated(record, repeated))
            elif repeated == 0:
                self._write(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_repeats(self) -> None:
        """Write every count still held (at stop, at reconfiguration, at exit)."""
        self.acquire()
        try:
            for ended, count in self.repeats.drain():
                record = ended.record(count)
                try:
                    self._write(record)
                except Exception:
                    self.handleError(record)
        finally:
            self.release()

    def close(self) -> None:
        """``logging.shutdown`` at exit, or a reconfiguration: the held counts first, then the
        journal's socket (the stream itself stays open)."""
        self.write_repeats()
        if self.sender is not None:
            self.sender.close()
        super().close()

    def handleError(self, record: logging.LogRecord) -> None:
        """A record that cannot be rendered (``%`` args that do not fit, an odd field name):
        one line in the format saying so, instead of logging's multi-line report."""
        error = sys.exc_info()[1]
        msg = {
            "event": "log_record_unrenderable",
            "msg": repr(record.msg)[:500],
            "args": repr(record.args)[:500],
            "error": repr(error),
        }
        line = logging.LogRecord(record.name, logging.ERROR, "", 0, msg, None, None)
        line.__dict__.update(_logger=logging.getLogger(record.name), _name="error")
        try:
            self._write(line)
        except Exception:
            super().handleError(record)


class _LoggerFactory:
    """structlog's wrapped loggers: the standard library's logger of that name, looked up once.

    ``structlog.get_logger("director")`` is bound again on every call (loggers are not cached, so
    that a reconfiguration reaches them); a dict lookup here keeps a disabled ``log.debug`` cheap.
    A logger asked for without a name is named after the calling module, as structlog's own
    ``LoggerFactory`` does.
    """

    def __init__(self) -> None:
        self._named: dict[str, logging.Logger] = {}
        self._guess: structlog.stdlib.LoggerFactory | None = None

    def __call__(self, *args: Any) -> logging.Logger:
        if args and isinstance(args[0], str):
            logger = self._named.get(args[0])
            if logger is None:
                logger = self._named[args[0]] = logging.getLogger(args[0])
            return logger
        if self._guess is None:
            self._guess = structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__])
        return self._guess()


_handler: _Handler | None = None
_logger_factory = _LoggerFactory()


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return logging.getLevelNamesMapping()[level.upper()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}") from None


def is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is systemd's stream to the journal (``$JOURNAL_STREAM`` names it)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # no file behind it (io.UnsupportedOperation is both)
        return False
    return journal.is_journal_stream(fd, os.environ.get("JOURNAL_STREAM"))


def configure(
    fmt: LogFormat = "logfmt",
    level: str | int = "info",
    *,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    window: float = WINDOW,
    max_keys: int = MAX_KEYS,
    journal_socket: str = journal.SOCKET,
) -> None:
    """Send structlog's and the standard library's lines (and ``warnings``) through one handler
    on the root logger: ``fmt`` lines at ``level`` and above, to ``stream`` (``sys.stderr``).

    ``json`` and ``logfmt`` go to the journal (``journal_socket``) instead when ``stream`` is
    the journal's stream (:func:`is_journal`), the line in that format as ``MESSAGE``;
    ``journal`` always goes there, with logfmt lines. A record the journal does not take is
    written to ``stream``.

    May be called again (a reload, a test): the previous handler writes its held counts and is
    replaced. Handlers others put on the root logger are left alone. ``clock`` (monotonic
    seconds), ``window`` and ``max_keys`` drive the repeat limiter.
    """
    global _handler
    levelno = _level(level)
    stream = sys.stderr if stream is None else stream
    line: LineFormat = "logfmt" if fmt == "journal" else fmt
    native = fmt == "journal" or (fmt in ("json", "logfmt") and is_journal(stream))
    handler = _Handler(
        stream,
        line,
        Repeats(window, max_keys),
        clock,
        journal.Sender(journal_socket) if native else None,
    )
    handler.setLevel(levelno)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()  # its held counts, its journal socket
    root.addHandler(handler)
    root.setLevel(levelno)
    _handler = handler
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=_logger_factory,
        # a reconfiguration (or structlog.testing.capture_logs) reaches module-level loggers
        cache_logger_on_first_use=False,
    )


def flush() -> None:
    """Write the counts of repeats still held back; call it at stop, before the last line."""
    if _handler is not None:
        _handler.write_repeats()


def journal_failures() -> int:
    """Records the journal did not take since :func:`configure` (each written to stderr)."""
    sender = _handler.sender if _handler is not None else None
    return sender.failures if sender is not None else 0
