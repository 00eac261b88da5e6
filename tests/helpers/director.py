"""A whole :class:`director.app.Director` for tests, on a kernel the test chooses.

    async with running(world, config) as d:   # started and serving; stopped on exit
        await d.director.ask(Reload("control"))

``world_in`` builds the :class:`World` a test needs: an in-memory kernel (or the real one in
the guest), a state directory and a sysctl tree under ``tmp``, no leftover-VIP removal unless
given, and a control socket and HTTP listener on free local addresses. Run it inside a network
namespace (``NamespaceLoop``) when the director has VRRP or network rules: nft, rtnetlink and the
VRRP sockets then only ever see that namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from director.app import Director, Lifecycle, Quiet, RemoveLeftovers, World
from director.config import Config, load_config
from director.intents import Intents, Stop
from director.ipvs.kernel import IPVSKernel
from director.ipvs.memory import MemoryIPVS
from director.ipvs.ondemand import OnDemandIPVS
from director.reconcile.owned import FileOwnedStore, OwnedStore


async def _none(config: Config) -> list[str]:
    return []


SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/vs/conntrack",
    "net/ipv4/vs/expire_nodest_conn",
    "net/ipv4/vs/expire_quiescent_template",
)


def fake_sysctls(root: Path) -> Path:
    """A sysctl tree under ``root`` with the files the daemon writes by default, all 0 (the
    in-memory world has no ip_vs sysctls of its own to write)."""
    for name in SYSCTLS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("0\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Recorder:
    """A :class:`Lifecycle` that remembers what it was told."""

    events: list[str] = field(default_factory=list)

    def ready(self, status: str) -> None:
        self.events.append(f"ready {status}")

    def reloading(self) -> None:
        self.events.append("reloading")

    def stopping(self) -> None:
        self.events.append("stopping")

    def status(self, text: str) -> None:
        self.events.append(f"status {text}")

    def watchdog(self) -> None:
        self.events.append("watchdog")

    def watchdog_interval(self) -> float | None:
        return None


def world_in(
    tmp: Path,
    config_path: Path,
    *,
    kernel: IPVSKernel | Callable[[bool], IPVSKernel] | None = None,
    owned: OwnedStore | None = None,
    remove_leftovers: RemoveLeftovers = _none,
    nofile: int = 65536,
    lifecycle: Lifecycle | None = None,
    metrics: bool = True,
) -> World:
    """A world under ``tmp``; ``kernel`` an instance (shared by IPVS and the sync daemon) or an
    opener (called for each, with whether it may load ip_vs)."""
    sysroot = fake_sysctls(tmp / "sys")
    shared = kernel if kernel is not None and not callable(kernel) else MemoryIPVS()
    opener: Callable[[bool], IPVSKernel] = kernel if callable(kernel) else (lambda load: shared)
    return World(
        config_path=config_path,
        state_dir=tmp / "state",
        loader=load_config,
        kernel=OnDemandIPVS(opener),
        sync_kernel=OnDemandIPVS(opener),
        owned=owned or FileOwnedStore(tmp / "state"),
        remove_leftovers=remove_leftovers,
        nofile=nofile,
        lifecycle=lifecycle or Quiet(),
        sysctl_root=sysroot,
        rules_sysctl_root=None,
        control_socket=tmp / "control.sock",
        metrics_address=f"127.0.0.1:{free_port()}" if metrics else "",
    )


@dataclass
class Running:
    director: Director
    intents: Intents
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running(world: World, config: Config | None = None) -> AsyncIterator[Running]:
    """A started director serving its intents; stopped (and checked to have stopped) on exit."""
    intents = Intents()
    director = Director(config or world.loader(world.config_path), world, intents)
    await director.start()
    task = asyncio.get_running_loop().create_task(director.serve())
    try:
        yield Running(director, intents, task)
    finally:
        if not task.done():
            intents.put(Stop("test"))
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await director.stop()
