"""The webhook sender against a real receiver: how many requests it has in flight to one receiver, and
what it counts as the receiver's time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from api.alerts.webhooks.sender import HttpSender
from core.settings import WebhookSettings
from tests.support.http_requests import NO_CONTENT, answer_requests


def test_a_receiver_gets_at_most_its_connections_and_waiting_for_one_is_not_its_time() -> None:
    # 60 posts at once to a receiver that answers each after 0.1 s, with at most 4 requests in flight to it
    # and a timeout of 1 s: the posts take turns on 4 connections (1.5 s in all, so the last wait longer
    # than the timeout), none times out, and each attempt's duration is the receiver's 0.1 s, not the wait
    # for a connection (which reaches 1.4 s).
    connections: list[int] = []
    in_flight = [0, 0]  # now, most

    async def slow(_: list[bytes], __: bytes) -> bytes:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(0.1)
        in_flight[0] -= 1
        return NO_CONTENT

    def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Awaitable[None]:
        connections.append(1)
        return answer_requests(reader, writer, slow)

    async def scenario() -> list[tuple[int | None, str | None, int | None]]:
        server = await asyncio.start_server(connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sender = HttpSender(WebhookSettings(timeout_s=1.0, connections_per_receiver=4,
                                            allowed_private_networks=("127.0.0.0/8",)))
        await sender.start()
        outcomes = await asyncio.gather(*(sender.post(f"http://127.0.0.1:{port}/hook/{n}", b"x", {})
                                          for n in range(60)))
        await sender.close()
        await asyncio.sleep(0.1)
        server.close()
        await server.wait_closed()
        return list(outcomes)

    outcomes = asyncio.run(scenario())
    assert [(status, error) for status, error, _ in outcomes] == [(204, None)] * 60
    assert all(duration is not None and duration < 800 for _, _, duration in outcomes)
    assert len(connections) == 4 and in_flight[1] == 4
