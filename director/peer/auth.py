"""Authentication of the peer exchange: HMAC-SHA256 over each request and response (pure).

Every request carries three headers: the sender's wall-clock time, a random nonce and an
HMAC-SHA256, under a key derived from the shared key, over the protocol name, the method, the
path, the time, the nonce and the SHA-256 of the body. The receiver refuses a request whose
headers are missing or garbled or whose MAC does not verify (401: nothing else is said), one
whose time is further from its own than ``max_clock_skew`` and one whose nonce it has seen
already within that window (403: only someone holding the key gets this far, so the reason is
said). Nonces are remembered for twice the window, so a recorded request can be replayed
neither while it is fresh (its nonce is known) nor later (it is stale).

The response is signed the same way over the request's nonce, the status and the body, so a
recorded answer cannot be passed off as the answer to a new question, and an answer from
someone without the key is recognised as such.

Time comes in as an argument (wall-clock seconds: the peers' clocks are compared), randomness
as bytes the caller draws.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

PROTOCOL = b"director-peer-v1"
TIME = "X-Director-Time"
NONCE = "X-Director-Nonce"
SIGNATURE = "X-Director-Signature"
NONCE_BYTES = 16
MAX_NONCES = 100_000  # only requests with a valid MAC are remembered: key holders only


def auth_key(key: bytes) -> bytes:
    """The MAC key of the exchange, derived from the shared key (the secrets' hashes use
    another derivation, :data:`director.peer.canonical.SECRET_CONTEXT`)."""
    return hmac.new(key, PROTOCOL + b" auth", hashlib.sha256).digest()


def _mac(key: bytes, *parts: bytes) -> str:
    return hmac.new(key, b"\n".join((PROTOCOL, *parts)), hashlib.sha256).hexdigest()


def _stamp(now: float) -> str:
    return f"{now:.3f}"


def sign_request(
    key: bytes, method: str, path: str, body: bytes, now: float, nonce: bytes
) -> dict[str, str]:
    """The headers of a request (``key``: :func:`auth_key`'s)."""
    stamp, nonce_hex = _stamp(now), nonce.hex()
    mac = _mac(
        key,
        b"request",
        method.upper().encode(),
        path.encode(),
        stamp.encode(),
        nonce_hex.encode(),
        hashlib.sha256(body).hexdigest().encode(),
    )
    return {TIME: stamp, NONCE: nonce_hex, SIGNATURE: mac}


def body_hash(body: bytes) -> str:
    """The SHA-256 a MAC covers (computed once for a large answer that is sent often)."""
    return hashlib.sha256(body).hexdigest()


def sign_response(
    key: bytes,
    request_nonce: str,
    status: int,
    body: bytes,
    now: float,
    hashed: str | None = None,
) -> dict[str, str]:
    """The headers of an answer; ``hashed``: :func:`body_hash` of ``body``, if known."""
    stamp = _stamp(now)
    mac = _mac(
        key,
        b"response",
        request_nonce.encode(),
        str(status).encode(),
        stamp.encode(),
        (hashed or body_hash(body)).encode(),
    )
    return {TIME: stamp, SIGNATURE: mac}


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: ``reason`` for the metric, ``status`` and ``text`` for the
    answer (a 401 says nothing more than that)."""

    reason: str  # missing, bad_signature, clock_skew, replayed
    status: int
    text: str


UNAUTHORIZED = "authentication required"


def _parse(headers: Mapping[str, str], *names: str) -> list[str] | None:
    values = [headers.get(name) for name in names]
    if any(v is None or not v or len(v) > 128 or not v.isascii() for v in values):
        return None
    return [v for v in values if v is not None]


def _stamp_value(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class ReplayGuard:
    """The nonces of the requests accepted in the last ``2 * window`` seconds."""

    def __init__(self, window: float, capacity: int = MAX_NONCES) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> when accepted

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, nonce: str, now: float) -> bool:
        """True when ``nonce`` was accepted already; otherwise it is remembered from now."""
        horizon = now - 2 * self.window
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at >= horizon and len(self._seen) < self.capacity:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            return True
        self._seen[nonce] = now
        return False


def verify_request(
    key: bytes,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    guard: ReplayGuard,
) -> Refusal | None:
    """None when the request is authentic, fresh and new; else why not."""
    fields = _parse(headers, TIME, NONCE, SIGNATURE)
    if fields is None:
        return Refusal("missing", 401, UNAUTHORIZED)
    stamp, nonce, signature = fields
    expected = _mac(
        key,
        b"request",
        method.upper().encode(),
        path.encode(),
        stamp.encode(),
        nonce.encode(),
        hashlib.sha256(body).hexdigest().encode(),
    )
    if not hmac.compare_digest(expected, signature):
        return Refusal("bad_signature", 401, UNAUTHORIZED)
    sent = _stamp_value(stamp)
    if sent is None or abs(now - sent) > guard.window:
        return Refusal(
            "clock_skew",
            403,
            f"request time {stamp} is more than {guard.window:g} s from this director's "
            f"{_stamp(now)}: synchronise the clocks (NTP)",
        )
    if guard.seen(nonce, now):
        return Refusal("replayed", 403, "request replayed (nonce already used)")
    return None


def verify_response(
    key: bytes,
    request_nonce: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    window: float,
) -> str | None:
    """None when the answer is the peer's (same key) to this very request; else the problem."""
    fields = _parse(headers, TIME, SIGNATURE)
    if fields is None:
        return "the answer is not signed"
    stamp, signature = fields
    expected = _mac(
        key,
        b"response",
        request_nonce.encode(),
        str(status).encode(),
        stamp.encode(),
        hashlib.sha256(body).hexdigest().encode(),
    )
    if not hmac.compare_digest(expected, signature):
        return "the answer's signature does not verify (a different key_file on the peer?)"
    sent = _stamp_value(stamp)
    if sent is None or abs(now - sent) > window:
        return f"the answer's time {stamp} is more than {window:g} s from ours (clock skew)"
    return None
