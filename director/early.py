"""The first thing ``directord`` does, before it imports the rest of itself: take away the VIPs
a crashed run left on the interfaces.

After a ``kill -9`` or a crash the peer takes over, and this node still holds the virtual
addresses until something removes them: both answer ARP for them meanwhile. Importing the daemon
(aiohttp, pyroute2, pydantic, prometheus_client) takes about a second on a server and tens of
seconds in an emulated guest, so the VIPs go first, from a record the daemon keeps in its state
directory (``virtual-addresses.json``: every (device, address) its config has placed, written at
start and around each reload), with only the standard library and :mod:`vrrp.rtnl` (one
rtnetlink socket, one dump, one delete per leftover). The record also covers VIPs that a config
edited during the outage no longer names. The daemon's own start removes the config's VIPs again
as its first step. Nothing here raises: a missing or unreadable record removes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path

from vrrp.rtnl import remove_leftovers

RECORD = "virtual-addresses.json"
# The same VIPs as ``ip -batch`` commands, for the unit's first ExecStopPost (``ip -force
# -batch``): after a kill -9 they go within milliseconds, before any Python starts (seconds on
# a small machine). Emptied by a clean stop, which has removed them itself.
BATCH = "virtual-addresses.ip"
DEFAULT_STATE_DIR = Path("/var/lib/director")


def daemon_table(config_path: Path) -> dict[str, object]:
    """The file's ``[daemon]`` table read straight from the TOML, no validation (that comes
    later); empty when the file cannot be read."""
    try:
        daemon = tomllib.loads(config_path.read_text(encoding="utf-8-sig")).get("daemon", {})
    except (OSError, ValueError):
        return {}
    return daemon if isinstance(daemon, dict) else {}


def state_dir_of(daemon: dict[str, object], override: Path | None) -> Path:
    """``--state-dir``, else ``[daemon] state_dir``, else the default."""
    if override is not None:
        return override
    value = daemon.get("state_dir")
    return Path(value) if isinstance(value, str) and value.startswith("/") else DEFAULT_STATE_DIR


def encode(pairs: Iterable[tuple[str, object]]) -> bytes:
    """The record's content for (device, address) pairs (sorted, each once)."""
    entries = sorted({(device, str(address)) for device, address in pairs})
    return json.dumps({"addresses": [list(e) for e in entries]}, indent=1).encode() + b"\n"


def encode_batch(interfaces: Iterable[tuple[str, str]]) -> bytes:
    """``ip -batch`` lines deleting each (device, "address/prefix"), sorted, each once."""
    lines = sorted({f"address del {address} dev {device}\n" for device, address in interfaces})
    return "".join(lines).encode()


def recorded(state_dir: Path) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The (device, address) pairs in the record; entries that are not pairs are skipped."""
    try:
        document = json.loads((state_dir / RECORD).read_bytes())
    except (OSError, ValueError):
        return []
    entries = document.get("addresses") if isinstance(document, dict) else None
    out: list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
    for entry in entries if isinstance(entries, list) else []:
        if (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], str)
        ):
            try:
                out.append((entry[0], ipaddress.ip_address(entry[1])))
            except ValueError:
                continue
    return out


def remove_recorded(state_dir: Path) -> tuple[list[str], list[str]]:
    """Remove the recorded VIPs that are on their device now: (removed, problems)."""
    wanted = recorded(state_dir)
    if not wanted:
        return [], []
    try:
        removed, errors = remove_leftovers(wanted)
    except OSError as exc:
        return [], [f"rtnetlink: {exc}"]
    return [str(address) for _, address in removed], errors
