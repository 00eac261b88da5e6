"""Many long-lived TCP flows in one process, for "how many flows survive X?" measurements (the
guest's Python is slow: one process with a selector, not a process per flow).

Server:  python -m tests.helpers.flows serve PORT
         echoes every line back on every connection (one thread, a selector).
Client:  python -m tests.helpers.flows client HOST PORT N
         opens N connections (prints "open N" when they are), then sends a line on each every
         second (spread over the second) and reads its echo. Each line read on stdin is a
         command: "status" prints one JSON line {"now": t, "flows": [[last_echo, closed], ...]}
         (``last_echo``: CLOCK_MONOTONIC seconds of the flow's last echo, shared by every
         process of the machine; ``closed``: "" while open, else "reset", "eof" or the error);
         EOF on stdin ends it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

INTERVAL = 1.0


@dataclass
class Flow:
    sock: socket.socket
    offset: float  # when in each INTERVAL this flow sends
    last_echo: float = 0.0
    closed: str = ""
    pending: bool = False  # a line was sent and its echo is not back yet
    sent: int = 0
    inbox: bytearray = field(default_factory=bytearray)


def summary(flows: list[Flow], now: float) -> dict[str, object]:
    return {"now": now, "flows": [[f.last_echo, f.closed] for f in flows]}


def _close(sel: selectors.BaseSelector, flow: Flow, why: str) -> None:
    if flow.closed:
        return
    flow.closed = why
    with contextlib.suppress(KeyError, ValueError):
        sel.unregister(flow.sock)
    flow.sock.close()


def client(host: str, port: int, count: int) -> int:
    flows: list[Flow] = []
    for i in range(count):
        sock = socket.create_connection((host, port), timeout=20)
        sock.setblocking(False)
        flows.append(Flow(sock, offset=INTERVAL * i / count, last_echo=time.monotonic()))
    print(f"open {len(flows)}", flush=True)
    sel = selectors.DefaultSelector()
    for flow in flows:
        sel.register(flow.sock, selectors.EVENT_READ, flow)
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    start = time.monotonic()
    while True:
        now = time.monotonic()
        tick = int((now - start) / INTERVAL)
        for flow in flows:
            due = start + tick * INTERVAL + flow.offset
            if flow.closed or flow.pending or now < due or flow.sent > tick:
                continue
            try:
                flow.sock.send(b"%d\n" % tick)
            except BlockingIOError:
                continue
            except OSError as exc:
                _close(sel, flow, "reset" if exc.errno == errno.ECONNRESET else str(exc))
                continue
            flow.pending, flow.sent = True, tick + 1
        for key, _ in sel.select(timeout=0.02):
            if key.data is None:
                line = sys.stdin.readline()
                if not line:
                    return 0
                if line.strip() == "status":
                    print(json.dumps(summary(flows, time.monotonic())), flush=True)
                continue
            flow = key.data
            try:
                data = flow.sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                _close(sel, flow, "reset" if exc.errno == errno.ECONNRESET else str(exc))
                continue
            if not data:
                _close(sel, flow, "eof")
                continue
            flow.inbox += data
            if b"\n" in flow.inbox:
                del flow.inbox[: flow.inbox.rindex(b"\n") + 1]
                flow.pending, flow.last_echo = False, time.monotonic()


def serve(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1024)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    conn, _ = srv.accept()
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, conn)
                continue
            conn = key.data
            try:
                data = conn.recv(4096)
                if data:
                    conn.sendall(data)  # a few bytes: the send buffer takes them
                    continue
            except OSError:
                pass
            sel.unregister(conn)
            conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
