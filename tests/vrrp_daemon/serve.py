"""Run a VRRP service from a config file until SIGTERM: ``python -m tests.vrrp_daemon.serve FILE``.

For tests that need a real process to kill (the host has no ip_vs, so not full directord).
Prints ``started`` once the instances run, and each role it publishes.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from director.config import load_config
from director.role import Role
from director.vrrp_service import VrrpService


async def main(path: str) -> None:
    async def publish(role: Role) -> None:
        print(f"role {role}", flush=True)

    service = VrrpService(load_config(path), publish)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await service.start()
    print("started", flush=True)
    await stop.wait()
    await service.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
