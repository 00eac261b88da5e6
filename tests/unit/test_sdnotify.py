"""sd_notify messages arrive at a test socket the way systemd would receive them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from director.sdnotify import Notifier


def test_messages_reach_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    notifier = Notifier(str(path))
    try:
        notifier.notify("READY=1", "STATUS=ok")
        notifier.notify("WATCHDOG=1")
        assert server.recv(4096) == b"READY=1\nSTATUS=ok"
        assert server.recv(4096) == b"WATCHDOG=1"
    finally:
        notifier.close()
        server.close()


def test_abstract_socket_address() -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"director-test-{id(server)}"
    server.bind("\0" + name)
    server.settimeout(2)
    notifier = Notifier("@" + name)
    try:
        notifier.notify("STOPPING=1")
        assert server.recv(4096) == b"STOPPING=1"
    finally:
        notifier.close()
        server.close()


def test_silent_without_systemd_and_watchdog_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.notify("READY=1")  # no socket, no error
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notifier.watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert notifier.watchdog_interval() is None
