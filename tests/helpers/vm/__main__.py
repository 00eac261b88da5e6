"""``python -m tests.helpers.vm [--timeout S] -- CMD ARGS...``: run a command in the guest.

The guest console is streamed; the exit status is the guest command's (125 if the guest itself
failed: no boot, crash or timeout).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from tests.helpers.vm.guest import DEFAULT_TIMEOUT, GuestError, run_in_guest
from tests.helpers.vm.initramfs import VmSetupError

GUEST_FAILED = 125


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.vm", description=__doc__)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    parser.add_argument("--console-log", type=Path, help="where to keep the guest console")
    parser.add_argument("--quiet", action="store_true", help="do not stream the console")
    parser.add_argument("--init", choices=["sh", "systemd"], default="sh", help="guest's PID 1")
    parser.add_argument("command", nargs="+", help="command and arguments (after --)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the guest gets cleaned up
    try:
        result = run_in_guest(
            args.command,
            timeout=args.timeout,
            console_log=args.console_log,
            stream=not args.quiet,
            init=args.init,
        )
    except (GuestError, VmSetupError) as exc:
        print(f"vm: {exc}", file=sys.stderr)
        return GUEST_FAILED
    except KeyboardInterrupt:
        print("vm: interrupted; the guest was stopped", file=sys.stderr)
        return 130
    boot = f"{result.boot_seconds:.1f} s" if result.boot_seconds is not None else "?"
    print(
        f"vm: exit {result.returncode} after {result.duration:.1f} s "
        f"(command started {boot} after launch); console log: {result.console_log}",
        file=sys.stderr,
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
