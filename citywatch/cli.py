"""The `citywatch` command."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.log_format import LOG_FORMATS, configure_logging, json_logs_on
from core.redaction import redact_url
from core.settings import BusKind, ConfigError, Settings, config_path, environment_values, load_settings
from core.settings_env import describe as describe_environment
from store.relational import RelationalError

if TYPE_CHECKING:
    from api.access.keys import KeyStore


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    overrides = {}
    if getattr(args, "mqtt_url", None):
        overrides["mqtt__url"] = args.mqtt_url
    if getattr(args, "data_dir", None):
        overrides["store__data_dir"] = args.data_dir
    if getattr(args, "host", None):
        overrides["api__host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["api__port"] = args.port
    if getattr(args, "status_port", None) is not None:
        overrides["roles__status_port"] = args.status_port
    if getattr(args, "bootstrap_servers", None):
        overrides["bus__kafka__bootstrap_servers"] = args.bootstrap_servers.split(",")
    if overrides:
        settings = settings.with_overrides(source="the command-line options", **overrides)
    configure_logging(args.log_level, getattr(args, "log_format", None) or settings.logging.format)
    return settings


GRACEFUL_SHUTDOWN_S = 5


def _serve(app: Any, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from citywatch.interpreter_tuning import tune_for_streaming

    tune_for_streaming()

    # uvicorn turns SIGINT/SIGTERM into the app's lifespan shutdown, which stops and flushes the pipeline,
    # then raises the signal again for the previous handler: make that a no-op so a clean stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    # Live streams (SSE, WebSocket) never end on their own: without a bound, one connected client would
    # hold the shutdown (and the pipeline's clean stop) until the service manager kills the process.
    # With JSON logs, uvicorn's loggers hand their records to the JSON handler instead of their own.
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(),
                log_config=None if json_logs_on() else uvicorn.config.LOGGING_CONFIG,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def cmd_ingest(args: argparse.Namespace) -> int:
    from api.status_app import create_status_app
    from citywatch.roles import IngestRole

    settings = _load(args)
    role = IngestRole(settings)
    roles = settings.roles
    broker = redact_url(settings.mqtt.url or "")
    print(f"citywatch ingest: {broker} -> Kafka {','.join(role.kafka.bootstrap_servers)}; "
          f"status on http://{roles.status_host}:{roles.status_port}/v1/status", flush=True)
    _serve(create_status_app(role.services(), "citywatch ingest"), roles.status_host, roles.status_port,
           args.log_level)
    print("citywatch ingest: stopped cleanly", flush=True)
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    import os
    import socket

    from api.status_app import create_status_app
    from citywatch.roles import ProcessRole

    settings = _load(args)
    # Unique per instance, so the group and the logs tell replicas apart.
    client_id = args.client_id or f"citywatch-process-{socket.gethostname()}-{os.getpid()}"
    role = ProcessRole(settings, client_id=client_id)
    roles = settings.roles
    print(f"citywatch process: group {role.kafka.group_id} on Kafka "
          f"{','.join(role.kafka.bootstrap_servers)}; "
          f"status on http://{roles.status_host}:{roles.status_port}/v1/status", flush=True)
    _serve(create_status_app(role.services(), "citywatch process"), roles.status_host, roles.status_port,
           args.log_level)
    if role.failed is not None:
        print(f"citywatch process: stopped on an error: {role.failed!r}", file=sys.stderr, flush=True)
        return 1
    print("citywatch process: stopped cleanly", flush=True)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from api.app import create_app
    from citywatch.roles import ApiRole

    settings = _load(args)
    role = ApiRole(settings)
    api = settings.api
    print(f"citywatch api: http://{api.host}:{api.port} (status at /v1/status)", flush=True)
    _serve(create_app(role.services()), api.host, api.port, args.log_level)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from api.app import create_app
    from citywatch.runtime import EmbeddedRuntime

    settings = _load(args)
    if settings.bus.kind == BusKind.KAFKA:
        # Every role in this one process, joined by Kafka: the city set-up tried on one machine.
        from citywatch.roles import KafkaUpRuntime

        if args.simulate:
            raise ConfigError("--simulate runs with the in-process bus only; publish with "
                              "`citywatch simulate` to try the Kafka set-up")
        app = create_app(KafkaUpRuntime(settings).api_services())
    else:
        app = create_app(EmbeddedRuntime(settings, simulate=args.simulate).api_services())
    api = settings.api
    print(f"citywatch: API on http://{api.host}:{api.port} (violations at /v1/violations, docs at /docs);"
          f" data in {settings.store.data_dir}/; Ctrl-C stops cleanly.", flush=True)
    _serve(app, api.host, api.port, args.log_level)
    print("citywatch: stopped cleanly", flush=True)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from citywatch.mqtt_publisher import MqttPublisher
    from citywatch.simulation import FeedGenerator, Simulator

    settings = _load(args)
    publisher = MqttPublisher(args.mqtt_url, "citywatch-simulator").connect()
    generator = FeedGenerator(settings.devices, settings.simulator, settings.traffic)
    simulator = Simulator(generator, publisher.publish, settings.simulator.interval_s)
    simulator.start()
    try:
        deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
        publisher.close()
    print(f"published {simulator.published} messages")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import msgspec

    from citywatch.replay import Replayer, ReplayError, read_recording
    from store.sqlite_store import SqliteStore

    settings = _load(args)
    if args.speed is not None and args.speed <= 0:
        raise ConfigError(f"--speed must be above 0, got {args.speed}")
    store = SqliteStore.in_directory(args.store) if args.store else None
    output = sys.stdout.buffer if args.out is None or str(args.out) == "-" else args.out.open("wb")
    encoder = msgspec.json.Encoder()

    def write(violations: list) -> None:
        for violation in violations:
            output.write(encoder.encode(violation) + b"\n")

    try:
        result = Replayer(settings, store=store).run(read_recording(args.file), speed=args.speed,
                                                     on_violations=None if args.quiet else write)
    except ReplayError as exc:
        print(f"citywatch: {exc}", file=sys.stderr)
        return 2
    finally:
        output.flush()
        if output is not sys.stdout.buffer:
            output.close()
        if store is not None:
            store.close()
    print(result.summary(), file=sys.stderr)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from citywatch.config_findings import Severity, find
    from ingest.geo import GeoError, GeoTagger

    settings = _load(args)
    try:
        # The polygons are configuration too: a broken GeoJSON file must fail here, not at start.
        GeoTagger.from_settings(settings.geo)
    except GeoError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"{config_path(args.config)}: valid ({len(settings.devices)} devices, "
          f"{len(settings.vendor_maps)} vendor maps)")
    from_environment = environment_values()
    if from_environment:
        # Where each value that is not the file's came from; secrets as **********, never a file's content.
        print("set by the environment, over the file:")
        print("\n".join(describe_environment(settings, from_environment)))
    # What loads but drops or hides data (citywatch/config_findings.py, docs/configuration.md).
    findings = find(settings)
    for finding in findings:
        print(finding)
    counts = {severity: sum(finding.severity is severity for finding in findings) for severity in Severity}
    if findings:
        print(", ".join(f"{n} {severity}{'' if n == 1 else 's'}" for severity, n in counts.items()))
    failing = counts[Severity.ERROR] + (counts[Severity.WARNING] if args.strict else 0)
    return 1 if failing else 0


def cmd_keys(args: argparse.Namespace) -> int:
    from api.access.keys import KeyStore, open_access_db

    settings = _load(args)
    database = open_access_db(Path(settings.store.data_dir), settings.relational)
    try:
        return _keys_command(args, KeyStore(database))
    finally:
        database.close()


def _keys_command(args: argparse.Namespace, keys: KeyStore) -> int:
    from api.access.keys import Scope

    if args.keys_command == "create":
        try:
            scopes = frozenset(Scope(scope) for scope in args.scopes.replace(",", " ").split())
        except ValueError as exc:
            print(f"citywatch: {exc}; scopes are {', '.join(s.value for s in Scope)}", file=sys.stderr)
            return 2
        key, token = keys.create(args.name, scopes)
        print(f"key {key.key_id} ({args.name}) with scopes {' '.join(sorted(scopes))}")
        print(f"token (shown once, only its hash is stored): {token}")
    elif args.keys_command == "list":
        for key in keys.list():
            state = "revoked" if key.revoked else "active"
            print(f"{key.key_id}  {state:8}  {' '.join(sorted(key.scopes)):60}  {key.name}")
    else:
        if not keys.revoke(args.key_id):
            print(f"citywatch: no active key {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"key {args.key_id} revoked")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citywatch", description="Urban sensor ingestion and rules.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default=None, choices=LOG_FORMATS,
                        help="text (default) or json: one JSON object per line (overrides logging.format).")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", type=Path, default=None,
                         help="YAML configuration (default: $CITYWATCH_CONFIG, else configs/citywatch.yaml); "
                              "CITYWATCH_<SECTION>__<KEY> variables override it (docs/configuration.md)")
        return sub

    up = with_config(commands.add_parser("up", help="Run everything in one process (embedded defaults)."))
    up.add_argument("--mqtt-url", help="Use this broker (mqtt://host:port) instead of an embedded one.")
    up.add_argument("--simulate", action="store_true", help="Also publish a simulated district feed.")
    up.add_argument("--data-dir", type=Path, help="Where the embedded store keeps its files.")
    up.add_argument("--host", help="API listen address.")
    up.add_argument("--port", type=int, help="API listen port.")
    up.set_defaults(handler=cmd_up)

    def with_kafka(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--bootstrap-servers", help="Kafka brokers host:port[,host:port] (bus.kafka).")
        return with_config(sub)

    ingest = with_kafka(commands.add_parser("ingest", help="Role: MQTT in, normalised events to Kafka."))
    ingest.add_argument("--mqtt-url", help="Broker to subscribe to, mqtt://host:port (mqtt.url).")
    ingest.add_argument("--status-port", type=int, help="Port of /healthz, /readyz, /metrics, /v1/status.")
    ingest.set_defaults(handler=cmd_ingest)

    process = with_kafka(commands.add_parser(
        "process", help="Role: a member of the processor group (run one per partition at most)."))
    process.add_argument("--data-dir", type=Path, help="Where the embedded store keeps its files.")
    process.add_argument("--status-port", type=int, help="Port of /healthz, /readyz, /metrics, /v1/status.")
    process.add_argument("--client-id", help="Kafka client id of this instance (default: host and pid).")
    process.set_defaults(handler=cmd_process)

    api_cmd = with_kafka(commands.add_parser("api", help="Role: the HTTP API, with the group's lag."))
    api_cmd.add_argument("--data-dir", type=Path, help="Where the embedded store keeps its files.")
    api_cmd.add_argument("--host", help="API listen address.")
    api_cmd.add_argument("--port", type=int, help="API listen port.")
    api_cmd.set_defaults(handler=cmd_api)

    sim = with_config(commands.add_parser("simulate", help="Publish the simulated feed to a broker."))
    sim.add_argument("--mqtt-url", required=True, help="Broker to publish to, mqtt://host:port.")
    sim.add_argument("--duration-s", type=float, default=None, help="Stop after this many seconds.")
    sim.set_defaults(handler=cmd_simulate)

    keys = with_config(commands.add_parser("keys", help="Create, list or revoke API keys."))
    keys.add_argument("--data-dir", type=Path, help="Data directory (default: store.data_dir).")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="Create a key and print its token once.")
    create.add_argument("--name", required=True, help="Who or what uses the key.")
    create.add_argument("--scopes", required=True,
                        help="Comma-separated: violations:read, violations:write, readings:read, "
                             "devices:manage, subscriptions:manage, plates, metrics:read, cases:read, "
                             "cases:write, dispatch:write, admin.")
    keys_commands.add_parser("list", help="List keys (never their tokens).")
    revoke = keys_commands.add_parser("revoke", help="Revoke a key.")
    revoke.add_argument("key_id")
    keys.set_defaults(handler=cmd_keys)

    replay = with_config(commands.add_parser(
        "replay", help="Run a recorded feed (JSON lines of topic, payload, time) through ingest and rules."))
    replay.add_argument("file", type=Path, help="The recording: one {topic, payload, time} object a line.")
    replay.add_argument("--speed", type=float, default=None,
                        help="Play at this multiple of real time, 1 as recorded (default: as fast as "
                        "possible). Only when violations come out depends on it, never which: the engine's "
                        "clock is the recording's receive time at every speed.")
    replay.add_argument("--out", type=Path, default=None,
                        help="Write violation changes as JSON lines here (default: standard output).")
    replay.add_argument("--store", type=Path, default=None,
                        help="Also store events, violations and dead letters in this data directory.")
    replay.add_argument("--quiet", action="store_true", help="Print only the summary (on stderr).")
    replay.set_defaults(handler=cmd_replay)

    check = commands.add_parser("check-config", help="Validate a configuration file and exit; list the "
                                "values the CITYWATCH_ variables set and what would drop or hide data "
                                "(exit 1 on an error).")
    check.add_argument("config", type=Path, nargs="?", default=None)
    check.add_argument("--strict", action="store_true", help="Exit 1 on warnings too.")
    check.set_defaults(handler=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format or "text")
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"citywatch: {exc}", file=sys.stderr)
        return 2
    except RelationalError as exc:  # the keys', webhooks' or devices' database is unreachable at start
        print(f"citywatch: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
