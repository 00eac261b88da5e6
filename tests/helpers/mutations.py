"""Mutated config files: a real file with a few lines broken the way hands and tools break them.

:func:`mutate` takes the text of a keepalived.conf or an lvs.cf and a seeded ``random.Random``
and returns the text with one to three mutations: a line deleted, duplicated or swapped; a value
replaced by a word, removed, or made a huge, negative, fractional or exotic number; a brace
removed or added; an undefined or runaway ``$PARAM``, an ``include`` or ``@ID`` line; stray
unicode or control characters. Deterministic for a given seed, so a failure can be replayed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Literal

Syntax = Literal["keepalived", "lvs.cf"]

# Values a hand or a template engine leaves behind.
WORDS = (
    "foo",
    "yes",
    "none",
    "NONE",
    "TCP",
    "eth0",
    "$UNDEFINED",
    "${UNDEFINED}",
    "{{ vip }}",
    "K8SHA_VIP",
    "%h",
    "-",
    "/",
    ":",
    "::",
    "0.0.0.0",
    "255.255.255.255",
    "198.18.0.300",
    "198.18.0.1/33",
    "198.18.0.1-0",
    "2001:db8::1",
    "fe80::1%eth0",
    "a" * 40,
    "é",
    "\u202e",
    "\uff10",  # FULLWIDTH DIGIT ZERO
    "²",
    "١٢",
    '""',
    "''",
    '"',
    "'",
    "\\",
    "!",
    "#",
    "{",
    "}",
    "{}",
    "@x",
    "~SEQ(N,1,3)",
)
NUMBERS = (
    "0",
    "-1",
    "-0",
    "1.5",
    "0.001",
    "-7.25",
    "1e309",
    "1e-9",
    "nan",
    "inf",
    "-inf",
    "0x10",
    "+5",
    "007",
    "1_000",
    "256",
    "65536",
    "4294967296",
    "2147483648",
    "9" * 30,
)
UNICODE = (
    "\u00e9",
    "\u200b",
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "\x01",
    "\x7f",
    "\t",
    "\r",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\ud7ff",
    "\ufffd",
)
_NUMBER = re.compile(r"(?<![\w.])\d+(\.\d+)?(?![\w.])")


def _pick_line(lines: list[str], rng: random.Random) -> int | None:
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    return rng.choice(candidates) if candidates else None


def _split_value(line: str, syntax: Syntax) -> tuple[str, list[str]] | None:
    """(the keyword part, the value words) of a statement line, or None."""
    if syntax == "lvs.cf":
        key, eq, value = line.partition("=")
        return (key + eq, value.split()) if eq else None
    words = line.split()
    if len(words) < 2 or words[0].startswith(("!", "#")):
        return None
    indent = line[: len(line) - len(line.lstrip())]
    return indent + words[0], words[1:]


def _join(head: str, values: list[str], syntax: Syntax) -> str:
    return (
        f"{head} {' '.join(values)}".rstrip() if syntax == "lvs.cf" else " ".join([head, *values])
    )


def _statement(lines: list[str], rng: random.Random, syntax: Syntax) -> int | None:
    candidates = [i for i, line in enumerate(lines) if _split_value(line, syntax)]
    return rng.choice(candidates) if candidates else None


def delete_line(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    if (i := _pick_line(lines, rng)) is not None:
        del lines[i]


def duplicate_line(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    if (i := _pick_line(lines, rng)) is not None:
        lines.insert(i, lines[i])


def swap_lines(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    if len(lines) > 1:
        i = rng.randrange(len(lines) - 1)
        j = i + 1 if rng.random() < 0.5 else rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]


def value_to_word(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    if (i := _statement(lines, rng, syntax)) is None:
        return
    split = _split_value(lines[i], syntax)
    assert split is not None
    head, values = split
    if values and values[-1] == "{":
        values = values[:-1] or [""]
        values[rng.randrange(len(values))] = rng.choice(WORDS)
        lines[i] = _join(head, [*values, "{"], syntax)
        return
    values = values or [""]
    values[rng.randrange(len(values))] = rng.choice(WORDS + NUMBERS)
    lines[i] = _join(head, values, syntax)


def value_empty(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    if (i := _statement(lines, rng, syntax)) is None:
        return
    split = _split_value(lines[i], syntax)
    assert split is not None
    head, values = split
    keep = ["{"] if values and values[-1] == "{" and rng.random() < 0.5 else []
    lines[i] = _join(head, keep, syntax)


def number(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    found = [(i, m) for i, line in enumerate(lines) for m in _NUMBER.finditer(line)]
    if not found:
        return
    i, m = rng.choice(found)
    lines[i] = lines[i][: m.start()] + rng.choice(NUMBERS) + lines[i][m.end() :]


def brace(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    with_brace = [i for i, line in enumerate(lines) if "{" in line or "}" in line]
    if with_brace and rng.random() < 0.5:
        i = rng.choice(with_brace)
        lines[i] = lines[i].replace(rng.choice("{}"), "", 1)
        return
    i = rng.randrange(len(lines) + 1)
    what = rng.choice(["{", "}", "{ }", "} {", "}}"])
    if i < len(lines) and rng.random() < 0.5:
        lines[i] = f"{lines[i]} {what}"
    else:
        lines.insert(i, what)


def parameter(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    choice = rng.randrange(4)
    if choice == 0:  # an undefined parameter where a value was
        if (i := _statement(lines, rng, syntax)) is not None:
            split = _split_value(lines[i], syntax)
            assert split is not None
            lines[i] = _join(split[0], [rng.choice(["$NOPE", "${NOPE}", "$1", "$"])], syntax)
    elif choice == 1:  # a definition, then used for a value
        name = rng.choice(["A", "B", "VIP"])
        value = rng.choice(["", "198.18.0.1", "x y", "{", "$A $A", "${A}${A}${A}"])
        lines.insert(0, f"${name}={value}")
        if (i := _statement(lines, rng, syntax)) is not None:
            split = _split_value(lines[i], syntax)
            assert split is not None
            lines[i] = _join(split[0], [f"${name}"], syntax)
    elif choice == 2:  # a definition that grows on every substitution
        lines.insert(0, "$A=${A}${A}${A}${A}")
        lines.append("router_id $A")
    else:
        lines.insert(rng.randrange(len(lines) + 1), "$B=\\")


def include(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    what = rng.choice(
        [
            "include",
            "include missing.conf",
            "include *.nothing",
            "include ../*.nothing",
            "includer [",
            "@lb1 priority 150",
            "@^lb1 priority 150",
            "@",
            "@ ",
            "~SEQ(N, 1, 3) real_server 198.18.1.$N 80",
            "include = x",
        ]
    )
    if what.startswith("@") and lines and rng.random() < 0.5:
        i = rng.randrange(len(lines))
        lines[i] = f"{what.split()[0]} {lines[i]}"
        return
    lines.insert(rng.randrange(len(lines) + 1), what)


def graft(lines: list[str], rng: random.Random, syntax: Syntax, donors: Sequence[str]) -> None:
    """A line of another file of the same kind put in at random: settings meet blocks and
    neighbours they were never written with."""
    if donors:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(donors))


def unicode(lines: list[str], rng: random.Random, syntax: Syntax) -> None:
    if not lines:
        return
    i = rng.randrange(len(lines))
    at = rng.randrange(len(lines[i]) + 1)
    lines[i] = lines[i][:at] + rng.choice(UNICODE) + lines[i][at:]


MUTATIONS: tuple[Callable[[list[str], random.Random, Syntax], None], ...] = (
    delete_line,
    duplicate_line,
    swap_lines,
    value_to_word,
    value_to_word,
    value_empty,
    number,
    number,
    brace,
    parameter,
    include,
    unicode,
)


def mutate(text: str, rng: random.Random, syntax: Syntax, donors: Sequence[str] = ()) -> str:
    """``text`` with one to three random mutations; ``donors``: lines to graft in."""
    lines = text.split("\n")
    for _ in range(rng.choice((1, 1, 2, 3))):
        if donors and rng.random() < 0.15:
            graft(lines, rng, syntax, donors)
        else:
            rng.choice(MUTATIONS)(lines, rng, syntax)
    return "\n".join(lines)
