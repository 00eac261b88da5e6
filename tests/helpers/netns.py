"""Test topologies built from network namespaces, veth pairs and bridges, with ``ip`` (iproute2).

Only documentation/benchmark ranges may be assigned: 198.18.0.0/15 and 2001:db8::/32. Nothing is
created in the caller's own namespace (veth pairs are made directly inside the namespaces), and
everything (background processes, then namespaces) is removed when the Topology closes.

    with Topology() as topo:
        a, b = topo.namespace("a"), topo.namespace("b")
        topo.veth(a, "eth0", b, "eth0", a_addr="198.18.0.1/24", b_addr="198.18.0.2/24")
        a.run("busybox", "ping", "-c1", "198.18.0.2")
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

V4_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
V6_RANGE = ipaddress.IPv6Network("2001:db8::/32")
PREFIX = "dt-"
_serial = itertools.count()

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class AddressRangeError(ValueError):
    """An address outside 198.18.0.0/15 and 2001:db8::/32 was about to be used."""


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError, its message shows the output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def check_address(text: str) -> Interface:
    """text ("198.18.0.1/24", "2001:db8::1") parsed, if it lies inside an allowed range."""
    iface = ipaddress.ip_interface(text)
    if isinstance(iface, ipaddress.IPv4Interface):
        inside = iface.network.subnet_of(V4_RANGE)
    else:
        inside = iface.network.subnet_of(V6_RANGE)
    if not inside:
        raise AddressRangeError(f"{text} is outside {V4_RANGE} and {V6_RANGE}")
    return iface


def _ip(*args: str) -> str:
    """Run ``ip args`` (only ever on namespaces, or with ``-n``); its stdout, or CommandError."""
    argv = ["ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise CommandError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout


def namespaces() -> list[str]:
    """The names of all named network namespaces (``ip netns list``)."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def remove_namespace(name: str) -> None:
    """Kill every process still inside namespace name, then delete it."""
    for pid in _ip("netns", "pids", name).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "delete", name)


def remove_stale() -> list[str]:
    """Delete namespaces left by earlier runs whose process (dt-<pid>-...) is gone."""
    removed = []
    for name in namespaces():
        match = re.fullmatch(rf"{PREFIX}(\d+)-.*", name)
        if match and not _pid_alive(int(match.group(1))):
            remove_namespace(name)
            removed.append(name)
    return removed


@dataclass
class Background:
    """A process started in a namespace; its stdout and stderr go to log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 5) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Namespace:
    name: str
    topology: Topology = field(repr=False)

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in this namespace and wait; output is captured as text."""
        full = self.argv(*argv)
        done = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise CommandError(done.returncode, full, done.stdout, done.stderr)
        return done

    def spawn(self, *argv: str) -> Background:
        """Start argv in this namespace in the background; it is killed when the topology closes."""
        return self.topology._spawn(self, argv)

    def ip(self, *args: str) -> str:
        """``ip -n <this namespace> args``."""
        return _ip("-n", self.name, *args)

    def up(self, dev: str) -> None:
        self.ip("link", "set", "dev", dev, "up")

    def add_address(self, dev: str, address: str) -> Interface:
        iface = check_address(address)
        extra = ["nodad"] if iface.version == 6 else []
        self.ip("address", "add", str(iface), "dev", dev, *extra)
        return iface

    def add_route(self, destination: str, via: str) -> None:
        """A route ("default" or an allowed network) through a gateway in an allowed range."""
        dest = destination if destination == "default" else str(check_address(destination).network)
        gateway = check_address(via)
        family = f"-{gateway.version}"
        self.ip(family, "route", "add", dest, "via", str(gateway.ip))

    def sysctl(self, key: str, value: str) -> None:
        """Set a per-namespace sysctl, e.g. sysctl("net.ipv4.ip_forward", "1")."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.run("sh", "-c", 'echo "$1" > "$2"', "sh", value, path)

    def bridge(self, name: str) -> str:
        self.ip("link", "add", name, "type", "bridge")
        self.up(name)
        return name


class Topology:
    """Owns namespaces and background processes; closing it removes them all."""

    def __init__(self) -> None:
        self.prefix = f"{PREFIX}{os.getpid()}-{next(_serial)}-"
        self.namespaces: list[Namespace] = []
        self.background: list[Background] = []
        self._ports = itertools.count()
        self._logs = tempfile.TemporaryDirectory(prefix="dt-netns-")

    def __enter__(self) -> Topology:
        remove_stale()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def namespace(self, label: str) -> Namespace:
        """A new namespace named <prefix><label>, with lo up."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", label):
            raise ValueError(f"bad namespace label {label!r}")
        ns = Namespace(self.prefix + label, self)
        _ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.up("lo")
        return ns

    def veth(
        self,
        a: Namespace,
        a_dev: str,
        b: Namespace,
        b_dev: str,
        *,
        a_addr: str | None = None,
        b_addr: str | None = None,
    ) -> None:
        """A veth pair a:a_dev <-> b:b_dev, both up, with the given addresses."""
        for address in (a_addr, b_addr):
            if address is not None:
                check_address(address)
        a.ip("link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name)
        for ns, dev, address in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
            if address is not None:
                ns.add_address(dev, address)
            ns.up(dev)

    def attach(
        self, ns: Namespace, dev: str, switch: Namespace, bridge: str, *, addr: str | None = None
    ) -> None:
        """Connect ns:dev to a bridge in namespace switch (the bridge-side port is auto-named)."""
        port = f"port{next(self._ports)}"
        self.veth(switch, port, ns, dev, b_addr=addr)
        switch.ip("link", "set", "dev", port, "master", bridge)

    def _spawn(self, ns: Namespace, argv: tuple[str, ...]) -> Background:
        fd, name = tempfile.mkstemp(dir=self._logs.name, suffix=".log")
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen(
                ns.argv(*argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        job = Background(proc, Path(name))
        self.background.append(job)
        return job

    def close(self) -> None:
        """Stop background processes, then delete the namespaces; raise if any could not be."""
        errors = []
        for job in reversed(self.background):
            job.stop()
        self.background.clear()
        for ns in reversed(self.namespaces):
            try:
                remove_namespace(ns.name)
            except CommandError as exc:
                errors.append(f"{ns.name}: {exc.stderr.strip()}")
        self.namespaces.clear()
        self._logs.cleanup()
        if errors:
            raise RuntimeError("could not remove namespaces: " + "; ".join(errors))
