"""Load generators for bench/alerts.py, run in their own process so they do not share the pipeline's GIL.

`receivers`: webhook receivers, minimal HTTP/1.1 keep-alive servers on the given ports answering 204;
`streams`: SSE clients, each on its own connection with a grid filter. Both record, per message, the
latency from the feed's `published_time_ms` to arrival (each change of a webhook POST that carries several),
and the idempotency keys (to count duplicates),
and print one JSON line of results when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.latencies_ms: list[int] = []
        self.keys: set[tuple[str, str]] = set()
        self.messages = 0
        self.errors: list[str] = []

    def record(self, where: str, body: bytes) -> None:
        """One message, or the changes of a POST that carries several (`{"changes": [...]}`), each counted
        with its own latency."""
        received_ms = time.time_ns() // 1_000_000
        decoded = json.loads(body)
        for message in decoded.get("changes", [decoded]):
            self.messages += 1
            self.latencies_ms.append(received_ms - message["published_time_ms"])
            self.keys.add((where, message["idempotency_key"]))

    def result(self) -> dict[str, Any]:
        return {"messages": self.messages, "unique": len(self.keys), "latencies_ms": self.latencies_ms,
                "errors": self.errors[:10]}


async def serve_receivers(ports: list[int], stats: Stats) -> list[asyncio.Server]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                stats.record(request_line.split(" ")[1], body)
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    return [await asyncio.start_server(handle, "127.0.0.1", port, backlog=2048) for port in ports]


async def stream_client(url_host: str, port: int, path: str, stats: Stats, connected: list[int]) -> None:
    try:
        reader, writer = await asyncio.open_connection(url_host, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {url_host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        connected.append(1)
        while True:
            line = await reader.readline()
            if not line:
                stats.errors.append(f"{path}: stream ended")
                return
            # Chunked transfer framing lines are hex sizes; event lines start with a field name.
            if line.startswith(b"data: "):
                stats.record(path, line[6:])
            elif line.startswith(b"event: error"):
                stats.errors.append(f"{path}: {(await reader.readline()).decode()[:200]}")
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        stats.errors.append(f"{path}: {exc!r}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or (
        sys.stdin.readline() == "" and stdin_closed.set_result(None)))
    tasks: list[asyncio.Task[None]] = []
    servers: list[asyncio.Server] = []
    if args.mode == "receivers":
        servers = await serve_receivers([int(p) for p in args.ports.split(",")], stats)
        print("ready", flush=True)
    else:
        connected: list[int] = []
        for n in range(args.clients):
            path = f"/v1/stream/violations?grid=G-{n % args.grids:03d}"
            if args.type:
                path += f"&type={args.type}"
            tasks.append(asyncio.create_task(stream_client("127.0.0.1", args.port, path, stats, connected)))
        while len(connected) + len(stats.errors) < args.clients:
            await asyncio.sleep(0.05)
        print("ready", flush=True)
    await stdin_closed
    for task in tasks:
        task.cancel()
    for server in servers:
        server.close()
    return stats.result()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["receivers", "streams"])
    parser.add_argument("--ports", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--grids", type=int, default=100)
    parser.add_argument("--type", default=None)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
