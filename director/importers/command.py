"""``directorctl import keepalived|lvs.cf|ldirectord FILE``.

The TOML goes to standard output, the notes (what was not carried, or carried differently, and
why) to standard error. Exit 0, or 1 with ``file:line: message`` when the file cannot be parsed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from director.importers.emit import dumps
from director.importers.from_keepalived import import_keepalived
from director.importers.ldirectord import import_ldirectord
from director.importers.lvs_cf import import_lvs_cf
from director.importers.notes import Imported, ImportParseError

FORMATS = ("keepalived", "lvs.cf", "ldirectord")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``import`` subcommand; it sets ``func`` on the parsed arguments."""
    p = sub.add_parser(
        "import",
        help="print a director config (TOML) made from keepalived.conf, Piranha's lvs.cf or "
        "ldirectord.cf",
        description="Print an equivalent director config on standard output, and on standard "
        "error every setting that was not carried over (or carried differently) and why.",
    )
    p.add_argument("format", choices=FORMATS, help="the kind of file")
    p.add_argument("file", type=Path)
    p.add_argument(
        "--node",
        choices=("primary", "backup"),
        default="primary",
        help="lvs.cf: which director the config is for (VRRP priority and peers)",
    )
    p.add_argument(
        "--config-id",
        metavar="ID",
        help="keepalived: the config id (keepalived -i) that selects the @ID lines",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.format == "keepalived":
            imported = import_keepalived(args.file, args.config_id)
        elif args.format == "ldirectord":
            imported = import_ldirectord(args.file)
        else:
            imported = import_lvs_cf(args.file, args.node)
    except ImportParseError as exc:
        print(f"directorctl import: {exc}", file=err)
        return 1
    out.write(render(imported, str(args.file), args.format))
    for note in imported.notes.ordered():
        print(note, file=err)
    counts = {k: len(imported.notes.of(k)) for k in ("not carried", "changed")}
    print(
        f"directorctl import: {counts['not carried']} settings not carried, "
        f"{counts['changed']} carried differently (see above)",
        file=err,
    )
    return 0


def render(imported: Imported, source: str, fmt: str) -> str:
    header = [
        f"director config imported from {source} ({fmt}) by directorctl import.",
        "Check it with: directord --check-config FILE. What was not carried over is listed",
        "on standard error by the import.",
    ]
    return dumps(imported.config, header)
