"""keepalived.conf as a tree of statements: tokenizer, block parser, ``include``.

keepalived's syntax is line based: a statement is a keyword and its arguments on one line, and a
``{`` opens a block of statements that ``}`` closes. ``!`` and ``#`` start a comment anywhere
outside quotes; ``"`` and ``'`` quote (also in the middle of a word, as in the shell), with
backslash escapes inside quotes; ``{`` and ``}`` outside quotes are words of their own.
``include PATTERN`` (and ``includer``/``includem``/``includew``/``includeb``/``includea``) splices
in the files matching a glob, relative to the directory of the file that includes them.
Conditional lines (``@ID ...``, ``@^ID ...``) are kept for the chosen config id, and parameters
(``$NAME=VALUE``, then ``$NAME`` / ``${NAME}``) are substituted, as keepalived does.

Each :class:`Stmt` remembers its file and line, and which of its children the converter took, so
everything left over can be reported (nothing is dropped silently).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from director.importers.notes import ImportParseError, Notes

INCLUDES = frozenset({"include", "includer", "includem", "includew", "includeb", "includea"})
MAX_INCLUDE_DEPTH = 16
_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPES["v"] = "\v"


@dataclass
class Stmt:
    """One statement: ``keyword args... [{ children }]``."""

    keyword: str
    args: list[str]
    file: str
    line: int
    raw: str = ""  # the text after the keyword, as written (scripts are split from it)
    children: list[Stmt] | None = None  # None: no block
    used: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def all(self, keyword: str) -> list[Stmt]:
        """Children with this keyword, marked as used."""
        found = [c for c in self.children or () if c.keyword == keyword]
        for c in found:
            c.used = True
        return found

    def first(self, *keywords: str) -> Stmt | None:
        """The last child with any of these keywords (the last one wins), marked used."""
        found = [c for c in self.children or () if c.keyword in keywords]
        for c in found:
            c.used = True
        return found[-1] if found else None

    def drop(self) -> None:
        """Mark this statement and everything in it as dealt with (reported by the caller)."""
        self.used = True
        for c in self.children or ():
            c.drop()

    def leftovers(self) -> Iterator[Stmt]:
        return (c for c in self.children or () if not c.used)


@dataclass
class _Line:
    words: list[str]
    raws: list[str]  # each word as written (quotes kept), for scripts
    text_after: list[str]  # the raw text after each word, to the end of the statement
    file: str
    line: int


@dataclass
class _State:
    notes: Notes
    config_id: str | None = None
    depth: int = 0
    seen: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    # a multi-line definition being read: its name and its lines so far
    pending: tuple[str, list[str]] | None = None


_CONDITION = re.compile(r"\s*@(\^?)(\S+)\s*(.*)")
_DEFINITION = re.compile(r"\s*\$([A-Za-z_]\w*)=(.*)")
_PARAM = re.compile(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)(?=\s|$)")
MAX_SUBSTITUTIONS = 32
MAX_LINE = 1024  # keepalived's MAXBUF: a substitution that makes a line longer is refused


def _preprocess(raw: str, file: str, number: int, state: _State) -> str | None:
    """keepalived's conditional lines (``@ID``, ``@^ID``) and parameters (``$NAME=VALUE``,
    ``$NAME``, ``${NAME}``): the line to tokenize, or None when nothing is left of it.

    A definition whose value ends with ``\\`` goes on over the next lines, up to a line that
    does not end with one or a blank line (keepalived 2.2.7 lib/parser.c: definitions are the
    only lines a trailing backslash continues); using it puts those lines in its place."""
    if state.pending is not None:
        name, lines = state.pending
        text = raw.strip()
        more = text.endswith("\\")
        text = text.removesuffix("\\").rstrip()
        if text:
            lines.append(text)
        if not more or not raw.strip():
            state.params[name] = "\n".join(lines)
            state.pending = None
        return None
    if m := _CONDITION.match(raw):
        negate, wanted, rest = m.groups()
        keep = (state.config_id == wanted) != bool(negate)
        if not keep:
            who = state.config_id or "none given"
            state.notes.dropped(
                f"{file}:{number}",
                raw.strip(),
                f"for config id {'not ' if negate else ''}{wanted} (this import: {who}; "
                "choose with --config-id)",
            )
            return None
        raw = rest
    if m := _DEFINITION.match(raw):
        name, value = m.groups()
        value = value.strip()
        if value.endswith("\\"):
            first = value.removesuffix("\\").rstrip()
            state.pending = (name, [first] if first else [])
            state.notes.carried(
                f"{file}:{number}",
                f"${name}",
                "a multi-line definition (trailing \\): its lines replace each use, as "
                "keepalived expands it",
            )
            return None
        state.params[name] = value
        return None
    if state.params:
        for _ in range(MAX_SUBSTITUTIONS):
            try:
                new = _PARAM.sub(lambda p: _param(p, state.params), raw)
            except _MultiLineInside as exc:
                raise ImportParseError(
                    file,
                    number,
                    f"${exc} is a multi-line definition: put it last on its line",
                ) from None
            if new == raw:
                break
            if len(new.encode(errors="replace")) >= MAX_LINE:
                raise ImportParseError(
                    file,
                    number,
                    f"parameter substitution makes the line longer than keepalived's {MAX_LINE} "
                    "bytes",
                )
            raw = new
        else:
            raise ImportParseError(file, number, "parameter substitution does not end")
    if raw.lstrip().startswith(("~SEQ", "~LST")):
        state.notes.dropped(
            f"{file}:{number}", raw.strip(), "~SEQ/~LST expansion is not supported: expand it"
        )
        return None
    return raw


def _param(m: re.Match[str], params: dict[str, str]) -> str:
    name = m.group(1) or m.group(2)
    value = params.get(name, m.group(0))
    if "\n" in value and m.string[m.end() :].strip():
        raise _MultiLineInside(name)
    return value


class _MultiLineInside(Exception):
    """A multi-line parameter with text after it on its line."""


def _unescape(text: str, i: int) -> tuple[str, int]:
    """The character escaped at text[i] (after a backslash) and the index after it."""
    c = text[i]
    if c in _ESCAPES:
        return _ESCAPES[c], i + 1
    if c == "x":
        j = i + 1
        while j < len(text) and text[j] in "0123456789abcdefABCDEF" and j < i + 3:
            j += 1
        return (chr(int(text[i + 1 : j], 16)), j) if j > i + 1 else ("x", i + 1)
    if c in "01234567":
        j = i
        while j < len(text) and text[j] in "01234567" and j < i + 3:
            j += 1
        return chr(int(text[i:j], 8)), j
    if c == "c" and i + 1 < len(text):
        return chr(ord(text[i + 1].upper()) ^ 0x40), i + 2
    return c, i + 1


def tokenize_line(text: str, file: str, line: int) -> _Line:
    """Split one line into words; comments and the newline removed."""
    words: list[str] = []
    raws: list[str] = []
    starts: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "!#":
            break
        start = i
        if c in "{}":
            words.append(c)
            raws.append(c)
            starts.append(start)
            i += 1
            continue
        word: list[str] = []
        while i < n and not text[i].isspace() and text[i] not in "{}!#":
            c = text[i]
            if c == "\\" and i + 1 < n and text[i + 1] in "!#":
                # lib/parser.c decomment(): outside quotes \! and \# are the characters
                word.append(text[i + 1])
                i += 2
                continue
            if c in "\"'":
                quote, i = c, i + 1
                while True:
                    if i >= n:
                        raise ImportParseError(file, line, f"unterminated {quote} string")
                    if text[i] == quote:
                        i += 1
                        break
                    if text[i] == "\\" and i + 1 < n:
                        ch, i = _unescape(text, i + 1)
                        word.append(ch)
                        continue
                    word.append(text[i])
                    i += 1
                continue
            word.append(c)
            i += 1
        words.append("".join(word))
        raws.append(text[start:i])
        starts.append(start)
    end = i if i < n and text[i] in "!#" else n
    after = [_decomment(text[s + len(r) : end].strip()) for s, r in zip(starts, raws, strict=True)]
    return _Line(words, [_decomment(r) for r in raws], after, file, line)


def _decomment(raw: str) -> str:
    """The raw text as keepalived keeps it: ``\\!`` and ``\\#`` become ``!`` and ``#``."""
    return raw.replace("\\!", "!").replace("\\#", "#")


def _lines(path: Path, state: _State, where: str) -> Iterator[_Line]:
    """The lines of ``path`` with includes spliced in."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        file, _, line = where.rpartition(":")
        if not file:
            raise ImportParseError(str(path), 0, f"cannot read: {exc.strerror or exc}") from None
        raise ImportParseError(file, int(line), f"cannot read {path}: {exc.strerror}") from None
    check_text(text, str(path))
    for number, raw in enumerate(split_lines(text), 1):
        kept = _preprocess(raw, str(path), number, state)
        if kept is None:
            continue
        for piece in kept.split("\n"):
            tokens = tokenize_line(piece, str(path), number)
            if tokens.raws and tokens.raws[-1].endswith("\\"):
                raise ImportParseError(
                    str(path),
                    number,
                    "a trailing \\ does not continue a line in keepalived (only a $NAME= "
                    "definition goes on over lines): keepalived reads the \\ as a word and "
                    "the next line as a statement of its own; join the lines",
                )
            if tokens.words and tokens.words[0] in INCLUDES:
                yield from _include(tokens, path, state)
                continue
            if tokens.words:
                yield tokens
    if state.pending is not None:
        state.params[state.pending[0]] = "\n".join(state.pending[1])
        state.pending = None


def split_lines(text: str) -> list[str]:
    """The lines as keepalived and Piranha read them: split at newlines only (a form feed,
    vertical tab or U+2028 stays inside its line, so line numbers match the editor's)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def read_config_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(file name, text) of a single-file config (lvs.cf, ldirectord.cf): undecodable bytes
    replaced, a file that cannot be read or is not text refused as an ImportParseError."""
    file = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ImportParseError(file, 0, f"cannot read: {exc.strerror or exc}") from None
    check_text(text, file)
    return file, text


def check_text(text: str, file: str) -> None:
    """A config is text: a NUL byte means a binary file was given."""
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ImportParseError(file, line, "not a text file (a NUL byte)")


def _include(tokens: _Line, path: Path, state: _State) -> Iterator[_Line]:
    where = f"{tokens.file}:{tokens.line}"
    if len(tokens.words) < 2:
        raise ImportParseError(tokens.file, tokens.line, "include needs a file name or pattern")
    if state.depth >= MAX_INCLUDE_DEPTH:
        raise ImportParseError(
            tokens.file, tokens.line, f"includes nested deeper than {MAX_INCLUDE_DEPTH}"
        )
    pattern = tokens.words[1]
    base = path.parent
    full = pattern if os.path.isabs(pattern) else str(base / pattern)
    matches = sorted(glob.glob(full))
    if not matches:
        if glob.has_magic(pattern):
            state.notes.dropped(where, f"include {pattern}", "no file matches the pattern")
            return
        raise ImportParseError(tokens.file, tokens.line, f"include {pattern}: no such file")
    state.depth += 1
    try:
        for match in matches:
            state.seen.append(match)
            yield from _lines(Path(match), state, where)
    finally:
        state.depth -= 1


def parse_file(path: str | os.PathLike[str], notes: Notes, config_id: str | None = None) -> Stmt:
    """The whole file (includes spliced in) as a root statement whose children are the top.

    ``config_id`` is keepalived's ``-i``: it selects the ``@ID`` lines."""
    state = _State(notes, config_id)
    root = Stmt("", [], os.fspath(path), 0, children=[])
    stack: list[Stmt] = [root]
    last: Stmt | None = None
    for tokens in _lines(Path(path), state, ""):
        words, i = tokens.words, 0
        while i < len(words):
            word = words[i]
            if word == "}":
                if len(stack) == 1:
                    raise ImportParseError(tokens.file, tokens.line, "'}' closes no block")
                stack.pop()
                last = None
                i += 1
                continue
            if word == "{":
                # a "{" alone (on its own line) opens the block of the statement before it
                if last is None or last.children is not None:
                    raise ImportParseError(tokens.file, tokens.line, "'{' follows no keyword")
                last.children = []
                stack.append(last)
                last = None
                i += 1
                continue
            j = i + 1
            while j < len(words) and words[j] not in "{}":
                j += 1
            stmt = Stmt(
                word,
                words[i + 1 : j],
                tokens.file,
                tokens.line,
                raw=tokens.text_after[i] if j == len(words) else _between(tokens, i, j),
            )
            parent = stack[-1]
            assert parent.children is not None
            parent.children.append(stmt)
            last = stmt
            i = j
    if len(stack) > 1:
        open_block = stack[-1]
        raise ImportParseError(
            open_block.file,
            open_block.line,
            f"'{' '.join([open_block.keyword, *open_block.args])}' opens a block that is never "
            "closed (missing '}')",
        )
    return root


def _between(tokens: _Line, i: int, j: int) -> str:
    """The raw text of words i+1 .. j-1."""
    return " ".join(tokens.raws[i + 1 : j])
