"""A small HTTP/1.1 client for webhook POSTs: what a delivery needs and no more, at a fraction of a general
client's cost per request (measured: aiohttp's request machinery was most of the sender process's time at
1,500 deliveries/s; with this client the process took less than half the time for the same deliveries,
BENCHMARKS.md "1,000 webhooks and 500 streams").

One POST at a time per connection; connections are kept per receiver (scheme, host, port) and reused while
the receiver keeps them open. A delivery only needs the answer's status: an answer whose body is longer
than `drain_bytes`, chunked or of unknown length is not read, and its connection is closed instead of
reused. A request written on a reused connection that the receiver had closed meanwhile is sent once more
on a new connection (nothing of an answer had arrived). Names are resolved through the resolver given
(the guarded one: api/alerts/webhooks/destinations.py) and the connection is made to the address it
checked; TLS verifies the certificate against the host name. Redirects are answers like any other.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver
from yarl import URL

from api.alerts.webhooks.destinations import literal_address

# Parsed URLs kept (one per subscription in practice); the cache starts again when it is full.
_MAX_TARGETS = 10_000


class AnswerError(ConnectionError):
    """The receiver closed the connection or answered something that is not HTTP/1.x."""


@dataclass(eq=False)
class _Answer:
    status: int
    reusable: bool


class _Connection(asyncio.Protocol):
    def __init__(self, drain_bytes: int) -> None:
        self.drain_bytes = drain_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Answer] | None = None
        # Whether any byte of the current answer arrived (a reused connection closed before it did is
        # retried on a new one).
        self.answered_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(AnswerError(
                "the receiver closed the connection before answering" if exc is None else str(exc)))

    def data_received(self, data: bytes) -> None:
        self.answered_bytes = True
        self._buffer += data
        if self._waiter is not None and not self._waiter.done():
            try:
                answer = self._parse()
            except AnswerError as exc:
                self._waiter.set_exception(exc)
                return
            if answer is not None:
                self._waiter.set_result(answer)

    def request(self, data: bytes) -> asyncio.Future[_Answer]:
        assert self.transport is not None
        self._buffer.clear()
        self.answered_bytes = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _parse(self) -> _Answer | None:
        """The answer once its head (and a short body) arrived; None while more is needed."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > 65536:
                raise AnswerError("the answer's head is longer than 64 KiB")
            return None
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        version, _, rest = head[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise AnswerError(f"not an HTTP/1.x answer: {head[0][:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        reusable = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if status in (204, 304) or 100 <= status < 200:
            return _Answer(status, reusable and status >= 200)
        length_text = headers.get("content-length")
        if "transfer-encoding" in headers or length_text is None or not length_text.isdigit():
            return _Answer(status, False)  # not read: the connection is not reused
        length = int(length_text)
        if length > self.drain_bytes:
            return _Answer(status, False)
        if len(self._buffer) - (end + 4) < length:
            return None  # the short body is still coming: read it so the connection can be reused
        return _Answer(status, reusable and len(self._buffer) - (end + 4) == length)


@dataclass(frozen=True)
class _Target:
    key: tuple[str, str, int]  # scheme, host, port: the connections that may carry its requests
    head: str  # the request line, Host and User-Agent


@dataclass
class Http1Client:
    resolver: AbstractResolver
    timeout_s: float
    user_agent: str
    drain_bytes: int = 4096
    _idle: dict[tuple[str, str, int], list[_Connection]] = field(default_factory=dict)
    _ssl: ssl.SSLContext | None = None
    _targets: dict[str, _Target] = field(default_factory=dict)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status; raises TimeoutError, OSError (DestinationRefused from the resolver, a
        refused or broken connection) or AnswerError."""
        target = self._target(url)
        request = self._request(target, body, headers)
        key = target.key
        async with asyncio.timeout(self.timeout_s):
            connection = self._idle_connection(key)
            if connection is not None:
                try:
                    return await self._exchange(key, connection, request)
                except AnswerError:
                    if connection.answered_bytes:
                        raise
                    # The receiver had closed the idle connection: once more on a new one.
            connection = await self._connect(*key)
            return await self._exchange(key, connection, request)

    def receiver(self, url: str) -> tuple[str, str, int]:
        """The receiver a URL's requests go to (scheme, host, port): those that may share connections.
        Raises AnswerError for a URL that is not http(s)."""
        return self._target(url).key

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _idle_connection(self, key: tuple[str, str, int]) -> _Connection | None:
        connections = self._idle.get(key)
        while connections:
            connection = connections.pop()
            if not connection.closed:
                return connection
        return None

    async def _exchange(self, key: tuple[str, str, int], connection: _Connection, request: bytes) -> int:
        try:
            answer = await connection.request(request)
        except BaseException:
            connection.close()  # a timeout or error half-way leaves the connection in an unknown state
            raise
        if answer.reusable and not connection.closed:
            self._idle.setdefault(key, []).append(connection)
        else:
            connection.close()
        return answer.status

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        name = host.strip("[]")
        addresses = [name]
        if literal_address(name) is None:
            # The resolver checks every address against the policy (raises DestinationRefused), and the
            # connection goes only to the addresses it checked.
            resolved = await self.resolver.resolve(name, port, socket.AF_UNSPEC)
            addresses = [result["host"] for result in resolved]
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        failure: OSError | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.drain_bytes), address, port, ssl=tls,
                    server_hostname=name if tls is not None else None)
                return connection
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _target(self, url: str) -> _Target:
        """The URL parsed, with the head every request to it starts with (kept: each subscription posts
        to one URL, and parsing it again for every request was a tenth of a delivery's cost)."""
        target = self._targets.get(url)
        if target is not None:
            return target
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise AnswerError(f"not an http(s) URL: {url[:200]}")
        host = parsed.raw_host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        authority = f"[{host}]" if ":" in host and not host.startswith("[") else host
        if parsed.explicit_port is not None:
            authority += f":{parsed.explicit_port}"
        head = (f"POST {parsed.raw_path_qs or '/'} HTTP/1.1\r\nHost: {authority}\r\n"
                f"User-Agent: {self.user_agent}\r\n")
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        target = self._targets[url] = _Target((parsed.scheme, host, port), head)
        return target

    @staticmethod
    def _request(target: _Target, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"{name}: {value}" for name, value in headers.items()]
        for line in lines:
            if "\r" in line or "\n" in line:
                raise AnswerError(f"a line break in the header {line.partition(':')[0][:40]!r}")
        text = "".join([target.head, f"Content-Length: {len(body)}\r\n", *(f"{line}\r\n" for line in lines)])
        return f"{text}\r\n".encode() + body
