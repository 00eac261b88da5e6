"""The compiled code of the methods :mod:`dataclasses` writes, kept from one start to the next.

``@dataclass`` writes each class's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and, for
frozen classes, ``__setattr__`` and ``__delattr__`` as source text and compiles it, every time
the class is created: the ``.pyc`` of a module keeps its own code, not this. The daemon creates
about 190 dataclasses as it imports, so a start compiled some 900 small functions: a quarter
of the daemon's imports on a server, and seconds of an emulated guest's start
(``bench/startup.py``).

:func:`install` has ``dataclasses`` take that code from a cache file instead (keyed by a hash
of the exact source text, so a changed class is compiled afresh, never given stale code);
:func:`save` writes what was compiled since back (atomically; nothing when nothing is new or
the directory is read-only). The file is like a ``.pyc``: under the package's ``__pycache__``,
named after the interpreter (``sys.implementation.cache_tag``) and stamped with its bytecode
magic number; an unreadable, foreign or corrupt file is ignored (everything is compiled as
without it). ``python -m director.codecache`` writes it for a tree: ``scripts/build-deb`` and
the guest harness do, as they byte-compile, since the installed package's directory is
read-only to the daemon.

Only on CPython 3.11, whose ``dataclasses._create_fn`` this replaces with a copy that differs
in one line (the code comes from the cache); elsewhere :func:`install` does nothing.

The same file keeps the code of the forward references the imports create: ``typing.ForwardRef``
compiles the text of each string annotation (``"str | None"``) as it is made, and pydantic's
field annotations and pydantic_core's ``TypedDict`` schemas make 981 of them (327 different
texts) before READY: 0.3 s of an emulated guest's start, under a profiler. :func:`install` gives
``typing`` a ``compile`` that takes that ``eval`` code from the cache (a module global, looked up
before the builtin); any other compilation goes to the builtin as before.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import importlib.util
import marshal
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any

VERSIONS = ((3, 11),)  # whose dataclasses._create_fn the copy below matches
HEADER = b"director-dataclass-code\n" + importlib.util.MAGIC_NUMBER
MAX_ENTRIES = 20000  # about 20 MB; the daemon's classes need about 900
FILE = Path(__file__).parent / "__pycache__" / f"dataclasses.{sys.implementation.cache_tag}.bin"


class CodeCache:
    """Compiled code by the hash of its source text; ``path``: where it is kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: dict[bytes, bytes] = {}
        self.new: dict[bytes, bytes] = {}
        self.used: set[bytes] = set()
        self.hits = 0

    def load(self) -> None:
        """What the file holds; nothing if it is missing, foreign or corrupt."""
        try:
            data = self.path.read_bytes()
            known = marshal.loads(data[len(HEADER) :]) if data.startswith(HEADER) else {}
        except (OSError, EOFError, ValueError, TypeError):
            known = {}
        if isinstance(known, dict):
            self.known = {
                k: v for k, v in known.items() if isinstance(k, bytes) and isinstance(v, bytes)
            }

    def code(self, text: str, mode: str = "exec") -> CodeType:
        """``compile(text, "<string>", mode)``, from the cache when it has it."""
        data = text.encode() if mode == "exec" else f"{mode}\0{text}".encode()
        key = hashlib.blake2b(data, digest_size=16).digest()
        self.used.add(key)
        raw = self.known.get(key)
        if raw is not None:
            with contextlib.suppress(EOFError, ValueError, TypeError):
                code = marshal.loads(raw)
                if isinstance(code, CodeType):
                    self.hits += 1
                    return code
        code = compile(text, "<string>", mode)
        self.new[key] = marshal.dumps(code)
        return code

    def save(self) -> bool:
        """Write the file with what was compiled since it was read (atomically); False when
        nothing was new or it cannot be written."""
        if not self.new:
            return False
        merged = {**self.known, **self.new}
        if len(merged) > MAX_ENTRIES:  # classes changed many times over: keep this run's only
            merged = {k: v for k, v in merged.items() if k in self.used}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(HEADER + marshal.dumps(merged))
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        self.known, self.new = merged, {}
        return True


_cache: CodeCache | None = None
_original: Callable[..., Any] | None = None


def install(path: Path = FILE) -> CodeCache | None:
    """Have ``dataclasses`` take the code of the methods it writes from ``path`` (once); the
    cache, or None on an interpreter this does not support."""
    global _cache, _original
    if _cache is not None:
        return _cache
    if sys.version_info[:2] not in VERSIONS or sys.implementation.name != "cpython":
        return None
    original = getattr(dataclasses, "_create_fn", None)
    if original is None or original.__code__.co_varnames[:3] != ("name", "args", "body"):
        return None
    cache = CodeCache(path)
    cache.load()
    missing = dataclasses.MISSING

    # dataclasses._create_fn of CPython 3.11 (same parameter names), but for where the code
    # comes from.
    def _create_fn(
        name: str,
        args: list[str],
        body: list[str],
        *,
        globals: dict[str, Any] | None = None,
        locals: dict[str, Any] | None = None,
        return_type: Any = missing,
    ) -> Any:
        if locals is None:
            locals = {}
        return_annotation = ""
        if return_type is not missing:
            locals["_return_type"] = return_type
            return_annotation = "->_return_type"
        text = f" def {name}({','.join(args)}){return_annotation}:\n"
        text += "\n".join(f"  {b}" for b in body)
        local_vars = ", ".join(locals.keys())
        text = f"def __create_fn__({local_vars}):\n{text}\n return {name}"
        ns: dict[str, Any] = {}
        exec(cache.code(text), globals, ns)  # as dataclasses does
        return ns["__create_fn__"](**locals)

    # typing.ForwardRef.__init__: compile(arg_to_compile, '<string>', 'eval')
    def _compile(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        if type(source) is str and (filename, mode, args, kwargs) == ("<string>", "eval", (), {}):
            return cache.code(source, "eval")
        return builtins.compile(source, filename, mode, *args, **kwargs)

    _original = original
    dataclasses._create_fn = _create_fn  # type: ignore[attr-defined]
    typing.compile = _compile  # type: ignore[attr-defined]
    _cache = cache
    return cache


def save() -> bool:
    """Write what the installed cache compiled since it was read (see :meth:`CodeCache.save`)."""
    return _cache.save() if _cache is not None else False


def uninstall() -> None:
    """``dataclasses`` as it was (tests)."""
    global _cache, _original
    if _original is not None:
        dataclasses._create_fn = _original  # type: ignore[attr-defined]
        typing.__dict__.pop("compile", None)
    _cache = _original = None


def main() -> int:
    """Import the daemon as ``directord`` does, and write the cache of its dataclasses."""
    from director import lean

    cache = install()
    if cache is None:
        print("director.codecache: not supported on this interpreter", file=sys.stderr)
        return 0
    lean.lean_imports()
    import checks.probes.dispatch  # noqa: F401 - the probes: imported by the first check
    import director.app
    import director.daemon  # noqa: F401

    written = cache.save()
    state = "written" if written else "unchanged"
    print(f"{cache.path}: {len(cache.known)} compiled methods ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
