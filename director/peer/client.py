"""Asking a peer for its digest or canonical form: one signed POST, a verified answer.

The request's body says who asks and with which config (``{"from": listen_address, "digest":
..., "generation": ...}``): a peer that hears a digest other than the one it last saw from us
asks us back at once instead of at its next interval.

Every way the exchange can fail becomes a :class:`~director.peer.state.Failed` outcome
(unreachable or unauthenticated) with a sentence for the log; nothing is raised. The whole
exchange is bounded by ``timeout`` (a canonical form's, which may be megabytes, by
:data:`DETAILS_TIMEOUT`) and the answer's size by :data:`MAX_ANSWER`.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from director.peer import auth
from director.peer.canonical import decode_lines
from director.peer.state import Failed, Verdict

DIGEST_PATH = "/peer/v1/digest"
CANONICAL_PATH = "/peer/v1/canonical"
MAX_ANSWER = 64 * 1024 * 1024  # a canonical form of 1,000 services x 10 servers is ~10 MiB
BIG = 256 * 1024  # answers larger than this are parsed in a worker thread
# A canonical form is fetched only when the digests differ, and may be megabytes: it gets
# longer than a poll (the poller of that peer waits; nothing else does).
DETAILS_TIMEOUT = 30.0


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
        self,
        session: aiohttp.ClientSession,
        peer: str,
        path: str,
        body: bytes,
        within: float | None = None,
    ) -> dict[str, Any] | Failed:
        """The peer's JSON answer to a POST of ``body`` to ``path``, or why there is none;
        ``within`` seconds (default: the client's timeout) bound the whole exchange."""
        bound = within or self.timeout
        try:
            async with asyncio.timeout(bound):
                return await self._ask(session, peer, path, body, bound)
        except TimeoutError:
            return Failed(Verdict.UNREACHABLE, f"no answer within {bound:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Failed(Verdict.UNREACHABLE, _why(exc))

    async def _ask(
        self, session: aiohttp.ClientSession, peer: str, path: str, body: bytes, bound: float
    ) -> dict[str, Any] | Failed:
        headers = auth.sign_request(self.key, "POST", path, body, self.clock(), self.random(16))
        headers["Content-Type"] = "application/json"
        nonce = headers[auth.NONCE]
        url = f"http://{peer}{path}"
        limit = aiohttp.ClientTimeout(total=bound)
        async with session.post(url, data=body, headers=headers, timeout=limit) as reply:
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
            from multidict import CIMultiDict  # aiohttp's, loaded with its client by now

            verify = functools.partial(
                auth.verify_response,
                self.key,
                nonce,
                reply.status,
                answer_body,
                CIMultiDict(reply.headers),
                self.clock(),
                self.window,
            )
            # hashing megabytes: off the loop
            problem = await asyncio.to_thread(verify) if len(answer_body) > BIG else verify()
            if problem is not None:
                return Failed(Verdict.UNAUTHENTICATED, problem)
        parse = decode_lines if path == CANONICAL_PATH else json.loads
        try:
            if len(answer_body) > BIG:
                answer = await asyncio.to_thread(parse, answer_body)
            else:
                answer = parse(answer_body)
        except ValueError:
            return Failed(Verdict.UNREACHABLE, "the peer's answer is not JSON")
        if not isinstance(answer, dict):
            return Failed(Verdict.UNREACHABLE, "the peer's answer is not a JSON object")
        return answer


async def _read(reply: aiohttp.ClientResponse) -> bytes | None:
    """The answer's body, or None when it is larger than :data:`MAX_ANSWER`."""
    if reply.content_length is not None and reply.content_length > MAX_ANSWER:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in reply.content.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return str(exc) or type(exc).__name__
