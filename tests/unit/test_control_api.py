"""The control socket: protocol, refusals, permissions (root only, checked twice), stale sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from director.control import ControlError, ControlServer, RequestError, request
from director.control.protocol import OK_HEAD, Streamed, encode_request, ok
from director.offload import RenderFailed

NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A directory anyone may enter (pytest's tmp_path is 0700), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="director-ctl-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


async def echo(args: dict[str, Any]) -> object:
    if args.get("refuse"):
        raise RequestError("refused: because")
    if args.get("crash"):
        raise ValueError("bug")
    return {"echo": args}


@pytest_asyncio.fixture
async def server(sock_dir: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(sock_dir / "run" / "control.sock", {"echo": echo})
    await srv.start()
    yield srv
    await srv.stop()


@pytest.mark.asyncio
async def test_round_trip_and_refusals(server: ControlServer) -> None:
    path = server.path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert await asyncio.to_thread(request, path, "echo", {"x": 1}) == {"echo": {"x": 1}}
    with pytest.raises(ControlError, match="refused: because"):
        await asyncio.to_thread(request, path, "echo", {"refuse": True})
    with pytest.raises(ControlError, match=r"echo failed inside directord: ValueError\('bug'\)"):
        await asyncio.to_thread(request, path, "echo", {"crash": True})
    with pytest.raises(ControlError, match=r"unknown command 'nope' \(known: echo\)"):
        await asyncio.to_thread(request, path, "nope")
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"not json\n")
    assert b"not one line of JSON" in await reader.readline()
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
async def test_daemon_not_running(sock_dir: Path) -> None:
    with pytest.raises(ControlError, match=r"directord is not running .*systemctl start"):
        await asyncio.to_thread(request, sock_dir / "missing.sock", "status")
    dead = sock_dir / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(dead))  # bound, never listening: what a killed daemon leaves
        with pytest.raises(ControlError, match="directord is not running"):
            await asyncio.to_thread(request, dead, "status")
    # a new daemon takes the stale socket over
    srv = ControlServer(dead, {"echo": echo})
    await srv.start()
    try:
        assert await asyncio.to_thread(request, dead, "echo") == {"echo": {}}
        second = ControlServer(dead, {"echo": echo})
        with pytest.raises(ControlError, match="another directord is listening"):
            await second.start()
    finally:
        await srv.stop()
    assert not dead.exists()


async def run_as_nobody(path: Path, *argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        sys.executable,
        "-m",
        "director.cli",
        "--socket",
        str(path),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.asyncio
async def test_non_root_is_refused_by_mode_and_by_peer_uid(server: ControlServer) -> None:
    code, err = await run_as_nobody(server.path, "status")
    assert code == 1
    assert "permission denied" in err
    assert "for root only" in err
    # even with the file opened up, SO_PEERCRED keeps other users out
    os.chmod(server.path, 0o666)
    code, err = await run_as_nobody(server.path, "status")
    assert code == 1
    assert f"permission denied: uid {NOBODY} may not control directord" in err


@pytest.mark.asyncio
async def test_a_streamed_result_is_sent_as_its_chunks_come(sock_dir: Path) -> None:
    """A handler's :class:`Streamed` result (the status, read from its rendering child): the
    reply is the same line as for the whole text, each chunk written when it comes; a
    rendering that fails part way leaves an incomplete line the client reports."""
    sent: list[int] = []
    gate = asyncio.Event()

    async def chunks(fail: bool) -> AsyncGenerator[bytes, None]:
        yield b'{"rows": ['
        for n in range(200):
            if n == 100:
                await gate.wait()  # the first half is written before the second is made
            sent.append(n)
            yield (b"," if n else b"") + json.dumps({"n": n, "pad": "x" * 1000}).encode()
        if fail:
            raise RenderFailed("the rendering process ended with status 1")
        yield b"]}"

    async def streamed(args: dict[str, Any]) -> object:
        return Streamed(lambda: chunks(bool(args.get("fail"))))

    srv = ControlServer(sock_dir / "run" / "control.sock", {"status": streamed})
    await srv.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(srv.path), limit=1 << 22)
        writer.write(encode_request("status"))
        head = await reader.readexactly(50_000)  # half of it, while the rest is not made yet
        assert head.startswith(OK_HEAD) and len(sent) <= 100
        gate.set()
        line = head + await reader.readline()
        writer.close()
        rows = [{"n": n, "pad": "x" * 1000} for n in range(200)]
        assert line.endswith(b"]}}\n") and json.loads(line) == json.loads(ok({"rows": rows}))
        with pytest.raises(ControlError, match="directord sent an unreadable answer"):
            await asyncio.to_thread(request, srv.path, "status", {"fail": True})
    finally:
        gate.set()
        await srv.stop()
