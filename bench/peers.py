"""citywatch side by side with its peers on this machine, in one run so that the ratios share its load.

1. Embedded mode against Node-RED and a bare paho subscriber: the same N native bin readings from 1,000
   bins, published at QoS 1 by Mosquitto's C client (`mosquitto_pub -l`, so the publisher is never the
   limit) through one Mosquitto, in turn to
   - Node-RED: mqtt in (QoS 1) -> a threshold function -> mqtt out (QoS 1), counted at `bench/out`;
   - `citywatch up` from this checkout (full rule catalogue, SQLite store), counted by `/v1/status`;
   - a paho QoS 1 subscriber that only counts: the Python MQTT client's ceiling.
   Sustained rate = messages over the time from the first to the last arrival; rounds alternate the three.
2. Kafka mode against a raw consumer: per round and feed (`filling`, `churn`), a kafka-python consumer
   group that only polls and commits a freshly produced events topic, then bench/kafka.py's one-process
   `citywatch process` throughput run on another.
Prints every round and the medians with the ratios; results also go to bench/results/peers.json.

The method, the Mosquitto configuration and the Node-RED flow are those of the bench-peers side-by-side
harness (its cw_vs_nr.py and kafka_vs_raw.py) that gave issue 19's baseline (BENCHMARKS.md), so figures
from either compare. Node-RED is looked for in `--node-red` (default `$NODE_RED_DIR`, else `.node-red`
in the checkout); `make bench-peers` installs it there. Without it, part 1 says how to install it and is
skipped.

    .venv/bin/python -m bench.peers [--events 100000] [--rounds 3] [--node-red DIR] [--skip-kafka]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from kafka import KafkaConsumer

import bench.kafka as bench_kafka
from bench.e2e import machine
from ingest.embedded_broker import find_mosquitto, free_port, wait_for_port
from processors.kafka_bus import ensure_topics

REPO = Path(__file__).resolve().parent.parent
DEVICES = 1000
NODE_RED_VERSION = "4.1.15"  # as `make bench-peers` installs it
NODE_RED_INSTALL = f"mkdir -p {{dir}} && cd {{dir}} && npm install node-red@{NODE_RED_VERSION}"
# mosquitto_pub -l ends at the end of its input without waiting for its QoS 1 acknowledgements: the
# input stays open this long after the feed so that every message is delivered.
PUBLISHER_TAIL_S = 25
# A run is over when every message arrived or the count stood still for one poll.
DRAIN_POLL_S = 3.0


def node_red_flow(port: int) -> list[dict[str, Any]]:
    """mqtt in -> a threshold function -> mqtt out, both at QoS 1, on the benchmark's broker."""
    return [
        {"id": "tab1", "type": "tab", "label": "bench"},
        {"id": "brk", "type": "mqtt-broker", "name": "local", "broker": "127.0.0.1", "port": str(port),
         "clientid": "nr-bench", "autoConnect": True, "usetls": False, "protocolVersion": "4",
         "keepalive": "60", "cleansession": True},
        {"id": "in1", "type": "mqtt in", "z": "tab1", "name": "", "topic": "bench/in", "qos": "1",
         "datatype": "json", "broker": "brk", "nl": False, "rap": False, "inputs": 0, "x": 100, "y": 100,
         "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "name": "flag",
         "func": "msg.payload.alert = msg.payload.value > 100;\nreturn msg;", "outputs": 1, "x": 300,
         "y": 100, "wires": [["out1"]]},
        {"id": "out1", "type": "mqtt out", "z": "tab1", "name": "", "topic": "bench/out", "qos": "1",
         "retain": "false", "broker": "brk", "x": 500, "y": 100, "wires": []},
    ]


# Headless: no editor, no admin API, warnings only.
NODE_RED_SETTINGS = """module.exports = {{
    flowFile: 'flows.json', credentialSecret: false, uiHost: "127.0.0.1", uiPort: {port},
    httpAdminRoot: false, httpNodeRoot: false,
    logging: {{ console: {{ level: "warn", metrics: false, audit: false }} }},
    functionGlobalContext: {{}}, editorTheme: {{ tours: false }}
}};
"""


def write_feed(path: Path, events: int) -> None:
    """Native bin readings, one JSON object a line: bins fill 0.5% a reading and are emptied at 100%."""
    start_ms = int(time.time() * 1000) - events
    with path.open("w") as feed:
        for i in range(events):
            fill = ((i // DEVICES + (i % DEVICES) * 37) * 0.5) % 100.5
            reading = {"device_id": f"bench-{i % DEVICES:05d}", "kind": "bin", "time": start_ms + i,
                       "attributes": {"fill_pct": round(min(fill, 100.0), 1)}}
            feed.write(json.dumps(reading) + "\n")


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def sustained(first: float | None, last: float | None, count: int) -> float:
    return count / (last - first) if first is not None and last is not None and last > first else 0.0


class Embedded:
    """Part 1's shared set-up: one Mosquitto, the feed file, and the three systems run against them."""

    def __init__(self, work: Path, events: int, node_red: Path) -> None:
        self.work = work
        self.events = events
        self.node_red = node_red
        self.port = free_port()
        self.feed = work / "feed.txt"

    @contextmanager
    def broker(self) -> Iterator[None]:
        mosquitto = find_mosquitto()
        if mosquitto is None:
            raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
        write_feed(self.feed, self.events)
        config = self.work / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          "max_queued_messages 2000000\nmax_inflight_messages 100\n")
        process = subprocess.Popen([mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            if not wait_for_port("127.0.0.1", self.port, 10, alive=lambda: process.poll() is None):
                raise SystemExit("the benchmark's mosquitto did not start")
            yield
        finally:
            process.terminate()
            process.wait(10)

    def publish(self, topic: str) -> None:
        subprocess.run(f"(cat {self.feed}; sleep {PUBLISHER_TAIL_S}) | mosquitto_pub -h 127.0.0.1 "
                       f"-p {self.port} -q 1 -t {topic} -l", shell=True, check=True)

    def drain(self, count: Callable[[], int], timeout_s: float = 300) -> int:
        deadline = time.monotonic() + timeout_s
        last = -1
        while time.monotonic() < deadline:
            n = count()
            if n >= self.events or (n == last and n > 0):
                return n
            last = n
            time.sleep(DRAIN_POLL_S)
        return count()

    def counted(self, topic_in: str, topic_out: str) -> tuple[int, float]:
        """Publishes to `topic_in` and counts what arrives on `topic_out` with a paho QoS 1 subscriber."""
        lock = threading.Lock()
        seen: dict[str, Any] = {"n": 0, "first": None, "last": None}

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            now = time.monotonic()
            with lock:
                seen["n"] += 1
                seen["first"] = seen["first"] or now
                seen["last"] = now

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-count-{time.time_ns()}")
        subscribed = threading.Event()
        client.on_message = on_message
        client.on_subscribe = lambda *args: subscribed.set()
        client.connect("127.0.0.1", self.port, 600)
        client.subscribe(topic_out, 1)
        client.loop_start()
        subscribed.wait(5)
        try:
            self.publish(topic_in)
            n = self.drain(lambda: int(seen["n"]))
        finally:
            client.loop_stop()
            client.disconnect()
        return n, sustained(seen["first"], seen["last"], n)

    def node_red_round(self) -> tuple[int, float]:
        home = self.work / "node-red"
        home.mkdir(exist_ok=True)
        (home / "flows.json").write_text(json.dumps(node_red_flow(self.port)))
        (home / "settings.js").write_text(NODE_RED_SETTINGS.format(port=free_port()))
        process = subprocess.Popen([str(node_red_binary(self.node_red)), "-u", str(home), "-s",
                                    str(home / "settings.js")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(8)  # Node-RED has no readiness signal in headless mode: it starts in 2-5 s here
            return self.counted("bench/in", "bench/out")
        finally:
            process.terminate()
            process.wait(30)

    def citywatch_round(self) -> tuple[int, float]:
        run = Path(tempfile.mkdtemp(dir=self.work))
        api_port = free_port()
        (run / "devices.yaml").write_text(yaml.safe_dump(
            [{"device_id": f"bench-{i:05d}", "kind": "bin"} for i in range(DEVICES)]))
        (run / "citywatch.yaml").write_text(yaml.safe_dump({
            "mqtt": {"url": f"mqtt://127.0.0.1:{self.port}", "client_id": f"cw-bench-{time.time_ns()}"},
            "store": {"kind": "embedded", "data_dir": str(run / "data")},
            "api": {"host": "127.0.0.1", "port": api_port, "auth": "disabled"},
            "devices_file": "devices.yaml",
        }))
        status_url = f"http://127.0.0.1:{api_port}/v1/status"

        def events_total() -> int:
            with urllib.request.urlopen(status_url, timeout=5) as response:
                return int(json.load(response)["events_total"])

        # This checkout's code: `-c` puts the working directory first on the import path.
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from citywatch.cli import main; sys.exit(main())", "up",
             "--config", str(run / "citywatch.yaml")],
            cwd=REPO, stdout=(run / "citywatch.log").open("ab"), stderr=subprocess.STDOUT)
        try:
            base = self._wait_started(events_total, process, run / "citywatch.log")
            marks: list[tuple[float, int]] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    with suppress(OSError):  # one slow answer: the next poll counts
                        marks.append((time.monotonic(), events_total() - base))
                    time.sleep(0.25)

            poller = threading.Thread(target=poll)
            poller.start()
            try:
                self.publish("citywatch/events")
                self.drain(lambda: marks[-1][1] if marks else 0)
            finally:
                stop.set()
                poller.join()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        n = marks[-1][1]
        first = next((t for t, c in marks if c > 0), None)
        last = next((t for t, c in marks if c >= n), None)
        return n, sustained(first, last, n)

    @staticmethod
    def _wait_started(events_total: Callable[[], int], process: subprocess.Popen[bytes], log: Path) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                return events_total()
            except OSError:
                time.sleep(0.5)
        process.kill()
        raise SystemExit("citywatch up did not start:\n" + log.read_text(errors="replace")[-2000:])


def node_red_binary(directory: Path) -> Path:
    return directory / "node_modules" / ".bin" / "node-red"


def embedded_side_by_side(events: int, rounds: int, node_red: Path) -> dict[str, Any] | None:
    if not node_red_binary(node_red).exists():
        print(f"Node-RED is not installed in {node_red}: the comparison with it is skipped. Install it "
              f"with `{NODE_RED_INSTALL.format(dir=node_red)}` (needs nodejs and npm), or run "
              "`make bench-peers`.", flush=True)
        return None
    if shutil.which("mosquitto_pub") is None:
        raise SystemExit("mosquitto_pub is not installed (apt-get install -y mosquitto-clients)")
    rates: dict[str, list[float]] = {"nodered": [], "citywatch": [], "paho": []}
    with tempfile.TemporaryDirectory(prefix="citywatch-peers-") as work:
        embedded = Embedded(Path(work), events, node_red)
        with embedded.broker():
            for r in range(rounds):
                row = {"nodered": embedded.node_red_round(), "citywatch": embedded.citywatch_round(),
                       "paho": embedded.counted("bench/raw", "bench/raw")}
                for name, (count, rate) in row.items():
                    if count < events:
                        raise SystemExit(f"round {r + 1}: {name} received only {count} of {events} messages")
                    rates[name].append(rate)
                shown = ", ".join(f"{name} {rate:,.0f}/s" for name, (_, rate) in row.items())
                print(f"round {r + 1}: {shown}", flush=True)
    medians = {name: median(values) for name, values in rates.items()}
    return {"events": events, "rounds": rounds, "rates": rates, "median": medians,
            "citywatch/nodered": round(medians["citywatch"] / medians["nodered"], 2),
            "citywatch/paho": round(medians["citywatch"] / medians["paho"], 2)}


def raw_consumer_rate(bootstrap: str, events: int, workload: str) -> float:
    """A kafka-python group that only polls and commits: the ceiling of any Python consumer here."""
    settings = bench_kafka.kafka_settings(bootstrap, partitions=2)
    ensure_topics(settings)
    bench_kafka.produce(settings, events, 0, workload)
    consumer = KafkaConsumer(settings.topics.events, bootstrap_servers=[bootstrap],
                             group_id=settings.group_id + "-raw", auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    n, first = 0, None
    deadline = time.monotonic() + 600
    while n < events and time.monotonic() < deadline:
        records = consumer.poll(timeout_ms=500, max_records=2000)
        if records and first is None:
            first = time.perf_counter()
        n += sum(len(batch) for batch in records.values())
        if records:
            consumer.commit()
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    if n < events:
        raise SystemExit(f"the raw consumer read only {n} of {events} events")
    return n / max(1e-9, elapsed)


def kafka_side_by_side(events: int, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="citywatch-peers-kafka-") as work, \
            bench_kafka.broker(None) as bootstrap:
        for workload in ("filling", "churn"):
            rates: dict[str, list[float]] = {"raw": [], "citywatch": []}
            for r in range(rounds):
                rates["raw"].append(raw_consumer_rate(bootstrap, events, workload))
                run = bench_kafka.throughput(bootstrap, 1, events, Path(work), workload)
                if run["events_per_s"] <= 0:
                    raise SystemExit(f"the citywatch process read all {events} events before its clock "
                                     "started (it starts once partitions are assigned): use more --events")
                rates["citywatch"].append(float(run["events_per_s"]))
                print(f"kafka {workload} round {r + 1}: raw consumer {rates['raw'][-1]:,.0f}/s, "
                      f"citywatch process {rates['citywatch'][-1]:,.0f}/s", flush=True)
            medians = {name: median(values) for name, values in rates.items()}
            results[workload] = {"rates": rates, "median": medians,
                                 "citywatch/raw": round(medians["citywatch"] / medians["raw"], 2)}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="messages per system and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--node-red", type=Path,
                        default=Path(os.environ.get("NODE_RED_DIR", REPO / ".node-red")),
                        help="where Node-RED is installed (node_modules/.bin/node-red)")
    parser.add_argument("--skip-kafka", action="store_true", help="only the embedded comparison")
    parser.add_argument("--skip-embedded", action="store_true", help="only the Kafka comparison")
    args = parser.parse_args()

    print(f"machine: {machine()}", flush=True)
    result: dict[str, Any] = {"machine": machine()}
    if not args.skip_embedded:
        embedded = embedded_side_by_side(args.events, args.rounds, args.node_red)
        result["embedded"] = embedded
        if embedded is not None:
            m = embedded["median"]
            print("\n| system | median events/s | citywatch ratio |\n|---|---|---|")
            print(f"| Node-RED (mqtt in -> function -> mqtt out) | {m['nodered']:,.0f} "
                  f"| citywatch/Node-RED **{embedded['citywatch/nodered']}** |")
            print(f"| citywatch up (full catalogue, SQLite) | {m['citywatch']:,.0f} | |")
            print(f"| paho subscriber, count only | {m['paho']:,.0f} "
                  f"| citywatch/paho **{embedded['citywatch/paho']}** |", flush=True)
    if not args.skip_kafka:
        kafka = kafka_side_by_side(args.events, args.rounds)
        result["kafka"] = kafka
        print("\n| feed | raw consumer median/s | citywatch process median/s | citywatch/raw |")
        print("|---|---|---|---|")
        for workload, row in kafka.items():
            print(f"| {workload} | {row['median']['raw']:,.0f} | {row['median']['citywatch']:,.0f} "
                  f"| **{row['citywatch/raw']}** |", flush=True)
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "peers.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
