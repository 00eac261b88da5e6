"""A large config validated in a child process, so that its garbage never fragments the daemon.

Validating 10,000 services x 10 real servers builds TOML tables, pydantic's intermediate values
and the rules' keys: about 150 MB of small objects, of which the validated :class:`Config`
keeps 7 MB. Made in the daemon, the rest is freed but the Python allocator keeps the 1 MiB
arenas the survivors are scattered over: 93 MB of free blocks in 186 arenas stayed resident
after one validation (``sys._debugmallocstats``), and the daemon's resident size never came
down again. A config of :data:`APART_ABOVE` bytes or more is validated in a child made by
``fork()`` (:func:`director.offload.apart`); the child sends the result back pickled, and
unpickling it here allocates only what the config keeps, in order. The same config, the same
errors (a :class:`ConfigError` is sent back as it was raised), and whether the validation read
the machine (:mod:`director.config.machine`, for the start cache) is told back too.

When no child can be made, or it ends without an answer (killed, out of memory, an error that
is not a :class:`ConfigError`), the config is validated here as before.
"""

from __future__ import annotations

import os
import pickle

from director.config import machine
from director.config.errors import ConfigError
from director.config.loader import parse_config, read_config
from director.config.model import Config

APART_ABOVE = 256 * 1024  # bytes of config text (about 300 real servers) validated in a child


def load_config_apart(path: str | os.PathLike[str], above: int | None = None) -> Config:
    """:func:`~director.config.load_config`, validated as :func:`parse_config_apart` does."""
    return parse_config_apart(read_config(path), os.fspath(path), above)


def parse_config_apart(text: str, source: str = "<string>", above: int | None = None) -> Config:
    """:func:`~director.config.parse_config` of ``text``: in a child process when it is
    ``above`` (default :data:`APART_ABOVE`) bytes or more (its length in characters, a lower
    bound), here otherwise."""
    if len(text) < (APART_ABOVE if above is None else above):
        return parse_config(text, source)
    from director.offload import apart

    answer = apart(lambda: _validated(text, source))
    if answer is None:
        return parse_config(text, source)
    result, read_machine = pickle.loads(answer)  # written by our own child
    if read_machine:
        machine.read()
    if isinstance(result, ConfigError):
        raise result
    return result if type(result) is Config else parse_config(text, source)


def _validated(text: str, source: str) -> bytes:
    """In the child: the pickled (config or its :class:`ConfigError`, whether the validation
    read the machine)."""
    reads = machine.reads
    result: Config | ConfigError
    try:
        result = parse_config(text, source)
    except ConfigError as exc:
        result = exc
    return pickle.dumps((result, machine.reads != reads), protocol=pickle.HIGHEST_PROTOCOL)
