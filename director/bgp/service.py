"""Route health injection in the running daemon: ``[bgp]`` -> decisions -> the speaker.

:class:`BgpService` is what the application object talks to. After every health sync, reload,
drain or resync it is given the health and maintenance state; it counts each service's healthy
real servers, lets :class:`director.bgp.decision.RouteHealth` decide (quorum, hysteresis,
drain, stop) and tells the speaker which routes to announce: ExaBGP as a child
(:mod:`director.bgp.exabgp`) or kernel routes for BIRD/FRR (:mod:`director.bgp.kernel_routes`).
Without ``[bgp]`` it does nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from director.bgp.decision import RouteHealth, healthy_counts
from director.config.bgp import Announce, BgpSettings
from director.config.model import Config
from director.ipvs.model import DestKey, ServiceKey
from director.statefile import StateFileError, load_json, set_aside, write_atomic

if TYPE_CHECKING:  # the speakers and the VIP device are imported with a [bgp] table only
    from director.bgp.exabgp_api import Route
    from director.bgp.vips import VipDevice

log = structlog.get_logger("director.bgp")

SUN_PATH_MAX = 107
DRAIN_FILE = "director-drain.json"  # directorctl drain-director: survives a restart


class Speaker(Protocol):
    async def start(self) -> None: ...

    def announce(self, routes: Sequence[Route]) -> None: ...

    async def stop(self) -> None: ...

    def summary(self) -> dict[str, object]: ...


def route_of(bgp: BgpSettings, a: Announce) -> Route:
    from director.bgp.exabgp_api import Route

    return Route(a.prefix, bgp.next_hop_for(a.prefix), a.communities, a.med)


def runtime_dir_for(state_dir: Path) -> Path:
    """Where ExaBGP's config, log and API socket go: ``STATE_DIR/bgp``, or a private temporary
    directory when that would make the socket path too long for a Unix socket."""
    wanted = state_dir / "bgp"
    if len(str(wanted / "exabgp.sock").encode()) <= SUN_PATH_MAX:
        return wanted
    import tempfile  # only here: a start without [bgp] does not import it (and shutil, bz2, lzma)

    return Path(tempfile.mkdtemp(prefix="director-bgp-"))


def _speaker_key(bgp: BgpSettings) -> object:
    """What a running speaker was built from; a reload that changes it restarts the speaker."""
    return bgp.model_copy(update={"announcements": (), "drain_timeout": 0.0})


class BgpService:
    def __init__(
        self,
        config: Config,
        state_dir: Path,
        *,
        make_speaker: Callable[[BgpSettings, Path], Speaker] | None = None,
        clock: Callable[[], float] = time.monotonic,
        netns: str | None = None,  # tests: the namespace of vip_device
    ) -> None:
        self.bgp = config.bgp
        self.state_dir = state_dir
        self.clock = clock
        self.make_speaker = make_speaker or default_speaker
        self.routes = RouteHealth(self.bgp.announcements if self.bgp else (), clock())
        self.speaker: Speaker | None = None
        self.vips: VipDevice | None = None
        self.netns = netns
        self.drained = False
        self.drain_since: float | None = None  # wall clock
        self.drain_until: float | None = None  # established flows may run until then
        self.stopping = False
        self.problem: str | None = None  # a drain file that could not be read

    # -- drain-director ---------------------------------------------------------------------------

    def load_drain(self) -> None:
        """The drain a previous run left in force (a corrupt file is set aside: not drained)."""
        path = self.state_dir / DRAIN_FILE
        try:
            doc = load_json(path, _drain_doc)
        except StateFileError as exc:
            self.problem = f"{exc}; set aside, the director is not drained"
            set_aside(path)
            log.error("bgp_drain_file_bad", error=str(exc))
            return
        if doc is not None:
            self.drained, self.drain_since, self.drain_until = True, doc[0], doc[1]

    def set_drained(
        self, drained: bool, wall: float, timeout: float | None = None
    ) -> dict[str, object]:
        """Drain (withdraw every route, keep serving the flows that still arrive) or end it.
        Written to the drain file first: what is answered is what a restart will find."""
        path = self.state_dir / DRAIN_FILE
        if drained:
            if timeout is None:
                timeout = self.bgp.drain_timeout if self.bgp else 0.0
            since = self.drain_since if self.drained and self.drain_since else wall
            until = wall + timeout
            write_atomic(path, json.dumps({"since": since, "until": until}).encode())
            self.drained, self.drain_since, self.drain_until = True, since, until
            log.warning("director_drained", until=until)
        else:
            path.unlink(missing_ok=True)
            self.drained, self.drain_since, self.drain_until = False, None, None
            log.info("director_enabled")
        return self.drain_view(wall)

    def drain_view(self, wall: float) -> dict[str, object]:
        return {
            "drained": self.drained,
            "since": self.drain_since,
            "until": self.drain_until,
            "seconds_left": (
                round(max(0.0, self.drain_until - wall), 1) if self.drain_until else None
            ),
        }

    async def _place_vips(self) -> None:
        device = self.bgp.vip_device if self.bgp else None
        if self.vips is not None and self.vips.device != device:
            await self.vips.place([])  # the device changed: ours go from the old one
            self.vips = None
        if device is None:
            return
        if self.vips is None:
            from director.bgp.vips import VipDevice

            self.vips = VipDevice(device, self.netns)
        assert self.bgp is not None
        await self.vips.place(a.address for a in self.bgp.announcements)

    async def start(self) -> None:
        if self.bgp is None:
            return
        await self._place_vips()
        self.speaker = self.make_speaker(self.bgp, runtime_dir_for(self.state_dir))
        await self.speaker.start()
        log.info("bgp_started", backend=self.bgp.backend, routes=len(self.bgp.announcements))

    async def reload(self, config: Config) -> None:
        old, new = self.bgp, config.bgp
        self.bgp = new
        now = self.clock()
        self.routes.reconfigure(new.announcements if new else (), now)
        changed = old is not None and (new is None or _speaker_key(old) != _speaker_key(new))
        if changed and self.speaker is not None:
            await self.speaker.stop()  # withdraws first
            self.speaker = None
        if new is not None and self.speaker is None:
            await self.start()
        else:
            await self._place_vips()
        self._push()

    def update(
        self,
        config: Config,
        health: Mapping[tuple[ServiceKey, DestKey], bool],
        overrides: Mapping[tuple[ServiceKey, DestKey], str] | None = None,
    ) -> None:
        if self.bgp is None:
            return
        counts = healthy_counts(config, health, overrides)
        changes = self.routes.update(
            counts, self.clock(), drained=self.drained, stopping=self.stopping
        )
        for change in changes:
            state = change.state
            (log.info if state.announced else log.warning)(
                "bgp_route_announced" if state.announced else "bgp_route_withdrawn",
                prefix=str(state.prefix),
                reason=state.reason,
            )
        self._push()

    def _push(self) -> None:
        if self.speaker is not None and self.bgp is not None:
            self.speaker.announce([route_of(self.bgp, a) for a in self.routes.announced()])

    async def stop(self) -> None:
        self.stopping = True
        if self.bgp is not None:
            for change in self.routes.update({}, self.clock(), stopping=True):
                log.info("bgp_route_withdrawn", prefix=str(change.state.prefix), reason="stopping")
            self._push()  # withdraw everything before the speaker goes
        if self.speaker is not None:
            await self.speaker.stop()  # withdraws everything, then stops
            self.speaker = None
        if self.vips is not None:  # after the withdrawal: no traffic comes any more
            await self.vips.place([])

    def summary(self) -> dict[str, object] | None:
        if self.bgp is None:
            return None
        return {
            "backend": self.bgp.backend,
            "drain": self.drain_view(time.time()),
            "problem": self.problem,
            "vip_errors": self.vips.errors if self.vips is not None else [],
            "routes": self.routes.to_json(self.clock()),
            "speaker": self.speaker.summary() if self.speaker is not None else None,
        }


def _drain_doc(doc: object) -> tuple[float, float]:
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), int | float) and not isinstance(doc.get(k), bool)
        for k in ("since", "until")
    ):
        raise ValueError('expected {"since": SECONDS, "until": SECONDS}')
    return float(doc["since"]), float(doc["until"])


def default_speaker(bgp: BgpSettings, runtime_dir: Path) -> Speaker:
    if bgp.backend == "kernel":
        from director.bgp.kernel_routes import KernelRoutes

        return KernelRoutes(bgp)
    from director.bgp.exabgp import ExaBgp

    return ExaBgp(bgp, runtime_dir)
