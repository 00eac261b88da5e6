"""Validators whose verdict depends on the machine, not only on the config's text, say so here.

A user looked up in the user database (``user``, ``script_user``), a pattern checked by the
RE2 library or the peer check's key file (its mode, its length) may validate differently on
another day: :mod:`director.config.startcache` keeps no config whose validation read any.
"""

from __future__ import annotations

reads = 0  # how many times a validator read the machine, in this process


def read() -> None:
    """Called by such a validator as it runs."""
    global reads
    reads += 1
