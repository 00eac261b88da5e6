"""``directorctl diff-peer [PEER]``, and the peer check's lines in ``directorctl status``.

``diff-peer`` asks the running daemon (control socket), which asks the peer (signed, over the
peer check's own endpoint) for its canonical form and compares it with its own: the output is
in config terms, one difference a line. Exit status: 0 the same, 1 different, 2 an error (the
daemon or the peer could not be asked, or refused).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from director.control.client import request
from director.control.protocol import ControlError
from director.status_words import BANNER_LEVELS, peer_head, peer_lines
from director.status_words import short as _short

SAME, DIFFERENT, ERROR = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "diff-peer",
        help="compare the running config with a peer director's (shared keys only)",
        description="Ask the peer director(s) of [peer_check] for their canonical config "
        "and show how it differs from this director's. Exit 0 same, 1 different, 2 error.",
    )
    p.add_argument("peer", nargs="?", help="ADDRESS:PORT as in [peer_check] peers (default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable")


def run(args: argparse.Namespace) -> int:
    arguments: dict[str, object] = {"peer": args.peer} if args.peer else {}
    try:
        result = request(args.socket, "diff-peer", arguments, wait=60)
    except ControlError as exc:
        print(f"directorctl: diff-peer: {exc}", file=sys.stderr)
        return ERROR
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(render(result))
    return exit_status(result)


def exit_status(result: dict[str, Any]) -> int:
    states = [p.get("state") for p in result.get("peers") or []]
    if not states or any(s not in ("match", "mismatch") for s in states):
        return ERROR
    return DIFFERENT if "mismatch" in states else SAME


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for entry in result.get("peers") or []:
        peer, state = entry.get("peer"), entry.get("state")
        here = entry.get("here") or {}
        there = entry.get("there") or {}
        head = f"peer {peer}: "
        if state == "match":
            lines.append(
                head + f"same shared config (digest {_short(here.get('digest'))}, "
                f"generation here {here.get('generation')}, peer {there.get('generation')})"
            )
        elif state == "mismatch":
            diffs = entry.get("differences") or []
            lines.append(
                head + f"{len(diffs)} difference{'' if len(diffs) == 1 else 's'} "
                f"(generation here {here.get('generation')}, peer {there.get('generation')})"
            )
            lines += [f"  {d}" for d in diffs]
        else:
            lines.append(head + f"{str(state).upper()}: {entry.get('error')}")
    return "\n".join(lines)


def status_lines(st: dict[str, Any], now: float | None = None) -> list[str]:
    """The peer check in ``directorctl status``: this config's generation and digest, then one
    line per peer (a banner when it differs or cannot be checked); the words are the page's
    (:mod:`director.status_words`)."""
    peer_check = st.get("peer_check") or {}
    head = peer_head(peer_check)
    if head is None:
        return []
    now = time.time() if now is None else now
    lines = [f"config:   {head}"]
    for line in peer_lines(peer_check, now):
        prefix = "PEER:     " if line["level"] in BANNER_LEVELS else "peer:     "
        lines.append(f"{prefix}{line['text']}")
    return lines
