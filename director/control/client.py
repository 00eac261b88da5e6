"""The control client: synchronous, for ``directorctl`` (a short-lived command).

Every way of not reaching the daemon becomes a :class:`ControlError` that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from pathlib import Path
from typing import Any

from director.control.protocol import ControlError, decode_reply, encode_request


def request(
    path: Path, command: str, arguments: dict[str, object] | None = None, *, wait: float = 120.0
) -> Any:
    """Send one command and return its result; :class:`ControlError` with advice otherwise.
    ``wait`` bounds the whole exchange (seconds); ``arguments`` go to the command."""
    body = encode_request(command, arguments)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"directord is not running (no one answers on {path}: {exc.strerror}); "
                "start it with: systemctl start directord"
            ) from exc
        except PermissionError as exc:
            raise ControlError(
                f"permission denied on {path}: the control socket is for root only "
                "(run directorctl as root, e.g. with sudo)"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise ControlError(f"{path}: not a socket path ({exc.strerror})") from exc
            raise ControlError(f"cannot connect to directord at {path}: {exc}") from exc
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(body)  # a refusal may arrive (and the socket close) first
            with sock.makefile("rb") as f:
                line = f.readline()
        except TimeoutError as exc:
            raise ControlError(f"directord did not answer {command!r} within {wait:g} s") from exc
        except OSError as exc:
            raise ControlError(f"lost the connection to directord: {exc}") from exc
    return decode_reply(line)
