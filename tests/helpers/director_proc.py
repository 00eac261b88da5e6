"""``directord`` on the in-memory kernel, as a process: ``python -m tests.helpers.director_proc
CONFIG STATE_DIR``.

For tests that need the whole daemon as a process (to kill it, to limit its open files, to read
its log) on a host without ip_vs. Everything but the IPVS table is real: VRRP, checks, nftables,
the listeners, signals and the log pipeline; run it in a network namespace (``ip netns exec``).
The in-memory table can be read through ``directorctl status``.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

from director import logs
from director.app import World
from director.daemon import Systemd, load_prepared, run_director
from director.ipvs.memory import MemoryIPVS
from director.ipvs.ondemand import OnDemandIPVS
from director.reconcile.owned import FileOwnedStore
from director.sdnotify import Notifier
from director.vrrp_service import cleanup
from tests.helpers.director import fake_sysctls

ROOT = Path(__file__).resolve().parents[2]


def argv(
    config: Path, state: Path, *, nofile: int, module: str = __name__, extra: tuple[str, ...] = ()
) -> list[str]:
    """The command line that runs ``module`` (this one, or a wrapper taking the same first
    arguments) on ``config`` and ``state`` with at most ``nofile`` open files."""
    return [
        "prlimit",
        f"--nofile={nofile}:{nofile}",
        "--",
        "env",
        f"PYTHONPATH={ROOT}",
        sys.executable,
        "-m",
        module,
        str(config),
        str(state),
        *extra,
    ]


async def main(config_path: Path, state_dir: Path) -> int:
    config = load_prepared(config_path)  # as directord's first start of a file
    logs.configure("json", "debug" if "--debug" in sys.argv else "info")
    kernel = MemoryIPVS()
    notifier = Notifier()
    world = World(
        config_path=config_path,
        state_dir=state_dir,
        loader=load_prepared,  # as directord: the checks' imports in the reload's thread
        kernel=OnDemandIPVS(lambda load: kernel),
        sync_kernel=OnDemandIPVS(lambda load: kernel),
        owned=FileOwnedStore(state_dir),
        remove_leftovers=cleanup,
        nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        lifecycle=Systemd(notifier),
        sysctl_root=fake_sysctls(state_dir / "sys"),
        rules_sysctl_root=None,
    )
    try:
        return await run_director(config, world)
    finally:
        notifier.close()
        logs.flush()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]))))
