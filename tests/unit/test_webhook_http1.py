"""The webhook HTTP client against real sockets: keep-alive reuse, a receiver that closed an idle connection,
answers it does not read, and what it refuses to send."""

from __future__ import annotations

import asyncio

import pytest

from api.alerts.webhooks.destinations import DestinationPolicy, DestinationRefused, GuardedResolver
from api.alerts.webhooks.http1 import AnswerError, Http1Client
from tests.support.http_requests import NO_CONTENT, answer_requests


async def serve(answers: list[bytes],
                close_after: int | None = None) -> tuple[asyncio.Server, int, list[int]]:
    """A receiver answering the n-th request of a connection with answers[n] (the last one after that);
    `close_after`: it closes each connection after that many answers. Returns the requests per connection."""
    per_connection: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_connection.append(0)
        index = len(per_connection) - 1
        try:
            while close_after is None or per_connection[index] < close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                writer.write(answers[min(per_connection[index], len(answers) - 1)])
                per_connection[index] += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], per_connection


def client() -> Http1Client:
    return Http1Client(GuardedResolver(DestinationPolicy()), 2.0, "test")


async def finish(http: Http1Client, *servers: asyncio.Server) -> None:
    """Close the client's connections, let the receivers see it and close theirs, then the servers."""
    await http.close()
    await asyncio.sleep(0.1)
    for server in servers:
        server.close()
        await server.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A receiver that reads and never answers (until the client goes)."""
    try:
        while await reader.read(65536):
            pass
    finally:
        writer.close()


def test_answers_with_a_short_body_keep_the_connection_for_the_next_request() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        server, port, per_connection = await serve([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        http = client()
        statuses = [await http.post(f"http://127.0.0.1:{port}/hook", b"{}", {"X-A": "1"}) for _ in range(5)]
        await finish(http, server)
        return statuses, per_connection

    statuses, per_connection = asyncio.run(scenario())
    assert statuses == [200] * 5 and per_connection == [5]


def test_a_receiver_that_closed_the_idle_connection_gets_the_request_on_a_new_one() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        server, port, per_connection = await serve([b"HTTP/1.1 204 No Content\r\n\r\n"], close_after=1)
        http = client()
        statuses = []
        for _ in range(3):
            statuses.append(await http.post(f"http://127.0.0.1:{port}/", b"x", {}))
            await asyncio.sleep(0.05)  # the receiver's close arrives while the connection is idle
        await finish(http, server)
        return statuses, per_connection

    statuses, per_connection = asyncio.run(scenario())
    assert statuses == [204] * 3 and per_connection == [1, 1, 1]


def test_answers_it_does_not_read_give_their_status_and_close_the_connection() -> None:
    chunked = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nbusy!\r\n0\r\n\r\n"
    long = (b"HTTP/1.1 307 Moved\r\nLocation: http://elsewhere/\r\nContent-Length: 10000\r\n\r\n"
            + b"x" * 10000)

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        first, first_port, first_connections = await serve([chunked])
        second, second_port, second_connections = await serve([long])
        http = client()
        statuses = [await http.post(f"http://127.0.0.1:{port}/", b"x", {})
                    for port in (first_port, first_port, second_port, second_port)]
        await finish(http, first, second)
        return statuses, first_connections, second_connections

    statuses, first_connections, second_connections = asyncio.run(scenario())
    assert statuses == [503, 503, 307, 307]
    assert first_connections == [1, 1] and second_connections == [1, 1]  # a new connection each time


def test_no_answer_in_time_is_a_timeout_and_garbage_is_not_an_answer() -> None:
    async def scenario() -> None:
        quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
        server, port, _ = await serve([b"SMTP ready\r\n\r\n"])
        http = Http1Client(GuardedResolver(DestinationPolicy()), 0.2, "test")
        with pytest.raises(TimeoutError):
            await http.post(f"http://127.0.0.1:{quiet.sockets[0].getsockname()[1]}/", b"x", {})
        with pytest.raises(AnswerError, match=r"not an HTTP/1\.x answer"):
            await http.post(f"http://127.0.0.1:{port}/", b"x", {})
        with pytest.raises(AnswerError, match="line break"):
            await http.post(f"http://127.0.0.1:{port}/", b"x", {"X-Key": "a\r\nInjected: 1"})
        await finish(http, quiet, server)

    asyncio.run(scenario())


def test_a_host_name_is_connected_to_only_after_the_policy_checked_its_addresses() -> None:
    async def scenario() -> None:
        server, port, per_connection = await serve([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
        http = client()
        with pytest.raises(DestinationRefused, match="localhost resolves to"):
            await http.post(f"http://localhost:{port}/", b"x", {})
        assert per_connection == []
        await finish(http, server)

    asyncio.run(scenario())


def test_each_url_gets_its_own_request_line_and_host_on_a_shared_connection() -> None:
    # The client keeps each URL's parsed form and request head: two URLs of one receiver must still each
    # get their own path and query, and every request its own length and headers.
    heads: list[list[bytes]] = []

    async def record(lines: list[bytes], body: bytes) -> bytes:
        heads.append([*lines, body])
        return NO_CONTENT

    async def scenario() -> int:
        server = await asyncio.start_server(lambda r, w: answer_requests(r, w, record), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        http = client()
        for path, body, headers in (("/hook/a?grid=G-1", b"{}", {"X-A": "1"}), ("/hook/b", b"[1,2]", {}),
                                    ("/hook/a?grid=G-1", b"{\"n\":3}", {"X-A": "3", "X-B": "b"})):
            assert await http.post(f"http://127.0.0.1:{port}{path}", body, headers) == 204
        await finish(http, server)
        return port

    port = asyncio.run(scenario())
    host = f"Host: 127.0.0.1:{port}".encode()
    assert heads == [
        [b"POST /hook/a?grid=G-1 HTTP/1.1", host, b"User-Agent: test", b"Content-Length: 2", b"X-A: 1",
         b"{}"],
        [b"POST /hook/b HTTP/1.1", host, b"User-Agent: test", b"Content-Length: 5", b"[1,2]"],
        [b"POST /hook/a?grid=G-1 HTTP/1.1", host, b"User-Agent: test", b"Content-Length: 7", b"X-A: 3",
         b"X-B: b", b"{\"n\":3}"],
    ]

