"""What this director knows of each peer's config, and when that is worth a log line (pure).

A poll of a peer ends in one of: the peer's digest and generation (then compared with ours:
``match`` or ``mismatch``), ``unreachable`` (no answer, a timeout, an HTTP error) or
``unauthenticated`` (the peer refused our signature, or its answer is not signed with our key).
Before the first poll a peer is ``unknown``. :class:`PeerTracker` keeps the verdict, since when,
and what differs, and says when the verdict changed in a way a person should hear about:
another state, or a mismatch that now concerns other digests (either side changed again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    UNKNOWN = "unknown"
    MATCH = "match"
    MISMATCH = "mismatch"
    UNREACHABLE = "unreachable"
    UNAUTHENTICATED = "unauthenticated"


@dataclass(frozen=True)
class Answered:
    """The peer answered, authenticated: its digest and generation."""

    digest: str
    generation: int


@dataclass(frozen=True)
class Failed:
    """A peer that could not be asked, and why."""

    verdict: Verdict  # UNREACHABLE or UNAUTHENTICATED
    detail: str


Outcome = Answered | Failed


@dataclass(frozen=True)
class Changed:
    """A verdict worth a log line."""

    peer: str
    previous: Verdict
    view: PeerView


@dataclass
class PeerView:
    """What is known of one peer."""

    peer: str
    verdict: Verdict = Verdict.UNKNOWN
    since: float | None = None  # wall time of the last change of verdict
    detail: str | None = None  # why unreachable / unauthenticated
    digest: str | None = None  # the peer's, as last heard
    generation: int | None = None
    our_digest: str | None = None  # ours when it was compared
    sections: tuple[str, ...] = ()  # what differs (a mismatch whose details were fetched)
    compared: tuple[str, str] | None = None  # (ours, theirs) that ``sections`` describes
    last_contact: float | None = None  # wall time of the last authenticated answer
    _logged: tuple[object, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "peer": self.peer,
            "state": self.verdict.value,
            "since": self.since,
            "detail": self.detail,
            "digest": self.digest,
            "generation": self.generation,
            "differs": list(self.sections),
            "last_contact": self.last_contact,
        }


class PeerTracker:
    """One peer's verdict, fed with each poll's outcome."""

    def __init__(self, peer: str) -> None:
        self.view = PeerView(peer)

    def polled(
        self,
        outcome: Outcome,
        ours: str,
        now: float,
        sections: tuple[str, ...] | None = None,
    ) -> Changed | None:
        """Record a poll's outcome (``ours``: our digest now; ``sections``: what differs, when
        the peer's canonical form was fetched and compared). A :class:`Changed` when a person
        should hear of it."""
        view = self.view
        previous = view.verdict
        if isinstance(outcome, Answered):
            verdict = Verdict.MATCH if outcome.digest == ours else Verdict.MISMATCH
            view.digest, view.generation = outcome.digest, outcome.generation
            view.our_digest = ours
            view.detail = None
            view.last_contact = now
            pair = (ours, outcome.digest)
            if verdict is Verdict.MATCH:
                view.sections, view.compared = (), None
            elif sections is not None:
                view.sections, view.compared = sections, pair
            elif view.compared != pair:  # what differed before says nothing of these digests
                view.sections, view.compared = (), None
        else:
            verdict = outcome.verdict
            view.detail = outcome.detail
        if verdict is not previous:
            view.verdict = verdict
            view.since = now
        # Logged once per verdict; a mismatch again when either digest moves.
        key: tuple[object, ...] = (verdict,)
        if verdict is Verdict.MISMATCH:
            key = (verdict, ours, view.digest)
        if key == view._logged:
            return None
        view._logged = key
        return Changed(view.peer, previous, view)

    def needs_details(self, ours: str, theirs: str) -> bool:
        """Whether the peer's canonical form should be fetched to say what differs: their
        digest differs from ours and this pair of digests was not compared yet."""
        return ours != theirs and self.view.compared != (ours, theirs)
