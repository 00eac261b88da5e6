"""``directorctl``: the operator's command line.

``check-config`` works on a file alone; the daemon commands (status, drain, enable, reload,
doctor) live in :mod:`director.control.ctl` and talk to ``directord`` over its control socket.
To add a command: one ``sub.add_parser`` and one branch (or one entry in ``ctl.COMMANDS``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from director.config import check_config
from director.control import ctl
from director.importers import command as import_command
from director.network import command as rules_command
from director.peer import command as peer_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="directorctl", description="control directord")
    p.add_argument(
        "--socket",
        type=Path,
        default=ctl.DEFAULT_SOCKET,
        help=f"the daemon's control socket (default {ctl.DEFAULT_SOCKET})",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file", type=Path)
    ctl.add_arguments(sub)
    import_command.register(sub)
    rules_command.register(sub)
    peer_command.register(sub)
    args = p.parse_args(argv)

    if args.command == "import":
        return import_command.run(args)
    if args.command == "rules":
        return rules_command.run(args)
    if args.command == "diff-peer":
        return peer_command.run(args)
    if args.command == "check-config":
        ok, message = check_config(args.file)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    return ctl.COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
