"""The daemon's own HTTP/1.1 server (director.http): what it answers, and what it refuses from a
client that sends too much, too slowly or not HTTP at all. Real sockets on 127.0.0.1, raw bytes
(a client library would not send the malformed requests)."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import pytest_asyncio

from director.http import MAX_HEAD, HttpServer, Request, Response, Routes
from tests.helpers.director import free_port

pytestmark = pytest.mark.asyncio
BIG = 1 << 20


class Echo(HttpServer):
    """GET /hello, POST /echo (a body of up to 64 bytes), GET /boom (the handler fails)."""

    max_body = 64

    def __init__(self, idle: float = 10.0) -> None:
        super().__init__(f"127.0.0.1:{free_port()}", max_connections=4, idle=idle)

    def routes(self) -> Routes:
        return {
            "/big": {"GET": self.big},
            "/hello": {"GET": self.hello},
            "/echo": {"POST": self.echo},
            "/boom": {"GET": self.boom},
            "/bad-header": {"GET": self.bad_header},
            "/stream": {"GET": self.stream},
        }

    streams_closed = 0

    async def stream(self, request: Request) -> Response:
        """10 chunks of 100 KB (b"0"..., b"1"...); ?fail: the maker fails after the third."""
        fail = request.headers.get("x-fail") == "1"
        count = int(request.headers.get("x-chunks", "10"))

        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                for i in range(count):
                    if fail and i == 3:
                        raise RuntimeError("rendering failed")
                    yield str(i % 10).encode() * 100_000
                    await asyncio.sleep(0)
            finally:
                self.streams_closed += 1

        return Response(headers={"Content-Type": "text/plain"}, chunks=chunks)

    answered_big = 0

    async def big(self, request: Request) -> Response:
        self.answered_big += 1
        return Response(200, b"x" * BIG)

    async def hello(self, request: Request) -> Response:
        return Response(200, b"hello", {"Content-Type": "text/plain", "X-Path": request.path})

    async def echo(self, request: Request) -> Response:
        nonce = request.headers.get("x-NONCE", "-")  # any case
        return Response(200, request.body, {"X-Nonce": nonce})

    async def bad_header(self, request: Request) -> Response:
        return Response(200, b"", {"X-Name": "caf\u00e9 \u2603"})  # not Latin-1

    async def boom(self, request: Request) -> Response:
        raise RuntimeError("handler failed")


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Echo]:
    s = Echo()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def exchange(port: int, data: bytes, within: float = 5.0) -> bytes:
    """Send data, then read until the server closes the connection (all of its answers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            return await reader.read(-1)
    finally:
        writer.close()


def statuses(raw: bytes) -> list[int]:
    """The status codes of the answers in raw (the bodies here never hold a status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def test_get_head_404_405_and_the_query_string(server: Echo) -> None:
    port = server.bound_port
    raw = await exchange(port, b"GET /hello?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"hello"
    assert b"Content-Length: 5" in head and b"X-Path: /hello" in head
    raw = await exchange(port, b"HEAD /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert statuses(raw) == [200] and b"Content-Length: 5" in head and body == b""
    raw = await exchange(port, b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [404]
    raw = await exchange(port, b"DELETE /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [405] and b"Allow: GET, HEAD\r\n" in raw
    raw = await exchange(port, b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [405] and b"Allow: POST\r\n" in raw


async def test_keep_alive_pipelining_and_http_1_0(server: Echo) -> None:
    port = server.bound_port
    # three requests in one write: answered one at a time, in order; the last one closes
    body = b"0123456789"
    pipelined = (
        b"GET /hello HTTP/1.1\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nX-Nonce: n1\r\nContent-Length: 10\r\n\r\n"
        + body
        + b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    raw = await exchange(port, pipelined)
    assert statuses(raw) == [200, 200, 404]
    assert b"\r\n\r\nhello" in raw and b"X-Nonce: n1\r\n" in raw and body in raw
    assert raw.count(b"Connection: close") == 1
    # HTTP/1.0 closes after one answer unless it asks to keep the connection
    raw = await exchange(port, b"GET /hello HTTP/1.0\r\n\r\nGET /hello HTTP/1.0\r\n\r\n")
    assert statuses(raw) == [200]
    # a client that half-closes still gets its answer
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hello HTTP/1.1\r\n\r\n")
    writer.write_eof()
    async with asyncio.timeout(5):
        assert statuses(await reader.read(-1)) == [200]
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /hello\r\n\r\n", 400),  # HTTP/0.9
        (b"GET http://a/hello HTTP/1.1\r\n\r\n", 400),  # absolute form: a proxy request
        (b"GET /hello HTTP/2.0\r\n\r\n", 505),
        (b"G(T /hello HTTP/1.1\r\n\r\n", 400),  # not a method token
        (b"GET /hel lo HTTP/1.1\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost a\r\n\r\n", 400),  # no colon
        (b"GET /hello HTTP/1.1\r\nHost : a\r\n\r\n", 400),  # space before the colon
        (b"GET /hello HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),  # obs-fold
        (b"GET /hello HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),  # a control character
        (b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 65\r\n\r\n" + b"x" * 65, 413),
        (b"GET /hello HTTP/1.1\r\n" + b"X: y\r\n" * 65 + b"\r\n", 431),
        (b"GET /hello HTTP/1.1\r\nX: " + b"y" * MAX_HEAD + b"\r\n\r\n", 431),
    ],
)
async def test_a_malformed_or_oversized_request_is_refused_and_the_connection_closed(
    server: Echo, request_bytes: bytes, status: int
) -> None:
    raw = await exchange(server.bound_port, request_bytes + b"GET /hello HTTP/1.1\r\n\r\n")
    assert statuses(raw) == [status], raw[:200]  # nothing after: the connection was closed
    assert b"Connection: close\r\n" in raw
    # and the server still serves the next client
    raw = await exchange(server.bound_port, b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [200]


async def test_a_failing_handler_is_a_500_and_the_server_keeps_serving(server: Echo) -> None:
    raw = await exchange(
        server.bound_port,
        b"GET /boom HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert statuses(raw) == [500, 200]
    # an answer that cannot be written is a 500 too, and the connection is closed after it
    raw = await exchange(server.bound_port, b"GET /bad-header HTTP/1.1\r\n\r\n" * 2)
    assert statuses(raw) == [500] and b"Connection: close" in raw


async def test_a_request_sent_a_byte_at_a_time_is_closed_when_idle() -> None:
    """Slowloris: a request whose head never ends holds its slot for ``idle`` seconds, not for
    as long as the client keeps sending."""
    server = Echo(idle=0.5)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        started = time.monotonic()
        closed_after = None
        for byte in b"GET /hello HTTP/1.1\r\nX: " + b"y" * 100:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                pass
            await asyncio.sleep(0.05)
            if reader.at_eof():  # closed by the server: no answer, just the end
                closed_after = time.monotonic() - started
                break
        writer.close()
        assert closed_after is not None and closed_after < 3.0
        assert server.listener is not None and server.listener.stats.closed_idle == 1
    finally:
        await server.stop()


async def test_a_client_that_pipelines_and_does_not_read_holds_one_answer(server: Echo) -> None:
    """The next request is read only once the client took the answer before: a client that
    sends 50 requests for a megabyte each and reads nothing does not have 50 MB buffered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    try:
        writer.write(
            b"GET /big HTTP/1.1\r\n\r\n" * 49 + b"GET /big HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(1.0)
        held = server.answered_big
        assert 1 <= held <= 16  # what the sockets' buffers took (a few MB), then it waits
        async with asyncio.timeout(30):
            raw = await reader.read(-1)  # reading, the client gets every answer
        assert statuses(raw) == [200] * 50 and server.answered_big == 50
        assert len(raw) > 50 * BIG
    finally:
        writer.close()


SEEDS = [
    b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /hello?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nX-Nonce: n\r\nContent-Length: 5\r\n\r\nabcde",
    b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
]
TOKENS = [b"\r\n", b"\n", b"\r", b" ", b":", b"\x00", b"\xff", b"HTTP/1.1", b"Content-Length: ",
          b"99999999999999999999", b"-1", b"\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"%00",
          b"Connection: close\r\n", b"GET /hello HTTP/1.1\r\n\r\n", b"\t", b"/../"]  # fmt: skip
ANSWER = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z ]+\r\n((?:[!-9;-~]+: [^\r\n]*\r\n)*)\r\n")


def mutate(rng: random.Random) -> bytes:
    """A seed request (or several, pipelined) with a few bytes flipped, inserted, cut or
    replaced by a token an attacker would try."""
    data = bytearray(b"".join(rng.choice(SEEDS) for _ in range(rng.randint(1, 3))))
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        action = rng.randrange(4)
        if action == 0 and at < len(data):
            data[at] = rng.randrange(256)
        elif action == 1:
            data[at:at] = rng.choice(TOKENS)
        elif action == 2:
            del data[at : at + rng.randint(1, 8)]
        else:
            data[at:at] = rng.choice(TOKENS) * rng.randint(1, 3000)
    return bytes(data)


def answers(raw: bytes, heads: bool) -> list[int]:
    """The status codes of a connection's answers, checking that each is well formed and its
    body as long as its Content-Length says (or none, an answer to HEAD when ``heads``: the
    requests had one); AssertionError on anything else."""
    codes = []
    while raw:
        head = ANSWER.match(raw)
        assert head is not None, raw[:300]
        fields = dict(line.split(b": ", 1) for line in head[2].split(b"\r\n") if line)
        length = int(fields[b"Content-Length"])
        rest = raw[head.end() :]
        if heads and (not rest or rest.startswith(b"HTTP/1.1 ")):
            length = 0
        assert len(raw) >= head.end() + length, raw[:300]
        codes.append(int(head[1]))
        raw = raw[head.end() + length :]
    return codes


async def test_mutated_requests_get_well_formed_answers_and_leave_the_server_serving(
    server: Echo,
) -> None:
    """An adversary on the wire: 400 mutated (pipelined) requests, each on its own connection
    that the client half-closes. Every answer is well formed (a known status, a Content-Length
    its body matches), nothing but 200/404/405 and the refusals, a refusal ends the connection,
    and the server answers a clean request after each."""
    rng = random.Random(1805)
    seen: set[int] = set()
    for case in range(400):
        data = mutate(rng)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        try:
            writer.write(data)
            writer.write_eof()
            async with asyncio.timeout(5):
                raw = await reader.read(-1)
        except ConnectionResetError:
            raw = b""  # closed with unread bytes: a refusal's close may reset
        finally:
            writer.close()
        codes = answers(raw, b"HEAD" in data)
        seen.update(codes)
        assert set(codes) <= {200, 404, 405, 400, 413, 431, 501, 505}, (case, data[:200], codes)
        assert all(code in (200, 404, 405) for code in codes[:-1]), (case, data[:200], codes)
        if case % 20 == 0:
            clean = await exchange(
                server.bound_port, b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"
            )
            assert statuses(clean) == [200]
    assert {200, 400} <= seen, seen  # the mutations did reach both the routes and the refusals
    clean = await exchange(server.bound_port, b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(clean) == [200]


STREAMED = b"".join(str(i).encode() * 100_000 for i in range(10))


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body's data, and whether it ended with its last (empty) chunk."""
    data = bytearray()
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(data), body.startswith(b"\r\n")  # (an answer after it may follow)
        data += body[:size]
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]
    return bytes(data), False


async def test_a_streamed_answer_is_chunked_to_1_1_and_ends_at_the_close_for_1_0(
    server: Echo,
) -> None:
    raw = await exchange(server.bound_port, b"GET /stream HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n"
                         b"Connection: close\r\n\r\n")  # fmt: skip
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    body, whole = dechunk(rest)
    assert whole and body == STREAMED
    assert statuses(raw) == [200, 200] and raw.endswith(b"hello")  # the connection went on
    raw = await exchange(
        server.bound_port, b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert rest == STREAMED
    raw = await exchange(server.bound_port, b"HEAD /stream HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [200] and raw.endswith(b"\r\n\r\n")  # no body for a HEAD
    assert server.streams_closed == 2


async def test_a_stream_that_fails_or_a_client_that_stops_reading_cuts_the_connection() -> None:
    server = Echo(idle=0.5)
    await server.start()
    try:
        raw = await exchange(server.bound_port, b"GET /stream HTTP/1.1\r\nX-Fail: 1\r\n\r\n"
                             b"GET /hello HTTP/1.1\r\n\r\n")  # fmt: skip
        body, whole = dechunk(raw.partition(b"\r\n\r\n")[2])
        assert not whole and body == STREAMED[:300_000]  # cut: never taken as a whole body
        assert statuses(raw) == [200] and server.streams_closed == 1
        # a client that asks and reads nothing: cut once it took nothing for `idle` seconds
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.bound_port))
        sock.sendall(b"GET /stream HTTP/1.1\r\nX-Chunks: 1000\r\n\r\n")  # 100 MB
        started = time.monotonic()
        async with asyncio.timeout(10):
            while server.streams_closed < 2:  # noqa: ASYNC110 - the server's count
                await asyncio.sleep(0.05)
        assert 0.4 < time.monotonic() - started < 5
        sock.close()
        raw = await exchange(server.bound_port, b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert statuses(raw) == [200]
    finally:
        await server.stop()
