"""Regular expressions over what servers send, in linear time: RE2 (``google-re2``).

A check's ``body_regex`` (HTTP, up to 64 KiB of body) or ``expect`` regex (TCP, up to 4 KiB)
runs over text a server chose. With a backtracking engine (Python's ``re``) a pattern such as
``(a+)+$`` takes exponential time on the right input, and the event loop, VRRP adverts
included, would wait for it. RE2 matches in time linear in the text, whatever the pattern (the
factor grows with the pattern: up to about 0.2 s over 64 KiB for a contrived one such as
``a.{250}c``, which is why the HTTP probe searches large bodies in a worker thread); in
exchange it has no backreferences (``\\1``, ``(?P=name)``) and no lookaround (``(?=``,
``(?!``, ``(?<=``, ``(?<!``). :func:`problem` says, in plain words, why a pattern cannot be
used.

Other differences from Python's ``re`` that matter for a body: ``$`` matches only at the very
end of the text (not before a final newline; use ``(?m)`` for line ends), ``\\z`` is the end of
the text (``\\Z`` is refused), and ``\\d``, ``\\w``, ``\\s``, ``\\b`` are ASCII only.

:class:`Regex` of ``str`` matches text (UTF-8); of ``bytes`` it matches bytes one by one
(RE2's Latin-1 mode), as Python's bytes patterns do. Two are equal when their patterns are,
so a check whose pattern did not change keeps its state over a reload.
"""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

import re2  # type: ignore[import-untyped]

AnyStr = TypeVar("AnyStr", str, bytes)

_BACKREF = re.compile(r"invalid escape sequence: \\[1-9]")
_EXPLAIN = (
    ("invalid perl operator: (?=", "(?=...) is a lookahead"),
    ("invalid perl operator: (?!", "(?!...) is a negative lookahead"),
    ("invalid perl operator: (?<=", "(?<=...) is a lookbehind"),
    ("invalid perl operator: (?<!", "(?<!...) is a negative lookbehind"),
    ("invalid perl operator: (?P", "(?P=name) is a backreference"),
    ("invalid escape sequence: \\k", "\\k<name> is a backreference"),
    ("invalid perl operator: (?>", "(?>...) is an atomic group"),
)
_LINEAR = "which a linear-time engine (RE2) cannot match"


def _options(latin1: bool) -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own line on stderr
    # Only "does it match" is asked: without capture groups RE2 answers with its DFA alone,
    # up to 40x faster on the worst inputs than when it must also find the groups.
    options.never_capture = True
    if latin1:
        options.encoding = re2.Options.Encoding.LATIN1
    return options


_TEXT, _BYTES = _options(latin1=False), _options(latin1=True)


class RegexError(ValueError):
    """A pattern RE2 cannot take; the message says why, in words."""


def explain(message: str) -> str:
    """RE2's error message, with what it means when it is a feature RE2 leaves out."""
    if _BACKREF.match(message):
        return f"{message[len('invalid escape sequence: ') :]} is a backreference, {_LINEAR}"
    for prefix, what in _EXPLAIN:
        if message.startswith(prefix):
            return f"{what}, {_LINEAR}"
    if message == "invalid escape sequence: \\Z":
        return "\\Z is not supported: write \\z for the end of the text"
    return message


class Regex(Generic[AnyStr]):
    """A compiled RE2 pattern; :meth:`search` says whether it matches anywhere in a text."""

    __slots__ = ("_regexp", "pattern")

    def __init__(self, pattern: AnyStr) -> None:
        self.pattern: AnyStr = pattern
        options = _BYTES if isinstance(pattern, bytes) else _TEXT
        try:
            self._regexp = re2.compile(pattern, options)
        except re2.error as exc:
            raw = exc.args[0] if exc.args else exc
            message = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            raise RegexError(explain(message)) from None

    def search(self, text: AnyStr) -> bool:
        return self._regexp.search(text) is not None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Regex)
            and type(other.pattern) is type(self.pattern)
            and (other.pattern == self.pattern)
        )

    def __hash__(self) -> int:
        return hash((Regex, self.pattern))

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


def problem(pattern: AnyStr) -> str | None:
    """Why RE2 cannot take ``pattern`` (in words), or None when it can."""
    try:
        Regex(pattern)
    except RegexError as exc:
        return str(exc)
    return None
