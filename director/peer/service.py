"""The peer config check in the daemon: the digest and generation of the running config, the
endpoint the peers ask, and the polling of each configured peer.

:class:`PeerCheck` is fed by the application object: :meth:`PeerCheck.start` and
:meth:`PeerCheck.apply` with each config (and the shared key read from ``key_file``),
:meth:`PeerCheck.stop` at the end. The canonical form, its digest and the two answers the
endpoint gives are computed once per config, in a worker thread; serving them is a MAC and a
write. Each peer is polled by a task of its own every ``interval`` seconds, each poll bounded by
``timeout``; after a reload that changed the digest every peer is polled at once. A mismatch
fetches the peer's canonical form once per pair of digests, to say what differs. Nothing is ever
copied from a peer: the check only reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from director.config import Config
from director.config.peer import PeerCheckSettings, read_key
from director.control.protocol import Handler, RequestError
from director.http import HttpServer, Request, Response, Routes
from director.metrics import Metrics
from director.offload import forked_bytes
from director.peer import auth
from director.peer.canonical import (
    Form,
    canonical_form,
    digest,
    encode,
    encode_lines,
    next_generation,
)
from director.peer.client import CANONICAL_PATH, DETAILS_TIMEOUT, DIGEST_PATH, PeerClient
from director.peer.diff import describe, differences, sections, summary
from director.peer.state import Answered, Failed, PeerTracker, Verdict
from director.statefile import StateFileError, load_json, set_aside, write_json

log = structlog.get_logger("director")

GENERATION_FILE = "config-generation.json"
PEER_CONNECTIONS = 8
MAX_QUESTION = 4096  # bytes of a request's body


@dataclass(frozen=True)
class Snapshot:
    """The running config as the peers see it."""

    settings: PeerCheckSettings | None
    key: bytes | None
    form: Form
    digest: str
    generation: int
    digest_body: bytes  # the answer to DIGEST_PATH
    canonical_body: bytes  # the answer to CANONICAL_PATH
    canonical_hash: str  # its SHA-256 (megabytes for a big config: hashed once, not per answer)


def _digest_of(config: Config) -> bytes:
    return digest(canonical_form(config, None)).encode()


def _answers(form: Form, config_digest: str, generation: int) -> tuple[bytes, bytes, str]:
    head = {"digest": config_digest, "generation": generation}
    canonical = encode_lines(head, form)
    return encode(head), canonical, auth.body_hash(canonical)


def _validate_generation(document: object) -> tuple[str, int]:
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    found_digest, generation = document.get("digest"), document.get("generation")
    if not isinstance(found_digest, str) or len(found_digest) != 64:
        raise ValueError(f"digest: expected 64 hex digits, found {found_digest!r}")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise ValueError(f"generation: expected an integer from 1, found {generation!r}")
    return found_digest, generation


class PeerServer(HttpServer):
    """The endpoint the peers ask (``[peer_check] listen_address``): the daemon's capped HTTP
    listener, serving the peer paths only."""

    what = "peer_check"
    label = "peer_check"
    max_body = MAX_QUESTION  # a larger question is a 413 (request too large)

    def __init__(self, check: PeerCheck, address: str) -> None:
        super().__init__(address, max_connections=PEER_CONNECTIONS)
        self.check = check

    def routes(self) -> Routes:
        return {
            DIGEST_PATH: {"POST": self.check.answer},
            CANONICAL_PATH: {"POST": self.check.answer},
        }


class PeerCheck:
    """See the module docstring. ``clock``: wall time (the peers compare clocks); ``random``:
    bytes for nonces."""

    def __init__(
        self,
        metrics: Metrics,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.metrics = metrics
        self.state_path = state_dir / GENERATION_FILE
        self.clock = clock
        self.random = random
        self.snapshot: Snapshot | None = None
        self.trackers: dict[str, PeerTracker] = {}
        self.server: PeerServer | None = None
        self._guard = auth.ReplayGuard(30.0)
        self._session: aiohttp.ClientSession | None = None
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    # -- the running config ---------------------------------------------------------------------

    async def apply(self, config: Config, key: bytes | None) -> None:
        """Take ``config`` (at start and after each accepted reload): its digest, the generation
        (one more when the digest changed, kept in ``state_dir``), the endpoint and the pollers
        its ``[peer_check]`` asks for; every peer is polled again at once when the digest
        changed."""
        settings = config.peer_check
        if settings is None:
            # No peer asks for the form: only the digest, made in a child process (a
            # 100,000-server form and its encoding are ~250 MB at their peak that would stay
            # in the daemon's heap as fragments, and seconds of encoding holding its GIL).
            form: Form = {}
            config_digest = (await forked_bytes(functools.partial(_digest_of, config))).decode()
        else:
            form = await asyncio.to_thread(canonical_form, config, key)
            config_digest = await asyncio.to_thread(digest, form)
        generation = await self._generation(config_digest)
        if settings is None:
            answers = (encode({"digest": config_digest, "generation": generation}), b"", "")
        else:
            answers = await asyncio.to_thread(_answers, form, config_digest, generation)
        before = self.snapshot
        self.snapshot = Snapshot(settings, key, form, config_digest, generation, *answers)
        if before is None or before.digest != config_digest:
            log.info(
                "config_digest",
                digest=config_digest[:16],
                generation=generation,
                peers=list(settings.peers) if settings else [],
            )
        if before is None or before.settings != settings or before.key != key:
            await self._restart(settings)
        elif before.digest != config_digest:
            for event in self._wake.values():
                event.set()

    async def _generation(self, config_digest: str) -> int:
        stored: tuple[str, int] | None = None
        if self.snapshot is not None:
            stored = (self.snapshot.digest, self.snapshot.generation)
        else:
            try:
                stored = await asyncio.to_thread(load_json, self.state_path, _validate_generation)
            except StateFileError as exc:
                moved = await asyncio.to_thread(set_aside, self.state_path)
                log.error("state_file_corrupt", file=str(exc.path), problem=exc.problem,
                          moved_to=str(moved) if moved else None)  # fmt: skip
        generation = next_generation(stored, config_digest)
        if stored is None or stored != (config_digest, generation):
            try:
                await asyncio.to_thread(
                    write_json,
                    self.state_path,
                    {"digest": config_digest, "generation": generation},
                )
            except OSError as exc:
                log.warning("state_file_write_failed", file=GENERATION_FILE, error=str(exc))
        return generation

    async def _restart(self, settings: PeerCheckSettings | None) -> None:
        await self._stop_parts()
        if settings is None:
            return
        self._guard = auth.ReplayGuard(settings.max_clock_skew)
        self.trackers = {peer: PeerTracker(peer) for peer in settings.peers}
        server = PeerServer(self, settings.listen_address)
        try:
            await server.start()
        except OSError as exc:
            log.error("listen_failed", what="peer_check", address=settings.listen_address,
                      error=str(exc))  # fmt: skip
        else:
            self.server = server
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
            connector=aiohttp.TCPConnector(limit=len(settings.peers) * 2, force_close=True),
        )
        loop = asyncio.get_running_loop()
        for peer in settings.peers:
            wake = self._wake[peer] = asyncio.Event()
            self._pollers[peer] = loop.create_task(
                self._poll_forever(peer, wake), name=f"peer-check-{peer}"
            )

    async def _stop_parts(self) -> None:
        pollers, self._pollers = self._pollers, {}
        self._wake = {}
        for task in pollers.values():
            task.cancel()
        await asyncio.gather(*pollers.values(), return_exceptions=True)
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        self.trackers = {}

    async def stop(self) -> None:
        await self._stop_parts()

    # -- answering the peers --------------------------------------------------------------------

    async def answer(self, request: Request) -> Response:
        snap = self.snapshot
        if snap is None or snap.key is None:
            return Response.text(503, "not ready")
        key = auth.auth_key(snap.key)
        if len(request.body) > MAX_QUESTION:  # PeerServer refuses them before: never here
            return Response.text(413, "request too large")
        body = request.body
        now = self.clock()
        refusal = auth.verify_request(
            key, request.method, request.path, body, request.headers, now, self._guard
        )
        if refusal is not None:
            self.metrics.peer_refused(refusal.reason)
            log.warning("peer_request_refused", reason=refusal.reason, remote=request.remote,
                        path=request.path)  # fmt: skip
            return Response.text(refusal.status, refusal.text)
        self._heard(body)
        nonce = request.headers[auth.NONCE]
        if request.path == DIGEST_PATH:
            payload = snap.digest_body
            headers = auth.sign_response(key, nonce, 200, payload, now)
        else:
            payload = snap.canonical_body
            headers = auth.sign_response(key, nonce, 200, payload, now, snap.canonical_hash)
        return Response(200, payload, {**headers, "Content-Type": "application/json"})

    def _heard(self, body: bytes) -> None:
        """An authenticated peer told us its digest: ask it back at once when that is news."""
        try:
            question = json.loads(body)
        except ValueError:
            return
        if not isinstance(question, dict):
            return
        asker = str(question.get("from"))
        tracker, wake = self.trackers.get(asker), self._wake.get(asker)
        if (
            tracker is not None
            and wake is not None
            and question.get("digest") != tracker.view.digest
        ):
            wake.set()

    def _question(self, snap: Snapshot) -> bytes:
        assert snap.settings is not None
        return encode(
            {"from": snap.settings.listen_address, "digest": snap.digest,
             "generation": snap.generation}
        )  # fmt: skip

    # -- asking the peers -----------------------------------------------------------------------

    def _client(self, snap: Snapshot) -> PeerClient:
        assert snap.settings is not None and snap.key is not None
        return PeerClient(
            snap.key,
            timeout=snap.settings.timeout,
            window=snap.settings.max_clock_skew,
            clock=self.clock,
            random=self.random,
        )

    async def _poll_forever(self, peer: str, wake: asyncio.Event) -> None:
        while True:
            snap = self.snapshot
            assert snap is not None and snap.settings is not None
            try:
                await self.poll(peer)
            except Exception:  # a bug must not end the polling
                log.exception("peer_poll_failed", peer=peer)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(snap.settings.interval):
                    await wake.wait()
            wake.clear()

    async def poll(self, peer: str) -> None:
        """Ask ``peer`` once, compare, record, log a change."""
        snap, session = self.snapshot, self._session
        tracker = self.trackers.get(peer)
        if snap is None or session is None or tracker is None:
            return
        client = self._client(snap)
        answer = await client.ask(session, peer, DIGEST_PATH, self._question(snap))
        found: tuple[str, ...] | None = None
        if isinstance(answer, Failed):
            outcome: Answered | Failed = answer
        else:
            theirs, generation = answer.get("digest"), answer.get("generation")
            if not isinstance(theirs, str) or not isinstance(generation, int):
                outcome = Failed(Verdict.UNREACHABLE, "the peer's answer has no digest")
            else:
                outcome = Answered(theirs, generation)
                if tracker.needs_details(snap.digest, theirs):
                    found = await self._what_differs(client, session, peer, snap)
        if self.snapshot is not snap:  # reloaded meanwhile: the next poll compares again
            return
        changed = tracker.polled(outcome, snap.digest, self.clock(), found)
        if changed is not None:
            _log_change(changed.view.as_dict(), changed.previous, snap.generation)

    async def _what_differs(
        self, client: PeerClient, session: aiohttp.ClientSession, peer: str, snap: Snapshot
    ) -> tuple[str, ...] | None:
        answer = await client.ask(
            session, peer, CANONICAL_PATH, self._question(snap), DETAILS_TIMEOUT
        )
        if isinstance(answer, Failed) or not isinstance(answer.get("canonical"), dict):
            return None
        diffs = await asyncio.to_thread(differences, snap.form, answer["canonical"])
        return tuple(sections(diffs))

    # -- reading ------------------------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        """For ``directorctl status``, the status page and the metrics."""
        snap = self.snapshot
        return {
            "digest": snap.digest if snap else None,
            "generation": snap.generation if snap else None,
            "listen_address": snap.settings.listen_address if snap and snap.settings else None,
            "peers": [t.view.as_dict() for t in self.trackers.values()],
        }

    async def diff_peer(self, peer: str | None) -> dict[str, object]:
        """``directorctl diff-peer``: each peer's (or ``peer``'s) canonical form compared with
        ours, difference by difference. ValueError when there is no such peer."""
        snap, session = self.snapshot, self._session
        if snap is None or snap.settings is None or session is None:
            raise ValueError(
                "no [peer_check] in the running config: add listen_address, peers and "
                "key_file (docs/configuration.md, [peer_check]) and reload"
            )
        peers = list(snap.settings.peers)
        if peer is not None:
            if peer not in peers:
                raise ValueError(f"{peer} is not a configured peer (peers: {', '.join(peers)})")
            peers = [peer]
        client = self._client(snap)
        question = self._question(snap)
        results = await asyncio.gather(
            *(client.ask(session, p, CANONICAL_PATH, question, DETAILS_TIMEOUT) for p in peers)
        )
        out: list[dict[str, object]] = []
        for name, answer in zip(peers, results, strict=True):
            entry: dict[str, Any] = {"peer": name, "here": _head(snap)}
            if isinstance(answer, Failed):
                entry.update(state=answer.verdict.value, error=answer.detail)
            elif not isinstance(answer.get("canonical"), dict):
                entry.update(state=Verdict.UNREACHABLE.value, error="no canonical form sent")
            else:
                diffs = await asyncio.to_thread(differences, snap.form, answer["canonical"])
                entry["there"] = {
                    "digest": answer.get("digest"),
                    "generation": answer.get("generation"),
                }
                entry["state"] = (Verdict.MISMATCH if diffs else Verdict.MATCH).value
                entry["differences"] = [describe(d) for d in diffs]
            out.append(entry)
        return {"peers": out}


def _head(snap: Snapshot) -> dict[str, object]:
    return {"digest": snap.digest, "generation": snap.generation}


def _log_change(view: dict[str, Any], previous: Verdict, generation: int) -> None:
    peer, state = view["peer"], view["state"]
    if state == Verdict.MATCH:
        log.info("peer_config_match", peer=peer, generation=generation,
                 peer_generation=view["generation"], previous=previous.value)  # fmt: skip
    elif state == Verdict.MISMATCH:
        differs = list(view["differs"])
        what = summary(differs) if differs else "details could not be fetched"
        log.warning(
            "peer_config_mismatch",
            peer=peer,
            differs=differs,
            generation=generation,
            peer_generation=view["generation"],
            problem=f"config differs from peer {peer}: {what}; run directorctl diff-peer {peer}",
        )
    elif state == Verdict.UNAUTHENTICATED:
        log.error("peer_unauthenticated", peer=peer, error=view["detail"])
    else:
        log.warning("peer_unreachable", peer=peer, error=view["detail"])


def control_handlers(check: PeerCheck) -> dict[str, Handler]:
    """The control command ``diff-peer`` (``{"peer": ADDRESS:PORT}`` or every peer)."""

    async def diff_peer(args: dict[str, Any]) -> object:
        peer = args.get("peer")
        if peer is not None and not isinstance(peer, str):
            raise RequestError(f"peer: expected ADDRESS:PORT, found {peer!r}")
        try:
            return await check.diff_peer(peer)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc

    return {"diff-peer": diff_peer}


def peer_connections(config: Config) -> int:
    """Descriptors the peer check may hold: its listener's clients, two per peer asked."""
    if config.peer_check is None:
        return 0
    return PEER_CONNECTIONS + 2 * len(config.peer_check.peers)


def load_key(config: Config) -> bytes | None:
    """The shared key ``config`` names (read from its key_file), None without ``[peer_check]``;
    :class:`~director.config.peer.KeyFileError` says what is wrong with the file."""
    if config.peer_check is None:
        return None
    return read_key(config.peer_check.key_file)
