"""Batched, retried, buffered writes of line protocol to InfluxDB.

The processor hands lines to `BufferedWriter.put`, which returns at once while there is room. A sender
thread sends them in batches; a failed request is retried with exponential backoff and never dropped,
except a batch InfluxDB refuses as invalid (HTTP 400), which is logged, counted and skipped because sending
it again cannot succeed. While InfluxDB is down or slow the lines wait in memory, then spill to files in
the spool directory (which also survive a restart); once both are full, `put` waits (backpressure) and
raises `StoreBackpressure` if `backpressure_timeout_s` passes first. Nothing is dropped silently.

Every point is idempotent (see store/influx_lines.py), so sending a batch twice is harmless: the sender
may resend a batch that `flush` spilled while it was in flight, and that is the whole of the coordination.
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

import urllib3

from core.metrics import Metrics
from core.redaction import redact_urls

log = logging.getLogger(__name__)


# A put of at least this many lines wakes the sender at once instead of waiting for a full batch, so that
# InfluxDB parses one slice of a large write while the caller builds the next (see InfluxStore.write_events).
EAGER_SEND_POINTS = 1000


class StoreBackpressure(RuntimeError):
    """The write buffer stayed full for `backpressure_timeout_s`: the store cannot take more now."""


class WriteFailed(Exception):
    """A write that may succeed later (server down, overloaded, auth not yet fixed): retry the batch."""


class WriteRejected(Exception):
    """A write the server refused as invalid: sending it again cannot succeed, so it is skipped."""


class Transport(Protocol):
    def write(self, target: str, body: bytes) -> None:
        """Send one batch to `target` (a retention policy or bucket); raise WriteFailed or WriteRejected."""


@dataclass(frozen=True)
class V1Transport:
    """POST /write of InfluxDB 1.x (the only write API of 1.0-1.7)."""

    http: urllib3.PoolManager
    url: str
    database: str
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0

    def write(self, target: str, body: bytes) -> None:
        params = {"db": self.database, "rp": target, "precision": "ns"}
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.username is not None:
            credentials = f"{self.username}:{self.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        try:
            response = self.http.request(
                "POST",
                f"{self.url}/write?{urlencode(params)}",
                body=body,
                headers=headers,
                timeout=self.timeout_s,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise WriteFailed(_failure(exc)) from None
        _check_status(response.status, response.data)


def _failure(exc: BaseException) -> str:
    """An HTTP client's error as a log line and readiness detail: it may quote the URL it failed on."""
    return redact_urls(f"{type(exc).__name__}: {exc}")


def _check_status(status: int, data: bytes) -> None:
    if status in (200, 204):
        return
    message = f"HTTP {status}: {data[:300].decode(errors='replace')}"
    # 400 is a malformed or partially written batch; 413 a batch too large for the server's limit.
    if status in (400, 413, 422):
        raise WriteRejected(message)
    raise WriteFailed(message)


class V2Transport:
    """influxdb-client's synchronous write API (InfluxDB 2.x, 3.x, and 1.8+ with `db/rp` as bucket)."""

    def __init__(
        self, url: str, token: str | None, org: str | None, bucket_for: Callable[[str], str], timeout_s: float
    ) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = InfluxDBClient(
            url=url, token=token or "", org=org or "-", timeout=int(timeout_s * 1000), retries=False
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket_for = bucket_for
        self._org = org or "-"

    def write(self, target: str, body: bytes) -> None:
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(
                bucket=self._bucket_for(target),
                org=self._org,
                record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # the stub says str
            )
        except ApiException as exc:
            _check_status(exc.status or 0, (exc.body or "").encode() if isinstance(exc.body, str) else b"")
        except urllib3.exceptions.HTTPError as exc:
            raise WriteFailed(_failure(exc)) from None

    def close(self) -> None:
        self._client.close()


@dataclass
class _Chunk:
    target: str
    lines: list[bytes]
    # Set once the chunk is in a spool file.
    path: Path | None = None


class BufferedWriter:
    def __init__(
        self,
        transport: Transport,
        spool_dir: Path,
        *,
        batch_points: int,
        memory_points: int,
        disk_bytes: int,
        flush_interval_s: float,
        flush_wait_s: float,
        backpressure_timeout_s: float | None,
        retry_min_s: float,
        retry_max_s: float,
        metrics: Metrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.transport = transport
        self.spool_dir = spool_dir
        self.batch_points = batch_points
        self.memory_points = memory_points
        self.disk_bytes = disk_bytes
        self.flush_interval_s = flush_interval_s
        self.flush_wait_s = flush_wait_s
        self.backpressure_timeout_s = backpressure_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.metrics = metrics or Metrics()
        self._lock = threading.Condition()
        self._memory: collections.deque[_Chunk] = collections.deque()
        self._memory_count = 0
        self._disk: collections.deque[_Chunk] = collections.deque()
        self._disk_size = 0
        self._sequence = 0
        self._stopping = False
        self._healthy = True
        # Why the last write failed; None once one succeeds (readiness shows it).
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._wake_sender = threading.Event()
        self._sleep = sleep
        spool_dir.mkdir(parents=True, exist_ok=True)
        self._load_spool()

    # -- the processor's side ------------------------------------------------------------------------------

    def put(self, target: str, lines: list[bytes]) -> None:
        """Queue lines for `target`; waits while memory and spool are full (backpressure)."""
        for start in range(0, len(lines), self.batch_points):
            chunk = _Chunk(target, lines[start : start + self.batch_points])

            def has_room(size: int = len(chunk.lines)) -> bool:
                # Memory full: make room by spilling the oldest chunk to disk, if the spool has room.
                return (
                    self._memory_count + size <= self.memory_points
                    or not self._memory
                    or self._spill_oldest()
                )

            with self._lock:
                self._wait_for_room(has_room)
                self._memory.append(chunk)
                self._memory_count += len(chunk.lines)
                self._publish_levels()
            if self._memory_count >= self.batch_points or len(chunk.lines) >= EAGER_SEND_POINTS:
                self._wake_sender.set()

    def flush(self) -> None:
        """Return once everything put so far is acknowledged by InfluxDB or in a spool file (durable)."""
        self._wake_sender.set()
        deadline = time.monotonic() + self.flush_wait_s
        with self._lock:
            while self._memory and self._healthy and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            # InfluxDB is slow or down: make the rest durable on disk instead of waiting.
            while self._memory:
                self._wait_for_room(self._spill_oldest)

    def backlog(self) -> tuple[int, int]:
        """(points in memory, bytes in spool files) not yet acknowledged."""
        with self._lock:
            return self._memory_count, self._disk_size

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="citywatch-influx-writer", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Send what is buffered for up to `drain_timeout_s`, then spill the rest to disk and stop."""
        deadline = time.monotonic() + drain_timeout_s
        self._wake_sender.set()
        with self._lock:
            while (self._memory or self._disk) and self._healthy and time.monotonic() < deadline:
                self._lock.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._stopping = True
            while self._memory and self._disk_size < self.disk_bytes:
                self._spill_oldest()
            if self._memory:
                log.error(
                    "InfluxDB writer stopped with %d points neither sent nor spooled (spool full)",
                    self._memory_count,
                )
            self._lock.notify_all()
        self._wake_sender.set()
        if self._thread is not None:
            self._thread.join(drain_timeout_s + 5)

    # -- buffer management (callers hold the lock) ---------------------------------------------------------

    def _wait_for_room(self, has_room: Callable[[], bool]) -> None:
        if has_room():
            return
        self.metrics.store_backpressure.set(1)
        deadline = (
            None if self.backpressure_timeout_s is None else time.monotonic() + self.backpressure_timeout_s
        )
        try:
            while not has_room():
                if self._stopping:
                    raise StoreBackpressure("the InfluxDB writer is stopping with a full buffer")
                if deadline is not None and time.monotonic() >= deadline:
                    memory, disk = self._memory_count, self._disk_size
                    raise StoreBackpressure(
                        f"InfluxDB write buffer full for {self.backpressure_timeout_s} s ({memory} points in "
                        f"memory, {disk} bytes spooled): {self.last_error or 'InfluxDB is slow'}"
                    )
                self._lock.wait(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
        finally:
            self.metrics.store_backpressure.set(0)

    def _spill_oldest(self) -> bool:
        """Move the oldest memory chunk to a spool file; False when the spool has no room."""
        if not self._memory:
            return True
        chunk = self._memory[0]
        body = b"\n".join(chunk.lines)
        if self._disk_size + len(body) > self.disk_bytes:
            return False
        self._sequence += 1
        path = self.spool_dir / f"{time.time_ns():020d}-{self._sequence:08d}.{chunk.target}.lp"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)
        self._memory.popleft()
        self._memory_count -= len(chunk.lines)
        self._disk.append(_Chunk(chunk.target, [], path))
        self._disk_size += len(body)
        self._publish_levels()
        self._lock.notify_all()
        return True

    def _load_spool(self) -> None:
        for leftover in self.spool_dir.glob("*.tmp"):
            leftover.unlink()  # a spill cut short by a crash: its chunk was never acknowledged
        for path in sorted(self.spool_dir.glob("*.lp")):
            target = path.name.split(".")[-2]
            self._disk.append(_Chunk(target, [], path))
            self._disk_size += path.stat().st_size
        if self._disk:
            log.info(
                "InfluxDB spool holds %d batches (%d bytes) from an earlier run",
                len(self._disk),
                self._disk_size,
            )
        self._publish_levels()

    def _publish_levels(self) -> None:
        self.metrics.store_buffer_points.set(self._memory_count)
        self.metrics.store_spool_bytes.set(self._disk_size)

    # -- the sender thread ---------------------------------------------------------------------------------

    def _next_batch(self) -> tuple[str, bytes, list[_Chunk]] | None:
        with self._lock:
            if self._disk:
                chunk = self._disk[0]
                assert chunk.path is not None
                return chunk.target, chunk.path.read_bytes(), [chunk]
            if not self._memory:
                return None
            # Coalesce small chunks (a few violations per processor batch) into one request.
            taken: list[_Chunk] = []
            count = 0
            for chunk in self._memory:
                if taken and (
                    chunk.target != taken[0].target or count + len(chunk.lines) > self.batch_points
                ):
                    break
                taken.append(chunk)
                count += len(chunk.lines)
            return taken[0].target, b"\n".join(line for c in taken for line in c.lines), taken

    def _acknowledge(self, chunks: list[_Chunk], sent_points: int) -> None:
        with self._lock:
            for chunk in chunks:
                if chunk.path is not None:
                    if self._disk and self._disk[0] is chunk:
                        self._disk.popleft()
                        self._disk_size -= chunk.path.stat().st_size
                        chunk.path.unlink()
                elif self._memory and self._memory[0] is chunk:
                    self._memory.popleft()
                    self._memory_count -= len(chunk.lines)
                # else: flush spilled it meanwhile; the spool copy is sent again later (idempotent).
            self._publish_levels()
            self._lock.notify_all()
        self.metrics.store_points_written.inc(sent_points)

    def _run(self) -> None:
        # The sender is the only way buffered points reach InfluxDB: whatever escapes its loop (a bug),
        # it logs and starts the loop again rather than leave the buffers to fill up for good.
        while True:
            try:
                self._send_until_stopped()
                return
            except Exception as exc:
                log.error("InfluxDB sender: unexpected error, starting over: %s", _failure(exc))
                self.last_error = _failure(exc)
                self._sleep(self.retry_max_s)

    def _send_until_stopped(self) -> None:
        delay_s = self.retry_min_s
        while True:
            with self._lock:
                if self._stopping:
                    return
                idle = not self._disk and self._memory_count < self.batch_points
            if idle:
                # Partial batches wait for the interval (or a flush) so that requests stay large.
                self._wake_sender.wait(self.flush_interval_s)
                self._wake_sender.clear()
            batch = self._next_batch()
            if batch is None:
                continue
            target, body, chunks = batch
            try:
                self.transport.write(target, body)
            except WriteRejected as exc:
                points = body.count(b"\n") + 1
                log.error("InfluxDB refused a batch of %d points (skipped): %s", points, exc)
                self.metrics.store_points_rejected.inc(points)
                self._acknowledge(chunks, 0)
            except WriteFailed as exc:
                self.metrics.store_write_retries.inc()
                with self._lock:
                    if self._healthy:
                        log.warning("InfluxDB write failed, retrying with backoff: %s", exc)
                    self._healthy = False
                    self.last_error = str(exc)
                    self._lock.notify_all()
                self._sleep_unless_stopping(delay_s)
                delay_s = min(delay_s * 2, self.retry_max_s)
                continue
            except Exception as exc:  # an unexpected client error must not kill the sender: retry
                # Not log.exception: a client's traceback can quote its URL and request; the message is
                # redacted instead.
                log.error("unexpected error writing to InfluxDB; retrying: %s", _failure(exc))
                self.metrics.store_write_retries.inc()
                self.last_error = _failure(exc)
                self._sleep_unless_stopping(delay_s)
                delay_s = min(delay_s * 2, self.retry_max_s)
                continue
            else:
                self._acknowledge(chunks, body.count(b"\n") + 1)
            with self._lock:
                if not self._healthy:
                    log.info("InfluxDB writes succeed again")
                self._healthy = True
                self.last_error = None
            delay_s = self.retry_min_s

    def _sleep_unless_stopping(self, delay_s: float) -> None:
        deadline = time.monotonic() + delay_s
        while True:
            # Read the clock once per step: reading it again for the sleep could give a negative length.
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return
            with self._lock:
                if self._stopping:
                    return
            self._sleep(min(0.05, remaining_s))
