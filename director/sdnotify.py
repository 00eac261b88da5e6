"""sd_notify(3) without libsystemd: one datagram per message to ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    """Sends READY/RELOADING/STOPPING/WATCHDOG/STATUS to systemd; silent when not under it."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> None:
        if self._sock is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        # systemd gone or its socket full: never fatal for the daemon
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(lines).encode(), target)

    def watchdog_interval(self) -> float | None:
        """Half the watchdog timeout in seconds, when systemd asked this process for pings."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
