"""Health checks for the daemon: config -> checks, probes run on the event loop, results -> health.

Each real server with a check becomes one :class:`checks.model.Check` keyed by
(service key, destination key), the same key the desired-state compiler uses, so the scheduler's
health map feeds :func:`director.desired.compile_table` directly. A reload replaces the checks;
those whose target and settings did not change keep their state and timing.

A probe that could not run for a reason of this director's own (out of file descriptors, ports,
memory: :mod:`checks.local`) changes no verdict; :meth:`HealthChecks.local_faults` sums them up
for status and ``directorctl doctor``, the runner logs ``probe_local_failure``, and ``on_probe``
sees them (``ProbeResult.local``) for the metrics. Script checks run as their ``user`` or
``[daemon] script_user`` (:mod:`checks.identity`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog

from checks import identity
from checks.identity import RunAs
from checks.local import LocalFaults
from checks.model import Check, CheckParams, HealthChanged, ProbeResult, StartProbe
from checks.probes.result import Target
from checks.runner import Done, Runner
from checks.schedule import Scheduler, Taken
from director.config import Config
from director.config.checks import ResolvedCheck
from director.ipvs.model import DestKey, ServiceKey

if TYPE_CHECKING:  # the probes are imported when a check needs them (_probes)
    from checks.probes import dispatch, http
    from checks.probes.poller import FastProbe, Poller
    from checks.regex import Regex

CheckId = tuple[ServiceKey, DestKey]
# The scheduling settings a resolved config check hands to the scheduler, named alike in both.
_PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(CheckParams))
log = structlog.get_logger("director.checks")
T = TypeVar("T")
# s between two refreshes of the checks' summary rows (HealthChecks). Every second, a refresh
# at 10,000 checks a second remade 10,000 rows in one callback: 20 ms or more in 91 of about
# 100, up to 49 ms (bench.scale --profile gc, the loop's callbacks timed); a fifth as many at
# a time, the same work in shorter pieces.
ROWS_EVERY = 0.2


@dataclass(frozen=True)
class ProbeJob:
    """What one probe needs: where, what, how long. Frozen and comparable, for reloads.
    ``plan`` is its fast probe, prepared once (None for the types that have none)."""

    target: Target
    spec: dispatch.Spec
    timeout: float
    kind: str
    plan: dispatch.FastPlan | None = dataclasses.field(init=False, repr=False, compare=False)
    # The metrics' "target" label, "198.18.1.11:80" (formatted once, not per probe).
    label: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from checks.probes import dispatch

        object.__setattr__(self, "plan", dispatch.plan(self.target, self.spec, self.timeout))
        object.__setattr__(self, "label", f"{self.target.address}:{self.target.port}")


def probe_spec(check: ResolvedCheck, user: RunAs | None = None) -> dispatch.Spec:
    """The probe settings of a resolved config check (``user``: who a script runs as). A
    regex RE2 cannot take raises :class:`checks.regex.RegexError` (validation refuses them).
    The probe modules are imported here, by the first check that needs one: a config without
    checks starts without them (and without aiohttp's client parts and RE2)."""
    from checks.probes import exchange, http, rdp, script, smtp, tcp
    from checks.regex import Regex

    tls = check.type == "https"
    if check.type == "tcp":
        expect: bytes | Regex[bytes] | None = None
        if check.expect is not None:
            raw = check.expect.encode()
            expect = Regex(raw) if check.expect_regex else raw
        send = check.send.encode() if check.send is not None else None
        return tcp.TcpSpec(send=send, expect=expect)
    if check.type in ("http", "https"):
        auth = (check.username, check.password) if check.username and check.password else None
        return http.HttpSpec(
            method=check.method,
            path=check.path,
            host=check.host,
            expect_status=check.expect_status,
            body_contains=check.body_contains,
            body_regex=Regex(check.body_regex) if check.body_regex else None,
            basic_auth=auth,
            http_version=check.http_version,
            tls=tls,
            server_name=check.sni,
            verify=check.verify,
            ca_file=check.ca_file,
        )
    if check.type == "exchange":
        return exchange.ExchangeSpec(
            vdirs=check.vdirs,
            mode=check.mode,
            host=check.host,
            server_name=check.sni,
            verify=check.verify,
            ca_file=check.ca_file,
        )
    if check.type == "rdp":
        return rdp.RdpSpec()
    if check.type == "smtp":
        return smtp.SmtpSpec(
            helo_name=check.helo_name,
            starttls=check.starttls,
            server_name=check.sni,
            verify=check.verify,
            ca_file=check.ca_file,
        )
    if check.type == "script":
        return script.ScriptSpec(
            argv=check.command, weight_from_exit=check.weight_from_exit, user=user
        )
    raise ValueError(f"no probe for check type {check.type!r}")


def build_checks(config: Config) -> list[Check[ProbeJob]]:
    """One check per real server that has one. Script users are looked up here (ValueError if
    one no longer exists: validation checked it when the file was read)."""
    out: list[Check[ProbeJob]] = []
    users: dict[str, RunAs] = {}
    # Equal jobs and params are one object: 10,000 services checking the same real server the
    # same way share its (frozen) description. Each check keeps its own id, policy, timing and
    # verdict; only what to probe and how is shared, never a result.
    shared: dict[object, Any] = {}
    for vs in config.virtual_servers:
        key = vs.service_key()
        for rs in vs.real_servers:
            resolved = rs.health_check(vs)
            if resolved is None:
                continue
            user = None
            name = resolved.user or config.daemon.script_user
            if resolved.type == "script" and name is not None:
                user = users.get(name)
                if user is None:
                    user = users[name] = identity.resolve(name)
            job = ProbeJob(
                target=Target(rs.address, resolved.port),
                spec=probe_spec(resolved, user),
                timeout=resolved.timeout,
                kind=resolved.type,
            )
            params = CheckParams(**{name: getattr(resolved, name) for name in _PARAM_FIELDS})
            job, params = _shared(shared, job), _shared(shared, params)
            out.append(Check(id=(key, rs.dest_key(vs)), spec=job, params=params))
    return out


def summarize(taken: Taken[ProbeJob]) -> list[dict[str, object]]:
    """The checks' summary (:meth:`HealthChecks.summary`) from rows taken earlier (pure: may
    run in a worker thread). A row names its check by index into ``taken.checks`` and its
    phase by value (``Phase.UP.value == "up"``, as status shows it), and keeps its last
    outcome as a plain tuple (ok, latency, error, ...): see :data:`checks.schedule.Row`."""
    out: list[dict[str, object]] = []
    names: dict[object, str] = {}  # a service's key is formatted once, not once per server
    checks = taken.checks
    for index, up, phase, transitions, last in taken.rows:
        check = checks[index]
        service, dest = cast(CheckId, check.id)
        job = check.spec
        name = names.get(service)
        if name is None:
            name = names[service] = str(service)
        out.append(
            {
                "service": name,
                "destination": str(dest),
                "type": job.kind,
                "target": job.label,
                "up": up,
                "phase": phase,
                "transitions": transitions,
                "last_ok": None if last is None else last[0],
                "last_latency_ms": None if last is None else round(last[1] * 1000, 2),
                "last_error": None if last is None else last[2],
            }
        )
    return out


def _shared(seen: dict[object, Any], value: T) -> T:
    """The first equal value seen (``value`` itself when it is new or cannot be hashed)."""
    try:
        return cast(T, seen.setdefault(value, value))
    except TypeError:
        return value


Observer = Callable[[ProbeJob, ProbeResult], None]


class ProbeObserver:
    """An ``on_probe`` with an ok form, as the runner's :class:`checks.runner.FastDone` has:
    ``observer(job, result)`` for any result, and ``observer.ok(job, latency)`` for a good one
    without a weight or an error, which must do what the call would do with
    ``ProbeResult(True, latency, None)``. A fast probe's good result then goes to the observer
    and ends in the runner's ok path with no result object (:class:`_Observed`)."""

    __slots__ = ("call", "ok")

    def __init__(self, call: Observer, ok: Callable[[ProbeJob, float], None]) -> None:
        self.call = call
        self.ok = ok

    def __call__(self, job: ProbeJob, result: ProbeResult) -> None:
        self.call(job, result)


class _Observed:
    """The ``done`` of the fast probes when there is an ``on_probe``: the observer sees the
    result, then the runner's ``done`` gets it. Its ``ok(start, latency, now)`` (the poller's
    good-result form, see :class:`checks.runner.FastDone`) is there when both the observer and
    the runner's ``done`` have an ok form (else None: the poller then builds a result). The
    probe's tag is its ``StartProbe``, whose ``spec`` is the job (no context tuple per
    probe)."""

    __slots__ = ("done", "done_ok", "observer", "ok", "seen_ok")

    def __init__(self, done: Done[ProbeJob], observer: Observer) -> None:
        self.done = done
        self.observer = observer
        self.seen_ok: Callable[[ProbeJob, float], None] | None = getattr(observer, "ok", None)
        self.done_ok: Callable[[StartProbe[ProbeJob], float, float], None] | None = getattr(
            done, "ok", None
        )
        self.ok = self._ok if self.seen_ok is not None and self.done_ok is not None else None

    def __call__(self, start: StartProbe[ProbeJob], result: ProbeResult) -> None:
        try:
            self.observer(start.spec, result)
        except Exception:
            log.exception("probe observer failed", target=str(start.spec.target))
        self.done(start, result)

    def _ok(self, start: StartProbe[ProbeJob], latency: float, now: float) -> None:
        seen_ok, done_ok = self.seen_ok, self.done_ok
        assert seen_ok is not None and done_ok is not None  # (or ok would be None)
        try:
            seen_ok(start.spec, latency)
        except Exception:
            log.exception("probe observer failed", target=str(start.spec.target))
        done_ok(start, latency, now)


class HealthChecks:
    """The daemon's checks: a scheduler, its asyncio runner and the shared HTTP client."""

    def __init__(
        self,
        on_change: Callable[[list[HealthChanged]], None],
        *,
        max_in_flight: int = 256,
        rng: random.Random | None = None,
        on_probe: Observer | None = None,
        local_faults: LocalFaults | None = None,
    ) -> None:
        self.scheduler: Scheduler[ProbeJob] = Scheduler(
            rng or random.Random(), max_in_flight=max_in_flight
        )
        self._http_prober: http.HttpProber | None = None  # made by the first probe (_http)
        self._poller: Poller | None = None  # its fast probes' poller, once a probe needs it
        self._local = local_faults if local_faults is not None else LocalFaults()
        self.runner = Runner(
            self.scheduler, self._probe, on_change, fast=self._start, local_faults=self._local
        )
        self._started = False
        self._rows_timer: asyncio.TimerHandle | None = None  # the rows' refresh (ROWS_EVERY)
        # Called with each probe's job and result (the metrics: latency, results, local
        # failures); pass it here (the attribute stays for callers that set it). A
        # ProbeObserver's ok form takes the fast probes' good results (see _Observed).
        self.on_probe = on_probe
        self._observed: _Observed | None = None  # the done of the fast probes, observed

    @property
    def _http(self) -> http.HttpProber:
        """The HTTP(S) probes' client and the fast probes' poller, made when a probe first needs
        it (a config without checks imports no probe module)."""
        if self._http_prober is None:
            from checks.probes import http

            self._http_prober = http.HttpProber()
        return self._http_prober

    async def _probe(self, job: ProbeJob) -> ProbeResult:
        from checks.probes import dispatch

        result = await dispatch.run(job.target, job.spec, job.timeout, self._http)
        if self.on_probe is not None:
            self.on_probe(job, result)
        return result

    def _start(
        self, job: ProbeJob, done: Done[ProbeJob], start: StartProbe[ProbeJob]
    ) -> FastProbe | None:
        """The runner's fast path: the job's prepared plan, if it has one."""
        plan = job.plan
        if plan is None:
            return None
        poller = self._poller  # the prober's, kept here: no HttpProber.start call per probe
        if poller is None or poller.closed:
            poller = self._poller = self._http.poller()
        observer = self.on_probe
        if observer is None:
            return poller.start(plan, done, start, start.started)
        observed = self._observed
        if observed is None or observed.done is not done or observed.observer is not observer:
            observed = self._observed = _Observed(done, observer)  # (once: the runner's done)
        return poller.start(plan, observed, start, start.started)

    def update(self, config: Config) -> None:
        """Start the checks of ``config``, or replace the running ones (keeping unchanged state)."""
        checks = build_checks(config)
        if not self._started:
            self.runner.start()
            self._started = True
            self.runner.add(checks)
            self._rows_timer = asyncio.get_running_loop().call_later(ROWS_EVERY, self._refresh_rows)
        else:
            self.runner.replace(checks)

    def health(self) -> Mapping[CheckId, bool]:
        return cast(Mapping[CheckId, bool], self.scheduler.health())

    def verdicts(self) -> dict[CheckId, bool]:
        """Up or down of the checks that have had at least one probe result (BGP announces on
        verdicts, not on the initial state)."""
        return {
            cast(CheckId, cid): st.state.up
            for cid, st in self.scheduler.snapshot().checks.items()
            if st.state.last is not None
        }

    def probe_targets(self) -> set[tuple[str, str]]:
        """(type, target) of every check now: the label pairs of the probe metrics (for
        ``Metrics.retain_probe_targets`` after a config change)."""
        return {
            (st.check.spec.kind, st.check.spec.label)
            for st in self.scheduler.snapshot().checks.values()
        }

    def local_faults(self) -> dict[str, object]:
        """Probes that could not run for a local reason since start (out of file descriptors,
        ports, memory: the director's fault; verdicts were left as they were). For status and
        ``directorctl doctor``: ``total``, ``by_reason`` ({"EMFILE": 12}), and of the last one
        ``last_reason``, ``last_error``, ``last_at`` (wall time) and ``last_seconds_ago``; the
        ``last_*`` keys are None when there was none."""
        faults = self._local
        out: dict[str, object] = {
            "total": faults.total,
            "by_reason": dict(faults.counts),
            "last_reason": None,
            "last_error": None,
            "last_at": None,
            "last_seconds_ago": None,
        }
        last = faults.last
        if last is not None:
            ago = max(0.0, self.runner.now() - last.at)
            out.update(
                last_reason=last.reason,
                last_error=last.error,
                last_at=round(time.time() - ago, 3),
                last_seconds_ago=round(ago, 3),
            )
        return out

    def summary(self) -> list[dict[str, object]]:
        """Per check: where, what, up or down, the last result; for status.json and directorctl."""
        return summarize(self.taken())

    def taken(self) -> Taken[ProbeJob]:
        """What :func:`summarize` needs of every check, taken now: one tuple each (immutable,
        made as results came in) and the list of checks they point into, so that on a
        100,000-check table the event loop spends milliseconds here and the dicts are built
        elsewhere."""
        return self.scheduler.rows()

    def _refresh_rows(self) -> None:
        """The summary rows made again for the results since the last refresh (see
        :meth:`Scheduler.refresh_rows`), so that taking them for a status or a scrape stays a
        copy, not the remaking of every row a round changed."""
        self._rows_timer = asyncio.get_running_loop().call_later(ROWS_EVERY, self._refresh_rows)
        self.scheduler.refresh_rows()

    async def stop(self) -> None:
        if self._rows_timer is not None:
            self._rows_timer.cancel()
            self._rows_timer = None
        if self._started:
            await self.runner.stop()
        if self._http_prober is not None:
            await self._http_prober.close()
