"""Configuration: one YAML file and the environment over it, validated once at load, never touching the
network.

Unknown keys are errors (a typo must not silently fall back to a default), secrets are typed so they are
never printed, and every field says what it does. `load_settings` is the only entry point; the
`CITYWATCH_...` variables and `..._FILE` secret files are read there (core/settings_env.py).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from core import rule_overrides, settings_env
from core import sanitation_settings as san
from core.case_settings import CaseSettings
from core.console_settings import ConsoleSettings
from core.dispatch_settings import DispatchSettings
from core.index_settings import IndexSettings
from core.ingest_config import (
    FRIGATE_DERIVED_ATTRIBUTES,
    FrigateAttribute,
    GeoSettings,
    SenmlName,
    VendorMap,
    default_frigate_attributes,
)
from core.redaction import redact_url, without_credentials
from core.sanitation_settings import BinOverflowSettings
from core.traffic_settings import (
    CameraViolationSettings,
    CongestionSettings,
    IllegalParkingSettings,
    NoHelmetSettings,
    PedestrianRedSettings,
    RedLightSettings,
    SpeedingSettings,
    TrafficSettings,
    WrongWaySettings,
    YieldCrosswalkSettings,
    tag_camera_intersections,
)

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "citywatch.yaml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the field and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _move_url_credentials(data: Any, section: str) -> Any:
    """Moves a user name and password written into `url` to `username` and `password` (a SecretStr), so
    the URL itself holds no secret wherever it is printed. Runs before validation, on the raw mapping."""
    if not isinstance(data, dict) or not isinstance(data.get("url"), str) or "@" not in data["url"]:
        return data
    try:
        url, user, password = without_credentials(data["url"])
    except ValueError:
        return data  # the url's own validation says what is wrong with it
    if data.get("username") is not None or data.get("password") is not None:
        raise ValueError(f"{section}.url holds a user name and password, and so do {section}.username and "
                         f"{section}.password: give them once")
    return {**data, "url": url, "username": user, "password": password}


class EmbeddedBrokerKind(StrEnum):
    AUTO = "auto"  # Mosquitto when the `mosquitto` binary is installed (20x faster), else amqtt
    MOSQUITTO = "mosquitto"
    AMQTT = "amqtt"


class MqttTlsSettings(_Section):
    """TLS towards the broker (Mosquitto `listener 8883` with `cafile`, `certfile`, `keyfile`)."""

    enabled: bool = Field(False, description="Connect with TLS; the broker's port is then usually 8883.")
    ca_file: Path | None = Field(
        None, description="CA certificate(s) that signed the broker's certificate; unset: the system CAs. "
        "Relative paths here are relative to the config file."
    )
    cert_file: Path | None = Field(None, description="Client certificate, when the broker requires one.")
    key_file: Path | None = Field(None, description="Private key of the client certificate.")
    insecure: bool = Field(
        False, description="Skip the broker host name check. Only for test set-ups; never in production."
    )


class MqttSettings(_Section):
    url: str | None = Field(
        None,
        description="Broker to subscribe to, mqtt://host:port. Unset: citywatch starts an embedded broker.",
    )
    embedded_broker: EmbeddedBrokerKind = Field(
        EmbeddedBrokerKind.AUTO, description="Which embedded broker to start when `url` is unset."
    )
    embedded_port: int = Field(1883, ge=0, le=65535, description="Port of the embedded broker (0: any free).")
    client_id: str = Field("citywatch-ingest", description="MQTT client id of the ingest subscriber.")
    username: str | None = Field(None, description="User name for the broker, if it requires one.")
    password: SecretStr | None = Field(None, description="Password for the broker.")
    qos: Literal[0, 1] = Field(1, description="Subscription QoS; 1 means the broker redelivers what we miss.")
    keepalive_s: int = Field(30, ge=5, description="MQTT keep-alive interval.")
    max_unacked_messages: int = Field(
        1000, ge=1, le=65535,
        description="Most QoS 1 messages ingest holds unacknowledged while the bus confirms them (Kafka "
        "acknowledges them asynchronously); at the limit ingest stops reading until confirmations arrive. "
        "The broker's own in-flight window (mosquitto max_inflight_messages, 20 by default) is usually "
        "smaller. MQTT packet ids are 16-bit, hence the maximum.",
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay; doubles up to the max.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest delay between reconnect attempts.")
    max_payload_bytes: int = Field(
        256 * 1024, gt=0, description="Larger payloads are dead-lettered as oversized, not decoded."
    )
    tls: MqttTlsSettings = Field(
        MqttTlsSettings(), description="TLS towards the broker (see docs/security.md)."
    )

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, data: Any) -> Any:
        return _move_url_credentials(data, "mqtt")

    @field_validator("url")
    @classmethod
    def _url_is_mqtt(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = urlparse(value)
            _ = parsed.port  # a port that is not a number fails here, not when ingest starts
            valid = parsed.scheme in ("mqtt", "tcp") and bool(parsed.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"expected mqtt://host:port, got {redact_url(value)!r}")
        return value


# The payload formats ingest/codecs/catalogue.py builds a codec for.
CodecName = Literal[
    "native", "frigate", "tts", "chirpstack", "senml", "signal", "detector", "camera_violation"
]


class TopicRoute(_Section):
    pattern: str = Field(description="MQTT topic filter (+ and # wildcards) this route subscribes to.")
    codec: CodecName = Field("native", description="Codec for payloads on these topics (docs/formats.md).")
    device_id_prefix: str = Field(
        "", description="Prepended to the device ids this route decodes (e.g. one per Frigate instance)."
    )
    media_base_url: str | None = Field(
        None, description="frigate: base URL of the Frigate server, for snapshot_url and clip_url."
    )
    speed_unit: Literal["kmh", "mph"] = Field(
        "kmh", description="frigate: unit of estimated speeds (Frigate's ui.unit_system)."
    )
    lorawan_device_id: Literal["name", "eui"] = Field(
        "name", description="tts / chirpstack: register devices by their name (TTS device_id, ChirpStack "
        "deviceName) or by their DevEUI (upper-case hex)."
    )
    simulated_uplinks: Literal["keep", "mark", "drop"] = Field(
        "mark", description="tts: uplinks simulated in the console (`simulated: true`). keep: as real "
        "readings; mark: kept with the attribute `simulated: true`; drop: dead-lettered (simulated_uplink)."
    )
    device_position: Literal["registry", "network"] = Field(
        "registry", description="tts / senml: registry: a device registered with lat/lon keeps that position "
        "over the one in the message (TTS `locations`, SenML lat/lon); network: the message's position wins."
    )
    senml_names: dict[str, SenmlName] = Field(
        default_factory=dict, description="senml: record names -> citywatch measurements, over the shipped "
        "map (docs/formats.md), e.g. {pm2_5: pm25} or {pm2_5: {measurement: pm25, unit: ug/m3}}."
    )
    frigate_attributes: dict[str, FrigateAttribute] = Field(
        default_factory=default_frigate_attributes,
        description="frigate: track attributes read from Frigate's classifiers, sub labels and attribute "
        "labels, by attribute name (docs/formats.md); the default reads a helmet classifier into `helmet`.",
    )

    @field_validator("frigate_attributes")
    @classmethod
    def _frigate_attributes_are_new(cls, value: dict[str, FrigateAttribute]) -> dict[str, FrigateAttribute]:
        taken = sorted(set(value) & FRIGATE_DERIVED_ATTRIBUTES)
        if taken:
            raise ValueError(f"{', '.join(taken)}: the Frigate codec derives these itself; map to another "
                             "name")
        return value


class IngestSettings(_Section):
    routes: list[TopicRoute] = Field(
        default_factory=lambda: [TopicRoute(pattern="citywatch/events/#", codec="native")],
        description="Topic filters and the codec for each; the first matching route decodes a message.",
    )
    accept_unknown_devices: bool = Field(
        False, description="Accept events from devices missing in the registry instead of dead-lettering."
    )
    dead_letter_payload_bytes: int = Field(
        16 * 1024, gt=0, description="How much of a rejected payload is kept in the dead-letter store."
    )


class BusKind(StrEnum):
    INPROCESS = "inprocess"
    KAFKA = "kafka"


class KafkaTopicNames(_Section):
    events: str = Field("citywatch.events", description="Normalised events, keyed by the rules' state key.")
    dead_letters: str = Field("citywatch.dead-letters", description="Rejected input and rule failures.")
    violations: str = Field(
        "citywatch.violations",
        description="Every violation state change, keyed by violation id (for downstream systems).",
    )
    rule_outputs: str = Field(
        "citywatch.rule-outputs",
        description="Other rule-run outputs for downstream systems: late events (stored, not judged).",
    )
    checkpoints: str = Field(
        "citywatch.checkpoints",
        description="Compacted: per events partition, the rule-state snapshot and the offset it covers.",
    )
    devices: str = Field(
        "citywatch.devices",
        description="Compacted: device registry changes made through /v1/devices, keyed by device id; "
        "ingest and process apply them to their registry.",
    )


class KafkaSettings(_Section):
    bootstrap_servers: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:9092"], min_length=1, description="Kafka brokers, host:port."
    )
    topics: KafkaTopicNames = KafkaTopicNames()
    partitions: int = Field(
        6, ge=1,
        description="Partitions of every topic created: the most processor instances that share the work.",
    )
    replication_factor: int = Field(1, ge=1, description="Replicas of every topic citywatch creates.")
    create_topics: bool = Field(True, description="Create missing topics on start (needs the right ACLs).")
    group_id: str = Field("citywatch-processors", min_length=1, description="Consumer group of processors.")
    alerts_group_id: str = Field(
        "citywatch-alerts", min_length=1,
        description="Consumer group of the api replicas for webhooks and alert outputs: each violation "
        "change is dispatched by one replica (docs/kafka.md).",
    )
    session_timeout_ms: int = Field(
        10_000, ge=1000, description="A processor silent this long is dropped and its partitions move."
    )
    heartbeat_interval_ms: int = Field(3000, ge=100, description="Heartbeat to the group coordinator.")
    checkpoint_interval_s: float = Field(
        5.0, gt=0, description="How often each partition's rule state and offset are checkpointed."
    )
    max_checkpoint_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="Largest checkpoint record (producer and topic limit)."
    )
    linger_ms: int = Field(5, ge=0, description="Producer wait to fill a batch: throughput against latency.")

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaSettings:
        # The broker rejects a join whose heartbeat is not below the session timeout; say it at load.
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self


class BusSettings(_Section):
    kind: BusKind = Field(
        BusKind.INPROCESS, description="inprocess: one machine, one process; kafka: roles scale apart."
    )
    queue_events: int = Field(
        100_000, gt=0, description="In-process bus bound; ingest waits (backpressure) when it is full."
    )
    ingest_process: bool = Field(
        True, description="inprocess: receive and decode MQTT messages in a process of their own, so that "
        "the rules do not share an interpreter with ingest (faster with two or more cores)."
    )
    kafka: KafkaSettings = KafkaSettings()


class StoreKind(StrEnum):
    EMBEDDED = "embedded"
    INFLUXDB = "influxdb"


class InfluxApi(StrEnum):
    AUTO = "auto"  # ask the server's /ping for its version: 1.8 and newer speak the v2 write API
    V1 = "v1"  # POST /write (InfluxDB 1.x, e.g. Debian's 1.6)
    V2 = "v2"  # influxdb-client's write API (InfluxDB 2.x, 3.x, and 1.8+ with database/rp as bucket)


class InfluxDBSettings(_Section):
    url: str = Field("http://127.0.0.1:8086", description="Base URL of the InfluxDB HTTP API.")
    api: InfluxApi = Field(InfluxApi.AUTO, description="Write API: auto (detect with /ping), v1 or v2.")
    database: str = Field(
        "citywatch", min_length=1,
        description="v1 database (also the InfluxQL `db` of every query); with the v2 API the bucket is "
        "`database/retention policy` unless `bucket` is set.",
    )
    bucket: str | None = Field(None, description="v2 bucket for raw writes, if not database/rp.")
    org: str | None = Field(None, description="v2 organisation.")
    token: SecretStr | None = Field(None, description="v2 API token (1.8 compatibility: user:password).")
    username: str | None = Field(None, description="v1 user, if authentication is enabled.")
    password: SecretStr | None = Field(None, description="v1 password.")
    manage_schema: bool = Field(
        True, description="Create the database and retention policies at start (v1 API only)."
    )
    batch_points: int = Field(5000, gt=0, description="Most points sent in one write request.")
    flush_interval_ms: int = Field(
        1000, gt=0, description="A partial batch waits at most this long before it is sent."
    )
    memory_buffer_points: int = Field(
        200_000, gt=0, description="Points held in memory while InfluxDB is down or slow, before disk."
    )
    disk_buffer_bytes: int = Field(
        512 * 1024 * 1024, ge=0,
        description="Line protocol spilled to `data_dir/influx-spool` once memory is full; past it, writes "
        "wait (backpressure).",
    )
    backpressure_timeout_s: float | None = Field(
        None, gt=0,
        description="How long a write waits for buffer room before failing with StoreBackpressure; null "
        "waits as long as it takes (the processor stops consuming meanwhile).",
    )
    flush_wait_s: float = Field(
        2.0, ge=0, description="How long flush() waits for InfluxDB before spilling memory to disk."
    )
    retry_min_s: float = Field(0.2, gt=0, description="First retry delay of a failed write; doubles.")
    retry_max_s: float = Field(30.0, gt=0, description="Longest delay between write retries.")
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one request.")
    rollup_interval_s: float = Field(
        60.0, gt=0, description="How often the hourly reading rollups of recently written hours are computed."
    )

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, data: Any) -> Any:
        return _move_url_credentials(data, "store.influxdb")


class RetentionSettings(_Section):
    raw_readings_days: int = Field(30, gt=0, description="Raw readings are kept this long (event time).")
    rollup_days: int = Field(730, gt=0, description="Hourly rollups are kept this long.")
    violations_days: int = Field(365, gt=0, description="Violations are kept this long (by start time).")
    dead_letters_days: int = Field(30, gt=0, description="Dead letters are kept this long.")
    sweep_interval_s: float = Field(
        3600.0, gt=0, description="How often the embedded store deletes what is past retention."
    )


class StoreSettings(_Section):
    kind: StoreKind = Field(
        StoreKind.EMBEDDED, description="embedded (SQLite file under data_dir) or influxdb."
    )
    data_dir: Path = Field(
        Path("data"), description="Directory of the embedded store (and of the InfluxDB write spool); a "
        "relative path is relative to the config file (docs/configuration.md#paths)."
    )
    influxdb: InfluxDBSettings = InfluxDBSettings()
    retention: RetentionSettings = RetentionSettings()


class RelationalKind(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class PostgresSslMode(StrEnum):
    """libpq's sslmode: how hard the connection insists on TLS and checks the server's certificate."""

    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class PostgresSettings(_Section):
    """Where the relational state lives when `relational.kind` is postgresql (docs/deploy.md)."""

    host: str = Field(
        "127.0.0.1", min_length=1,
        description="Server host name or address, or the directory of its Unix socket (a path).",
    )
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    database: str = Field("citywatch", min_length=1, description="Database holding citywatch's tables.")
    user: str = Field("citywatch", min_length=1, description="User name to connect as.")
    password: SecretStr | None = Field(
        None, description="Password of `user`; unset for trust or peer authentication, or a ~/.pgpass file."
    )
    sslmode: PostgresSslMode = Field(
        PostgresSslMode.PREFER, description="TLS towards the server: disable, prefer, require, verify-ca "
        "or verify-full (libpq's sslmode).",
    )
    ssl_root_cert: Path | None = Field(
        None, description="CA certificate(s) that signed the server's certificate (verify-ca, verify-full); "
        "relative to the config file."
    )
    pool_size: int = Field(
        4, ge=1, le=100,
        description="Most connections each store of one process holds open (keys and audit, webhooks, "
        "devices, actions on violations: up to four times this per api process).",
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, description="How long opening a connection (and taking one from the pool) may take."
    )

    def describe(self) -> str:
        """Where the connection goes, for log lines and errors: never the password."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


class RelationalSettings(_Section):
    kind: RelationalKind = Field(
        RelationalKind.SQLITE,
        description="Where API keys, the audit log, webhook subscriptions and deliveries, the managed "
        "device registry and people's actions on violations live: sqlite (files under store.data_dir, "
        "one machine) or postgresql (shared by every api replica).",
    )
    postgresql: PostgresSettings = PostgresSettings()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthMode(StrEnum):
    REQUIRED = "required"
    DISABLED = "disabled"


# scheme://host[:port] as browsers send it in Origin (RFC 6454): no path, query or trailing slash.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP API listens on.")
    max_page_size: int = Field(1000, gt=0, description="Largest `limit` a list endpoint accepts.")
    auth: AuthMode = Field(
        AuthMode.REQUIRED,
        description="required: every endpoint but /healthz and /readyz needs an API key (docs/alerts.md). "
        "disabled: open access, allowed only when `host` is a loopback address.",
    )
    rate_limit_per_s: float = Field(20.0, gt=0, description="Sustained requests per second per API key.")
    rate_limit_burst: int = Field(100, gt=0, description="Requests a key may make at once before limiting.")
    auth_failure_limit: int = Field(
        20, gt=0, description="Unknown API keys one client address may send within `auth_failure_window_s` "
        "before it is answered 429 until that window ends.")
    auth_failure_window_s: float = Field(60.0, gt=0, description="Window of `auth_failure_limit`.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (scheme://host[:port]) whose pages may call the API from a browser (CORS); "
        "empty: none, no CORS headers are sent. [\"*\"]: any page (check-config warns: a key then works "
        "from any page that has it). docs/security.md.",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        # A browser sends the Origin header as scheme://host[:port], nothing after it: an origin with a
        # path or a trailing slash would never match, so it is refused rather than silently useless.
        if "*" in origins and len(origins) > 1:
            raise ValueError('"*" already allows every origin: list it alone')
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port] with no path "
                                 "or trailing slash, e.g. https://console.city.example")
        return origins

    @model_validator(mode="after")
    def _open_access_only_on_loopback(self) -> ApiSettings:
        # Safe by default: an API without keys must never be reachable from another machine.
        if self.auth is AuthMode.DISABLED and not _is_loopback(self.host):
            raise ValueError(
                "auth: disabled is only allowed when the API listens on a loopback address, not "
                f"{self.host!r}; set api.auth: required and create a key with `citywatch keys create`"
            )
        return self


class PipelineSettings(_Section):
    allowed_lateness_ms: int = Field(
        2000, ge=0, description="How long events wait to be put in event-time order before rules see them."
    )
    batch_events: int = Field(5000, gt=0, description="Most events the processor takes in one batch.")
    dedup_window_events: int = Field(
        200_000, gt=0, description="How many recent event ids are remembered to drop duplicate deliveries."
    )


class RuleSettings(_Section):
    bin_overflow: BinOverflowSettings = BinOverflowSettings()
    # Sanitation and environment (core/sanitation_settings.py, docs/rules-sanitation.md).
    bin_near_full: san.BinNearFullSettings = san.BinNearFullSettings()
    bin_fire: san.BinFireSettings = san.BinFireSettings()
    bin_tilt: san.BinTiltSettings = san.BinTiltSettings()
    bin_lid_open: san.BinLidOpenSettings = san.BinLidOpenSettings()
    toilet_odour: san.ToiletOdourSettings = san.ToiletOdourSettings()
    air_quality: san.AirQualitySettings = san.AirQualitySettings()
    construction_dust: san.ConstructionDustSettings = san.ConstructionDustSettings()
    water_black_odour: san.WaterBlackOdourSettings = san.WaterBlackOdourSettings()
    device_offline: san.DeviceOfflineSettings = san.DeviceOfflineSettings()
    low_battery: san.LowBatterySettings = san.LowBatterySettings()
    stuck_sensor: san.StuckSensorSettings = san.StuckSensorSettings()
    implausible_reading: san.ImplausibleReadingSettings = san.ImplausibleReadingSettings()
    zone_thresholds: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict,
        description="Per-zone threshold overrides: {zone tag: {rule name: {setting: value}}}, for devices "
        "with that `zone` tag; a device's own `thresholds` win over its zone's (docs/rules.md).",
    )
    kind_thresholds: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict,
        description="Per-kind threshold overrides: {event kind: {rule name: {setting: value}}}; a device's "
        "own and its zone's overrides win over its kind's (docs/rules.md).",
    )
    # Traffic rules (docs/rules.md); their zones and code table are in the `traffic` section.
    red_light: RedLightSettings = RedLightSettings()
    pedestrian_red: PedestrianRedSettings = PedestrianRedSettings()
    yield_crosswalk: YieldCrosswalkSettings = YieldCrosswalkSettings()
    illegal_parking: IllegalParkingSettings = IllegalParkingSettings()
    wrong_way: WrongWaySettings = WrongWaySettings()
    speeding: SpeedingSettings = SpeedingSettings()
    no_helmet: NoHelmetSettings = NoHelmetSettings()
    congestion: CongestionSettings = CongestionSettings()
    camera_violation: CameraViolationSettings = CameraViolationSettings()

    @field_validator("zone_thresholds", "kind_thresholds")
    @classmethod
    def _known_overrides(cls, value: dict[str, dict[str, dict[str, float]]],
                         ) -> dict[str, dict[str, dict[str, float]]]:
        return rule_overrides.check_grouped(value)

    @model_validator(mode="after")
    def _hidden_from_known_rules(self) -> RuleSettings:
        for section in ("stuck_sensor", "implausible_reading"):
            names = getattr(self, section).hide_suspect_from
            if names != ["*"]:
                rule_overrides.check_rule_names(names, f"{section}.hide_suspect_from")
        return self


class DeviceSettings(_Section):
    device_id: str = Field(min_length=1, max_length=128, description="Unique device id.")
    kind: str = Field(min_length=1, description="What the device observes: bin, air, track, ...")
    model: str | None = Field(None, description="Vendor model, e.g. Milesight EM310-UDL.")
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    tags: dict[str, str] = Field(default_factory=dict, description="Grid, district, department, zone ...")
    active: bool = Field(True, description="An inactive device's messages are dead-lettered.")
    expected_interval_s: float | None = Field(
        None, gt=0, description="How often the device reports; device-health rules judge silence by it."
    )
    install: dict[str, float] = Field(
        default_factory=dict,
        description="Installation parameters with units in the names, e.g. bin_depth_mm for an ultrasonic "
        "bin sensor (distance to the bottom of the empty bin).",
    )
    thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per-rule threshold overrides for this device: {rule name: {setting: value}}.",
    )

    @field_validator("thresholds")
    @classmethod
    def _known_overrides(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return rule_overrides.check_overrides(value)


class RoleSettings(_Section):
    """The headless roles (`citywatch ingest`, `citywatch process`) serve health, metrics and status."""

    status_host: str = Field("127.0.0.1", description="Address of a headless role's status endpoint.")
    status_port: int = Field(
        9108, ge=0, le=65535,
        description="Port of /healthz, /readyz, /metrics and /v1/status of a headless role.",
    )


class LoggingSettings(_Section):
    format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per record; json: one JSON object per line (time, "
        "level, logger, message, request_id, exception) for a log collector. `--log-format` overrides it.",
    )


class SimulatorSettings(_Section):
    """The demo city feed (docs/demo.md): every registered bin, air, water, odour, detector, signal and
    camera device, cameras with zones under `traffic.cameras`."""

    interval_s: float = Field(1.0, gt=0, description="Seconds between two readings of one device.")
    seed: int = Field(7, description="Random seed: the same seed gives the same feed.")
    bad_message_ratio: float = Field(
        0.002, ge=0, le=1, description="Share of messages malformed on purpose, to show dead letters."
    )


class WebhookSettings(_Section):
    max_attempts: int = Field(8, ge=1, description="Attempts per delivery before it is dead-lettered.")
    backoff_base_s: float = Field(1.0, gt=0, description="Delay before the first retry; doubles each time.")
    backoff_max_s: float = Field(300.0, gt=0, description="Longest delay between two attempts.")
    timeout_s: float = Field(5.0, gt=0, description="An attempt with no answer within this fails.")
    queue_per_subscription: int = Field(
        10_000, gt=0, description="Deliveries waiting per subscription; beyond it they are dead-lettered."
    )
    disable_after_failures: int = Field(
        20, ge=1, description="Consecutive failed attempts after which a subscription is disabled."
    )
    connections_per_receiver: int = Field(
        32, ge=1, description="Requests in flight to one receiver (scheme, host and port) at most; the "
        "others wait for one of its connections, so a burst of changes does not open a connection per "
        "subscription to it.",
    )
    delivery_log_per_subscription: int = Field(
        1000, gt=0, description="Finished deliveries kept in each subscription's delivery log."
    )
    sync_interval_s: float = Field(
        2.0, gt=0, description="Kafka set-up with several api replicas: how often a replica picks up "
        "subscriptions and redeliveries made through another one (docs/kafka.md).",
    )
    allowed_private_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = Field(
        (), description="Networks (CIDR, e.g. 10.20.0.0/16) that webhook URLs may reach although they are "
        "private, loopback or link-local: for receivers inside the city's network. Empty (default): webhooks "
        "go to public addresses only (docs/alerts.md#where-webhooks-may-go).",
    )

    @field_validator("allowed_private_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        networks = []
        for item in value:
            try:
                networks.append(ipaddress.ip_network(item) if isinstance(item, str) else item)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a network in CIDR notation ({exc})") from None
        return tuple(networks)


# What a push output may send: violation changes and the two case SLA events (docs/alerts.md).
OutputEvent = Literal["violation", "case_sla_warning", "case_sla_breach"]
ALL_OUTPUT_EVENTS: tuple[OutputEvent, ...] = ("violation", "case_sla_warning", "case_sla_breach")


def _output_events_field() -> Any:
    return Field(list(ALL_OUTPUT_EVENTS),
                 description="What to publish: violation changes (`violation`) and case SLA events "
                             "(`case_sla_warning`, `case_sla_breach`); all three by default.")


def _some_output_events(events: list[OutputEvent]) -> list[OutputEvent]:
    if not events:
        raise ValueError("lists nothing to publish: leave it out for every kind, or set enabled: false")
    return events


class MqttOutputSettings(_Section):
    enabled: bool = Field(False, description="Publish violation state changes to MQTT.")
    url: str | None = Field(None, description="Broker mqtt://host:port; unset: the broker ingest uses.")
    topic_prefix: str = Field(
        "citywatch/violations", description="Topics are {topic_prefix}/{type}/{grid}."
    )
    qos: Literal[0, 1] = Field(1, description="QoS of the published messages.")
    client_id: str = Field("citywatch-violations-out", description="MQTT client id of the publisher.")
    plates: bool = Field(False, description="Publish unmasked plates and evidence links (else masked).")
    events: list[OutputEvent] = _output_events_field()
    _events_listed = field_validator("events")(_some_output_events)

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        if value is not None and "@" in urlparse(value).netloc:
            raise ValueError("must not hold a user name or password (the output would not use them): leave "
                             "it unset to publish to the ingest broker with mqtt.username and mqtt.password")
        return value


class KafkaOutputSettings(_Section):
    enabled: bool = Field(False, description="Publish violation state changes to a Kafka topic.")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port] of the brokers.")
    topic: str = Field("citywatch.violations", description="Topic; the key is the violation id.")
    plates: bool = Field(False, description="Publish unmasked plates and evidence links (else masked).")
    events: list[OutputEvent] = _output_events_field()
    _events_listed = field_validator("events")(_some_output_events)


class AlertSettings(_Section):
    feed_retention: int = Field(
        100_000, gt=0,
        description="Violation state changes kept in memory for streams to resume from (the resume window).",
    )
    stream_max_lag: int = Field(
        10_000, gt=0, description="A stream client this many changes behind is disconnected as too slow."
    )
    stream_heartbeat_s: float = Field(15.0, gt=0, description="Keep-alive comment interval on idle streams.")
    webhooks: WebhookSettings = WebhookSettings()
    mqtt: MqttOutputSettings = MqttOutputSettings()
    kafka: KafkaOutputSettings = KafkaOutputSettings()


class LegacyPath(BaseModel):
    """A relative path setting found where it was looked for before paths were taken relative to the
    configuration file (in the working directory), and used from there."""

    model_config = ConfigDict(frozen=True)

    field: str  # store.data_dir
    written: Path  # as written: data
    used: Path  # where it was found: /home/city/data
    expected: Path  # where it resolves now: /home/city/configs/data


class Settings(_Section):
    # Set by load_settings: relative paths taken from the working directory for compatibility.
    _legacy_paths: tuple[LegacyPath, ...] = PrivateAttr(default=())

    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    bus: BusSettings = BusSettings()
    store: StoreSettings = StoreSettings()
    relational: RelationalSettings = RelationalSettings()
    api: ApiSettings = ApiSettings()
    pipeline: PipelineSettings = PipelineSettings()
    rules: RuleSettings = RuleSettings()
    traffic: TrafficSettings = Field(default_factory=TrafficSettings, description="Intersections, camera "
                                     "zones, schedules and the violation-code table of the traffic rules.")
    devices: list[DeviceSettings] = Field(default_factory=list, description="The device registry.")
    devices_file: Path | None = Field(
        None, description="YAML list of devices, appended to `devices` (relative to the config file)."
    )
    simulator: SimulatorSettings = SimulatorSettings()
    vendor_maps: dict[str, VendorMap] = Field(
        default_factory=dict, description="Decoded-payload field maps per device model (docs/formats.md)."
    )
    vendor_maps_file: Path | None = Field(
        None, description="YAML mapping of model -> vendor map, merged into `vendor_maps` (relative path: "
        "to the config file)."
    )
    geo: GeoSettings = Field(GeoSettings(), description="Grids, districts and department routing.")
    dispatch: DispatchSettings = Field(
        default_factory=DispatchSettings, description="Sanitation dispatch: depots, trucks, shifts, transfer "
        "stations and how routes are planned (docs/dispatch.md).")
    roles: RoleSettings = RoleSettings()
    alerts: AlertSettings = AlertSettings()
    cases: CaseSettings = Field(default_factory=CaseSettings, description="Case routing and verification "
                                "(docs/cases.md).")
    indices: IndexSettings = Field(default_factory=IndexSettings, description="Civility indices, rankings "
                                   "and published reports (docs/indices.md).")
    logging: LoggingSettings = LoggingSettings()
    console: ConsoleSettings = Field(default_factory=ConsoleSettings, description="The browser console at / "
                                     "(docs/console.md): base map tiles and roads of interest.")

    def with_overrides(self, *, source: str = "the overridden settings", **dotted: Any) -> Settings:
        """A copy with `section__field=value` overrides applied and validated again; ConfigError (naming
        `source`) when they are invalid."""
        data = self.model_dump(mode="python")
        for dotted_key, value in dotted.items():
            node = data
            *parents, leaf = dotted_key.split("__")
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            # Not pydantic's own text: it quotes the input, which may be a URL with a password in it.
            raise ConfigError(_format_validation_error(source, exc)) from None
        overridden = {key.replace("__", ".") for key in dotted}
        settings._legacy_paths = tuple(kept for kept in self._legacy_paths if kept.field not in overridden)
        return settings

    @property
    def legacy_paths(self) -> tuple[LegacyPath, ...]:
        """Relative path settings used from the working directory, as before they were taken relative
        to the configuration file (load_settings)."""
        return self._legacy_paths


def _format_validation_error(source: str, error: ValidationError,
                             from_environment: list[settings_env.EnvValue] | None = None) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if from_environment:
            where = settings_env.annotate(where, from_environment)
        lines.append(f"  {where}: {_problem(item)}")
    return "\n".join(lines)


def _problem(item: Any) -> str:
    """What is wrong with one value, in citywatch's words, chosen by pydantic's error type (a stable code),
    never by its message; the message is kept only for a type not listed here."""
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "extra_forbidden":
        known = _keys_at(item["loc"][:-1])
        close = difflib.get_close_matches(str(item["loc"][-1]), known, n=1)
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])  # raised by citywatch's own validators: already its words
    bounds = {"greater_than": ("gt", "greater than"), "greater_than_equal": ("ge", "at least"),
              "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}
    if kind in bounds:
        key, words = bounds[kind]
        return f"must be {words} {ctx[key]}, got {item['input']!r}"
    expected = {"int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
                "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
                "bool_type": "true or false", "string_type": "text", "dict_type": "a mapping of keys",
                "list_type": "a list", "model_type": "a mapping of keys"}
    if kind in expected:
        return f"expected {expected[kind]}"
    if kind in ("literal_error", "enum"):
        return f"expected one of {ctx['expected']}"
    return str(item["msg"])


def _keys_at(loc: Sequence[Any]) -> list[str]:
    """The keys the settings take at a location (for the closest-name hint), or none if it is no section."""
    section = settings_env.section_at(Settings, [str(part) for part in loc])
    return list(section.model_fields) if section is not None else []


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the line, which may hold a password."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{error.problem or error.context or 'syntax error'}{where}"
    return type(error).__name__


def config_path(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The file `load_settings` reads: `path`, else $CITYWATCH_CONFIG, else configs/citywatch.yaml."""
    if path is not None:
        return path
    from_environment = (os.environ if environ is None else environ).get("CITYWATCH_CONFIG")
    return Path(from_environment) if from_environment else DEFAULT_CONFIG_PATH


def environment_values(environ: Mapping[str, str] | None = None) -> list[settings_env.EnvValue]:
    """The keys the `CITYWATCH_...` variables and `..._FILE` files set (docs/configuration.md)."""
    try:
        return settings_env.read_environment(Settings, os.environ if environ is None else environ)
    except settings_env.EnvironmentConfigError as exc:
        raise ConfigError(f"environment: {exc}") from None


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a configuration file (see `config_path`) with the environment's values over it
    (`environ`, default: this process's environment)."""
    path = config_path(path, environ)
    from_environment = environment_values(environ)
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path} must be a mapping at the top level")
    try:
        raw = settings_env.apply(raw, from_environment)
    except settings_env.EnvironmentConfigError as exc:
        raise ConfigError(f"environment: {exc}") from None
    source = f"{path} and the environment" if from_environment else str(path)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc, from_environment)) from None
    if settings.devices_file is not None:
        devices_path = settings.devices_file
        if not devices_path.is_absolute():
            devices_path = path.parent / devices_path
        extra = _read_yaml(devices_path) or []
        try:
            merged = Settings.model_validate({**raw, "devices": [*(raw.get("devices") or []), *extra]})
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(str(devices_path), exc, from_environment)) from None
        settings = merged
    settings = _with_side_files(settings, raw, path)
    registered = Counter(device.device_id for device in settings.devices)
    duplicates = sorted(device_id for device_id, count in registered.items() if count > 1)
    if duplicates:
        raise ConfigError(f"{path}: device ids registered twice: {', '.join(duplicates)}")
    try:
        return tag_camera_intersections(settings)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


_VENDOR_MAPS = TypeAdapter(dict[str, VendorMap])


def _with_side_files(settings: Settings, raw: dict[str, Any], path: Path) -> Settings:
    """Merge `vendor_maps_file` and make the geo file paths absolute (relative to the config file)."""
    updates: dict[str, Any] = {}
    if settings.vendor_maps_file is not None:
        maps_path = settings.vendor_maps_file
        if not maps_path.is_absolute():
            maps_path = path.parent / maps_path
        extra = _read_yaml(maps_path) or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"vendor maps file {maps_path} must be a mapping of model -> map")
        try:
            from_file = _VENDOR_MAPS.validate_python(extra)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(f"{maps_path} (vendor_maps)", exc)) from exc
        # Maps written in the configuration itself win over the file's.
        updates["vendor_maps"] = {**from_file, **settings.vendor_maps}
    geo_files: dict[str, Path] = {}
    for name in ("grids_file", "districts_file"):
        value = getattr(settings.geo, name)
        if value is None:
            continue
        resolved = value if value.is_absolute() else path.parent / value
        if not resolved.is_file():
            raise ConfigError(f"{path}: geo.{name}: {resolved} does not exist")
        geo_files[name] = resolved
    if geo_files:
        updates["geo"] = settings.geo.model_copy(update=geo_files)
    road_graph = settings.dispatch.road_graph_file
    if road_graph is not None:
        resolved = road_graph if road_graph.is_absolute() else path.parent / road_graph
        if not resolved.is_file():
            raise ConfigError(f"{path}: dispatch.road_graph_file: {resolved} does not exist")
        updates["dispatch"] = settings.dispatch.model_copy(update={"road_graph_file": resolved})
    roads = settings.console.roads_file
    if roads is not None:
        resolved = roads if roads.is_absolute() else path.parent / roads
        if not resolved.is_file():
            raise ConfigError(f"{path}: console.roads_file: {resolved} does not exist")
        updates["console"] = settings.console.model_copy(update={"roads_file": resolved})
    settings = settings.model_copy(update=updates) if updates else settings
    return _with_paths_from(settings, path.parent)


def _with_paths_from(settings: Settings, folder: Path) -> Settings:
    """Make the relative paths of the data directory and the TLS files relative to `folder` (the config
    file's), like every other path setting. They used to be taken from the working directory: one that
    exists only there (and not beside the configuration) is still used from there, and listed in
    `legacy_paths` so that check-config and the start-up log say how to move it."""
    mqtt_tls, postgresql, store = settings.mqtt.tls, settings.relational.postgresql, settings.store
    fields: list[tuple[str, Path | None]] = [
        ("store.data_dir", store.data_dir),
        ("mqtt.tls.ca_file", mqtt_tls.ca_file),
        ("mqtt.tls.cert_file", mqtt_tls.cert_file),
        ("mqtt.tls.key_file", mqtt_tls.key_file),
        ("relational.postgresql.ssl_root_cert", postgresql.ssl_root_cert),
    ]
    resolved: dict[str, Path] = {}
    legacy: list[LegacyPath] = []
    for field, value in fields:
        if value is None or value.is_absolute():
            continue
        beside_config, in_working_dir = folder / value, Path.cwd() / value
        if (not beside_config.exists() and in_working_dir.exists()
                and beside_config.resolve() != in_working_dir.resolve()):
            resolved[field] = in_working_dir
            legacy.append(LegacyPath(field=field, written=value, used=in_working_dir, expected=beside_config))
        else:
            resolved[field] = beside_config
    if not resolved:
        return settings

    def new(field: str, current: Path | None) -> Path | None:
        return resolved.get(field, current)

    updated = settings.model_copy(update={
        "store": store.model_copy(update={"data_dir": new("store.data_dir", store.data_dir)}),
        "mqtt": settings.mqtt.model_copy(update={"tls": mqtt_tls.model_copy(update={
            name: new(f"mqtt.tls.{name}", getattr(mqtt_tls, name))
            for name in ("ca_file", "cert_file", "key_file")
        })}),
        "relational": settings.relational.model_copy(update={"postgresql": postgresql.model_copy(update={
            "ssl_root_cert": new("relational.postgresql.ssl_root_cert", postgresql.ssl_root_cert)})}),
    })
    updated._legacy_paths = tuple(legacy)
    return updated
