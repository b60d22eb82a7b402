"""A webhook store written before secret rotation and attempt timings existed opens with its
subscriptions and deliveries intact, gains the new columns, and loses the receivers' answers that its
errors used to quote."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from api.alerts.webhooks.store import DeliveryStatus, WebhookStore

OLD_SCHEMA = """
CREATE TABLE subscriptions (
    subscription_id TEXT PRIMARY KEY, url TEXT NOT NULL, filter TEXT NOT NULL, secret TEXT NOT NULL,
    description TEXT NOT NULL, owner_key_id TEXT NOT NULL, plates INTEGER NOT NULL, enabled INTEGER NOT NULL,
    disabled_reason TEXT, created_time_ms INTEGER NOT NULL
);
CREATE TABLE deliveries (
    delivery_id INTEGER PRIMARY KEY AUTOINCREMENT, subscription_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL, change_id TEXT NOT NULL, body BLOB NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_status_code INTEGER, last_error TEXT,
    created_time_ms INTEGER NOT NULL, updated_time_ms INTEGER NOT NULL,
    UNIQUE (subscription_id, idempotency_key)
);
INSERT INTO subscriptions
    VALUES ('s1', 'https://hooks.example/a', '{}', 'whsec_old', '', 'k1', 0, 0,
            'disabled after 20 failed attempts in a row; last error: HTTP 503: {"token": "internal"}', 1);
INSERT INTO deliveries (subscription_id, idempotency_key, change_id, body, status, attempts,
                        last_status_code, last_error, created_time_ms, updated_time_ms)
    VALUES ('s1', 'v1:open:1', '1-1', X'7B7D', 'dead', 8, 503, 'HTTP 503: {"token": "internal"}', 1, 2);
"""


def test_an_older_store_opens_and_gains_the_new_columns(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "webhooks.sqlite3") as old:
        old.executescript(OLD_SCHEMA)
    store = WebhookStore.in_directory(tmp_path)
    try:
        [subscription] = store.subscriptions()
        assert subscription.secret == "whsec_old" and subscription.previous_secret is None
        [delivery] = store.deliveries("s1")
        assert delivery.status is DeliveryStatus.DEAD and delivery.last_duration_ms is None
        assert delivery.body == b"{}"  # kept in its own row, as written before bodies were shared
        assert delivery.last_error == "HTTP 503"
        assert subscription.disabled_reason == ("disabled after 20 failed attempts in a row; "
                                                "last error: HTTP 503")

        rotated = store.rotate_secret("s1", secret=None, grace_ms=60_000)
        assert rotated is not None and rotated.previous_secret == "whsec_old"
        assert rotated.signing_secrets(rotated.created_time_ms) == [rotated.secret, "whsec_old"]
        assert rotated.previous_secret_expires_time_ms is not None
        assert rotated.signing_secrets(rotated.previous_secret_expires_time_ms) == [rotated.secret]
    finally:
        store.close()
    WebhookStore.in_directory(tmp_path).close()  # opening again adds nothing twice
