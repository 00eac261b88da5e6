"""``directorctl``: the operator's command line.

For now it validates configs and shows the status the daemon writes to its state directory; the
control-socket commands (drain, enable, reload, doctor) come with the operations work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from director.config import check_config

DEFAULT_STATE_DIR = Path("/var/lib/director")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="directorctl", description="control directord")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file", type=Path)
    s = sub.add_parser("status", help="show the daemon's last status")
    s.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    s.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    if args.command == "check-config":
        ok, message = check_config(args.file)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    path = args.state_dir / "status.json"
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"directorctl: no status at {path}: is directord running?", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"directorctl: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    sync = status.get("last_sync", {})
    print(f"config:  {status.get('config_path')}")
    if status.get("reload_error"):
        print("reload:  FAILED, running the previous config")
        print("         " + status["reload_error"].replace("\n", "\n         "))
    if status.get("kernel_error"):
        print(f"kernel:  {status['kernel_error']}")
    for problem in status.get("sysctl_problems", []):
        print(f"sysctl:  {problem}")
    for check in status.get("checks", []):
        state = "up  " if check.get("up") else "DOWN"
        error = f"  {check['last_error']}" if check.get("last_error") else ""
        latency = check.get("last_latency_ms")
        print(
            f"check:   {state} {check.get('service')} -> {check.get('destination')}"
            f" {check.get('type')} {latency if latency is not None else '-'} ms{error}"
        )
    print(
        f"ipvs:    {sync.get('services', 0)} services, {sync.get('destinations', 0)} destinations"
        f" (last sync: {sync.get('reason', '-')}, {sync.get('operations', 0)} operations,"
        f" {len(sync.get('failures', []))} failures)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
