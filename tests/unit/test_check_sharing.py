"""Services that check the same real server the same way share the check's frozen description
(director.health.build_checks), and nothing else: each (service, server) keeps its own policy
and verdict."""

from __future__ import annotations

import random

from checks.model import ProbeResult
from director.config import parse_config
from director.health import HealthChecks, build_checks

SERVICE = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.{i}"
port = 80
  [virtual_server.check]
  type = "tcp"
  timeout = {timeout}
  fall = 1
  [[virtual_server.real_server]]
  address = "198.19.0.1"
  [[virtual_server.real_server]]
  address = "198.19.0.2"
"""


def test_equal_checks_share_their_description_not_their_verdict() -> None:
    config = parse_config("".join(SERVICE.format(i=i, timeout=3 if i < 4 else 2) for i in range(6)))
    checks = build_checks(config)
    assert len(checks) == 12
    jobs = {id(c.spec) for c in checks}
    assert len(jobs) == 4  # 2 servers x 2 timeouts
    first = [c for c in checks if str(c.spec.target.address) == "198.19.0.1"]
    assert first[0].spec is first[1].spec and first[0].params is first[1].params
    assert first[0].spec is not first[5].spec  # another timeout: another description
    assert first[0].spec == build_checks(config)[0].spec

    health = HealthChecks(lambda changes: None, rng=random.Random(3))
    health.scheduler.add(checks, 0.0)
    now, failed = 0.0, first[0].id
    for _ in range(30):  # the one check fails, every other check of the same server passes
        now += 1.0
        for start in health.scheduler.due(now):
            ok = start.check_id != failed
            health.scheduler.probe_done(start, ProbeResult(ok, 0.001, None if ok else "x"), now)
    verdicts = dict(health.scheduler.health())
    assert verdicts[failed] is False
    assert all(up for cid, up in verdicts.items() if cid != failed)


def test_equal_real_servers_are_one_model_given_fields_alike() -> None:
    text = "".join(SERVICE.format(i=i, timeout=3) for i in range(3))
    text += SERVICE.format(i=9, timeout=3).replace(
        'address = "198.19.0.1"\n', 'address = "198.19.0.1"\n  weight = 1\n'
    )
    vss = parse_config(text).virtual_servers
    assert vss[0].real_servers[0] is vss[2].real_servers[0]
    assert vss[0].real_servers[1] is vss[1].real_servers[1]
    # weight = 1 given is the default's value but a field given: its own model
    assert vss[3].real_servers[0] == vss[0].real_servers[0]
    assert vss[3].real_servers[0] is not vss[0].real_servers[0]
    assert "weight" in vss[3].real_servers[0].model_fields_set
    assert "weight" not in vss[0].real_servers[0].model_fields_set
