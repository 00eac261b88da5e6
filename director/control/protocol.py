"""The control protocol: one request per connection, one JSON line each way.

The client sends ``{"command": NAME, ...arguments}`` and a newline; the daemon answers
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}`` and a newline, then closes.
Both sides use the functions here, so the framing lives in one place.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

Handler = Callable[[dict[str, Any]], Awaitable[object]]
MAX_REQUEST = 64 * 1024  # bytes of one request line


class ControlError(Exception):
    """The request could not be made or the daemon refused it; the message is for people."""


class RequestError(Exception):
    """Raised by a handler: bad arguments or a refused action (reported, nothing changed)."""


def encode_request(command: str, arguments: dict[str, object] | None = None) -> bytes:
    return json.dumps({**(arguments or {}), "command": command}).encode() + b"\n"


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """``(command, arguments)`` of one request line; :class:`RequestError` says what is wrong."""
    try:
        request = json.loads(line)
    except ValueError:
        raise RequestError("the request is not one line of JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise RequestError('expected {"command": NAME, ...}')
    name = request.pop("command")
    return name, request


class Encoded(str):
    """A result already encoded as JSON text (e.g. the status, encoded in a worker thread):
    :func:`ok` puts it into the reply as is."""


class Streamed:
    """A result already encoded as JSON text, made elsewhere a chunk at a time (the status, in
    a child process: :mod:`director.offload`): the server sends each chunk as it comes, after
    :data:`OK_HEAD` and before :data:`OK_TAIL`, so a reply of tens of MB is never whole in the
    daemon's heap (as text, as bytes, as the reply, in the transport's buffer). A rendering
    that fails part way leaves the client an incomplete reply line, which it reports."""

    def __init__(self, chunks: Callable[[], AsyncGenerator[bytes, None]]) -> None:
        self.chunks = chunks


OK_HEAD = b'{"ok": true, "result": '
OK_TAIL = b"}\n"


def ok(result: object) -> bytes:
    if isinstance(result, Encoded):
        return OK_HEAD + result.encode() + OK_TAIL
    return json.dumps({"ok": True, "result": result}, default=str).encode() + b"\n"


def refused(error: str) -> bytes:
    return json.dumps({"ok": False, "error": error}).encode() + b"\n"


def decode_reply(line: bytes) -> Any:
    """The result of a reply line; :class:`ControlError` for a refusal or a garbled line."""
    if not line:
        raise ControlError("directord closed the connection without an answer")
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError(f"directord sent an unreadable answer: {line[:200]!r}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"directord sent an unreadable answer: {line[:200]!r}")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")))
    return reply.get("result")
