"""The one Kafka client configuration read from the environment: the standard client
variables a platform sets (KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL,
KAFKA_SASL_MECHANISM) are honoured, or refused in one line naming the sizer's setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.worker.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in list(os.environ):
        if variable.startswith(("SIZER_", "KAFKA_")):
            monkeypatch.delenv(variable)


def test_the_standard_variables_set_what_their_sizer_settings_would(monkeypatch, tmp_path):
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9094,k2:9094")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")  # Kafka reads it in any case
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SIZER_SASL_USERNAME", "sizer-worker")
    monkeypatch.setenv("SIZER_SASL_PASSWORD_FILE", str(password))
    kafka = load_settings()
    options = kafka.client("worker")
    assert (options["bootstrap_servers"], options["security_protocol"], options["sasl_mechanism"]) == \
        ("k1:9094,k2:9094", "SASL_SSL", "SCRAM-SHA-512")
    assert options["ssl_context"] is not None


def test_a_standard_variable_that_disagrees_with_the_sizer_setting_stops_start_up(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SIZER_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value) == ("KAFKA_SECURITY_PROTOCOL=SASL_SSL and SIZER_SECURITY_PROTOCOL=PLAINTEXT disagree: "
                                 "the sizer's setting is SIZER_SECURITY_PROTOCOL; unset one or make them equal")


def test_a_standard_variable_equal_to_the_sizer_setting_is_fine(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092")
    monkeypatch.setenv("SIZER_BOOTSTRAP", "k1:9092")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "ssl")
    monkeypatch.setenv("SIZER_SECURITY_PROTOCOL", "SSL")
    assert load_settings().security_protocol == "SSL"


def test_a_bad_standard_value_names_the_variable_and_the_sizer_setting(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "NTLM")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    line, = [line for line in str(raised.value).splitlines() if "sasl_mechanism" in line]
    assert "from KAFKA_SASL_MECHANISM; the sizer's setting is SIZER_SASL_MECHANISM" in line


def sizer(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("SIZER_", "KAFKA_", "SIZING_"))}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, **env})


def test_sizer_config_shows_the_protocol_a_standard_variable_set_and_where_from():
    done = sizer("config", "--json", KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_BOOTSTRAP_SERVERS="k1:9093")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["kafka"]["security_protocol"] == "SSL" and shown["kafka"]["bootstrap"] == "k1:9093"
    assert shown["kafka_sources"]["security_protocol"] == "environment KAFKA_SECURITY_PROTOCOL"
    assert shown["kafka_sources"]["bootstrap"] == "environment KAFKA_BOOTSTRAP_SERVERS"
    assert shown["kafka_sources"]["app_id"] == "default"


def test_sizer_config_refuses_a_disagreement_in_one_line():
    done = sizer("config", KAFKA_SASL_MECHANISM="PLAIN", SIZER_SASL_MECHANISM="SCRAM-SHA-512")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "SIZER_SASL_MECHANISM" in done.stderr


@pytest.mark.parametrize("session, heartbeat", [("3", None), ("2", None), ("10", "10"), ("10", "12")])
def test_a_heartbeat_not_below_the_session_timeout_stops_start_up_naming_both(monkeypatch, session, heartbeat):
    # the group coordinator drops a member it has not heard from for session_timeout_s:
    # one that heartbeats less often is dropped between its heartbeats, and the group
    # rebalances for ever (a static member too: its partitions move every session timeout)
    monkeypatch.setenv("SIZER_SESSION_TIMEOUT_S", session)
    if heartbeat is not None:
        monkeypatch.setenv("SIZER_HEARTBEAT_INTERVAL_S", heartbeat)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "heartbeat_interval_s" in str(refused.value) and "below session_timeout_s" in str(refused.value)
    monkeypatch.setenv("SIZER_HEARTBEAT_INTERVAL_S", str(float(session) / 3))
    assert load_settings().session_timeout_s == float(session)


@pytest.mark.parametrize("interval, session", [("5.5", None), ("25", None), ("10", "10"), ("4", "6")])
def test_a_commit_interval_past_half_the_per_worker_transaction_timeout_stops_start_up(monkeypatch, interval, session):
    # a per-worker transaction times out after the session timeout: one committed a commit
    # interval after it began was aborted by the broker first, and the worker exited (70)
    monkeypatch.setenv("SIZER_COMMIT_INTERVAL_S", interval)
    if session is not None:
        monkeypatch.setenv("SIZER_SESSION_TIMEOUT_S", session)
        monkeypatch.setenv("SIZER_HEARTBEAT_INTERVAL_S", "1")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value).splitlines()[1:] == [
        f"  commit_interval_s: must be at most half of session_timeout_s ({float(session or 10):g} s) under "
        f"exactly-once with per_worker transactions (SIZER_TRANSACTIONS), whose timeout it is; "
        f"not {float(interval):g}"]
    # per-partition transactions (faust's) time out after 60 s, at-least-once has none
    for other in ({"SIZER_TRANSACTIONS": "per_partition"}, {"SIZER_PROCESSING_GUARANTEE": "at_least_once"}):
        with monkeypatch.context() as env:
            for name, value in other.items():
                env.setenv(name, value)
            assert load_settings().commit_interval_s == float(interval)
    monkeypatch.setenv("SIZER_COMMIT_INTERVAL_S", str(float(session or 10) / 2))
    assert load_settings().commit_interval_s == float(session or 10) / 2


def test_a_min_isr_above_the_replication_factor_is_one_line_naming_the_field_and_the_rule(monkeypatch):
    monkeypatch.setenv("SIZER_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("SIZER_MIN_INSYNC_REPLICAS", "4")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value).splitlines()[1:] == [
        "  min_insync_replicas: between 1 and replication_factor (3), not 4"]
