"""The hook a long loop calls between its items (a service, a page of rows): the pauses of a
worker thread beside the event loop (:class:`director.heap.Pacer`), or :func:`no_pause`."""

from __future__ import annotations

from collections.abc import Callable

Pause = Callable[[], None]


def no_pause() -> None:
    """The default hook: the loop runs without a pause."""
