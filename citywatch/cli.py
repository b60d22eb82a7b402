"""The `citywatch` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from citywatch.settings import ConfigError, Settings, load_settings


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
    try:
        return settings.with_overrides(**overrides) if overrides else settings
    except ValueError as exc:
        raise ConfigError(f"invalid command-line option: {exc}") from exc


def cmd_up(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from citywatch.runtime import EmbeddedRuntime

    settings = _load(args)
    runtime = EmbeddedRuntime(settings, simulate=args.simulate)
    app = create_app(runtime.api_services())
    api = settings.api
    print(f"citywatch: API on http://{api.host}:{api.port} (violations at /v1/violations, docs at /docs);"
          f" data in {settings.store.data_dir}/; Ctrl-C stops cleanly.", flush=True)
    # uvicorn turns SIGINT/SIGTERM into the app's lifespan shutdown, which stops and flushes the pipeline,
    # then raises the signal again for the previous handler: make that a no-op so a clean stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(app, host=api.host, port=api.port, log_level=args.log_level.lower())
    print("citywatch: stopped cleanly", flush=True)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from citywatch.mqtt_publisher import MqttPublisher
    from citywatch.simulator import FeedGenerator, Simulator

    settings = _load(args)
    publisher = MqttPublisher(args.mqtt_url, "citywatch-simulator").connect()
    simulator = Simulator(FeedGenerator(settings.devices, settings.simulator), publisher.publish,
                          settings.simulator.interval_s)
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


def cmd_check_config(args: argparse.Namespace) -> int:
    from ingest.geo import GeoError, GeoTagger

    settings = _load(args)
    try:
        # The polygons are configuration too: a broken GeoJSON file must fail here, not at start.
        GeoTagger.from_settings(settings.geo)
    except GeoError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"{args.config or 'default configuration'}: valid ({len(settings.devices)} devices, "
          f"{len(settings.vendor_maps)} vendor maps)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citywatch", description="Urban sensor ingestion and rules.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", type=Path, default=None,
                         help="YAML configuration (default: configs/citywatch.yaml)")
        return sub

    up = with_config(commands.add_parser("up", help="Run everything in one process (embedded defaults)."))
    up.add_argument("--mqtt-url", help="Use this broker (mqtt://host:port) instead of an embedded one.")
    up.add_argument("--simulate", action="store_true", help="Also publish a simulated district feed.")
    up.add_argument("--data-dir", type=Path, help="Where the embedded store keeps its files.")
    up.add_argument("--host", help="API listen address.")
    up.add_argument("--port", type=int, help="API listen port.")
    up.set_defaults(handler=cmd_up)

    sim = with_config(commands.add_parser("simulate", help="Publish the simulated feed to a broker."))
    sim.add_argument("--mqtt-url", required=True, help="Broker to publish to, mqtt://host:port.")
    sim.add_argument("--duration-s", type=float, default=None, help="Stop after this many seconds.")
    sim.set_defaults(handler=cmd_simulate)

    check = commands.add_parser("check-config", help="Validate a configuration file and exit.")
    check.add_argument("config", type=Path, nargs="?", default=None)
    check.set_defaults(handler=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"citywatch: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
