"""Network-rules benchmark: how long applying the director's nftables table takes, by size.

    .venv/bin/python -m bench.network_rules [--sizes 10,100,1000] [--repeat 5]

For each size N (N ``[[fwmark]]`` rules for N addresses, plus one SNAT and one MASQUERADE
rule) in a fresh network namespace: the cold apply (table created), a no-op resync (read back,
nothing to do), a reload that changes one SNAT rule (only its chain is refilled), and a role
flip to backup and back to master (master-only rules out and in). Each is one ``nft``
transaction; the figures are wall-clock medians over ``--repeat`` runs, including nft's start.
Needs root (namespaces). Nothing touches this machine's own tables.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import time
from collections.abc import Awaitable, Callable

from director.config import Config, parse_config
from director.network import NetworkRules, Nft, PolicyRoutes
from director.role import Role
from tests.helpers.netns import Topology


def config_text(n: int, snat_to: str = "198.18.0.10") -> str:
    base = ipaddress.IPv4Address("198.18.64.0")
    parts = ["[[virtual_server]]\nfwmark = 80\n"]
    for i in range(n):
        parts.append(f'[[fwmark]]\nmark = 80\naddress = "{base + i}"\nports = [80, 443, 25, 587]\n')
    parts.append(f'[[snat]]\nsource = "198.18.1.0/24"\nto = "{snat_to}"\n')
    parts.append('[[masquerade]]\nsource = "198.18.2.0/24"\nmaster_only = false\n')
    return "".join(parts)


async def timed(step: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await step()
    return time.perf_counter() - started


async def one_run(ns_name: str, nft_argv: list[str], n: int) -> dict[str, float]:
    config = parse_config(config_text(n))
    changed = parse_config(config_text(n, "198.18.0.11"))
    service = NetworkRules(Config(), Nft(nft_argv), PolicyRoutes(ns_name), sysctl_root=None)
    await service.set_role(Role.MASTER)
    figures = {
        "cold apply": await timed(lambda: service.apply(config)),
        "no-op resync": await timed(lambda: service.sync()),
        "reload, 1 rule": await timed(lambda: service.apply(changed)),
        "to backup": await timed(lambda: service.set_role(Role.BACKUP)),
        "to master": await timed(lambda: service.set_role(Role.MASTER)),
        "remove": await timed(lambda: service.apply(Config())),
    }
    return figures


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.network_rules")
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'rules':>6} " + " ".join(f"{name:>15}" for name in ROWS) + "   (ms, median)")
    with Topology() as topo:
        ns = topo.namespace("rules")
        for n in sizes:
            runs = [asyncio.run(one_run(ns.name, ns.argv("nft"), n)) for _ in range(args.repeat)]
            medians = [statistics.median(r[name] for r in runs) * 1000 for name in ROWS]
            print(f"{n + 2:>6} " + " ".join(f"{m:>15.1f}" for m in medians))
    return 0


ROWS = ("cold apply", "no-op resync", "reload, 1 rule", "to backup", "to master", "remove")

if __name__ == "__main__":
    raise SystemExit(main())
