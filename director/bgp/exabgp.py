"""ExaBGP as ``directord``'s supervised child.

``directord`` writes an ExaBGP config (the neighbours, and one API ``process`` that is
:mod:`director.bgp.relay` connected back to a Unix socket ``directord`` listens on), starts
``exabgp`` under ``setpriv --pdeathsig TERM`` and keeps it running:

* its API acknowledgements and session reports are always read (an unread pipe stalls ExaBGP);
  its own log goes to ``exabgp.log`` in the runtime directory (emptied at each start; its last
  lines are logged when it exits). Not a pipe: ExaBGP logs from its SIGTERM handler, and a
  write to a pipe whose reader died with ``directord`` would abort the shutdown;
* if it dies it is started again after a backoff (0.5 s doubling to 30 s; reset once it has run
  for a minute), and every route that should be announced is sent again; if its API process
  goes while it runs (it would keep announcing with nobody to withdraw), it is stopped and
  started again;
* it goes when ``directord`` goes, whatever the signal: the kernel sends it SIGTERM when its
  parent dies (``PR_SET_PDEATHSIG``, set by ``setpriv``), and independently its API process
  sends it SIGTERM when the socket closes. Either way it closes its sessions with a Cease
  and the router withdraws the routes at once, not after the hold time;
* a clean stop withdraws every route first (waiting briefly for ExaBGP's ``done``), then stops
  ExaBGP.

The config rendering (:func:`exabgp_config`, :func:`exabgp_env`) is pure; the dialogue is
:class:`director.bgp.exabgp_api.ExaBgpApi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from director.bgp.exabgp_api import (
    CommandFailed,
    Event,
    ExaBgpApi,
    ExaBgpStopping,
    Route,
    SessionChanged,
    Unexpected,
)
from director.config.bgp import BgpSettings
from director.config.fields import IPAddress

log = structlog.get_logger("director.bgp")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long restarts without backoff
STOP_ACK_WAIT = 1.0  # on a clean stop: how long to wait for the withdrawals' acks
STOP_GRACE = 3.0  # then SIGTERM, and SIGKILL after this long


def exabgp_program(bgp: BgpSettings) -> list[str]:
    """The configured program, else the ``exabgp`` package installed with directord (run as
    ``python -m exabgp``: the Debian package keeps no scripts but its own)."""
    if bgp.exabgp:
        return [bgp.exabgp]
    return [sys.executable, "-m", "exabgp"]


def relay_argv(socket_path: Path) -> list[str]:
    return [sys.executable, "-m", "director.bgp.relay", str(socket_path)]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def local_address_for(peer: IPAddress) -> IPAddress:
    """The source address the kernel would use towards ``peer`` (a connected UDP socket sends
    nothing); ExaBGP 4.2 needs one per neighbour. OSError when there is no route."""
    family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((str(peer), 179))
        return ipaddress.ip_address(s.getsockname()[0])


def exabgp_config(
    bgp: BgpSettings, relay: Sequence[str], local: Mapping[IPAddress, IPAddress] | None = None
) -> str:
    """ExaBGP 4.2 configuration for ``bgp``: one API process (``relay``), one neighbour block
    each, reporting session changes to the API. No static routes: the API announces them.
    ``local`` gives the local address of neighbours that have none configured."""
    lines = [
        "# written by directord; do not edit (it is rewritten at every start)",
        "process director {",
        f"    run {' '.join(relay)};",
        "    encoder text;",
        "}",
        "",
    ]
    for n in bgp.neighbors:
        lines += [
            f"neighbor {n.address} {{",
            f"    router-id {bgp.router_id};",
            f"    local-as {bgp.local_as};",
            f"    peer-as {n.peer_as};",
            f"    hold-time {n.hold_time};",
        ]
        source = n.local_address or (local or {}).get(n.address)
        if source is not None:
            lines.append(f"    local-address {source};")
        if n.password is not None:
            lines.append(f"    md5-password {_quote(n.password)};")
        lines += [
            "    family {",
            "        ipv4 unicast;",
            "        ipv6 unicast;",
            "    }",
            "    api {",
            "        processes [ director ];",
            "        neighbor-changes;",
            "    }",
            "}",
            "",
        ]
    return "\n".join(lines)


def exabgp_env(log_file: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ExaBGP runs with: acks on, no respawn of the API process and exit when it
    dies, no CLI pipes, no listening socket, logs to ``log_file``."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "exabgp.api.ack": "true",
            "exabgp.api.respawn": "false",
            "exabgp.api.terminate": "true",
            "exabgp.api.cli": "false",
            "exabgp.api.encoder": "text",
            "exabgp.daemon.daemonize": "false",
            # ExaBGP always switches to daemon.user; a change of user clears the parent-death
            # signal, so it stays root (as directord is) and keeps it. drop = false: the API
            # process starts before that switch.
            "exabgp.daemon.user": "root",
            "exabgp.daemon.drop": "false",
            "exabgp.daemon.pid": "",
            "exabgp.tcp.bind": "",
            "exabgp.log.destination": log_file,
            "exabgp.log.level": "INFO",
        }
    )
    return env


class ExaBgp:
    """The running ExaBGP child and its API dialogue; routes are set with :meth:`announce`."""

    def __init__(
        self,
        bgp: BgpSettings,
        runtime_dir: Path,
        *,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bgp = bgp
        self.runtime_dir = runtime_dir
        self.socket_path = runtime_dir / "exabgp.sock"
        self.config_path = runtime_dir / "exabgp.conf"
        self.log_path = runtime_dir / "exabgp.log"
        self.api = ExaBgpApi()
        self.routes: list[Route] = []
        self.on_event = on_event
        self.clock = clock
        self.restarts = 0
        self.pid: int | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.AbstractServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._acked = asyncio.Event()

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve_api, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        self._write_config()
        self._task = asyncio.create_task(self._supervise(), name="exabgp")

    def _write_config(self) -> None:
        local: dict[IPAddress, IPAddress] = {}
        for n in self.bgp.neighbors:
            if n.local_address is None:
                try:
                    local[n.address] = local_address_for(n.address)
                except OSError as exc:
                    log.error("bgp_no_route_to_neighbor", neighbor=str(n.address), error=str(exc))
        text = exabgp_config(self.bgp, relay_argv(self.socket_path), local)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:  # holds the MD5 passwords: owner only
            f.write(text)

    def argv(self) -> list[str]:
        program = exabgp_program(self.bgp)
        pdeathsig = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
        return [*pdeathsig, *program, str(self.config_path)]

    async def _supervise(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopping:
            started = self.clock()
            try:
                self._proc = await self._spawn()
            except OSError as exc:
                log.error("exabgp_start_failed", argv=self.argv(), error=str(exc))
            else:
                self.pid = self._proc.pid
                log.info("exabgp_started", pid=self.pid, restarts=self.restarts)
                code = await self._proc.wait()
                self.pid = None
                if self._stopping:
                    return
                log.error(
                    "exabgp_exited",
                    code=code,
                    ran_seconds=round(self.clock() - started, 3),
                    last_lines=self._log_tail(),
                )
            self.api.reset()
            self.restarts += 1
            if self.clock() - started >= STABLE_AFTER:
                backoff = BACKOFF_FIRST
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _spawn(self) -> asyncio.subprocess.Process:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=exabgp_env(str(self.log_path)),
                cwd=str(self.runtime_dir),
                start_new_session=True,  # a Ctrl-C to directord's group is directord's
            )
        finally:
            os.close(fd)

    def _log_tail(self, lines: int = 8) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
                return f.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            return []

    async def _serve_api(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # one ExaBGP at a time; a stale one is replaced
            self._writer.close()
        self.api.reset()
        self._writer = writer
        log.info("exabgp_api_connected")
        self._send(self.api.want(self.routes))
        try:
            while data := await reader.read(65536):
                for event in self.api.receive(data, self.clock()):
                    self._event(event)
        except ConnectionError:
            pass
        finally:
            if self._writer is writer:
                self._writer = None
                # ExaBGP without its API process would keep announcing what it has, and we
                # could not withdraw it: restart it (the supervisor sees it exit).
                proc = self._proc
                if not self._stopping and proc is not None and proc.returncode is None:
                    log.error("exabgp_api_lost", pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
            writer.close()

    def _event(self, event: Event) -> None:
        match event:
            case SessionChanged(peer, state, reason):
                (log.info if state != "down" else log.warning)(
                    "bgp_session", peer=str(peer), state=state, reason=reason
                )
            case CommandFailed(command):
                log.error("exabgp_command_failed", command=command)
            case ExaBgpStopping():
                log.info("exabgp_stopping")
            case Unexpected(line):
                log.warning("exabgp_unexpected", line=line[:200])
        if not self.api.pending:
            self._acked.set()
        if self.on_event is not None:
            self.on_event(event)

    def _send(self, commands: list[str]) -> None:
        if not commands or self._writer is None:
            return
        self._acked.clear()
        for command in commands:
            log.info("exabgp_command", command=command)
        self._writer.write("".join(f"{c}\n" for c in commands).encode())

    # -- what the service asks ------------------------------------------------------------------

    def announce(self, routes: Sequence[Route]) -> None:
        """Announce exactly ``routes`` (the others are withdrawn)."""
        self.routes = list(routes)
        self._send(self.api.want(self.routes))

    async def stop(self) -> None:
        """Withdraw everything (waiting briefly for the acks), then stop ExaBGP."""
        self.announce([])
        if self._writer is not None and self.api.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_ACK_WAIT):
                    await self._acked.wait()
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        log.info("exabgp_stopped")

    def summary(self) -> dict[str, object]:
        now = self.clock()
        return {
            "backend": "exabgp",
            "pid": self.pid,
            "restarts": self.restarts,
            "api_connected": self._writer is not None,
            "pending_acks": len(self.api.pending),
            "failed_commands": self.api.failed,
            "sessions": self.api.sessions_json(now),
            "announced": sorted(str(p) for p in self.api.acked),
        }
