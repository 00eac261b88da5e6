"""The validated config of the last start, kept for the next start of the same file and code.

Validating a config builds its models' validators first (pydantic, ``defer_build``): about as
long as the rest of a start's work in an emulated guest, and paid again at every start for the
same file (``bench/startup.py``). :class:`StartCache` keeps the :class:`Config` a start
validated, pickled, in the state directory (``config-cache.pickle``, 0600), under a key that
says what the result depends on: the exact bytes of the config file, the interpreter, pydantic
and pydantic_core, and the project's code (the name, size and modification time of every source
file of ``director``, ``vrrp`` and ``checks``). The next start of the same bytes with the same
code takes the config from the file instead of validating it; anything else validates as
always (:func:`director.config.load_config`, with the same errors).

What is never kept, so a cached config can never differ from a fresh validation:

- a config whose validation read the machine (:mod:`director.config.machine`: a ``user`` or
  ``script_user`` looked up in the user database, a regular expression checked by the RE2
  library): the same bytes may not validate the same tomorrow;
- a config that did not validate (errors always come from a fresh validation).

A missing, unreadable, corrupt or foreign file (another key, not ours: owned by another user or
writable by others) is ignored and the config validated afresh. The daemon only uses the cache
at start (a reload validates in a worker thread, off the start's path) and writes it after
READY.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
from pathlib import Path

import pydantic
import pydantic_core

from director import __version__
from director.config import machine
from director.config.loader import load_config
from director.config.model import Config

FILE_NAME = "config-cache.pickle"
HEADER = b"director-config-cache 1\n"
KEY_SIZE = 32
PACKAGES = ("director", "vrrp", "checks")  # whose code a validation may run


def code_fingerprint(roots: tuple[Path, ...] | None = None) -> bytes:
    """A digest of the code a validation runs: the interpreter, pydantic, and the name, size
    and modification time of each ``.py`` file under the project's packages."""
    if roots is None:
        base = Path(__file__).resolve().parents[2]
        roots = tuple(base / name for name in PACKAGES)
    h = hashlib.blake2b(digest_size=KEY_SIZE)
    for part in (sys.version, pydantic.VERSION, pydantic_core.__version__, __version__):
        h.update(part.encode() + b"\0")
    for root in roots:
        _walk(root, h)
    return h.digest()


def _walk(directory: Path, h: hashlib.blake2b) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        h.update(b"missing:" + os.fsencode(directory) + b"\0")
        return
    for entry in entries:
        if entry.name == "__pycache__":
            continue
        if entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), h)
        elif entry.name.endswith(".py"):
            st = entry.stat()
            h.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())


class StartCache:
    """The cache file at ``path``; :meth:`load` a config through it, :meth:`save` what a fresh
    validation gave (later: after READY)."""

    def __init__(self, path: Path, fingerprint: bytes | None = None) -> None:
        self.path = path
        self._fingerprint = fingerprint
        self.hit = False
        self._pending: bytes | None = None  # key + pickle of a fresh validation to keep

    def fingerprint(self) -> bytes:
        if self._fingerprint is None:
            self._fingerprint = code_fingerprint()
        return self._fingerprint

    def key(self, data: bytes) -> bytes:
        h = hashlib.blake2b(self.fingerprint(), digest_size=KEY_SIZE)
        h.update(data)
        return h.digest()

    def load(self, config_path: Path) -> Config:
        """The config at ``config_path``: from the cache when it holds these exact bytes for
        this code, else :func:`~director.config.load_config` (its errors, unchanged)."""
        self.hit = False
        self._pending = None
        try:
            data = config_path.read_bytes()
        except OSError:
            return load_config(config_path)  # says what is wrong with the file
        key = self.key(data)
        cached = self._read(key)
        if cached is not None:
            self.hit = True
            return cached
        reads = machine.reads
        config = _validate(config_path, data)
        if machine.reads == reads:
            try:
                self._pending = key + pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError):
                self._pending = None
        return config

    def _read(self, key: bytes) -> Config | None:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    return None  # not ours: never unpickled
                data = fh.read()
        except OSError:
            return None
        if not data.startswith(HEADER) or data[len(HEADER) : len(HEADER) + KEY_SIZE] != key:
            return None
        try:
            config = pickle.loads(data[len(HEADER) + KEY_SIZE :])
        except Exception:  # corrupt: validated afresh
            return None
        return config if type(config) is Config else None

    def save(self) -> bool:
        """Write what the last :meth:`load` validated (atomically, 0600); False when there is
        nothing to write or it cannot be written."""
        from director.statefile import write_atomic

        if self._pending is None:
            return False
        try:
            write_atomic(self.path, HEADER + self._pending)
        except OSError:
            return False
        self._pending = None
        return True


def _validate(config_path: Path, data: bytes) -> Config:
    """``load_config`` of these bytes (read once: what is validated is what was hashed)."""
    import io

    from director.config.apart import parse_config_apart

    try:
        # decoded as load_config's read_text decodes the file (universal newlines included)
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig").read()
    except UnicodeError:
        return load_config(config_path)  # its error, as always
    return parse_config_apart(text, os.fspath(config_path))
