"""Who check scripts and notify hooks run as, and the environment they get.

``[daemon] script_user`` (and a ``script`` check's ``user``) is ``"USER"`` or ``"USER:GROUP"``,
by name or number, as keepalived's ``script_user``: the program runs with the user's uid, the
group's gid (the user's primary group by default) and the user's supplementary groups (as
``initgroups(3)`` would set them for that gid). :func:`resolve` looks them up once (it reads
the user and group databases, so it is called when the config is read, not per run).

Whoever they run as, programs get a clean, minimal environment, never the daemon's
(``NOTIFY_SOCKET``, ``INVOCATION_ID`` ...): :data:`PATH`, and ``HOME``, ``USER`` and
``LOGNAME`` of the user they run as, plus what a check adds.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RunAs:
    """A user to run programs as: ``uid``, ``gid`` and supplementary ``groups`` (``spec`` is
    what the config said)."""

    spec: str
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve(spec: str) -> RunAs:
    """``"nobody"`` or ``"nobody:nogroup"`` (names or numbers) looked up on this machine;
    ValueError with a plain message if the user or group does not exist."""
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise ValueError('expected "USER" or "USER:GROUP"')
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no user {user!r} on this machine") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"no group {group!r} on this machine") from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return RunAs(spec, entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)


@functools.cache
def current() -> RunAs:
    """The user this process runs as (what programs run as when no user is configured)."""
    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:  # no passwd entry (a container): keep the ids
        return RunAs(str(uid), str(uid), uid, os.getgid(), tuple(os.getgroups()), "/")
    return RunAs(
        entry.pw_name, entry.pw_name, uid, os.getgid(), tuple(os.getgroups()), entry.pw_dir
    )


def environment(user: RunAs | None, extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """The whole environment of a program run as ``user`` (None: this process's user)."""
    who = user if user is not None else current()
    env = {"PATH": PATH, "HOME": who.home, "USER": who.name, "LOGNAME": who.name}
    env.update(extra)
    return env
