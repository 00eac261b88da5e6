"""``python -m director.config FILE``: validate a config file; exit 0 if it is valid, else 1."""

from __future__ import annotations

import argparse
import sys

from director.config.loader import DEFAULT_PATH, check_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m director.config", description="validate a director config file"
    )
    parser.add_argument("file", nargs="?", default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    args = parser.parse_args(argv)
    ok, message = check_config(args.file)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
