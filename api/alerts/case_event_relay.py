"""Case SLA events to the streams of every api replica (the Kafka set-up).

One replica publishes each SLA event from the case store's outbox (docs/cases.md, "Delivery of SLA
events") to its dispatch feed, where webhooks and the alert outputs send it once. Streams are per
replica: each replica's SSE and WebSocket clients should see every event, whichever replica claimed and
published it. The replicas share the case store, so each one reads the outbox itself, by event number,
from where it was when it started, and appends every new event to its own stream feed. An event reaches
the streams once it is claimed (committed), whether or not its hand-off to the dispatch feed happened yet;
each replica reads each number once, so its clients see an event once (a re-published duplicate of the
at-least-once hand-off is the same row, not a new one).
"""

from __future__ import annotations

import logging
import threading

from processors.cases.sla import CaseEventKind, CaseSlaEvent
from processors.outputs.feed import ViolationFeed
from store.cases import CaseStore

log = logging.getLogger(__name__)

_CHUNK = 500


class CaseEventRelay:
    def __init__(self, store: CaseStore, feed: ViolationFeed, interval_s: float) -> None:
        self.store = store
        self.feed = feed
        self.interval_s = interval_s
        self.relayed = 0
        self._seen: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="case-event-relay", daemon=True)
        self._thread.start()

    def poll(self) -> int:
        """Append the events claimed since the last poll (the first poll only notes where the outbox is:
        events from before the start are not streamed); how many were appended."""
        if self._seen is None:
            self._seen = self.store.last_event_seq()
            return 0
        appended = 0
        while True:
            stored = self.store.events_after(self._seen, _CHUNK)
            if not stored:
                return appended
            self.feed.publish_case_events([CaseSlaEvent(CaseEventKind(row.kind), row.case, row.due_ms,
                                                        row.signalled_ms) for row in stored])
            self._seen = stored[-1].seq
            appended += len(stored)
            self.relayed += len(stored)
            if len(stored) < _CHUNK:
                return appended

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # a store outage: the next pass goes on from the same number
                log.warning("case events for the streams could not be read: %s", exc)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
