"""Real servers in network namespaces for the health-check probe tests, and an event loop that
runs inside a namespace.

``NamespaceLoop`` runs an asyncio loop on its own thread, moved into a namespace with
``setns(2)``. Linux keeps the network namespace per thread, so only that thread (and threads and
processes it starts) changes namespace: the test process's main thread never does. Sockets
keep the namespace they were created in, so a server started on a namespace's loop listens
there, and a probe run on the prober's loop connects from there.

nginx and xrdp are Debian's binaries, started directly (no system service) with a configuration
generated in a temporary directory, listening only on an address inside their namespace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import trustme
from aiohttp import web
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP

from tests.helpers.netns import Background, Namespace, check_address

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_namespace(name: str) -> None:
    """Move the calling thread (only) into the named network namespace."""
    path = f"/run/netns/{name}"
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(path).st_ino:
        raise RuntimeError(f"setns({path}) returned but the thread is not in {name}")


class NamespaceLoop:
    """An asyncio event loop on a thread inside a network namespace; ``run`` waits for a result.

    with NamespaceLoop(ns) as inside:
        result = inside.run(tcp.probe(target, spec, 1.0))
    """

    def __init__(self, namespace: Namespace) -> None:
        self.name = namespace.name
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=f"loop-{self.name}", daemon=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "NamespaceLoop used outside its with block"
        return self._loop

    def __enter__(self) -> NamespaceLoop:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"no event loop in {self.name}") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _main(self) -> None:
        try:
            enter_namespace(self.name)
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)  # this thread's only
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        loop = self._loop
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            asyncio.set_event_loop(None)


async def wait_listening(address: str, port: int, within: float = 10) -> None:
    """Return once a TCP connect to address:port succeeds (run it on a namespace's loop)."""
    check_address(address)
    async with asyncio.timeout(within):
        while True:
            try:
                _reader, writer = await asyncio.open_connection(address, port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return


# --- TLS material --------------------------------------------------------------------------


class Pki:
    """A test CA that issues server certificates, a second (wrong) CA, and a self-signed one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA(organization_name="director test CA")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.wrong_ca_file = directory / "wrong-ca.pem"
        wrong = trustme.CA(organization_name="some other CA")
        wrong.cert_pem.write_to_path(str(self.wrong_ca_file))
        self_signed = trustme.CA(organization_name="self-signed server")
        self.self_signed_files = (directory / "self-signed.pem", directory / "self-signed.key")
        self_signed.cert_pem.write_to_path(str(self.self_signed_files[0]))
        self_signed.private_key_pem.write_to_path(str(self.self_signed_files[1]))

    def cert_files(self, *names: str) -> tuple[Path, Path]:
        """(certificate, key) files for a certificate valid for names, issued by the CA."""
        leaf = self.ca.issue_cert(*names)
        stem = self.directory / names[0].replace(":", "_")
        cert, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    def server_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(context)
        return context

    def self_signed_context(self) -> ssl.SSLContext:
        """A server context whose certificate is self-signed (a CA certificate used as a leaf)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.self_signed_files)
        return context

    def sni_context(self, default: str, by_name: dict[str, str]) -> ssl.SSLContext:
        """A server context presenting a certificate for default, or for by_name[SNI name]."""
        contexts = {sni: self.server_context(name) for sni, name in by_name.items()}
        context = self.server_context(default)

        def pick(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name in contexts:
                sslobj.context = contexts[name]

        context.sni_callback = pick
        return context


# --- Python servers (start them on a namespace's loop) -------------------------------------


async def start_web(
    app: web.Application, address: str, port: int, tls: ssl.SSLContext | None = None
) -> web.AppRunner:
    """An aiohttp server; clean it up with ``await runner.cleanup()`` on the same loop."""
    check_address(address)
    runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port, ssl_context=tls).start()
    return runner


async def start_tcp(
    address: str,
    port: int,
    handle: Handler,
) -> asyncio.Server:
    check_address(address)
    return await asyncio.start_server(handle, address, port)


def frozen_listener(address: str, port: int) -> socket.socket:
    """A socket that listens and never accepts: the kernel completes the handshake, nobody
    answers (a hung application). Create it on the namespace's loop thread; close it after."""
    check_address(address)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(64)
    return sock


def replying(payload: bytes, *, wait_for_request: bool = False) -> Handler:
    """A connection handler that sends payload (after the first request bytes, if asked), then
    closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            if wait_for_request:
                await reader.read(1024)
            writer.write(payload)
            await writer.drain()
        writer.close()

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A connection handler that accepts, reads, and never answers."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass
    writer.close()


async def start_smtp(address: str, port: int, tls: ssl.SSLContext | None) -> asyncio.Server:
    """aiosmtpd's SMTP protocol (a real SMTP server), with STARTTLS when tls is given."""
    check_address(address)
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(Sink(), hostname="mail.test", tls_context=tls, loop=loop)

    return await loop.create_server(factory, address, port)


# --- nginx and xrdp ------------------------------------------------------------------------

NGINX_MAIN = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type text/plain;
{servers}
}}
"""


def binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise FileNotFoundError(f"{name} not found: apt-get install {package}")
    return path


def nginx(ns: Namespace, directory: Path, servers: str) -> Background:
    """Debian's nginx in ns with the given server blocks (each must ``listen`` on an address
    inside ns); its files stay in directory. Wait for it with ``wait_listening``."""
    for line in servers.splitlines():
        if line.strip().startswith("listen "):
            address = line.split()[1].rsplit(":", 1)[0].strip("[]")
            check_address(address)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(NGINX_MAIN.format(dir=directory, servers=servers))
    exe = binary("nginx", "nginx")
    ns.run(
        exe, "-t", "-q", "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)
    )
    return ns.spawn(
        exe, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)
    )


XRDP_INI = """
[Globals]
ini_version=1
fork=false
port=tcp://{address}:{port}
security_layer={security_layer}
certificate={cert}
key_file={key}
ssl_protocols=TLSv1.2, TLSv1.3
[Logging]
LogFile={dir}/xrdp.log
LogLevel=INFO
EnableSyslog=false
[Xorg]
name=Xorg
lib=libxup.so
username=ask
password=ask
ip=127.0.0.1
port=-1
code=20
"""


def xrdp(
    ns: Namespace,
    directory: Path,
    address: str,
    port: int,
    cert: tuple[Path, Path],
    security_layer: str = "negotiate",
) -> Background:
    """Debian's xrdp in the foreground in ns, listening only on address:port.

    security_layer "tls" makes it answer a client that offers only standard RDP security with
    an RDP Negotiation Failure (SSL_REQUIRED_BY_SERVER)."""
    check_address(address)
    directory.mkdir(parents=True, exist_ok=True)
    ini = directory / "xrdp.ini"
    ini.write_text(
        XRDP_INI.format(
            address=address,
            port=port,
            cert=cert[0],
            key=cert[1],
            dir=directory,
            security_layer=security_layer,
        )
    )
    return ns.spawn(binary("xrdp", "xrdp"), "--nodaemon", "--config", str(ini))
