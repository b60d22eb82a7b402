"""CPU per message at the MQTT boundary: `MqttSource` with manual acknowledgements, alone or with ingest.

One Mosquitto queues `--messages` QoS 1 messages for a persistent session while its subscriber is away;
then `MqttSource` reconnects and settles each message as it is handed over (what the embedded mode's
in-process bus does), and the run measures this process's CPU time (`time.process_time`: every thread,
and not inflated by waiting for a core) and the wall time until all are settled and acknowledged.
The broker is another process, so its own cost is not in the figure; its CPU time is printed beside it
(acknowledgements sent one by one cost it a read each).

With `--ingest` the messages are native bin readings (bench/peers.py's feed) and go the way `citywatch
up` takes them: `IngestService` (route, decode, registry, metrics) onto the in-process bus, acknowledged
at hand-over, and a thread that only empties the bus: everything paho's network thread does in the
embedded mode, without the rules and the store.

    .venv/bin/python -m bench.mqtt_ingest --messages 50000 --repeats 3 [--ingest]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
import uuid
from functools import partial
from pathlib import Path

from bench.peers import DEVICES, write_feed
from core.metrics import Metrics
from core.settings import DeviceSettings, Settings
from ingest.codecs.catalogue import build_codec
from ingest.embedded_broker import find_mosquitto, free_port, wait_for_port
from ingest.mqtt_source import MqttSource, Settle
from ingest.normalizer import Normalizer
from ingest.registry import DeviceRegistry
from ingest.service import IngestService
from processors.inprocess_bus import InProcessBus

TOPIC = "citywatch/events"


def broker_cpu_s(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc (clock ticks of 1/100 s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def one_run(port: int, broker_pid: int, messages: int, feed: Path, through_ingest: bool) -> dict[str, float]:
    client_id = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    handed = 0
    refused: list[str] = []

    def settle_at_once(topic: str, payload: bytes, received_time_ms: int, settle: Settle) -> None:
        nonlocal handed
        settle(True)
        handed += 1
        if handed == messages:
            done.set()

    def source(ingest: bool = False) -> MqttSource:
        if ingest:
            return ingest_source(port, client_id, messages, done, refused)
        return MqttSource(host="127.0.0.1", port=port, client_id=client_id, topics=[TOPIC], qos=1,
                          on_message_to_ack=settle_at_once, max_unacked=1000)

    # The session and its subscription first, then away while the messages are queued for it.
    first = source()
    first.start()
    deadline = time.monotonic() + 10
    while not first.subscribed:
        if time.monotonic() > deadline:
            raise SystemExit("the bench's MQTT source did not subscribe")
        time.sleep(0.01)
    first.stop()
    with feed.open("rb") as lines:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", TOPIC, "-l"],
                       stdin=lines, check=True)
    time.sleep(0.5)  # the broker has taken the last ones in

    second = source(through_ingest)
    cpu_start, wall_start, broker_start = time.process_time(), time.monotonic(), broker_cpu_s(broker_pid)
    second.start()
    if not done.wait(300):
        raise SystemExit(f"not all {messages} messages arrived within 300 s")
    while second.unacked:
        time.sleep(0.001)
    if refused:
        raise SystemExit(f"{len(refused)} messages were dead-lettered, e.g. {refused[0]}")
    cpu_s, wall_s = time.process_time() - cpu_start, time.monotonic() - wall_start
    broker_s = broker_cpu_s(broker_pid) - broker_start
    second.stop()
    return {"cpu_us": cpu_s / messages * 1e6, "rate": messages / wall_s,
            "broker_cpu_us": broker_s / messages * 1e6}


def ingest_source(port: int, client_id: str, messages: int, done: threading.Event,
                  refused: list[str]) -> MqttSource:
    """An IngestService as `citywatch up` makes it, onto an in-process bus that a thread empties; `done`
    is set once `messages` events and dead letters (their reasons into `refused`) were taken off it."""
    devices = [DeviceSettings(device_id=f"bench-{i:05d}", kind="bin") for i in range(DEVICES)]
    settings = Settings(devices=devices)
    registry = DeviceRegistry(settings.devices)
    normalizer = Normalizer(settings.ingest, settings.mqtt.max_payload_bytes, registry,
                            partial(build_codec, devices=registry, vendor_maps=settings.vendor_maps))
    bus = InProcessBus(settings.bus.queue_events)
    mqtt = settings.mqtt.model_copy(update={"client_id": client_id})
    ingest = IngestService(host="127.0.0.1", port=port, settings=mqtt, topics=[TOPIC],
                           normalizer=normalizer, producer=bus.producer(), metrics=Metrics())

    def empty_the_bus() -> None:
        consumer, taken = bus.consumer(), 0
        while taken < messages:
            batch = consumer.poll(1000, 0.1)
            refused.extend(letter.detail for letter in batch.dead_letters)
            taken += len(batch.events) + len(batch.dead_letters)
        done.set()

    threading.Thread(target=empty_the_bus, daemon=True).start()
    return ingest.source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ingest", action="store_true",
                        help="native bin readings through IngestService onto the in-process bus")
    args = parser.parse_args()
    mosquitto = find_mosquitto()
    if mosquitto is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-ingest-") as work:
        port = free_port()
        config = Path(work) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          f"max_queued_messages {2 * args.messages}\nmax_inflight_messages 100\n")
        feed = Path(work) / "feed.txt"
        write_feed(feed, args.messages)
        broker = subprocess.Popen([mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            if not wait_for_port("127.0.0.1", port, 10, alive=lambda: broker.poll() is None):
                raise SystemExit("the benchmark's mosquitto did not start")
            for repeat in range(1, args.repeats + 1):
                run = one_run(port, broker.pid, args.messages, feed, args.ingest)
                print(f"run {repeat}: {run['cpu_us']:.1f} us of CPU per message here, "
                      f"{run['broker_cpu_us']:.1f} us in Mosquitto; {run['rate']:,.0f} messages/s")
        finally:
            broker.terminate()
            broker.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
