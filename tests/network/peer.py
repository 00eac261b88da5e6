"""A TCP peer for the rules tests: ``serve`` answers each connection with its name and the
client's address as it saw it; ``ask`` connects and prints that answer, one line per target
("-" for a target that failed; exit 1 if any did).

    python -m tests.network.peer serve 198.18.0.2 9000 outside [PORT...] [--transparent]
    python -m tests.network.peer ask 198.18.0.2 9000 [198.18.0.3:80 ...] [--timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

IP_TRANSPARENT = 19


def _transparent_socket(address: str, port: int) -> socket.socket:
    """A listener that may answer from addresses that are not local (IP_TRANSPARENT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    sock.bind((address, port))
    return sock


async def serve(address: str, ports: list[int], name: str, transparent: bool = False) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        local = writer.get_extra_info("sockname")
        writer.write(f"{name} {peer} {local[0]}:{local[1]}\n".encode())
        await writer.drain()
        writer.close()

    if transparent:
        servers = [
            await asyncio.start_server(answer, sock=_transparent_socket(address, port))
            for port in ports
        ]
    else:
        servers = [await asyncio.start_server(answer, address, port) for port in ports]
    print("listening", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


async def ask(address: str, port: int, within: float) -> str:
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(address, port)
        line = await reader.readline()
    writer.close()
    return line.decode().strip()


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("address")
    s.add_argument("port", type=int)
    s.add_argument("name")
    s.add_argument("more_ports", type=int, nargs="*")
    s.add_argument("--transparent", action="store_true")
    a = sub.add_parser("ask")
    a.add_argument("address")
    a.add_argument("port", type=int)
    a.add_argument("more", nargs="*", help="more targets as ADDRESS:PORT, asked in order")
    a.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args()
    if args.command == "serve":
        ports = [args.port, *args.more_ports]
        asyncio.run(serve(args.address, ports, args.name, args.transparent))
        return 0
    targets = [(args.address, args.port)]
    targets += [(t.rpartition(":")[0], int(t.rpartition(":")[2])) for t in args.more]
    failed = 0
    for address, port in targets:  # one process for many: python starts slowly in the guest
        try:
            print(asyncio.run(ask(address, port, args.timeout)), flush=True)
        except (OSError, TimeoutError) as exc:
            print("-", flush=True)
            print(f"{address}:{port} failed: {exc!r}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
