"""The thin nftables adapter: one ``nft -j -f`` run per batch, and ``nft -j list table``.

A batch is one netlink transaction: the kernel applies all of it or none of it, so a rejected
rule leaves the previous ruleset in force. Only the daemon's own table is ever named; the
command line (``argv``) is a parameter so tests can run it in a network namespace
(``ip netns exec NS nft``).

Whether the table exists at all is first asked of the kernel directly (:func:`table_exists`,
one netlink request) when nft runs in this process's network namespace: the daemon's first
sync (the first role, at start) lists its table, and in a new namespace or after a boot there
is none - an nft process less, 0.15-0.2 s of an emulated guest's start (``bench/startup.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import signal
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from director.network.ruleset import FAMILY, JSON, batch

TIMEOUT = 30.0
DEFAULT_ARGV = ("nft",)

# netfilter netlink (linux/netfilter/nfnetlink.h, nf_tables.h), for table_exists
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE = 0, 1
NFTA_TABLE_NAME = 1
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NFPROTO = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}


class NftError(Exception):
    """nft failed or refused a batch; the message says what we were doing and what nft said."""


TableProbe = Callable[[str, str], "bool | None"]  # (table, family) -> exists; None: cannot tell


class Nft:
    """``probe``: says whether a table exists before :meth:`list_table` runs nft for it
    (False: no nft run). By default :func:`table_exists` when ``argv`` is the plain ``nft``
    (it runs where this process's sockets are); none for another command line (``ip netns
    exec``), whose namespace this process's socket would not see."""

    def __init__(
        self,
        argv: Sequence[str] = DEFAULT_ARGV,
        timeout: float = TIMEOUT,
        probe: TableProbe | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        self.probe = probe if probe is not None or self.argv != DEFAULT_ARGV else table_exists
        self.batches = 0  # transactions sent (for tests and status)
        self.runs = 0  # nft processes started (listings, checks and transactions)

    async def _run(self, args: Sequence[str], stdin: bytes | None, doing: str) -> str:
        self.runs += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NftError(f"{doing}: cannot run {self.argv[0]}: {exc.strerror or exc}") from exc
        try:
            # asyncio.timeout, not wait_for: on 3.11, wait_for returns the result of an nft run
            # that ends as the caller is cancelled and swallows the cancellation (a stop that
            # cancels a role change hung on it when a Ctrl-C killed nft at the same moment)
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NftError(f"{doing}: nft did not finish within {self.timeout:g} s") from None
        except asyncio.CancelledError:  # a stop: the run is not left behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode is not None and proc.returncode < 0:  # a signal, e.g. a Ctrl-C's
            raise NftError(f"{doing}: nft was killed by {_signal_name(-proc.returncode)}")
        if proc.returncode != 0:
            raise NftError(f"{doing}: {_clean(err.decode(errors='replace'))}")
        return out.decode(errors="replace")

    async def apply(self, commands: Sequence[JSON], doing: str) -> None:
        """Send ``commands`` as one transaction; NftError (nothing changed) if nft refuses."""
        if not commands:
            return
        document = json.dumps(batch(commands)).encode()
        self.batches += 1
        # Not "-f -": nft opens /dev/stdin for that, which minimal systems (initramfs guests,
        # some containers) lack; /proc/self/fd/0 is the same pipe wherever /proc is mounted.
        await self._run(("-j", "-f", "/proc/self/fd/0"), document, doing)

    async def check(self, commands: Sequence[JSON], doing: str) -> None:
        """Have nft and the kernel validate ``commands`` without committing (``nft -c``)."""
        document = json.dumps(batch(commands)).encode()
        await self._run(("-c", "-j", "-f", "/proc/self/fd/0"), document, doing)

    async def list_table(self, table: str, family: str = FAMILY) -> dict[str, Any] | None:
        """Our table as nft's JSON, or None when it does not exist."""
        if self.probe is not None and self.probe(table, family) is False:
            return None  # the kernel says there is none: nothing for nft to list
        try:
            text = await self._run(
                ("-j", "list", "table", family, table), None, f"reading table {family} {table}"
            )
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise NftError(f"reading table {family} {table}: nft printed no JSON: {exc}") from None
        return data

    async def show_table(self, table: str, family: str = FAMILY) -> str | None:
        """Our table as ``nft list table`` prints it (with counters), or None when absent."""
        try:
            return await self._run(
                ("list", "table", family, table), None, f"listing table {family} {table}"
            )
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise


def table_exists(table: str, family: str = FAMILY) -> bool | None:
    """Whether nftables table ``family table`` exists in this process's network namespace,
    asked of the kernel as ``nft list table`` first does (``NFT_MSG_GETTABLE`` on a netfilter
    netlink socket): the table, or ENOENT. None when it cannot tell (an unknown family, no
    socket, no permission, any other answer): the caller asks nft then."""
    number = NFPROTO.get(family)
    if number is None:
        return None
    name = table.encode() + b"\0"
    attribute = struct.pack("=HH", 4 + len(name), NFTA_TABLE_NAME) + name
    attribute += b"\0" * (-len(attribute) % 4)
    body = struct.pack("=BBH", number, 0, 0) + attribute  # nfgenmsg: family, version, res_id
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
    request = struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body
    found = False
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(1.0)
            sock.bind((0, 0))
            sock.send(request)
            while True:  # the table (if any), then the acknowledgement or the error
                data = sock.recv(65536)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
                    if length < 16 or seq != 1:
                        return None
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + 16)[0]
                        if code == 0:
                            return True if found else None
                        return False if code == errno.ENOENT else None
                    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE:
                        return None
                    found = True
                    offset += (length + 3) & ~3
                if not data:
                    return None
    except (OSError, struct.error):
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _clean(stderr: str) -> str:
    """nft's error text on one line: ``internal:0:0-0: Error: X`` -> ``X``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    messages = [line.split("Error: ", 1)[1] if "Error: " in line else line for line in lines]
    return "; ".join(messages) or "nft failed without a message"
