"""The capped listener under the control socket: at most N clients, idle ones closed, a real
request answered once a slot frees (Unix socket: no network)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from director.control.server import ControlServer


async def _status(args: dict[str, Any]) -> object:
    return {"fine": True}


async def _slow(args: dict[str, Any]) -> object:
    await asyncio.sleep(0.6)
    return "done"


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect(str(path))
    return s


async def ask(path: Path, command: str) -> Any:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(json.dumps({"command": command}).encode() + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return json.loads(line)


@pytest.mark.asyncio
async def test_idle_clients_are_capped_and_closed_and_a_real_one_gets_through(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sock"
    server = ControlServer(path, {"status": _status}, max_connections=2, idle=0.3)
    await server.start()
    assert server.listener is not None
    held = [connect(path) for _ in range(20)]  # say nothing; hold the connections
    try:
        await asyncio.sleep(0.1)
        assert server.listener.open_connections == 2  # the rest wait in the kernel's backlog
        assert server.listener.stats.refused_full >= 1
        # a client that asks still gets its answer: idle ones are closed to make room
        reply = await asyncio.wait_for(ask(path, "status"), 10)
        assert reply == {"ok": True, "result": {"fine": True}}
        assert server.listener.stats.closed_idle >= 2
        assert server.listener.open_connections <= 2
    finally:
        for s in held:
            s.close()
        await server.stop()


@pytest.mark.asyncio
async def test_a_running_command_is_not_idle(tmp_path: Path) -> None:
    """A command that takes longer than the idle time (a reload of a big table) is answered."""
    path = tmp_path / "c.sock"
    server = ControlServer(path, {"slow": _slow}, max_connections=1, idle=0.2)
    await server.start()
    try:
        reply = await asyncio.wait_for(ask(path, "slow"), 5)
        assert reply == {"ok": True, "result": "done"}
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_stop_closes_every_client(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    server = ControlServer(path, {"status": _status}, max_connections=4, idle=30)
    await server.start()
    held = [connect(path) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert server.listener is not None and server.listener.open_connections == 3
    await server.stop()
    assert not path.exists()
    for s in held:
        s.setblocking(True)
        s.settimeout(2)
        assert s.recv(1) == b""  # closed by the daemon
        s.close()
