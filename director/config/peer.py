"""``[peer_check]``: compare this director's shared config with its peers'.

Every key here is host-local (each director names the other as its peer and listens on its own
address). The shared key lives in a file of its own, readable by its owner only, so that the
config file (often world-readable, a Debian conffile) holds no secret: :func:`read_key` is the
one reader, used when the file is validated and again when the daemon starts or reloads.
"""

from __future__ import annotations

import ipaddress
import math
import os
import stat
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, PlainValidator, model_validator

from director.config import machine
from director.config.fields import Finding, fail, raise_findings, show

MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096


class KeyFileError(ValueError):
    """The key file cannot be used; the message says why and how to fix it."""


def read_key(path: str) -> bytes:
    """The shared key in ``path``: its bytes without surrounding whitespace. The file must be a
    regular file that only its owner may read or write (mode 0600 or 0400)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(
            f"no such file {show(path)}: create it with "
            f"(umask 077; head -c 32 /dev/urandom | base64 > {path}) and copy it to every peer"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {show(path)}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"expected a regular file, found something else at {show(path)}")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"expected a file only its owner can read (mode 0600), found mode "
                f"{stat.S_IMODE(st.st_mode):04o} on {show(path)}: chmod 600 {path}"
            )
        data = os.read(fd, MAX_KEY_BYTES + 1)
    finally:
        os.close(fd)
    key = data.strip()
    if len(data) > MAX_KEY_BYTES:
        raise KeyFileError(f"expected at most {MAX_KEY_BYTES} bytes in {show(path)}")
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"expected a key of at least {MIN_KEY_BYTES} bytes in {show(path)}, found "
            f"{len(key)}: (umask 077; head -c 32 /dev/urandom | base64 > {path})"
        )
    return key


def _host_port(text: str) -> tuple[str, int] | None:
    """``"198.18.0.2:9470"`` / ``"[2001:db8::2]:9470"`` / ``"d2.example.net:9470"``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    elif ":" in host or not all(c.isalnum() or c in ".-" for c in host):
        return None
    return host, int(port)


def _endpoint(value: object) -> str:
    if isinstance(value, str) and _host_port(value) is not None:
        return value
    fail(
        'expected "ADDRESS:PORT" like "198.18.0.2:9470", "[2001:db8::2]:9470" or '
        f'"d2.example.net:9470", found {show(value)}'
    )


def _key_file(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        fail(f"expected an absolute path (starting with /), found {show(value)}")
    machine.read()  # the key file's state: a config naming one is not kept by the start cache
    try:
        read_key(value)
    except KeyFileError as exc:
        fail(str(exc))
    return value


def _seconds(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.1 <= value <= 3600
    ):
        fail(f"expected a number of seconds from 0.1 to 3600, found {show(value)}")
    return float(value)


Endpoint = Annotated[str, PlainValidator(_endpoint)]
KeyFile = Annotated[str, PlainValidator(_key_file)]
PeerSeconds = Annotated[float, PlainValidator(_seconds)]


class PeerCheckSettings(BaseModel):
    """``[peer_check]``: where this director answers its peers, whom it asks, with which key."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    listen_address: Endpoint
    peers: tuple[Endpoint, ...]
    key_file: KeyFile
    interval: PeerSeconds = 3.0
    timeout: PeerSeconds = 2.0
    max_clock_skew: PeerSeconds = 30.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        findings: list[Finding] = []
        if not self.peers:
            findings.append(
                (("peers",), 'expected at least one peer like ["198.18.0.2:9470"], found none')
            )
        first: dict[str, int] = {}
        for i, peer in enumerate(self.peers):
            if peer in first:
                findings.append(
                    (("peers", i), f"expected each peer once, found {show(peer)} again")
                )
            first.setdefault(peer, i)
        if self.timeout >= self.interval:
            findings.append(
                (
                    ("timeout",),
                    f"expected a timeout shorter than interval ({self.interval:g} s), "
                    f"found {self.timeout:g} s",
                )
            )
        if self.listen_address in self.peers:
            findings.append(
                (
                    ("peers",),
                    f"expected the other directors' addresses, found this one's own "
                    f"listen_address {show(self.listen_address)}",
                )
            )
        host = _host_port(self.listen_address)
        if host is not None and not _is_ip(host[0]):
            findings.append(
                (
                    ("listen_address",),
                    f"expected an IP address to listen on, found {show(self.listen_address)}",
                )
            )
        if findings:
            raise_findings("PeerCheckSettings", findings)
        return self

    def listen(self) -> tuple[str, int]:
        host_port = _host_port(self.listen_address)
        assert host_port is not None
        return host_port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_endpoint(text: str) -> tuple[str, int]:
    """(host, port) of a validated ``peers`` entry."""
    host_port = _host_port(text)
    if host_port is None:
        raise ValueError(f"not ADDRESS:PORT: {text!r}")
    return host_port
