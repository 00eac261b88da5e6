"""ExaBGP's API process: ``python -m director.bgp.relay SOCKET``.

ExaBGP runs this as its ``process``; its stdin and stdout are ExaBGP's API pipe. It connects to
``directord``'s Unix socket and copies bytes both ways, so ``directord`` talks to ExaBGP over
that socket. When ExaBGP closes the pipe it exits. When the socket closes - ``directord`` died,
whatever the signal - it sends SIGTERM to ExaBGP (its parent) before exiting, so ExaBGP shuts
down and its BGP sessions close at once. (ExaBGP 4.2 alone does not stop when an API process
ends cleanly, even with ``exabgp.api.terminate``.) Standard library only, so it starts fast.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys


def relay(path: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(f"director.bgp.relay: cannot connect to {path}: {exc}", file=sys.stderr)
        return 1
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    poller = select.poll()
    poller.register(stdin, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == stdin:
                data = os.read(stdin, 65536)
                if not data:
                    return 0
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    _stop_parent()
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view) :]


def _stop_parent() -> None:
    """directord is gone: ExaBGP, our parent, must go too (its sessions with it)."""
    parent = os.getppid()
    if parent > 1:
        with contextlib.suppress(OSError):
            os.kill(parent, signal.SIGTERM)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m director.bgp.relay SOCKET", file=sys.stderr)
        return 2
    try:
        return relay(sys.argv[1])
    except BrokenPipeError:  # ExaBGP closed the pipe
        return 0
    except ConnectionError:  # directord went away
        _stop_parent()
        return 0


if __name__ == "__main__":
    sys.exit(main())
