"""A small blocking MQTT publisher for the simulator, benchmarks and tests (not the ingest path)."""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from ingest.mqtt_source import close_client


class MqttPublisher:
    def __init__(self, url: str, client_id: str, *, qos: int = 1, max_inflight: int = 100) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 1883
        self.qos = qos
        self._connected = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.on_connect = lambda client, userdata, flags, reason, props: self._connected.set()
        if parsed.username:
            self._client.username_pw_set(parsed.username, parsed.password)

    def connect(self, timeout_s: float = 10.0) -> MqttPublisher:
        self._client.connect(self.host, self.port)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise ConnectionError(f"could not connect to mqtt://{self.host}:{self.port} in {timeout_s:.0f} s")
        return self

    def publish(self, topic: str, payload: bytes, *, wait: bool = False) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=self.qos)
        if wait:
            info.wait_for_publish(10)
        return info

    def close(self) -> None:
        close_client(self._client)
