"""``directorctl rules``: the nftables table and policy routes directord installed.

It reads the kernel directly (``nft list table``, netlink), not the daemon, so it shows what is
really in force, counters included, even when the daemon is stopped. ``--planned`` prints what a
config file wants instead, for a role, without touching anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from director.config import ConfigError, load_config
from director.config.loader import DEFAULT_PATH
from director.config.network import NetworkSettings
from director.network.nft import Nft, NftError
from director.network.routes import PolicyRoutes, Routes, desired_routes
from director.network.ruleset import FAMILY, compile_ruleset, describe
from director.role import Role


def register(sub: Any) -> None:
    r = sub.add_parser("rules", help="the nftables rules and policy routes directord installed")
    r.add_argument("--config", type=Path, default=Path(DEFAULT_PATH), help="for the table name")
    r.add_argument("--json", action="store_true", help="nft's JSON and the routes, for machines")
    r.add_argument("--planned", action="store_true", help="what the config wants; no kernel read")
    r.add_argument("--role", choices=[role.value for role in Role], default="master")


def _routes_lines(routes: Routes) -> list[str]:
    return [str(item) for item in sorted(routes.routes)] + [str(r) for r in sorted(routes.rules)]


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config) if args.config.exists() or args.planned else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.planned:
        assert config is not None
        ruleset = compile_ruleset(config, Role(args.role))
        for line in describe(ruleset) or [f"no rules for role {args.role}"]:
            print(line)
        for line in _routes_lines(desired_routes(config)):
            print(f"policy route: {line}")
        return 0
    table = (config.network if config is not None else NetworkSettings()).table
    try:
        return asyncio.run(_show(table, args.json))
    except NftError as exc:
        print(f"directorctl: {exc} (run as root?)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"directorctl: reading policy routes: {exc}", file=sys.stderr)
        return 1


async def _show(table: str, as_json: bool) -> int:
    nft = Nft()
    routes = await PolicyRoutes().observe()
    if as_json:
        listing = await nft.list_table(table)
        print(json.dumps({"table": listing, "policy_routes": _routes_lines(routes)}, indent=1))
        return 0
    text = await nft.show_table(table)
    if text is None:
        print(f"no table {FAMILY} {table}: directord has no rules in force")
    else:
        print(text.rstrip())
    lines = _routes_lines(routes)
    print("policy routes (proto 209):" + ("" if lines else " none"))
    for line in lines:
        print(f"  {line}")
    return 0
