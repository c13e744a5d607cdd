"""Topic specs: replication from the deployment's settings on every topic and every
changelog, further topic configs from the topics file, and the differences `topics
apply --check` names. (On a broker: tests/integration/test_topic_replication.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streams.config import load_config
from streams.errors import ConfigError
from streams.worker.settings import WorkerSettings, load_settings
from streams.kafka.topics import (ROLES, Replication, _replication_differences, internal_replication_warnings,
                                   load_topics)
from streams.wire.roles import COMPACTED, CO_PARTITIONED
from streams.worker.app import build_app

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ROOT / "topics" / "topics.toml"


def test_the_local_default_is_one_copy_and_one_in_sync(monkeypatch):
    monkeypatch.delenv("SIZER_REPLICATION_FACTOR", raising=False)
    monkeypatch.delenv("SIZER_MIN_INSYNC_REPLICAS", raising=False)
    kafka = load_settings(bootstrap="127.0.0.1:1")
    assert kafka.replication == Replication(1, 1)
    for spec in load_topics(TOPICS, "", replication=kafka.replication):
        assert (spec.replication, spec.configs["min.insync.replicas"]) == (1, "1")


def test_the_settings_give_every_topic_its_replication_and_min_isr(monkeypatch):
    monkeypatch.setenv("SIZER_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("SIZER_MIN_INSYNC_REPLICAS", "2")
    kafka = load_settings(bootstrap="127.0.0.1:1")
    topics = load_topics(TOPICS, "p-", replication=kafka.replication)
    assert {spec.role for spec in topics} == set(ROLES)
    for spec in topics:
        assert spec.replication == 3
        assert spec.configs["min.insync.replicas"] == "2"


@pytest.mark.parametrize("factor, min_isr, field", [("2", "3", "min_insync_replicas"), ("0", "1", "replication_factor"),
                                                     ("3", "0", "min_insync_replicas")])
def test_a_min_isr_above_the_factor_or_a_count_below_one_stops_with_the_field(monkeypatch, factor, min_isr, field):
    monkeypatch.setenv("SIZER_REPLICATION_FACTOR", factor)
    monkeypatch.setenv("SIZER_MIN_INSYNC_REPLICAS", min_isr)
    with pytest.raises(ConfigError) as error:
        load_settings(bootstrap="127.0.0.1:1")
    assert field in str(error.value)


def test_the_changelogs_faust_creates_get_the_same_replication(tmp_path):
    kafka = WorkerSettings(bootstrap="127.0.0.1:1", data_dir=tmp_path, replication_factor=3, min_insync_replicas=2)
    topics = load_topics(kafka.topics_file, "", replication=kafka.replication)
    app = build_app(kafka, load_config("conviction"), topics, CollectorRegistry())
    assert app.conf.topic_replication_factor == 3  # faust's factor for the topics it declares
    assert len(app.tables) == 5
    for table in app.tables.values():
        changelog = table.changelog_topic
        assert changelog.replicas in (None, 3)  # None: faust takes topic_replication_factor
        assert dict(changelog.config) == {"min.insync.replicas": "2"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(text)
    return path


def spec_file(tmp_path: Path, defaults: str = "", signals: str = "") -> Path:
    lines = ["[defaults]", defaults]
    for role in ROLES:
        lines += [f"[topics.{role}]", f'name = "{role}"',
                  f"partitions = {6 if role in CO_PARTITIONED or role == 'signals' else 1}",
                  f'cleanup_policy = "{"compact" if role in COMPACTED else "delete"}"', "retention_ms = -1"]
        if role == "signals":
            lines.append(signals)
    return write(tmp_path, "\n".join(lines) + "\n")


def test_configs_tables_add_topic_configs_as_the_broker_reports_them(tmp_path):
    path = spec_file(tmp_path, defaults='[defaults.configs]\n"unclean.leader.election.enable" = false\n',
                     signals='[topics.signals.configs]\n"max.message.bytes" = 2097152\n')
    topics = load_topics(path)
    assert topics["signals"].configs == {"cleanup.policy": "delete", "retention.ms": "-1", "min.insync.replicas": "1",
                                         "max.message.bytes": "2097152", "unclean.leader.election.enable": "false"}
    assert "max.message.bytes" not in topics["fills"].configs
    assert topics["fills"].configs["unclean.leader.election.enable"] == "false"


@pytest.mark.parametrize("defaults, signals, names", [
    ("replication = 3", "", "replication"),
    ("", '[topics.signals.configs]\n"min.insync.replicas" = 2', "configs.min.insync.replicas"),
    ("", '[topics.signals.configs]\n"retention.ms" = 5', "configs.retention.ms"),
])
def test_what_a_setting_or_a_field_sets_is_refused_in_the_topics_file(tmp_path, defaults, signals, names):
    with pytest.raises(ConfigError) as error:
        load_topics(spec_file(tmp_path, defaults=defaults, signals=signals))
    assert names in str(error.value)


def described(*factors: int) -> dict:
    return {"partitions": [{"partition": i, "replicas": list(range(f))} for i, f in enumerate(factors)]}


def test_each_difference_is_named_with_its_setting():
    wanted = {"cleanup.policy": "delete", "min.insync.replicas": "2", "max.message.bytes": "2097152"}
    found = _replication_differences("signals", described(1, 1), {"cleanup.policy": "delete",
                                                                  "min.insync.replicas": "1",
                                                                  "max.message.bytes": "1048588"}, 3, wanted)
    assert found == [
        "signals: replication factor 1 on the broker, 3 in the spec (SIZER_REPLICATION_FACTOR)",
        "signals: min.insync.replicas=1 on the broker, 2 in the spec (SIZER_MIN_INSYNC_REPLICAS)",
        "signals: max.message.bytes=1048588 on the broker, 2097152 in the spec",
    ]
    assert _replication_differences("signals", described(3, 3), dict(wanted), 3, wanted) == []
    # partitions replicated unevenly (a reassignment half done): both counts named
    assert _replication_differences("signals", described(3, 2), dict(wanted), 3, wanted) == [
        "signals: replication factor 2/3 on the broker, 3 in the spec (SIZER_REPLICATION_FACTOR)"]


def test_an_internal_topic_less_replicated_than_the_products_is_named_with_its_broker_setting():
    found = {"__transaction_state": (1, 1), "__consumer_offsets": (3, 1)}
    warnings = internal_replication_warnings(found, Replication(3, 2))
    assert len(warnings) == 3
    assert "__transaction_state has replication factor 1 (broker setting transaction.state.log.replication.factor)" \
        in warnings[0]
    assert "__transaction_state has min.insync.replicas 1 (broker setting transaction.state.log.min.isr)" in warnings[1]
    assert "__consumer_offsets has min.insync.replicas 1 (broker setting min.insync.replicas)" in warnings[2]
    assert internal_replication_warnings({"__transaction_state": (3, 2), "__consumer_offsets": (3, 2)},
                                         Replication(3, 2)) == []
    assert internal_replication_warnings(found, Replication(1, 1)) == []  # one local broker: nothing to say


def test_the_changelogs_topics_apply_checks_are_the_worker_tables():
    from streams.kafka.changelogs import WORKER_TABLES
    from streams.kafka.settings import ConnectionSettings
    from streams.worker.app import declare_tables, faust_app
    from streams.worker.settings import WorkerSettings

    settings = WorkerSettings()
    topics = load_topics(ConnectionSettings().topics_file)
    app = faust_app(settings, topics)
    assert tuple(declare_tables(app, topics["signals"].partitions, settings.replication)) == WORKER_TABLES
