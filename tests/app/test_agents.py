"""The whole application object with a feedback agent: the agent's answer reaches the (in-memory)
kernel as one request, the metrics, the status; a reload keeps what the agent said."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from director.intents import Reload
from director.ipvs.memory import MemoryIPVS
from tests.app.conftest import run, write
from tests.helpers.director import running, world_in
from tests.helpers.netns import Namespace
from tests.helpers.servers import NamespaceLoop

pytestmark = pytest.mark.netns

CONFIG = """
[[virtual_server]]
name = "rdp"
protocol = "tcp"
address = "198.18.0.20"
port = 3389
  [virtual_server.agent]
  port = 3009
  interval = 0.05
  timeout = 0.05
  [[virtual_server.real_server]]
  address = "198.18.0.1"
  weight = 100
  [[virtual_server.real_server]]
  address = "198.18.0.2"
  weight = 100
  agent = {{ enabled = false }}
{extra}
"""


def test_agent_answer_reaches_the_kernel_metrics_and_status(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    path = write(tmp_path, CONFIG.format(extra=""))
    kernel = MemoryIPVS()
    world = world_in(tmp_path, path, kernel=kernel)
    said = [b"100%\n"]

    async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(said[0])
        writer.close()

    def weights() -> dict[str, int]:
        return {str(k): d.weight for k, d in next(iter(kernel.table.dests.values())).items()}

    async def until(what: str, check: object) -> None:
        for _ in range(200):
            if callable(check) and check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}: {weights()}")

    async def scenario() -> None:
        server = await asyncio.start_server(agent, "198.18.0.1", 3009)
        try:
            async with running(world) as r:
                await until(
                    "the first replies", lambda: r.director.agents.summary()[0]["state"] == "ready"
                )
                assert weights() == {"198.18.0.1:3389": 100, "198.18.0.2:3389": 100}
                said[0] = b"50% # 12 sessions\n"
                await until("weight 50", lambda: weights()["198.18.0.1:3389"] == 50)
                sync = r.director.engine.status.last_sync
                assert (sync["reason"], sync["operations"]) == ("health", 1)  # one EditDest
                text = r.director.metrics.render().decode()
                labels = 'destination="198.18.0.1:3389",service="TCP 198.18.0.20:3389"'
                assert f"director_agent_weight_effective{{{labels}}} 50.0" in text
                assert f"director_agent_weight_configured{{{labels}}} 100.0" in text
                status = r.director.status()
                rows = status["services"][0]["servers"]  # type: ignore[index]
                assert rows[0]["agent"]["weight"] == 50
                assert rows[0]["agent"]["last_line"] == "50% # 12 sessions"
                assert rows[1]["agent"] is None

                # a reload that leaves the agent alone keeps what it said
                path.write_text(CONFIG.format(extra="  # a comment"))
                await r.director.ask(Reload("control"))
                assert weights()["198.18.0.1:3389"] == 50

                said[0] = b"drain\n"
                await until("drain", lambda: weights()["198.18.0.1:3389"] == 0)
                said[0] = b"maint\n"
                await until("maint", lambda: "198.18.0.1:3389" not in weights())
                said[0] = b"ready\n"
                await until("ready", lambda: weights().get("198.18.0.1:3389") == 50)
        finally:
            server.close()

    run(inside, scenario)


def test_a_restart_keeps_what_the_agents_said(
    tmp_path: Path, ns: Namespace, inside: NamespaceLoop
) -> None:
    """An agent took its server out (maint) and drained another; directord restarts while the
    agents are silent: the first sync of the new run keeps both as they were."""
    extra = '  [[virtual_server.real_server]]\n  address = "198.18.0.3"\n  weight = 100'
    path = write(tmp_path, CONFIG.format(extra=extra))
    ns.add_address("d0", "198.18.0.3/32")
    kernel = MemoryIPVS()
    world = world_in(tmp_path, path, kernel=kernel)
    said = {"198.18.0.1": b"maint\n", "198.18.0.3": b"drain 30%\n"}

    def weights() -> dict[str, int]:
        return {str(k): d.weight for k, d in next(iter(kernel.table.dests.values())).items()}

    async def scenario() -> tuple[dict[str, int], dict[str, int], list[object]]:
        listeners = []
        for address, line in said.items():

            async def agent(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes = line
            ) -> None:
                writer.write(line)
                writer.close()

            listeners.append(await asyncio.start_server(agent, address, 3009))
        async with running(world) as r:
            for _ in range(200):
                if weights() == {"198.18.0.2:3389": 100, "198.18.0.3:3389": 0}:
                    break
                await asyncio.sleep(0.02)
            before = weights()
        for listener in listeners:  # the agents go silent (refused)
            listener.close()
            await listener.wait_closed()
        syncs: list[object] = []
        async with running(world) as r:
            syncs.append(dict(r.director.engine.status.last_sync))
            after = weights()
            rows = r.director.status()["services"][0]["servers"]  # type: ignore[index]
            syncs.append({row["address"]: row["agent"] for row in rows})
        return before, after, syncs

    before, after, syncs = run(inside, scenario)
    assert before == {"198.18.0.2:3389": 100, "198.18.0.3:3389": 0}
    assert after == before
    start = syncs[0]
    assert isinstance(start, dict) and (start["reason"], start["operations"]) == ("start", 0)
    agents = syncs[1]
    assert isinstance(agents, dict)
    assert agents["198.18.0.3:3389"]["state"] == "drain"
    saved = json.loads((tmp_path / "state" / "agents.json").read_text())
    assert {a["target"]: a["admin"] for a in saved["agents"]} == {
        "198.18.0.1:3009": "maint",
        "198.18.0.3:3009": "drain",
    }
