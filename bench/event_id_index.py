"""What the events table's unique index on `event_id` costs SQLite per insert as the table grows.

A table with store/sqlite_store.py's event indexes (by time, by device, by kind) and its connection
settings (WAL, synchronous NORMAL, 64 MB cache), filled 500 rows a transaction from 1,000 devices, with
and without `UNIQUE` on `event_id`; event ids are 128-bit hashes as the codecs make them, so each insert
lands on a random page of that index. Prints microseconds per event for each eighth of the rows.

    .venv/bin/python -m bench.event_id_index --rows 3000000 unique
    .venv/bin/python -m bench.event_id_index --rows 3000000 none
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import tempfile
import time
from pathlib import Path

BATCH = 500
DEVICES = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", choices=["unique", "none"])
    parser.add_argument("--rows", type=int, default=3_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citywatch-bench-event-ids-") as directory:
        path = Path(directory) / "events.db"
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536", "temp_store=MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        unique = "UNIQUE" if args.index == "unique" else ""
        conn.execute(f"CREATE TABLE events (event_id TEXT NOT NULL {unique}, device_id TEXT NOT NULL, "
                     "kind TEXT NOT NULL, event_time_ms INTEGER NOT NULL, attributes TEXT NOT NULL)")
        conn.execute("CREATE INDEX events_by_time ON events (event_time_ms, event_id)")
        conn.execute("CREATE INDEX events_by_device ON events (device_id, event_time_ms, event_id)")
        conn.execute("CREATE INDEX events_by_kind ON events (kind, event_time_ms, event_id)")
        attributes = json.dumps({"fill_pct": 50.0, "sent_ns": 0, "seq": 0})
        report_every = max(BATCH, args.rows // 8 // BATCH * BATCH)
        n = 0
        started = time.perf_counter()
        while n < args.rows:
            rows = []
            for _ in range(BATCH):
                device = f"bench-{n % DEVICES:05d}"
                event_time_ms = 1_700_000_000_000 + n // 2
                event_id = hashlib.blake2b(f"{device}\x1f{event_time_ms}\x1f{n}".encode(),
                                           digest_size=16).hexdigest()
                rows.append((event_id, device, "bin", event_time_ms, attributes))
                n += 1
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events VALUES (?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            if n % report_every == 0:
                now = time.perf_counter()
                size_mb = sum(f.stat().st_size for f in Path(directory).iterdir()) / 1e6
                per_event_us = (now - started) / report_every * 1e6
                print(f"{args.index}: {n / 1e6:.2f}M rows: {per_event_us:.1f} us/event, database and WAL "
                      f"{size_mb:.0f} MB", flush=True)
                started = now
        conn.close()


if __name__ == "__main__":
    main()
