"""Config errors people can act on: every problem, with its key path, line and plain words."""

from __future__ import annotations

import re
import tomllib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from director.config.fields import ERROR_TYPE, Loc, show

if typing.TYPE_CHECKING:  # a config that validates needs neither (nor difflib): errors only
    from director.config.lines import LineMap

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (TOML key path, 0-based indexes) and what."""

    location: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.location
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` lists all its problems."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(source, self.problems)

    def __str__(self) -> str:
        if len(self.problems) == 1 and not self.problems[0].location and not self.problems[0].line:
            return f"{self.source}: {self.problems[0].message}"
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'' if count == 1 else 's'}"
        return "\n  ".join([head, *map(str, self.problems)])


def format_location(loc: Loc) -> str:
    """``("virtual_server", 1, "weight")`` -> ``virtual_server[1].weight``; odd keys quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else show(part)
            out += f".{key}" if out else key
    return out


def syntax_problem(exc: tomllib.TOMLDecodeError) -> Problem:
    """A TOML syntax error as one problem with its line and column."""
    text = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    line = None
    if match:
        line = int(match[1])
        text = f"{text[: match.start()]} (column {match[2]})"
    elif text.endswith("(at end of document)"):
        text = text.replace("(at end of document)", "(at the end of the file)")
    return Problem("", f"invalid TOML: {text[:1].lower()}{text[1:]}", line)


def validation_problems(
    exc: ValidationError, root: type[BaseModel], lines: LineMap | None = None
) -> list[Problem]:
    """Pydantic's errors as problems in plain words, located by TOML key."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        line = lines.line_for(loc) if lines else None
        problems.append(Problem(format_location(loc), _message(error, loc, root), line))
    return problems


def located(findings: Iterable[tuple[Loc, str]], lines: LineMap | None = None) -> list[Problem]:
    return [
        Problem(format_location(loc), msg, lines.line_for(loc) if lines else None)
        for loc, msg in findings
    ]


def ordered(problems: Sequence[Problem]) -> list[Problem]:
    """Problems in file order (those without a line last), each once."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.line is None, p.line or 0))


def _message(error: typing.Any, loc: Loc, root: type[BaseModel]) -> str:
    kind: str = error["type"]
    ctx = error.get("ctx") or {}
    found = show(error["input"])
    if kind == ERROR_TYPE:
        return str(ctx["message"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind == "literal_error":
        return f"expected one of {str(ctx['expected']).replace(chr(39), chr(34))}, found {found}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a table, found {found}"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        if isinstance(error["input"], dict):
            header = ".".join(str(part) for part in loc if isinstance(part, str))
            return f"expected an array of tables ([[{header}]]), found a single table"
        return f"expected an array, found {found}"
    if kind in ("string_type", "str_type"):
        return f"expected a string, found {found}"
    text = str(error["msg"]).replace("Input should be", "expected").rstrip(".")
    return f"{text}, found {found}"


def _unknown_key(loc: Loc, root: type[BaseModel]) -> str:
    key = str(loc[-1])
    model = _model_at(root, loc[:-1])
    if model is None:
        return f"unknown key {show(key)}"
    known = [field.alias or name for name, field in model.model_fields.items()]
    import difflib  # here: a start with a valid config never needs it

    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f'unknown key {show(key)}; did you mean "{close[0]}"?'
    return f"unknown key {show(key)}; expected one of: {', '.join(known)}"


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the table at ``loc`` (indexes skipped)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        field = fields.get(part)
        model = _model_in(field.annotation) if field else None
    return model


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType | types.GenericAlias) or typing.get_origin(
        annotation
    ):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
