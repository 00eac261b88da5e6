"""Asking a peer for its digest or canonical form: one signed POST, a verified answer.

The request's body says who asks and with which config (``{"from": listen_address, "digest":
..., "generation": ...}``): a peer that hears a digest other than the one it last saw from us
asks us back at once instead of at its next interval.

Every way the exchange can fail becomes a :class:`~director.peer.state.Failed` outcome
(unreachable or unauthenticated) with a sentence for the log; nothing is raised. The whole
exchange is bounded by ``timeout`` and the answer's size by :data:`MAX_ANSWER`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from director.peer import auth
from director.peer.state import Failed, Verdict

DIGEST_PATH = "/peer/v1/digest"
CANONICAL_PATH = "/peer/v1/canonical"
MAX_ANSWER = 64 * 1024 * 1024  # a canonical form of 1,000 services x 10 servers is ~10 MiB
BIG = 256 * 1024  # answers larger than this are parsed in a worker thread


class PeerClient:
    """Signs requests with ``key`` (:func:`auth.auth_key` is applied here) and checks answers."""

    def __init__(
        self,
        key: bytes,
        *,
        timeout: float,
        window: float,
        clock: Callable[[], float],
        random: Callable[[int], bytes],
    ) -> None:
        self.key = auth.auth_key(key)
        self.timeout = timeout
        self.window = window
        self.clock = clock
        self.random = random

    async def ask(
        self, session: aiohttp.ClientSession, peer: str, path: str, body: bytes
    ) -> dict[str, Any] | Failed:
        """The peer's JSON answer to a POST of ``body`` to ``path``, or why there is none."""
        try:
            return await asyncio.wait_for(self._ask(session, peer, path, body), self.timeout)
        except TimeoutError:
            return Failed(Verdict.UNREACHABLE, f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Failed(Verdict.UNREACHABLE, _why(exc))

    async def _ask(
        self, session: aiohttp.ClientSession, peer: str, path: str, body: bytes
    ) -> dict[str, Any] | Failed:
        headers = auth.sign_request(self.key, "POST", path, body, self.clock(), self.random(16))
        headers["Content-Type"] = "application/json"
        nonce = headers[auth.NONCE]
        url = f"http://{peer}{path}"
        async with session.post(url, data=body, headers=headers) as reply:
            answer_body = await _read(reply)
            if answer_body is None:
                return Failed(Verdict.UNREACHABLE, f"answer larger than {MAX_ANSWER} bytes")
            if reply.status in (401, 403):
                text = answer_body[:200].decode("utf-8", "replace")
                return Failed(
                    Verdict.UNAUTHENTICATED,
                    f"the peer refused our request ({reply.status} {text}); the directors' "
                    "key_file must hold the same key",
                )
            if reply.status != 200:
                return Failed(Verdict.UNREACHABLE, f"HTTP {reply.status} from the peer")
            problem = auth.verify_response(
                self.key, nonce, reply.status, answer_body, reply.headers, self.clock(), self.window
            )
            if problem is not None:
                return Failed(Verdict.UNAUTHENTICATED, problem)
        try:
            if len(answer_body) > BIG:
                answer = await asyncio.to_thread(json.loads, answer_body)
            else:
                answer = json.loads(answer_body)
        except ValueError:
            return Failed(Verdict.UNREACHABLE, "the peer's answer is not JSON")
        if not isinstance(answer, dict):
            return Failed(Verdict.UNREACHABLE, "the peer's answer is not a JSON object")
        return answer


async def _read(reply: aiohttp.ClientResponse) -> bytes | None:
    if reply.content_length is not None and reply.content_length > MAX_ANSWER:
        return None
    body = await reply.content.read(MAX_ANSWER + 1)
    while len(body) <= MAX_ANSWER and not reply.content.at_eof():
        more = await reply.content.read(MAX_ANSWER + 1 - len(body))
        if not more:
            break
        body += more
    return body if len(body) <= MAX_ANSWER else None


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return str(exc) or type(exc).__name__
