"""The status encoded a service at a time in a worker thread (director.status.encode_status) is
the text of the simple path (``json.dumps(build_status(...))``), the control reply with a
pre-encoded result is the same line, and the checks' summary built from what is taken on the loop
(HealthChecks.taken + summarize) is the summary the scheduler's snapshot gave."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from checks.model import ProbeResult
from director.config import parse_config
from director.control.protocol import Encoded, ok
from director.health import CheckId, HealthChecks, build_checks, summarize
from director.statefile import LatestWriter
from director.status import build_status, encode_status
from tests.unit.test_engine import setup
from tests.unit.test_status_page import inputs


def _variants() -> list[dict[str, Any]]:
    return [
        {},
        {"sections": {"peer_check": None, "process": {"pid": 1, "rss_bytes": 5}}},
        {"sections": {"bgp": None}},
        {"engine_status": {}},
        {"checks": lambda: []},
        {"role": None, "vrrp": [{"name": "v1", "state": "master"}]},
    ]


def test_encoded_status_is_the_simple_paths_text() -> None:
    for extra in _variants():
        i = inputs(**extra)
        simple = json.dumps(build_status(i), default=str)
        calls: list[int] = []

        def pause(calls: list[int] = calls) -> None:
            calls.append(1)

        assert encode_status(i, pause) == simple, extra
        assert calls  # the worker thread's pause ran (a service at a time)
        model = build_status(i)
        services = model.pop("services")
        last = json.dumps({**model, "services": services}, separators=(",", ":"), default=str)
        assert encode_status(i, services_last=True) == last, extra


def test_reply_with_an_encoded_result_is_the_same_line() -> None:
    for extra in _variants():
        model = build_status(inputs(**extra))
        assert ok(Encoded(json.dumps(model, default=str))) == ok(model)
    assert ok(Encoded("[]")) == ok([]) and ok(Encoded('"x"')) == ok("x")


def _reference_summary(checks: HealthChecks) -> list[dict[str, object]]:
    """The summary as it was built before (from the scheduler's snapshot, on the loop)."""
    out: list[dict[str, object]] = []
    for check_id, st in checks.scheduler.snapshot().checks.items():
        service, dest = cast(CheckId, check_id)
        last = st.state.last
        out.append(
            {
                "service": str(service),
                "destination": str(dest),
                "type": st.check.spec.kind,
                "target": f"{st.check.spec.target.address}:{st.check.spec.target.port}",
                "up": st.state.up,
                "phase": st.phase.name.lower(),
                "transitions": st.state.transitions,
                "last_ok": None if last is None else last.ok,
                "last_latency_ms": None if last is None else round(last.latency * 1000, 2),
                "last_error": None if last is None else last.error,
            }
        )
    return out


CHECKED = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.{i}"
port = 80
  [virtual_server.check]
  type = "{kind}"
  rise = 2
  fall = 2
  attempts = {attempts}
  [[virtual_server.real_server]]
  address = "198.18.1.1"
  [[virtual_server.real_server]]
  address = "198.18.2.{i}"
  port = 8080
"""


def test_summary_from_taken_rows_is_the_snapshots_summary() -> None:
    text = "".join(
        CHECKED.format(i=i, kind=("tcp", "http")[i % 2], attempts=1 + i % 3) for i in range(1, 9)
    )
    checks = HealthChecks(lambda changes: None, rng=random.Random(1))
    checks.scheduler.add(build_checks(parse_config(text)), 0.0)
    rng = random.Random(2)
    now = 0.0
    for n in range(40):  # probe results of every kind: ups, downs, errors, in between
        now += 1.0
        for start in checks.scheduler.due(now):
            ok_ = rng.random() < 0.6
            result = ProbeResult(ok_, rng.random() / 10, None if ok_ else "refused")
            checks.scheduler.probe_done(start, result, now + 0.01)
        taken = checks.taken()
        assert checks.summary() == _reference_summary(checks)
        before = json.dumps(_reference_summary(checks))
        now += 0.5
        for start in checks.scheduler.due(now):
            checks.scheduler.probe_done(start, ProbeResult(False, 0.5, "timeout"), now)
        # what was taken does not change when the checks do
        assert json.dumps(summarize(taken)) == before
        if n == 20:  # a reload that changes some checks, and state carried to others
            changed = parse_config(text.replace('"tcp"\n  rise', '"tcp"\n  interval = 2\n  rise'))
            checks.scheduler.replace(build_checks(changed), now)
            checks.scheduler.restore(checks.scheduler.snapshot().checks, now)
            assert checks.summary() == _reference_summary(checks)
    final = checks.summary()
    assert {c["last_ok"] for c in final} >= {False} and {c["phase"] for c in final} != {"up"}
    assert any(c["transitions"] for c in final)


def test_rows_refreshed_ahead_are_the_rows_taken_and_leave_none_stale() -> None:
    """The daemon's refresh every ROWS_EVERY (HealthChecks) remakes the rows the last
    results made stale; what a status takes after it is what it would have made itself."""
    text = "".join(CHECKED.format(i=i, kind="http", attempts=1) for i in range(1, 7))
    checks = HealthChecks(lambda changes: None, rng=random.Random(4))
    checks.scheduler.add(build_checks(parse_config(text)), 0.0)
    rng, now, refreshed = random.Random(5), 0.0, 0
    for _ in range(30):
        now += 1.0
        for start in checks.scheduler.due(now):
            if rng.random() < 0.8:  # mostly the good path, which only marks its row stale
                checks.scheduler.probe_ok(start, 0.01, now + 0.01)
            else:
                checks.scheduler.probe_done(start, ProbeResult(False, 0.2, "refused"), now)
        if rng.random() < 0.5:
            refreshed += checks.scheduler.refresh_rows()
            assert checks.scheduler.refresh_rows() == 0  # none left stale
        assert checks.summary() == _reference_summary(checks)
    assert refreshed > 0


def test_the_checks_refresh_their_rows_every_second_until_stopped(monkeypatch: Any) -> None:
    import director.health as health

    monkeypatch.setattr(health, "ROWS_EVERY", 0.02)
    calls: list[float] = []

    async def main() -> None:
        checks = HealthChecks(lambda changes: None, rng=random.Random(6))

        def refresh_rows() -> int:
            calls.append(asyncio.get_running_loop().time())
            return 0

        monkeypatch.setattr(checks.scheduler, "refresh_rows", refresh_rows)
        checks.update(parse_config(CHECKED.format(i=1, kind="tcp", attempts=1)))
        await asyncio.sleep(0.2)
        assert len(calls) >= 3
        await checks.stop()
        seen = len(calls)
        await asyncio.sleep(0.1)
        assert len(calls) == seen  # none after the stop

    asyncio.run(main())


def test_latest_writer_makes_a_callables_content_off_the_loop(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        loop_thread = threading.get_ident()
        made_in: list[int] = []

        def make() -> bytes:
            made_in.append(threading.get_ident())
            return b'{"checks":[]}'

        writer = LatestWriter(tmp_path / "status.json", lambda exc: None)
        writer.put(b"old")
        writer.put(make)  # replaces the bytes not yet written
        await writer.flush()
        return loop_thread, made_in[0]

    loop_thread, made_in = asyncio.run(main())
    assert made_in != loop_thread
    assert (tmp_path / "status.json").read_bytes() == b'{"checks":[]}'


def test_engine_builds_the_checks_of_status_json_in_a_child_process(tmp_path: Path) -> None:
    """status.json's checks (100,000 rows at 100,000 servers) are built, encoded and written in
    a child process: the daemon's interpreter lock is never held by that encoding, and the
    daemon keeps no copy of them."""
    engine, _, _ = setup(tmp_path)
    built_by = tmp_path / "built-by"
    summary = [{"service": "TCP 198.18.0.20:80", "destination": "198.18.1.21:80", "up": True}]

    def take() -> Callable[[], list[dict[str, object]]]:
        def build() -> list[dict[str, object]]:
            built_by.write_text(str(os.getpid()))
            return [dict(row) for row in summary]

        return build

    engine.checks_taken = take

    async def scenario() -> None:
        await engine.start()
        await engine.flush_status()

    asyncio.run(scenario())
    assert int(built_by.read_text()) != os.getpid()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["checks"] == summary and status["last_sync"]["destinations"] == 2
    assert engine.status.checks == []  # not kept: the status builds its own when asked


def test_a_status_write_that_fails_in_the_child_is_reported(tmp_path: Path) -> None:
    engine, _, _ = setup(tmp_path)
    engine.checks_taken = lambda: list
    failures: list[OSError] = []
    assert engine._status_file is not None
    engine._status_file.on_error = failures.append
    (tmp_path / "status.json").mkdir()  # cannot be replaced by a file

    async def scenario() -> None:
        await engine.start()
        await engine.flush_status()

    asyncio.run(scenario())
    assert failures and isinstance(failures[0], OSError)


def test_the_status_shows_the_checks_it_was_given_where_the_engine_has_them() -> None:
    """The engine keeps no copy of the checks (status.json's are built in a child): the
    status' ``checks`` are the ones taken with it, at the engine status' place among the keys."""
    engine_status = {"config_path": "/etc/director/director.toml", "checks": [], "x": 1}
    i = inputs(engine_status=engine_status)
    status = build_status(i)
    assert status["checks"] == i.checks and status["checks"]
    assert list(status)[:3] == ["config_path", "checks", "x"]
    assert json.loads(encode_status(i))["checks"] == i.checks
    assert "checks" not in build_status(inputs())  # none where the engine has none
