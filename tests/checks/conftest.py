"""The probe lab: namespaces on this machine's kernel, real servers, and the prober's loop.

    prober ns --web0/eth0-- web ns (nginx)        198.18.1.11, 2001:db8:1::11
              --app0/eth0-- app ns (Python servers) 198.18.2.11, 2001:db8:2::11
              --rdp0/eth0-- rdp ns (xrdp)         198.18.3.11

Probes run on an event loop inside the prober namespace (``lab.probe(...)``); the Python
servers (aiohttp, aiosmtpd, raw TCP) run on a loop inside the app namespace. The namespaces,
those servers and nginx are started once for the whole package, xrdp once in test_rdp.py;
the Topology removes every namespace and process at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from checks.probes.http import HttpProber
from checks.probes.result import ProbeResult, Target
from tests.helpers import servers
from tests.helpers.netns import Namespace, Topology
from tests.helpers.servers import NamespaceLoop, Pki

WEB, WEB6 = "198.18.1.11", "2001:db8:1::11"
APP, APP6 = "198.18.2.11", "2001:db8:2::11"
RDP = "198.18.3.11"
WAIT = 5.0  # timeout for probes that must succeed
SHORT = 0.3  # timeout for probes that must time out

# ports on APP
HTTP_PORT, HTTPS_PORT, SELF_SIGNED_PORT, SILENT_PORT = 8080, 443, 8443, 9443
FROZEN_PORT, GARBAGE_AFTER_REQUEST_PORT, GARBAGE_PORT, BANNER_554_PORT = 9000, 9001, 9002, 9003
SHORT_X224_PORT, SMTP_PORT, SMTP_PLAIN_PORT, CLOSED_PORT = 9004, 25, 2525, 81
EXCHANGE_FAILING = {"ecp": 503, "oab": 500}


def target(address: str, port: int) -> Target:
    return Target(ip_address(address), port)


@dataclass
class Lab:
    topology: Topology
    web: Namespace
    app: Namespace
    rdp: Namespace
    prober: NamespaceLoop
    servers: NamespaceLoop
    pki: Pki
    directory: Path
    cleanups: list[Callable[[], Coroutine[Any, Any, object]]] = field(default_factory=list)

    def probe(self, coro: Coroutine[Any, Any, ProbeResult]) -> ProbeResult:
        """Run a probe on the prober namespace's loop."""
        return self.prober.run(coro)


async def _whoami(request: web.Request) -> web.Response:
    return web.Response(text=f"host={request.host}\n")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="too late\n")


async def _healthcheck(request: web.Request) -> web.Response:
    vdir = request.match_info["vdir"].lower()
    status = EXCHANGE_FAILING.get(vdir, 200)
    return web.Response(status=status, text=f"<html><body>{status} {vdir}</body></html>")


def app_routes() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _ok)
    app.router.add_get("/whoami", _whoami)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/{vdir:(?!rpc)[^/]+}/healthcheck.htm", _healthcheck)
    return app


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def start_app_servers(lab: Lab) -> None:
    """Every Python server of the package, on the app namespace's loop."""
    pki = lab.pki
    tls = pki.sni_context("default.test", {"exchange.test": "exchange.test"})
    for port, context in (
        (HTTP_PORT, None),
        (HTTPS_PORT, tls),
        (SELF_SIGNED_PORT, pki.self_signed_context()),
    ):
        runner = await servers.start_web(app_routes(), APP, port, context)
        lab.cleanups.append(runner.cleanup)
    runner6 = await servers.start_web(app_routes(), APP6, HTTP_PORT)
    lab.cleanups.append(runner6.cleanup)
    raw = {
        SILENT_PORT: servers.silent,
        GARBAGE_AFTER_REQUEST_PORT: servers.replying(
            b"HTTP/1.1 400 Bad Request\r\n\r\n", wait_for_request=True
        ),
        GARBAGE_PORT: servers.replying(b"garbage\r\n"),
        BANNER_554_PORT: servers.replying(b"554 5.3.2 mail.test no service here\r\n"),
        SHORT_X224_PORT: servers.replying(b"\x03\x00\x00\x13\x0e\xd0\x00", wait_for_request=True),
    }
    for port, handler in raw.items():
        server = await servers.start_tcp(APP, port, handler)
        lab.cleanups.append(_closing(server))
    frozen = servers.frozen_listener(APP, FROZEN_PORT)
    lab.cleanups.append(_closing(frozen))
    for port, context in ((SMTP_PORT, pki.server_context("mail.test")), (SMTP_PLAIN_PORT, None)):
        server = await servers.start_smtp(APP, port, context)
        lab.cleanups.append(_closing(server))


@contextlib.contextmanager
def serving(lab: Lab, port: int, handle: servers.Handler) -> Iterator[None]:
    """A TCP server on APP:port (on the servers' loop) for the duration of the block."""
    server = lab.servers.run(servers.start_tcp(APP, port, handle))
    try:
        yield
    finally:
        lab.servers.run(_closing(server)())


def _closing(thing: asyncio.Server | socket.socket) -> Callable[[], Coroutine[Any, Any, None]]:
    async def close() -> None:
        thing.close()
        if isinstance(thing, asyncio.Server):
            await thing.wait_closed()

    return close


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("probes")
    with Topology() as topo:
        prober = topo.namespace("prober")
        web_ns, app_ns, rdp_ns = (topo.namespace(name) for name in ("web", "app", "rdp"))
        for index, (ns, dev) in enumerate(
            ((web_ns, "web0"), (app_ns, "app0"), (rdp_ns, "rdp0")), 1
        ):
            topo.veth(
                prober,
                dev,
                ns,
                "eth0",
                a_addr=f"198.18.{index}.1/24",
                b_addr=f"198.18.{index}.11/24",
            )
            prober.add_address(dev, f"2001:db8:{index}::1/64")
            ns.add_address("eth0", f"2001:db8:{index}::11/64")
        with NamespaceLoop(prober) as probe_loop, NamespaceLoop(app_ns) as server_loop:
            lab = Lab(
                topo, web_ns, app_ns, rdp_ns, probe_loop, server_loop, Pki(directory), directory
            )
            try:
                server_loop.run(start_app_servers(lab))
                yield lab
            finally:
                for cleanup in reversed(lab.cleanups):
                    server_loop.run(cleanup())


NGINX_SERVERS = """
    server {{
        listen 198.18.1.11:80 default_server;
        listen [2001:db8:1::11]:80 default_server;
        server_name _;
        root {www};
        location = / {{ return 200 "default site\\n"; }}
        location = /protocol {{ return 200 "$server_protocol\\n"; }}
        location = /version {{ return 200 "app version 2.7 ready\\n"; }}
        location = /unavailable {{ return 503 "down for maintenance\\n"; }}
        location = /moved {{ return 302 /; }}
        location /private/ {{
            auth_basic "director test";
            auth_basic_user_file {htpasswd};
        }}
    }}
    server {{
        listen 198.18.1.11:80;
        server_name a.test;
        location / {{ return 200 "site a\\n"; }}
    }}
    server {{
        listen 198.18.1.11:80;
        server_name b.test;
        location / {{ return 200 "site b\\n"; }}
    }}
"""


@pytest.fixture(scope="package")
def nginx(lab: Lab) -> Iterator[None]:
    """nginx in the web namespace on 198.18.1.11:80 and [2001:db8:1::11]:80."""
    directory = lab.directory / "nginx"
    www = directory / "www"
    (www / "private").mkdir(parents=True)
    (www / "private" / "index.html").write_text("members only\n")
    htpasswd = directory / "htpasswd"
    htpasswd.write_text("probe:{PLAIN}s3cret\n")
    job = servers.nginx(lab.web, directory, NGINX_SERVERS.format(www=www, htpasswd=htpasswd))
    try:
        lab.prober.run(servers.wait_listening(WEB, 80))
        lab.prober.run(servers.wait_listening(WEB6, 80))
    except TimeoutError:
        pytest.fail(f"nginx did not start:\n{job.output()}")
    yield
    job.stop()


@pytest.fixture(scope="module")
def http_prober(lab: Lab) -> Iterator[HttpProber]:
    """One HttpProber for a module's HTTP(S) and Exchange probes (sessions on the prober loop)."""
    prober = HttpProber()
    yield prober
    lab.prober.run(prober.close())


@pytest.fixture(autouse=True)
def main_namespace_unchanged() -> Iterator[None]:
    """The test process's own thread never changes network namespace."""
    before = os.readlink("/proc/thread-self/ns/net")
    yield
    assert os.readlink("/proc/thread-self/ns/net") == before
    assert os.readlink("/proc/self/ns/net") == before
