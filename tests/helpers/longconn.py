"""A long-lived TCP connection driven over stdin/stdout, for "does it survive X?" tests.

Server:  python -m tests.helpers.longconn serve HOST PORT     (echoes each line back)
Client:  python -m tests.helpers.longconn client HOST PORT
         reads a line from stdin, sends it over the one connection, prints the echo; repeats.
         Prints "connected <local port>" first. Exits on EOF or when the connection breaks.
"""

from __future__ import annotations

import socket
import sys
import threading


def serve(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(16)
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _echo(conn: socket.socket) -> None:
    with conn, conn.makefile("rwb") as f:
        for line in f:
            f.write(line)
            f.flush()


def client(host: str, port: int) -> int:
    conn = socket.create_connection((host, port), timeout=10)
    print(f"connected {conn.getsockname()[1]}", flush=True)
    with conn, conn.makefile("rwb") as f:
        for line in sys.stdin:
            f.write(line.encode())
            f.flush()
            reply = f.readline()
            if not reply:
                print("closed", flush=True)
                return 1
            print(reply.decode().rstrip("\n"), flush=True)
    return 0


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "serve":
        serve(host, port)
    else:
        sys.exit(client(host, port))
