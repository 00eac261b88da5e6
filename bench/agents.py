"""CPU per feedback-agent poll: N agents polled on one loop in a namespace, for a few seconds.

    sudo .venv/bin/python -m bench.agents [--agents 500] [--interval 0.5] [--seconds 5]

The agents (one asyncio server answering "75%\\n") run in a second namespace on their own
thread; the figure is the poller loop thread's CPU time (``time.thread_time``) per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import time

from checks.agent_runner import AgentRunner, AgentSpec
from checks.probes.result import Target
from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop

AGENT = "198.18.2.11"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"75%\n")
    writer.close()


async def _close(server: asyncio.Server) -> None:
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with Topology() as topo:
        prober, agents = topo.namespace("prober"), topo.namespace("agents")
        topo.veth(prober, "a0", agents, "eth0", a_addr="198.18.2.1/24", b_addr=f"{AGENT}/24")
        with NamespaceLoop(prober) as p, NamespaceLoop(agents) as a:
            servers = [
                a.run(asyncio.start_server(_answer, AGENT, 3000 + i, backlog=512))
                for i in range(10)
            ]

            async def measure() -> tuple[int, float, dict[str, int]]:
                runner = AgentRunner(lambda ids: None, rng=random.Random(1), max_in_flight=256)
                runner.start()
                target = ipaddress.ip_address(AGENT)
                runner.replace(
                    {
                        i: AgentSpec(Target(target, 3000 + i % 10), args.interval, args.interval)
                        for i in range(args.agents)
                    }
                )
                await asyncio.sleep(args.interval)  # past the random offsets
                polls, cpu = runner.polls, time.thread_time()
                await asyncio.sleep(args.seconds)
                polls, cpu = runner.polls - polls, time.thread_time() - cpu
                errors: dict[str, int] = {}
                for _, _, policy in runner.agents():
                    for reason, n in policy.errors.items():
                        errors[reason] = errors.get(reason, 0) + n
                await runner.stop()
                return polls, cpu, errors

            polls, cpu, errors = p.run(measure(), timeout=args.seconds + 60)
            for server in servers:
                a.run(_close(server))
    rate = polls / args.seconds
    print(
        f"{args.agents} agents every {args.interval} s: {polls} polls in {args.seconds} s "
        f"({rate:.0f}/s), poller loop CPU {cpu:.3f} s = {cpu / max(polls, 1) * 1e6:.0f} us "
        f"per poll ({cpu / args.seconds * 100:.1f} % of a CPU); errors {errors or 'none'}"
    )


if __name__ == "__main__":
    main()
