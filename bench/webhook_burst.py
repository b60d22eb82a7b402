"""A burst of violation changes through the webhook dispatcher: how fast it drains, and its CPU per delivery.

`bench.alerts` measures delivery latency with the whole pipeline running; on its feed the bins fill in
step, so about 1,000 overflows open within a second or two and fan out to ~10,000 deliveries at once,
and the p99 there is how long that burst takes to drain. This bench measures that drain alone: one
dispatcher (api/alerts/webhooks/dispatcher.py, on its own loop thread, as the dispatcher's child process
runs it), `--subscriptions` subscriptions on `--grids` grids posting to the same local keep-alive receivers
as `bench.alerts` (their own process), one change per grid delivered first (so the connections to the
receivers are open, as in a running city; not with `--cold`), then `--changes` changes handed over at
once. It reports the deliveries per second from the hand-over to the last receiver's answer, and the CPU
time this process spent per delivery (`time.process_time`, which other tenants of a shared machine move
much less than wall time).

    .venv/bin/python -m bench.webhook_burst [--subscriptions 1000] [--changes 1000] [--cold]
                                            [--connections-per-receiver N] [--changes-per-post N]
                                            [--profile]

`--changes-per-post N` subscribes with `max_changes_per_post: N` (default 1): a subscription's changes
queued together then go in one POST, and the rate counts changes delivered. `--profile` runs the
dispatcher's loop thread under cProfile during the burst and prints the functions by their own time (the
figures are then not comparable). Results also go to bench/results/webhook-burst.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from api.access.control import AccessControl
from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.dispatcher import WebhookDispatcher
from api.alerts.webhooks.store import DeliveryStatus, WebhookStore
from bench.alerts import finish, start_clients
from bench.e2e import machine
from core.metrics import samples_of
from core.models import Evidence, Location, Severity, Violation
from core.settings import ApiSettings, AuthMode, RelationalSettings, WebhookSettings
from ingest.embedded_broker import free_port
from processors.outputs.feed import ViolationFeed

RESULTS = Path(__file__).resolve().parent / "results" / "webhook-burst.json"
T0_MS = 1_780_000_000_000


def overflow(n: int, grids: int) -> Violation:
    """A bin overflow opened on bench bin n, in grid n % grids (as bench.alerts' devices)."""
    return Violation(
        violation_id=f"burst-{n:06d}", type="bin_overflow", severity=Severity.MEDIUM,
        device_id=f"bench-{n:05d}", start_time_ms=T0_MS + n, updated_time_ms=T0_MS + n,
        location=Location(lat=22.54, lon=114.05),
        evidence=Evidence(event_ids=[f"e{n}-1", f"e{n}-2", f"e{n}-3"],
                          details={"fill_pct": [96.0, 98.0, 99.0]}),
        tags={"grid": f"G-{n % grids:03d}"})


def delivered(dispatcher: WebhookDispatcher) -> int:
    return int(sum(value for _, labels, value in samples_of(dispatcher.metrics, ("webhook_deliveries",))
                   if labels.get("outcome") == "delivered"))


def run(subscriptions: int, changes: int, grids: int, receivers: int, profile: bool,
        cold: bool, connections: int | None = None, changes_per_post: int = 1) -> dict[str, object]:
    ports = [free_port() for _ in range(receivers)]
    clients = start_clients("receivers", "--ports", ",".join(map(str, ports)))
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-burst-") as tmp:
        data_dir = Path(tmp)
        relational = RelationalSettings()
        access = AccessControl.in_directory(data_dir, ApiSettings(auth=AuthMode.DISABLED), relational)
        store = WebhookStore.open(relational, data_dir)
        feed = ViolationFeed(changes * 2)
        settings = WebhookSettings(allowed_private_networks=("127.0.0.0/8",),  # the receivers are local
                                   **({"connections_per_receiver": connections} if connections else {}))
        dispatcher = WebhookDispatcher(store, settings, feed, access)
        dispatcher.start()
        try:
            for n in range(subscriptions):
                dispatcher.create(url=f"http://127.0.0.1:{ports[n % len(ports)]}/hook/{n}",
                                  description="bench", filter=ViolationFilter(grid=(f"G-{n % grids:03d}",)),
                                  secret=None, owner_key_id="bench", plates=False,
                                  max_changes_per_post=changes_per_post)
            # First one change per grid, delivered before the burst: the receivers' connections are open,
            # as they are in a running city (the burst of bench.alerts comes after a few seconds of changes).
            warm_up = 0 if cold else grids * (subscriptions // grids)
            if warm_up:
                feed.publish([overflow(changes + n, grids) for n in range(grids)])
            while delivered(dispatcher) < warm_up:
                time.sleep(0.005)
            expected = changes * (subscriptions // grids)
            profiler = cProfile.Profile() if profile else None
            cpu_before = time.process_time()
            started = time.perf_counter()
            if profiler is not None:  # on the dispatcher's loop thread, where the deliveries are made
                dispatcher._call(profiler.enable)  # (cProfile profiles the thread that enables it)
            feed.publish([overflow(n, grids) for n in range(changes)])  # the listener hands them over
            # Watched through the dispatcher's counter, not the store: a query every few milliseconds
            # would compete with the dispatcher for the store.
            while (made := delivered(dispatcher) - warm_up) < expected:
                time.sleep(0.005)
                if time.perf_counter() - started > 300:
                    raise SystemExit(f"only {made} of {expected} delivered within 300 s")
            seconds = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_before
            if profiler is not None:
                dispatcher._call(profiler.disable)
                time.sleep(0.5)
            stored = store.count(DeliveryStatus.DELIVERED) - warm_up
        finally:
            dispatcher.stop()
            store.close()
            access.close()
            received = finish(clients)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
    return {"machine": machine(), "subscriptions": subscriptions, "changes": changes, "deliveries": expected,
            "stored_delivered": stored, "received": received["messages"], "seconds": round(seconds, 3),
            "deliveries_per_s": round(expected / seconds),
            "cpu_us_per_delivery": round(cpu_s / expected * 1e6),
            "cold": cold, "connections_per_receiver": settings.connections_per_receiver,
            "changes_per_post": changes_per_post,
            "profiled": profile}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--grids", type=int, default=100)
    parser.add_argument("--receivers", type=int, default=4, help="receiver HTTP servers (ports)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cold", action="store_true",
                        help="no change before the burst: its deliveries open the connections")
    parser.add_argument("--connections-per-receiver", type=int,
                        help="the setting of that name (default: its default)")
    parser.add_argument("--changes-per-post", type=int, default=1,
                        help="the subscriptions' max_changes_per_post")
    args = parser.parse_args()
    result = run(args.subscriptions, args.changes, args.grids, args.receivers, args.profile, args.cold,
                 args.connections_per_receiver, args.changes_per_post)
    print(f"machine: {result['machine']}")
    print(f"{result['deliveries']} deliveries of {result['changes']} changes to {result['subscriptions']} "
          f"subscriptions: {result['seconds']} s, {result['deliveries_per_s']} deliveries/s, "
          f"{result['cpu_us_per_delivery']} us of this process's CPU per delivery")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
