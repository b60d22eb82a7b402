"""The MQTT boundary: one paho-mqtt client that stays subscribed through broker restarts and outages.

Modelled on Home Assistant's MQTT client: the subscriptions we want are kept apart from the broker's
session and sent again on every CONNACK; refused credentials stop the retry loop (retrying cannot fix
them), every other failure reconnects with exponential backoff; a failing message handler is logged
with a truncated payload and never reaches paho's network thread.

Session choice: persistent (clean_session=False with a fixed client id) by default. While we are
disconnected (a network blip, an ingest restart) the broker keeps our subscriptions and queues QoS 1
messages for us, so readings are not lost; they arrive as a burst on reconnect, bounded by the broker's
own per-client queue limit (mosquitto `max_queued_messages`). Redelivered duplicates are harmless:
event ids are stable and the processors drop already-seen ids. The price: a fixed client id must not be
shared by two running ingests (they would take the session from each other in a loop).

Memory and flow control: paho's max_inflight_messages / max_queued_messages bound *outgoing* publishes,
which we never make, so their defaults are irrelevant here. Inbound, while the handler blocks (the bus is
full: backpressure) paho reads nothing more, the broker stops at its in-flight window and queues the
rest. If the handler blocks longer than 1.5 x keepalive, the broker drops the connection; unacknowledged
messages are redelivered after the reconnect.

Acknowledgement: with `on_message` paho acknowledges a QoS 1 message when the handler returns. With
`on_message_to_ack` (paho's manual_ack) the handler gets a `settle` callable and the PUBACK goes out only
when it calls `settle(True)`, from any thread, e.g. once Kafka confirmed what the message became.
`settle(False)` (the bus refused it) leaves it unacknowledged and drops the connection, because an MQTT
3.1.1 broker redelivers unacknowledged messages only on a reconnect of the session. At most
`max_unacked` messages wait to be settled; at the limit the handler is not called until one is.

Threads: `settle` calls paho's `ack()`, which appends the PUBACK to paho's outgoing deque (thread-safe
appends) and wakes its network thread through its socket pair, as `publish()` from another thread does.
A PUBACK must only go out on the connection that received the message: after a reconnect the broker
redelivers with the same packet ids and may reuse them, so `settle` drops acknowledgements of an older
connection (that message is redelivered; event ids make the copy harmless). The check and the `ack()`
happen under one lock that the connect and disconnect callbacks also take, so an acknowledgement is
either queued before paho resets its queue for the next connection, or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.metrics import Metrics
from core.settings import MqttTlsSettings
from ingest.codecs.base import payload_preview

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes, int], None]
# settle(True): acknowledge the message; settle(False): leave it for the broker to redeliver. Once only.
Settle = Callable[[bool], None]
OnMessageToAck = Callable[[str, bytes, int, Settle], None]

# Packets read per wake-up of paho's network thread (see _BurstReadingClient).
READ_BURST_PACKETS = 64

# How long stop() waits for the broker to confirm it has read our acknowledgements (see stop()).
STOP_ROUND_TRIP_S = 2.0

# CONNACK reason codes retrying cannot fix: bad user name or password (134), not authorised (135),
# banned (138), bad authentication method (140). MQTT 3.1.1 return codes 4 and 5 map to 134 and 135.
AUTH_REFUSED_CODES = frozenset({134, 135, 138, 140})


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class MqttSource:
    """Subscribes to `topics` and calls `on_message(topic, payload, received_time_ms)` for each message,
    or `on_message_to_ack(topic, payload, received_time_ms, settle)` (manual acknowledgement, see above).

    `connected` is true only between a successful CONNACK and the next disconnect; `subscribed` once the
    broker acknowledged every subscription of the current connection; `error` says why the source gave
    up (refused credentials) or why a subscription was refused.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        topics: Sequence[str],
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        on_message: OnMessage | None = None,
        on_message_to_ack: OnMessageToAck | None = None,
        max_unacked: int = 1000,
        metrics: Metrics | None = None,
        clean_session: bool = False,
        now_ms: Callable[[], int] = wall_clock_ms,
        tls: MqttTlsSettings | None = None,
    ) -> None:
        if not topics:
            raise ValueError("MqttSource needs at least one topic filter")
        if (on_message is None) == (on_message_to_ack is None):
            raise ValueError("MqttSource needs exactly one of on_message and on_message_to_ack")
        self._host = host
        self._port = port
        self._keepalive_s = keepalive_s
        # What we want subscribed, independent of what the broker currently holds for us.
        self._desired = {topic: qos for topic in topics}
        self._handler = on_message
        self._handler_to_ack = on_message_to_ack
        self._max_unacked = max_unacked
        # Guards the connection generation, the unacked count and paho's ack() (see the module docstring).
        self._acks = threading.Condition()
        self._generation = 0
        self._unacked = 0
        # Whether the network thread waits for a settlement to make room (only then is one worth a notify).
        self._waiting_for_room = False
        self._accepting = True
        self._metrics = metrics
        self._now_ms = now_ms
        self._connected = False
        self._subscribed = False
        self._pending_subscribe_mid: int | None = None
        self._stopping = False
        self._started = False
        self.error: str | None = None
        # CONNECT attempts so far (each CONNACK or failed TCP connect): shows whether retrying goes on.
        self.connect_attempts = 0

        client = _BurstReadingClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            manual_ack=on_message_to_ack is not None,
        )
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None and tls.enabled:
            configure_tls(client, tls)
        # paho annotates these as int but computes with them as floats; sub-second delays work.
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]
        client.enable_logger(_paho_logger())
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        if metrics is not None:
            # Read when scraped: setting it on every hand-over and acknowledgement cost two gauge locks a
            # message on the network thread.
            metrics.mqtt_unacked.set_function(lambda: self._unacked)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def subscribed(self) -> bool:
        return self._connected and self._subscribed

    @property
    def running(self) -> bool:
        """True while paho's network thread runs (connecting, connected or waiting to retry)."""
        # paho sets `_thread` back to None when the loop ends; it has no public accessor for this.
        return self._client._thread is not None

    @property
    def topics(self) -> list[str]:
        return list(self._desired)

    @property
    def unacked(self) -> int:
        """Messages handed to `on_message_to_ack` and not settled yet."""
        return self._unacked

    def pause(self) -> None:
        """Stop handing messages over (those that arrive stay unacknowledged: the broker redelivers them
        to the next session); messages already handed over can still be settled and acknowledged."""
        with self._acks:
            self._accepting = False
            self._acks.notify_all()

    def start(self) -> None:
        """Connect in the background: a broker that is down now is retried with backoff, never fatal."""
        if self._started:
            raise RuntimeError("MqttSource.start() called twice")
        self._started = True
        self._stopping = False
        with self._acks:
            self._accepting = True
        self.error = None
        # connect_async does no network I/O here: the first attempt and its retries run in paho's thread.
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive_s)
        self._client.loop_start()
        log.info("MQTT source connecting to %s:%d for %s", self._host, self._port, ", ".join(self._desired))

    def stop(self) -> None:
        """Disconnect cleanly and wait for paho's thread to end (at most ~1 s if waiting to reconnect).

        First one ping round trip: a broker reads a connection's packets in order, so once it answers, it
        has processed every PUBACK sent before. Without it, a session that takes over the client id right
        after (a restart) can be handled by the broker before those PUBACKs (mosquitto reads one packet per
        connection at a time), and it is sent those messages again: hundreds after a burst, seen in tests.
        """
        if not self._started:
            return
        with self._acks:
            self._stopping = True
            self._accepting = False
            self._generation += 1  # acknowledgements from now on are dropped: the loop is going away
            self._acks.notify_all()
            connected = self._connected
        if connected and not self._client.round_trip(STOP_ROUND_TRIP_S):
            log.warning("MQTT broker %s:%d did not answer a ping within %.0f s while stopping; messages "
                        "acknowledged last may be delivered again to the next session", self._host,
                        self._port, STOP_ROUND_TRIP_S)
        close_client(self._client)  # loop_start() makes a new wake-up pair for a restart
        self._set_connected(False)
        self._started = False
        log.info("MQTT source stopped")

    # paho callbacks: they run on paho's network thread.

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connect_attempts += 1
        if reason_code.is_failure:
            if reason_code.value in AUTH_REFUSED_CODES:
                self.error = (
                    f"MQTT broker {self._host}:{self._port} refused the connection: {reason_code}; "
                    "check the user name and password. Not retrying."
                )
                log.error("%s", self.error)
                # Ends paho's retry loop: it stops once the client is in the disconnecting state.
                client.disconnect()
            else:
                log.warning("MQTT broker %s:%d refused the connection: %s; retrying",
                            self._host, self._port, reason_code)
            return
        self.error = None
        with self._acks:
            self._generation += 1
        self._set_connected(True)
        log.info("MQTT connected to %s:%d (session present: %s)", self._host, self._port,
                 flags.session_present)
        # Every time, even with a session present: a broker restarted without persistence has
        # forgotten our subscriptions although it accepts the client id.
        self._subscribed = False
        _, mid = client.subscribe(list(self._desired.items()))
        self._pending_subscribe_mid = mid

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.connect_attempts += 1
        log.warning("MQTT broker %s:%d unreachable; retrying with backoff", self._host, self._port)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._pending_subscribe_mid:
            return
        refused = [topic for topic, code in zip(self._desired, reason_codes, strict=False) if code.is_failure]
        if refused:
            self.error = f"MQTT broker refused the subscription to {', '.join(refused)}"
            log.error("%s; check the broker's ACL for this user", self.error)
            return
        for (topic, qos), code in zip(self._desired.items(), reason_codes, strict=False):
            if code.value < qos:
                log.warning("MQTT broker granted QoS %d instead of %d for %s", code.value, qos, topic)
        self._subscribed = True
        log.info("MQTT subscribed to %s", ", ".join(self._desired))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected
        with self._acks:
            self._generation += 1  # what this connection received can no longer be acknowledged
        self._set_connected(False)
        if self._stopping or self.error is not None or not was_connected:
            log.debug("MQTT disconnected: %s", reason_code)
        else:
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting", self._host, self._port,
                        reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # paho types the payload as bytes | bytearray; it is bytes in practice, so this rarely copies.
        payload = message.payload if isinstance(message.payload, bytes) else bytes(message.payload)
        if self._handler_to_ack is not None:
            self._hand_over(message, payload, self._handler_to_ack)
            return
        assert self._handler is not None
        try:
            self._handler(message.topic, payload, self._now_ms())
        except Exception:
            # Never let it reach paho: an exception there ends the network thread and ingest with it.
            log.exception("MQTT message handler failed; message skipped: topic=%r payload=%s",
                          _topic_of(message), payload_preview(payload))

    def _hand_over(self, message: mqtt.MQTTMessage, payload: bytes, handler: OnMessageToAck) -> None:
        with self._acks:
            # Bounded: blocking here is backpressure (paho reads nothing more; the broker queues).
            while self._accepting and self._unacked >= self._max_unacked:
                self._waiting_for_room = True
                self._acks.wait()
            self._waiting_for_room = False
            if not self._accepting:
                return  # not acknowledged: the broker redelivers it to the next session
            self._unacked += 1
            settle = _Settlement(self, self._generation, message.mid, message.qos)
        try:
            handler(message.topic, payload, self._now_ms(), settle)
        except Exception:
            # Never let it reach paho. Redelivering cannot fix a failing handler: skip it, as paho would.
            log.exception("MQTT message handler failed; message skipped: topic=%r payload=%s",
                          _topic_of(message), payload_preview(payload))
            settle(True)

    def _settle(self, settlement: _Settlement, ok: bool) -> None:
        with self._acks:
            # Under the lock, so two threads settling one message cannot both pass this check.
            if settlement.settled:
                return
            settlement.settled = True
            generation, mid, qos = settlement.generation, settlement.mid, settlement.qos
            self._unacked -= 1
            if self._waiting_for_room:
                self._acks.notify_all()
            current = generation == self._generation and not self._stopping
            if ok:
                if current and qos > 0:
                    self._client.ack(mid, qos)
                return
            if not current:
                return  # that connection is gone already: the broker redelivers on the new one
            # No more acknowledgements on this connection: it is about to be dropped.
            self._generation += 1
            sock = self._client.socket()
        log.warning("the bus refused an MQTT message; reconnecting so that the broker redelivers it")
        if isinstance(sock, socket.socket):  # TCP or TLS (ssl.SSLSocket); never a websocket here
            # paho's network thread sees the connection end and reconnects with its backoff; a shutdown
            # is safe from another thread, unlike paho's reconnect(). OSError: closed meanwhile, paho is
            # reconnecting already.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if not connected:
            self._subscribed = False
        if self._metrics is not None:
            self._metrics.mqtt_connected.set(1 if connected else 0)


class _BurstReadingClient(mqtt.Client):
    """paho's client, reading up to READ_BURST_PACKETS packets each time its network thread wakes up, and
    handing each message to `on_message` without leaving garbage behind.

    paho 2.2's loop_read() reads one packet per wake-up when it has no QoS 2 or outgoing messages in
    flight (our case: a subscriber), so every incoming message cost a select() and a pass through the
    loop's bookkeeping. The socket is non-blocking: the burst ends as soon as nothing complete is left to
    read (paho keeps a partial packet for the next wake-up), so PUBACKs queued meanwhile, keepalives and
    reconnects wait for at most one burst. The body is paho's own loop_read with a larger bound.

    paho reads a packet in three or more recv() calls (its first byte, its length byte by byte, the
    rest); here one recv() takes everything the socket holds (up to 64 KiB) and paho's reads are served
    from that buffer, so a burst costs one system call, and one wait for the interpreter's lock after it,
    instead of three or more a message. A burst goes on past its bound until the buffer is empty.

    For every message, paho first looks its topic up among the per-topic callbacks (message_callback_add,
    which MqttSource does not use) with a recursive closure that refers to itself: a reference cycle of
    six objects a message that only the cyclic garbage collector frees. They were most of what its young
    passes found (13,000 closures in one pass at 2,500 messages/s), and every pass stops every thread of
    the process: they made those pauses (45-75 ms of CPU each under load) longer and more frequent.

    Acknowledgements leave in bulk: paho queues one PUBACK per `ack()` and sends each with its own
    send(), which on a busy broker also meant one wake-up and one read per message on its side. The
    PUBACKs waiting at the front of the queue are joined into one packet before each write (same bytes,
    same order). And a packet queued by the network thread itself (a message settled while it is handed
    over: the embedded mode) does not write paho's wake-up byte to its socket pair: the thread looks at
    its outgoing queue before it waits again anyway.

    `round_trip` (paho has no public way to ping) lets MqttSource.stop() know the broker has read what
    was sent before it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the last recv() took and paho has not read yet: bytes of the socket `_received_from`.
        self._received = b""
        self._received_at = 0
        self._received_from: Any = None
        self._pings_answered = 0
        self._pings_condition = threading.Condition()

    def round_trip(self, timeout_s: float) -> bool:
        """Send a PINGREQ and wait for its PINGRESP (from any thread but paho's). False if none came.

        A PINGREQ paho sent for its keepalive may still be unanswered: PINGRESPs come back in order, so
        ours is the one after it."""
        if threading.current_thread() is self._thread:
            return False  # the PINGRESP would be read by this very thread
        with self._pings_condition:
            awaited = self._pings_answered + (2 if self._ping_t else 1)
        if self._send_pingreq() != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        with self._pings_condition:
            return self._pings_condition.wait_for(lambda: self._pings_answered >= awaited, timeout_s)

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: mqtt.MQTTMessageInfo | None = None) -> mqtt.MQTTErrorCode:
        if threading.current_thread() is not self._thread:
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                 "to_process": len(packet), "packet": packet, "info": info})
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> mqtt.MQTTErrorCode:
        queue = self._out_packet
        if len(queue) > 1 and _is_fresh_puback(queue[0]) and _is_fresh_puback(queue[1]):
            # Only this thread takes from the front (others append at the back), so what is peeked at
            # here is what is taken.
            joined = bytearray()
            while queue and _is_fresh_puback(queue[0]) and len(joined) < _JOINED_ACKS_MAX_BYTES:
                joined += queue.popleft()["packet"]
            queue.appendleft({"command": mqtt.PUBACK, "mid": 0, "qos": 0, "pos": 0,
                              "to_process": len(joined), "packet": bytes(joined), "info": None})
        return super()._packet_write()

    def _handle_pingresp(self) -> mqtt.MQTTErrorCode:
        # paho clears its outstanding ping here: under the condition, so that round_trip() reads that
        # and the count of answers as one.
        with self._pings_condition:
            rc = super()._handle_pingresp()
            self._pings_answered += 1
            self._pings_condition.notify_all()
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho's dispatch without the per-topic lookup. MqttSource's handler catches its own errors.
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def message_callback_add(self, sub: str, callback: Any) -> None:
        raise NotImplementedError("per-topic callbacks are not dispatched by this client: use on_message")

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        packets = 0
        while True:
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            # Bytes already read into our buffer are read on: select() would not wake up for them.
            buffered = self._received_at < len(self._received)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                if buffered:
                    continue  # paho pauses a large packet every 100 chunks
                break
            packets += 1
            if packets >= max(max_packets, READ_BURST_PACKETS) and not buffered:
                break
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho asks for a packet's first byte, then its length byte by byte, then the rest: three or
        # more recv() calls a message, each letting go of the interpreter's lock and waiting to take it
        # back from the pipeline's threads. Here one recv() takes what the socket holds, up to
        # _RECEIVE_BYTES, and paho's reads are served from it.
        data, start = self._received, self._received_at
        if start >= len(data) or self._received_from is not self._sock:
            self._received_from = self._sock  # never bytes of an earlier connection
            data = super()._sock_recv(_RECEIVE_BYTES)  # BlockingIOError when nothing is there
            if len(data) <= bufsize:  # also the end of the connection, b""
                self._received, self._received_at = b"", 0
                return data
            self._received, start = data, 0
        self._received_at = start + bufsize
        return data[start:start + bufsize]


# One recv() takes at most this much; a burst of messages is often less.
_RECEIVE_BYTES = 65_536
# A joined write of PUBACKs (4 bytes each) stays below a typical socket send buffer.
_JOINED_ACKS_MAX_BYTES = 16_384


def _is_fresh_puback(packet: Any) -> bool:
    """A PUBACK nothing of which has been written yet."""
    return (packet["command"] & 0xF0) == mqtt.PUBACK and packet["pos"] == 0


class _Settlement:
    """The `settle` callable of one message: the first call counts, later ones are ignored."""

    __slots__ = ("_source", "generation", "mid", "qos", "settled")

    def __init__(self, source: MqttSource, generation: int, mid: int, qos: int) -> None:
        self._source = source
        self.generation = generation
        self.mid = mid
        self.qos = qos
        self.settled = False

    def __call__(self, ok: bool) -> None:
        self._source._settle(self, ok)


def close_client(client: mqtt.Client) -> None:
    """Disconnect a paho client whose network loop runs, stop the loop and close every socket it holds."""
    client.disconnect()
    # loop_stop also ends a connect or reconnect that raced with disconnect() in paho's thread (it checks a
    # terminate flag); that connect left its socket open.
    client.loop_stop()
    if client.socket() is not None:
        # No thread runs now: disconnect() writes the DISCONNECT packet and closes the socket here.
        client.disconnect()
    # Whatever is still open (paho's wake-up socket pair, always; the connection if the DISCONNECT could not
    # be written) paho closes only when the client is finalised, and its owners refer to it and back: the
    # cyclic collector would finalise those TCP sockets first, with a ResourceWarning.
    client._reset_sockets()


def configure_tls(client: mqtt.Client, tls: MqttTlsSettings) -> None:
    """TLS with the broker's certificate always verified against `ca_file` (or the system CAs);
    `insecure` only skips the host name check, for test set-ups with a certificate for another name."""
    client.tls_set(
        ca_certs=None if tls.ca_file is None else str(tls.ca_file),
        certfile=None if tls.cert_file is None else str(tls.cert_file),
        keyfile=None if tls.key_file is None else str(tls.key_file),
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    client.tls_insecure_set(tls.insecure)


class _DropPahoStopNoise(logging.Filter):
    """Drops paho's ERROR "Client is not connected ... MQTT_CS_DISCONNECTED".

    paho 2.2 logs it when its loop runs once more after our own disconnect() closed the socket (seen on
    most stops against amqtt). That state is only reached through disconnect(), so it is never a fault.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Client is not connected") and "MQTT_CS_DISCONNECTED" in message)


def _paho_logger() -> logging.Logger:
    logger = logging.getLogger(f"{__name__}.paho")
    if not any(isinstance(existing, _DropPahoStopNoise) for existing in logger.filters):
        logger.addFilter(_DropPahoStopNoise())
    return logger


def _topic_of(message: mqtt.MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:
        return repr(message._topic)
