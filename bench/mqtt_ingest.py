"""CPU per message at the MQTT boundary: `MqttSource` with manual acknowledgements, alone.

One Mosquitto queues `--messages` QoS 1 messages for a persistent session while its subscriber is away;
then `MqttSource` reconnects and settles each message as it is handed over (what the embedded mode's
in-process bus does), and the run measures this process's CPU time (`time.process_time`: every thread,
and not inflated by waiting for a core) and the wall time until all are settled and acknowledged.
The broker is another process, so its own cost is not in the figure; its CPU time is printed beside it
(acknowledgements sent one by one cost it a read each).

    .venv/bin/python -m bench.mqtt_ingest --messages 50000 --repeats 3
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ingest.embedded_broker import find_mosquitto, free_port, wait_for_port
from ingest.mqtt_source import MqttSource, Settle

TOPIC = "bench/ingest"


def broker_cpu_s(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc (clock ticks of 1/100 s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def one_run(port: int, broker_pid: int, messages: int, feed: Path) -> dict[str, float]:
    client_id = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    handed = 0

    def settle_at_once(topic: str, payload: bytes, received_time_ms: int, settle: Settle) -> None:
        nonlocal handed
        settle(True)
        handed += 1
        if handed == messages:
            done.set()

    def source() -> MqttSource:
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
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", TOPIC, "-l"],
                   stdin=feed.open("rb"), check=True)
    time.sleep(0.5)  # the broker has taken the last ones in

    second = source()
    cpu_start, wall_start, broker_start = time.process_time(), time.monotonic(), broker_cpu_s(broker_pid)
    second.start()
    if not done.wait(300):
        raise SystemExit(f"only {handed} of {messages} messages arrived")
    while second.unacked:
        time.sleep(0.001)
    cpu_s, wall_s = time.process_time() - cpu_start, time.monotonic() - wall_start
    broker_s = broker_cpu_s(broker_pid) - broker_start
    second.stop()
    return {"cpu_us": cpu_s / messages * 1e6, "rate": messages / wall_s,
            "broker_cpu_us": broker_s / messages * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
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
        feed.write_text("".join(f'{{"n": {i}, "fill_pct": 42.5}}\n' for i in range(args.messages)))
        broker = subprocess.Popen([mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            if not wait_for_port("127.0.0.1", port, 10, alive=lambda: broker.poll() is None):
                raise SystemExit("the benchmark's mosquitto did not start")
            for repeat in range(1, args.repeats + 1):
                run = one_run(port, broker.pid, args.messages, feed)
                print(f"run {repeat}: {run['cpu_us']:.1f} us of CPU per message here, "
                      f"{run['broker_cpu_us']:.1f} us in Mosquitto; {run['rate']:,.0f} messages/s")
        finally:
            broker.terminate()
            broker.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
