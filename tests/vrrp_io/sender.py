"""Send forged VRRP adverts from the namespace it runs in: a bounded flood, or a few.

    python -m tests.vrrp_io.sender --src 198.18.0.3 [--dst 224.0.0.18] --vrid 42 --priority 50
        [--version 3 --interval 0.1 --vip 198.18.0.100] [--count 1000] [--rate 2000]

Valid adverts (checksum, TTL 255, the address list given) through a raw IPPROTO_VRRP socket on
eth0, the kernel building the IP header from ``--src`` (an address of this namespace). At most
``--count`` packets (hard cap 100,000) at ``--rate`` per second (0: as fast as the socket
takes them), so a flood is bounded in count and time. Prints ``sent N`` when done. Only
198.18.0.0/15 sources and destinations (the test ranges) are accepted.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from ipaddress import IPv4Address, IPv4Network

from vrrp.packet import IPPROTO_VRRP, REQUIRED_TTL, VRRP_GROUP_V4, Advertisement, AuthType, encode

ALLOWED = IPv4Network("198.18.0.0/15")
MAX_COUNT = 100_000
IP_PKTINFO = 8


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=IPv4Address, required=True)
    parser.add_argument("--dst", type=IPv4Address, default=VRRP_GROUP_V4)
    parser.add_argument("--dev", default="eth0")
    parser.add_argument("--vrid", type=int, required=True)
    parser.add_argument("--priority", type=int, required=True)
    parser.add_argument("--version", type=int, choices=(2, 3), default=3)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--vip", type=IPv4Address, action="append", default=[])
    parser.add_argument("--password", default="")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="packets/s; 0: unpaced")
    args = parser.parse_args()
    if args.src not in ALLOWED or (args.dst not in ALLOWED and args.dst != VRRP_GROUP_V4):
        print("addresses outside 198.18.0.0/15", file=sys.stderr)
        return 2
    count = min(args.count, MAX_COUNT)
    password = args.password.encode()
    advert = Advertisement(
        version=args.version,
        vrid=args.vrid,
        priority=args.priority,
        interval_cs=round(args.interval * 100),
        addresses=tuple(args.vip),
        auth_type=AuthType.SIMPLE if password else AuthType.NONE,
        auth_data=password,
    )
    data = encode(advert, args.src, args.dst)
    index = socket.if_nametoindex(args.dev)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.dev.encode())
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, REQUIRED_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, REQUIRED_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    ifreq = struct.pack("4s4si", b"\0" * 4, args.src.packed, index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ifreq)
    pktinfo = [
        (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", index, args.src.packed, bytes(4)))
    ]
    start = time.monotonic()
    sent = 0
    for n in range(count):
        if args.rate:
            delay = start + n / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        try:
            sock.sendmsg([data], pktinfo, 0, (str(args.dst), 0))
            sent += 1
        except OSError:  # a full queue (ENOBUFS): not sent, not counted
            time.sleep(0.001)
    sock.close()
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
