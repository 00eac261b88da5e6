"""Recent events for the status page and ``directorctl status``: a bounded ring buffer.

Pure: the caller passes the time in (wall-clock seconds, what people read) and the buffer keeps
the last ``size`` events, oldest dropped first. Kinds are few and fixed (``role``, ``health``,
``reload``, ``maintenance``, ``start``) so a page can colour them; ``text`` is the sentence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

SIZE = 200


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the recent-events log."""

    at: float  # wall-clock seconds
    kind: str
    text: str
    seq: int  # 1, 2, ... since start: a reader can tell what it has already seen

    def to_json(self) -> dict[str, object]:
        return {"at": self.at, "kind": self.kind, "text": self.text, "seq": self.seq}


class Events:
    """The last ``size`` events, newest last."""

    def __init__(self, size: int = SIZE) -> None:
        if size < 1:
            raise ValueError(f"size: expected at least 1, found {size}")
        self._ring: deque[Event] = deque(maxlen=size)
        self._seq = 0

    def record(self, now: float, kind: str, text: str) -> Event:
        self._seq += 1
        event = Event(now, kind, text, self._seq)
        self._ring.append(event)
        return event

    @property
    def total(self) -> int:
        """Events recorded since start, including those the ring has dropped."""
        return self._seq

    def recent(self, limit: int | None = None) -> list[Event]:
        """The newest ``limit`` events (all kept when None), newest first."""
        events = list(reversed(self._ring))
        return events if limit is None else events[:limit]
