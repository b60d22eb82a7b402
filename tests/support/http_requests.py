"""A receiver's side of an HTTP/1.1 connection for asyncio tests of the webhook client and sender."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def answer_requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          answer: Callable[[list[bytes], bytes], Awaitable[bytes]]) -> None:
    """Read requests on one connection until the client closes it, each answered with what `answer`
    returns for its head's lines (request line first) and its body."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")[:-2]
            length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"Content-Length"))
            writer.write(await answer(lines, await reader.readexactly(length)))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
