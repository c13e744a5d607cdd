"""The Confluent wire format and the Schema Registry settings, without a registry:
framing checked byte by byte against the format's definition (magic byte 0, the
schema id as 4 bytes big-endian, the JSON), and the ids an input topic accepts."""

from __future__ import annotations

import os

import pytest

from streams.errors import ConfigError, InvalidMessage
from streams.kafka.schema_registry import Schemas, frame, subject, unframe
from streams.worker.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in list(os.environ):
        if variable.startswith(("SIZER_", "KAFKA_")):
            monkeypatch.delenv(variable)


def test_a_framed_value_is_magic_zero_then_the_id_big_endian_then_the_json():
    assert frame(258, b'{"a":1}') == b'\x00\x00\x00\x01\x02{"a":1}'
    assert frame(2**32 - 1, b"{}") == b"\x00\xff\xff\xff\xff{}"


def test_unframe_gives_back_the_id_and_the_json():
    assert unframe(b'\x00\x00\x00\x01\x02{"a":1}') == (258, b'{"a":1}')


@pytest.mark.parametrize("value", [b'{"a":1}', b"", b"\x00\x00\x01", b"\x01\x00\x00\x00\x01{}"])
def test_a_value_not_in_the_wire_format_is_a_schema_id_error(value):
    with pytest.raises(InvalidMessage) as raised:
        unframe(value)
    assert raised.value.code == "SCHEMA_ID"
    assert "Confluent wire format" in raised.value.detail


def test_the_subject_is_the_topic_name_strategy():
    assert subject("prod.signals") == "prod.signals-value"


def test_an_input_accepts_only_the_ids_of_its_own_subject():
    schemas = Schemas(writes={"orders": 7}, accepts={"signals": frozenset({1, 3}), "fills": frozenset({2})})
    assert schemas.payload("signals", b"\x00\x00\x00\x00\x03{}") == b"{}"
    with pytest.raises(InvalidMessage) as raised:
        schemas.payload("signals", b"\x00\x00\x00\x00\x02{}")  # the fills' schema
    assert (raised.value.code, raised.value.detail) == \
        ("SCHEMA_ID", "value: schema id 2 is not registered under subject signals-value")


def test_the_registry_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v6")
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_INPUTS", "json")
    kafka = load_settings()
    assert (kafka.schema_registry_url, kafka.schema_registry_inputs) == \
        ("http://127.0.0.1:8081/apis/ccompat/v6", "json")


def test_inputs_format_without_a_registry_stops_start_up_naming_the_field(monkeypatch):
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_INPUTS", "json")
    with pytest.raises(ConfigError, match="schema_registry_inputs: set, but schema_registry_url is not"):
        load_settings()


def test_a_registry_url_that_is_not_http_stops_start_up(monkeypatch):
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", "registry:8081")
    with pytest.raises(ConfigError, match="schema_registry_url"):
        load_settings()


def test_the_products_readers_read_an_output_framed_or_not():
    from decimal import Decimal

    from streams.kafka.io import Record

    def record(value: bytes) -> Record:
        return Record("decisions", 0, 0, b"p1", value, (), 0)

    text = b'{"signal_id": "s1", "qty": "0.5"}'
    assert record(frame(12, text)).json() == record(text).json() == {"signal_id": "s1", "qty": "0.5"}
    assert Decimal(record(frame(12, text)).json()["qty"]) == Decimal("0.5")


def test_an_unreachable_registry_is_one_error_naming_it():
    import asyncio
    import socket

    from streams.errors import RegistryUnavailable, exit_code
    from streams.kafka.schema_registry import SchemaRegistry

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/apis/ccompat/v6"
    with pytest.raises(RegistryUnavailable) as raised:
        asyncio.run(SchemaRegistry(url, timeout_s=5).register("signals", "{}"))
    assert str(raised.value).startswith(f"Schema Registry {url} unreachable: ")
    assert "\n" not in str(raised.value) and exit_code(raised.value) == 4
