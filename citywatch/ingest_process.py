"""`citywatch up`'s ingest in a process of its own: MQTT and the codecs beside the rules, not in their
interpreter.

In one process paho's network thread, the codecs and the rules take turns holding one interpreter lock,
so on a busy machine the rules get what ingest leaves them (BENCHMARKS.md, issue 19). Here a child
process runs the same `IngestService` (ingest/service.py) as the one-process set-up, onto a
`PipeProducer`: each message's events and dead letters are encoded as they come (msgpack, as on the Kafka
bus) and written to a pipe in batches; the parent's hand-off thread decodes a batch, counts it at
/metrics and puts it on the in-process bus in one piece.

- Acknowledgement: a message is acknowledged to the broker once its batch is in the pipe; from there
  the parent's bus takes it (a crash loses the pipe's contents as it would lose the bus's).
- Backpressure: a full bus stops the hand-off thread, which stops reading the pipe; the child's writer
  then waits, its producer fills up (`PENDING_ITEMS`) and paho's network thread waits in `send`, so the
  broker keeps the rest, as in one process.
- Devices changed through /v1/devices reach the child's registry over the same pipe.
- The child's status (connected, subscribed, error, unacknowledged messages) and the metrics only it
  changes (vendor-map notices, messages not acknowledged, the connection) follow a few times a second.
- A child that dies is started again after a second; the broker redelivers what it had not acknowledged
  (the session is persistent).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import msgspec

from citywatch.interpreter_tuning import tune_for_streaming
from core.child_process import READY, ChildLogs, spawn_child, start_child
from core.metrics import ForwardedMetrics, Metrics, Sample, samples_of
from core.models import DeadLetter, Event
from core.settings import DeviceSettings, Settings
from ingest.geo import GeoTagger
from ingest.registry import DeviceRegistry
from ingest.service import IngestCounts, IngestService, build_normalizer
from processors.bus import (
    ENCODING_ERRORS,
    BusClosed,
    BusEncodingError,
    BusFull,
    BusProducer,
    OnDurable,
    encode_item,
)

log = logging.getLogger(__name__)

# The first byte of every message on a pipe says what follows. Two pipes: the batches' (which a full bus
# stops) and the reports' (which then still say how many messages wait unacknowledged).
BATCH = b"B"  # child -> parent: a msgpack array of (events, dead letters), one per MQTT message
END = b"E"  # child -> parent: stopped cleanly, nothing follows
STATUS = b"S"  # child -> parent, reports pipe: connected, subscribed, error, unacked
METRICS = b"M"  # child -> parent, reports pipe: the forwarded metrics' samples
DEVICE = b"D"  # parent -> child: the change's number (8 bytes), a device's settings (JSON) or REMOVED + id
REMOVED = b"-"
APPLIED = b"A"  # child -> parent, reports pipe: the number of a device change now in effect
STOP = b"Q"  # parent -> child: stop receiving, send what was received, end

# Events and dead letters waiting for the pipe before `send` waits for room (paho's thread then stops
# reading); a message that made neither counts as one.
PENDING_ITEMS = 5_000
# The writer lets messages gather this long after the first one: a batch per message would cost a thread
# switch per message; 2 ms adds little to publish-to-stored latency.
LINGER_S = 0.002
# How often the child reports its status and metrics when they changed.
REPORT_S = 0.1
RESTART_S = 1.0
STOP_S = 30.0
# A device change made through /v1/devices returns once the child applied it (the next message is judged
# by it), or after this long if the child does not say so.
DEVICE_APPLIED_S = 5.0
# The metrics only the child changes, sent on to the parent's registry (what ingest counts per message
# the parent counts itself as batches arrive: IngestCounts).
FORWARDED_METRICS = ("unmapped_fields", "uplinks_without_vendor_map", "mqtt_not_acked", "mqtt_connected")

_encoder = msgspec.msgpack.Encoder()


class IngestProcessError(RuntimeError):
    pass


class PipeProducer(BusProducer):
    """Child side: encodes each message's items in `send` (so one that the bus cannot carry is refused
    there, as on the Kafka bus) and writes them in batches from its own thread; `on_durable` is called
    once the batch is written (with the error if it could not be)."""

    def __init__(self, write: Callable[[bytes], None], pending_items: int = PENDING_ITEMS,
                 linger_s: float = LINGER_S) -> None:
        self._write = write
        self._pending_limit = pending_items
        self._linger_s = linger_s
        self._pending: list[bytes] = []
        self._pending_items = 0
        self._settles: list[OnDurable] = []
        self._writing = False
        self._closed = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._write_batches, name="ingest-pipe", daemon=True)
        self._thread.start()

    def send(self, events: Sequence[Event], dead_letters: Sequence[DeadLetter] = (), *,
             timeout_s: float | None = None, on_durable: OnDurable | None = None) -> None:
        try:
            encoded = _encoder.encode((events, dead_letters))
        except ENCODING_ERRORS as exc:
            items: list[Event | DeadLetter] = [*events, *dead_letters]
            for item in items:
                encode_item(item, _encoder.encode)  # raises BusEncodingError naming the first it cannot
            raise BusEncodingError("a message's events and dead letters", exc) from exc
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while self._pending_items >= self._pending_limit and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BusFull(f"ingest's pipe to the processor is full ({self._pending_items} items)")
                self._changed.wait(remaining)
            if self._closed:
                raise BusClosed("ingest's pipe to the processor is closed")
            self._pending.append(encoded)
            self._pending_items += max(1, len(events) + len(dead_letters))
            if on_durable is not None:
                self._settles.append(on_durable)
            if len(self._pending) == 1:
                self._changed.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything sent is written (and its senders told)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while self._pending or self._writing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BusFull(f"{len(self._pending)} messages still wait for the pipe")
                self._changed.wait(remaining)

    def close(self) -> None:
        """Write what is pending, then stop."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _write_batches(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
            if self._linger_s:
                time.sleep(self._linger_s)
            with self._changed:
                batch, self._pending = self._pending, []
                settles, self._settles = self._settles, []
                self._pending_items = 0
                self._writing = True
                self._changed.notify_all()  # room again for paho's thread
            error: BaseException | None = None
            try:
                self._write(BATCH + _array_header(len(batch)) + b"".join(batch))
            except (OSError, ValueError) as exc:  # the parent is gone: nothing of this is acknowledged
                error = exc
            for settle in settles:
                settle(error)
            with self._changed:
                self._writing = False
                self._changed.notify_all()


def _array_header(length: int) -> bytes:
    """msgpack's array header: the batch is the messages' encodings one after the other behind it."""
    if length < 16:
        return bytes((0x90 | length,))
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


class IngestProcess:
    """Parent side: starts the child, hands its batches to `producer`, keeps its status and metrics, and
    sends it the registry's changes. Reads like an `IngestService` (connected, subscribed, error,
    unacked) for readiness and status."""

    def __init__(self, settings: Settings, *, host: str, port: int, registry: DeviceRegistry,
                 producer: BusProducer, metrics: Metrics) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._registry = registry
        self._producer = producer
        self._counts = IngestCounts(metrics)
        self._decoder = msgspec.msgpack.Decoder(list[tuple[list[Event], list[DeadLetter]]])
        self._status: dict[str, Any] = {}
        self._forwarded = ForwardedMetrics(metrics)
        self._conn: Connection | None = None
        self._reports_thread: threading.Thread | None = None
        self._child: BaseProcess | None = None
        self._send_lock = threading.Lock()
        # Device changes sent to the child, and the last one it applied (numbered: a new child starts from
        # the registry as it is then, and applies only the changes made after).
        self._device_changes = 0
        self._devices_applied = 0
        self._applied = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._exit_error: str | None = None
        metrics.mqtt_unacked.set_function(lambda: self.unacked)
        registry.watch(self._device_changed)

    @property
    def connected(self) -> bool:
        return bool(self._status.get("connected"))

    @property
    def subscribed(self) -> bool:
        return bool(self._status.get("subscribed"))

    @property
    def error(self) -> str | None:
        return self._exit_error or self._status.get("error")

    @property
    def unacked(self) -> int:
        return int(self._status.get("unacked", 0))

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._hand_off, name="ingest-hand-off", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = STOP_S) -> None:
        """Tell the child to stop; everything it received and acknowledged is on the bus when this
        returns (the bus must still be open, as for `IngestService.stop`)."""
        self._stopping.set()
        self._send(STOP)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("the ingest process did not stop within %.0f s; killing it (what it had not "
                          "acknowledged is redelivered by the broker)", timeout_s)
        child = self._child
        if child is not None:
            child.join(timeout_s)
            if child.is_alive():
                child.kill()
                child.join()
        if self._reports_thread is not None:
            self._reports_thread.join(timeout_s)  # the child's last report, read to its end
        if self._conn is not None:
            self._conn.close()

    def _spawn(self) -> None:
        if self._reports_thread is not None:
            self._reports_thread.join()  # the previous child's, ended with it: its last metrics applied
        self._forwarded.restart()  # a new child counts from zero
        self._status = {}
        # The child starts from the devices as they are now; a change made while it starts waits until its
        # pipe is in place, and is then sent to it (before, one made then went to the previous child's
        # closed pipe and the new child never had it).
        reports, reports_end = multiprocessing.get_context("spawn").Pipe(duplex=False)
        try:
            with self._registry.held() as devices:
                self._conn, self._child = spawn_child(
                    _run_child, (self._settings, self._host, self._port, devices, reports_end),
                    name="citywatch-ingest", what="ingest process", error=IngestProcessError)
        except IngestProcessError:
            reports.close()
            raise
        finally:
            reports_end.close()
        self._reports_thread = threading.Thread(target=self._read_reports, args=(reports,),
                                                name="ingest-reports", daemon=True)
        self._reports_thread.start()
        self._exit_error = None

    def _hand_off(self) -> None:
        while True:
            assert self._conn is not None
            if self._read(self._conn) or self._stopping.is_set():
                return
            exit_code = None
            if self._child is not None:
                self._child.join(5)
                if self._child.is_alive():  # its pipe closed but it hangs: it is replaced all the same
                    self._child.kill()
                    self._child.join()
                exit_code = self._child.exitcode
            self._conn.close()
            self._exit_error = f"the ingest process exited (exit code {exit_code})"
            self._status = {}
            log.error("%s; starting it again in %.0f s (the broker redelivers what it had not "
                      "acknowledged)", self._exit_error, RESTART_S)
            while not self._stopping.wait(RESTART_S):
                try:
                    self._spawn()
                    break
                except IngestProcessError as exc:
                    self._exit_error = str(exc)
                    log.error("%s; trying again in %.0f s", exc, RESTART_S)
            else:
                return

    def _read(self, conn: Connection) -> bool:
        """Take the child's messages until it ends: True when it said END, False if it died."""
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return False
            kind = message[:1]
            if kind == BATCH:
                self._hand_over(message)
            elif kind == END:
                return True

    def _read_reports(self, reports: Connection) -> None:
        with reports:
            while True:
                try:
                    message = reports.recv_bytes()
                except (EOFError, OSError):
                    return
                if message[:1] == STATUS:
                    self._status = msgspec.msgpack.decode(memoryview(message)[1:])
                elif message[:1] == METRICS:
                    self._forwarded.apply(msgspec.msgpack.decode(memoryview(message)[1:]))
                elif message[:1] == APPLIED:
                    with self._applied:
                        self._devices_applied = max(self._devices_applied, int.from_bytes(message[1:9]))
                        self._applied.notify_all()

    def _hand_over(self, message: bytes) -> None:
        batch = self._decoder.decode(memoryview(message)[1:])
        if len(batch) == 1:
            events, dead_letters = batch[0]
        else:
            events = [event for message_events, _ in batch for event in message_events]
            dead_letters = [letter for _, message_letters in batch for letter in message_letters]
        self._counts.received(len(batch))
        try:
            self._producer.send(events, dead_letters)
        except (BusClosed, BusFull) as exc:
            # Only when the bus closed before ingest stopped: these were acknowledged, so say how many.
            log.error("the bus did not take %d events and %d dead letters from the ingest process (%s)",
                      len(events), len(dead_letters), exc)
            return
        self._counts.accepted(events, dead_letters)

    def _device_changed(self, device_id: str, device: DeviceSettings | None) -> None:
        """Send the change and wait until the child applied it: a device deactivated through the API has
        its next message dead-lettered, even one already on its way to the broker. A child that is gone
        is not waited for (the next one starts from the registry as it is then)."""
        with self._applied:
            self._device_changes += 1
            number = self._device_changes
        self._send(DEVICE + number.to_bytes(8, "big") + (
            REMOVED + device_id.encode() if device is None else device.model_dump_json().encode()))
        deadline = time.monotonic() + DEVICE_APPLIED_S
        with self._applied:
            while self._devices_applied < number:
                child = self._child
                if child is None or not child.is_alive() or self._stopping.is_set():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("the ingest process did not confirm the change of device %s within %.0f s; "
                                "messages it receives meanwhile may still be judged without it", device_id,
                                DEVICE_APPLIED_S)
                    return
                self._applied.wait(min(remaining, 0.1))

    def _send(self, message: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            with self._send_lock:
                conn.send_bytes(message)
        except (OSError, ValueError):
            pass  # the child is gone; a new one starts from the registry as it is then


def _run_child(conn: Connection, settings: Settings, host: str, port: int, devices: list[DeviceSettings],
               reports: Connection, logs: ChildLogs) -> None:
    start_child(logs)
    # A service manager's SIGTERM reaches the whole group: the parent stops this child in order (what
    # was received is handed over and acknowledged), and the closed pipe ends it if the parent is killed.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    send_lock = threading.Lock()

    def write(message: bytes) -> None:
        with send_lock:
            conn.send_bytes(message)

    metrics = Metrics()
    registry = DeviceRegistry(devices)
    geo = GeoTagger.from_settings(settings.geo)  # the parent built one from the same settings already
    producer = PipeProducer(write)
    service = IngestService(
        host=host, port=port, settings=settings.mqtt,
        topics=[route.pattern for route in settings.ingest.routes],
        normalizer=build_normalizer(settings, registry, geo.tag_event, metrics),
        producer=producer, metrics=metrics,
    )
    # As the parent runs (citywatch/interpreter_tuning.py): here the pipe's writer thread must get the
    # interpreter from paho's busy network thread without waiting 5 ms each time.
    tune_for_streaming()
    write(READY)  # before anything is received: the parent reads READY first
    service.start()
    reporter = _Reporter(reports.send_bytes, service, metrics)
    while True:
        try:
            if conn.poll(REPORT_S):
                message = conn.recv_bytes()
                if message[:1] == STOP:
                    break
                if message[:1] == DEVICE:
                    _apply_device(registry, message[9:])
                    reports.send_bytes(APPLIED + message[1:9])
            reporter.report()
        except (EOFError, OSError):
            break  # the parent is gone
    service.stop()
    producer.close()
    try:
        reporter.report()
        write(END)
    except (OSError, ValueError):
        pass  # the parent is gone: nothing to tell
    reports.close()


def _apply_device(registry: DeviceRegistry, body: bytes) -> None:
    if body[:1] == REMOVED:
        registry.deactivate(body[1:].decode())
    else:
        registry.upsert(DeviceSettings.model_validate_json(body))


class _Reporter:
    """Sends the child's status and forwarded metrics when they changed."""

    def __init__(self, write: Callable[[bytes], None], service: IngestService, metrics: Metrics) -> None:
        self._write = write
        self._service = service
        self._metrics = metrics
        self._status: dict[str, Any] | None = None
        self._samples: list[Sample] | None = None

    def report(self) -> None:
        status = {"connected": self._service.connected, "subscribed": self._service.subscribed,
                  "error": self._service.error, "unacked": self._service.unacked}
        if status != self._status:
            self._write(STATUS + msgspec.msgpack.encode(status))
            self._status = status
        samples = samples_of(self._metrics, FORWARDED_METRICS)
        if samples != self._samples:
            self._write(METRICS + msgspec.msgpack.encode(samples))
            self._samples = samples
