"""Feedback agents in the daemon's pure parts: config, desired state, plan, metrics, status line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checks.agent import AgentEffect, AgentTuning
from director.agents import FeedbackAgents, add_agent_views, agent_files, build_agents
from director.config import ConfigError, load_config, parse_config
from director.control.ctl import agent_line
from director.desired import compile_table
from director.ipvs.model import DestKey, ServiceKey
from director.ipvs.ops import EditDest
from director.metrics import Metrics, Sources
from director.reconcile.plan import plan

BASE = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 3389
on_failure = "{on_failure}"
{agent}
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  weight = 100
  upper_threshold = 50
  lower_threshold = 40
{rs1}
  [[virtual_server.real_server]]
  address = "198.18.1.12"
  weight = 100
{rs2}
"""
AGENT = "  [virtual_server.agent]\n  port = 3009\n  interval = 1\n"


def config(agent: str = AGENT, rs1: str = "", rs2: str = "", on_failure: str = "remove"):  # type: ignore[no-untyped-def]
    return parse_config(BASE.format(agent=agent, rs1=rs1, rs2=rs2, on_failure=on_failure))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [f"{p.location}: {p.message}" for p in info.value.problems]


def keys() -> tuple[ServiceKey, DestKey, DestKey]:
    vs = config().virtual_servers[0]
    return vs.service_key(), vs.real_servers[0].dest_key(vs), vs.real_servers[1].dest_key(vs)


def test_service_agent_with_server_overrides() -> None:
    cfg = config(
        rs1='  agent = { address = "198.18.9.11", send = "rdsh\\n", threshold = 5 }',
        rs2="  agent = { enabled = false }",
    )
    vs = cfg.virtual_servers[0]
    one, two = (rs.feedback_agent(vs) for rs in vs.real_servers)
    assert two is None
    assert one is not None
    assert (one.port, one.address, one.send, one.threshold, one.interval, one.timeout) == (
        3009,
        "198.18.9.11",
        "rdsh\n",
        5.0,
        1.0,
        1.0,
    )
    specs = build_agents(cfg)
    assert [str(spec.target) for spec in specs.values()] == ["198.18.9.11:3009"]
    assert agent_files(cfg) == 2  # one poll's socket and the agents' epoll
    assert agent_files(config(agent="")) == 0
    assert next(iter(specs.values())).send == b"rdsh\n"


def test_agent_errors_name_the_key_and_come_all_at_once() -> None:
    text = BASE.format(
        agent="  [virtual_server.agent]\n  interval = 1\n  timeout = 2\n"
        "  min_percent = 80\n  max_percent = 50",
        rs1="  agent = { port = 0, rate_limit = -1, threshold = true, weird = 1 }",
        rs2='  agent = { send = "\u20ac" }',
        on_failure="remove",
    )
    found = problems(text)
    assert any(
        "real_server[0].agent.port" in p and "expected a port from 1 to 65535, found 0" in p
        for p in found
    ), found
    assert any("agent.rate_limit" in p and "found -1" in p for p in found), found
    assert any("agent.threshold" in p and "found true" in p for p in found), found
    assert any('unknown key "weird"' in p for p in found), found
    assert any("agent.send" in p and "latin-1" in p for p in found), found
    # field errors stop the cross checks of those servers; without them the rest shows
    text = BASE.format(
        agent="  [virtual_server.agent]\n  interval = 1\n  timeout = 2\n"
        "  min_percent = 80\n  max_percent = 50",
        rs1="",
        rs2="",
        on_failure="remove",
    )
    found = problems(text)
    assert found == [
        "virtual_server[0].agent.port: an agent needs a port: expected agent.port, found none",
        "virtual_server[0].agent.timeout: expected timeout at most interval (1.0 s), found 2.0 s",
        "virtual_server[0].agent.min_percent: expected min_percent at most "
        "max_percent (50), found 80",
    ], found


def test_effects_reach_the_desired_table() -> None:
    cfg = config()
    svc, one, two = keys()
    plain = compile_table(cfg)
    assert plain.dests[svc][one].weight == 100
    table = compile_table(cfg, agents={(svc, one): AgentEffect(percent=75)})
    assert table.dests[svc][one].weight == 75
    assert table.dests[svc][two].weight == 100
    # one weight = one netlink request
    ops = plan(table, plain, frozenset({svc}))
    assert ops == [EditDest(svc, table.dests[svc][one])]

    drained = compile_table(cfg, agents={(svc, one): AgentEffect(percent=75, admin="drain")})
    assert drained.dests[svc][one].weight == 0  # quiesced: established flows continue
    maint = compile_table(cfg, agents={(svc, one): AgentEffect(admin="maint")})
    assert one not in maint.dests[svc]
    down = compile_table(cfg, agents={(svc, one): AgentEffect(down=True)})
    assert one not in down.dests[svc]
    quiesce = config(on_failure="quiesce")
    down_q = compile_table(quiesce, agents={(svc, one): AgentEffect(down=True)})
    assert down_q.dests[svc][one].weight == 0
    # the agent never brings back a server its health check failed
    failed = compile_table(cfg, {(svc, one): False}, agents={(svc, one): AgentEffect()})
    assert one not in failed.dests[svc]
    limited = compile_table(cfg, agents={(svc, one): AgentEffect(maxconn=30)})
    dest = limited.dests[svc][one]
    assert (dest.u_threshold, dest.l_threshold) == (30, 30)  # lower one lowered to fit
    unlimited = compile_table(cfg, agents={(svc, one): AgentEffect(maxconn=0)})
    assert (unlimited.dests[svc][one].u_threshold, unlimited.dests[svc][one].l_threshold) == (
        0,
        0,
    )


def test_rds_feedback_example() -> None:
    cfg = load_config(
        Path(__file__).resolve().parents[2] / "docs" / "examples" / "rds-feedback.toml"
    )
    specs = build_agents(cfg)
    assert [str(s.target) for s in specs.values()] == [
        "198.18.1.31:3009",
        "198.18.1.32:3009",
        "198.18.9.33:3009",
    ]
    assert {(s.send, s.interval, s.timeout) for s in specs.values()} == {(b"rdsh\n", 2.0, 1.0)}
    assert {s.tuning for s in specs.values()} == {
        AgentTuning(min_percent=10, threshold=10, rate_limit=30)
    }


def summary(**extra: object) -> dict[str, object]:
    svc, one, _ = keys()
    row: dict[str, object] = {
        "service": str(svc),
        "destination": str(one),
        "target": "198.18.1.11:3009",
        "state": "drain",
        "percent": 75,
        "config_weight": 100,
        "weight": 0,
        "maxconn": None,
        "last_line": "drain 75%",
        "last_error": None,
        "keeping_since": None,
        "held": None,
        "errors": {"timeout": 2, "garbage": 1},
    }
    row.update(extra)
    return row


def test_metrics_export_configured_and_effective_weight_state_and_errors() -> None:
    text = Metrics(Sources(agents=lambda: [summary()])).render().decode()
    labels = 'destination="198.18.1.11:3389",service="TCP 198.18.0.10:3389"'
    assert f"director_agent_weight_configured{{{labels}}} 100.0" in text
    assert f"director_agent_weight_effective{{{labels}}} 0.0" in text
    assert f'director_agent_state{{{labels},state="drain"}} 1.0' in text
    assert f'director_agent_state{{{labels},state="ready"}} 0.0' in text
    dest, service = labels.split(",")
    assert f'director_agent_errors_total{{{dest},reason="timeout",{service}}} 2.0' in text
    assert f'director_agent_errors_total{{{dest},reason="garbage",{service}}} 1.0' in text


def test_status_rows_get_the_agent_and_the_line_says_what_is_kept() -> None:
    svc, one, two = keys()
    view: dict[str, object] = {
        "services": [
            {
                "key": str(svc),
                "servers": [
                    {"address": str(one), "config_weight": 100},
                    {"address": str(two), "config_weight": 100},
                ],
            }
        ]
    }
    add_agent_views(view, [summary(keeping_since=0.0, last_error="timed out after 1 s")])
    rows = view["services"][0]["servers"]  # type: ignore[index]
    assert rows[1]["agent"] is None
    line = agent_line(rows[0])
    assert line is not None
    assert "agent: drain 75%  weight 0 of 100  said 'drain 75%'" in line
    assert "keeping the last value: no answer for" in line and "timed out after 1 s" in line


def test_a_bad_agents_file_is_set_aside_and_the_agents_start_afresh(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    agents = FeedbackAgents(lambda ids: None, state_path=path)
    agents.load(config())  # no file: nothing restored, no problem
    assert agents.effects() == {} and agents.problem is None
    svc, one, _ = keys()
    good = {
        "agents": [
            {
                "service": str(svc),
                "destination": str(one),
                "target": "198.18.1.11:3009",
                "percent": 40,
                "admin": "drain",
                "down": False,
                "maxconn": None,
            },
            {  # its agent moved to another port since: not restored
                "service": str(svc),
                "destination": "198.18.1.12:3389",
                "target": "198.18.1.12:4000",
                "percent": 10,
                "admin": "maint",
                "down": False,
                "maxconn": None,
            },
        ]
    }
    path.write_text(json.dumps(good))
    agents.load(config())
    assert agents.effects() == {(svc, one): AgentEffect(40, "drain")}
    path.write_text('{"agents": [{"service": "x", "percent": "lots"}]}')
    agents.load(config())
    assert agents.effects() == {}
    assert agents.problem is not None and "agents[0]" in agents.problem
    assert "the agents start afresh" in agents.problem
    assert not path.exists() and list(tmp_path.glob("agents.json.corrupt-*"))
