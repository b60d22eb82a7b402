"""The relational state shared by api replicas: keys, audit log, webhooks and devices opened twice on one
database, as two replicas do (SQLite: one data directory; PostgreSQL: a directory each, as on two hosts).
Plus what only PostgreSQL has: replicas creating the tables at once, an unreachable server, and
`citywatch keys create` against it."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from api.access.audit import AuditLog
from api.access.keys import CACHE_TTL_S, KeyStore, Scope, open_access_db
from api.alerts.filters import ViolationFilter
from api.alerts.webhooks.store import NewDelivery, WebhookStore
from core.settings import DeviceSettings, PostgresSettings, RelationalKind, RelationalSettings
from ingest.device_admin import DeviceManager
from ingest.registry import DeviceRegistry
from store.relational import Database, RelationalError
from tests.support.alerts import alert_api, bearer
from tests.support.postgres import PASSWORD, PostgresServer
from tests.support.process import REPO, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def data_dirs(tmp_path: Path, relational: RelationalSettings) -> tuple[Path, Path]:
    """The data directories of replicas A and B: shared with SQLite, separate with PostgreSQL."""
    if relational.kind is RelationalKind.SQLITE:
        return tmp_path, tmp_path
    return tmp_path / "a", tmp_path / "b"


@pytest.fixture
def opened() -> Iterator[Callable[[Any], Any]]:
    """Closes what a test opened (stores, databases, managers), also when it fails."""
    things: list[Any] = []

    def keep(thing: Any) -> Any:
        things.append(thing)
        return thing

    yield keep
    for thing in reversed(things):
        thing.close()


def test_a_key_created_on_one_replica_is_accepted_by_another_at_once_and_revoked_within_the_ttl(
        relational: RelationalSettings, data_dirs: tuple[Path, Path], opened: Callable[[Any], Any]) -> None:
    clock = Clock()
    a = KeyStore(opened(open_access_db(data_dirs[0], relational)), clock=clock)
    b = KeyStore(opened(open_access_db(data_dirs[1], relational)), clock=clock)
    key, token = a.create("dispatch", frozenset({Scope.VIOLATIONS_READ}))
    accepted = b.verify(token)
    assert accepted is not None and accepted.key_id == key.key_id
    assert accepted.scopes == frozenset({Scope.VIOLATIONS_READ})
    assert [k.key_id for k in b.list()] == [key.key_id]

    assert a.revoke(key.key_id)
    assert a.verify(token) is None  # at once where it was revoked
    clock.now_s += CACHE_TTL_S - 1
    assert b.verify(token) is not None  # B still has it cached ...
    clock.now_s += 1
    assert b.verify(token) is None  # ... for CACHE_TTL_S at most
    assert not b.revoke(key.key_id)  # already revoked, through A
    assert [k.revoked for k in b.list()] == [True]


def test_the_last_admin_key_cannot_be_revoked_through_another_replica_either(
        relational: RelationalSettings, data_dirs: tuple[Path, Path], opened: Callable[[Any], Any]) -> None:
    from api.access.keys import LastAdminKey

    a = KeyStore(opened(open_access_db(data_dirs[0], relational)))
    b = KeyStore(opened(open_access_db(data_dirs[1], relational)))
    first, _ = a.create("admin 1", frozenset({Scope.ADMIN}))
    second, _ = b.create("admin 2", frozenset({Scope.ADMIN}))
    assert a.revoke(first.key_id, keep_an_admin=True)
    with pytest.raises(LastAdminKey, match=f"key {second.key_id} is the last active admin key"):
        b.revoke(second.key_id, keep_an_admin=True)


def test_two_replicas_revoking_the_last_two_admin_keys_at_once_leave_one(
        relational: RelationalSettings, data_dirs: tuple[Path, Path], opened: Callable[[Any], Any]) -> None:
    from api.access.keys import LastAdminKey

    def revoke(replica: KeyStore, key_id: str, start: threading.Barrier, outcomes: list[str]) -> None:
        start.wait()
        try:
            outcomes.append("revoked" if replica.revoke(key_id, keep_an_admin=True) else "absent")
        except LastAdminKey:
            outcomes.append("refused")

    replicas = [KeyStore(opened(open_access_db(data_dir, relational))) for data_dir in data_dirs]
    for _ in range(10):
        admins = [replica.create("admin", frozenset({Scope.ADMIN}))[0] for replica in replicas]
        outcomes: list[str] = []
        start = threading.Barrier(2)
        threads = [threading.Thread(target=revoke, args=(replica, admin.key_id, start, outcomes))
                   for replica, admin in zip(replicas, admins, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["refused", "revoked"]
        assert len([k for k in replicas[0].list() if not k.revoked]) == 1
        # The survivor is revoked through the CLI's path (no last-admin check) before the next round.
        [survivor] = [k for k in replicas[0].list() if not k.revoked]
        assert replicas[0].revoke(survivor.key_id)


def test_the_audit_log_holds_the_records_of_every_replica_newest_first(
        relational: RelationalSettings, data_dirs: tuple[Path, Path], opened: Callable[[Any], Any]) -> None:
    a = AuditLog(opened(open_access_db(data_dirs[0], relational)))
    b = AuditLog(opened(open_access_db(data_dirs[1], relational)))
    a.record("k1", "GET /v1/violations", "plates of v0001")
    b.record("k2", "GET /v1/violations", "plates of v0002")
    a.record("k1", "GET /v1/exports/violations.csv", "plates of v0003")
    assert [r.what for r in b.query()] == ["plates of v0003", "plates of v0002", "plates of v0001"]
    assert [r.what for r in a.query(key_id="k1")] == ["plates of v0003", "plates of v0001"]
    newest = b.query(limit=1)[0]
    assert [r.what for r in a.query(before_id=newest.id)] == ["plates of v0002", "plates of v0001"]


def test_a_delivery_is_inserted_by_one_replica_only_when_both_fan_out_the_same_change(
        relational: RelationalSettings, data_dirs: tuple[Path, Path], opened: Callable[[Any], Any]) -> None:
    a = opened(WebhookStore.open(relational, data_dirs[0]))
    b = opened(WebhookStore.open(relational, data_dirs[1]))
    subscription = a.create_subscription(url="https://hooks.example/a", filter=ViolationFilter(), secret=None,
                                         description="", owner_key_id="k1", plates=False)
    assert b.subscription(subscription.subscription_id) == subscription
    changes = [NewDelivery(subscription.subscription_id, f"v{n:04d}:open:1", f"{n}-1", b"{}")
               for n in range(50)]
    created: dict[str, list[str]] = {}
    start = threading.Barrier(2)

    def fan_out(name: str, store: WebhookStore) -> None:
        start.wait()
        created[name] = [d.idempotency_key for d in store.add_deliveries(changes)]

    threads = [threading.Thread(target=fan_out, args=(name, store)) for name, store in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Every change is queued exactly once, by whichever replica inserted its row first.
    assert sorted(created["a"] + created["b"]) == sorted(c.idempotency_key for c in changes)
    assert len(b.pending()) == 50


def test_deliveries_added_in_one_batch_keep_their_order_and_skip_what_was_stored(
        relational: RelationalSettings, data_dirs: tuple[Path, Path], opened: Callable[[Any], Any]) -> None:
    store = opened(WebhookStore.open(relational, data_dirs[0]))
    first, second = (store.create_subscription(url=f"https://hooks.example/{n}", filter=ViolationFilter(),
                                               secret=None, description="", owner_key_id="k1", plates=False)
                     for n in range(2))
    # More rows than one statement takes, each change for both subscriptions, one change given twice, and
    # ten changes stored before.
    changes = [NewDelivery(subscription.subscription_id, f"v{n:04d}:open:1", f"{n}-1", b"{}")
               for n in range(700) for subscription in (first, second)]
    store.add_deliveries(changes[100:120])
    created = store.add_deliveries([*changes, changes[900]])
    expected = changes[:100] + changes[120:]
    assert [(d.subscription_id, d.idempotency_key) for d in created] == \
        [(c.subscription_id, c.idempotency_key) for c in expected]
    assert [d.delivery_id for d in created] == sorted(d.delivery_id for d in created)
    assert len({d.delivery_id for d in created}) == len(expected)
    assert len(store.pending()) == 1400


def test_a_device_registered_through_one_replica_is_in_the_others_table(
        relational: RelationalSettings, data_dirs: tuple[Path, Path], opened: Callable[[Any], Any]) -> None:
    config = [DeviceSettings(device_id="bin-1", kind="bin")]
    a = opened(DeviceManager.open(data_dirs[0], DeviceRegistry(), config, relational=relational))
    registry_b = DeviceRegistry()
    b = opened(DeviceManager.open(data_dirs[1], registry_b, config, relational=relational))
    created = a.create(DeviceSettings(device_id="cam-9", kind="track"))
    # Live, B hears of it from the devices topic (DeviceManager.apply); a replica that starts later
    # reads it from the shared table.
    b.apply(created)
    assert b.get("cam-9") == created and registry_b.get("cam-9") is not None
    registry_c = DeviceRegistry()
    opened(DeviceManager.open(data_dirs[1], registry_c, config, relational=relational))
    device = registry_c.get("cam-9")
    assert device is not None and device.kind == "track"


# PostgreSQL only


def test_replicas_starting_together_create_the_tables_once(postgres: PostgresSettings) -> None:
    relational = RelationalSettings(kind=RelationalKind.POSTGRESQL, postgresql=postgres)
    errors: list[BaseException] = []
    databases: list[Database] = []
    start = threading.Barrier(6)

    def replica(index: int) -> None:
        start.wait()
        try:
            databases.append(open_access_db(Path("unused"), relational))
            WebhookStore.open(relational, Path("unused")).close()
            DeviceManager.open(Path("unused"), DeviceRegistry(), [], relational=relational).close()
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        KeyStore(databases[0]).create("works", frozenset({Scope.ADMIN}))
        assert len(KeyStore(databases[-1]).list()) == 1
    finally:
        for database in databases:
            database.close()
    assert not Path("unused").exists()  # nothing is written to a data directory


def test_an_unreachable_server_is_named_without_its_password() -> None:
    settings = PostgresSettings(host="127.0.0.1", port=free_port(), password="s3cret-pw", connect_timeout_s=1)
    relational = RelationalSettings(kind=RelationalKind.POSTGRESQL, postgresql=settings)
    with pytest.raises(RelationalError) as raised:
        open_access_db(Path("unused"), relational)
    message = str(raised.value)
    assert message.startswith(f"PostgreSQL at postgresql://citywatch@127.0.0.1:{settings.port}/citywatch "
                              "could not be reached within 1 s (relational.postgresql): ")
    assert "s3cret-pw" not in message


def test_a_refused_password_is_reported_without_the_password(postgres: PostgresSettings) -> None:
    wrong = postgres.model_copy(update={"password": SecretStr("s3cret-pw"), "connect_timeout_s": 1.0})
    with pytest.raises(RelationalError) as raised:
        open_access_db(Path("unused"), RelationalSettings(kind=RelationalKind.POSTGRESQL, postgresql=wrong))
    message = str(raised.value)
    prefix = f"PostgreSQL at {postgres.describe()} could not be reached within 1 s (relational.postgresql): "
    # After citywatch's words, the server's reason (here: the password), which says more than a timeout.
    assert message.startswith(prefix) and len(message) > len(prefix) and "s3cret-pw" not in message


def test_the_api_answers_503_while_postgresql_is_down_and_recovers_after(tmp_path: Path) -> None:
    server = PostgresServer()
    try:
        database = server.start().create_database().model_copy(update={"connect_timeout_s": 1.0})
        api = alert_api(tmp_path, relational=RelationalSettings(kind=RelationalKind.POSTGRESQL,
                                                                postgresql=database))
        try:
            client = api.client()
            before, during, after = (api.key(Scope.VIOLATIONS_READ) for _ in range(3))
            assert client.get("/v1/violations", headers=bearer(before)).status_code == 200
            server.stop()
            down = client.get("/v1/violations", headers=bearer(during))
            assert down.status_code == 503 and down.headers["retry-after"] == "5"
            assert down.json()["type"] == "urn:citywatch:problem:unavailable"
            assert down.json()["detail"] == ("the database of keys, subscriptions and devices cannot be "
                                             "reached; retry after 5 s")
            server.start()
            # A key never seen before: read through a new connection (the broken ones were dropped) once
            # the pool's next reconnection attempt (1 s, 2 s, 4 s ... apart) found the server back.
            wait_for(lambda: client.get("/v1/violations", headers=bearer(after)).status_code == 200, 30,
                     message="the API to use PostgreSQL again")
        finally:
            api.close()
    finally:
        server.remove()


def test_keys_create_works_against_postgresql(tmp_path: Path, postgres_server: PostgresServer,
                                              postgres: PostgresSettings) -> None:
    config = tmp_path / "citywatch.yaml"
    config.write_text(yaml.safe_dump({"store": {"data_dir": str(tmp_path / "data")}}))
    password_file = tmp_path / "pg-password"
    password_file.write_text(PASSWORD + "\n")
    environment = {"PATH": "/usr/bin:/bin", "CITYWATCH_RELATIONAL__KIND": "postgresql",
                   "CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD_FILE": str(password_file),
                   "CITYWATCH_RELATIONAL__POSTGRESQL__PORT": str(postgres.port),
                   "CITYWATCH_RELATIONAL__POSTGRESQL__DATABASE": postgres.database,
                   "CITYWATCH_RELATIONAL__POSTGRESQL__SSLMODE": "disable"}
    out = subprocess.run([sys.executable, "-m", "citywatch.cli", "keys", "--config", str(config), "create",
                          "--name", "ops", "--scopes", "admin"], cwd=REPO, check=True, capture_output=True,
                         text=True, env=environment, timeout=60).stdout
    token = out.split("token (shown once, only its hash is stored): ")[1].strip()
    database = open_access_db(tmp_path, RelationalSettings(kind=RelationalKind.POSTGRESQL,
                                                           postgresql=postgres))
    try:
        key = KeyStore(database).verify(token)
    finally:
        database.close()
    assert key is not None and key.name == "ops" and key.scopes == frozenset({Scope.ADMIN})
    assert not (tmp_path / "data").exists()  # nothing on the api's disk

    listed = subprocess.run([sys.executable, "-m", "citywatch.cli", "keys", "--config", str(config), "list"],
                            cwd=REPO, check=True, capture_output=True, text=True, env=environment,
                            timeout=60).stdout
    assert key.key_id in listed and "active" in listed

    environment["CITYWATCH_RELATIONAL__POSTGRESQL__PORT"] = str(free_port())
    del environment["CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD_FILE"]
    environment["CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD"] = "s3cret-pw"
    environment["CITYWATCH_RELATIONAL__POSTGRESQL__CONNECT_TIMEOUT_S"] = "1"
    down = subprocess.run([sys.executable, "-m", "citywatch.cli", "keys", "--config", str(config), "list"],
                          cwd=REPO, capture_output=True, text=True, env=environment, timeout=60)
    assert down.returncode == 1
    assert "citywatch: PostgreSQL at postgresql://citywatch@127.0.0.1:" in down.stderr
    assert "could not be reached within 1 s" in down.stderr
    assert "s3cret-pw" not in down.stderr + down.stdout


def test_the_api_role_stops_at_start_when_its_database_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "citywatch.yaml"
    config.write_text(yaml.safe_dump({
        "bus": {"kind": "kafka", "kafka": {"bootstrap_servers": [f"127.0.0.1:{free_port()}"]}},
        "store": {"data_dir": str(tmp_path / "data")},
        "relational": {"kind": "postgresql", "postgresql": {"port": free_port(), "password": "s3cret-pw",
                                                            "connect_timeout_s": 1}},
    }))
    started = subprocess.run([sys.executable, "-m", "citywatch.cli", "api", "--config", str(config)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert started.stderr.splitlines()[-1].startswith("citywatch: PostgreSQL at postgresql://citywatch@")
    assert "Traceback" not in started.stderr and "s3cret-pw" not in started.stderr + started.stdout
