"""What Kafka itself enforces, on whichever release the suite runs against (3.9 and
4.x, `KAFKA_VERSION`): a replication factor the cluster cannot give, topics that
drift from their spec, the replication of its own transaction log and offsets
topic, and its bound on record timestamps."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import time
import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.errors import RECORD_TIMESTAMP_RULE
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import INTERNAL_TOPICS, internal_replication
from streams.wire.admission import home_partition
from tests.integration.harness import ROOT, SIZER, kafka_version

HOUR_MS = 3_600_000


def admin_call(bootstrap: str, call):
    async def run():
        admin = AIOKafkaAdminClient(**ConnectionSettings(bootstrap=bootstrap).for_role("test").options())
        await admin.start()
        try:
            return await call(admin)
        finally:
            await admin.close()

    return asyncio.run(run())


def brokers(bootstrap: str) -> int:
    return len(admin_call(bootstrap, lambda admin: admin.describe_cluster())["brokers"])


def config_of(bootstrap: str, kind, name: str) -> dict[str, str]:
    responses = admin_call(bootstrap, lambda admin: admin.describe_configs([ConfigResource(kind, name)]))
    return {entry[0]: entry[1] for response in responses for resource in response.resources for entry in resource[4]}


def sizer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SIZER, *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_replication_factor_above_the_clusters_brokers_creates_nothing_and_says_so_in_one_line(bootstrap):
    count = brokers(bootstrap)
    prefix = f"r{uuid.uuid4().hex[:8]}-"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SIZER_TOPIC_PREFIX": prefix,
           "SIZER_REPLICATION_FACTOR": str(count + 1), "SIZER_MIN_INSYNC_REPLICAS": "1"}
    done = sizer(env, "topics", "apply")
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip() == (f"sizer: replication factor {count + 1} (SIZER_REPLICATION_FACTOR) needs at least "
                                   f"{count + 1} brokers; the cluster at the bootstrap address has {count}: nothing "
                                   f"was created")
    assert not [name for name in admin_call(bootstrap, lambda admin: admin.list_topics()) if name.startswith(prefix)]


def test_check_names_every_replication_min_isr_and_config_difference(deployment):
    applied = sizer(deployment.env(), "topics", "apply")  # the input topics' timestamp bound, as the CLI sets it
    assert applied.returncode == 0, applied.stderr
    ok = sizer(deployment.env(), "topics", "apply", "--check")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [word for spec in deployment.topics for word in ("ok", spec.name)]

    signals = deployment.topics["signals"]
    configs = config_of(deployment.bootstrap, ConfigResourceType.TOPIC, signals.name)
    # AlterConfigs replaces a topic's whole set: every config the spec pins, retention changed
    wanted = {key: configs[key] for key in (*signals.configs, "message.timestamp.after.max.ms")}
    wanted["retention.ms"] = "1000"
    admin_call(deployment.bootstrap, lambda admin: admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, signals.name, configs=wanted)]))
    factor = brokers(deployment.bootstrap) + 2
    done = sizer(deployment.env(SIZER_REPLICATION_FACTOR=str(factor), SIZER_MIN_INSYNC_REPLICAS="2"),
                 "topics", "apply", "--check")
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "sizer: topics differ from topics/topics.toml:"
    expected = {f"  {signals.name}: retention.ms=1000 on the broker, {signals.retention_ms} in the spec"}
    for spec in deployment.topics:
        expected.add(f"  {spec.name}: replication factor {spec.replication} on the broker, {factor} in the spec "
                     f"(SIZER_REPLICATION_FACTOR)")
        expected.add(f"  {spec.name}: min.insync.replicas=1 on the broker, 2 in the spec (SIZER_MIN_INSYNC_REPLICAS)")
    assert set(lines[1:]) == expected


def test_the_transaction_log_and_offsets_topic_replication_is_read_from_the_broker(bootstrap):
    found = asyncio.run(internal_replication(ConnectionSettings(bootstrap=bootstrap).for_role("test")))
    assert set(found) == set(INTERNAL_TOPICS)
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # the project's broker: broker.sh sets 1 and 1
        assert found == {"__transaction_state": (1, 1), "__consumer_offsets": (1, 1)}


def test_a_journal_line_stamped_two_hours_ahead_is_published_or_refused_as_the_brokers_release_rules(deployment,
                                                                                                       tmp_path):
    node = str(admin_call(deployment.bootstrap, lambda admin: admin.describe_cluster())["brokers"][0]["node_id"])
    broker_limit = int(config_of(deployment.bootstrap, ConfigResourceType.BROKER, node)
                       ["log.message.timestamp.after.max.ms"])
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # each release's default, as the README says
        assert broker_limit == (HOUR_MS if int(kafka_version().split(".")[0]) >= 4 else 2**63 - 1)
    signals = deployment.topics.name("signals")
    limit = int(config_of(deployment.bootstrap, ConfigResourceType.TOPIC, signals)["message.timestamp.after.max.ms"])
    ahead = int(time.time() * 1000) + 2 * HOUR_MS
    journal = tmp_path / "ahead.jsonl"
    journal.write_text(json.dumps({"topic": "signals", "timestamp": ahead, "value": {
        "signal_id": "s-ahead", "portfolio_id": "p1", "symbol": "ETH-USD", "side": "buy", "score": "0.9",
        "price": "2500", "ts": "2026-01-01T00:00:00Z"}}) + "\n")
    done = sizer(deployment.env(), "publish", "--journal", str(journal))
    if limit < 2 * HOUR_MS:  # Kafka 4.x by default: refused before anything is sent, the line and the rule named
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.splitlines() == [
            f"{journal}:1: its record timestamp {ahead} is 2.0 h ahead of this machine's clock; {signals} refuses a "
            f"record stamped more than {limit} ms ahead of the broker's clock (message.timestamp.after.max.ms)",
            f"nothing published: 1 bad line in {journal}"]
        assert deployment.read("signals") == []
    else:  # 3.9 by default: stored as stamped (the worker's max_future_skew_s judges the event time against it)
        assert done.returncode == 0, done.stderr
        stored, = deployment.read("signals")
        assert stored.timestamp == ahead


def test_a_journal_with_one_line_stamped_past_its_topics_bound_publishes_nothing_and_names_that_line(deployment,
                                                                                                      tmp_path):
    # `sizer topics apply` bounds the input topics by max_future_skew_s (60 s by default), on 3.9 and 4.x alike
    applied = sizer(deployment.env(), "topics", "apply")
    assert applied.returncode == 0, applied.stderr
    partitions = deployment.topics["signals"].partitions
    # two portfolios on two partitions: two batches, the first of which the broker takes on its own
    first = "p-now"
    second = next(name for name in (f"p-{n}" for n in range(100))
                  if home_partition(name.encode(), partitions) != home_partition(first.encode(), partitions))
    ahead = int(time.time() * 1000) + 10 * 60_000
    journal = tmp_path / "mixed.jsonl"
    journal.write_text("\n".join(json.dumps(line) for line in (
        {"topic": "signals", "value": signal("s-now", first)},
        {"topic": "signals", "timestamp": ahead, "value": signal("s-ahead", second)},
    )) + "\n")

    done = sizer(deployment.env(), "publish", "--journal", str(journal))

    assert deployment.read("signals") == [], "part of a journal was published though the command failed"
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"{journal}:2: its record timestamp {ahead} is 10 min ahead of this machine's clock; "
                               f"{deployment.topics.name('signals')} refuses a record stamped more than 60000 ms "
                               f"ahead of the broker's clock (message.timestamp.after.max.ms)"), lines
    assert lines[-1] == f"nothing published: 1 bad line in {journal}"


def signal(signal_id: str, portfolio: str) -> dict[str, str]:
    return {"signal_id": signal_id, "portfolio_id": portfolio, "symbol": "ETH-USD", "side": "buy", "score": "0.9",
            "price": "2500", "ts": "2026-01-01T00:00:00Z"}


def test_a_journal_line_stamped_before_its_topics_retention_publishes_nothing(deployment, tmp_path):
    # neither release bounds how far behind a record may be stamped: the broker takes a signal
    # stamped 100 days ago and deletes it at its next retention check (signals keep 90 days)
    retention = deployment.topics["signals"].retention_ms
    old = int(time.time() * 1000) - 100 * 24 * HOUR_MS
    journal = tmp_path / "old.jsonl"
    journal.write_text(json.dumps({"topic": "signals", "timestamp": old, "value": signal("s-old", "p1")}) + "\n")

    done = sizer(deployment.env(), "publish", "--journal", str(journal))

    assert deployment.read("signals") == [], "a record the broker deletes within minutes was published"
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"{journal}:1: its record timestamp {old} is 100 days behind this machine's clock; "
        f"{deployment.topics.name('signals')} deletes a record stamped more than {retention} ms ago (retention.ms) "
        f"at its next retention check, before an audit could read it",
        f"nothing published: 1 bad line in {journal}"]


def test_check_names_a_changelog_that_differs_from_what_the_workers_need(deployment):
    # A changelog made by hand or by an older release: not compacted (retention would
    # delete portfolios' state), fewer partitions, one copy. `topics apply --check` is what a
    # platform runs before a release; it must not say "ok" to what the workers refuse.
    from aiokafka.admin import NewTopic

    exposure = f"{deployment.app_id}-exposure-changelog"
    admin_call(deployment.bootstrap, lambda admin: admin.create_topics(
        [NewTopic(exposure, 3, 1, topic_configs={"cleanup.policy": "delete"})]))
    factor = brokers(deployment.bootstrap)
    done = sizer(deployment.env(SIZER_REPLICATION_FACTOR=str(factor), SIZER_MIN_INSYNC_REPLICAS="1"),
                 "topics", "apply", "--check")
    assert done.returncode == 3, done.stdout + done.stderr
    width = deployment.topics["signals"].partitions
    lines = set(done.stderr.splitlines()[1:])
    assert f"  {exposure}: 3 partitions on the broker, the worker's tables have {width} (the input topics' count)" \
        in lines, done.stderr
    assert f"  {exposure}: cleanup.policy=delete on the broker, a changelog must be compacted" in lines, done.stderr
    # the changelogs the workers have not made yet are not differences
    assert not [line for line in lines if "-streak-changelog" in line], done.stderr


CLOCK_AHEAD = str(ROOT / "tests" / "integration" / "clock_ahead")  # its sitecustomize moves time.time()


def test_a_worker_whose_clock_runs_two_hours_ahead_stops_in_one_line_where_the_broker_bounds_timestamps(
        deployment, workers):
    # The worker stamps everything it writes (its configuration record, decisions, orders, dead
    # letters, changelogs) by its own clock; the output topics keep the broker's default bound:
    # Kafka 4.x refuses all of it, 3.9 stores it as stamped.
    node = str(admin_call(deployment.bootstrap, lambda admin: admin.describe_cluster())["brokers"][0]["node_id"])
    limit = int(config_of(deployment.bootstrap, ConfigResourceType.BROKER, node)["log.message.timestamp.after.max.ms"])
    ahead = {"PYTHONPATH": CLOCK_AHEAD, "TEST_CLOCK_AHEAD_S": str(2 * 3600), "AIOKAFKA_NO_EXTENSIONS": "1"}
    if limit >= 2 * HOUR_MS:  # 3.9 by default
        worker = workers(**ahead)
        decisions = deployment.run_demo_session()
        assert all(record.timestamp > time.time() * 1000 + 1.9 * HOUR_MS for record in decisions)
        assert worker.alive()
        return
    worker = deployment.worker(**ahead).spawn()
    try:
        code = worker.process.wait(timeout=90)
    finally:
        if worker.alive():
            worker.kill()
    lines = worker.log().splitlines()
    assert code == 4, worker.log()[-3000:]
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    prefix = (f"sizer: the broker at {deployment.bootstrap} refused a record's timestamp (a record sent without one "
              f"is stamped by this machine's clock, now ")
    assert lines[-1].startswith(prefix), lines[-1]
    shown = lines[-1][len(prefix):].split("Z:")[0]
    ahead_s = datetime.datetime.fromisoformat(shown + "+00:00").timestamp() - time.time()
    assert 7100 < ahead_s < 7300, lines[-1]  # the worker's clock, not the broker's
    assert lines[-1].endswith(f"Z: is it ahead of the broker's?): {RECORD_TIMESTAMP_RULE}")
    assert deployment.read("decisions") == []
