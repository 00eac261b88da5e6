"""The one way a socket read by an event loop's reader is let go of."""

from __future__ import annotations

import asyncio
import socket


def close_reader(sock: socket.socket | None, loop: asyncio.AbstractEventLoop | None) -> None:
    """Stop reading ``sock`` on ``loop`` (while the loop is open) and close it; None: nothing."""
    if sock is None:
        return
    if loop is not None and not loop.is_closed():
        loop.remove_reader(sock.fileno())
    sock.close()
