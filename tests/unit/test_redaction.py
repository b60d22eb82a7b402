"""URLs with credentials: redacted for messages, and moved out of the settings' URLs into SecretStr fields."""

from __future__ import annotations

import pytest

from core.redaction import redact_url, redact_urls, without_credentials
from core.settings import ConfigError, InfluxDBSettings, MqttSettings, Settings


@pytest.mark.parametrize(("url", "redacted"), [
    ("mqtt://ingest:s3cret@broker.city:1883", "mqtt://***@broker.city:1883"),
    ("http://tok3n@influx:8086/write?db=cw", "http://***@influx:8086/write?db=cw"),
    ("http://influx:8086/query?db=cw&u=admin&p=s3cret", "http://influx:8086/query?db=cw&u=admin&p=***"),
    ("https://hooks.example/in?token=s3cret&x=1", "https://hooks.example/in?token=***&x=1"),
    ("http://influx:8086", "http://influx:8086"),
    ("http://a:b@c@influx:8086", "http://***@influx:8086"),
])
def test_redact_url_keeps_where_and_drops_the_credentials(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_a_url_that_cannot_be_parsed_is_not_echoed() -> None:
    # The @host forgotten: "s3cret" reads as the port.
    assert redact_url("mqtt://ingest:s3cret") == "mqtt://ingest:***"
    assert redact_url("http://[::1:s3cret@host/") == "<a URL that cannot be parsed>"


def test_urls_inside_an_error_message_are_redacted() -> None:
    message = ("HTTPConnectionPool(host='influx', port=8086): Max retries exceeded with url: "
               "http://influx:8086/write?u=cw&p=s3cret (Caused by mqtt://u:s3cret@broker)")
    assert "s3cret" not in redact_urls(message)
    assert "http://influx:8086/write?u=cw&p=***" in redact_urls(message)


def test_credentials_are_split_and_percent_decoded() -> None:
    assert without_credentials("mqtt://ingest:p%40ss@broker:1883/x") == (
        "mqtt://broker:1883/x", "ingest", "p@ss")
    assert without_credentials("mqtt://broker:1883") == ("mqtt://broker:1883", None, None)


def test_settings_move_url_credentials_into_secret_fields() -> None:
    mqtt = MqttSettings(url="mqtt://ingest:s3cret@broker:1883")
    assert (mqtt.url, mqtt.username) == ("mqtt://broker:1883", "ingest")
    assert mqtt.password is not None and mqtt.password.get_secret_value() == "s3cret"
    influx = InfluxDBSettings.model_validate({"url": "http://cw:s3cret@influx:8086"})
    assert influx.url == "http://influx:8086" and influx.username == "cw"
    assert influx.password is not None and influx.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(Settings(mqtt=mqtt)) and "s3cret" not in str(mqtt.model_dump())


def test_an_override_that_fails_validation_does_not_quote_its_value() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings().with_overrides(source="the command-line options", mqtt__url="ftp://u:s3cret@broker:1")
    assert "the command-line options" in str(raised.value) and "mqtt.url" in str(raised.value)
    assert "s3cret" not in str(raised.value)
